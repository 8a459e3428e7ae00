//! Subresources (`.../NAME/status`; later `scale`, `binding`, `eviction`, `log`): each is a
//! [`Subresource`] a resource lists, served by its own [`SubresourceRest`], so a new one plugs in
//! without touching the router.
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};

use super::body::Body;
use super::router::{self, RestRequest};
use super::status::ApiError;
use super::verbs::{Api, ObjectRef, Part};

/// One subresource of a resource, as discovery lists it and the router serves it.
pub struct Subresource {
    /// The path segment after the object's name (`status`).
    pub name: &'static str,
    /// The kind of what it serves; None: the parent's kind.
    pub kind: Option<&'static str>,
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
