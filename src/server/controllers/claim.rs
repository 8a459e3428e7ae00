//! Kubernetes' ControllerRefManager (`pkg/controller/controller_ref_manager.go`): which objects a
//! controller owns. It keeps those with its controller reference whose labels it selects, adopts
//! orphans it selects (adding its controller reference, with the object's uid as a precondition:
//! the object stays the same object, so nothing that runs it restarts), and releases those it
//! owns but no longer selects (removing its reference).
use std::sync::Arc;

use serde_json::{json, Value};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{controller_of, labels_of, s};
use crate::core::labels::selector_matches;
use crate::server::auth::User;
use crate::server::kinds::PODS;
use crate::server::query::WriteOpts;
use crate::server::resources::Resource;
use crate::server::status::ApiError;
use crate::server::store::Indexed;
use crate::server::verbs::{Api, ObjectRef, Part};

/// What the claim does with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours, and selected.
    Owned,
    /// An orphan we select: add our controller reference.
    Adopt,
    /// Ours, no longer selected: remove our reference.
    Release,
    /// Another controller's, or an orphan we leave alone.
    Ignore,
}

/// The owner making a claim.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// `apps/v1`
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// The owner is being deleted: it adopts and releases nothing.
    pub deleting: bool,
}

impl Owner<'_> {
    /// Its controller reference, as it is put on what it owns.
    pub fn reference(&self) -> Value {
        json!({"apiVersion": self.api_version, "kind": self.kind, "name": self.name,
            "uid": self.uid, "controller": true, "blockOwnerDeletion": true})
    }
}

/// `ClaimObject`'s decision for `obj`, which `selected` says the owner's selector matches.
pub fn decide(owner: &Owner<'_>, obj: &Value, selected: bool) -> Claim {
    match controller_of(obj) {
        Some(r) if r.uid != owner.uid => Claim::Ignore,
        Some(_) if selected => Claim::Owned,
        Some(_) if owner.deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner.deleting || !selected => Claim::Ignore,
        None if s(obj, "/metadata/namespace") != owner.namespace => Claim::Ignore,
        // an object being deleted is not adopted
        None if obj.pointer("/metadata/deletionTimestamp").is_some() => Claim::Ignore,
        None => Claim::Adopt,
    }
}

/// Carries out `claim` on `obj` of resource `r`; returns the object the owner then owns (None:
/// not its, or gone meanwhile).
pub async fn apply(
    api: &Api,
    user: &User,
    r: &'static Resource,
    owner: &Owner<'_>,
    obj: Arc<Value>,
    claim: Claim,
) -> Result<Option<Arc<Value>>, ApiError> {
    let uid = s(&obj, "/metadata/uid").to_string();
    let at = ObjectRef::new(r, Some(owner.namespace), s(&obj, "/metadata/name"));
    let written = match claim {
        Claim::Owned => return Ok(Some(obj)),
        Claim::Ignore => return Ok(None),
        Claim::Adopt => {
            api.update_with(user, at, Part::Main, WriteOpts::INTERNAL, |cur| {
                let mut new = with_uid(cur, &uid);
                if controller_of(cur).is_some() {
                    // adopted by another meanwhile
                    return Err(ApiError::conflict(r.group, r.plural, at.name));
                }
                let refs = new["metadata"]
                    .as_object_mut()
                    .map(|m| m.entry("ownerReferences").or_insert_with(|| json!([])));
                match refs.and_then(Value::as_array_mut) {
                    Some(list) => list.push(owner.reference()),
                    None => new["metadata"]["ownerReferences"] = json!([owner.reference()]),
                }
                Ok(new)
            })
            .await
        }
        Claim::Release => {
            api.update_with(user, at, Part::Main, WriteOpts::INTERNAL, |cur| {
                let mut new = with_uid(cur, &uid);
                if let Some(list) = new
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    list.retain(|o| s(o, "/uid") != owner.uid);
                }
                Ok(new)
            })
            .await
        }
    };
    match written {
        Ok(w) if claim == Claim::Adopt => {
            tracing::info!(pod = at.name, "adopted");
            Ok(Some(w.object))
        }
        Ok(_) => {
            tracing::info!(pod = at.name, "released: the selector no longer matches");
            Ok(None)
        }
        // gone, replaced (another uid) or taken by another controller meanwhile
        Err(e) if e.code == 404 || e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The pods of `owner`'s namespace it owns after adopting the orphans `selector` matches and
/// releasing those it no longer matches (`ClaimPods`). Before the first adoption the owner (of
/// resource `owner_r`) is read again: still the same one and not being deleted
/// (`RecheckDeletionTimestamp`).
///
/// Only the pods that may be its are read, through the store's index of pods by controller (as
/// client-go's informer indexers serve kube-controller-manager): its own and the orphans. Other
/// controllers' pods are never its (`decide` ignores them), and with 20 DaemonSets over 5000
/// nodes each sync read all 100 000 pods of the namespace.
pub async fn claim_pods(
    api: &Api,
    user: &User,
    owner_r: &'static Resource,
    owner: &Owner<'_>,
    selector: &LabelSelector,
) -> Result<Vec<Arc<Value>>, ApiError> {
    let ns = Some(owner.namespace);
    let mut all = api
        .list_indexed(user, &PODS, ns, Indexed::Controller(owner.uid))
        .await?;
    if !owner.deleting {
        all.extend(
            api.list_indexed(user, &PODS, ns, Indexed::Controller(""))
                .await?,
        );
    }
    let mut may_adopt = None;
    let mut claimed = Vec::new();
    for pod in all {
        let selected = selector_matches(selector, &labels_of(&pod));
        let mut claim = decide(owner, &pod, selected);
        if claim == Claim::Adopt
            && !*may_adopt.get_or_insert(still_there(api, user, owner_r, owner).await)
        {
            claim = Claim::Ignore;
        }
        if let Some(p) = apply(api, user, &PODS, owner, pod, claim).await? {
            claimed.push(p);
        }
    }
    Ok(claimed)
}

async fn still_there(api: &Api, user: &User, r: &'static Resource, owner: &Owner<'_>) -> bool {
    let at = ObjectRef::new(r, Some(owner.namespace), owner.name);
    api.get(user, at).await.is_ok_and(|d| {
        s(&d, "/metadata/uid") == owner.uid && d.pointer("/metadata/deletionTimestamp").is_none()
    })
}

/// `cur` as a write with a uid precondition: it applies only to the object of that uid.
fn with_uid(cur: &Value, uid: &str) -> Value {
    let mut new = cur.clone();
    new["metadata"]["uid"] = json!(uid);
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::controllers::counting::Counting;
    use crate::server::kinds::DAEMONSETS;
    use crate::server::store::ObjectStore;

    /// A claim reads its owner's pods and the orphans, not every pod of the namespace: one
    /// DaemonSet among 20 with 40 pods each reads about its own 40 (it read all 800).
    #[tokio::test]
    async fn a_claim_reads_its_own_pods_and_the_orphans_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting::open(&dir));
        let pod = |name: &str, app: &str, owner: Option<usize>| {
            let mut p = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "ns", "uid": format!("pod-{name}"),
                    "labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
            if let Some(i) = owner {
                p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                    "kind": "DaemonSet", "name": format!("d{i}"), "uid": format!("u{i}"),
                    "controller": true}]);
            }
            p
        };
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d3", "namespace": "ns", "uid": "u3"}});
        store
            .create(&DAEMONSETS.key(), "ns", "d3", ds)
            .await
            .unwrap();
        for i in 0..20 {
            for j in 0..40 {
                let name = format!("d{i}-{j}");
                let p = pod(&name, &format!("d{i}"), Some(i));
                store.create("pods", "ns", &name, p).await.unwrap();
            }
        }
        for (name, app) in [("orphan", "d3"), ("stray", "other")] {
            store
                .create("pods", "ns", name, pod(name, app, None))
                .await
                .unwrap();
        }
        let api = Api::new(store.clone(), Default::default());
        let owner = Owner {
            api_version: "apps/v1",
            kind: "DaemonSet",
            namespace: "ns",
            name: "d3",
            uid: "u3",
            deleting: false,
        };
        let selector: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "d3"}})).unwrap();
        let user = User::internal("test");
        store.reset();
        let claimed = claim_pods(&api, &user, &DAEMONSETS, &owner, &selector)
            .await
            .unwrap();
        let mut names: Vec<&str> = claimed.iter().map(|p| s(p, "/metadata/name")).collect();
        names.sort();
        assert_eq!(names.len(), 41);
        assert!(
            names.contains(&"orphan"),
            "the orphan it selects is adopted"
        );
        assert!(!names.contains(&"stray"));
        let adopted = store
            .inner
            .get("pods", "ns", "orphan")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(controller_of(&adopted).map(|c| c.uid), Some("u3".into()));
        // its 40, the 2 orphans, the owner read again and the orphan read for the adoption
        let read = store.whole();
        assert!(read <= 46, "the claim read {read} objects");
    }

    #[test]
    fn claims_follow_the_controller_ref_manager() {
        let owner = |deleting| Owner {
            api_version: "apps/v1",
            kind: "DaemonSet",
            namespace: "ns",
            name: "d",
            uid: "u1",
            deleting,
        };
        let obj = |controller: Option<&str>, ns: &str, deleting: bool| {
            let mut o = json!({"metadata": {"name": "p", "namespace": ns}});
            if let Some(uid) = controller {
                o["metadata"]["ownerReferences"] =
                    json!([{"kind": "DaemonSet", "name": "x", "uid": uid, "controller": true}]);
            }
            if deleting {
                o["metadata"]["deletionTimestamp"] = json!("2026-11-24T00:00:00Z");
            }
            o
        };
        // (owner deleting, controller uid, namespace, object deleting, selected, claim)
        #[rustfmt::skip]
        let cases = [
            (false, Some("u1"), "ns", false, true, Claim::Owned),
            (false, Some("u1"), "ns", false, false, Claim::Release),
            (true, Some("u1"), "ns", false, false, Claim::Ignore),
            (true, Some("u1"), "ns", false, true, Claim::Owned),
            (false, Some("u2"), "ns", false, true, Claim::Ignore),
            (false, None, "ns", false, true, Claim::Adopt),
            (false, None, "ns", false, false, Claim::Ignore),
            (false, None, "other", false, true, Claim::Ignore),
            (false, None, "ns", true, true, Claim::Ignore),
            (true, None, "ns", false, true, Claim::Ignore),
        ];
        for (owner_deleting, controller, ns, deleting, selected, want) in cases {
            let o = obj(controller, ns, deleting);
            assert_eq!(
                decide(&owner(owner_deleting), &o, selected),
                want,
                "{o} owner deleting {owner_deleting}, selected {selected}"
            );
        }
    }
}
