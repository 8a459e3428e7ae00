//! The node-lifecycle controller, as kube-controller-manager's `pkg/controller/nodelifecycle`
//! and its taint-eviction controller (`pkg/controller/tainteviction`) keep node health: the I/O
//! around the pure decisions of `core::nodehealth`.
//!
//! It watches Nodes, the Leases of `kube-node-lease` and Pods. Each Lease renewal or new Ready
//! heartbeat is a sign of life, stamped with the controller's clock when it is seen; a node
//! silent for the grace period (`--node-monitor-grace-period`, 40 s by default) gets its agent's
//! conditions set to Unknown, the `node.kubernetes.io/unreachable` taints (NoSchedule and
//! NoExecute), and its pods marked Ready=False (`pods/status`), so that the DaemonSet controller's
//! status counts them out. The agent's next status post sets Ready=True again: the taints go, and
//! the agent's own pod statuses make its pods ready again. Pods on a node with NoExecute taints
//! they do not tolerate are deleted (gracefully), those tolerating them for a while once that ran
//! out; DaemonSet pods tolerate not-ready and unreachable for ever.
//!
//! Time comes from the injected [`Clock`] and tokio's timers, so the controller is tested on
//! paused time; it keeps no global state, so a server can run it only while it leads.
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use super::s;
use crate::agent::clock::Clock;
use crate::agent::events::{node_ref, pod_ref, Recorder};
use crate::core::eligibility::TAINT_EFFECT_NO_EXECUTE;
use crate::core::nodehealth::{self, Eviction, Grace, Health};
use crate::core::status::time;
use crate::server::auth::User;
use crate::server::kinds::{event, LEASES, NODES, PODS};
use crate::server::query::{Filter, WriteOpts};
use crate::server::status::ApiError;
use crate::server::store::{object_rv, EventType, Indexed, WatchEvent};
use crate::server::verbs::{Api, DeleteOptions, ObjectRef, Part};

/// The namespace of the nodes' heartbeat Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Every node is looked at least this often (kube-controller-manager's `--node-monitor-period`).
const MONITOR_PERIOD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub grace: Grace,
}

impl Options {
    /// The grace period of `--node-monitor-grace-period` (the startup grace period is never
    /// shorter).
    pub fn with_grace(grace: Duration) -> Options {
        let monitor_ms = grace.as_millis() as i64;
        Options {
            grace: Grace {
                monitor_ms,
                startup_ms: Grace::default().startup_ms.max(monitor_ms),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    #[error("node {node}: {source}")]
    Node {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("pod {namespace}/{name}: {source}")]
    Pod {
        namespace: String,
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("listing {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: ApiError,
    },
}

/// Runs the controller until `stop` completes.
pub async fn run(api: Arc<Api>, clock: Clock, opts: Options, stop: impl Future<Output = ()>) {
    tokio::select! {
        _ = Controller::new(api, clock, opts).run() => {}
        _ = stop => {}
    }
}

pub struct Controller {
    api: Arc<Api>,
    user: User,
    clock: Clock,
    opts: Options,
    /// The nodes as last seen, with their resourceVersion.
    nodes: HashMap<String, (u64, Arc<Node>)>,
    /// The resourceVersion and renewTime (unix ms) of each node's Lease, by node name.
    leases: HashMap<String, (u64, i64)>,
    health: HashMap<String, Health>,
    /// When a pod (uid) was first seen on a node with a NoExecute taint without `timeAdded`.
    seen: HashMap<String, i64>,
    /// The node controller's events (`node-controller`: NodeNotReady, NodeReady) and the
    /// taint-eviction controller's (`taint-eviction-controller`: TaintManagerEviction).
    events: Recorder,
    evictions: Recorder,
}

/// Whether `name` was seen at resourceVersion `rv` or later (by a relist): an event older than
/// that is stale.
fn seen_already<T>(seen: &HashMap<String, (u64, T)>, name: &str, rv: u64) -> bool {
    seen.get(name).is_some_and(|(at, _)| *at >= rv)
}

fn unix_ms(v: &Value, ptr: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s(v, ptr))
        .ok()
        .map(|t| t.timestamp_millis())
}

impl Controller {
    pub fn new(api: Arc<Api>, clock: Clock, opts: Options) -> Controller {
        Controller {
            nodes: HashMap::new(),
            leases: HashMap::new(),
            health: HashMap::new(),
            seen: HashMap::new(),
            events: event::recorder(api.clone(), "node-controller", clock.clone()),
            evictions: event::recorder(api.clone(), "taint-eviction-controller", clock.clone()),
            api,
            user: User::internal("node-lifecycle-controller"),
            clock,
            opts,
        }
    }

    /// Runs until the store closes the watch (the server stops) or the task is dropped.
    pub async fn run(mut self) {
        loop {
            let resources = [&NODES, &LEASES, &PODS];
            let mut feed = match super::Feed::new(self.api.clone(), &self.user, &resources) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "the node-lifecycle controller cannot watch the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = self.relist().await {
                tracing::warn!(error = %e, "node-lifecycle: relisting failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let mut next = self.pass().await;
            loop {
                tokio::select! {
                    d = feed.recv(super::DRAIN_MAX) => {
                        for ev in &d.events {
                            if let Some(at) = self.on_event(ev).await {
                                next = next.min(at);
                            }
                        }
                        if d.lagged {
                            let at = feed.now();
                            if let Err(e) = self.relist().await {
                                tracing::warn!(error = %e, "node-lifecycle: relisting failed");
                            }
                            feed.relisted(at);
                            next = self.pass().await;
                        }
                        if d.closed {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(next) => next = self.pass().await,
                }
            }
        }
    }

    /// Lists the Leases and Nodes, and observes every node.
    async fn relist(&mut self) -> Result<(), NodeLifecycleError> {
        let list = |what| move |source| NodeLifecycleError::List { what, source };
        let (leases, _) = self
            .api
            .list(
                &self.user,
                &LEASES,
                Some(LEASE_NAMESPACE),
                &Filter::default(),
            )
            .await
            .map_err(list("leases"))?;
        self.leases = leases
            .iter()
            .filter_map(|l| {
                Some((
                    s(l, "/metadata/name").to_string(),
                    (object_rv(l), unix_ms(l, "/spec/renewTime")?),
                ))
            })
            .collect();
        let (nodes, _) = self
            .api
            .list(&self.user, &NODES, None, &Filter::default())
            .await
            .map_err(list("nodes"))?;
        self.nodes.clear();
        for n in nodes {
            self.node_seen(&n);
        }
        self.health.retain(|name, _| self.nodes.contains_key(name));
        Ok(())
    }

    /// Keeps a node as seen now and observes it; false when it does not decode.
    fn node_seen(&mut self, obj: &Value) -> bool {
        let name = s(obj, "/metadata/name").to_string();
        let node: Node = match serde_json::from_value(obj.clone()) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(node = name.as_str(), error = %e, "stored node does not decode");
                return false;
            }
        };
        self.nodes
            .insert(name.clone(), (object_rv(obj), Arc::new(node)));
        self.observe(&name);
        true
    }

    fn observe(&mut self, name: &str) {
        let Some((_, node)) = self.nodes.get(name) else {
            return;
        };
        let lease = self.leases.get(name).map(|(_, renewed)| *renewed);
        let prev = self.health.get(name);
        let h = nodehealth::observe(prev, node, lease, self.clock.now_ms());
        if let Some(change) = nodehealth::status_change(prev, &h) {
            let msg = nodehealth::status_change_message(name, change);
            self.events.normal(&node_ref(name), change, msg);
        }
        self.health.insert(name.to_string(), h);
    }

    /// Applies one watch event; returns when to look at the nodes next, if sooner than planned.
    async fn on_event(&mut self, ev: &WatchEvent) -> Option<tokio::time::Instant> {
        if ev.resource == LEASES.key() && ev.namespace == LEASE_NAMESPACE {
            // older than what a relist showed already: not a renewal
            let rv = object_rv(&ev.object);
            if seen_already(&self.leases, &ev.name, rv) {
                return None;
            }
            match (ev.event_type, unix_ms(&ev.object, "/spec/renewTime")) {
                (EventType::Deleted, _) | (_, None) => {
                    self.leases.remove(&ev.name);
                }
                (_, Some(renewed)) => {
                    self.leases.insert(ev.name.clone(), (rv, renewed));
                    self.observe(&ev.name);
                }
            }
            None
        } else if ev.resource == NODES.key() {
            // older than what a relist showed already
            let rv = object_rv(&ev.object);
            if seen_already(&self.nodes, &ev.name, rv) {
                return None;
            }
            if ev.event_type == EventType::Deleted {
                self.nodes.remove(&ev.name);
                self.health.remove(&ev.name);
                return None;
            }
            if !self.node_seen(&ev.object) {
                return None;
            }
            // what changed may call for a write (the agent's Ready, taints removed by hand)
            match self.sync_node(&ev.name, &mut PodsByNode::default()).await {
                Ok(at) => at.map(|ms| self.clock.deadline(ms)),
                Err(e) => {
                    tracing::warn!(error = %e, "node-lifecycle sync failed; retrying");
                    Some(tokio::time::Instant::now() + Duration::from_secs(1))
                }
            }
        } else if ev.resource == PODS.key() && ev.event_type == EventType::Deleted {
            self.seen.remove(s(&ev.object, "/metadata/uid"));
            None
        } else if ev.resource == PODS.key() {
            // a pod bound to a node with NoExecute taints
            let node = s(&ev.object, "/spec/nodeName");
            let tainted = self.nodes.get(node).is_some_and(|(_, n)| has_no_execute(n));
            if !tainted
                || ev
                    .prev
                    .as_ref()
                    .is_some_and(|p| s(p, "/spec/nodeName") == node)
            {
                return None;
            }
            Some(tokio::time::Instant::now())
        } else {
            None
        }
    }

    /// Looks at every node; returns when to look again.
    async fn pass(&mut self) -> tokio::time::Instant {
        let mut next = tokio::time::Instant::now() + MONITOR_PERIOD;
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        // listed once per pass, when a node needs its pods
        let mut pods = PodsByNode::default();
        for name in names {
            match self.sync_node(&name, &mut pods).await {
                Ok(Some(at)) => next = next.min(self.clock.deadline(at)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "node-lifecycle sync failed; retrying");
                    next = next.min(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
        next
    }

    /// Decides for one node and writes what changed; returns when to look at it again (unix ms).
    pub async fn sync_node(
        &mut self,
        name: &str,
        pods: &mut PodsByNode,
    ) -> Result<Option<i64>, NodeLifecycleError> {
        let err = |source| NodeLifecycleError::Node {
            node: name.to_string(),
            source,
        };
        let Some((rv, node)) = self.nodes.get(name).cloned() else {
            return Ok(None);
        };
        let Some(health) = self.health.get(name).cloned() else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        let verdict = nodehealth::decide(&node, &health, self.opts.grace, now);
        let mut rv = rv;
        if let Some(conditions) = &verdict.conditions {
            let ready = conditions.iter().find(|c| c.type_ == "Ready");
            tracing::warn!(
                node = name,
                ready = ready.map(|c| c.status.as_str()),
                silent_ms = now - health.probe_ms,
                "node agent stopped posting status: conditions Unknown"
            );
            let conditions = serde_json::to_value(conditions).unwrap_or_default();
            rv = match self
                .write_node(name, rv, Part::Status, |n| {
                    n["status"]["conditions"] = conditions.clone()
                })
                .await
            {
                Ok(Some(rv)) => rv,
                Ok(None) => return Ok(Some(now)),
                Err(e) => return Err(err(e)),
            };
        }
        if let Some(taints) = &verdict.taints {
            let keys: Vec<String> = taints
                .iter()
                .map(crate::core::eligibility::taint_to_string)
                .collect();
            tracing::info!(node = name, taints = ?keys, "node taints");
            let taints = serde_json::to_value(taints).unwrap_or_default();
            match self
                .write_node(name, rv, Part::Main, |n| {
                    n["spec"]["taints"] = taints.clone()
                })
                .await
            {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Some(now)),
                Err(e) => return Err(err(e)),
            }
        }
        if verdict.mark_pods {
            let on_node = pods.on(&self.api, &self.user, name).await?;
            self.mark_pods_not_ready(name, &on_node, now).await?;
            if let Some(h) = self.health.get_mut(name) {
                h.pods_marked();
            }
        }
        let evict_at = self.evict(name, pods, now).await?;
        Ok([verdict.check_at_ms, evict_at].into_iter().flatten().min())
    }

    /// Writes `change` into node `name` if it is still at `rv`; the new resourceVersion, or None
    /// when the node changed meanwhile (its event brings the new state: decided again).
    async fn write_node(
        &self,
        name: &str,
        rv: u64,
        part: Part,
        change: impl Fn(&mut Value),
    ) -> Result<Option<u64>, ApiError> {
        let at = ObjectRef::new(&NODES, None, name);
        let written = self
            .api
            .update_with(&self.user, at, part, WriteOpts::INTERNAL, |old| {
                if object_rv(old) != rv {
                    return Err(ApiError::conflict("", "nodes", name));
                }
                let mut new = old.clone();
                change(&mut new);
                Ok(new)
            })
            .await;
        match written {
            Ok(w) => Ok(Some(object_rv(&w.object))),
            Err(e) if e.code == 409 || e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `markPodsNotReady`: the Ready condition of each pod on `node` set to False.
    async fn mark_pods_not_ready(
        &self,
        node: &str,
        pods: &[Arc<Value>],
        now: i64,
    ) -> Result<(), NodeLifecycleError> {
        for pod in pods {
            let typed: Pod = match serde_json::from_value((**pod).clone()) {
                Ok(p) => p,
                Err(_) => continue,
            };
            if !nodehealth::needs_not_ready(&typed) {
                continue;
            }
            let (ns, name) = (s(pod, "/metadata/namespace"), s(pod, "/metadata/name"));
            let uid = s(pod, "/metadata/uid").to_string();
            let at = ObjectRef::new(&PODS, Some(ns), name);
            let written = self
                .api
                .update_with(&self.user, at, Part::Status, WriteOpts::INTERNAL, |old| {
                    if s(old, "/metadata/uid") != uid {
                        return Err(ApiError::conflict("", "pods", name));
                    }
                    let mut new = old.clone();
                    for c in new
                        .pointer_mut("/status/conditions")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        if c["type"] == "Ready" && c["status"] != "False" {
                            c["status"] = json!("False");
                            c["lastTransitionTime"] =
                                serde_json::to_value(time(now)).unwrap_or_default();
                        }
                    }
                    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    Ok(new)
                })
                .await;
            match written {
                Ok(_) => {
                    tracing::info!(node, pod = name, namespace = ns, "pod marked not ready");
                    // after the write, so that the pod still exists (as upstream)
                    let about = pod_ref(ns, name, &uid, "");
                    self.events
                        .warning(&about, nodehealth::NODE_NOT_READY, "Node is not ready");
                }
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(source) => {
                    return Err(NodeLifecycleError::Pod {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// The taint-eviction pass of `node`: deletes the pods its NoExecute taints evict now;
    /// returns when the next one is due (unix ms).
    async fn evict(
        &mut self,
        node: &str,
        pods: &mut PodsByNode,
        now: i64,
    ) -> Result<Option<i64>, NodeLifecycleError> {
        let Some((_, n)) = self.nodes.get(node).cloned() else {
            return Ok(None);
        };
        if !has_no_execute(&n) {
            return Ok(None);
        }
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let mut next: Option<i64> = None;
        for pod in pods.on(&self.api, &self.user, node).await? {
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let typed: Pod = match serde_json::from_value((*pod).clone()) {
                Ok(p) => p,
                Err(_) => continue,
            };
            let uid = s(&pod, "/metadata/uid").to_string();
            let seen = *self.seen.entry(uid).or_insert(now);
            let tolerations = typed
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            match nodehealth::eviction(&tolerations, &taints, seen, now) {
                Eviction::Keep => {}
                Eviction::At(at) => next = Some(next.map_or(at, |n| n.min(at))),
                Eviction::Now => {
                    let (ns, name) = (s(&pod, "/metadata/namespace"), s(&pod, "/metadata/name"));
                    let about = pod_ref(ns, name, s(&pod, "/metadata/uid"), "");
                    self.evictions.normal(
                        &about,
                        "TaintManagerEviction",
                        format!("Marking for deletion Pod {ns}/{name}"),
                    );
                    let at = ObjectRef::new(&PODS, Some(ns), name);
                    match self
                        .api
                        .delete(&self.user, at, &DeleteOptions::default())
                        .await
                    {
                        Ok(_) => tracing::info!(
                            node,
                            pod = name,
                            namespace = ns,
                            "evicted pod: NoExecute taint"
                        ),
                        Err(e) if e.code == 404 => {}
                        Err(source) => {
                            return Err(NodeLifecycleError::Pod {
                                namespace: ns.to_string(),
                                name: name.to_string(),
                                source,
                            })
                        }
                    }
                }
            }
        }
        Ok(next)
    }
}

/// The pods by the node they are bound to, each node's read at most once (per pass or event),
/// through the store's index of pods by node: a node's pods, not every pod.
#[derive(Default)]
pub struct PodsByNode(HashMap<String, Vec<Arc<Value>>>);

impl PodsByNode {
    async fn on(
        &mut self,
        api: &Api,
        user: &User,
        node: &str,
    ) -> Result<Vec<Arc<Value>>, NodeLifecycleError> {
        if let Some(pods) = self.0.get(node) {
            return Ok(pods.clone());
        }
        let pods = api
            .list_indexed(user, &PODS, None, Indexed::Trigger(node))
            .await
            .map_err(|source| NodeLifecycleError::List {
                what: "pods",
                source,
            })?;
        self.0.insert(node.to_string(), pods.clone());
        Ok(pods)
    }
}

fn has_no_execute(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.effect == TAINT_EFFECT_NO_EXECUTE))
}

/// The controller against the real verbs and store, on paused time: its passes and events are
/// driven by the test (no loop), the clock moved with `tokio::time::advance`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::kinds::NAMESPACES;
    use crate::server::store::SqliteStore;
    use crate::server::verbs::PatchType;

    /// 2027-01-15T08:00:00Z
    const T0: i64 = 1_800_000_000_000;
    const GRACE: Duration = Duration::from_secs(4);

    struct Rig {
        api: Arc<Api>,
        c: Controller,
        user: User,
        clock: Clock,
        watch: crate::server::store::Watch,
        _dir: tempfile::TempDir,
    }

    fn iso(ms: i64) -> Value {
        serde_json::to_value(time(ms)).unwrap()
    }

    impl Rig {
        async fn new() -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("s.db"), 1000).unwrap();
            let api = Arc::new(Api::new(Arc::new(store), Default::default()));
            let user = User::internal("test");
            for ns in ["default", LEASE_NAMESPACE] {
                let ns = json!({"metadata": {"name": ns}});
                api.create(&user, &NAMESPACES, None, ns, WriteOpts::INTERNAL)
                    .await
                    .unwrap();
            }
            let clock = Clock::starting_at(T0);
            let watch = api
                .watch_all(&user, &[&NODES, &LEASES, &PODS])
                .await
                .unwrap();
            Rig {
                c: Controller::new(api.clone(), clock.clone(), Options::with_grace(GRACE)),
                api,
                user,
                clock,
                watch,
                _dir: dir,
            }
        }

        /// What an agent does: registers its Node, posts Ready, renews its Lease.
        async fn agent_node(&self, name: &str) {
            let n = json!({"metadata": {"name": name}});
            self.api
                .create(&self.user, &NODES, None, n, WriteOpts::INTERNAL)
                .await
                .unwrap();
            self.post_ready(name).await;
            let lease = json!({"metadata": {"name": name, "namespace": LEASE_NAMESPACE},
                "spec": {"holderIdentity": name, "renewTime": "2027-01-15T08:00:00.000000Z"}});
            self.api
                .create(
                    &self.user,
                    &LEASES,
                    Some(LEASE_NAMESPACE),
                    lease,
                    WriteOpts::INTERNAL,
                )
                .await
                .unwrap();
        }

        async fn post_ready(&self, name: &str) {
            let now = self.clock.now_ms();
            let doc = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "AgentReady", "lastHeartbeatTime": iso(now), "lastTransitionTime": iso(now)}]}});
            self.patch(&NODES, None, name, Part::Status, doc).await;
        }

        async fn renew(&self, name: &str) {
            let doc = json!({"spec": {"renewTime": iso(self.clock.now_ms())}});
            self.patch(&LEASES, Some(LEASE_NAMESPACE), name, Part::Main, doc)
                .await;
        }

        async fn patch(
            &self,
            r: &'static crate::server::resources::Resource,
            ns: Option<&str>,
            name: &str,
            part: Part,
            doc: Value,
        ) {
            self.api
                .patch(
                    &self.user,
                    ObjectRef::new(r, ns, name),
                    part,
                    PatchType::Merge,
                    &doc,
                    WriteOpts::INTERNAL,
                )
                .await
                .unwrap();
        }

        /// A pod on `node`, ready; `daemon`: with the DaemonSet tolerations.
        async fn ready_pod(&self, name: &str, node: &str, daemon: bool) {
            let mut spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(
                json!({"nodeName": node, "containers": [{"name": "c", "image": "i"}]}),
            )
            .unwrap();
            if daemon {
                crate::core::eligibility::add_daemon_tolerations(&mut spec);
            }
            let p = json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec});
            self.api
                .create(&self.user, &PODS, Some("default"), p, WriteOpts::INTERNAL)
                .await
                .unwrap();
            let doc = json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": iso(T0)}]}});
            self.patch(&PODS, Some("default"), name, Part::Status, doc)
                .await;
        }

        /// The controller sees every event so far.
        async fn events(&mut self) -> Option<tokio::time::Instant> {
            let mut next = None;
            while let Ok(ev) = self.watch.rx.try_recv() {
                if let Some(at) = self.c.on_event(&ev).await {
                    next = Some(next.map_or(at, |n: tokio::time::Instant| n.min(at)));
                }
            }
            next
        }

        async fn get(
            &self,
            r: &'static crate::server::resources::Resource,
            ns: Option<&str>,
            name: &str,
        ) -> Option<Arc<Value>> {
            self.api
                .get(&self.user, ObjectRef::new(r, ns, name))
                .await
                .ok()
        }

        async fn ready(&self, node: &str) -> (String, String) {
            ready_of(&self.get(&NODES, None, node).await.unwrap())
        }

        async fn taints(&self, node: &str) -> Vec<String> {
            let n = self.get(&NODES, None, node).await.unwrap();
            n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("{}:{}", s(t, "/key"), s(t, "/effect")))
                .collect()
        }

        /// Waits for a Node event whose object satisfies `f`; the clock's time then.
        async fn node_event(&mut self, f: impl Fn(&Value) -> bool) -> i64 {
            loop {
                let ev = self.watch.rx.recv().await.unwrap();
                if ev.resource == NODES.key() && f(&ev.object) {
                    return self.clock.now_ms();
                }
            }
        }

        /// The pod is being deleted.
        async fn terminating(&self, name: &str) -> bool {
            let p = self.get(&PODS, Some("default"), name).await.unwrap();
            p.pointer("/metadata/deletionTimestamp").is_some()
        }

        async fn pod_ready(&self, name: &str) -> String {
            ready_of(&self.get(&PODS, Some("default"), name).await.unwrap()).0
        }
    }

    /// The v1 Events written so far, as their watch delivers them.
    struct Recorded {
        watch: crate::server::store::Watch,
        seen: Vec<Arc<Value>>,
    }

    impl Recorded {
        /// Waits for the event with `reason` about `name`: its type, message and source
        /// component.
        async fn about(&mut self, name: &str, reason: &str) -> (String, String, String) {
            loop {
                let found = self
                    .seen
                    .iter()
                    .find(|e| s(e, "/involvedObject/name") == name && s(e, "/reason") == reason);
                if let Some(e) = found {
                    let field = |p| s(e, p).to_string();
                    return (
                        field("/type"),
                        field("/message"),
                        field("/source/component"),
                    );
                }
                let next = tokio::time::timeout(Duration::from_secs(600), self.watch.rx.recv());
                let ev = next
                    .await
                    .unwrap_or_else(|_| panic!("no {reason} event about {name}"))
                    .unwrap();
                self.seen.push(ev.object.clone());
            }
        }
    }

    /// The node controller's events: NodeNotReady on the Node and each pod it marks, the
    /// taint-eviction controller's on the pod it deletes, NodeReady when the agent is back.
    #[tokio::test(start_paused = true)]
    async fn node_status_changes_and_evictions_are_recorded_as_events() {
        let mut rig = Rig::new().await;
        let watch = rig
            .api
            .watch_all(&rig.user, &[&event::EVENTS])
            .await
            .unwrap();
        let mut events = Recorded {
            watch,
            seen: Vec::new(),
        };
        rig.agent_node("n1").await;
        rig.ready_pod("ds-n1", "n1", true).await;
        rig.ready_pod("bare-n1", "n1", false).await;
        rig.c.relist().await.unwrap();
        rig.events().await;
        tokio::time::advance(Duration::from_millis(4_001)).await;
        rig.c.pass().await;
        rig.events().await;
        let node = events.about("n1", "NodeNotReady").await;
        assert_eq!(
            node,
            (
                "Normal".to_string(),
                "Node n1 status is now: NodeNotReady".to_string(),
                "node-controller".to_string()
            )
        );
        for pod in ["ds-n1", "bare-n1"] {
            let (ty, msg, from) = events.about(pod, "NodeNotReady").await;
            assert_eq!(
                (ty.as_str(), msg.as_str()),
                ("Warning", "Node is not ready")
            );
            assert_eq!(from, "node-controller");
        }
        // the bare pod's 300 s run out
        tokio::time::advance(Duration::from_secs(300)).await;
        rig.c.pass().await;
        assert!(rig.terminating("bare-n1").await);
        let evicted = events.about("bare-n1", "TaintManagerEviction").await;
        assert_eq!(
            evicted,
            (
                "Normal".to_string(),
                "Marking for deletion Pod default/bare-n1".to_string(),
                "taint-eviction-controller".to_string()
            )
        );
        rig.renew("n1").await;
        rig.post_ready("n1").await;
        rig.events().await;
        let back = events.about("n1", "NodeReady").await;
        assert_eq!(back.1, "Node n1 status is now: NodeReady");
        assert_eq!(rig.c.events.dropped() + rig.c.evictions.dropped(), 0);
    }

    /// The status and reason of an object's Ready condition.
    fn ready_of(obj: &Value) -> (String, String) {
        let conditions = obj["status"]["conditions"].as_array().unwrap();
        let c = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
        (s(c, "/status").into(), s(c, "/reason").into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_is_unknown_after_the_grace_period_and_recovers() {
        let mut rig = Rig::new().await;
        rig.agent_node("n1").await;
        rig.agent_node("n2").await;
        rig.ready_pod("ds-n1", "n1", true).await;
        rig.ready_pod("bare-n1", "n1", false).await;
        rig.ready_pod("ds-n2", "n2", true).await;
        rig.c.relist().await.unwrap();
        rig.events().await;
        let next = rig.c.pass().await;
        assert_eq!(
            next,
            rig.clock.deadline(T0 + 4_001),
            "looked at again just after the grace period"
        );

        // n2 keeps renewing, n1 goes silent
        tokio::time::advance(Duration::from_secs(3)).await;
        rig.renew("n2").await;
        rig.events().await;
        rig.c.pass().await;
        assert_eq!(rig.ready("n1").await.0, "True", "within the grace period");
        tokio::time::advance(Duration::from_millis(1_001)).await;
        rig.c.pass().await;
        rig.events().await;
        assert_eq!(
            rig.ready("n1").await,
            (
                "Unknown".to_string(),
                nodehealth::REASON_UNKNOWN.to_string()
            )
        );
        assert_eq!(
            rig.taints("n1").await,
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert_eq!(rig.pod_ready("ds-n1").await, "False");
        assert_eq!(rig.pod_ready("bare-n1").await, "False");
        assert_eq!(
            rig.ready("n2").await.0,
            "True",
            "the other node is untouched"
        );
        assert_eq!(rig.pod_ready("ds-n2").await, "True");
        assert!(rig.taints("n2").await.is_empty());

        // the bare pod tolerates unreachable for 300 s (DefaultTolerationSeconds), the daemon
        // pod for ever
        let n1 = rig.get(&NODES, None, "n1").await.unwrap();
        let added = unix_ms(&n1["spec"]["taints"][1], "/timeAdded").unwrap();
        assert_eq!(added, T0 + 4_000, "now, in whole seconds as v1.Time has it");
        for (secs, evicted) in [(299, false), (1, true)] {
            tokio::time::advance(Duration::from_secs(secs)).await;
            rig.renew("n2").await;
            rig.events().await;
            rig.c.pass().await;
            assert_eq!(
                rig.terminating("bare-n1").await,
                evicted,
                "after {secs} s more"
            );
        }
        assert!(!rig.terminating("ds-n1").await, "daemon pods stay");

        // the agent comes back: renews, posts Ready; the taints go at once, and the pod's
        // readiness is the agent's to report again
        rig.renew("n1").await;
        rig.events().await;
        assert_eq!(
            rig.ready("n1").await.0,
            "Unknown",
            "a lease alone does not make it ready"
        );
        rig.post_ready("n1").await;
        rig.events().await;
        assert_eq!(rig.ready("n1").await.0, "True");
        assert!(rig.taints("n1").await.is_empty());
        assert_eq!(rig.pod_ready("ds-n1").await, "False");
    }

    /// The controller's own loop on paused time: a node is marked exactly when its grace period
    /// ends (no polling delay), and untainted as soon as its agent posts Ready again.
    #[tokio::test(start_paused = true)]
    async fn the_loop_marks_a_node_when_its_grace_period_ends() {
        let mut rig = Rig::new().await;
        rig.agent_node("n1").await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            rig.api.clone(),
            rig.clock.clone(),
            Options::with_grace(GRACE),
            async move {
                let _ = stopped.await;
            },
        ));
        let ready = |n: &Value| s(n, "/status/conditions/0/status").to_string();
        let taints = |n: &Value| n["spec"]["taints"].as_array().map_or(0, Vec::len);
        let unknown_at = rig.node_event(|n| ready(n) == "Unknown").await;
        assert_eq!(
            unknown_at - T0,
            4_001,
            "grace period + 1 ms after it was last seen"
        );
        let tainted_at = rig.node_event(|n| taints(n) == 2).await;
        assert_eq!(tainted_at, unknown_at);

        tokio::time::advance(Duration::from_secs(20)).await;
        rig.renew("n1").await;
        rig.post_ready("n1").await;
        let back = rig.clock.now_ms();
        let untainted = rig
            .node_event(|n| ready(n) == "True" && taints(n) == 0)
            .await;
        assert_eq!(untainted, back, "at once");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    /// A node deleted while tainted is forgotten; registered again, it starts afresh.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_node_is_forgotten() {
        let mut rig = Rig::new().await;
        rig.agent_node("n1").await;
        rig.c.relist().await.unwrap();
        rig.events().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        rig.c.pass().await;
        rig.events().await;
        assert_eq!(rig.ready("n1").await.0, "Unknown");
        rig.api
            .delete(
                &rig.user,
                ObjectRef::new(&NODES, None, "n1"),
                &DeleteOptions::default(),
            )
            .await
            .unwrap();
        rig.events().await;
        assert!(rig.c.health.is_empty() && rig.c.nodes.is_empty());
        let n = json!({"metadata": {"name": "n1"}});
        rig.api
            .create(&rig.user, &NODES, None, n, WriteOpts::INTERNAL)
            .await
            .unwrap();
        rig.post_ready("n1").await;
        rig.events().await;
        rig.c.pass().await;
        assert_eq!(rig.ready("n1").await.0, "True");
        assert!(rig.taints("n1").await.is_empty());
    }
}
