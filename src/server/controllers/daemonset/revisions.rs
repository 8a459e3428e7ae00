//! The DaemonSet's ControllerRevisions (`constructHistory`, `cleanupHistory`, `snapshot`):
//! `<ds>-<hash>` holding the template and the DaemonSet's annotations (`kubernetes.io/change-cause`
//! for `kubectl rollout history`), the newest with the highest `revision`; beyond
//! `revisionHistoryLimit`, the oldest that no live pod runs are deleted. A name taken by another
//! template (a hash collision) bumps `status.collisionCount`, which changes the hash. And the
//! automatic rollback: the previous revision's template put back, as `kubectl rollout undo` does.
use std::collections::HashSet;

use serde_json::{json, Value};

use super::super::claim::Owner;
use super::super::{controller_of, s};
use crate::server::auth::User;
use crate::server::kinds::{CONTROLLER_REVISIONS, DAEMONSETS};
use crate::server::query::{Filter, WriteOpts};
use crate::server::status::ApiError;
use crate::server::verbs::{Api, DeleteOptions, ObjectRef, Part};

/// Makes the revision of `hash` the DaemonSet's newest and prunes the history; `live` holds the
/// hashes its pods run.
pub async fn ensure(
    api: &Api,
    user: &User,
    owner: &Owner<'_>,
    ds: &Value,
    hash: &str,
    live: &HashSet<&str>,
) -> Result<(), ApiError> {
    let ns = owner.namespace;
    let (crs, _) = api
        .list(user, &CONTROLLER_REVISIONS, Some(ns), &Filter::default())
        .await?;
    let mut owned: Vec<&Value> = crs
        .iter()
        .map(|c| &**c)
        .filter(|c| controller_of(c).is_some_and(|r| r.uid == owner.uid))
        .collect();
    let rev = |c: &Value| c.get("revision").and_then(Value::as_i64).unwrap_or(0);
    let max = owned.iter().map(|c| rev(c)).max().unwrap_or(0);
    let cr_name = format!("{}-{hash}", owner.name);
    match owned.iter().find(|c| s(c, "/metadata/name") == cr_name) {
        Some(cur) if rev(cur) == max => {}
        Some(_) => {
            // rolled back to an older template: that revision becomes the newest
            let at = ObjectRef::new(&CONTROLLER_REVISIONS, Some(ns), &cr_name);
            api.update_with(user, at, Part::Main, WriteOpts::INTERNAL, |old| {
                let mut new = old.clone();
                new["revision"] = json!(max + 1);
                Ok(new)
            })
            .await?;
            tracing::info!(revision = max + 1, "controller revision reused");
        }
        None => {
            let data = revision_data(ds);
            let mut labels = ds
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            labels["controller-revision-hash"] = json!(hash);
            let mut cr = json!({
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": cr_name,
                    "namespace": ns,
                    "labels": labels,
                    "ownerReferences": [owner.reference()],
                },
                "data": data,
                "revision": max + 1,
            });
            if let Some(a) = ds
                .pointer("/metadata/annotations")
                .filter(|a| a.is_object())
            {
                cr["metadata"]["annotations"] = a.clone();
            }
            let created = api
                .create(
                    user,
                    &CONTROLLER_REVISIONS,
                    Some(ns),
                    cr,
                    WriteOpts::INTERNAL,
                )
                .await;
            match created {
                Ok(_) => tracing::info!(revision = max + 1, hash, "controller revision created"),
                Err(e) if e.code == 409 => {
                    return on_name_taken(api, user, owner, &cr_name, &data).await;
                }
                Err(e) => return Err(e),
            }
            owned.retain(|c| s(c, "/metadata/name") != cr_name);
        }
    }
    // prune the oldest revisions not in use beyond revisionHistoryLimit
    let limit = ds
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
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
            let at = ObjectRef::new(&CONTROLLER_REVISIONS, Some(ns), s(c, "/metadata/name"));
            match api.delete(user, at, &DeleteOptions::default()).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// What a revision stores: a strategic merge patch that puts the template back (`getPatch`).
fn revision_data(ds: &Value) -> Value {
    let mut template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// `old` to be written back only if it is still the DaemonSet of `uid` (a uid precondition), over
/// whatever resourceVersion it has by then.
fn same_uid(old: &Value, uid: &str) -> Value {
    let mut new = old.clone();
    new["metadata"]["uid"] = json!(uid);
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    new
}

/// The revision's name exists: ours (made by an earlier sync), or another template's with the
/// same hash; then `status.collisionCount` goes up, so the next sync hashes differently.
async fn on_name_taken(
    api: &Api,
    user: &User,
    owner: &Owner<'_>,
    name: &str,
    data: &Value,
) -> Result<(), ApiError> {
    let ns = owner.namespace;
    let existing = api
        .get(user, ObjectRef::new(&CONTROLLER_REVISIONS, Some(ns), name))
        .await?;
    if existing.get("data") == Some(data) {
        return Ok(());
    }
    let at = ObjectRef::new(&DAEMONSETS, Some(ns), owner.name);
    api.update_with(user, at, Part::Status, WriteOpts::INTERNAL, |old| {
        let mut new = same_uid(old, owner.uid);
        let count = old
            .pointer("/status/collisionCount")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !new.get("status").is_some_and(Value::is_object) {
            new["status"] = json!({});
        }
        new["status"]["collisionCount"] = json!(count + 1);
        Ok(new)
    })
    .await?;
    tracing::warn!(revision = name, "hash collision: collisionCount bumped");
    // the sync is retried, hashing with the new count
    Err(ApiError::conflict("apps", "controllerrevisions", name))
}

/// The automatic rollback: the template of the newest revision other than `hash` put back on the
/// DaemonSet (what `kubectl rollout undo` patches); nothing when there is none.
pub async fn roll_back(
    api: &Api,
    user: &User,
    owner: &Owner<'_>,
    hash: &str,
    why: &str,
) -> Result<(), ApiError> {
    let ns = owner.namespace;
    let (crs, _) = api
        .list(user, &CONTROLLER_REVISIONS, Some(ns), &Filter::default())
        .await?;
    let previous = crs
        .iter()
        .filter(|c| controller_of(c).is_some_and(|r| r.uid == owner.uid))
        .filter(|c| s(c, "/metadata/labels/controller-revision-hash") != hash)
        .max_by_key(|c| c.get("revision").and_then(Value::as_i64).unwrap_or(0));
    let Some(previous) = previous else {
        tracing::warn!(
            reason = why,
            "the rollout fails and there is no revision to roll back to"
        );
        return Ok(());
    };
    let Some(template) = previous.pointer("/data/spec/template") else {
        tracing::warn!(
            reason = why,
            "the rollout fails and there is no revision to roll back to"
        );
        return Ok(());
    };
    let mut template = template.clone();
    if let Some(t) = template.as_object_mut() {
        t.remove("$patch");
    }
    let at = ObjectRef::new(&DAEMONSETS, Some(ns), owner.name);
    api.update_with(user, at, Part::Main, WriteOpts::INTERNAL, |old| {
        let mut new = same_uid(old, owner.uid);
        new["spec"]["template"] = template.clone();
        Ok(new)
    })
    .await?;
    tracing::warn!(
        reason = why,
        revision = s(previous, "/metadata/name"),
        "the rollout fails on as many nodes as it may take down: rolled back"
    );
    Ok(())
}
