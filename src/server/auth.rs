//! The seam for authentication and authorization: who sends a request ([`authenticate`], once
//! per request in the router) and whether they may do it ([`authorize`], called by the verbs
//! layer for every resource request, with kube-apiserver's request attributes).
//!
//! Everyone is admitted for now (plain HTTP on loopback, see ARCHITECTURE.md); TLS client
//! certificates, bearer tokens and a Node authorizer slot in here. Controllers inside the server
//! call the same verbs with an [`User::internal`] identity.
use std::fmt;

use http::Request;

use super::resources::Resource;
use super::status::ApiError;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// Kubernetes' superuser group.
pub const SYSTEM_MASTERS: &str = "system:masters";

impl User {
    /// The identity of a loop that runs inside the server (`system:apiserver:COMPONENT`).
    pub fn internal(component: &str) -> User {
        User {
            name: format!("system:apiserver:{component}"),
            groups: vec![SYSTEM_MASTERS.into()],
        }
    }
}

/// Who sent `req`. Without credentials every caller is the admin.
pub fn authenticate<B>(_req: &Request<B>) -> Result<User, ApiError> {
    Ok(User {
        name: "admin".into(),
        groups: vec![SYSTEM_MASTERS.into()],
    })
}

/// The API verbs, as RBAC names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `user` may do `verb` on `resource` (its `subresource`, in `namespace`, the object
/// `name`; None where the request has none). Every request is admitted for now; a refusal is
/// kube-apiserver's 403 `Forbidden`.
pub fn authorize(
    user: &User,
    verb: Verb,
    resource: &Resource,
    subresource: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    tracing::trace!(
        user = user.name.as_str(),
        verb = verb.as_str(),
        resource = resource.plural,
        subresource = subresource.unwrap_or(""),
        namespace = namespace.unwrap_or(""),
        name = name.unwrap_or(""),
        "authorized"
    );
    Ok(())
}
