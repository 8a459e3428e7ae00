//! What the garbage collector will do for DaemonSets, until it exists (issue 10): when a
//! DaemonSet is gone, the pods and ControllerRevisions it controlled are deleted (pods
//! gracefully: their agents stop them first), whatever propagation policy the delete asked for.
//! A pass over everything catches what a missed event left behind.
use std::collections::HashSet;

use super::{controller_of, s};
use crate::server::auth::User;
use crate::server::kinds::{CONTROLLER_REVISIONS, DAEMONSETS, PODS};
use crate::server::query::Filter;
use crate::server::resources::Resource;
use crate::server::status::ApiError;
use crate::server::verbs::{Api, DeleteOptions, ObjectRef};

const DEPENDENTS: [&Resource; 2] = [&PODS, &CONTROLLER_REVISIONS];

/// Deletes the dependents (in `ns`) of the DaemonSet of uid `owner`, which is gone.
pub async fn delete_dependents(api: &Api, user: &User, ns: &str, owner: &str) {
    for r in DEPENDENTS {
        let Ok((items, _)) = api.list(user, r, Some(ns), &Filter::default()).await else {
            continue;
        };
        for item in items {
            if controller_of(&item).is_some_and(|c| c.kind == "DaemonSet" && c.uid == owner) {
                delete(api, user, r, ns, s(&item, "/metadata/name")).await;
            }
        }
    }
}

/// Deletes every dependent whose controlling DaemonSet no longer exists. The dependents are
/// listed before the DaemonSets, so a DaemonSet created in between cannot look absent.
pub async fn collect(api: &Api, user: &User) -> Result<(), ApiError> {
    let mut dependents = Vec::new();
    for r in DEPENDENTS {
        let (items, _) = api.list(user, r, None, &Filter::default()).await?;
        dependents.extend(items.into_iter().map(|i| (r, i)));
    }
    let (daemonsets, _) = api
        .list(user, &DAEMONSETS, None, &Filter::default())
        .await?;
    let live: HashSet<&str> = daemonsets.iter().map(|d| s(d, "/metadata/uid")).collect();
    for (r, item) in &dependents {
        let Some(c) = controller_of(item).filter(|c| c.kind == "DaemonSet") else {
            continue;
        };
        if !live.contains(c.uid.as_str()) && item.pointer("/metadata/deletionTimestamp").is_none() {
            let (ns, name) = (s(item, "/metadata/namespace"), s(item, "/metadata/name"));
            tracing::info!(
                namespace = ns,
                name,
                kind = r.kind,
                "deleting: its DaemonSet is gone"
            );
            delete(api, user, r, ns, name).await;
        }
    }
    Ok(())
}

async fn delete(api: &Api, user: &User, r: &'static Resource, ns: &str, name: &str) {
    let at = ObjectRef::new(r, Some(ns), name);
    match api.delete(user, at, &DeleteOptions::default()).await {
        Ok(_) => {}
        Err(e) if e.code == 404 => {}
        Err(e) => tracing::warn!(namespace = ns, name, error = %e, "cannot delete a dependent"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::server::store::SqliteStore;

    #[tokio::test]
    async fn dependents_of_a_daemonset_that_is_gone_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), 100).unwrap();
        let api = Arc::new(Api::new(Arc::new(store), Default::default()));
        let owned = |name: &str, uid: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": uid, "controller": true}]},
                "spec": {"containers": []}})
        };
        let live = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "live", "namespace": "default", "uid": "live"}});
        api.store
            .create("daemonsets.apps", "default", "live", live)
            .await
            .unwrap();
        for (name, uid) in [("orphan", "gone"), ("kept", "live")] {
            api.store
                .create("pods", "default", name, owned(name, uid))
                .await
                .unwrap();
        }
        let mut bare = owned("bare", "x");
        bare["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
        api.store
            .create("pods", "default", "bare", bare)
            .await
            .unwrap();
        collect(&api, &User::internal("test")).await.unwrap();
        let exists = |name: &'static str| {
            let api = api.clone();
            async move {
                api.store
                    .get("pods", "default", name)
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        assert!(!exists("orphan").await);
        assert!(exists("kept").await);
        assert!(
            exists("bare").await,
            "a pod without a controller is nobody's to collect"
        );
        delete_dependents(&api, &User::internal("test"), "default", "live").await;
        assert!(!exists("kept").await);
    }
}
