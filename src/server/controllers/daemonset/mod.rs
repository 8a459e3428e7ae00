//! The DaemonSet controller, as kube-controller-manager's `pkg/controller/daemon` works: one sync
//! per DaemonSet (a work queue keyed by namespace/name, fed by the watch of DaemonSets, Pods,
//! Nodes and ControllerRevisions) that
//! 1. claims the pods (its controller reference; adopts matching orphans, releases pods whose
//!    labels stop matching: `claim`),
//! 2. keeps the ControllerRevisions (`revisions`),
//! 3. creates a pod on each node that should run one and has none, and deletes the pods that may
//!    not stay (`core::rollout::manage`; pods: `pods`),
//! 4. when that left nothing to do, deletes the old pods a rolling update may replace within
//!    maxUnavailable (`core::rollout::rolling_update`); the manage step recreates them, on a
//!    node only once its old pod is gone,
//! 5. writes the status (`status`).
//!
//! The agents run the pods bound to their node and delete a deleted pod once they stopped it.
mod pods;
mod revisions;
mod status;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::claim::{self, Owner};
use super::queue::{Key, Queue};
use super::{controller_of, labels_of, s, slow_start};
use crate::agent::events::Recorder;
use crate::core::eligibility::node_should_run;
use crate::core::events::Involved;
use crate::core::hash::template_hash;
use crate::core::labels::selector_matches;
use crate::core::rollout::{self, DaemonPod, FailedBackoff, NodeFit, ReadySeen, BURST};
use crate::server::auth::User;
use crate::server::kinds::{event, CONTROLLER_REVISIONS, DAEMONSETS, NODES, PODS};
use crate::server::query::{Filter, WriteOpts};
use crate::server::resources::Resource;
use crate::server::status::ApiError;
use crate::server::store::{object_rv, EventType, WatchEvent};
use crate::server::verbs::{Api, DeleteOptions, ObjectRef, Part, PatchType};

pub use status::compute_status;

/// Every DaemonSet is synced at least this often (missed events).
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("daemonset {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("daemonset {namespace}/{name}: the stored object does not decode: {source}")]
    Decode {
        namespace: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

pub struct Controller {
    api: Arc<Api>,
    /// Who the controller is to the verbs.
    user: User,
    /// Decoded nodes, by name, with the resourceVersion they were decoded at.
    nodes: BTreeMap<String, (u64, Arc<Node>)>,
    /// While `run` keeps `nodes` current from its watch: the resourceVersion of their list
    /// (older events are in it). None: a sync lists the nodes (a sync called alone).
    nodes_listed: Option<u64>,
    queue: Queue,
    /// Per DaemonSet uid: the generation its failed-pod back-off counts for, and the back-off.
    failed: HashMap<String, (i64, FailedBackoff)>,
    /// When pods were seen turning Ready, finer than their whole-second `lastTransitionTime`.
    ready_seen: ReadySeen,
    /// Per DaemonSet uid, its pods (uids) `ready_seen` may hold a sighting of: a sync forgets
    /// those it no longer claims (gone, though a lagging watch lost their deletion), so that no
    /// pass reads every pod for it.
    sighted: HashMap<String, HashSet<String>>,
    /// Its events (SuccessfulCreate, SuccessfulDelete, FailedCreate, FailedDaemonPod, ...).
    events: Recorder,
}

/// The reference events about a DaemonSet carry.
fn involved(owner: &Owner<'_>) -> Involved {
    Involved {
        api_version: owner.api_version.into(),
        kind: owner.kind.into(),
        namespace: owner.namespace.into(),
        name: owner.name.into(),
        uid: owner.uid.into(),
        field_path: String::new(),
    }
}

/// Only the status (and so the resourceVersion) changed: the controller's own status write.
pub(super) fn status_only(ev: &WatchEvent) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("status");
        }
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    ev.event_type == EventType::Modified
        && ev
            .prev
            .as_ref()
            .is_some_and(|p| strip(p) == strip(&ev.object))
}

impl Controller {
    pub fn new(api: Arc<Api>) -> Controller {
        let clock = crate::agent::clock::Clock::system();
        Controller {
            events: event::recorder(api.clone(), "daemonset-controller", clock),
            api,
            user: User::internal("daemonset-controller"),
            nodes: BTreeMap::new(),
            nodes_listed: None,
            queue: Queue::default(),
            failed: HashMap::new(),
            ready_seen: ReadySeen::default(),
            sighted: HashMap::new(),
        }
    }

    /// Runs until the store closes the watch (the server stops) or the task is dropped.
    pub async fn run(mut self) {
        let resources = [&DAEMONSETS, &NODES, &PODS, &CONTROLLER_REVISIONS];
        loop {
            let mut feed = match super::Feed::new(self.api.clone(), &self.user, &resources) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "the DaemonSet controller cannot watch the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.follow_nodes().await;
            self.resync().await;
            let mut resync = tokio::time::interval_at(Instant::now() + RESYNC, RESYNC);
            loop {
                let due = self.queue.next_due();
                tokio::select! {
                    d = feed.recv(super::DRAIN_MAX) => {
                        // a bounded share of the feed, then the queue (below)
                        for ev in &d.events {
                            self.on_event(ev).await;
                        }
                        if d.lagged {
                            let at = feed.now();
                            self.follow_nodes().await;
                            self.enqueue_all().await;
                            feed.relisted(at);
                        }
                        if d.closed {
                            return;
                        }
                    }
                    _ = resync.tick() => self.resync().await,
                    _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
                }
                for key in self.queue.take(Instant::now()) {
                    self.sync_logged(key).await;
                }
            }
        }
    }

    /// Every DaemonSet queued (the garbage collector, `super::gc`, deletes the dependents of
    /// those gone).
    async fn resync(&mut self) {
        self.enqueue_all().await;
    }

    async fn enqueue_all(&mut self) {
        match self.list(&DAEMONSETS, None).await {
            Ok(all) => {
                // the sightings of DaemonSets gone (a lagging watch lost their deletion)
                let live: HashSet<&str> = all.iter().map(|d| s(d, "/metadata/uid")).collect();
                let gone: Vec<String> = (self.sighted.keys())
                    .filter(|u| !live.contains(u.as_str()))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.forget_sightings(&uid, |_| false);
                }
                for d in all {
                    let key = (
                        s(&d, "/metadata/namespace").into(),
                        s(&d, "/metadata/name").into(),
                    );
                    self.queue.add(key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the DaemonSets"),
        }
    }

    /// Queues the DaemonSets of `ns` whose selector matches `labels` (an orphan they may adopt).
    async fn enqueue_selecting(&mut self, ns: &str, labels: &BTreeMap<String, String>) {
        let Ok(all) = self.list(&DAEMONSETS, Some(ns)).await else {
            return;
        };
        for d in all {
            let selector: Option<LabelSelector> = d
                .pointer("/spec/selector")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            if selector.is_some_and(|sel| !is_empty(&sel) && selector_matches(&sel, labels)) {
                self.queue
                    .add((ns.to_string(), s(&d, "/metadata/name").to_string()));
            }
        }
    }

    async fn on_event(&mut self, ev: &WatchEvent) {
        let key = |name: &str| (ev.namespace.clone(), name.to_string());
        if ev.resource == DAEMONSETS.key() {
            if ev.event_type == EventType::Deleted {
                let uid = s(&ev.object, "/metadata/uid").to_string();
                self.failed.remove(&uid);
                self.forget_sightings(&uid, |_| false);
            } else if !status_only(ev) {
                self.queue.add(key(&ev.name));
            }
        } else if ev.resource == NODES.key() {
            self.node_event(ev);
            // heartbeats (status-only writes) do not change where daemon pods belong
            let relevant = |v: &Value| {
                (
                    v.pointer("/metadata/labels").cloned(),
                    v.get("spec").cloned(),
                )
            };
            let changed = ev.event_type != EventType::Modified
                || ev
                    .prev
                    .as_ref()
                    .is_none_or(|p| relevant(p) != relevant(&ev.object));
            if changed {
                self.enqueue_all().await;
            }
        } else if ev.resource == PODS.key() || ev.resource == CONTROLLER_REVISIONS.key() {
            if ev.resource == PODS.key() {
                tracing::debug!(pod = ev.name.as_str(), event = ?ev.event_type,
                    ready = pods::is_ready(&ev.object), "pod event");
                // the sightings of daemon pods only (a sync asks for its claimed pods'), each
                // noted under its DaemonSet, whose sync forgets those gone
                if let Some(c) = controller_of(&ev.object).filter(|c| c.kind == "DaemonSet") {
                    let uid = s(&ev.object, "/metadata/uid");
                    let (ready, gone) = (
                        pods::is_ready(&ev.object),
                        ev.event_type == EventType::Deleted,
                    );
                    self.ready_seen.observe(
                        uid,
                        ev.prev.as_deref().map(pods::is_ready),
                        ready,
                        gone,
                        Utc::now().timestamp_millis(),
                    );
                    let pods = self.sighted.entry(c.uid).or_default();
                    if ready && !gone {
                        pods.insert(uid.to_string());
                    } else {
                        pods.remove(uid);
                    }
                }
            }
            for obj in std::iter::once(&ev.object).chain(ev.prev.iter()) {
                if let Some(c) = controller_of(obj).filter(|c| c.kind == "DaemonSet") {
                    self.queue.add(key(&c.name));
                }
            }
            // an orphan pod, new or relabelled or just released: who may adopt it
            let orphan = ev.resource == PODS.key()
                && ev.event_type != EventType::Deleted
                && controller_of(&ev.object).is_none();
            let labels = labels_of(&ev.object);
            let news = ev
                .prev
                .as_ref()
                .is_none_or(|p| labels_of(p) != labels || controller_of(p).is_some());
            if orphan && news {
                self.enqueue_selecting(&ev.namespace, &labels).await;
            }
        }
    }

    /// Forgets the Ready sightings of the pods of DaemonSet `uid` that `keep` does not keep.
    fn forget_sightings(&mut self, uid: &str, keep: impl Fn(&str) -> bool) {
        let Some(pods) = self.sighted.get_mut(uid) else {
            return;
        };
        let ready_seen = &mut self.ready_seen;
        pods.retain(|pod| {
            let kept = keep(pod);
            if !kept {
                ready_seen.observe(pod, None, false, true, 0);
            }
            kept
        });
        if pods.is_empty() {
            self.sighted.remove(uid);
        }
    }

    /// Every object of `r` (in `ns`), through the verbs.
    async fn list(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let (items, _) = self.api.list(&self.user, r, ns, &Filter::default()).await?;
        Ok(items)
    }

    /// Lists the nodes, decoding only those changed since they were decoded; the list's
    /// resourceVersion.
    async fn list_nodes(&mut self) -> Result<u64, ApiError> {
        let (items, rv) = self
            .api
            .list(&self.user, &NODES, None, &Filter::default())
            .await?;
        let mut nodes = BTreeMap::new();
        for item in items {
            let name = s(&item, "/metadata/name");
            let node = match self.nodes.remove(name) {
                Some(cached) if cached.0 == object_rv(&item) => cached,
                _ => match decode_node(&item) {
                    Some(node) => node,
                    None => continue,
                },
            };
            nodes.insert(name.to_string(), node);
        }
        self.nodes = nodes;
        Ok(rv)
    }

    /// Lists the nodes once and keeps them current from the watch's node events after that
    /// list (as an informer): a sync then reads no node. Before, each sync listed (and so
    /// decoded) every node: 5000 decodes per sync at 5000 nodes.
    async fn follow_nodes(&mut self) {
        self.nodes_listed = match self.list_nodes().await {
            Ok(rv) => Some(rv),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the nodes; each sync lists them");
                None
            }
        };
    }

    /// A node watch event into `nodes`, when they follow the watch.
    fn node_event(&mut self, ev: &WatchEvent) {
        let Some(listed) = self.nodes_listed else {
            return;
        };
        let rv = object_rv(&ev.object).max(ev.rv);
        let newer = self.nodes.get(&ev.name).is_none_or(|(at, _)| *at < rv);
        if ev.rv <= listed || !newer {
            return;
        }
        if ev.event_type == EventType::Deleted {
            self.nodes.remove(&ev.name);
        } else if let Some(node) = decode_node(&ev.object) {
            self.nodes.insert(ev.name.clone(), node);
        }
    }

    /// The nodes: as the watch keeps them, or listed now.
    async fn current_nodes(&mut self) -> Result<Vec<Arc<Node>>, ApiError> {
        if self.nodes_listed.is_none() {
            self.list_nodes().await?;
        }
        Ok(self.nodes.values().map(|(_, n)| n.clone()).collect())
    }

    /// One sync in its span (the events inside carry the DaemonSet); queued again when it asks
    /// to be, or after its back-off when it failed.
    async fn sync_logged(&mut self, key: Key) {
        let span = tracing::info_span!(
            "sync",
            daemonset = key.1.as_str(),
            namespace = key.0.as_str()
        );
        let result = self.sync(&key.0, &key.1).instrument(span.clone()).await;
        if let Err(e) = &result {
            span.in_scope(|| tracing::warn!(error = %e, "daemonset sync failed; retrying"));
        }
        self.queue.finish(key, &result, Instant::now());
    }

    /// Syncs one DaemonSet (the module's steps); returns when to sync it again, if it must be
    /// (a failed pod's back-off, a pod becoming available after minReadySeconds).
    pub async fn sync(&mut self, ns: &str, name: &str) -> Result<Option<Instant>, ControllerError> {
        let err = |source| ControllerError::Api {
            namespace: ns.to_string(),
            name: name.to_string(),
            source,
        };
        let at = ObjectRef::new(&DAEMONSETS, Some(ns), name);
        let ds_val = match self.api.get(&self.user, at).await {
            Ok(ds) => ds,
            Err(e) if e.code == 404 => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let ds: DaemonSet = serde_json::from_value((*ds_val).clone()).map_err(|source| {
            ControllerError::Decode {
                namespace: ns.to_string(),
                name: name.to_string(),
                source,
            }
        })?;
        // a DaemonSet being deleted is left alone: its dependents go with it
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(None);
        };
        let uid = s(&ds_val, "/metadata/uid").to_string();
        let owner = Owner {
            api_version: "apps/v1",
            kind: "DaemonSet",
            namespace: ns,
            name,
            uid: &uid,
            deleting: false,
        };
        if is_empty(&spec.selector) {
            tracing::warn!("the DaemonSet selects all pods: a non-empty selector is required");
            let msg = "This daemon set is selecting all pods. A non-empty selector is required.";
            self.events.warning(&involved(&owner), "SelectingAll", msg);
            return Ok(None);
        }
        let nodes = self.current_nodes().await.map_err(err)?;
        let claimed = claim::claim_pods(&self.api, &self.user, &DAEMONSETS, &owner, &spec.selector)
            .await
            .map_err(err)?;
        let claimed_uids: HashSet<&str> = claimed.iter().map(|p| s(p, "/metadata/uid")).collect();
        self.forget_sightings(&uid, |pod| claimed_uids.contains(pod));
        let pods: Vec<DaemonPod> = claimed
            .iter()
            .map(|p| {
                let mut d = pods::daemon_pod(p);
                if d.ready {
                    d.ready_since_ms = self
                        .ready_seen
                        .since(s(p, "/metadata/uid"), d.ready_since_ms);
                }
                d
            })
            .collect();
        let collision = ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collision);
        let live: HashSet<&str> = pods
            .iter()
            .map(|p| p.hash.as_str())
            .filter(|h| !h.is_empty())
            .collect();
        revisions::ensure(&self.api, &self.user, &owner, &ds_val, &hash, &live)
            .await
            .map_err(err)?;

        let fits: Vec<NodeFit> = nodes
            .iter()
            .map(|n| {
                let e = node_should_run(n, &ds);
                NodeFit {
                    name: n.metadata.name.clone().unwrap_or_default(),
                    should_run: e.should_run,
                    should_continue_running: e.should_continue_running,
                    ready: node_ready(n),
                }
            })
            .collect();
        let generation = ds.metadata.generation.unwrap_or(0);
        let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0).max(0));
        let now_ms = Utc::now().timestamp_millis();
        let (gen, backoff) = self
            .failed
            .entry(uid.clone())
            .or_insert_with(|| (generation, FailedBackoff::default()));
        if *gen != generation {
            *gen = generation;
            *backoff = FailedBackoff::default();
        }
        let strategy = spec.update_strategy.as_ref();
        let desired = fits.iter().filter(|f| f.should_run).count() as i64;
        let budget = rollout::budget(strategy, desired);
        let surge =
            (!rollout::is_on_delete(strategy) && budget.max_surge > 0).then_some(rollout::Surge {
                hash: &hash,
                min_ready_seconds: min_ready,
            });
        let manage = rollout::manage(&fits, &pods, backoff, now_ms, surge);
        for node in &manage.failed_on {
            backoff.next(node, now_ms);
        }
        let retry_at = manage.retry_at;
        let mut waiting_pull = Vec::new();
        if manage.is_empty() {
            // the expectations are met: the update strategy may replace old pods
            let partition = annotation(&ds_val, rollout::PARTITION)
                .and_then(rollout::parse_partition)
                .unwrap_or(0);
            let update = rollout::partitioned_update(
                strategy, min_ready, &fits, &pods, &hash, now_ms, partition,
            );
            self.create_pods(&ds, &owner, &update.create_on, &hash)
                .await
                .map_err(err)?;
            self.delete_pods(&owner, &update.delete)
                .await
                .map_err(err)?;
            self.tell_to_pull(&owner, &update.pull_next, &hash)
                .await
                .map_err(err)?;
            waiting_pull = update.waiting_pull;
        } else {
            self.create_pods(&ds, &owner, &manage.create_on, &hash)
                .await
                .map_err(err)?;
            self.delete_pods(&owner, &manage.delete)
                .await
                .map_err(err)?;
        }

        let stall = rollout::stall(&pods, &hash);
        if let Some(st) = stall.as_ref().filter(|st| {
            annotation(&ds_val, rollout::ROLLBACK_ON_FAILURE) == Some("true")
                && rollout::rollback_due(st, budget)
        }) {
            revisions::roll_back(&self.api, &self.user, &owner, &hash, &st.describe())
                .await
                .map_err(err)?;
        }
        let (mut status, wake) =
            status::compute_status(generation, min_ready, &fits, &pods, &hash, now_ms);
        status["conditions"] = status::conditions(&ds_val, stall.as_ref(), &waiting_pull, now_ms);
        self.write_status(at, &uid, &ds_val, &status)
            .await
            .map_err(err)?;
        // a new pod beside an old one (surge) becomes available after minReadySeconds too
        let surging = pods
            .iter()
            .filter_map(|p| p.available_at(min_ready, now_ms))
            .min();
        let again = [retry_at, wake, surging].into_iter().flatten().min();
        Ok(again.map(|ms| Instant::now() + Duration::from_millis((ms - now_ms).max(0) as u64)))
    }

    /// Creates a pod on each of `nodes` (at most `BURST`) in upstream's slow-start batches
    /// (`super::slow_start`, as `syncNodes`), stopping after the first batch with an error: the
    /// sync is retried with back-off (a template the API refuses is not sent once per node).
    async fn create_pods(
        &self,
        ds: &DaemonSet,
        owner: &Owner<'_>,
        nodes: &[String],
        hash: &str,
    ) -> Result<(), ApiError> {
        let nodes = &nodes[..nodes.len().min(BURST)];
        let (api, user) = (&self.api, &self.user);
        let created = slow_start(nodes.len(), |i| {
            let pod = pods::new_pod(ds, owner, &nodes[i], hash);
            api.create(user, &PODS, Some(owner.namespace), pod, WriteOpts::INTERNAL)
        })
        .await;
        let mut first_error = None;
        for (node, r) in nodes.iter().zip(created) {
            match r {
                Ok(w) => {
                    let name = s(&w.object, "/metadata/name");
                    let msg = format!("Created pod: {name}");
                    self.events
                        .normal(&involved(owner), "SuccessfulCreate", msg);
                    tracing::info!(pod = name, node = node.as_str(), "created pod");
                }
                Err(e) => {
                    let msg = format!("Error creating: {}", e.message);
                    self.events.warning(&involved(owner), "FailedCreate", msg);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes `deletes` (at most `BURST`; gracefully: their agents stop them first), all at
    /// once as upstream's `syncNodes` does (a delete that fails does not hold the others back).
    async fn delete_pods(
        &self,
        owner: &Owner<'_>,
        deletes: &[rollout::Delete],
    ) -> Result<(), ApiError> {
        let (ns, about) = (owner.namespace, involved(owner));
        let deletes = &deletes[..deletes.len().min(BURST)];
        for d in deletes.iter().filter(|d| d.why == rollout::Why::Failed) {
            let msg = format!(
                "Found failed daemon pod {ns}/{}, will try to kill it",
                d.pod
            );
            self.events.warning(&about, "FailedDaemonPod", msg);
        }
        let (api, user) = (&self.api, &self.user);
        let sent = futures::future::join_all(deletes.iter().map(|d| {
            let at = ObjectRef::new(&PODS, Some(ns), &d.pod);
            async move { api.delete(user, at, &DeleteOptions::default()).await }
        }))
        .await;
        let mut first_error = None;
        for (d, r) in deletes.iter().zip(sent) {
            match r {
                Ok(_) => {
                    tracing::info!(pod = d.pod.as_str(), why = ?d.why, "deleted pod");
                    let msg = format!("Deleted pod: {}", d.pod);
                    self.events.normal(&about, "SuccessfulDelete", msg);
                }
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(pod = d.pod.as_str(), error = %e, "cannot delete pod");
                    let msg = format!("Error deleting: {}", e.message);
                    self.events.warning(&about, "FailedDelete", msg);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Names revision `hash` in the `PULL_NEXT` annotation of `pods` (at most `BURST`), all at
    /// once: their nodes pre-pull it now (`core::rollout::partitioned_update` chose the next
    /// wave). A pod gone meanwhile is skipped; another error fails the sync (retried).
    async fn tell_to_pull(
        &self,
        owner: &Owner<'_>,
        pods: &[String],
        hash: &str,
    ) -> Result<(), ApiError> {
        let pods = &pods[..pods.len().min(BURST)];
        let doc = json!({"metadata": {"annotations": {rollout::PULL_NEXT: hash}}});
        let (api, user, doc) = (&self.api, &self.user, &doc);
        let sent = futures::future::join_all(pods.iter().map(|pod| async move {
            let at = ObjectRef::new(&PODS, Some(owner.namespace), pod);
            let opts = WriteOpts::INTERNAL;
            api.patch(user, at, Part::Main, PatchType::Merge, doc, opts)
                .await
        }))
        .await;
        let mut first_error = None;
        for (pod, r) in pods.iter().zip(sent) {
            match r {
                Ok(_) => tracing::debug!(pod = pod.as_str(), revision = hash, "told to pre-pull"),
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes the status fields that changed (to the DaemonSet of `uid` only).
    async fn write_status(
        &self,
        at: ObjectRef<'_>,
        uid: &str,
        ds: &Value,
        status: &Value,
    ) -> Result<(), ApiError> {
        let old_status = ds.get("status").cloned().unwrap_or(json!({}));
        let changed = status
            .as_object()
            .into_iter()
            .flatten()
            .any(|(k, v)| old_status.get(k) != Some(v));
        if !changed {
            return Ok(());
        }
        let written = self
            .api
            .update_with(&self.user, at, Part::Status, WriteOpts::INTERNAL, |old| {
                let mut new = old.clone();
                new["metadata"]["uid"] = json!(uid);
                if !new.get("status").is_some_and(Value::is_object) {
                    new["status"] = json!({});
                }
                for (k, v) in status.as_object().into_iter().flatten() {
                    new["status"][k] = v.clone();
                }
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                Ok(new)
            })
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The Node's Ready condition is not False or Unknown.
/// A stored node, decoded, with its resourceVersion; None (and a warning) when it does not
/// decode.
fn decode_node(obj: &Value) -> Option<(u64, Arc<Node>)> {
    match serde_json::from_value::<Node>(obj.clone()) {
        Ok(node) => Some((object_rv(obj), Arc::new(node))),
        Err(e) => {
            let name = s(obj, "/metadata/name");
            tracing::warn!(node = name, error = %e, "stored node does not decode");
            None
        }
    }
}

fn node_ready(n: &Node) -> bool {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    ready.is_none_or(|c| c.status == "True")
}

/// An annotation of an object.
fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// A selector without requirements (it would select every pod).
pub(super) fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// The controller's syncs against the real verbs and store (no loop: each sync is called).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::controllers::counting::Counting;
    use crate::server::store::Watch;
    use crate::server::verbs::PatchType;

    struct Rig {
        api: Arc<Api>,
        store: Arc<Counting>,
        c: Controller,
        user: User,
        _dir: tempfile::TempDir,
    }

    impl Rig {
        async fn new(nodes: &[(&str, &str)]) -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let (store, api, user) = Counting::with_api(&dir).await;
            let rig = Rig {
                c: Controller::new(api.clone()),
                api,
                store,
                user,
                _dir: dir,
            };
            for (name, role) in nodes {
                rig.node(name, role).await;
            }
            rig
        }

        async fn node(&self, name: &str, role: &str) {
            let n = json!({"metadata": {"name": name, "labels": {"role": role}}});
            self.api
                .create(&self.user, &NODES, None, n, WriteOpts::INTERNAL)
                .await
                .unwrap();
        }

        async fn apply_ds(&self, image: &str) {
            let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "mon", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "mon"}},
                    "template": {"metadata": {"labels": {"app": "mon"}},
                        "spec": {"nodeSelector": {"role": "worker"},
                            "containers": [{"name": "c", "image": image}]}}}});
            let at = ObjectRef::new(&DAEMONSETS, Some("default"), "mon");
            match self.api.get(&self.user, at).await {
                Ok(_) => {
                    let doc = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
                    self.api
                        .patch(
                            &self.user,
                            at,
                            Part::Main,
                            PatchType::Strategic,
                            &doc,
                            WriteOpts::INTERNAL,
                        )
                        .await
                        .unwrap();
                }
                Err(_) => {
                    self.api
                        .create(
                            &self.user,
                            &DAEMONSETS,
                            Some("default"),
                            ds,
                            WriteOpts::INTERNAL,
                        )
                        .await
                        .unwrap();
                }
            }
        }

        async fn sync(&mut self) {
            self.c.sync("default", "mon").await.unwrap();
        }

        /// Gives the controller the events `watch` has, as its loop does.
        async fn deliver(&mut self, watch: &mut Watch) {
            while let Ok(ev) = watch.rx.try_recv() {
                self.c.on_event(&ev).await;
            }
        }

        async fn pods(&self) -> Vec<Arc<Value>> {
            let (pods, _) = self
                .api
                .list(&self.user, &PODS, Some("default"), &Filter::default())
                .await
                .unwrap();
            pods
        }

        /// (node, hash, terminating) of each pod the DaemonSet controls, sorted.
        async fn placed(&self) -> Vec<(String, String, bool)> {
            let mut v: Vec<(String, String, bool)> = self
                .pods()
                .await
                .iter()
                .filter(|p| controller_of(p).is_some_and(|c| c.name == "mon"))
                .map(|p| {
                    (
                        s(p, "/spec/nodeName").to_string(),
                        s(p, "/metadata/labels/controller-revision-hash").to_string(),
                        p.pointer("/metadata/deletionTimestamp").is_some(),
                    )
                })
                .collect();
            v.sort();
            v
        }

        async fn pod_on(&self, node: &str) -> Arc<Value> {
            self.pods()
                .await
                .into_iter()
                .find(|p| {
                    s(p, "/spec/nodeName") == node
                        && p.pointer("/metadata/deletionTimestamp").is_none()
                })
                .unwrap_or_else(|| panic!("no pod on {node}"))
        }

        /// What an agent reports: the pod ready for a minute.
        async fn ready(&self, name: &str) {
            let at = (Utc::now() - chrono::Duration::seconds(60)).to_rfc3339();
            let doc = json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": at}]}});
            self.pod_status(name, PatchType::Merge, doc).await;
        }

        /// A patch of a pod's status, as its agent writes it.
        async fn pod_status(&self, name: &str, how: PatchType, doc: Value) {
            self.api
                .patch(
                    &self.user,
                    ObjectRef::new(&PODS, Some("default"), name),
                    Part::Status,
                    how,
                    &doc,
                    WriteOpts::INTERNAL,
                )
                .await
                .unwrap();
        }

        async fn all_ready(&self) {
            for p in self.pods().await {
                self.ready(s(&p, "/metadata/name")).await;
            }
        }

        /// What an agent does once it stopped a terminating pod: the final delete.
        async fn finish_terminating(&self) {
            for p in self.pods().await {
                if p.pointer("/metadata/deletionTimestamp").is_some() {
                    let at = ObjectRef::new(&PODS, Some("default"), s(&p, "/metadata/name"));
                    let uid = s(&p, "/metadata/uid");
                    self.api
                        .delete(&self.user, at, &DeleteOptions::now_if_uid(uid))
                        .await
                        .unwrap();
                }
            }
        }

        /// The DaemonSet's current revision.
        async fn current_hash(&self) -> String {
            let at = ObjectRef::new(&DAEMONSETS, Some("default"), "mon");
            let ds: DaemonSet =
                serde_json::from_value((*self.api.get(&self.user, at).await.unwrap()).clone())
                    .unwrap();
            let collision = ds.status.as_ref().and_then(|s| s.collision_count);
            template_hash(&ds.spec.unwrap().template, collision)
        }

        /// What the agents' pre-pull reports on every pod of another revision than `hash`: the
        /// images of `hash` pulled, or the pull's `error`.
        async fn report_pull(&self, hash: &str, error: Option<&str>) {
            let next = rollout::NextRevision {
                hash: hash.into(),
                pulled: error.is_none(),
                error: error.unwrap_or_default().into(),
            };
            let (status, reason, message) = next.condition();
            for p in self.pods().await {
                if s(&p, "/metadata/labels/controller-revision-hash") == hash {
                    continue;
                }
                let doc = json!({"status": {"conditions": [{"type": rollout::NEXT_REVISION_READY,
                    "status": status, "reason": reason, "message": message}]}});
                self.pod_status(s(&p, "/metadata/name"), PatchType::Strategic, doc)
                    .await;
            }
        }

        /// What an agent reports of a pod whose image cannot be pulled.
        async fn image_pull_back_off(&self, name: &str) {
            let doc = json!({"status": {"phase": "Pending", "containerStatuses": [{"name": "c",
                "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "manifest unknown"}}}]}});
            self.pod_status(name, PatchType::Merge, doc).await;
        }

        /// A merge patch of an object.
        async fn merge(&self, at: ObjectRef<'_>, doc: Value) {
            self.api
                .patch(
                    &self.user,
                    at,
                    Part::Main,
                    PatchType::Merge,
                    &doc,
                    WriteOpts::INTERNAL,
                )
                .await
                .unwrap();
        }

        /// A merge patch of the DaemonSet.
        async fn patch_ds(&self, doc: Value) {
            self.merge(ObjectRef::new(&DAEMONSETS, Some("default"), "mon"), doc)
                .await;
        }

        async fn annotate(&self, key: &str, value: &str) {
            self.patch_ds(json!({"metadata": {"annotations": {key: value}}}))
                .await;
        }

        async fn set_strategy(&self, strategy: Value) {
            self.patch_ds(json!({"spec": {"updateStrategy": strategy}}))
                .await;
        }

        async fn image(&self) -> Value {
            let at = ObjectRef::new(&DAEMONSETS, Some("default"), "mon");
            self.api.get(&self.user, at).await.unwrap()["spec"]["template"]["spec"]["containers"][0]
                ["image"]
                .clone()
        }

        async fn status(&self) -> Value {
            let at = ObjectRef::new(&DAEMONSETS, Some("default"), "mon");
            self.api.get(&self.user, at).await.unwrap()["status"].clone()
        }
    }

    fn t(node: &str, hash: &str, terminating: bool) -> (String, String, bool) {
        (node.to_string(), hash.to_string(), terminating)
    }

    #[tokio::test]
    async fn pods_are_created_claimed_and_released_where_they_belong() {
        let mut rig = Rig::new(&[("n1", "worker"), ("n2", "worker"), ("e1", "edge")]).await;
        // an orphan bound to a worker node that has no pod yet: adopted, not duplicated
        rig.node("n3", "worker").await;
        let orphan = json!({"metadata": {"name": "stray", "labels": {"app": "mon"}},
            "spec": {"nodeName": "n3", "containers": [{"name": "c", "image": "i:0"}]}});
        let orphan = rig
            .api
            .create(
                &rig.user,
                &PODS,
                Some("default"),
                orphan,
                WriteOpts::INTERNAL,
            )
            .await
            .unwrap()
            .object;
        rig.apply_ds("i:1").await;
        rig.sync().await;
        let placed = rig.placed().await;
        let hash = placed.iter().find(|p| p.0 == "n1").unwrap().1.clone();
        assert_eq!(
            placed,
            [
                t("n1", &hash, false),
                t("n2", &hash, false),
                t("n3", "", false)
            ]
        );
        let adopted = rig.pod_on("n3").await;
        assert_eq!(
            s(&adopted, "/metadata/uid"),
            s(&orphan, "/metadata/uid"),
            "the same pod"
        );
        let p = rig.pod_on("n1").await;
        assert!(s(&p, "/metadata/name").starts_with("mon-"));
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            true
        );
        assert!(p["spec"]["tolerations"]
            .as_array()
            .is_some_and(|t| !t.is_empty()));
        // synced again: nothing more
        rig.sync().await;
        assert_eq!(rig.placed().await.len(), 3);
        let st = rig.status().await;
        assert_eq!(
            (
                st["desiredNumberScheduled"].as_i64(),
                st["currentNumberScheduled"].as_i64()
            ),
            (Some(3), Some(3))
        );
        assert_eq!(
            st["updatedNumberScheduled"], 2,
            "the adopted pod runs another revision"
        );

        // a pod relabelled out of the selector is released, and its node gets a pod of its own
        let n2 = rig.pod_on("n2").await;
        let name = s(&n2, "/metadata/name").to_string();
        let doc = json!({"metadata": {"labels": {"app": "other"}}});
        rig.merge(ObjectRef::new(&PODS, Some("default"), &name), doc)
            .await;
        rig.sync().await;
        let released = rig
            .api
            .get(&rig.user, ObjectRef::new(&PODS, Some("default"), &name))
            .await
            .unwrap();
        assert!(controller_of(&released).is_none(), "{released}");
        assert_eq!(rig.placed().await.iter().filter(|p| p.0 == "n2").count(), 1);

        // a node that stops being a worker loses its pod (gracefully: its agent stops it)
        let doc = json!({"metadata": {"labels": {"role": "edge"}}});
        rig.merge(ObjectRef::new(&NODES, None, "n1"), doc).await;
        rig.sync().await;
        assert!(rig.placed().await.contains(&t("n1", &hash, true)));
        rig.finish_terminating().await;
        rig.sync().await;
        assert!(!rig.placed().await.iter().any(|p| p.0 == "n1"));
    }

    /// The rolling update on the server: one node at a time (maxUnavailable 1), a terminating
    /// pod holding its node until its agent deleted it, the next node only once the new pod is
    /// ready.
    #[tokio::test]
    async fn updates_roll_one_node_at_a_time() {
        let mut rig = Rig::new(&[("n1", "worker"), ("n2", "worker"), ("n3", "worker")]).await;
        rig.apply_ds("i:1").await;
        rig.sync().await;
        rig.all_ready().await;
        rig.sync().await;
        let old = rig.placed().await[0].1.clone();
        assert_eq!(rig.status().await["numberAvailable"], 3);

        rig.apply_ds("i:2").await;
        rig.sync().await;
        assert!(
            !rig.placed().await.iter().any(|p| p.2),
            "no node pulled the new revision yet: nothing goes"
        );
        assert_eq!(
            rig.status().await["conditions"][0]["reason"],
            "PullingNewRevision"
        );
        let new_hash = rig.current_hash().await;
        // the next wave (one node, the first in name order) is told to pre-pull; the others wait
        let told = |pods: Vec<Arc<Value>>| {
            let mut t: Vec<(String, String)> = pods
                .iter()
                .map(|p| {
                    let v = p["metadata"]["annotations"][rollout::PULL_NEXT].as_str();
                    (
                        s(p, "/spec/nodeName").to_string(),
                        v.unwrap_or("-").to_string(),
                    )
                })
                .collect();
            t.sort();
            t
        };
        let h = new_hash.clone();
        let want = |n1: &str, n2: &str, n3: &str| {
            [("n1", n1), ("n2", n2), ("n3", n3)]
                .map(|(n, v)| (n.to_string(), v.replace("new", &h)))
                .to_vec()
        };
        assert_eq!(told(rig.pods().await), want("new", "", ""));
        let mut replaced = Vec::new();
        for _ in 0..3 {
            rig.report_pull(&new_hash, None).await;
            rig.sync().await;
            let placed = rig.placed().await;
            let going: Vec<&(String, String, bool)> = placed.iter().filter(|p| p.2).collect();
            assert_eq!(going.len(), 1, "one at a time: {placed:?}");
            assert_eq!(going[0].1, old);
            // nothing more while it terminates: it still occupies its node
            rig.sync().await;
            assert_eq!(rig.placed().await, placed);
            let node = going[0].0.clone();
            if node == "n1" {
                // n1 goes: n2 is told in the same sync, n3 still waits
                assert_eq!(told(rig.pods().await), want("new", "new", ""));
            }
            rig.finish_terminating().await;
            rig.sync().await;
            let new = rig.pod_on(&node).await;
            assert_ne!(s(&new, "/metadata/labels/controller-revision-hash"), old);
            // the new pod is not ready yet: the budget is spent
            rig.sync().await;
            assert!(!rig.placed().await.iter().any(|p| p.2));
            rig.ready(s(&new, "/metadata/name")).await;
            replaced.push(node);
        }
        replaced.sort();
        assert_eq!(replaced, ["n1", "n2", "n3"]);
        rig.sync().await;
        let st = rig.status().await;
        assert_eq!(
            (
                st["updatedNumberScheduled"].as_i64(),
                st["numberAvailable"].as_i64()
            ),
            (Some(3), Some(3))
        );
    }

    /// The canary annotation: a partition of 2 on 3 nodes updates one node and stops; removed,
    /// the rollout goes on.
    #[tokio::test]
    async fn a_partition_holds_the_rollout_at_a_canary() {
        let mut rig = Rig::new(&[("n1", "worker"), ("n2", "worker"), ("n3", "worker")]).await;
        rig.apply_ds("i:1").await;
        rig.sync().await;
        rig.all_ready().await;
        rig.apply_ds("i:2").await;
        let hash = rig.current_hash().await;
        // (partition, syncs, nodes updated then): one canary node, then all of them
        for (partition, rounds, want) in [("2", 3, 1), ("0", 6, 3)] {
            rig.annotate(rollout::PARTITION, partition).await;
            for _ in 0..rounds {
                rig.report_pull(&hash, None).await;
                rig.sync().await;
                rig.finish_terminating().await;
                rig.sync().await;
                rig.all_ready().await;
            }
            let placed = rig.placed().await;
            let updated = placed.iter().filter(|p| p.1 == hash && !p.2).count();
            assert_eq!(updated, want, "partition {partition}: {placed:?}");
        }
    }

    /// Deleting the DaemonSet deletes what it controlled (the garbage collector's work): its
    /// pods are marked for their agents, its revisions go.
    #[tokio::test]
    async fn a_deleted_daemonset_takes_its_pods_and_revisions() {
        let mut rig = Rig::new(&[("n1", "worker")]).await;
        rig.apply_ds("i:1").await;
        rig.sync().await;
        let at = ObjectRef::new(&DAEMONSETS, Some("default"), "mon");
        rig.api
            .delete(&rig.user, at, &DeleteOptions::default())
            .await
            .unwrap();
        let clock = crate::agent::clock::Clock::system();
        let mut gc = crate::server::controllers::gc::Collector::new(rig.api.clone(), clock);
        gc.pass().await.unwrap();
        assert_eq!(rig.placed().await.iter().filter(|p| p.2).count(), 1);
        let (crs, _) = rig
            .api
            .list(
                &rig.user,
                &CONTROLLER_REVISIONS,
                Some("default"),
                &Filter::default(),
            )
            .await
            .unwrap();
        assert!(crs.is_empty());
    }
    /// maxSurge on the server: the new pod starts beside the old one, which goes once the new
    /// one is ready; never more than maxSurge nodes run two.
    #[tokio::test]
    async fn surge_starts_the_new_pod_beside_the_old_one() {
        let mut rig = Rig::new(&[("n1", "worker"), ("n2", "worker"), ("n3", "worker")]).await;
        rig.apply_ds("i:1").await;
        rig.set_strategy(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}))
            .await;
        rig.sync().await;
        rig.all_ready().await;
        rig.sync().await;
        let old = rig.placed().await[0].1.clone();
        rig.apply_ds("i:2").await;
        for _ in 0..3 {
            rig.sync().await;
            let placed = rig.placed().await;
            assert_eq!(placed.len(), 4, "one extra pod: {placed:?}");
            assert!(
                !placed.iter().any(|p| p.2),
                "nothing goes before: {placed:?}"
            );
            rig.sync().await;
            assert_eq!(rig.placed().await.len(), 4, "maxSurge 1");
            rig.all_ready().await;
            rig.sync().await;
            let placed = rig.placed().await;
            let going: Vec<_> = placed.iter().filter(|p| p.2).collect();
            assert_eq!(going.len(), 1, "{placed:?}");
            assert_eq!(going[0].1, old);
            rig.finish_terminating().await;
        }
        rig.sync().await;
        let placed = rig.placed().await;
        assert_eq!(placed.len(), 3);
        assert!(placed.iter().all(|p| p.1 != old), "{placed:?}");
    }

    /// OnDelete: a template change replaces nothing; a deleted pod comes back new.
    #[tokio::test]
    async fn on_delete_waits_for_a_deleted_pod() {
        let mut rig = Rig::new(&[("n1", "worker"), ("n2", "worker")]).await;
        rig.apply_ds("i:1").await;
        rig.set_strategy(json!({"type": "OnDelete", "rollingUpdate": null}))
            .await;
        rig.sync().await;
        rig.all_ready().await;
        let old = rig.placed().await[0].1.clone();
        rig.apply_ds("i:2").await;
        let new = rig.current_hash().await;
        rig.report_pull(&new, None).await;
        rig.sync().await;
        rig.sync().await;
        assert_eq!(
            rig.placed().await,
            [t("n1", &old, false), t("n2", &old, false)]
        );
        let p = rig.pod_on("n2").await;
        let at = ObjectRef::new(&PODS, Some("default"), s(&p, "/metadata/name"));
        rig.api
            .delete(&rig.user, at, &DeleteOptions::default())
            .await
            .unwrap();
        rig.finish_terminating().await;
        rig.sync().await;
        assert_eq!(
            rig.placed().await,
            [t("n1", &old, false), t("n2", &new, false)]
        );
    }

    /// A new revision whose image cannot be pulled: no node loses its pod, the status says why,
    /// and with the opt-in annotation the controller puts the previous template back.
    #[tokio::test]
    async fn a_failed_pull_stops_the_rollout_and_rolls_back_when_asked() {
        let mut rig = Rig::new(&[("n1", "worker"), ("n2", "worker"), ("n3", "worker")]).await;
        rig.apply_ds("i:1").await;
        rig.sync().await;
        rig.all_ready().await;
        rig.apply_ds("i:bad").await;
        rig.sync().await;
        let bad = rig.current_hash().await;
        rig.report_pull(&bad, Some("pull i:bad: manifest unknown"))
            .await;
        rig.sync().await;
        rig.sync().await;
        assert!(!rig.placed().await.iter().any(|p| p.2), "nothing stopped");
        let cond = rig.status().await["conditions"][0].clone();
        assert_eq!(
            (cond["type"].as_str(), cond["status"].as_str()),
            (Some("Progressing"), Some("False"))
        );
        assert_eq!(
            cond["message"],
            "ErrImagePull on node n1: pull i:bad: manifest unknown"
        );
        assert_eq!(rig.image().await, "i:bad", "no rollback unless asked");

        rig.annotate(rollout::ROLLBACK_ON_FAILURE, "true").await;
        rig.sync().await;
        assert_eq!(rig.image().await, "i:1", "rolled back");
        rig.sync().await;
        let st = rig.status().await;
        assert_eq!(st["conditions"][0]["status"], "True");
        assert_eq!(st["updatedNumberScheduled"], 3);
    }

    /// With surge the new pod itself fails to pull while the old one runs; the condition names
    /// the node and the kubelet's reason.
    #[tokio::test]
    async fn a_surge_pod_that_cannot_pull_leaves_the_old_one_running() {
        let mut rig = Rig::new(&[("n1", "worker"), ("n2", "worker")]).await;
        rig.apply_ds("i:1").await;
        rig.set_strategy(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}))
            .await;
        rig.sync().await;
        rig.all_ready().await;
        rig.apply_ds("i:bad").await;
        rig.sync().await;
        let bad = rig.current_hash().await;
        let new = rig
            .pods()
            .await
            .into_iter()
            .find(|p| s(p, "/metadata/labels/controller-revision-hash") == bad)
            .unwrap();
        rig.image_pull_back_off(s(&new, "/metadata/name")).await;
        rig.sync().await;
        assert_eq!(rig.placed().await.len(), 3, "the old pods stay");
        let cond = rig.status().await["conditions"][0].clone();
        assert_eq!(
            cond["message"],
            format!(
                "ImagePullBackOff on node {}: manifest unknown",
                s(&new, "/spec/nodeName")
            )
        );
    }

    /// While the loop's watch keeps the nodes, a sync reads none of them (it decoded every node
    /// on each sync), and a node the watch brings gets its pod.
    #[tokio::test]
    async fn a_sync_reads_no_node_while_the_watch_keeps_them() {
        let mut rig = Rig::new(&[("n1", "worker"), ("n2", "worker"), ("e1", "edge")]).await;
        let mut watch = rig.api.watch_all(&rig.user, &[&NODES]).await.unwrap();
        rig.c.follow_nodes().await;
        assert_eq!(rig.store.reads(&NODES.key()).whole, 3, "one list");
        rig.apply_ds("i:1").await;
        rig.store.reset();
        rig.sync().await;
        assert_eq!(rig.store.reads(&NODES.key()).whole, 0);
        assert_eq!(rig.placed().await.len(), 2);

        rig.node("n3", "worker").await;
        let doc = json!({"metadata": {"labels": {"role": "edge"}}});
        rig.merge(ObjectRef::new(&NODES, None, "n1"), doc).await;
        rig.deliver(&mut watch).await;
        rig.store.reset();
        rig.sync().await;
        assert_eq!(rig.store.reads(&NODES.key()).whole, 0);
        let nodes: Vec<String> = rig.placed().await.into_iter().map(|p| p.0).collect();
        assert!(nodes.contains(&"n3".to_string()), "{nodes:?}");
        let (_, _, leaving) = rig
            .placed()
            .await
            .into_iter()
            .find(|p| p.0 == "n1")
            .unwrap();
        assert!(leaving, "n1 is no worker any more");

        // a sync called alone (no loop) lists them
        let mut alone = Controller::new(rig.api.clone());
        rig.store.reset();
        alone.sync("default", "mon").await.unwrap();
        assert_eq!(rig.store.reads(&NODES.key()).whole, 4);
    }

    /// The Ready sightings of pods gone without their deletion seen (a lagging watch) are
    /// forgotten by their DaemonSet's sync, not by a list of every pod.
    #[tokio::test]
    async fn a_sync_forgets_the_sightings_of_its_pods_gone() {
        let mut rig = Rig::new(&[("n1", "worker"), ("n2", "worker")]).await;
        rig.apply_ds("i:1").await;
        rig.sync().await;
        let mut watch = rig.api.watch_all(&rig.user, &[&PODS]).await.unwrap();
        let pods = rig.pods().await;
        for p in &pods {
            rig.ready(s(p, "/metadata/name")).await;
        }
        rig.deliver(&mut watch).await;
        let uids: Vec<String> = pods
            .iter()
            .map(|p| s(p, "/metadata/uid").to_string())
            .collect();
        for uid in &uids {
            let since = rig.c.ready_seen.since(uid, Some(0));
            assert!(since.is_some_and(|t| t > 0), "a sighting of {uid}");
        }
        let gone = ObjectRef::new(&PODS, Some("default"), s(&pods[0], "/metadata/name"));
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        rig.api.delete(&rig.user, gone, &opts).await.unwrap();
        rig.store.reset();
        rig.sync().await;
        assert_eq!(rig.c.ready_seen.since(&uids[0], Some(0)), Some(0));
        assert!(rig
            .c
            .ready_seen
            .since(&uids[1], Some(0))
            .is_some_and(|t| t > 0));
        assert_eq!(rig.store.reads(&PODS.key()).metadata, 0);
        assert!(rig.store.reads(&PODS.key()).whole <= 3, "its own pods");
    }
}
