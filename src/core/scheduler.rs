//! Where a pending pod goes: kube-scheduler's default filter and score plugins for what this
//! project models, pure (the server's scheduler loop feeds it the nodes and the bound pods).
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

/// The node `pod` should be bound to, among `nodes`, given the `bound` pods (every pod with a
/// `spec.nodeName`, terminating ones included: they still hold their node's resources).
pub fn schedule(pod: &Pod, nodes: &[Node], bound: &[Pod]) -> Result<String, Unschedulable> {
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut feasible = Vec::new();
    for node in nodes {
        let on_node: Vec<&Pod> = bound
            .iter()
            .filter(|p| node_of(p) == node.metadata.name.as_deref() && !terminal(p))
            .collect();
        match filter(spec, node, &on_node) {
            Ok(()) => feasible.push((node, on_node)),
            Err(why) => {
                for r in why {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    if feasible.is_empty() {
        return Err(fit_error(nodes.len(), reasons));
    }
    let owner = controller_uid(pod);
    let spread_counts: Vec<i64> = feasible
        .iter()
        .map(|(_, on_node)| {
            on_node
                .iter()
                .filter(|p| owner.is_some() && controller_uid(p) == owner)
                .count() as i64
        })
        .collect();
    let max_count = spread_counts.iter().copied().max().unwrap_or(0);
    let affinity_raw: Vec<i64> = feasible
        .iter()
        .map(|(node, _)| preferred_affinity(spec, node))
        .collect();
    let max_affinity = affinity_raw.iter().copied().max().unwrap_or(0);
    let mut best: Option<(i64, &str)> = None;
    for (i, (node, on_node)) in feasible.iter().enumerate() {
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
        let score = WEIGHT_FIT * least_allocated(spec, node, on_node)
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
/// may give several reasons at once, as upstream's).
fn filter(spec: &PodSpec, node: &Node, on_node: &[&Pod]) -> Result<(), Vec<String>> {
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
    let wanted = host_ports(spec);
    if !wanted.is_empty()
        && on_node
            .iter()
            .filter_map(|p| p.spec.as_ref())
            .any(|s| !host_ports(s).is_disjoint(&wanted))
    {
        return Err(vec![ERR_PORTS.into()]);
    }
    // NodeResourcesFit
    let fit = fit_reasons(spec, node, on_node);
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

fn used(on_node: &[&Pod], non_zero: bool) -> Requests {
    let mut sum = Requests::default();
    for r in on_node
        .iter()
        .filter_map(|p| p.spec.as_ref())
        .map(|s| pod_requests(s, non_zero))
    {
        sum.milli_cpu += r.milli_cpu;
        sum.memory += r.memory;
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

fn fit_reasons(spec: &PodSpec, node: &Node, on_node: &[&Pod]) -> Vec<String> {
    let (cpu, memory, pods) = allocatable(node);
    let mut why = Vec::new();
    if pods.is_some_and(|max| on_node.len() as i64 + 1 > max) {
        why.push(ERR_TOO_MANY_PODS.to_string());
    }
    let want = pod_requests(spec, false);
    let have = used(on_node, false);
    if want.milli_cpu > 0 && cpu.is_some_and(|a| have.milli_cpu + want.milli_cpu > a) {
        why.push("Insufficient cpu".to_string());
    }
    if want.memory > 0 && memory.is_some_and(|a| have.memory + want.memory > a) {
        why.push("Insufficient memory".to_string());
    }
    why
}

/// LeastAllocated: the share of cpu and memory left free with the pod placed, 0..=100.
fn least_allocated(spec: &PodSpec, node: &Node, on_node: &[&Pod]) -> i64 {
    let (cpu, memory, _) = allocatable(node);
    let want = pod_requests(spec, true);
    let have = used(on_node, true);
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
