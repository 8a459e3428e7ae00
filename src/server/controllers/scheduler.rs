//! The scheduler loop, kube-scheduler's job for this server: every pending pod (no
//! `spec.nodeName`, not being deleted, for the default scheduler) is placed by the pure
//! `core::scheduler` and bound through the `pods/binding` subresource's write; a pod no node can
//! take gets `PodScheduled=False`, reason `Unschedulable`, with the scheduler's message, and is
//! tried again whenever a pod or a node changes (a freed node, a new one, a relabelled one).
//!
//! Pods are placed one at a time, oldest first, each decision seeing the pods bound before it.
//!
//! No pass lists anything: like kube-scheduler's cache, the loop lists Nodes and Pods once (and
//! again only when its watch lagged), then keeps a `core::scheduler::
//! Cache` (per node: allocated requests, host ports, pod count, pods per owner) and the set of
//! pending pods up to date from the watch events, one pod or node at a time; a binding it wrote
//! is counted at once.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use super::s;
use crate::agent::clock::Clock;
use crate::core::scheduler::Cache;
use crate::server::auth::User;
use crate::server::kinds::{NODES, PODS};
use crate::server::query::Filter;
use crate::server::status::ApiError;
use crate::server::store::{EventType, WatchEvent};
use crate::server::subresource::{bind, set_condition};
use crate::server::verbs::{Api, ObjectRef};

/// A pass runs at least this often (a pod the last one could not place may fit now). It does
/// not relist: the watch keeps the cache current, and a lagging watch relists (a relist is a
/// decode of every pod and node: 100 000 pods every 30 s was a share of a core).
const RESYNC: Duration = Duration::from_secs(30);

/// The scheduler a pod without `spec.schedulerName` is for.
const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// How many bindings a pass has in flight at once.
const BINDS_AT_ONCE: usize = 64;

pub struct Scheduler {
    api: Arc<Api>,
    clock: Clock,
    user: User,
    cache: Cache,
    /// The pods waiting for a node, by namespace/name.
    pending: BTreeMap<String, Arc<Value>>,
    /// The resourceVersion of the last list: older watch events are in it already.
    listed_rv: u64,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub bound: usize,
    pub unschedulable: usize,
}

impl Scheduler {
    pub fn new(api: Arc<Api>, clock: Clock) -> Scheduler {
        Scheduler {
            api,
            clock,
            user: User::internal("default-scheduler"),
            cache: Cache::default(),
            pending: BTreeMap::new(),
            listed_rv: 0,
        }
    }

    /// Runs until the store closes the watch (the server stops) or the task is dropped.
    pub async fn run(mut self) {
        loop {
            let mut feed = match super::Feed::new(self.api.clone(), &self.user, &[&PODS, &NODES]) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "the scheduler cannot watch the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = self.relist().await {
                tracing::warn!(error = %e, "the scheduler cannot list pods and nodes");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let mut resync = tokio::time::interval(RESYNC);
            resync.tick().await;
            let mut relevant = true;
            loop {
                if relevant {
                    if let Err(e) = self.pass().await {
                        tracing::warn!(error = %e, "scheduling pass failed");
                    }
                }
                tokio::select! {
                    d = feed.recv(super::DRAIN_MAX) => {
                        // one pass for everything that happened meanwhile (a bounded share of
                        // the feed); a relist when the feed left the history
                        relevant = false;
                        for ev in &d.events {
                            relevant |= self.observe(ev);
                        }
                        if d.lagged {
                            let at = feed.now();
                            relevant |= self.relist_logged().await;
                            feed.relisted(at);
                        }
                        if d.closed {
                            return;
                        }
                    }
                    _ = resync.tick() => relevant = true,
                }
            }
        }
    }

    async fn relist_logged(&mut self) -> bool {
        if let Err(e) = self.relist().await {
            tracing::warn!(error = %e, "the scheduler cannot list pods and nodes");
        }
        true
    }

    /// The cache and the pending pods from one list of Nodes and Pods.
    pub async fn relist(&mut self) -> Result<(), ApiError> {
        let (nodes, _) = self
            .api
            .list(&self.user, &NODES, None, &Filter::default())
            .await?;
        let (pods, rv) = self
            .api
            .list(&self.user, &PODS, None, &Filter::default())
            .await?;
        self.cache = Cache::default();
        self.pending.clear();
        for n in nodes {
            if let Ok(node) = serde_json::from_value::<Node>((*n).clone()) {
                self.cache.set_node(node);
            }
        }
        for raw in pods {
            self.pod_changed(raw);
        }
        self.listed_rv = rv;
        Ok(())
    }

    /// One watch event into the cache and the pending pods; true when a pass may now place
    /// something it could not (any pod or node change).
    pub fn observe(&mut self, ev: &WatchEvent) -> bool {
        if ev.rv <= self.listed_rv {
            return false;
        }
        if ev.resource == PODS.key() {
            if ev.event_type == EventType::Deleted {
                let key = format!("{}/{}", ev.namespace, ev.name);
                self.cache.remove_pod(&key);
                self.pending.remove(&key);
            } else {
                self.pod_changed(ev.object.clone());
            }
            true
        } else if ev.resource == NODES.key() {
            if ev.event_type == EventType::Deleted {
                self.cache.remove_node(&ev.name);
            } else if let Ok(node) = serde_json::from_value::<Node>((*ev.object).clone()) {
                self.cache.set_node(node);
            }
            true
        } else {
            false
        }
    }

    fn pod_changed(&mut self, raw: Arc<Value>) {
        let key = format!(
            "{}/{}",
            s(&raw, "/metadata/namespace"),
            s(&raw, "/metadata/name")
        );
        let Ok(pod) = serde_json::from_value::<Pod>((*raw).clone()) else {
            return;
        };
        self.cache.set_pod(&key, &pod);
        if s(&raw, "/spec/nodeName").is_empty() && wants_scheduling(&raw) {
            self.pending.insert(key, raw);
        } else {
            self.pending.remove(&key);
        }
    }

    /// Places every pending pod it can, marks the others unschedulable.
    pub async fn pass(&mut self) -> Result<Pass, ApiError> {
        let mut pending: Vec<(String, Arc<Value>)> = self
            .pending
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pending.sort_by(|a, b| {
            (
                s(&a.1, "/metadata/creationTimestamp"),
                s(&a.1, "/metadata/name"),
            )
                .cmp(&(
                    s(&b.1, "/metadata/creationTimestamp"),
                    s(&b.1, "/metadata/name"),
                ))
        });
        let mut done = Pass::default();
        // the scheduling cycle: one pod after another against the cache, each placement
        // assumed in it at once (kube-scheduler's assume), so the next pods see it
        let mut binds = Vec::new();
        for (key, raw) in pending {
            let Ok(mut pod) = serde_json::from_value::<Pod>((*raw).clone()) else {
                continue;
            };
            let ns = s(&raw, "/metadata/namespace");
            let at = ObjectRef::new(&PODS, Some(ns), s(&raw, "/metadata/name"));
            match self.cache.schedule(&pod) {
                Ok(node) => {
                    let unbound = pod.clone();
                    if let Some(spec) = pod.spec.as_mut() {
                        spec.node_name = Some(node.clone());
                    }
                    self.cache.set_pod(&key, &pod);
                    binds.push((key, raw, node, unbound));
                }
                Err(why) => {
                    done.unschedulable += 1;
                    if condition_says(&raw, &why.message) {
                        continue;
                    }
                    tracing::info!(
                        pod = at.name,
                        namespace = ns,
                        why = why.message.as_str(),
                        "unschedulable"
                    );
                    let c = json!({"type": "PodScheduled", "status": "False",
                        "reason": "Unschedulable", "message": why.message,
                        "lastProbeTime": null, "lastTransitionTime": self.now()});
                    match set_condition(&self.api, &self.user, at, c).await {
                        Ok(()) => {}
                        Err(e) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        // the binding cycle: the writes at once (kube-scheduler binds beside its next
        // scheduling), so a scale-up does not wait on one conditional write after another
        let now = self.now();
        let (api, user) = (&self.api, &self.user);
        let mut results = Vec::with_capacity(binds.len());
        for chunk in binds.chunks(BINDS_AT_ONCE) {
            let mut writes = Vec::with_capacity(chunk.len());
            for (_, raw, node, _) in chunk {
                let ns = s(raw, "/metadata/namespace");
                let at = ObjectRef::new(&PODS, Some(ns), s(raw, "/metadata/name"));
                writes.push(bind(api, user, at, node, &now));
            }
            results.extend(futures::future::join_all(writes).await);
        }
        let mut failed = None;
        for ((key, raw, node, unbound), r) in binds.into_iter().zip(results) {
            match r {
                Ok(()) => {
                    tracing::info!(
                        pod = s(&raw, "/metadata/name"),
                        namespace = s(&raw, "/metadata/namespace"),
                        node = node.as_str(),
                        "bound"
                    );
                    done.bound += 1;
                    self.pending.remove(&key);
                }
                Err(e) => {
                    // not bound by us: the assumption goes (the watch tells what became of it)
                    self.cache.set_pod(&key, &unbound);
                    if e.code == 404 || e.code == 409 {
                        self.pending.remove(&key);
                    } else {
                        failed.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(done)
    }

    fn now(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.clock.now_ms())
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

/// An unbound pod for this scheduler that still wants a node.
fn wants_scheduling(pod: &Value) -> bool {
    let scheduler = s(pod, "/spec/schedulerName");
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(s(pod, "/status/phase"), "Succeeded" | "Failed")
        && (scheduler.is_empty() || scheduler == DEFAULT_SCHEDULER)
}

/// The pod already says it is unschedulable for this reason.
fn condition_says(pod: &Value, message: &str) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            s(c, "/type") == "PodScheduled"
                && s(c, "/status") == "False"
                && s(c, "/reason") == "Unschedulable"
                && s(c, "/message") == message
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::kinds::NAMESPACES;
    use crate::server::query::WriteOpts;
    use crate::server::store::SqliteStore;

    #[tokio::test]
    async fn a_pass_binds_what_fits_and_marks_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), 1000).unwrap();
        let api = Arc::new(Api::new(Arc::new(store), Default::default()));
        let user = User::internal("test");
        let ns = json!({"metadata": {"name": "default"}});
        api.create(&user, &NAMESPACES, None, ns, WriteOpts::INTERNAL)
            .await
            .unwrap();
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
            "conditions": [{"type": "Ready", "status": "True"}]}});
        let created = api
            .create(&user, &NODES, None, node, WriteOpts::INTERNAL)
            .await
            .unwrap();
        // the node's status is the agent's to write
        let at = ObjectRef::new(&NODES, None, "n1");
        let mut with_status = (*created.object).clone();
        with_status["status"] = json!({"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
            "conditions": [{"type": "Ready", "status": "True"}]});
        api.update(
            &user,
            at,
            crate::server::verbs::Part::Status,
            with_status,
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap();
        for (name, memory) in [("small", "100Mi"), ("big", "2Gi")] {
            let pod = json!({"metadata": {"name": name, "namespace": "default"}, "spec": {
                "containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"memory": memory}}}]}});
            api.create(&user, &PODS, Some("default"), pod, WriteOpts::INTERNAL)
                .await
                .unwrap();
        }
        let mut sched = Scheduler::new(api.clone(), Clock::system());
        sched.relist().await.unwrap();
        assert_eq!(
            sched.pass().await.unwrap(),
            Pass {
                bound: 1,
                unschedulable: 1
            }
        );
        let get = |name: &'static str| {
            let api = api.clone();
            let user = user.clone();
            async move {
                api.get(&user, ObjectRef::new(&PODS, Some("default"), name))
                    .await
                    .unwrap()
            }
        };
        let small = get("small").await;
        assert_eq!(small["spec"]["nodeName"], "n1");
        let cond = |p: &Value| {
            p["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "PodScheduled")
                .cloned()
                .unwrap()
        };
        assert_eq!(cond(&small)["status"], "True");
        let big = get("big").await;
        assert!(big["spec"].get("nodeName").is_none());
        assert_eq!(cond(&big)["reason"], "Unschedulable");
        assert_eq!(
            cond(&big)["message"],
            "0/1 nodes are available: 1 Insufficient memory."
        );
        // a second pass writes nothing new
        let rv = big["metadata"]["resourceVersion"].clone();
        sched.pass().await.unwrap();
        assert_eq!(get("big").await["metadata"]["resourceVersion"], rv);
        // binding a bound pod is a conflict
        let again = bind(
            &api,
            &user,
            ObjectRef::new(&PODS, Some("default"), "small"),
            "n2",
            "t",
        )
        .await;
        assert_eq!(again.unwrap_err().code, 409);
    }

    /// The loop lists pods and nodes once: its periodic passes read nothing (each relisted
    /// every pod and node).
    #[tokio::test(start_paused = true)]
    async fn periodic_passes_do_not_relist() {
        use crate::server::controllers::counting::Counting;
        let dir = tempfile::tempdir().unwrap();
        let (store, api, user) = Counting::with_api(&dir).await;
        let node = json!({"metadata": {"name": "n1"}});
        let created = api
            .create(&user, &NODES, None, node, WriteOpts::INTERNAL)
            .await
            .unwrap();
        let mut with_status = (*created.object).clone();
        with_status["status"] = json!({"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
            "conditions": [{"type": "Ready", "status": "True"}]});
        let at = ObjectRef::new(&NODES, None, "n1");
        let status = crate::server::verbs::Part::Status;
        api.update(&user, at, status, with_status, WriteOpts::INTERNAL)
            .await
            .unwrap();
        let mut watch = api.watch_all(&user, &[&PODS]).await.unwrap();
        let task = tokio::spawn(Scheduler::new(api.clone(), Clock::system()).run());
        let pod = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        api.create(&user, &PODS, Some("default"), pod, WriteOpts::INTERNAL)
            .await
            .unwrap();
        loop {
            let ev = watch.rx.recv().await.unwrap();
            if ev.resource == PODS.key() && s(&ev.object, "/spec/nodeName") == "n1" {
                break;
            }
        }
        store.reset();
        // three resync periods on paused time: three passes
        tokio::time::sleep(RESYNC * 3 + Duration::from_secs(1)).await;
        assert_eq!(store.reads(&PODS.key()).whole, 0);
        assert_eq!(store.reads(&NODES.key()).whole, 0);
        task.abort();
    }
}
