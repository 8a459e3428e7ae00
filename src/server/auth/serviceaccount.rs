//! ServiceAccount tokens as kube-apiserver issues and checks them (pkg/serviceaccount): a JWT
//! signed with the server's key (`jwt`), `iss` the issuer, `aud` the audiences, `exp`/`iat`/`nbf`,
//! `sub` `system:serviceaccount:NS:NAME` and the private `kubernetes.io` claim naming the
//! namespace, the ServiceAccount and the object the token is bound to (a Pod, a Secret or a
//! Node; a pod-bound token also names the pod's node). [`Issuer::authenticate`] is the
//! service-account authenticator: the signature, the issuer, an audience of the API server,
//! the times (a minute of leeway, as go-jose's), and then that the ServiceAccount and the bound
//! objects still exist with the uids the token names (a pod being deleted for more than a minute
//! invalidates it), as upstream's validator does.
//!
//! What a ServiceAccount may do: the server has no RBAC, so an SA identity (groups
//! `system:serviceaccounts`, `system:serviceaccounts:NS`) gets only what every authenticated user
//! gets (`authz`): discovery, OpenAPI, `/version`, and its own reviews (`kubectl auth whoami`,
//! `auth can-i`), the least a Kubernetes cluster grants it.
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::jwt::{JwtError, SigningKey};
use super::{User, AUTHENTICATED};
use crate::server::kinds::{NODES, PODS, SECRETS, SERVICE_ACCOUNTS};
use crate::server::resources::Resource;
use crate::server::store::ObjectStore;

/// kube-apiserver's issuer as kubeadm configures it (`--service-account-issuer`), also the API
/// server's audience (`--api-audiences` defaults to the issuer).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const SA_USER_PREFIX: &str = "system:serviceaccount:";
pub const SA_GROUP: &str = "system:serviceaccounts";
/// The file of the signing key in the server's data directory.
pub const KEY_FILE: &str = "service-account.key";
/// go-jose's leeway on `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum SaTokenError {
    #[error("not a service account token")]
    Jwt(#[source] JwtError),
    #[error("the token's issuer {0:?} is not this server's")]
    Issuer(String),
    #[error("the token's audiences {0:?} do not include the API server's")]
    Audience(Vec<String>),
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotYet,
    #[error("the token lacks the kubernetes.io claims")]
    Claims,
    #[error("service account token has been invalidated: {0}")]
    Invalidated(String),
    #[error("{kind} UID ({found}) does not match service account token {kind} UID ({claimed})")]
    Uid {
        kind: &'static str,
        found: String,
        claimed: String,
    },
    #[error("the store")]
    Store(#[source] crate::server::store::StoreError),
}

/// A name and uid, as the claims name objects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

impl Ref {
    fn to_json(&self) -> Value {
        json!({"name": self.name, "uid": self.uid})
    }
    fn from_json(v: Option<&Value>) -> Option<Ref> {
        let v = v?;
        Some(Ref {
            name: v.get("name")?.as_str()?.to_string(),
            uid: v.get("uid")?.as_str()?.to_string(),
        })
    }
}

/// Who a token is for and what it is bound to (the `kubernetes.io` claim).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binding {
    pub namespace: String,
    pub service_account: Ref,
    pub pod: Option<Ref>,
    pub secret: Option<Ref>,
    pub node: Option<Ref>,
}

impl Binding {
    pub fn subject(&self) -> String {
        format!(
            "{SA_USER_PREFIX}{}:{}",
            self.namespace, self.service_account.name
        )
    }

    /// The user a token of this binding authenticates as.
    pub fn user(&self) -> User {
        User {
            name: self.subject(),
            groups: vec![
                SA_GROUP.into(),
                format!("{SA_GROUP}:{}", self.namespace),
                AUTHENTICATED.into(),
            ],
        }
    }
}

/// The claims of a token issued at `now` for `seconds`.
pub fn claims(
    issuer: &str,
    audiences: &[String],
    b: &Binding,
    now: i64,
    seconds: i64,
    jti: &str,
) -> Value {
    let mut k8s = json!({
        "namespace": b.namespace,
        "serviceaccount": b.service_account.to_json(),
    });
    for (key, r) in [("pod", &b.pod), ("secret", &b.secret), ("node", &b.node)] {
        if let Some(r) = r {
            k8s[key] = r.to_json();
        }
    }
    json!({
        "aud": audiences,
        "exp": now + seconds,
        "iat": now,
        "iss": issuer,
        "jti": jti,
        "kubernetes.io": k8s,
        "nbf": now,
        "sub": b.subject(),
    })
}

/// The claims checked without the store: issuer, an audience in `audiences`, the times, the
/// shape of `kubernetes.io` and `sub`.
pub fn check_claims(
    c: &Value,
    issuer: &str,
    audiences: &[String],
    now: i64,
) -> Result<Binding, SaTokenError> {
    let iss = c["iss"].as_str().unwrap_or("");
    if iss != issuer {
        return Err(SaTokenError::Issuer(iss.to_string()));
    }
    // `aud` is a string or a list of strings
    let aud: Vec<String> = match &c["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    if !aud.iter().any(|a| audiences.contains(a)) {
        return Err(SaTokenError::Audience(aud));
    }
    let time = |k: &str| c[k].as_i64();
    match time("exp") {
        Some(exp) if now <= exp + LEEWAY_SECONDS => {}
        _ => return Err(SaTokenError::Expired),
    }
    if time("nbf").is_some_and(|nbf| now + LEEWAY_SECONDS < nbf)
        || time("iat").is_some_and(|iat| now + LEEWAY_SECONDS < iat)
    {
        return Err(SaTokenError::NotYet);
    }
    let k = &c["kubernetes.io"];
    let b = Binding {
        namespace: k["namespace"].as_str().ok_or(SaTokenError::Claims)?.into(),
        service_account: Ref::from_json(k.get("serviceaccount")).ok_or(SaTokenError::Claims)?,
        pod: Ref::from_json(k.get("pod")),
        secret: Ref::from_json(k.get("secret")),
        node: Ref::from_json(k.get("node")),
    };
    if c["sub"].as_str() != Some(b.subject().as_str()) {
        return Err(SaTokenError::Claims);
    }
    Ok(b)
}

async fn fetch(
    store: &dyn ObjectStore,
    r: &Resource,
    ns: &str,
    name: &str,
) -> Result<Option<std::sync::Arc<Value>>, SaTokenError> {
    store
        .get(&r.key(), ns, name)
        .await
        .map_err(SaTokenError::Store)
}

/// The server's service account token issuer and authenticator, and the CA published to pods.
#[derive(Debug)]
pub struct Issuer {
    pub key: SigningKey,
    pub issuer: String,
    /// The API server's audiences (the default of a TokenRequest, what a token must name).
    pub audiences: Vec<String>,
    /// The cluster CA (PEM): `kube-root-ca.crt`'s `ca.crt`.
    pub root_ca: String,
    /// `--service-account-max-token-expiration` in seconds: what a longer request gets.
    pub max_seconds: Option<i64>,
}

impl Issuer {
    pub fn new(key: SigningKey, root_ca: String) -> Issuer {
        Issuer {
            key,
            issuer: ISSUER.into(),
            audiences: vec![ISSUER.into()],
            root_ca,
            max_seconds: None,
        }
    }

    /// A token for `b`, valid `seconds` from `now`.
    pub fn issue(
        &self,
        b: &Binding,
        audiences: &[String],
        now: DateTime<Utc>,
        seconds: i64,
    ) -> Result<String, JwtError> {
        let jti = uuid::Uuid::new_v4().to_string();
        let c = claims(&self.issuer, audiences, b, now.timestamp(), seconds, &jti);
        self.key.sign(&c)
    }

    /// Whether `token` looks like a JWT (three dot-separated parts): the token authenticators
    /// try it as one.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// The service-account authenticator: who `token` is, if it is a valid token of this server
    /// whose ServiceAccount and bound objects still exist.
    pub async fn authenticate(
        &self,
        store: &dyn ObjectStore,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<User, SaTokenError> {
        let c = self.key.verify(token).map_err(SaTokenError::Jwt)?;
        let b = check_claims(&c, &self.issuer, &self.audiences, now.timestamp())?;
        let ns = b.namespace.as_str();
        let check_uid = |kind: &'static str, obj: Option<&Value>, r: &Ref| {
            let Some(obj) = obj else {
                return Err(SaTokenError::Invalidated(format!(
                    "{kind} {:?} is gone",
                    r.name
                )));
            };
            let found = obj
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            if found != r.uid {
                return Err(SaTokenError::Uid {
                    kind,
                    found: found.to_string(),
                    claimed: r.uid.clone(),
                });
            }
            Ok(())
        };
        let sa = fetch(store, &SERVICE_ACCOUNTS, ns, &b.service_account.name).await?;
        check_uid("service account", sa.as_deref(), &b.service_account)?;
        if let Some(r) = &b.pod {
            let pod = fetch(store, &PODS, ns, &r.name).await?;
            check_uid("pod", pod.as_deref(), r)?;
            let deleted_long_ago = pod
                .as_deref()
                .and_then(|p| p.pointer("/metadata/deletionTimestamp"))
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t.timestamp() < now.timestamp() - LEEWAY_SECONDS);
            if deleted_long_ago {
                return Err(SaTokenError::Invalidated(format!(
                    "pod {:?} is being deleted",
                    r.name
                )));
            }
        }
        if let Some(r) = &b.secret {
            let secret = fetch(store, &SECRETS, ns, &r.name).await?;
            check_uid("secret", secret.as_deref(), r)?;
        }
        if let Some(r) = &b.node {
            let node = fetch(store, &NODES, "", &r.name).await?;
            check_uid("node", node.as_deref(), r)?;
        }
        Ok(b.user())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            namespace: "d".into(),
            service_account: Ref {
                name: "sa".into(),
                uid: "u-sa".into(),
            },
            pod: Some(Ref {
                name: "p".into(),
                uid: "u-p".into(),
            }),
            secret: None,
            node: Some(Ref {
                name: "n".into(),
                uid: "u-n".into(),
            }),
        }
    }

    #[test]
    fn claims_are_kube_apiservers_and_check_back() {
        let aud = vec![ISSUER.to_string()];
        let c = claims(ISSUER, &aud, &binding(), 1000, 600, "j");
        assert_eq!(
            c,
            json!({"aud": [ISSUER], "exp": 1600, "iat": 1000, "nbf": 1000, "iss": ISSUER,
                "jti": "j", "sub": "system:serviceaccount:d:sa",
                "kubernetes.io": {"namespace": "d",
                    "serviceaccount": {"name": "sa", "uid": "u-sa"},
                    "pod": {"name": "p", "uid": "u-p"},
                    "node": {"name": "n", "uid": "u-n"}}})
        );
        assert_eq!(check_claims(&c, ISSUER, &aud, 1500).unwrap(), binding());
        let user = binding().user();
        assert_eq!(user.name, "system:serviceaccount:d:sa");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:d",
                AUTHENTICATED
            ]
        );
        // (claims, now, what is wrong)
        let mut other_sub = c.clone();
        other_sub["sub"] = json!("system:serviceaccount:d:admin");
        let mut string_aud = c.clone();
        string_aud["aud"] = json!(ISSUER);
        let cases = [
            (c.clone(), 1660, None),
            (c.clone(), 1661, Some("expired")),
            (c.clone(), 939, Some("not valid yet")),
            (string_aud, 1000, None),
            (other_sub, 1000, Some("kubernetes.io")),
        ];
        for (claims, now, want) in cases {
            let got = check_claims(&claims, ISSUER, &aud, now);
            match want {
                None => assert!(got.is_ok(), "{claims} at {now}: {got:?}"),
                Some(w) => assert!(got.unwrap_err().to_string().contains(w), "{claims} {now}"),
            }
        }
        let vault = claims(ISSUER, &["vault".into()], &binding(), 1000, 600, "j");
        assert!(matches!(
            check_claims(&vault, ISSUER, &aud, 1000),
            Err(SaTokenError::Audience(_))
        ));
        assert!(matches!(
            check_claims(&c, "https://other", &aud, 1000),
            Err(SaTokenError::Issuer(_))
        ));
    }
}
