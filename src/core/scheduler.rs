//! Where a pending pod goes: kube-scheduler's default filter and score plugins for what this
//! project models, pure. The server's scheduler loop keeps a [`Cache`] (kube-scheduler's
//! NodeInfo per node: the Node, and the sums of the pods bound to it - requests, host ports, pod
//! count, pods per owner) up to date from its watch, pod by pod, so a decision never walks the
//! bound pods; [`schedule`] builds one from lists for tests and one-off decisions.
//!
//! Filters, in the framework's order, the first failing one naming why a node was rejected:
//! NodeUnschedulable, NodeName, TaintToleration (NoSchedule and NoExecute), node Ready, NodeAffinity
//! (nodeSelector and required node affinity), NodePorts, NodeResourcesFit (cpu, memory and the
//! pod count against the node's allocatable minus the requests of the pods bound there).
//! Scores (0..=100 each, weighted as the default profile): NodeResourcesFit LeastAllocated (1),
//! spreading the pods of one owner across nodes (SelectorSpread by hostname, 2), preferred node
//! affinity (2). Ties go to the first node by name, so a decision is reproducible.
//!
//! An unschedulable pod gets the FitError message kube-scheduler writes:
//! `0/4 nodes are available: 2 Insufficient memory, 2 node(s) didn't match Pod's node
//! affinity/selector.` (the reasons counted and sorted as strings, as upstream sorts them).
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};

use crate::core::eligibility::{
    matches_node_affinity, matches_term, tolerates_taint, TAINT_EFFECT_NO_EXECUTE,
    TAINT_EFFECT_NO_SCHEDULE, TAINT_NODE_UNSCHEDULABLE,
};
use crate::core::quantity::Quantity;

pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const ERR_NOT_READY: &str = "node(s) were not ready";
pub const ERR_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const ERR_TOO_MANY_PODS: &str = "Too many pods";

/// The requests the scorer assumes for a container that asks for none (schedutil's
/// DefaultMilliCPURequest and DefaultMemoryRequest), so empty pods still spread by load.
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// The default profile's score weights.
const WEIGHT_FIT: i64 = 1;
const WEIGHT_SPREAD: i64 = 2;
const WEIGHT_AFFINITY: i64 = 2;

/// A pod no node can take, and why, as the PodScheduled condition's message says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// How many nodes rejected the pod for each reason.
    pub reasons: BTreeMap<String, usize>,
    pub message: String,
}

/// What the scheduler knows of one node (kube-scheduler's NodeInfo): the Node, once seen, and
/// the sums of the non-terminal pods bound to it.
#[derive(Debug, Clone, Default)]
struct NodeInfo {
    node: Option<Node>,
    pods: usize,
    /// The requests as NodeResourcesFit counts them (none where a container asks for none).
    requested: Requests,
    /// The requests as the scorer counts them (schedutil's defaults where none).
    non_zero: Requests,
    host_ports: BTreeMap<(String, i32), usize>,
    /// Pods per controller uid (the spread score's counts).
    owners: BTreeMap<String, usize>,
}

/// What one bound pod adds to its node, kept so that its removal or change subtracts exactly it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contribution {
    node: String,
    requested: Requests,
    non_zero: Requests,
    ports: BTreeSet<(String, i32)>,
    owner: Option<String>,
}

impl Contribution {
    /// What `pod` adds, when it is bound and not terminal (a terminating pod still holds its
    /// node's resources, as upstream's).
    fn of(pod: &Pod) -> Option<Contribution> {
        let node = node_of(pod)?;
        if terminal(pod) {
            return None;
        }
        let spec = pod.spec.as_ref()?;
        Some(Contribution {
            node: node.to_string(),
            requested: pod_requests(spec, false),
            non_zero: pod_requests(spec, true),
            ports: host_ports(spec),
            owner: controller_uid(pod).map(str::to_string),
        })
    }
}

/// The scheduler's view of the cluster, changed one Node or one Pod at a time (kube-scheduler's
/// cache, without assumed pods' expiry: a binding this scheduler wrote is counted at once with
/// [`Cache::set_pod`], and the watch event of that write changes nothing).
#[derive(Debug, Clone, Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    /// The bound pods counted, by namespace/name.
    pods: BTreeMap<String, Contribution>,
}

impl Cache {
    /// A cache of `nodes` and the pods of `pods` that are bound (each counted, keyed by its
    /// place in the list: for one-off decisions, not to be changed pod by pod).
    pub fn from_lists<'a>(nodes: &[Node], pods: impl IntoIterator<Item = &'a Pod>) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.set_node(n.clone());
        }
        for (i, p) in pods.into_iter().enumerate() {
            c.set_pod(&format!("#{i}"), p);
        }
        c
    }

    /// A Node added or changed.
    pub fn set_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.nodes.entry(name).or_default().node = Some(node);
    }

    /// A Node deleted: no longer a candidate (the pods still bound to it keep their sums until
    /// they go, as upstream's cache keeps such a NodeInfo).
    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods == 0 {
                self.nodes.remove(name);
            }
        }
    }

    /// A Pod added or changed: its old contribution (if any) replaced by its new one (if bound
    /// and not terminal).
    pub fn set_pod(&mut self, key: &str, pod: &Pod) {
        let new = Contribution::of(pod);
        if self.pods.get(key) == new.as_ref() {
            return;
        }
        self.remove_pod(key);
        if let Some(c) = new {
            let info = self.nodes.entry(c.node.clone()).or_default();
            info.pods += 1;
            info.requested.add(c.requested, 1);
            info.non_zero.add(c.non_zero, 1);
            for p in &c.ports {
                *info.host_ports.entry(p.clone()).or_default() += 1;
            }
            if let Some(o) = &c.owner {
                *info.owners.entry(o.clone()).or_default() += 1;
            }
            self.pods.insert(key.to_string(), c);
        }
    }

    /// A Pod deleted.
    pub fn remove_pod(&mut self, key: &str) {
        let Some(c) = self.pods.remove(key) else {
            return;
        };
        let Some(info) = self.nodes.get_mut(&c.node) else {
            return;
        };
        info.pods -= 1;
        info.requested.add(c.requested, -1);
        info.non_zero.add(c.non_zero, -1);
        for p in &c.ports {
            if let Some(n) = info.host_ports.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    info.host_ports.remove(p);
                }
            }
        }
        if let Some(o) = &c.owner {
            if let Some(n) = info.owners.get_mut(o) {
                *n -= 1;
                if *n == 0 {
                    info.owners.remove(o);
                }
            }
        }
        if info.node.is_none() && info.pods == 0 {
            self.nodes.remove(&c.node);
        }
    }

    /// How many nodes are candidates.
    pub fn node_count(&self) -> usize {
        self.nodes.values().filter(|i| i.node.is_some()).count()
    }

    /// The node `pod` should be bound to, or why none can take it.
    pub fn schedule(&self, pod: &Pod) -> Result<String, Unschedulable> {
        let default_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let want = pod_requests(spec, false);
        let want_non_zero = pod_requests(spec, true);
        let ports = host_ports(spec);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut feasible: Vec<(&Node, &NodeInfo)> = Vec::new();
        let mut candidates = 0;
        for info in self.nodes.values() {
            let Some(node) = info.node.as_ref() else {
                continue;
            };
            candidates += 1;
            match filter(spec, want, &ports, node, info) {
                Ok(()) => feasible.push((node, info)),
                Err(why) => {
                    for r in why {
                        *reasons.entry(r).or_default() += 1;
                    }
                }
            }
        }
        if feasible.is_empty() {
            return Err(fit_error(candidates, reasons));
        }
        let owner = controller_uid(pod);
        let spread_counts: Vec<i64> = feasible
            .iter()
            .map(|(_, info)| owner.and_then(|o| info.owners.get(o)).copied().unwrap_or(0) as i64)
            .collect();
        let max_count = spread_counts.iter().copied().max().unwrap_or(0);
        let affinity_raw: Vec<i64> = feasible
            .iter()
            .map(|(node, _)| preferred_affinity(spec, node))
            .collect();
        let max_affinity = affinity_raw.iter().copied().max().unwrap_or(0);
        let mut best: Option<(i64, &str)> = None;
        for (i, (node, info)) in feasible.iter().enumerate() {
            let spread = if max_count == 0 {
                100
            } else {
                (max_count - spread_counts[i]) * 100 / max_count
            };
            let affinity = if max_affinity == 0 {
                0
            } else {
                affinity_raw[i] * 100 / max_affinity
            };
            let score = WEIGHT_FIT * least_allocated(want_non_zero, node, info)
                + WEIGHT_SPREAD * spread
                + WEIGHT_AFFINITY * affinity;
            let name = node.metadata.name.as_deref().unwrap_or("");
            let better = match best {
                None => true,
                Some((s, n)) => score > s || (score == s && name < n),
            };
            if better {
                best = Some((score, name));
            }
        }
        Ok(best.map(|(_, n)| n.to_string()).unwrap_or_default())
    }
}

/// namespace/name of a pod.
pub fn pod_key(p: &Pod) -> Option<String> {
    let name = p.metadata.name.as_deref()?;
    Some(format!(
        "{}/{name}",
        p.metadata.namespace.as_deref().unwrap_or("")
    ))
}

/// The node `pod` should be bound to, among `nodes`, given the `bound` pods (every pod with a
/// `spec.nodeName`, terminating ones included: they still hold their node's resources).
pub fn schedule(pod: &Pod, nodes: &[Node], bound: &[Pod]) -> Result<String, Unschedulable> {
    Cache::from_lists(nodes, bound).schedule(pod)
}

/// FitError.Error(): `0/N nodes are available: ` and the reasons counted, sorted as strings.
fn fit_error(nodes: usize, reasons: BTreeMap<String, usize>) -> Unschedulable {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut message = format!("0/{nodes} nodes are available");
    if parts.is_empty() {
        message.push('.');
    } else {
        message.push_str(&format!(": {}.", parts.join(", ")));
    }
    Unschedulable { reasons, message }
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn controller_uid(p: &Pod) -> Option<&str> {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// The filters in the default profile's order; the first that fails says why (NodeResourcesFit
/// may give several reasons at once, as upstream's). `want` and `ports` are the pod's requests
/// and host ports, computed once per decision.
fn filter(
    spec: &PodSpec,
    want: Requests,
    ports: &BTreeSet<(String, i32)>,
    node: &Node,
    info: &NodeInfo,
) -> Result<(), Vec<String>> {
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let node_spec = node.spec.clone().unwrap_or_default();
    // NodeUnschedulable: a cordoned node, unless the pod tolerates its taint.
    if node_spec.unschedulable == Some(true) {
        let taint = k8s_openapi::api::core::v1::Taint {
            key: TAINT_NODE_UNSCHEDULABLE.into(),
            effect: TAINT_EFFECT_NO_SCHEDULE.into(),
            ..Default::default()
        };
        if !tolerations.iter().any(|t| tolerates_taint(t, &taint)) {
            return Err(vec![ERR_UNSCHEDULABLE.into()]);
        }
    }
    // NodeName
    if let Some(wanted) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if Some(wanted) != node.metadata.name.as_deref() {
            return Err(vec![ERR_NODE_NAME.into()]);
        }
    }
    // TaintToleration: the first untolerated NoSchedule/NoExecute taint.
    for taint in node_spec.taints.iter().flatten() {
        let effect = taint.effect.as_str();
        if effect != TAINT_EFFECT_NO_SCHEDULE && effect != TAINT_EFFECT_NO_EXECUTE {
            continue;
        }
        if !tolerations.iter().any(|t| tolerates_taint(t, taint)) {
            return Err(vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            )]);
        }
    }
    // Node Ready (the node-lifecycle taints say it too, once the controller has seen it).
    if !ready(node) {
        return Err(vec![ERR_NOT_READY.into()]);
    }
    // NodeAffinity
    if !matches_node_affinity(node, spec) {
        return Err(vec![ERR_AFFINITY.into()]);
    }
    // NodePorts
    if ports.iter().any(|p| info.host_ports.contains_key(p)) {
        return Err(vec![ERR_PORTS.into()]);
    }
    // NodeResourcesFit
    let fit = fit_reasons(want, node, info);
    if fit.is_empty() {
        Ok(())
    } else {
        Err(fit)
    }
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// (protocol, hostPort) pairs a pod asks for.
fn host_ports(spec: &PodSpec) -> BTreeSet<(String, i32)> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), port))
        })
        .collect()
}

/// cpu (milli) and memory (bytes) a pod requests: its containers' sum, or its largest init
/// container's if more (computePodResourceRequest).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Requests {
    milli_cpu: i64,
    memory: i64,
}

impl Requests {
    /// Adds `times` x `other` (-1 subtracts).
    fn add(&mut self, other: Requests, times: i64) {
        self.milli_cpu += times * other.milli_cpu;
        self.memory += times * other.memory;
    }
}

fn quantity(
    q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Option<Quantity> {
    q.and_then(|q| Quantity::parse(&q.0).ok())
}

/// A container's request of `key`, or its limit: kube-apiserver defaults a missing request to
/// the limit (SetDefaults_Pod), which this server's defaulting does not do yet.
fn request(c: &Container, key: &str) -> Option<Quantity> {
    let r = c.resources.as_ref()?;
    quantity(r.requests.as_ref().and_then(|m| m.get(key)))
        .or_else(|| quantity(r.limits.as_ref().and_then(|m| m.get(key))))
}

fn container_requests(c: &Container, non_zero: bool) -> Requests {
    let cpu = request(c, "cpu").map(|q| q.milli_value());
    let memory = request(c, "memory").map(|q| q.value());
    Requests {
        milli_cpu: cpu.unwrap_or(if non_zero { DEFAULT_MILLI_CPU } else { 0 }),
        memory: memory.unwrap_or(if non_zero { DEFAULT_MEMORY } else { 0 }),
    }
}

fn pod_requests(spec: &PodSpec, non_zero: bool) -> Requests {
    let mut sum = Requests::default();
    for c in &spec.containers {
        let r = container_requests(c, non_zero);
        sum.milli_cpu += r.milli_cpu;
        sum.memory += r.memory;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, false);
        sum.milli_cpu = sum.milli_cpu.max(r.milli_cpu);
        sum.memory = sum.memory.max(r.memory);
    }
    sum
}

/// The node's allocatable cpu (milli), memory (bytes) and pod count; None where unreported.
fn allocatable(node: &Node) -> (Option<i64>, Option<i64>, Option<i64>) {
    let a = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| quantity(a.and_then(|a| a.get(k)));
    (
        get("cpu").map(|q| q.milli_value()),
        get("memory").map(|q| q.value()),
        get("pods").map(|q| q.value()),
    )
}

fn fit_reasons(want: Requests, node: &Node, info: &NodeInfo) -> Vec<String> {
    let (cpu, memory, pods) = allocatable(node);
    let mut why = Vec::new();
    if pods.is_some_and(|max| info.pods as i64 + 1 > max) {
        why.push(ERR_TOO_MANY_PODS.to_string());
    }
    let have = info.requested;
    if want.milli_cpu > 0 && cpu.is_some_and(|a| have.milli_cpu + want.milli_cpu > a) {
        why.push("Insufficient cpu".to_string());
    }
    if want.memory > 0 && memory.is_some_and(|a| have.memory + want.memory > a) {
        why.push("Insufficient memory".to_string());
    }
    why
}

/// LeastAllocated: the share of cpu and memory left free with the pod placed, 0..=100.
fn least_allocated(want: Requests, node: &Node, info: &NodeInfo) -> i64 {
    let (cpu, memory, _) = allocatable(node);
    let have = info.non_zero;
    let free = |alloc: Option<i64>, req: i64| match alloc {
        Some(a) if a > 0 && req <= a => (a - req) * 100 / a,
        _ => 0,
    };
    (free(cpu, have.milli_cpu + want.milli_cpu) + free(memory, have.memory + want.memory)) / 2
}

/// The summed weights of the preferred node affinity terms `node` matches.
fn preferred_affinity(spec: &PodSpec, node: &Node) -> i64 {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| matches_term(&t.preference, node))
        .map(|t| i64::from(t.weight))
        .sum()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn node(name: &str, extra: Value) -> Node {
        let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]}});
        merge(&mut n, extra);
        serde_json::from_value(n).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn pod(extra: Value) -> Pod {
        let mut p = json!({"metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        merge(&mut p, extra);
        serde_json::from_value(p).unwrap()
    }

    fn bound(on: &str, extra: Value) -> Pod {
        let mut p = pod(extra);
        p.spec.as_mut().unwrap().node_name = Some(on.into());
        p
    }

    fn memory(m: &str) -> Value {
        json!({"spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"memory": m}}}]}})
    }

    #[test]
    fn each_filter_rejects_with_upstreams_reason() {
        let cases: Vec<(&str, Value, Value, Vec<Pod>, &str)> = vec![
            (
                "cordoned",
                json!({"spec": {"unschedulable": true}}),
                json!({}),
                vec![],
                ERR_UNSCHEDULABLE,
            ),
            (
                "tainted",
                json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
                json!({}),
                vec![],
                "node(s) had untolerated taint {k: v}",
            ),
            (
                "no-execute",
                json!({"spec": {"taints": [{"key": "k", "effect": "NoExecute"}]}}),
                json!({}),
                vec![],
                "node(s) had untolerated taint {k: }",
            ),
            (
                "not ready",
                json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                json!({}),
                vec![],
                ERR_NOT_READY,
            ),
            (
                "selector",
                json!({}),
                json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
                vec![],
                ERR_AFFINITY,
            ),
            (
                "required affinity",
                json!({}),
                json!({"spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}}),
                vec![],
                ERR_AFFINITY,
            ),
            (
                "ports",
                json!({}),
                json!({"spec": {"containers": [{"name": "c", "image": "i",
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
                vec![bound(
                    "n",
                    json!({"spec": {"containers": [{"name": "c", "image": "i",
                    "ports": [{"containerPort": 81, "hostPort": 8080}]}]}}),
                )],
                ERR_PORTS,
            ),
            (
                "memory",
                json!({}),
                memory("600Mi"),
                vec![bound("n", memory("500Mi"))],
                "Insufficient memory",
            ),
            (
                "pods",
                json!({"status": {"allocatable": {"pods": "1"}}}),
                json!({}),
                vec![bound("n", json!({}))],
                ERR_TOO_MANY_PODS,
            ),
        ];
        for (what, n, p, on, reason) in cases {
            let got = schedule(&pod(p), &[node("n", n)], &on).expect_err(what);
            assert_eq!(
                got.message,
                format!("0/1 nodes are available: 1 {reason}."),
                "{what}"
            );
        }
    }

    #[test]
    fn tolerations_and_matches_let_a_pod_through() {
        let tainted = node(
            "n",
            json!({"spec": {"unschedulable": true,
            "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "metadata": {"labels": {"disk": "ssd"}}}),
        );
        let p = pod(
            json!({"spec": {"nodeSelector": {"disk": "ssd"}, "tolerations": [
            {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]}}),
        );
        assert_eq!(schedule(&p, &[tainted], &[]), Ok("n".to_string()));
        // a terminated pod holds nothing
        let mut done = bound("n", memory("1Gi"));
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        assert_eq!(
            schedule(&pod(memory("600Mi")), &[node("n", json!({}))], &[done]),
            Ok("n".to_string())
        );
    }

    #[test]
    fn the_message_counts_reasons_sorted_as_upstream() {
        let nodes = [
            node("a", json!({})),
            node("b", json!({})),
            node("c", json!({"metadata": {"labels": {"disk": "ssd"}}})),
            node("d", json!({"metadata": {"labels": {"disk": "ssd"}}})),
        ];
        let big = json!({"spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c",
            "image": "i", "resources": {"requests": {"memory": "2Gi", "cpu": "3"}}}]}});
        let got = schedule(&pod(big), &nodes, &[]).unwrap_err();
        assert_eq!(
            got.message,
            "0/4 nodes are available: 2 Insufficient cpu, 2 Insufficient memory, \
             2 node(s) didn't match Pod's node affinity/selector."
        );
        assert_eq!(
            schedule(&pod(json!({})), &[], &[]).unwrap_err().message,
            "0/0 nodes are available."
        );
    }

    #[test]
    fn replicas_of_one_owner_spread_then_load_decides() {
        let nodes = [
            node("a", json!({})),
            node("b", json!({})),
            node("c", json!({})),
        ];
        // a has one of ours, b has a stranger's pod: c is emptiest and free of ours
        let stranger = bound(
            "b",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "v1",
            "kind": "ReplicaSet", "name": "o", "uid": "other", "controller": true}]}}),
        );
        let ours = bound("a", json!({}));
        assert_eq!(
            schedule(&pod(json!({})), &nodes, &[ours.clone(), stranger.clone()]),
            Ok("c".into())
        );
        // with c full of ours, b (a stranger's pod only) wins over a (one of ours)
        let c1 = bound("c", json!({}));
        let c2 = bound("c", json!({}));
        assert_eq!(
            schedule(&pod(json!({})), &nodes, &[ours, stranger, c1, c2]),
            Ok("b".into())
        );
        // equal nodes: the first by name
        assert_eq!(schedule(&pod(json!({})), &nodes, &[]), Ok("a".into()));
    }

    /// The cache changed pod by pod (bound, moved, terminated, deleted; nodes removed and back)
    /// decides as one built from the lists at that moment.
    #[test]
    fn the_cache_changed_pod_by_pod_decides_as_one_built_from_lists() {
        let nodes = [
            node("a", json!({"status": {"allocatable": {"pods": "3"}}})),
            node("b", json!({})),
            node("c", json!({})),
        ];
        let named = |name: &str, on: Option<&str>, extra: Value| -> Pod {
            let mut p = pod(extra);
            p.metadata.name = Some(name.into());
            p.metadata.namespace = Some("default".into());
            p.spec.as_mut().unwrap().node_name = on.map(str::to_string);
            p
        };
        let port = json!({"spec": {"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 80, "hostPort": 8080}],
            "resources": {"requests": {"memory": "300Mi", "cpu": "500m"}}}]}});
        let mut done = named("p3", Some("b"), port.clone());
        done.status = Some(serde_json::from_value(json!({"phase": "Failed"})).unwrap());
        // (step, the pods after it)
        let steps: Vec<(&str, Vec<Pod>)> = vec![
            ("empty", vec![]),
            ("p1 on a", vec![named("p1", Some("a"), port.clone())]),
            (
                "p2 on a",
                vec![
                    named("p1", Some("a"), port.clone()),
                    named("p2", Some("a"), memory("600Mi")),
                ],
            ),
            (
                "p1 deleted, p3 on b",
                vec![
                    named("p2", Some("a"), memory("600Mi")),
                    named("p3", Some("b"), port.clone()),
                ],
            ),
            (
                "p3 failed",
                vec![named("p2", Some("a"), memory("600Mi")), done.clone()],
            ),
            ("p2 gone", vec![done]),
        ];
        let probes = [
            pod(json!({})),
            pod(port.clone()),
            pod(memory("600Mi")),
            pod(memory("2Gi")),
        ];
        let mut cache = Cache::from_lists(&nodes, &[]);
        let mut before: Vec<Pod> = vec![];
        for (step, pods) in steps {
            let key = |p: &Pod| pod_key(p).unwrap();
            for gone in before
                .iter()
                .filter(|o| !pods.iter().any(|p| key(p) == key(o)))
            {
                cache.remove_pod(&key(gone));
            }
            for p in &pods {
                cache.set_pod(&key(p), p);
            }
            let fresh = Cache::from_lists(&nodes, &pods);
            for probe in &probes {
                assert_eq!(cache.schedule(probe), fresh.schedule(probe), "{step}");
            }
            before = pods;
        }
        // a node removed is no candidate (and not counted in the message); back, it is again
        cache.remove_node("b");
        cache.remove_node("c");
        assert_eq!(cache.node_count(), 1);
        assert_eq!(
            cache.schedule(&pod(memory("2Gi"))).unwrap_err().message,
            "0/1 nodes are available: 1 Insufficient memory."
        );
        cache.set_node(nodes[1].clone());
        let to_b = pod(json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "b"}}}));
        assert_eq!(cache.schedule(&to_b), Ok("b".into()));
    }

    #[test]
    fn less_requested_and_preferred_nodes_score_higher() {
        let nodes = [node("a", json!({})), node("b", json!({}))];
        let loaded = bound(
            "a",
            json!({"metadata": {"ownerReferences": []}, "spec": {"containers": [{"name": "c",
                "image": "i", "resources": {"requests": {"memory": "800Mi", "cpu": "1500m"}}}]}}),
        );
        assert_eq!(schedule(&pod(json!({})), &nodes, &[loaded]), Ok("b".into()));
        let zoned = [
            node("a", json!({"metadata": {"labels": {"zone": "z1"}}})),
            node("b", json!({})),
        ];
        let prefers = pod(json!({"spec": {"affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "preference":
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}}]}}}}));
        assert_eq!(schedule(&prefers, &zoned, &[]), Ok("a".into()));
    }
}
