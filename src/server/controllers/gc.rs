//! The garbage collector, as kube-controller-manager's (`pkg/controller/garbagecollector`):
//! dependents (objects whose `metadata.ownerReferences` name an owner's uid) follow their
//! owners, as the owner's delete asked (`super::super::propagation` turns the policy into a
//! finalizer):
//!
//! - **Background**: the owner is gone; a dependent all of whose owners are gone is deleted
//!   (`attemptToDeleteItem`: owners are looked up by uid, and again live before a delete, so an
//!   owner created after the snapshot is not taken for gone); a dependent with an owner left only
//!   loses the references to those gone.
//! - **Foreground** (`foregroundDeletion`): the owner stays marked; its dependents are deleted
//!   (in the foreground themselves when they have dependents), and the finalizer goes when no
//!   dependent that blocks its owner's deletion (`blockOwnerDeletion`) is left
//!   (`processDeletingDependentsItem`).
//! - **Orphan** (`orphan`): the owner reference is taken off every dependent, then the finalizer
//!   (`orphanDependents`).
//!
//! The decisions are one pure [`plan`] over a snapshot of every collected resource; [`run`]
//! makes a pass at start (a cascade a restart interrupted goes on), after every change that
//! may matter (a delete, owner references or deletion finalizers changed) and every minute.
//! Events are not collected (as upstream ignores them).
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use serde_json::{json, Value};

use super::s;
use crate::agent::clock::Clock;
use crate::server::auth::User;
use crate::server::kinds::ALL;
use crate::server::propagation::{finalizers, FOREGROUND, ORPHAN};
use crate::server::query::WriteOpts;
use crate::server::resources::Resource;
use crate::server::status::ApiError;
use crate::server::store::{EventType, WatchEvent};
use crate::server::verbs::{Api, DeleteOptions, ObjectRef, Part, Preconditions, Propagation};

/// A pass at least this often.
const RESYNC_MS: i64 = 60_000;
/// A pass that failed somewhere is made again after this.
const RETRY_MS: i64 = 1_000;

/// The resources the collector looks at: every stored kind but Events.
pub fn collected() -> Vec<&'static Resource> {
    ALL.iter()
        .copied()
        .filter(|r| r.strategy.review().is_none() && r.plural != "events")
        .filter(|r| r.verbs.contains(&"list") && r.verbs.contains(&"delete"))
        .collect()
}

/// The served resource of an owner reference's apiVersion and kind.
fn resource_of(api_version: &str, kind: &str) -> Option<&'static Resource> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    ALL.iter()
        .copied()
        .find(|r| r.group == group && r.kind == kind)
}

/// One object, as an action addresses it.
#[derive(Debug, Clone)]
pub struct Target {
    pub r: &'static Resource,
    pub ns: String,
    pub name: String,
    pub uid: String,
}

impl Target {
    fn of(r: &'static Resource, obj: &Value) -> Target {
        Target {
            r,
            ns: s(obj, "/metadata/namespace").to_string(),
            name: s(obj, "/metadata/name").to_string(),
            uid: s(obj, "/metadata/uid").to_string(),
        }
    }
    fn at(&self) -> ObjectRef<'_> {
        let ns = self.r.namespaced.then_some(self.ns.as_str());
        ObjectRef::new(self.r, ns, &self.name)
    }
}

/// An owner reference, as the collector reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub block_owner_deletion: bool,
}

fn owner_refs(obj: &Value) -> Vec<OwnerRef> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|o| OwnerRef {
                    api_version: s(o, "/apiVersion").to_string(),
                    kind: s(o, "/kind").to_string(),
                    name: s(o, "/name").to_string(),
                    uid: s(o, "/uid").to_string(),
                    block_owner_deletion: o.get("blockOwnerDeletion").and_then(Value::as_bool)
                        == Some(true),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

/// What the collector does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Delete a dependent with this propagation, once the owners it names in `dangling` are
    /// confirmed gone.
    Delete {
        target: Target,
        policy: Propagation,
        dangling: Vec<OwnerRef>,
    },
    /// Take the owner references to these uids off a dependent.
    RemoveOwners { target: Target, uids: Vec<String> },
    /// Take a deletion finalizer off an owner whose dependents are done.
    RemoveFinalizer {
        target: Target,
        finalizer: &'static str,
    },
}

/// One collected object and its resource.
pub type Item = (&'static Resource, Arc<Value>);

/// The collector's decisions over a snapshot of the collected objects.
pub fn plan(items: &[Item]) -> Vec<Action> {
    let by_uid: HashMap<&str, (&'static Resource, &Value)> = items
        .iter()
        .map(|(r, o)| (s(o, "/metadata/uid"), (*r, &**o)))
        .collect();
    // owner uid -> (dependent index, whether it blocks the owner's deletion)
    let mut dependents: HashMap<String, Vec<(usize, bool)>> = HashMap::new();
    for (i, (_, o)) in items.iter().enumerate() {
        for o in owner_refs(o) {
            dependents
                .entry(o.uid)
                .or_default()
                .push((i, o.block_owner_deletion));
        }
    }
    let mut out = Vec::new();
    for (r, obj) in items {
        let uid = s(obj, "/metadata/uid");
        let deps = dependents.get(uid).map(Vec::as_slice).unwrap_or(&[]);
        if deleting(obj) {
            let fins = finalizers(obj);
            if fins.contains(&ORPHAN) {
                for (d, _) in deps {
                    out.push(Action::RemoveOwners {
                        target: Target::of(items[*d].0, &items[*d].1),
                        uids: vec![uid.to_string()],
                    });
                }
                if deps.is_empty() {
                    out.push(Action::RemoveFinalizer {
                        target: Target::of(r, obj),
                        finalizer: ORPHAN,
                    });
                }
            } else if fins.contains(&FOREGROUND) && !deps.iter().any(|(_, block)| *block) {
                out.push(Action::RemoveFinalizer {
                    target: Target::of(r, obj),
                    finalizer: FOREGROUND,
                });
            }
            continue;
        }
        let refs = owner_refs(obj);
        if refs.is_empty() {
            continue;
        }
        let ns = s(obj, "/metadata/namespace");
        let (mut solid, mut dangling, mut waiting) = (0, Vec::new(), Vec::new());
        for o in refs {
            let found = by_uid.get(o.uid.as_str()).filter(|(or, ov)| {
                or.kind == o.kind && (!or.namespaced || s(ov, "/metadata/namespace") == ns)
            });
            match found {
                Some((_, owner)) if deleting(owner) && finalizers(owner).contains(&FOREGROUND) => {
                    waiting.push(o)
                }
                Some(_) => solid += 1,
                // an owner of a kind not served here cannot be looked up: it is not taken for gone
                None if resource_of(&o.api_version, &o.kind).is_none() => solid += 1,
                None => dangling.push(o),
            }
        }
        let target = Target::of(r, obj);
        if solid > 0 {
            if !dangling.is_empty() || !waiting.is_empty() {
                let uids = dangling.iter().chain(&waiting).map(|o| o.uid.clone());
                out.push(Action::RemoveOwners {
                    target,
                    uids: uids.collect(),
                });
            }
            continue;
        }
        let own = finalizers(obj);
        let policy = if !waiting.is_empty() && !deps.is_empty() {
            Propagation::Foreground
        } else if own.contains(&ORPHAN) {
            Propagation::Orphan
        } else if own.contains(&FOREGROUND) {
            Propagation::Foreground
        } else {
            Propagation::Background
        };
        out.push(Action::Delete {
            target,
            policy,
            dangling,
        });
    }
    out
}

/// Whether a watch event may change what the collector decides: a delete of an owner or of a
/// dependent of an owner being deleted (`deleting`: it may wait for its dependents), a deletion
/// (with its finalizers) that changed, a reference taken off (a waiting owner may go), or one to
/// an owner not known to exist (`live`: the uids the collector saw). A new pod of a live
/// DaemonSet (the bulk of a fleet's creates) calls for nothing, nor does the delete of a pod
/// whose DaemonSet stays (a rollout's: each was a pass over every object).
fn matters(
    ev: &WatchEvent,
    owners: &HashSet<String>,
    live: &HashSet<String>,
    deleting_owners: &HashSet<String>,
) -> bool {
    let obj = &ev.object;
    // references to kinds not served here never make the collector act
    let uids = |v: &Value| -> HashSet<String> {
        owner_refs(v)
            .into_iter()
            .filter(|o| resource_of(&o.api_version, &o.kind).is_some())
            .map(|o| o.uid)
            .collect()
    };
    let deletion = |v: &Value| {
        (
            v.pointer("/metadata/deletionTimestamp").cloned(),
            v.pointer("/metadata/finalizers").cloned(),
        )
    };
    if ev.event_type == EventType::Deleted {
        return uids(obj).iter().any(|u| deleting_owners.contains(u))
            || owners.contains(s(obj, "/metadata/uid"));
    }
    let now = uids(obj);
    let before = ev.prev.as_deref().map(uids).unwrap_or_default();
    let deletion_changed = deleting(obj)
        && ev
            .prev
            .as_deref()
            .is_none_or(|p| deletion(p) != deletion(obj));
    deletion_changed || !before.is_subset(&now) || now.iter().any(|u| !live.contains(u))
}

/// The garbage collector of one server.
pub struct Collector {
    api: Arc<Api>,
    user: User,
    clock: Clock,
    /// The uids of the collected objects at the last pass (and created since).
    live: HashSet<String>,
    /// The uids named as owners at the last pass (and since).
    owners: HashSet<String>,
    /// The uids of the objects being deleted (a deletionTimestamp) at the last pass (and since).
    deleting: HashSet<String>,
}

/// Runs the collector until `stop` completes (or the store closes the watch).
pub async fn run(api: Arc<Api>, clock: Clock, stop: impl Future<Output = ()>) {
    tokio::select! {
        _ = Collector::new(api, clock).run() => {}
        _ = stop => {}
    }
}

impl Collector {
    pub fn new(api: Arc<Api>, clock: Clock) -> Collector {
        Collector {
            api,
            user: User::internal("generic-garbage-collector"),
            clock,
            live: HashSet::new(),
            owners: HashSet::new(),
            deleting: HashSet::new(),
        }
    }

    async fn run(mut self) {
        let resources = collected();
        let keys: HashSet<String> = resources.iter().map(|r| r.key()).collect();
        loop {
            let mut feed = match super::Feed::new(self.api.clone(), &self.user, &resources) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "the garbage collector cannot watch the store");
                    tokio::time::sleep_until(self.clock.deadline(self.clock.now_ms() + RETRY_MS))
                        .await;
                    continue;
                }
            };
            let mut due = self.clock.now_ms();
            loop {
                let mut pass = false;
                tokio::select! {
                    d = feed.recv(super::DRAIN_MAX) => {
                        for ev in &d.events {
                            pass |= self.note(ev, &keys);
                        }
                        if d.lagged {
                            // the pass below reads everything afresh
                            feed.relisted(feed.now());
                            pass = true;
                        }
                        if d.closed {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(self.clock.deadline(due)) => pass = true,
                }
                if pass {
                    let wait = match self.pass().await {
                        Ok(()) => RESYNC_MS,
                        Err(e) => {
                            tracing::warn!(error = %e, "a garbage collection pass failed");
                            RETRY_MS
                        }
                    };
                    due = self.clock.now_ms() + wait;
                }
            }
        }
    }

    /// Notes the owners an event names; whether it calls for a pass.
    fn note(&mut self, ev: &WatchEvent, keys: &HashSet<String>) -> bool {
        if !keys.contains(&ev.resource) {
            return false;
        }
        let uid = s(&ev.object, "/metadata/uid").to_string();
        if ev.event_type == EventType::Deleted {
            self.live.remove(&uid);
        } else {
            self.live.insert(uid.clone());
        }
        let matters = matters(ev, &self.owners, &self.live, &self.deleting);
        if ev.event_type != EventType::Deleted && deleting(&ev.object) {
            self.deleting.insert(uid);
        } else {
            self.deleting.remove(&uid);
        }
        if ev.event_type != EventType::Deleted {
            self.owners
                .extend(owner_refs(&ev.object).into_iter().map(|o| o.uid));
        }
        matters
    }

    /// One pass: a snapshot of the collected resources, the plan, its actions.
    pub async fn pass(&mut self) -> Result<(), ApiError> {
        let mut items = Vec::new();
        for r in collected() {
            // metadata only, as upstream's collector reads through metadata informers: every
            // pod decoded whole at once was GiBs at 100 000 pods
            let list = self.api.list_metadata(&self.user, r, None).await?;
            items.extend(list.into_iter().map(|o| (r, o)));
        }
        self.owners = items
            .iter()
            .flat_map(|(_, o)| owner_refs(o))
            .map(|o| o.uid)
            .collect();
        self.live = items
            .iter()
            .map(|(_, o)| s(o, "/metadata/uid").to_string())
            .collect();
        self.deleting = items
            .iter()
            .filter(|(_, o)| deleting(o))
            .map(|(_, o)| s(o, "/metadata/uid").to_string())
            .collect();
        let mut failed = None;
        for action in plan(&items) {
            if let Err(e) = self.act(&action).await {
                if e.code != 404 && e.code != 409 {
                    tracing::warn!(action = ?action, error = %e, "garbage collection");
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Whether the owner `o` of a namespaced (in `ns`) or cluster-scoped dependent is gone, read
    /// live (`isDangling`).
    async fn gone(&self, ns: &str, o: &OwnerRef) -> Result<bool, ApiError> {
        let Some(r) = resource_of(&o.api_version, &o.kind) else {
            return Ok(false);
        };
        let ns = r.namespaced.then_some(ns);
        match self
            .api
            .get(&self.user, ObjectRef::new(r, ns, &o.name))
            .await
        {
            Ok(owner) => Ok(s(&owner, "/metadata/uid") != o.uid),
            Err(e) if e.code == 404 => Ok(true),
            Err(e) => Err(e),
        }
    }

    async fn act(&self, action: &Action) -> Result<(), ApiError> {
        match action {
            Action::Delete {
                target,
                policy,
                dangling,
            } => {
                for o in dangling {
                    if !self.gone(&target.ns, o).await? {
                        return Ok(());
                    }
                }
                tracing::info!(kind = target.r.kind, namespace = target.ns.as_str(),
                    name = target.name.as_str(), policy = ?policy, "deleting: its owners are gone");
                let opts = DeleteOptions {
                    propagation: Some(*policy),
                    preconditions: Preconditions {
                        uid: Some(target.uid.clone()),
                        resource_version: None,
                    },
                    ..Default::default()
                };
                self.api.delete(&self.user, target.at(), &opts).await?;
            }
            Action::RemoveOwners { target, uids } => {
                self.edit(target, |m| {
                    if let Some(refs) = m.get_mut("ownerReferences").and_then(Value::as_array_mut) {
                        refs.retain(|o| !uids.iter().any(|u| o.get("uid") == Some(&json!(u))));
                        if refs.is_empty() {
                            m.remove("ownerReferences");
                        }
                    }
                })
                .await?;
            }
            Action::RemoveFinalizer { target, finalizer } => {
                self.edit(target, |m| {
                    if let Some(f) = m.get_mut("finalizers").and_then(Value::as_array_mut) {
                        f.retain(|x| x != finalizer);
                    }
                })
                .await?;
            }
        }
        Ok(())
    }

    /// An update of the target's metadata by `change`, on whatever is current of the same uid.
    async fn edit<F>(&self, target: &Target, change: F) -> Result<(), ApiError>
    where
        F: Fn(&mut serde_json::Map<String, Value>),
    {
        self.api
            .update_with(
                &self.user,
                target.at(),
                Part::Main,
                WriteOpts::INTERNAL,
                |cur| {
                    let mut new = cur.clone();
                    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                        m.insert("uid".into(), json!(target.uid));
                        change(m);
                    }
                    Ok(new)
                },
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::kinds::{CONTROLLER_REVISIONS, DAEMONSETS, PODS};
    use crate::server::store::SqliteStore;

    fn ds(uid: &str, deleting: Option<&str>) -> Arc<Value> {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": format!("ds-{uid}"), "namespace": "default", "uid": uid},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        if let Some(f) = deleting {
            d["metadata"]["deletionTimestamp"] = json!("2026-11-26T00:00:00Z");
            d["metadata"]["finalizers"] = json!([f]);
        }
        Arc::new(d)
    }

    fn pod(name: &str, owners: &[(&str, bool)]) -> Arc<Value> {
        let refs: Vec<Value> = owners
            .iter()
            .map(|(uid, block)| {
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "name": format!("ds-{uid}"), "uid": uid, "controller": true,
                "blockOwnerDeletion": block})
            })
            .collect();
        Arc::new(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                "ownerReferences": refs},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    }

    /// What the plan does, as (verb, object name, detail) triples.
    fn summary(actions: &[Action]) -> Vec<(String, String, String)> {
        actions
            .iter()
            .map(|a| match a {
                Action::Delete {
                    target,
                    policy,
                    dangling,
                } => (
                    "delete".into(),
                    target.name.clone(),
                    format!("{policy:?} {}", dangling.len()),
                ),
                Action::RemoveOwners { target, uids } => {
                    ("unown".into(), target.name.clone(), uids.join(","))
                }
                Action::RemoveFinalizer { target, finalizer } => (
                    "unfinalize".into(),
                    target.name.clone(),
                    finalizer.to_string(),
                ),
            })
            .collect()
    }

    #[test]
    fn the_plan_follows_the_owners() {
        let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        let cases: Vec<(&str, Vec<Item>, Vec<_>)> = vec![
            (
                "owner alive",
                vec![
                    (&DAEMONSETS, ds("a", None)),
                    (&PODS, pod("p", &[("a", true)])),
                ],
                vec![],
            ),
            (
                "owner gone (background)",
                vec![(&PODS, pod("p", &[("a", true)]))],
                vec![t("delete", "p", "Background 1")],
            ),
            (
                "one owner of two gone",
                vec![
                    (&DAEMONSETS, ds("a", None)),
                    (&PODS, pod("p", &[("a", true), ("b", false)])),
                ],
                vec![t("unown", "p", "b")],
            ),
            (
                "orphan: refs off first",
                vec![
                    (&DAEMONSETS, ds("a", Some(ORPHAN))),
                    (&PODS, pod("p", &[("a", true)])),
                ],
                vec![t("unown", "p", "a")],
            ),
            (
                "orphan: then the finalizer",
                vec![(&DAEMONSETS, ds("a", Some(ORPHAN))), (&PODS, pod("p", &[]))],
                vec![t("unfinalize", "ds-a", ORPHAN)],
            ),
            (
                "foreground: dependents deleted, owner waits for the blocking one",
                vec![
                    (&DAEMONSETS, ds("a", Some(FOREGROUND))),
                    (&PODS, pod("p", &[("a", true)])),
                ],
                vec![t("delete", "p", "Background 0")],
            ),
            (
                "foreground: a non-blocking dependent does not hold the owner",
                vec![
                    (&DAEMONSETS, ds("a", Some(FOREGROUND))),
                    (&PODS, pod("p", &[("a", false)])),
                ],
                vec![
                    t("unfinalize", "ds-a", FOREGROUND),
                    t("delete", "p", "Background 0"),
                ],
            ),
            (
                "foreground: a solid second owner keeps the dependent",
                vec![
                    (&DAEMONSETS, ds("a", Some(FOREGROUND))),
                    (&DAEMONSETS, ds("b", None)),
                    (&PODS, pod("p", &[("a", true), ("b", false)])),
                ],
                vec![t("unown", "p", "a")],
            ),
            (
                "foreground: no dependents left",
                vec![(&DAEMONSETS, ds("a", Some(FOREGROUND)))],
                vec![t("unfinalize", "ds-a", FOREGROUND)],
            ),
        ];
        for (name, items, want) in cases {
            assert_eq!(summary(&plan(&items)), want, "{name}");
        }
        // an owner of a kind not served here is never taken for gone
        let mut p = (*pod("p", &[("x", true)])).clone();
        p["metadata"]["ownerReferences"][0]["kind"] = json!("Deployment");
        assert!(plan(&[(&PODS, Arc::new(p))]).is_empty());
        // nor one of the same uid in another namespace found
        let mut other = (*ds("a", None)).clone();
        other["metadata"]["namespace"] = json!("elsewhere");
        let items = [
            (&DAEMONSETS, Arc::new(other)),
            (&PODS, pod("p", &[("a", true)])),
        ];
        assert_eq!(
            summary(&plan(&items)),
            vec![t("delete", "p", "Background 1")]
        );
    }

    #[test]
    fn only_changes_that_may_matter_call_for_a_pass() {
        let ev = |t: EventType, obj: Arc<Value>, prev: Option<Arc<Value>>| {
            WatchEvent::new(t, 1, "pods", "default", "p", obj, prev)
        };
        let live: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        let owners: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        let deleting: HashSet<String> = ["b".to_string()].into();
        let p = pod("p", &[("a", true)]);
        let orphan = pod("p", &[]);
        let mut status = (*p).clone();
        status["status"] = json!({"phase": "Running"});
        let cases = [
            (
                "a new pod of a live owner",
                ev(EventType::Added, p.clone(), None),
                false,
            ),
            (
                "a new pod of an unknown owner",
                ev(EventType::Added, pod("q", &[("c", true)]), None),
                true,
            ),
            (
                "a status write",
                ev(EventType::Modified, Arc::new(status), Some(p.clone())),
                false,
            ),
            (
                "a reference taken off",
                ev(EventType::Modified, orphan.clone(), Some(p.clone())),
                true,
            ),
            (
                "a dependent of an owner that stays deleted",
                ev(EventType::Deleted, p.clone(), None),
                false,
            ),
            (
                "a dependent of an owner being deleted deleted",
                ev(EventType::Deleted, pod("q", &[("b", true)]), None),
                true,
            ),
            (
                "an owner deleted",
                ev(EventType::Deleted, ds("a", None), None),
                true,
            ),
            (
                "a bare pod deleted",
                ev(EventType::Deleted, orphan.clone(), None),
                false,
            ),
            (
                "an owner marked",
                ev(
                    EventType::Modified,
                    ds("a", Some(ORPHAN)),
                    Some(ds("a", None)),
                ),
                true,
            ),
        ];
        for (name, ev, want) in cases {
            assert_eq!(matters(&ev, &owners, &live, &deleting), want, "{name}");
        }
    }

    fn api(dir: &tempfile::TempDir) -> Arc<Api> {
        let store = SqliteStore::open(&dir.path().join("s.db"), 100).unwrap();
        Arc::new(Api::new(Arc::new(store), Default::default()))
    }

    async fn exists(api: &Api, key: &str, name: &str) -> bool {
        api.store.get(key, "default", name).await.unwrap().is_some()
    }

    /// The three policies through the verbs and the collector's passes (each pass is what a
    /// watch event would start).
    #[tokio::test]
    async fn background_foreground_and_orphan_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir);
        let user = User::internal("test");
        let mut gc = Collector::new(api.clone(), Clock::system());
        let put = |key: &'static str, v: Arc<Value>| {
            let api = api.clone();
            async move {
                let name = s(&v, "/metadata/name").to_string();
                api.store
                    .create(key, "default", &name, (*v).clone())
                    .await
                    .unwrap();
            }
        };
        let ds_at = |uid: &'static str| {
            ObjectRef::new(
                &DAEMONSETS,
                Some("default"),
                match uid {
                    "a" => "ds-a",
                    "b" => "ds-b",
                    _ => "ds-c",
                },
            )
        };
        let policy = |p| DeleteOptions {
            propagation: Some(p),
            ..Default::default()
        };
        for uid in ["a", "b", "c"] {
            put("daemonsets.apps", ds(uid, None)).await;
            put("pods", pod(&format!("p{uid}"), &[(uid, true)])).await;
        }
        let mut rev = (*pod("rev-a", &[("a", true)])).clone();
        rev["kind"] = json!("ControllerRevision");
        put("controllerrevisions.apps", Arc::new(rev)).await;

        // background: the owner goes at once, its dependents at the next pass
        api.delete(&user, ds_at("a"), &policy(Propagation::Background))
            .await
            .unwrap();
        assert!(!exists(&api, "daemonsets.apps", "ds-a").await);
        assert!(exists(&api, "pods", "pa").await);
        gc.pass().await.unwrap();
        assert!(!exists(&api, "pods", "pa").await);
        assert!(!exists(&api, &CONTROLLER_REVISIONS.key(), "rev-a").await);

        // foreground: the owner stays marked until its blocking dependent is gone
        let marked = api
            .delete(&user, ds_at("b"), &policy(Propagation::Foreground))
            .await
            .unwrap();
        assert!(marked.pointer("/metadata/deletionTimestamp").is_some());
        assert_eq!(marked["metadata"]["finalizers"], json!([FOREGROUND]));
        gc.pass().await.unwrap();
        assert!(!exists(&api, "pods", "pb").await);
        assert!(
            exists(&api, "daemonsets.apps", "ds-b").await,
            "one pass later"
        );
        gc.pass().await.unwrap();
        assert!(!exists(&api, "daemonsets.apps", "ds-b").await);

        // orphan: the dependent loses its reference and stays
        api.delete(&user, ds_at("c"), &policy(Propagation::Orphan))
            .await
            .unwrap();
        gc.pass().await.unwrap();
        let pc = api
            .store
            .get("pods", "default", "pc")
            .await
            .unwrap()
            .unwrap();
        assert!(pc.pointer("/metadata/ownerReferences").is_none(), "{pc}");
        gc.pass().await.unwrap();
        assert!(!exists(&api, "daemonsets.apps", "ds-c").await);
        assert!(exists(&api, "pods", "pc").await);
        gc.pass().await.unwrap();
        assert!(
            exists(&api, "pods", "pc").await,
            "an orphan is nobody's to collect"
        );
    }
}
