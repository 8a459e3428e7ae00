//! Authentication and authorization. [`authenticate`] (once per request, in the router) finds who
//! sends a request: a client certificate the TLS handshake verified against the CA and whose
//! record (the CSR it was issued for) is still in the store, or a bearer token whose record
//! (`tokens`) holds the SHA-256 of its secret, compared in constant time, or a ServiceAccount
//! token (a JWT this server signed, `serviceaccount`). Nothing else gets in: 401, as
//! kube-apiserver answers. [`authorize`] (in the verbs layer, for every resource request,
//! with kube-apiserver's attributes) asks `authz`; the object-level rules (NodeRestriction, own
//! pods and CSRs) are `admission`'s, called by the verbs where the object is at hand.
//!
//! Controllers inside the server call the same verbs with an [`User::internal`] identity.
pub mod admission;
pub mod authz;
pub mod graph;
pub mod jwt;
pub mod serviceaccount;
pub mod tokens;

use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use http::{header, Request};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::kinds::{CERTIFICATE_SIGNING_REQUESTS, SECRETS};
use super::query::Query;
use super::resources::Resource;
use super::status::ApiError;
use super::store::ObjectStore;
use super::tls::{ClientCert, Peer};
use crate::core::credential::Token;
use crate::pki;
use authz::{Attributes, Decision};
use tokens::TokenRecord;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// Kubernetes' superuser group.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// Every node's group; a node's user is `system:node:NAME`.
pub const SYSTEM_NODES: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Holders of a join token.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// Holders of a view token.
pub const VIEWERS: &str = "daemonset-agent:viewers";
pub const AUTHENTICATED: &str = "system:authenticated";

impl User {
    /// The identity of a loop that runs inside the server (`system:apiserver:COMPONENT`).
    pub fn internal(component: &str) -> User {
        User {
            name: format!("system:apiserver:{component}"),
            groups: vec![SYSTEM_MASTERS.into()],
        }
    }
    fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }
    pub fn is_admin(&self) -> bool {
        self.in_group(SYSTEM_MASTERS)
    }
    pub fn is_viewer(&self) -> bool {
        self.in_group(VIEWERS)
    }
    pub fn is_bootstrapper(&self) -> bool {
        self.in_group(BOOTSTRAPPERS)
    }
    /// The node a `system:node:NAME` user in `system:nodes` is.
    pub fn node_name(&self) -> Option<&str> {
        self.name
            .strip_prefix(NODE_USER_PREFIX)
            .filter(|n| !n.is_empty() && self.in_group(SYSTEM_NODES))
    }
}

/// Why a request was not authenticated (logged, never told to the client).
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("no credentials")]
    None,
    #[error("the bearer token is not ID.SECRET")]
    TokenFormat,
    #[error("no record of token {0}")]
    UnknownToken(String),
    #[error("token {0}: wrong secret")]
    WrongSecret(String),
    #[error("token {0} expired at {1}")]
    Expired(String, DateTime<Utc>),
    #[error("client certificate of {0}: expired")]
    CertExpired(String),
    #[error("client certificate of {0} names no record")]
    NoRecord(String),
    #[error(
        "client certificate of {cn}: its record {record} is gone or holds another certificate"
    )]
    Revoked { cn: String, record: String },
    #[error("the store: {0}")]
    Store(String),
    #[error("service account token: {0}")]
    ServiceAccount(String),
}

/// Who sent `req`: its client certificate first (as kube-apiserver's union authenticator tries
/// x509 first), then its bearer token (a ServiceAccount token when it is a JWT and the server
/// issues them).
pub async fn authenticate<B>(
    store: &dyn ObjectStore,
    issuer: Option<&serviceaccount::Issuer>,
    req: &Request<B>,
) -> Result<User, ApiError> {
    let now = Utc::now();
    let peer = req.extensions().get::<Peer>();
    let mut failure = AuthnError::None;
    if let Some(cert) = peer.and_then(|p| p.cert.as_deref()) {
        match by_certificate(store, cert, now).await {
            Ok(user) => return Ok(user),
            Err(e) => failure = e,
        }
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(token) = bearer {
        let by_sa = issuer.filter(|_| serviceaccount::Issuer::looks_like_jwt(token));
        let found = match by_sa {
            Some(issuer) => issuer
                .authenticate(store, token, now)
                .await
                .map_err(|e| AuthnError::ServiceAccount(crate::runtime::chain(&e))),
            None => by_token(store, token, now).await,
        };
        match found {
            Ok(user) => return Ok(user),
            Err(e) => failure = e,
        }
    }
    tracing::debug!(reason = %failure, path = req.uri().path(), "unauthenticated request");
    Err(ApiError::unauthorized())
}

/// A bearer token against its record.
pub async fn by_token(
    store: &dyn ObjectStore,
    token: &str,
    now: DateTime<Utc>,
) -> Result<User, AuthnError> {
    let token = Token::parse(token).map_err(|_| AuthnError::TokenFormat)?;
    let secret = store
        .get(
            &SECRETS.key(),
            tokens::TOKEN_NAMESPACE,
            &tokens::record_name(&token.id),
        )
        .await
        .map_err(|e| AuthnError::Store(e.to_string()))?;
    let record = secret
        .as_deref()
        .and_then(TokenRecord::from_secret)
        .filter(|r| r.id == token.id)
        .ok_or_else(|| AuthnError::UnknownToken(token.id.clone()))?;
    let presented = token.secret_hash();
    if !bool::from(presented.as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
        return Err(AuthnError::WrongSecret(token.id));
    }
    if let Some(at) = record.expires.filter(|_| record.expired(now)) {
        return Err(AuthnError::Expired(token.id, at));
    }
    Ok(record.user())
}

/// A verified client certificate against its record: the CSR it names must still hold it.
async fn by_certificate(
    store: &dyn ObjectStore,
    cert: &ClientCert,
    now: DateTime<Utc>,
) -> Result<User, AuthnError> {
    let cn = cert.info.common_name.clone();
    if now.timestamp() >= cert.info.not_after {
        return Err(AuthnError::CertExpired(cn));
    }
    let record = cert
        .info
        .record()
        .ok_or_else(|| AuthnError::NoRecord(cn.clone()))?;
    let csr = store
        .get(&CERTIFICATE_SIGNING_REQUESTS.key(), "", record)
        .await
        .map_err(|e| AuthnError::Store(e.to_string()))?;
    let holds_it = csr
        .as_deref()
        .is_some_and(|csr| issued_certificate(csr).is_some_and(|der| der == *cert.der));
    if !holds_it {
        return Err(AuthnError::Revoked {
            cn,
            record: record.to_string(),
        });
    }
    let mut groups = cert.info.organizations.clone();
    groups.push(AUTHENTICATED.into());
    Ok(User { name: cn, groups })
}

/// The certificate a CSR's status holds (DER), if any.
pub fn issued_certificate(csr: &Value) -> Option<Vec<u8>> {
    let b64 = csr.pointer("/status/certificate")?.as_str()?;
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    pki::certs_from_pem(&pem)
        .ok()?
        .into_iter()
        .next()
        .map(|c| c.to_vec())
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

/// kube-apiserver's 403 for a refused request: `nodes "b" is forbidden: User "system:node:a"
/// cannot patch resource "nodes" in API group "" at the cluster scope[: REASON]`.
pub fn forbidden(user: &User, a: &Attributes<'_>, reason: &str) -> ApiError {
    let mut message = if let Some(path) = a.path {
        format!("User \"{}\" cannot {} path \"{path}\"", user.name, a.verb)
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.to_string()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", a.namespace)
        };
        format!(
            "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            user.name, a.verb, a.group
        )
    };
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    if a.path.is_some() {
        return ApiError::new(403, "Forbidden", format!("forbidden: {message}"));
    }
    ApiError::forbidden(a.group, a.resource, a.name, &message)
}

/// Whether `user` may do `verb` on `resource` (its `subresource`, in `namespace`, the object
/// `name`; None where the request has none): kube-apiserver's 403 `Forbidden` when not.
pub fn authorize(
    user: &User,
    verb: Verb,
    resource: &Resource,
    subresource: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let a = Attributes {
        verb: verb.as_str(),
        group: resource.group,
        resource: resource.plural,
        subresource: subresource.unwrap_or(""),
        namespace: namespace.unwrap_or(""),
        name: name.unwrap_or(""),
        path: None,
    };
    match authz::decide(user, &a) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => {
            tracing::debug!(
                user = user.name.as_str(),
                verb = a.verb,
                resource = a.resource,
                name = a.name,
                "forbidden"
            );
            Err(forbidden(user, &a, &reason))
        }
    }
}

/// The Node authorizer's graph rule: a node reads a Secret, ConfigMap or ServiceAccount only when
/// a pod bound to it uses that object (`graph`); `authz` let the verb through on that condition.
pub async fn authorize_node_read(
    graph: &graph::NodeGraph,
    store: &dyn ObjectStore,
    user: &User,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let Some(via) = graph::Via::of(r.plural).filter(|_| r.group.is_empty()) else {
        return Ok(());
    };
    let ns = ns.unwrap_or("");
    match graph.reaches(store, node, via, ns, name).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            let a = Attributes {
                verb: Verb::Get.as_str(),
                resource: r.plural,
                namespace: ns,
                name,
                ..Default::default()
            };
            let reason = format!("no relationship found between node '{node}' and this object");
            Err(forbidden(user, &a, &reason))
        }
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// The field selector's part of a list or watch's authorization (the verbs do not see the
/// request's selector; the router checks it with this before them): a node lists and watches
/// only the pods bound to it.
pub fn authorize_selection(
    user: &User,
    verb: Verb,
    r: &Resource,
    namespace: Option<&str>,
    query: &Query,
) -> Result<(), ApiError> {
    selection(user, verb, r, query.get("fieldSelector").unwrap_or("")).map_err(|reason| {
        let a = Attributes {
            verb: verb.as_str(),
            group: r.group,
            resource: r.plural,
            namespace: namespace.unwrap_or(""),
            ..Default::default()
        };
        forbidden(user, &a, &reason)
    })
}

/// The selection rule on its own (a refusal's reason): for SelfSubjectAccessReviews too.
pub fn selection(
    user: &User,
    verb: Verb,
    r: &Resource,
    field_selector: &str,
) -> Result<(), String> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let lists = matches!(verb, Verb::List | Verb::Watch);
    if !lists || !std::ptr::eq(r, &super::kinds::PODS) {
        return Ok(());
    }
    match authz::pods_selection(node, field_selector) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(reason),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::super::store::SqliteStore;
    use super::*;
    use crate::core::credential::Token;
    use tokens::Role;

    #[test]
    fn forbidden_messages_have_kube_apiservers_shape() {
        let node = User {
            name: "system:node:a".into(),
            groups: vec![SYSTEM_NODES.into()],
        };
        let nodes = Attributes {
            verb: "patch",
            resource: "nodes",
            name: "b",
            ..Default::default()
        };
        let e = forbidden(&node, &nodes, "");
        assert_eq!(
            e.message,
            "nodes \"b\" is forbidden: User \"system:node:a\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"
        );
        assert_eq!(e.code, 403);
        assert_eq!(e.to_status()["reason"], "Forbidden");
        assert_eq!(
            e.to_status()["details"],
            json!({"name": "b", "kind": "nodes"})
        );
        let ds = Attributes {
            verb: "create",
            group: "apps",
            resource: "daemonsets",
            namespace: "default",
            ..Default::default()
        };
        assert_eq!(
            forbidden(&node, &ds, "").message,
            "daemonsets.apps is forbidden: User \"system:node:a\" cannot create resource \"daemonsets\" in API group \"apps\" in the namespace \"default\""
        );
        let status = Attributes {
            subresource: "status",
            ..nodes
        };
        assert!(forbidden(&node, &status, "why")
            .message
            .ends_with("resource \"nodes/status\" in API group \"\" at the cluster scope: why"));
    }

    #[tokio::test]
    async fn tokens_authenticate_only_with_their_secret_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), 10).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        let now: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let token = Token::from_random(&[7; 22]);
        let record = TokenRecord {
            id: token.id.clone(),
            secret_sha256: token.secret_hash(),
            role: Role::View,
            expires: Some("2030-01-02T00:00:00Z".parse().unwrap()),
            description: String::new(),
        };
        store
            .create(
                &SECRETS.key(),
                "kube-system",
                &tokens::record_name(&token.id),
                record.to_secret(),
            )
            .await
            .unwrap();
        let user = by_token(&*store, &token.to_string(), now).await.unwrap();
        assert!(user.is_viewer());
        let wrong = Token {
            secret: "x".repeat(16),
            ..token.clone()
        };
        let other = Token::from_random(&[9; 22]);
        let later: DateTime<Utc> = "2030-01-02T00:00:00Z".parse().unwrap();
        for (t, at, want) in [
            (wrong.to_string(), now, "wrong secret"),
            (other.to_string(), now, "no record"),
            ("garbage".to_string(), now, "not ID.SECRET"),
            (token.to_string(), later, "expired"),
        ] {
            let e = by_token(&*store, &t, at).await.unwrap_err();
            assert!(e.to_string().contains(want), "{t}: {e}");
        }
    }
}
