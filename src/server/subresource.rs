//! Subresources (`.../NAME/status`, `pods/NAME/eviction`; later `scale`, `binding`, `log`): each is a
//! [`Subresource`] a resource lists, served by its own [`SubresourceRest`], so a new one plugs in
//! without touching the router.
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use serde_json::json;

use super::body::{json_response, Body};
use super::router::{self, RestRequest};
use super::status::ApiError;
use super::verbs::{Api, DeleteOptions, ObjectRef, Part};

/// One subresource of a resource, as discovery lists it and the router serves it.
pub struct Subresource {
    /// The path segment after the object's name (`status`).
    pub name: &'static str,
    /// The kind of what it serves; None: the parent's kind.
    pub kind: Option<&'static str>,
    /// The group and version of `kind`, when not the parent's (discovery tells them: kubectl
    /// drain looks for `pods/eviction` of kind Eviction in policy/v1).
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
