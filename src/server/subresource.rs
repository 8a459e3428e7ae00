//! Subresources (`.../NAME/status`, `scale`, a Pod's `binding` and `eviction`; a Pod's `log` is
//! in `proxy`): each is a [`Subresource`] a resource lists, served by its own [`SubresourceRest`],
//! so a new one plugs in without touching the router.
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use http::{Method, Response};
use serde_json::{json, Value};

use super::apply;
use super::auth::{authorize, User, Verb};
use super::body::{json_response, Body};
use super::query::WriteOpts;
use super::router::{self, RestRequest};
use super::status::ApiError;
use super::store::{object_rv, StoreError};
use super::table::format_selector;
use super::verbs::{store_error, Api, DeleteOptions, ObjectRef, Part, PatchType};
use crate::core::patch;

/// One subresource of a resource, as discovery lists it and the router serves it.
pub struct Subresource {
    /// The path segment after the object's name (`status`).
    pub name: &'static str,
    /// The kind of what it serves; None: the parent's kind.
    pub kind: Option<&'static str>,
    /// The group and version of `kind`, when not the parent's (discovery tells them: kubectl
    /// drain looks for `pods/eviction` of kind Eviction in policy/v1, kubectl scale for an
    /// `autoscaling/v1` Scale).
    pub group_version: Option<(&'static str, &'static str)>,
    pub verbs: &'static [&'static str],
    pub rest: &'static dyn SubresourceRest,
}

/// The handler of a subresource: gets the request for `NAME/SUB` of the object `at` and
/// answers it.
#[async_trait]
pub trait SubresourceRest: Send + Sync {
    async fn serve(
        &self,
        api: Arc<Api>,
        at: ObjectRef<'_>,
        req: RestRequest,
    ) -> Result<Response<Body>, ApiError>;
}

/// `status`: the object as GET returns it; PUT and PATCH change only what the kind's strategy
/// calls its status fields (kube-apiserver's StatusREST).
pub static STATUS: Subresource = Subresource {
    name: "status",
    kind: None,
    group_version: None,
    verbs: &["get", "patch", "update"],
    rest: &StatusRest,
};

struct StatusRest;

#[async_trait]
impl SubresourceRest for StatusRest {
    async fn serve(
        &self,
        api: Arc<Api>,
        at: ObjectRef<'_>,
        req: RestRequest,
    ) -> Result<Response<Body>, ApiError> {
        match req.method {
            Method::GET => router::get_object(&api, at, Part::Status, req).await,
            Method::PUT => router::update_object(&api, at, Part::Status, req).await,
            Method::PATCH => router::patch_object(&api, at, Part::Status, req).await,
            ref other => Err(ApiError::method_not_allowed(other.as_str())),
        }
    }
}

/// `scale`: an `autoscaling/v1` Scale of an object with `spec.replicas` (kube-apiserver's
/// ScaleREST): GET reads it, PUT and PATCH (of the Scale, not the object) change only
/// `spec.replicas`; a `metadata.resourceVersion` in the Scale is a precondition.
pub static SCALE: Subresource = Subresource {
    name: "scale",
    kind: Some("Scale"),
    group_version: Some(("autoscaling", "v1")),
    verbs: &["get", "patch", "update"],
    rest: &ScaleRest,
};

struct ScaleRest;

/// The Scale of `obj`.
fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": format_selector(obj.pointer("/spec/selector")),
        },
    })
}

#[async_trait]
impl SubresourceRest for ScaleRest {
    async fn serve(
        &self,
        api: Arc<Api>,
        at: ObjectRef<'_>,
        req: RestRequest,
    ) -> Result<Response<Body>, ApiError> {
        let user = req.user.clone();
        // authorized as the subresource (`replicasets/scale`), as kube-apiserver attributes it:
        // the object itself is then read and written without asking again
        let verb = match req.method {
            Method::GET => Verb::Get,
            Method::PUT => Verb::Update,
            Method::PATCH => Verb::Patch,
            ref other => return Err(ApiError::method_not_allowed(other.as_str())),
        };
        authorize(&user, verb, at.r, Some("scale"), at.ns, Some(at.name))?;
        let scale = match req.method {
            Method::GET => {
                let obj = api.fetch(at).await?;
                return Ok(json_response(200, &scale_of(&obj)));
            }
            Method::PUT => {
                let opts = apply::write_opts(&req, "UpdateOptions")?;
                (req.object().await?, opts)
            }
            Method::PATCH => {
                let opts = apply::write_opts(&req, "PatchOptions")?;
                let ty = PatchType::from_content_type(
                    req.content_type.split(';').next().unwrap_or("").trim(),
                )?;
                let body = req.bytes().await?;
                let doc: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                let current = scale_of(&*api.fetch(at).await?);
                let patched = match ty {
                    PatchType::Json => patch::json_patch(&current, &doc),
                    PatchType::Merge => patch::merge_patch(&current, &doc),
                    PatchType::Strategic => {
                        patch::strategic_merge_patch(&current, &doc, &patch::UNKNOWN)
                    }
                }
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
                let mut patched = patched;
                if doc.pointer("/metadata/resourceVersion").is_none() {
                    patched["metadata"]["resourceVersion"] = Value::Null;
                }
                (patched, opts)
            }
            ref other => return Err(ApiError::method_not_allowed(other.as_str())),
        };
        let (scale, opts) = scale;
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let precondition = scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let w = api
            .update_preauthorized(&user, at, opts, |old| {
                let mut obj = old.clone();
                obj["spec"]["replicas"] = json!(replicas);
                match &precondition {
                    Some(rv) => obj["metadata"]["resourceVersion"] = json!(rv),
                    None => {
                        if let Some(m) = obj["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                    }
                }
                Ok(obj)
            })
            .await?;
        Ok(json_response(200, &scale_of(&w.object)))
    }
}

/// `binding` of a Pod (kube-apiserver's BindingREST): a POST of a v1 `Binding` whose target is a
/// Node sets the pending pod's `spec.nodeName` and its `PodScheduled=True` condition; a pod
/// already bound (or being deleted) is a conflict. What the scheduler writes.
pub static BINDING: Subresource = Subresource {
    name: "binding",
    kind: Some("Binding"),
    group_version: None,
    verbs: &["create"],
    rest: &BindingRest,
};

struct BindingRest;

#[async_trait]
impl SubresourceRest for BindingRest {
    async fn serve(
        &self,
        api: Arc<Api>,
        at: ObjectRef<'_>,
        req: RestRequest,
    ) -> Result<Response<Body>, ApiError> {
        if req.method != Method::POST {
            return Err(ApiError::method_not_allowed(req.method.as_str()));
        }
        let user = req.user.clone();
        let binding = req.object().await?;
        let target = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = binding
            .pointer("/target/kind")
            .and_then(Value::as_str)
            .unwrap_or("Node");
        if target.is_empty() || kind != "Node" {
            return Err(ApiError::bad_request(format!(
                "Binding \"{}\" is invalid: target: a Node name is required",
                at.name
            )));
        }
        bind(&api, &user, at, target, &Utc::now().to_rfc3339()).await?;
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success", "code": 201});
        Ok(json_response(201, &status))
    }
}

/// Binds the pod at `at` to `node` as kube-apiserver's `assignPod` does: `spec.nodeName` and the
/// `PodScheduled=True` condition in one conditional write of the stored pod (storage's
/// GuaranteedUpdate: no strategy, no managedFields), authorized as `create pods/binding`.
pub async fn bind(
    api: &Api,
    user: &User,
    at: ObjectRef<'_>,
    node: &str,
    now: &str,
) -> Result<(), ApiError> {
    authorize(
        user,
        Verb::Create,
        at.r,
        Some("binding"),
        at.ns,
        Some(at.name),
    )?;
    let conflict = |why: String| ApiError::new(409, "Conflict", why);
    let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": now});
    for _ in 0..16 {
        let cur = api.fetch(at).await?;
        let bound = cur
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !bound.is_empty() {
            return Err(conflict(format!(
                "Operation cannot be fulfilled on pods/binding \"{}\": pod {} is already assigned to node \"{bound}\"",
                at.name, at.name
            )));
        }
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(conflict(format!(
                "Operation cannot be fulfilled on pods/binding \"{}\": pod {} is being deleted, cannot be assigned to a host",
                at.name, at.name
            )));
        }
        let mut new = (*cur).clone();
        new["spec"]["nodeName"] = json!(node);
        put_condition(&mut new, &scheduled);
        let key = at.r.key();
        match api
            .store
            .update(
                &key,
                at.ns.unwrap_or(""),
                at.name,
                new,
                Some(object_rv(&cur)),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(at.r, e)),
        }
    }
    Err(ApiError::conflict(at.r.group, at.r.plural, at.name))
}

/// Puts `condition` (by type) into `pod`'s `status.conditions`; the transition time kept when
/// its status does not change.
fn put_condition(pod: &mut Value, condition: &Value) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let list = pod["status"]
        .as_object_mut()
        .map(|m| m.entry("conditions").or_insert_with(|| json!([])));
    let Some(list) = list.and_then(Value::as_array_mut) else {
        return;
    };
    let mut c = condition.clone();
    match list.iter_mut().find(|x| x["type"] == condition["type"]) {
        Some(old) => {
            if old["status"] == c["status"] {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => list.push(c),
    }
}

/// Puts `condition` (by type) into the pod's `status.conditions` through `pods/status`; the
/// transition time kept when the status does not change.
pub async fn set_condition(
    api: &Api,
    user: &User,
    at: ObjectRef<'_>,
    condition: Value,
) -> Result<(), ApiError> {
    api.update_with(user, at, Part::Status, WriteOpts::INTERNAL, |cur| {
        let mut new = cur.clone();
        put_condition(&mut new, &condition);
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        Ok(new)
    })
    .await
    .map(|_| ())
}

/// `pods/NAME/eviction`: a policy/v1 `Eviction` POSTed for a pod is the graceful delete its
/// `deleteOptions` ask for (kube-apiserver's EvictionREST). PodDisruptionBudgets are not served,
/// so no budget ever refuses an eviction (no 429): it is a graceful delete that `kubectl drain`
/// can ask for.
pub static EVICTION: Subresource = Subresource {
    name: "eviction",
    kind: Some("Eviction"),
    group_version: Some(("policy", "v1")),
    verbs: &["create"],
    rest: &EvictionRest,
};

struct EvictionRest;

#[async_trait]
impl SubresourceRest for EvictionRest {
    async fn serve(
        &self,
        api: Arc<Api>,
        at: ObjectRef<'_>,
        mut req: RestRequest,
    ) -> Result<Response<Body>, ApiError> {
        if req.method != Method::POST {
            return Err(ApiError::method_not_allowed(req.method.as_str()));
        }
        let user = req.user.clone();
        let query = std::mem::take(&mut req.query);
        let eviction = req.object().await?;
        if eviction.pointer("/metadata/name").and_then(|v| v.as_str()) != Some(at.name) {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let opts = DeleteOptions::from_request(&query, eviction.get("deleteOptions"))?;
        api.evict(&user, at, &opts).await?;
        Ok(json_response(
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }
}
