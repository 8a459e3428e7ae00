//! Deletion (see the module): DeleteOptions, graceful marks, finalizers, eviction, deletecollection.
use super::*;

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
/// (`crate::server::propagation`).
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
pub(super) enum Deletion {
    /// Remove it from the store.
    Now,
    /// Keep it marked (this object, its deletion timestamp and grace period written).
    Mark(Value),
    /// Its deletion is pending already and this delete changes nothing.
    Pending,
}

/// The object's finalizers.
pub(in crate::server) fn finalizers(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub(super) fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `obj` marked for deletion at `at` with grace period `grace` (and a generation, if it has one,
/// bumped).
pub(super) fn marked(obj: &Value, at: DateTime<Utc>, grace: i64, bump_generation: bool) -> Value {
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
pub(super) fn plan_deletion(
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

/// An update that removes the last finalizer of an object marked for deletion with no grace
/// period left deletes it (`shouldDeleteDuringUpdate`).
pub(super) fn deletes_on_update(old: &Value, new: &Value) -> bool {
    !finalizers(old).is_empty()
        && finalizers(new).is_empty()
        && old.pointer("/metadata/deletionTimestamp").is_some()
        && old
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

impl Api {
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
    pub(super) async fn delete_admitted(
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

    pub(super) async fn delete_authorized(
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
    pub(super) async fn remove(&self, at: ObjectRef<'_>, rv: u64) -> Result<Arc<Value>, ApiError> {
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
