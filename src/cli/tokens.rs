//! `daemonset-agent token create|list|delete` and `daemonset-agent node revoke`, as `kubeadm
//! token` does them: through the API as admin (the server's `admin.kubeconfig` by default), so
//! they work from any machine with an admin kubeconfig and against every replica of the store.
//!
//! A token is a Secret of type `daemonset-agent.io/token` in `kube-system` (`token-ID`); the
//! command sends the secret once and the server keeps only its SHA-256. `create` prints the join
//! token `sha256:CA-HASH::ID.SECRET` (CA-HASH from the kubeconfig's CA), or the bare `ID.SECRET`
//! of a view token.
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::core::credential::{CaHash, Token};
use crate::pki::CertInfo;

pub const TOKEN_TYPE: &str = "daemonset-agent.io/token";
pub const TOKEN_NAMESPACE: &str = "kube-system";
pub const ROLE_LABEL: &str = "daemonset-agent.io/token-role";
/// Where the server package keeps its admin kubeconfig.
pub const DEFAULT_ADMIN_KUBECONFIG: &str = "/var/lib/daemonset-agent-server/admin.kubeconfig";

/// The token's role, as `--role` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Joins a node (a node gets its own certificate with it).
    Join,
    /// Reads everything but Secrets (dashboards, monitoring).
    View,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Join => "join",
            Role::View => "view",
        }
    }
}

/// The client and the CA's pin of an admin kubeconfig.
pub(crate) async fn admin(kubeconfig: &Path) -> anyhow::Result<(kube::Client, Option<CaHash>)> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).with_context(|| {
        format!(
            "read {} (the server's admin kubeconfig; --kubeconfig names another)",
            kubeconfig.display()
        )
    })?;
    let ca = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|pem| CertInfo::parse_pem(&String::from_utf8_lossy(&pem)).ok())
        .map(|info| info.spki_hash);
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("load {}", kubeconfig.display()))?;
    Ok((kube::Client::try_from(cfg)?, ca))
}

/// Creates a token valid for `ttl` (None: until deleted) and prints it.
pub async fn create(
    kubeconfig: &Path,
    role: Role,
    ttl: Option<std::time::Duration>,
    description: &str,
) -> anyhow::Result<()> {
    let (client, ca) = admin(kubeconfig).await?;
    let token = Token::from_random(&rand::random::<[u8; 22]>());
    let mut data = serde_json::Map::new();
    data.insert("token-id".into(), json!(token.id));
    data.insert("token-secret".into(), json!(token.secret));
    data.insert("role".into(), json!(role.as_str()));
    if let Some(ttl) = ttl {
        let at = chrono::Utc::now() + chrono::Duration::from_std(ttl)?;
        data.insert(
            "expiration".into(),
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
    }
    if !description.is_empty() {
        data.insert("description".into(), json!(description));
    }
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": format!("token-{}", token.id),
            "namespace": TOKEN_NAMESPACE,
            "labels": {ROLE_LABEL: role.as_str()},
        },
        "type": TOKEN_TYPE,
        "stringData": data,
    }))?;
    let secrets: Api<Secret> = Api::namespaced(client, TOKEN_NAMESPACE);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .context("store the token's record")?;
    match (role, ca) {
        (Role::Join, Some(ca)) => println!("{ca}::{token}"),
        (Role::Join, None) => anyhow::bail!(
            "the token {} was stored, but {} has no CA to pin: a join token needs certificate-authority-data",
            token.id,
            kubeconfig.display()
        ),
        (Role::View, _) => println!("{token}"),
    }
    Ok(())
}

fn data(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default()
}

/// Prints the tokens: id, role, expiry and description (never a secret: the server has none).
pub async fn list(kubeconfig: &Path) -> anyhow::Result<()> {
    let (client, _) = admin(kubeconfig).await?;
    let secrets: Api<Secret> = Api::namespaced(client, TOKEN_NAMESPACE);
    let list = secrets
        .list(&ListParams::default().labels(ROLE_LABEL))
        .await
        .context("list the token records")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<8} {:<6} {:<22} DESCRIPTION",
        "TOKEN", "ROLE", "EXPIRES"
    )?;
    for s in list
        .items
        .iter()
        .filter(|s| s.type_.as_deref() == Some(TOKEN_TYPE))
    {
        let expires = data(s, "expiration");
        writeln!(
            out,
            "{:<8} {:<6} {:<22} {}",
            data(s, "token-id"),
            data(s, "role"),
            if expires.is_empty() {
                "<never>"
            } else {
                &expires
            },
            data(s, "description")
        )?;
    }
    Ok(())
}

/// Deletes a token (by its id or the whole token): a join token no longer joins nodes; nodes
/// that joined with it keep their certificates.
pub async fn delete(kubeconfig: &Path, token: &str) -> anyhow::Result<()> {
    let id = token
        .rsplit("::")
        .next()
        .unwrap_or(token)
        .split('.')
        .next()
        .unwrap_or(token);
    let (client, _) = admin(kubeconfig).await?;
    let secrets: Api<Secret> = Api::namespaced(client, TOKEN_NAMESPACE);
    secrets
        .delete(&format!("token-{id}"), &DeleteParams::default())
        .await
        .with_context(|| format!("delete token {id}"))?;
    println!("token {id} deleted");
    Ok(())
}

/// Cuts a node off: deletes the records (CSRs) of the certificates issued to it, which the
/// server then refuses. The node joins again only with a valid join token.
pub async fn revoke_node(kubeconfig: &Path, node: &str) -> anyhow::Result<()> {
    let (client, _) = admin(kubeconfig).await?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let cn = format!("system:node:{node}");
    let list = csrs
        .list(&ListParams::default())
        .await
        .context("list CSRs")?;
    let mut revoked = 0;
    for csr in list.items {
        let issued = csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .and_then(|c| CertInfo::parse_pem(&String::from_utf8_lossy(&c.0)).ok());
        if issued.is_some_and(|i| i.common_name == cn) {
            let name = csr.metadata.name.unwrap_or_default();
            csrs.delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("delete CSR {name}"))?;
            println!("revoked certificate {name} of node {node}");
            revoked += 1;
        }
    }
    if revoked == 0 {
        anyhow::bail!("node {node} has no issued certificate");
    }
    Ok(())
}
