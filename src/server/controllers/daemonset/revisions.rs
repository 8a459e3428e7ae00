//! The DaemonSet's ControllerRevisions (`constructHistory`, `cleanupHistory`): `<ds>-<hash>`
//! holding the template, the newest with the highest `revision`; beyond `revisionHistoryLimit`,
//! the oldest that no live pod runs are deleted.
use std::collections::HashSet;

use serde_json::{json, Value};

use super::super::claim::Owner;
use super::super::{controller_of, s};
use crate::server::auth::User;
use crate::server::kinds::CONTROLLER_REVISIONS;
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
                    "ownerReferences": [owner.reference()],
                },
                "data": {"spec": {"template": template}},
                "revision": max + 1,
            });
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
                Err(e) if e.code == 409 => return Ok(()),
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
