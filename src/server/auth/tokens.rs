//! Token records: one Secret per bearer token in `kube-system` (`token-ID`, type
//! `daemonset-agent.io/token`), holding the token's id, the SHA-256 of its secret (never the
//! secret: a Secret of this type written with `token-secret` gets it replaced by its hash, see
//! `kinds::secret`), its role, expiry and description. Records live in the store so that every
//! replica of the server sees the same tokens, and `kubectl get secrets -n kube-system` lists them
//! for an admin.
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{User, AUTHENTICATED, BOOTSTRAPPERS, SYSTEM_MASTERS, VIEWERS};
use crate::core::credential::Token;
use crate::server::kinds::SECRETS;
use crate::server::query::{Filter, WriteOpts};
use crate::server::status::ApiError;
use crate::server::verbs::{Api, DeleteOptions, ObjectRef};

pub const TOKEN_TYPE: &str = "daemonset-agent.io/token";
pub const TOKEN_NAMESPACE: &str = "kube-system";
/// The data key of the hash; `token-secret` is the plain secret a client may send instead.
pub const SECRET_HASH_KEY: &str = "token-secret-sha256";
pub const SECRET_KEY: &str = "token-secret";
/// The label that lets `token list` select the records (and their role show in kubectl).
pub const ROLE_LABEL: &str = "daemonset-agent.io/token-role";

pub fn record_name(id: &str) -> String {
    format!("token-{id}")
}

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything (group `system:masters`): the admin kubeconfig's token.
    Admin,
    /// Join a node (group `system:bootstrappers`): ask for a node's client certificate.
    Join,
    /// Read everything but Secrets: dashboards and monitoring.
    View,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Join => "join",
            Role::View => "view",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "join" => Some(Role::Join),
            "view" => Some(Role::View),
            _ => None,
        }
    }
}

/// One token record, as read from or written to its Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub role: Role,
    pub expires: Option<DateTime<Utc>>,
    pub description: String,
}

fn data_str(data: &Map<String, Value>, key: &str) -> Option<String> {
    let b = STANDARD.decode(data.get(key)?.as_str()?).ok()?;
    String::from_utf8(b).ok()
}

impl TokenRecord {
    /// The record of a Secret of type [`TOKEN_TYPE`]; None for any other Secret or a damaged one.
    pub fn from_secret(secret: &Value) -> Option<TokenRecord> {
        if secret.get("type").and_then(Value::as_str) != Some(TOKEN_TYPE) {
            return None;
        }
        let data = secret.get("data")?.as_object()?;
        let expires = match data_str(data, "expiration") {
            None => None,
            Some(t) if t.is_empty() => None,
            Some(t) => Some(DateTime::parse_from_rfc3339(&t).ok()?.with_timezone(&Utc)),
        };
        Some(TokenRecord {
            id: data_str(data, "token-id")?,
            secret_sha256: data_str(data, SECRET_HASH_KEY)?,
            role: Role::parse(&data_str(data, "role")?)?,
            expires,
            description: data_str(data, "description").unwrap_or_default(),
        })
    }

    /// The Secret that stores this record.
    pub fn to_secret(&self) -> Value {
        let mut data = Map::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), json!(STANDARD.encode(v)));
        };
        put("token-id", &self.id);
        put(SECRET_HASH_KEY, &self.secret_sha256);
        put("role", self.role.as_str());
        if let Some(t) = self.expires {
            put(
                "expiration",
                &t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        }
        if !self.description.is_empty() {
            put("description", &self.description);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": record_name(&self.id),
                "namespace": TOKEN_NAMESPACE,
                "labels": {ROLE_LABEL: self.role.as_str()},
            },
            "type": TOKEN_TYPE,
            "data": data,
        })
    }

    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }

    /// Who a holder of this token is.
    pub fn user(&self) -> User {
        let (name, group) = match self.role {
            Role::Admin => ("system:admin".to_string(), SYSTEM_MASTERS),
            Role::Join => (format!("system:bootstrap:{}", self.id), BOOTSTRAPPERS),
            Role::View => (format!("view:{}", self.id), VIEWERS),
        };
        User {
            name,
            groups: vec![group.into(), AUTHENTICATED.into()],
        }
    }
}

/// The description of the admin kubeconfig's token record.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";

/// A new random token.
pub fn generate() -> Token {
    Token::from_random(&rand::random::<[u8; 22]>())
}

/// Stores a token's record.
pub async fn store(api: &Api, record: &TokenRecord) -> Result<(), ApiError> {
    let user = User::internal("tokens");
    let secret = record.to_secret();
    api.create(
        &user,
        &SECRETS,
        Some(TOKEN_NAMESPACE),
        secret,
        WriteOpts::INTERNAL,
    )
    .await
    .map(|_| ())
}

/// The admin kubeconfig's token: `current` (what the kubeconfig on disk holds) while its record
/// is there, else a new one, whose record replaces the records of earlier admin kubeconfigs (so
/// deleting `admin.kubeconfig` and restarting the server rotates the admin credential).
pub async fn ensure_admin(api: &Api, current: Option<&str>) -> Result<Token, ApiError> {
    if let Some(t) = current {
        if let Ok(user) = super::by_token(&*api.store, t, Utc::now()).await {
            if user.is_admin() {
                if let Ok(token) = Token::parse(t) {
                    return Ok(token);
                }
            }
        }
    }
    let token = generate();
    ensure_admin_token(api, &token).await?;
    Ok(token)
}

/// Makes `token` the admin kubeconfig's token: its record is stored unless there, and the
/// records of earlier admin kubeconfigs go. Replicas that share the token (`bootstrap`) may do
/// this at the same time: each stores or finds the one record and deletes only other tokens'.
pub async fn ensure_admin_token(api: &Api, token: &Token) -> Result<(), ApiError> {
    let user = User::internal("tokens");
    let (secrets, _) = api
        .list(&user, &SECRETS, Some(TOKEN_NAMESPACE), &Filter::default())
        .await?;
    let mut present = false;
    for old in secrets.iter().filter_map(|s| TokenRecord::from_secret(s)) {
        if old.role != Role::Admin || old.description != ADMIN_KUBECONFIG {
            continue;
        }
        if old.id == token.id && old.secret_sha256 == token.secret_hash() {
            present = true;
            continue;
        }
        let name = record_name(&old.id);
        let at = ObjectRef::new(&SECRETS, Some(TOKEN_NAMESPACE), &name);
        match api.delete(&user, at, &DeleteOptions::default()).await {
            Ok(_) => tracing::info!(
                token = old.id.as_str(),
                "replaced the admin kubeconfig's token"
            ),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    if present {
        return Ok(());
    }
    let record = TokenRecord {
        id: token.id.clone(),
        secret_sha256: token.secret_hash(),
        role: Role::Admin,
        expires: None,
        description: ADMIN_KUBECONFIG.into(),
    };
    match store(api, &record).await {
        // another replica stored it first
        Err(e) if e.code == 409 => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_secret_and_name_their_user() {
        let rec = TokenRecord {
            id: "abcdef".into(),
            secret_sha256: "00".repeat(32),
            role: Role::Join,
            expires: Some("2030-01-02T03:04:05Z".parse().unwrap()),
            description: "rack 4".into(),
        };
        let secret = rec.to_secret();
        assert_eq!(secret["metadata"]["name"], "token-abcdef");
        assert_eq!(TokenRecord::from_secret(&secret), Some(rec.clone()));
        assert_eq!(rec.user().name, "system:bootstrap:abcdef");
        assert_eq!(rec.user().groups, [BOOTSTRAPPERS, AUTHENTICATED]);
        assert!(!rec.expired("2030-01-02T03:04:04Z".parse().unwrap()));
        assert!(rec.expired("2030-01-02T03:04:05Z".parse().unwrap()));
        let mut other = secret.clone();
        other["type"] = json!("Opaque");
        assert_eq!(TokenRecord::from_secret(&other), None);
        let mut damaged = secret;
        damaged["data"]["role"] = json!(STANDARD.encode("root"));
        assert_eq!(TokenRecord::from_secret(&damaged), None);
    }
}
