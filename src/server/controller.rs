//! The DaemonSet status controller inside the server: recomputes each DaemonSet's status from
//! the nodes and its pods, keeps its ControllerRevisions, and collects orphaned daemon pods.
//!
//! Pods are created and deleted by the agents on the nodes; this loop only observes them (and
//! deletes pods whose owning DaemonSet is gone after `ORPHAN_GRACE`, in case no agent does).
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::auth::User;
use super::kinds::{CONTROLLER_REVISIONS, DAEMONSETS, NODES, PODS};
use super::query::{Filter, WriteOpts};
use super::resources::Resource;
use super::status::ApiError;
use super::store::{object_rv, EventType};
use super::verbs::{Api, ObjectRef, Part, Preconditions};
use crate::core::eligibility::node_should_run;
use crate::core::hash::template_hash;

/// Every DaemonSet is recomputed at least this often (minReadySeconds, missed events).
const RESYNC: Duration = Duration::from_secs(30);
/// A pod whose owning DaemonSet no longer exists is deleted after this long.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("daemonset {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: ApiError,
    },
}

type Key = (String, String);

pub struct Controller {
    api: Arc<Api>,
    /// Who the controller is to the verbs.
    user: User,
    nodes: HashMap<String, (u64, Arc<Node>)>,
    orphans: HashMap<Key, Instant>,
    requeue: HashMap<Key, Instant>,
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The controller owner reference (uid, name) of a pod or revision owned by a DaemonSet.
fn ds_owner(obj: &Value) -> Option<(String, String)> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| {
            o.get("controller").and_then(Value::as_bool) == Some(true)
                && s(o, "/kind") == "DaemonSet"
        })
        .map(|o| (s(o, "/uid").to_string(), s(o, "/name").to_string()))
}

fn ready_since(pod: &Value) -> Option<Option<DateTime<Utc>>> {
    let c = pod
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| s(c, "/type") == "Ready")?;
    if s(c, "/status") != "True" {
        return None;
    }
    Some(
        DateTime::parse_from_rfc3339(s(c, "/lastTransitionTime"))
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    )
}

/// The status fields this controller owns, computed from the nodes and the DaemonSet's pods.
/// Returns the status and, when a ready pod becomes available later, how long until then.
pub fn compute_status(
    ds: &DaemonSet,
    generation: i64,
    nodes: &[Arc<Node>],
    pods: &[&Value],
    hash: &str,
    now: DateTime<Utc>,
) -> (Value, Option<Duration>) {
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
        .max(0) as i64;
    let mut by_node: HashMap<&str, Vec<&Value>> = HashMap::new();
    for p in pods {
        let node = s(p, "/spec/nodeName");
        if !node.is_empty() {
            by_node.entry(node).or_default().push(p);
        }
    }
    let (mut desired, mut current, mut misscheduled, mut ready, mut updated, mut available) =
        (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    let mut wake: Option<Duration> = None;
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let verdict = node_should_run(node, ds);
        let on_node = by_node.get_mut(name);
        if verdict.should_run {
            desired += 1;
            let Some(list) = on_node else { continue };
            current += 1;
            list.sort_by(|a, b| {
                s(a, "/metadata/creationTimestamp").cmp(s(b, "/metadata/creationTimestamp"))
            });
            let pod = list[0];
            if let Some(since) = ready_since(pod) {
                ready += 1;
                if min_ready == 0 {
                    available += 1;
                } else if let Some(since) = since {
                    let at = since + chrono::Duration::seconds(min_ready);
                    if at < now {
                        available += 1;
                    } else {
                        let left = (at - now).to_std().unwrap_or_default() + Duration::from_secs(1);
                        wake = Some(wake.map_or(left, |w| w.min(left)));
                    }
                }
            }
            if s(pod, "/metadata/labels/controller-revision-hash") == hash {
                updated += 1;
            }
        } else if on_node.is_some() {
            misscheduled += 1;
        }
    }
    let status = json!({
        "currentNumberScheduled": current,
        "desiredNumberScheduled": desired,
        "numberAvailable": available,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberUnavailable": (desired - available).max(0),
        "observedGeneration": generation,
        "updatedNumberScheduled": updated,
    });
    (status, wake)
}

impl Controller {
    pub fn new(api: Arc<Api>) -> Controller {
        Controller {
            api,
            user: User::internal("daemonset-controller"),
            nodes: HashMap::new(),
            orphans: HashMap::new(),
            requeue: HashMap::new(),
        }
    }

    /// Runs until the task is aborted.
    pub async fn run(mut self) {
        loop {
            let mut watch = match self
                .api
                .watch_all(&self.user, &[&DAEMONSETS, &NODES, &PODS])
                .await
            {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "controller cannot watch the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.resync_all().await;
            let mut resync = tokio::time::interval_at(Instant::now() + RESYNC, RESYNC);
            loop {
                let wake = self.requeue.values().min().copied();
                let mut dirty: BTreeSet<Key> = BTreeSet::new();
                let mut all = false;
                tokio::select! {
                    ev = watch.rx.recv() => {
                        let mut next = Some(ev);
                        while let Some(ev) = next.take() {
                            match ev {
                                Ok(ev) => self.on_event(&ev, &mut dirty, &mut all).await,
                                Err(RecvError::Lagged(_)) => all = true,
                                Err(RecvError::Closed) => return,
                            }
                            next = match watch.rx.try_recv() {
                                Ok(ev) => Some(Ok(ev)),
                                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                                Err(_) => None,
                            };
                        }
                    }
                    _ = resync.tick() => all = true,
                    _ = async {
                        match wake {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending::<()>().await,
                        }
                    } => {
                        let now = Instant::now();
                        let due: Vec<Key> = self.requeue.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
                        for k in due {
                            self.requeue.remove(&k);
                            dirty.insert(k);
                        }
                    }
                }
                if all {
                    self.resync_all().await;
                } else {
                    for (ns, name) in dirty {
                        self.sync_logged(&ns, &name).await;
                    }
                }
            }
        }
    }

    async fn on_event(
        &mut self,
        ev: &super::store::WatchEvent,
        dirty: &mut BTreeSet<Key>,
        all: &mut bool,
    ) {
        if ev.resource == DAEMONSETS.key() {
            if ev.event_type == EventType::Deleted {
                let uid = s(&ev.object, "/metadata/uid").to_string();
                self.delete_revisions(&ev.namespace, &uid).await;
            } else {
                dirty.insert((ev.namespace.clone(), ev.name.clone()));
            }
        } else if ev.resource == NODES.key() {
            // Heartbeats (status-only writes) do not change where daemon pods belong.
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
                *all = true;
            }
        } else if ev.resource == PODS.key() {
            for obj in std::iter::once(&ev.object).chain(ev.prev.iter()) {
                if let Some((_, owner)) = ds_owner(obj) {
                    dirty.insert((ev.namespace.clone(), owner));
                }
            }
        }
    }

    /// Every object of `r` (in `ns`), through the verbs.
    async fn list(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
    ) -> Result<(Vec<Arc<Value>>, u64), ApiError> {
        self.api.list(&self.user, r, ns, &Filter::default()).await
    }

    /// Deletes one namespaced object, through the verbs.
    async fn delete(&self, r: &'static Resource, ns: &str, name: &str) -> Result<(), ApiError> {
        let at = ObjectRef::new(r, Some(ns), name);
        let pre = Preconditions::default();
        self.api.delete(&self.user, at, &pre, false).await.map(drop)
    }

    async fn refresh_nodes(&mut self) -> Vec<Arc<Node>> {
        let Ok((items, _)) = self.list(&NODES, None).await else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let name = s(&item, "/metadata/name").to_string();
            let rv = object_rv(&item);
            let node = match self.nodes.get(&name) {
                Some((cached_rv, node)) if *cached_rv == rv => node.clone(),
                _ => match serde_json::from_value::<Node>((*item).clone()) {
                    Ok(node) => {
                        let node = Arc::new(node);
                        self.nodes.insert(name.clone(), (rv, node.clone()));
                        node
                    }
                    Err(e) => {
                        tracing::warn!(node = name.as_str(), error = %e, "stored node does not decode");
                        continue;
                    }
                },
            };
            seen.insert(name);
            out.push(node);
        }
        self.nodes.retain(|k, _| seen.contains(k));
        out
    }

    async fn resync_all(&mut self) {
        let Ok((all_ds, _)) = self.list(&DAEMONSETS, None).await else {
            return;
        };
        let uids: HashSet<String> = all_ds
            .iter()
            .map(|d| s(d, "/metadata/uid").to_string())
            .collect();
        for d in &all_ds {
            let (ns, name) = (s(d, "/metadata/namespace"), s(d, "/metadata/name"));
            self.sync_logged(ns, name).await;
        }
        self.collect_orphans(&uids, Instant::now()).await;
    }

    /// Deletes pods whose controlling DaemonSet uid is not in `ds_uids` once they have been seen
    /// orphaned for `ORPHAN_GRACE` (time passed in, for tests).
    async fn collect_orphans(&mut self, ds_uids: &HashSet<String>, now: Instant) {
        let Ok((pods, _)) = self.list(&PODS, None).await else {
            return;
        };
        let mut still = HashSet::new();
        for p in pods {
            let Some((uid, _)) = ds_owner(&p) else {
                continue;
            };
            if ds_uids.contains(&uid) {
                continue;
            }
            let key = (
                s(&p, "/metadata/namespace").to_string(),
                s(&p, "/metadata/name").to_string(),
            );
            let first = *self.orphans.entry(key.clone()).or_insert(now);
            if now.duration_since(first) >= ORPHAN_GRACE {
                tracing::info!(
                    pod = key.1.as_str(),
                    namespace = key.0.as_str(),
                    "deleting pod whose daemonset is gone"
                );
                let _ = self.delete(&PODS, &key.0, &key.1).await;
                self.orphans.remove(&key);
            } else {
                still.insert(key);
            }
        }
        self.orphans.retain(|k, _| still.contains(k));
    }

    async fn delete_revisions(&self, ns: &str, uid: &str) {
        let Ok((crs, _)) = self.list(&CONTROLLER_REVISIONS, Some(ns)).await else {
            return;
        };
        for cr in crs {
            if ds_owner(&cr).is_some_and(|(u, _)| u == uid) {
                let name = s(&cr, "/metadata/name");
                if let Err(e) = self.delete(&CONTROLLER_REVISIONS, ns, name).await {
                    if e.code != 404 {
                        tracing::warn!(revision = name, error = %e, "cannot delete controller revision");
                    }
                }
            }
        }
    }

    /// One sync in its span: the events inside carry the DaemonSet.
    async fn sync_logged(&mut self, ns: &str, name: &str) {
        let span = tracing::info_span!("sync", daemonset = name, namespace = ns);
        async {
            if let Err(e) = self.sync(ns, name).await {
                tracing::warn!(error = %e, "daemonset status sync failed");
            }
        }
        .instrument(span)
        .await
    }

    /// Recomputes one DaemonSet: revisions, then status.
    pub async fn sync(&mut self, ns: &str, name: &str) -> Result<(), ControllerError> {
        let err = |source| ControllerError::Api {
            namespace: ns.to_string(),
            name: name.to_string(),
            source,
        };
        let at = ObjectRef::new(&DAEMONSETS, Some(ns), name);
        let ds_val = match self.api.get(&self.user, at).await {
            Ok(ds) => ds,
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        let ds: DaemonSet = match serde_json::from_value((*ds_val).clone()) {
            Ok(ds) => ds,
            Err(e) => {
                return Err(err(ApiError::internal(format!(
                    "stored daemonset does not decode: {e}"
                ))))
            }
        };
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(());
        };
        let collision = ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collision);
        let uid = s(&ds_val, "/metadata/uid").to_string();
        let (pods, _) = self.list(&PODS, Some(ns)).await.map_err(err)?;
        let owned: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| ds_owner(p).is_some_and(|(u, _)| u == uid))
            .collect();
        self.ensure_revision(&ds_val, &hash, &owned)
            .await
            .map_err(err)?;
        let nodes = self.refresh_nodes().await;
        let generation = ds_val
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let (status, wake) = compute_status(&ds, generation, &nodes, &owned, &hash, Utc::now());
        let key = (ns.to_string(), name.to_string());
        match wake {
            Some(d) => {
                self.requeue.insert(key, Instant::now() + d);
            }
            None => {
                self.requeue.remove(&key);
            }
        }
        let old_status = ds_val.get("status").cloned().unwrap_or(json!({}));
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
                if s(old, "/metadata/uid") != uid {
                    return Err(ApiError::conflict("apps", "daemonsets", name));
                }
                let mut new = old.clone();
                if !new.get("status").is_some_and(Value::is_object) {
                    new["status"] = json!({});
                }
                if let Some(o) = status.as_object() {
                    for (k, v) in o {
                        new["status"][k] = v.clone();
                    }
                }
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                Ok(new)
            })
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn ensure_revision(
        &self,
        ds: &Value,
        hash: &str,
        pods: &[&Value],
    ) -> Result<(), ApiError> {
        let ns = s(ds, "/metadata/namespace");
        let name = s(ds, "/metadata/name");
        let uid = s(ds, "/metadata/uid");
        let (crs, _) = self.list(&CONTROLLER_REVISIONS, Some(ns)).await?;
        let mut owned: Vec<&Value> = crs
            .iter()
            .map(|c| &**c)
            .filter(|c| ds_owner(c).is_some_and(|(u, _)| u == uid))
            .collect();
        let rev = |c: &Value| c.get("revision").and_then(Value::as_i64).unwrap_or(0);
        let max = owned.iter().map(|c| rev(c)).max().unwrap_or(0);
        let cr_name = format!("{name}-{hash}");
        match owned.iter().find(|c| s(c, "/metadata/name") == cr_name) {
            Some(cur) if rev(cur) == max => {}
            Some(_) => {
                // Rolled back to an older template: that revision becomes the newest.
                self.api
                    .update_with(
                        &self.user,
                        ObjectRef::new(&CONTROLLER_REVISIONS, Some(ns), &cr_name),
                        Part::Main,
                        WriteOpts::INTERNAL,
                        |old| {
                            let mut new = old.clone();
                            new["revision"] = json!(max + 1);
                            Ok(new)
                        },
                    )
                    .await?;
                tracing::info!(revision = max + 1, "controller revision reused");
            }
            None => {
                let mut template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
                template["$patch"] = json!("replace");
                let mut labels = ds
                    .pointer("/spec/template/metadata/labels")
                    .cloned()
                    .unwrap_or(json!({}));
                labels["controller-revision-hash"] = json!(hash);
                let cr = json!({
                    "apiVersion": "apps/v1",
                    "kind": "ControllerRevision",
                    "metadata": {
                        "name": cr_name,
                        "namespace": ns,
                        "labels": labels,
                        "ownerReferences": [{
                            "apiVersion": "apps/v1",
                            "kind": "DaemonSet",
                            "name": name,
                            "uid": uid,
                            "controller": true,
                            "blockOwnerDeletion": true,
                        }],
                    },
                    "data": {"spec": {"template": template}},
                    "revision": max + 1,
                });
                match self
                    .api
                    .create(
                        &self.user,
                        &CONTROLLER_REVISIONS,
                        Some(ns),
                        cr,
                        WriteOpts::INTERNAL,
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::info!(revision = max + 1, hash, "controller revision created");
                    }
                    Err(e) if e.code == 409 => return Ok(()),
                    Err(e) => return Err(e),
                }
                owned.retain(|c| s(c, "/metadata/name") != cr_name);
            }
        }
        // Prune the oldest revisions not in use beyond revisionHistoryLimit.
        let limit = ds
            .pointer("/spec/revisionHistoryLimit")
            .and_then(Value::as_i64)
            .unwrap_or(10)
            .max(0) as usize;
        let live: HashSet<&str> = pods
            .iter()
            .map(|p| s(p, "/metadata/labels/controller-revision-hash"))
            .collect();
        let mut history: Vec<&Value> = owned
            .into_iter()
            .filter(|c| {
                s(c, "/metadata/name") != cr_name
                    && !live.contains(s(c, "/metadata/labels/controller-revision-hash"))
            })
            .collect();
        if history.len() > limit {
            history.sort_by_key(|c| rev(c));
            for c in &history[..history.len() - limit] {
                let n = s(c, "/metadata/name");
                if let Err(e) = self.delete(&CONTROLLER_REVISIONS, ns, n).await {
                    if e.code != 404 {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, worker: bool) -> Arc<Node> {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if worker {
            labels["role"] = json!("worker");
        }
        Arc::new(
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels}}))
            .unwrap(),
        )
    }

    fn pod(node: &str, hash: &str, ready_since: Option<&str>, created: &str) -> Value {
        let mut p = json!({"metadata": {"name": format!("p-{node}"), "creationTimestamp": created,
                "labels": {"controller-revision-hash": hash}},
            "spec": {"nodeName": node}, "status": {"conditions": []}});
        if let Some(t) = ready_since {
            p["status"]["conditions"] =
                json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]);
        }
        p
    }

    #[test]
    fn status_counts_follow_the_daemonset_controller() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ds: DaemonSet = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "minReadySeconds": 30,
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"nodeSelector": {"role": "worker"}, "containers": [{"name": "c", "image": "i"}]}}}}))
        .unwrap();
        let nodes = vec![
            node("w1", true),
            node("w2", true),
            node("w3", true),
            node("m1", false),
        ];
        let long_ago = "2026-11-24T11:00:00Z";
        let just_now = "2026-11-24T11:59:50Z";
        struct Case {
            pods: Vec<Value>,
            want: Value,
            wake: bool,
        }
        let cases = [
            Case {
                pods: vec![],
                want: json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 0, "numberReady": 0,
                    "numberAvailable": 0, "numberUnavailable": 3, "numberMisscheduled": 0, "updatedNumberScheduled": 0}),
                wake: false,
            },
            Case {
                pods: vec![
                    pod("w1", "h2", Some(long_ago), long_ago),
                    pod("w2", "h1", Some(just_now), long_ago),
                    pod("w3", "h2", None, long_ago),
                    pod("m1", "h2", Some(long_ago), long_ago),
                ],
                want: json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                    "numberAvailable": 1, "numberUnavailable": 2, "numberMisscheduled": 1, "updatedNumberScheduled": 2}),
                wake: true,
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            let refs: Vec<&Value> = c.pods.iter().collect();
            let (status, wake) = compute_status(&ds, 4, &nodes, &refs, "h2", now);
            for (k, v) in c.want.as_object().unwrap() {
                assert_eq!(&status[k], v, "case {i}: {k}");
            }
            assert_eq!(status["observedGeneration"], 4);
            assert_eq!(wake.is_some(), c.wake, "case {i}");
        }
    }

    #[tokio::test]
    async fn orphaned_daemon_pods_are_deleted_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::store::SqliteStore::open(&dir.path().join("s.db"), 100).unwrap();
        let api = Arc::new(Api::new(Arc::new(store), Default::default()));
        let owned = |name: &str, uid: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": uid, "controller": true}]},
                "spec": {"containers": []}})
        };
        api.store
            .create("pods", "default", "orphan", owned("orphan", "gone"))
            .await
            .unwrap();
        api.store
            .create("pods", "default", "kept", owned("kept", "live"))
            .await
            .unwrap();
        let live: HashSet<String> = ["live".to_string()].into();
        let mut c = Controller::new(api.clone());
        let t0 = Instant::now();
        c.collect_orphans(&live, t0).await;
        c.collect_orphans(&live, t0 + ORPHAN_GRACE / 2).await;
        assert!(api
            .store
            .get("pods", "default", "orphan")
            .await
            .unwrap()
            .is_some());
        c.collect_orphans(&live, t0 + ORPHAN_GRACE).await;
        assert!(api
            .store
            .get("pods", "default", "orphan")
            .await
            .unwrap()
            .is_none());
        assert!(api
            .store
            .get("pods", "default", "kept")
            .await
            .unwrap()
            .is_some());
    }
}
