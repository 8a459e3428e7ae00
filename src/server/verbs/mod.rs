//! The generic verbs over the [`ObjectStore`], done once for every kind as kube-apiserver's
//! `genericregistry.Store` does them: create, get, list, watch, update, patch, delete,
//! deletecollection. Each verb authorizes the caller, keeps the server-owned metadata, and asks
//! the resource's [`Strategy`](super::strategy::Strategy) for everything kind-specific.
//!
//! Deletion follows kube-apiserver's `BeforeDelete` and `Store.Delete`: a kind whose strategy
//! gives a grace period (Pods bound to a node) is only marked (`deletionTimestamp` = now + grace,
//! `deletionGracePeriodSeconds`) and kept; a later delete may only shorten that period, and one
//! with a grace period of 0 removes it. An object with `metadata.finalizers` is only marked too,
//! and goes when an update removes its last finalizer (its grace period being 0).
//!
//! The HTTP layer (`router`) and the controllers inside the server both call these.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::apply::{self as field_manager, Tracking};
use super::auth::graph::NodeGraph;
use super::auth::{admission, authorize, authorize_node_read, User, Verb};
use super::kinds::NAMESPACES;
use super::meta;
use super::propagation;
use super::query::{self, FieldValidation, Filter, ListOpts, Query, ReadAt, WriteOpts};
use super::resources::Resource;
use super::status::ApiError;
use super::store::{object_rv, ObjectStore, StoreError, Watch, WatchFrom};
use super::strategy::{Prepare, Prepared};
use crate::core::patch::{self, PatchError};
use crate::core::validation::{FieldError, Policy};

/// The shared state of the verbs.
pub struct Api {
    pub store: Arc<dyn ObjectStore>,
    /// What pod specs may hold (`--allow-privileged`, `--allow-host-path`).
    pub policy: Policy,
    /// The client of the nodes' APIs (`proxy`), set once the server has its CA.
    pub kubelet: std::sync::OnceLock<Arc<super::proxy::KubeletClient>>,
    /// The Node authorizer's index of what the bound pods use.
    pub graph: Arc<NodeGraph>,
    /// The ServiceAccount token issuer and authenticator, set once the server has its key.
    pub service_accounts: std::sync::OnceLock<Arc<super::auth::serviceaccount::Issuer>>,
}

/// What a successful write returns.
#[derive(Debug)]
pub struct Written {
    pub object: Arc<Value>,
    pub warnings: Vec<String>,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Arc<Value>>,
    /// The resourceVersion the page was read at.
    pub rv: u64,
    /// Where the next page starts (`metadata.continue`), when there is one.
    pub continue_token: Option<String>,
    /// How many items the next pages hold (`metadata.remainingItemCount`; lists without a
    /// selector only).
    pub remaining: Option<u64>,
}

/// Which part of an object a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

impl Part {
    /// The subresource named in authorization.
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Part::Main => None,
            Part::Status => Some("status"),
        }
    }
}

/// The patch formats the API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<PatchType, ApiError> {
        match ct {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            other => Err(ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format {other:?}: accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
            ))),
        }
    }
}

/// The one object a verb addresses: the resource, its namespace (None for cluster-scoped
/// resources) and its name.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    pub r: &'static Resource,
    pub ns: Option<&'a str>,
    pub name: &'a str,
}

impl<'a> ObjectRef<'a> {
    pub fn new(r: &'static Resource, ns: Option<&'a str>, name: &'a str) -> ObjectRef<'a> {
        ObjectRef { r, ns, name }
    }
    fn authorize(&self, user: &User, verb: Verb, part: Part) -> Result<(), ApiError> {
        authorize(
            user,
            verb,
            self.r,
            part.subresource(),
            self.ns,
            Some(self.name),
        )
    }
}

/// `make`, with the object-level rules of `auth::admission` (NodeRestriction) checked on what it
/// makes of the stored object.
pub(super) fn admitted<'a, F>(
    user: &'a User,
    at: ObjectRef<'a>,
    part: Part,
    make: F,
) -> impl Fn(&Value) -> Result<Value, ApiError> + 'a
where
    F: Fn(&Value) -> Result<Value, ApiError> + 'a,
{
    move |old| {
        let new = make(old)?;
        admission::on_write(user, at, part, old, &new)?;
        Ok(new)
    }
}

/// Refuses a write whose `metadata.uid` names another object than the stored one (a uid
/// precondition, as kube-apiserver checks it).
fn check_uid(r: &Resource, old: &Value, candidate: &Value) -> Result<(), ApiError> {
    match meta::meta_str(candidate, "uid").filter(|u| !u.is_empty()) {
        Some(uid) if Some(uid) != meta::meta_str(old, "uid") => Err(uid_mismatch(r, old, uid)),
        _ => Ok(()),
    }
}

fn uid_mismatch(r: &Resource, old: &Value, wanted: &str) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {wanted}, UID in object meta: {}",
            if r.group.is_empty() { r.plural.to_string() } else { format!("{}.{}", r.plural, r.group) },
            meta::meta_str(old, "name").unwrap_or(""),
            meta::meta_str(old, "uid").unwrap_or("")
        ),
    )
}

pub fn store_error(r: &Resource, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists { name, .. } => {
            ApiError::already_exists(r.group, r.plural, &name)
        }
        StoreError::NotFound { name, .. } => ApiError::not_found(r.group, r.plural, &name),
        StoreError::Conflict { name, .. } => ApiError::conflict(r.group, r.plural, &name),
        StoreError::Expired { requested, oldest } => {
            ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// Applies a patch document of `ty` to `old`. A patch that does not name a resourceVersion
/// applies to whatever is current (retried on a concurrent write); one that does is a
/// precondition, so it stays in the result.
fn apply_patch(r: &Resource, ty: PatchType, doc: &Value, old: &Value) -> Result<Value, ApiError> {
    let res = match ty {
        PatchType::Json => patch::json_patch(old, doc),
        PatchType::Merge => patch::merge_patch(old, doc),
        PatchType::Strategic => patch::strategic_merge_patch(old, doc, r.strategy.patch_schema()),
    };
    let mut patched = res.map_err(|e| match e {
        PatchError::Invalid(_) => ApiError::bad_request(e.to_string()),
        PatchError::Conflict(_) => ApiError::new(422, "Invalid", e.to_string()),
    })?;
    let explicit = doc.pointer("/metadata/resourceVersion").is_some()
        || doc.as_array().is_some_and(|ops| {
            ops.iter().any(|op| {
                op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
            })
        });
    if !explicit {
        if let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
    }
    Ok(patched)
}

impl Api {
    pub fn new(store: Arc<dyn ObjectStore>, policy: Policy) -> Api {
        Api {
            store,
            policy,
            kubelet: std::sync::OnceLock::new(),
            graph: Arc::default(),
            service_accounts: std::sync::OnceLock::new(),
        }
    }

    async fn namespace_exists(&self, ns: &str) -> Result<bool, ApiError> {
        self.store
            .get(&NAMESPACES.key(), "", ns)
            .await
            .map(|o| o.is_some())
            .map_err(|e| store_error(&NAMESPACES, e))
    }

    /// Creates an object (POST). `ns` is the namespace of the URL (None for cluster-scoped).
    pub async fn create(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        obj: Value,
        opts: WriteOpts,
    ) -> Result<Written, ApiError> {
        let tracking = Tracking::update(user, &opts);
        self.create_tracked(user, r, ns, obj, opts, &tracking).await
    }

    /// A create whose managedFields are kept as `tracking` says.
    pub(super) async fn create_tracked(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        mut obj: Value,
        opts: WriteOpts,
        tracking: &Tracking,
    ) -> Result<Written, ApiError> {
        authorize(user, Verb::Create, r, None, ns, None)?;
        let strategy = r.strategy;
        if let Some(review) = strategy.review() {
            let object = review.answer(self, user, obj).await?;
            return Ok(Written {
                object: Arc::new(object),
                warnings: Vec::new(),
            });
        }
        let name = meta::before_create(r, ns, &mut obj)?;
        admission::on_create(user, r, &name, &mut obj)?;
        if let Some(ns) = ns {
            if !self.namespace_exists(ns).await? {
                return Err(ApiError::not_found("", "namespaces", ns));
            }
            // the ServiceAccount admission plugin (the token volume, imagePullSecrets)
            if std::ptr::eq(r, &super::kinds::PODS) {
                super::kinds::serviceaccount::admit_new_pod(self, ns, &mut obj).await?;
            }
        }
        if let Some(status) = strategy.initial_status() {
            obj["status"] = status;
        }
        let sent = obj.pointer("/metadata/managedFields").cloned();
        let Prepared {
            mut object,
            warnings,
        } = strategy.prepare(
            &obj,
            Prepare {
                resource: r,
                old: None,
                validation: opts.validation,
                policy: Some(self.policy),
            },
        )?;
        field_manager::track(r, Part::Main, None, &mut object, sent, tracking);
        if opts.dry_run {
            return Ok(Written {
                object: Arc::new(object),
                warnings,
            });
        }
        let object = self
            .store
            .create(&r.key(), ns.unwrap_or(""), &name, object)
            .await
            .map_err(|e| store_error(r, e))?;
        Ok(Written { object, warnings })
    }

    /// The stored object, without authorization (inside a verb or subresource that authorized).
    pub(super) async fn fetch(&self, at: ObjectRef<'_>) -> Result<Arc<Value>, ApiError> {
        let r = at.r;
        self.store
            .get(&r.key(), at.ns.unwrap_or(""), at.name)
            .await
            .map_err(|e| store_error(r, e))?
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, at.name))
    }

    pub async fn get(&self, user: &User, at: ObjectRef<'_>) -> Result<Arc<Value>, ApiError> {
        self.get_part(user, at, Part::Main).await
    }

    /// GET of the object or of its status subresource (the same object).
    pub async fn get_part(
        &self,
        user: &User,
        at: ObjectRef<'_>,
        part: Part,
    ) -> Result<Arc<Value>, ApiError> {
        at.authorize(user, Verb::Get, part)?;
        authorize_node_read(&self.graph, &*self.store, user, at.r, at.ns, at.name).await?;
        let obj = self.fetch(at).await;
        admission::on_read(user, at, obj.as_deref().ok())?;
        obj
    }

    /// Replaces `part` of an object with `obj` (PUT).
    pub async fn update(
        &self,
        user: &User,
        at: ObjectRef<'_>,
        part: Part,
        obj: Value,
        opts: WriteOpts,
    ) -> Result<Written, ApiError> {
        at.authorize(user, Verb::Update, part)?;
        let tracking = Tracking::update(user, &opts);
        self.write_tracked(
            at,
            part,
            opts,
            &tracking,
            admitted(user, at, part, |_| Ok(obj.clone())),
        )
        .await
    }

    /// Replaces `part` of an object with what `make` derives from the current object; retried
    /// on a concurrent write unless the candidate names a resourceVersion (a precondition).
    pub async fn update_with<F>(
        &self,
        user: &User,
        at: ObjectRef<'_>,
        part: Part,
        opts: WriteOpts,
        make: F,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        at.authorize(user, Verb::Update, part)?;
        let tracking = Tracking::update(user, &opts);
        self.write_tracked(at, part, opts, &tracking, admitted(user, at, part, make))
            .await
    }

    /// `update_with` of the main object for a subresource that authorized the request itself
    /// (`scale`, authorized as `replicasets/scale` as kube-apiserver attributes it, so that a
    /// user allowed to scale need not be allowed to update the whole object).
    pub(super) async fn update_preauthorized<F>(
        &self,
        user: &User,
        at: ObjectRef<'_>,
        opts: WriteOpts,
        make: F,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let tracking = Tracking::update(user, &opts);
        self.write_tracked(
            at,
            Part::Main,
            opts,
            &tracking,
            admitted(user, at, Part::Main, make),
        )
        .await
    }

    /// Applies a patch document (PATCH).
    pub async fn patch(
        &self,
        user: &User,
        at: ObjectRef<'_>,
        part: Part,
        ty: PatchType,
        doc: &Value,
        opts: WriteOpts,
    ) -> Result<Written, ApiError> {
        at.authorize(user, Verb::Patch, part)?;
        let tracking = Tracking::update(user, &opts);
        let make = |old: &Value| apply_patch(at.r, ty, doc, old);
        self.write_tracked(at, part, opts, &tracking, admitted(user, at, part, make))
            .await
    }

    /// The write of an authorized update or patch, its managedFields kept as `tracking` says.
    pub(super) async fn write_tracked<F>(
        &self,
        at: ObjectRef<'_>,
        part: Part,
        opts: WriteOpts,
        tracking: &Tracking,
        make: F,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let ObjectRef { r, ns, name } = at;
        let key = r.key();
        let ns_key = ns.unwrap_or("");
        for _ in 0..16 {
            let old = self.fetch(at).await?;
            let old_rv = object_rv(&old);
            let candidate = make(&old)?;
            check_uid(r, &old, &candidate)?;
            let precondition = candidate
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {s:?}"))
                    })
                })
                .transpose()?;
            if precondition.is_some_and(|p| p != old_rv) {
                return Err(ApiError::conflict(r.group, r.plural, name));
            }
            let Prepared {
                object: merged,
                warnings,
            } = self.merge_write(r, part, &old, candidate, opts.validation, tracking)?;
            if merged == *old || opts.dry_run {
                let object = if merged == *old {
                    old
                } else {
                    Arc::new(merged)
                };
                return Ok(Written { object, warnings });
            }
            if deletes_on_update(&old, &merged) {
                match self.remove(at, old_rv).await {
                    Ok(object) => return Ok(Written { object, warnings }),
                    Err(e) if e.code == 409 && precondition.is_none() => continue,
                    Err(e) => return Err(e),
                }
            }
            match self
                .store
                .update(&key, ns_key, name, merged, Some(old_rv))
                .await
            {
                Ok(object) => return Ok(Written { object, warnings }),
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(store_error(r, e)),
            }
        }
        Err(ApiError::conflict(r.group, r.plural, name))
    }

    /// The object a write of `candidate` to `part` of `old` stores: server-owned metadata kept,
    /// the strategy's status fields taken from the write that owns them, generation bumped when
    /// the strategy's generation fields change.
    fn merge_write(
        &self,
        r: &'static Resource,
        part: Part,
        old: &Value,
        mut candidate: Value,
        validation: FieldValidation,
        tracking: &Tracking,
    ) -> Result<Prepared, ApiError> {
        let strategy = r.strategy;
        meta::before_update(r, old, &mut candidate)?;
        let sent = candidate.pointer("/metadata/managedFields").cloned();
        if part == Part::Main && old.pointer("/metadata/deletionTimestamp").is_some() {
            let before = finalizers(old);
            let added: Vec<&str> = finalizers(&candidate)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    r.kind,
                    meta::meta_str(old, "name").unwrap_or(""),
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        &format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
                    )],
                ));
            }
        }
        let mut merged = match part {
            Part::Status => {
                let mut m = old.clone();
                for field in strategy.status_fields() {
                    meta::copy_field(&mut m, &candidate, field);
                }
                m
            }
            Part::Main => {
                let mut m = candidate;
                if r.has_status() {
                    for field in strategy.status_fields() {
                        meta::copy_field(&mut m, old, field);
                    }
                }
                meta::keep_server_fields(&mut m, old)?;
                m
            }
        };
        if let Some(m) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(object_rv(old).to_string()));
        }
        let mut prepared = strategy.prepare(
            &merged,
            Prepare {
                resource: r,
                old: Some(old),
                validation,
                policy: (part == Part::Main).then_some(self.policy),
            },
        )?;
        let changed = |field: &&str| prepared.object.get(*field) != old.get(*field);
        if part == Part::Main && strategy.generation_fields().iter().any(changed) {
            let gen = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            prepared.object["metadata"]["generation"] = json!(gen + 1);
        }
        field_manager::track(r, part, Some(old), &mut prepared.object, sent, tracking);
        Ok(prepared)
    }
}

mod delete;
mod list;
#[cfg(test)]
mod tests;

pub(super) use delete::finalizers;
use delete::*;
pub use delete::{DeleteOptions, Preconditions, Propagation};
