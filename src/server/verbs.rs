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

/// The preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Debug, Default, Clone)]
pub struct Preconditions {
    pub resource_version: Option<u64>,
    pub uid: Option<String>,
}

/// What happens to the dependents of a deleted object (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// `DeleteOptions`. The propagation policy becomes the garbage collector's finalizer
/// (`super::propagation`).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    /// The grace period asked for (`gracePeriodSeconds`); None: the kind's default.
    pub grace_period_seconds: Option<i64>,
    pub propagation: Option<Propagation>,
    pub preconditions: Preconditions,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// A delete that waits for nothing (`gracePeriodSeconds: 0`), with a uid precondition.
    pub fn now_if_uid(uid: &str) -> DeleteOptions {
        DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            },
            ..Default::default()
        }
    }

    /// The options of a DELETE request: its body (a `DeleteOptions` object) when it has one, else
    /// its query parameters (`gracePeriodSeconds`, `propagationPolicy`, `orphanDependents`), as
    /// kube-apiserver reads them; `dryRun=All` in either.
    pub fn from_request(query: &Query, body: Option<&Value>) -> Result<DeleteOptions, ApiError> {
        let mut o = DeleteOptions {
            dry_run: WriteOpts::from_query(query)?.dry_run,
            ..Default::default()
        };
        let (grace, policy, orphan) = match body {
            Some(b) => {
                o.dry_run |= b
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|v| v == "All"));
                if let Some(rv) = b
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                {
                    o.preconditions.resource_version = Some(rv.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })?);
                }
                o.preconditions.uid = b
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let grace = match b.get("gracePeriodSeconds") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_i64().ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "gracePeriodSeconds must be an integer, not {v}"
                        ))
                    })?),
                };
                let policy = b.get("propagationPolicy").and_then(Value::as_str);
                let orphan = b.get("orphanDependents").and_then(Value::as_bool);
                (grace, policy.map(str::to_string), orphan)
            }
            None => {
                let grace = query
                    .get("gracePeriodSeconds")
                    .filter(|g| !g.is_empty())
                    .map(|g| {
                        g.parse::<i64>().map_err(|_| {
                            ApiError::bad_request(format!(
                                "gracePeriodSeconds must be an integer, not {g:?}"
                            ))
                        })
                    })
                    .transpose()?;
                let policy = query.get("propagationPolicy").filter(|p| !p.is_empty());
                let orphan = query.get("orphanDependents").map(|v| v == "true");
                (grace, policy.map(str::to_string), orphan)
            }
        };
        o.grace_period_seconds = grace;
        o.propagation = match policy.as_deref() {
            None => None,
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(ApiError::invalid(
                    "DeleteOptions",
                    "",
                    &[FieldError::not_supported(
                        "propagationPolicy",
                        other,
                        &["Foreground", "Background", "Orphan"],
                    )],
                ))
            }
        };
        if let Some(orphan) = orphan {
            if o.propagation.is_some() {
                return Err(ApiError::invalid(
                    "DeleteOptions",
                    "",
                    &[FieldError::invalid(
                        "propagationPolicy",
                        policy.as_deref().unwrap_or(""),
                        "orphanDependents and deletionPropagation cannot be both set",
                    )],
                ));
            }
            o.propagation = Some(if orphan {
                Propagation::Orphan
            } else {
                Propagation::Background
            });
        }
        Ok(o)
    }
}

/// What a delete does to the stored object.
#[derive(Debug, Clone, PartialEq)]
enum Deletion {
    /// Remove it from the store.
    Now,
    /// Keep it marked (this object, its deletion timestamp and grace period written).
    Mark(Value),
    /// Its deletion is pending already and this delete changes nothing.
    Pending,
}

/// The object's finalizers.
pub(super) fn finalizers(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `obj` marked for deletion at `at` with grace period `grace` (and a generation, if it has one,
/// bumped).
fn marked(obj: &Value, at: DateTime<Utc>, grace: i64, bump_generation: bool) -> Value {
    let mut m = obj.clone();
    m["metadata"]["deletionTimestamp"] = json!(timestamp(at));
    m["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    if bump_generation {
        if let Some(g) = m.pointer("/metadata/generation").and_then(Value::as_i64) {
            m["metadata"]["generation"] = json!(g + 1);
        }
    }
    m
}

/// kube-apiserver's `BeforeDelete` and the finalizer handling of `Store.Delete`: what a delete
/// with `opts` does to `cur` (a `grace` of None: the kind is not deleted gracefully) at `now`.
fn plan_deletion(
    cur: &Value,
    grace: Option<i64>,
    requested: Option<i64>,
    now: DateTime<Utc>,
) -> Deletion {
    let pending_finalizers = !finalizers(cur).is_empty();
    let deleting_since = cur
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let or_finalizers = |d: Deletion| match (d, pending_finalizers) {
        (Deletion::Now, true) if deleting_since.is_some() => Deletion::Pending,
        (Deletion::Now, true) => Deletion::Mark(marked(cur, now, 0, false)),
        (d, _) => d,
    };
    if let Some(at) = deleting_since {
        let current = cur
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if grace.is_none() || current == 0 {
            return or_finalizers(Deletion::Now);
        }
        // a delete under way may only be shortened
        let Some(shorter) = requested.map(|r| r.max(0)).filter(|r| *r < current) else {
            return Deletion::Pending;
        };
        if shorter == 0 && !pending_finalizers {
            return Deletion::Now;
        }
        let at = at - chrono::Duration::seconds(current) + chrono::Duration::seconds(shorter);
        return Deletion::Mark(marked(cur, at, shorter, false));
    }
    match grace {
        Some(g) if g > 0 => {
            Deletion::Mark(marked(cur, now + chrono::Duration::seconds(g), g, true))
        }
        _ => or_finalizers(Deletion::Now),
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

/// An update that removes the last finalizer of an object marked for deletion with no grace
/// period left deletes it (`shouldDeleteDuringUpdate`).
fn deletes_on_update(old: &Value, new: &Value) -> bool {
    !finalizers(old).is_empty()
        && finalizers(new).is_empty()
        && old.pointer("/metadata/deletionTimestamp").is_some()
        && old
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
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

    /// The objects `filter` selects and the resourceVersion of the list.
    pub async fn list(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        filter: &Filter,
    ) -> Result<(Vec<Arc<Value>>, u64), ApiError> {
        authorize(user, Verb::List, r, None, ns, None)?;
        let (items, rv) = self
            .store
            .list(&r.key(), ns)
            .await
            .map_err(|e| store_error(r, e))?;
        let selected = items.into_iter().filter(|o| filter.matches(o)).collect();
        Ok((selected, rv))
    }

    /// One page of a list (`limit`, `continue`, `resourceVersionMatch`): the items `filter`
    /// selects after the continue token's position, read from the current state or from the
    /// snapshot at the token's (or `Exact`) resourceVersion, as kube-apiserver reads etcd.
    pub async fn list_page(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        filter: &Filter,
        opts: &ListOpts,
    ) -> Result<Page, ApiError> {
        authorize(user, Verb::List, r, None, ns, None)?;
        let key = r.key();
        let (items, rv) = match opts.at {
            ReadAt::Latest { min } => {
                query::fresh_enough(&*self.store, min).await?;
                self.store.list(&key, ns).await
            }
            ReadAt::Exact(rv) => {
                query::fresh_enough(&*self.store, rv).await?;
                self.store
                    .list_at(&key, ns, rv)
                    .await
                    .map(|items| (items, rv))
            }
        }
        .map_err(|e| match (e, &opts.after) {
            (StoreError::Expired { .. }, Some((after_ns, after_name))) => {
                query::continue_expired(after_ns, after_name)
            }
            // kube-apiserver's words for an exact list etcd compacted past
            (StoreError::Expired { .. }, None) => {
                ApiError::gone("The resourceVersion for the provided list is too old.")
            }
            (e, _) => store_error(r, e),
        })?;
        let position = |o: &Value| {
            (
                meta::meta_str(o, "namespace").unwrap_or("").to_string(),
                meta::meta_str(o, "name").unwrap_or("").to_string(),
            )
        };
        let mut rest = items
            .into_iter()
            .filter(|o| opts.after.as_ref().is_none_or(|after| position(o) > *after))
            .filter(|o| filter.matches(o))
            .peekable();
        let page: Vec<Arc<Value>> = match opts.limit {
            Some(limit) => rest.by_ref().take(limit).collect(),
            None => rest.by_ref().collect(),
        };
        let more = rest.peek().is_some();
        let continue_token = match (more, page.last()) {
            (true, Some(last)) => {
                let (ns, name) = position(last);
                Some(query::encode_continue(rv as i64, &ns, &name))
            }
            _ => None,
        };
        // counted only without a selector, as kube-apiserver does
        let remaining = (more && filter.is_empty()).then(|| rest.count() as u64);
        Ok(Page {
            items: page,
            rv,
            continue_token,
            remaining,
        })
    }

    /// Starts a watch of `r` (the caller renders and filters its events).
    pub async fn watch(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        from: WatchFrom,
    ) -> Result<Watch, ApiError> {
        authorize(user, Verb::Watch, r, None, ns, None)?;
        self.store
            .watch(Some(&r.key()), ns, from)
            .await
            .map_err(|e| store_error(r, e))
    }

    /// One watch over several resources, in the order of their changes (for controllers).
    pub async fn watch_all(
        &self,
        user: &User,
        resources: &[&'static Resource],
    ) -> Result<Watch, ApiError> {
        for r in resources {
            authorize(user, Verb::Watch, r, None, None, None)?;
        }
        self.store
            .watch(None, None, WatchFrom::Current { initial: false })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))
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

    /// Deletes an object, gracefully where its kind says so (see the module), and runs the
    /// strategy's cleanup once it is gone. Returns the object as it was removed, or as it is
    /// kept marked.
    pub async fn delete(
        &self,
        user: &User,
        at: ObjectRef<'_>,
        opts: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        at.authorize(user, Verb::Delete, Part::Main)?;
        self.delete_admitted(user, at, opts).await
    }

    /// A delete the caller authorized, once admission allows it (NodeRestriction: a node deletes
    /// only the pods bound to it).
    async fn delete_admitted(
        &self,
        user: &User,
        at: ObjectRef<'_>,
        opts: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let cur = self.fetch(at).await?;
        admission::on_delete(user, at, &cur)?;
        self.delete_authorized(at, opts).await
    }

    /// An eviction of a pod (`pods/NAME/eviction`): authorized as a create of the subresource,
    /// then the delete its options ask for (no disruption budget is served to refuse it).
    pub async fn evict(
        &self,
        user: &User,
        at: ObjectRef<'_>,
        opts: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        authorize(
            user,
            Verb::Create,
            at.r,
            Some("eviction"),
            at.ns,
            Some(at.name),
        )?;
        self.delete_admitted(user, at, opts).await
    }

    async fn delete_authorized(
        &self,
        at: ObjectRef<'_>,
        opts: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let r = at.r;
        let pre = &opts.preconditions;
        let requested = opts.grace_period_seconds.map(|g| if g < 0 { 1 } else { g });
        for _ in 0..16 {
            let cur = self.fetch(at).await?;
            if let Some(uid) = &pre.uid {
                if meta::meta_str(&cur, "uid") != Some(uid) {
                    return Err(uid_mismatch(r, &cur, uid));
                }
            }
            let rv = object_rv(&cur);
            if pre.resource_version.is_some_and(|p| p != rv) {
                return Err(ApiError::conflict(r.group, r.plural, at.name));
            }
            // the propagation policy, as the garbage collector's finalizers
            let gc = propagation::with_policy_finalizers(&cur, opts.propagation).map(Arc::new);
            let cur = gc.clone().unwrap_or(cur);
            let grace = r.strategy.grace_period(&cur, requested);
            let plan = match plan_deletion(&cur, grace, requested, Utc::now()) {
                Deletion::Pending if gc.is_some() => Deletion::Mark((*cur).clone()),
                plan => plan,
            };
            let result = match plan {
                Deletion::Pending => return Ok(cur),
                Deletion::Mark(obj) if opts.dry_run => return Ok(Arc::new(obj)),
                Deletion::Now if opts.dry_run => return Ok(cur),
                Deletion::Mark(obj) => self
                    .store
                    .update(&r.key(), at.ns.unwrap_or(""), at.name, obj, Some(rv))
                    .await
                    .map_err(|e| store_error(r, e)),
                Deletion::Now => self.remove(at, rv).await,
            };
            match result {
                Err(e)
                    if e.code == 409
                        && e.reason == "Conflict"
                        && pre.resource_version.is_none() =>
                {
                    continue
                }
                other => return other,
            }
        }
        Err(ApiError::conflict(r.group, r.plural, at.name))
    }

    /// Removes the object at resourceVersion `rv` from the store and runs the strategy's cleanup.
    async fn remove(&self, at: ObjectRef<'_>, rv: u64) -> Result<Arc<Value>, ApiError> {
        let r = at.r;
        let deleted = self
            .store
            .delete(&r.key(), at.ns.unwrap_or(""), at.name, Some(rv))
            .await
            .map_err(|e| store_error(r, e))?;
        r.strategy.after_delete(self, &deleted).await?;
        Ok(deleted)
    }

    /// Deletes what `filter` selects; returns the deleted objects and the resourceVersion after.
    pub async fn delete_collection(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        filter: &Filter,
        opts: &DeleteOptions,
    ) -> Result<(Vec<Value>, u64), ApiError> {
        authorize(user, Verb::DeleteCollection, r, None, ns, None)?;
        let (items, _) = self
            .store
            .list(&r.key(), ns)
            .await
            .map_err(|e| store_error(r, e))?;
        let mut deleted = Vec::new();
        for item in items.iter().filter(|o| filter.matches(o)) {
            let (ins, iname) = (
                meta::meta_str(item, "namespace"),
                meta::meta_str(item, "name").unwrap_or(""),
            );
            let at = ObjectRef::new(r, ins, iname);
            match self.delete_authorized(at, opts).await {
                Ok(o) => deleted.push((*o).clone()),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((deleted, self.store.current_rv()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::kinds::{DAEMONSETS, NODES, PODS};
    use super::super::store::SqliteStore;
    use super::*;

    fn test_api(dir: &tempfile::TempDir) -> Api {
        let store = SqliteStore::open(&dir.path().join("s.db"), 100).unwrap();
        Api::new(Arc::new(store), Policy::default())
    }

    fn admin() -> User {
        User::internal("test")
    }

    #[tokio::test]
    async fn field_validation_modes() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir);
        let with_typo = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "a", "labelz": {"x": "y"}}, "spec": {"foo": 1}});
        let opts = |validation| WriteOpts {
            dry_run: false,
            validation,
            field_manager: None,
        };
        let strict = api
            .create(
                &admin(),
                &NAMESPACES,
                None,
                with_typo.clone(),
                opts(FieldValidation::Strict),
            )
            .await
            .expect_err("strict refuses unknown fields");
        assert_eq!(strict.code, 400);
        assert!(
            strict
                .message
                .contains("unknown field \"metadata.labelz\", unknown field \"spec.foo\""),
            "{}",
            strict.message
        );
        let warned = api
            .create(
                &admin(),
                &NAMESPACES,
                None,
                with_typo.clone(),
                opts(FieldValidation::Warn),
            )
            .await
            .unwrap();
        assert_eq!(
            warned.warnings,
            [
                "unknown field \"metadata.labelz\"",
                "unknown field \"spec.foo\""
            ]
        );
        assert!(
            warned.object["metadata"].get("labelz").is_none(),
            "unknown fields are dropped"
        );
        let mut other = with_typo;
        other["metadata"]["name"] = json!("b");
        let ignored = api
            .create(
                &admin(),
                &NAMESPACES,
                None,
                other,
                opts(FieldValidation::Ignore),
            )
            .await
            .unwrap();
        assert!(ignored.warnings.is_empty());
    }

    fn daemonset(image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}}},
            "status": {"numberReady": 5}})
    }

    #[tokio::test]
    async fn strategies_decide_status_generation_and_cascade() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir);
        let user = admin();
        let ns = json!({"metadata": {"name": "default"}});
        let ns = api
            .create(&user, &NAMESPACES, None, ns, WriteOpts::INTERNAL)
            .await
            .unwrap();
        assert_eq!(ns.object["status"]["phase"], "Active", "initial status");
        assert!(ns.object["metadata"].get("generation").is_none());

        let ds = api
            .create(
                &user,
                &DAEMONSETS,
                Some("default"),
                daemonset("i:1"),
                WriteOpts::INTERNAL,
            )
            .await
            .unwrap();
        assert_eq!(ds.object["metadata"]["generation"], 1);
        assert_eq!(ds.object["status"]["numberReady"], 0, "initial status wins");

        // (part, image, status.numberReady written, generation after, numberReady after)
        let cases = [
            (Part::Main, "i:1", 7, 1, 0),
            (Part::Main, "i:2", 7, 2, 0),
            (Part::Status, "i:3", 7, 2, 7),
            (Part::Main, "i:2", 9, 2, 7),
        ];
        for (i, (part, image, ready, generation, ready_after)) in cases.into_iter().enumerate() {
            let mut obj = daemonset(image);
            obj["status"]["numberReady"] = json!(ready);
            let w = api
                .update(
                    &user,
                    ObjectRef::new(&DAEMONSETS, Some("default"), "d"),
                    part,
                    obj,
                    WriteOpts::INTERNAL,
                )
                .await
                .unwrap();
            assert_eq!(w.object["metadata"]["generation"], generation, "case {i}");
            assert_eq!(w.object["status"]["numberReady"], ready_after, "case {i}");
            let want_image = if part == Part::Status { "i:2" } else { image };
            assert_eq!(
                w.object.pointer("/spec/template/spec/containers/0/image"),
                Some(&json!(want_image)),
                "case {i}"
            );
        }

        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let pod = api
            .create(&user, &PODS, Some("default"), pod, WriteOpts::INTERNAL)
            .await
            .unwrap();
        assert_eq!(pod.object["status"]["phase"], "Pending");
        api.delete(
            &user,
            ObjectRef::new(&NAMESPACES, None, "default"),
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
        for r in [&DAEMONSETS, &PODS] {
            let (items, _) = api
                .list(&user, r, Some("default"), &Filter::default())
                .await
                .unwrap();
            assert!(items.is_empty(), "{} left in a deleted namespace", r.plural);
        }
    }

    #[tokio::test]
    async fn patches_use_the_kinds_merge_keys() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir);
        let user = admin();
        let node = json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}});
        api.create(&user, &NODES, None, node, WriteOpts::INTERNAL)
            .await
            .unwrap();
        let doc = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let cases = [
            (PatchType::Strategic, 2, "False"),
            (PatchType::Merge, 1, "False"),
        ];
        for (ty, n, ready) in cases {
            let w = api
                .patch(
                    &user,
                    ObjectRef::new(&NODES, None, "n"),
                    Part::Status,
                    ty,
                    &doc,
                    WriteOpts::INTERNAL,
                )
                .await
                .unwrap();
            let conds = w.object["status"]["conditions"].as_array().unwrap();
            assert_eq!(conds.len(), n, "{ty:?}");
            assert_eq!(conds[0]["status"], ready, "{ty:?}");
        }
        let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"unschedulable": true}});
        let e = api
            .patch(
                &user,
                ObjectRef::new(&NODES, None, "n"),
                Part::Main,
                PatchType::Merge,
                &stale,
                WriteOpts::INTERNAL,
            )
            .await
            .expect_err("a stale resourceVersion in a patch is a precondition");
        assert_eq!(e.code, 409);
    }

    async fn with_namespace(dir: &tempfile::TempDir) -> Api {
        let api = test_api(dir);
        let ns = json!({"metadata": {"name": "default"}});
        api.create(&admin(), &NAMESPACES, None, ns, WriteOpts::INTERNAL)
            .await
            .unwrap();
        api
    }

    fn deleting(obj: &Value) -> (Option<&str>, Option<i64>) {
        (
            obj.pointer("/metadata/deletionTimestamp")
                .and_then(Value::as_str),
            obj.pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64),
        )
    }

    fn grace(g: i64) -> DeleteOptions {
        DeleteOptions {
            grace_period_seconds: Some(g),
            ..Default::default()
        }
    }

    /// A pod bound to a node is marked, kept, only shortened by a second delete, and removed by
    /// a delete with a grace period of 0 (the agent's, with a uid precondition); an unbound pod
    /// and other kinds go at once.
    #[tokio::test]
    async fn bound_pods_are_deleted_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let api = with_namespace(&dir).await;
        let user = admin();
        let pod = |name: &str, node: &str| {
            json!({"metadata": {"name": name}, "spec": {"nodeName": node,
                "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "i"}]}})
        };
        for p in [pod("bound", "n1"), pod("unbound", "")] {
            api.create(&user, &PODS, Some("default"), p, WriteOpts::INTERNAL)
                .await
                .unwrap();
        }
        let at = |name| ObjectRef::new(&PODS, Some("default"), name);
        let gone = api
            .delete(&user, at("unbound"), &DeleteOptions::default())
            .await
            .unwrap();
        assert_eq!(deleting(&gone).1, None);
        assert_eq!(api.get(&user, at("unbound")).await.unwrap_err().code, 404);

        let t0 = Utc::now();
        let marked = api
            .delete(&user, at("bound"), &DeleteOptions::default())
            .await
            .unwrap();
        let (ts, g) = deleting(&marked);
        assert_eq!(g, Some(30));
        let ts = DateTime::parse_from_rfc3339(ts.unwrap()).unwrap();
        let from_now = (ts.with_timezone(&Utc) - t0).num_seconds();
        assert!((29..=30).contains(&from_now), "{from_now}");
        assert!(
            api.get(&user, at("bound")).await.is_ok(),
            "kept while its node stops it"
        );
        // a longer grace period changes nothing; a shorter one moves the deadline earlier
        let same = api.delete(&user, at("bound"), &grace(60)).await.unwrap();
        assert_eq!(deleting(&same), deleting(&marked));
        let shorter = api.delete(&user, at("bound"), &grace(10)).await.unwrap();
        let (ts2, g2) = deleting(&shorter);
        assert_eq!(g2, Some(10));
        let ts2 = DateTime::parse_from_rfc3339(ts2.unwrap()).unwrap();
        assert_eq!((ts - ts2).num_seconds(), 20);
        // updates keep the mark
        let mut edited = (*api.get(&user, at("bound")).await.unwrap()).clone();
        edited["metadata"]["labels"] = json!({"x": "y"});
        edited["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("deletionTimestamp");
        let w = api
            .update(&user, at("bound"), Part::Main, edited, WriteOpts::INTERNAL)
            .await
            .unwrap();
        assert_eq!(deleting(&w.object), deleting(&shorter));
        // the agent's final delete: another uid is refused, its own removes the pod
        let e = api
            .delete(&user, at("bound"), &DeleteOptions::now_if_uid("other"))
            .await
            .unwrap_err();
        assert_eq!(e.code, 409);
        assert!(
            e.message.contains("Precondition failed: UID"),
            "{}",
            e.message
        );
        let uid = meta::meta_str(&marked, "uid").unwrap().to_string();
        api.delete(&user, at("bound"), &DeleteOptions::now_if_uid(&uid))
            .await
            .unwrap();
        assert_eq!(api.get(&user, at("bound")).await.unwrap_err().code, 404);
    }

    /// An object with finalizers is only marked; the update that removes the last one deletes
    /// it, and no finalizer may be added while it is being deleted.
    #[tokio::test]
    async fn finalizers_hold_a_deletion_until_the_last_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let api = with_namespace(&dir).await;
        let user = admin();
        let ds = |finalizers: Value| {
            let mut d = daemonset("i:1");
            d["metadata"]["finalizers"] = finalizers;
            d
        };
        api.create(
            &user,
            &DAEMONSETS,
            Some("default"),
            ds(json!(["a/x", "a/y"])),
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap();
        let at = ObjectRef::new(&DAEMONSETS, Some("default"), "d");
        let marked = api
            .delete(&user, at, &DeleteOptions::default())
            .await
            .unwrap();
        assert_eq!(deleting(&marked).1, Some(0));
        assert!(deleting(&marked).0.is_some());
        let again = api
            .delete(&user, at, &DeleteOptions::default())
            .await
            .unwrap();
        assert_eq!(again, marked, "a second delete changes nothing");
        let e = api
            .update(
                &user,
                at,
                Part::Main,
                ds(json!(["a/x", "a/y", "a/z"])),
                WriteOpts::INTERNAL,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("no new finalizers"), "{}", e.message);
        api.update(
            &user,
            at,
            Part::Main,
            ds(json!(["a/y"])),
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap();
        assert!(api.get(&user, at).await.is_ok(), "one finalizer left");
        api.update(&user, at, Part::Main, ds(json!([])), WriteOpts::INTERNAL)
            .await
            .unwrap();
        assert_eq!(api.get(&user, at).await.unwrap_err().code, 404);
    }

    #[tokio::test]
    async fn writes_naming_another_uid_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let api = with_namespace(&dir).await;
        let user = admin();
        api.create(
            &user,
            &DAEMONSETS,
            Some("default"),
            daemonset("i:1"),
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap();
        let at = ObjectRef::new(&DAEMONSETS, Some("default"), "d");
        let doc = json!({"metadata": {"uid": "not-its-uid", "labels": {"a": "b"}}});
        let e = api
            .patch(
                &user,
                at,
                Part::Main,
                PatchType::Merge,
                &doc,
                WriteOpts::INTERNAL,
            )
            .await
            .unwrap_err();
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        let uid = api.get(&user, at).await.unwrap()["metadata"]["uid"].clone();
        let doc = json!({"metadata": {"uid": uid, "labels": {"a": "b"}}});
        api.patch(
            &user,
            at,
            Part::Main,
            PatchType::Merge,
            &doc,
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap();
    }

    #[test]
    fn delete_options_come_from_the_body_or_the_query() {
        let q = |s: &str| Query::parse(Some(s));
        let o =
            DeleteOptions::from_request(&q("gracePeriodSeconds=5&propagationPolicy=Orphan"), None)
                .unwrap();
        assert_eq!(
            (o.grace_period_seconds, o.propagation),
            (Some(5), Some(Propagation::Orphan))
        );
        let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
            "propagationPolicy": "Background", "preconditions": {"uid": "u", "resourceVersion": "7"},
            "dryRun": ["All"]});
        let o = DeleteOptions::from_request(&q("gracePeriodSeconds=9"), Some(&body)).unwrap();
        assert_eq!(o.grace_period_seconds, Some(0), "the body wins");
        assert_eq!(o.propagation, Some(Propagation::Background));
        assert_eq!(o.preconditions.uid.as_deref(), Some("u"));
        assert_eq!(o.preconditions.resource_version, Some(7));
        assert!(o.dry_run);
        let o = DeleteOptions::from_request(&q("orphanDependents=true"), None).unwrap();
        assert_eq!(o.propagation, Some(Propagation::Orphan));
        for bad in [
            "propagationPolicy=Sometimes",
            "gracePeriodSeconds=soon",
            "orphanDependents=false&propagationPolicy=Foreground",
        ] {
            assert!(DeleteOptions::from_request(&q(bad), None).is_err(), "{bad}");
        }
    }
}
