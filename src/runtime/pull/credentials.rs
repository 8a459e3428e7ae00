//! The registry credentials a pull uses: the node's docker config.json, and a pod's
//! imagePullSecrets over them.
use std::path::Path;

use oci_client::secrets::RegistryAuth;

/// The node's registry credentials: the `auths` of a docker config.json (what `docker login`
/// writes), by registry host: `{"auths": {"HOST[:PORT]": {"auth": "base64(user:password)"}}}`
/// or with `username` and `password`. Registries it does not name are pulled from anonymously.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    by_host: std::collections::BTreeMap<String, (String, String)>,
}

/// Why a credentials file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("read {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {}: {problem}", path.display())]
    Parse {
        path: std::path::PathBuf,
        problem: String,
    },
}

/// A registry as config.json keys name it, as the host (and port) references resolve to:
/// `https://index.docker.io/v1/` and `docker.io` are Docker Hub's `index.docker.io`.
fn registry_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
        h => h.to_string(),
    }
}

impl Credentials {
    /// Reads a docker config.json.
    pub fn load(path: &Path) -> std::result::Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Credentials::parse(&text).map_err(|problem| CredentialsError::Parse {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parses a docker config.json's text.
    pub fn parse(text: &str) -> std::result::Result<Credentials, String> {
        use base64::Engine as _;
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut by_host = std::collections::BTreeMap::new();
        for (key, entry) in v["auths"].as_object().into_iter().flatten() {
            let pair = match (entry["auth"].as_str(), entry["username"].as_str()) {
                (Some(auth), _) if !auth.is_empty() => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| format!("auths.{key}.auth: {e}"))?;
                    let raw = String::from_utf8_lossy(&raw).to_string();
                    let (u, p) = raw
                        .split_once(':')
                        .ok_or_else(|| format!("auths.{key}.auth is not user:password"))?;
                    (u.to_string(), p.to_string())
                }
                (_, Some(user)) => (
                    user.to_string(),
                    entry["password"].as_str().unwrap_or_default().to_string(),
                ),
                _ => return Err(format!("auths.{key}: neither auth nor username")),
            };
            by_host.insert(registry_key(key), pair);
        }
        Ok(Credentials { by_host })
    }

    /// These credentials, and `node`'s for the registries these do not name: a pod's
    /// imagePullSecrets take precedence over the node's, as the kubelet tries them first.
    pub fn over(&self, node: &Credentials) -> Credentials {
        let mut by_host = node.by_host.clone();
        by_host.extend(self.by_host.clone());
        Credentials { by_host }
    }

    /// The authentication for `registry` (as a reference resolves it).
    pub fn auth(&self, registry: &str) -> RegistryAuth {
        match self.by_host.get(&registry_key(registry)) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_a_docker_config() {
        let c = Credentials::parse(
            r#"{"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="},
                "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.auth("127.0.0.1:5000"),
            RegistryAuth::Basic("user".into(), "pa:ss".into())
        );
        assert_eq!(
            c.auth("index.docker.io"),
            RegistryAuth::Basic("hub".into(), "pw".into())
        );
        assert_eq!(
            c.auth("docker.io"),
            RegistryAuth::Basic("hub".into(), "pw".into())
        );
        assert_eq!(c.auth("quay.io"), RegistryAuth::Anonymous);
        let pod = Credentials::parse(
            r#"{"auths": {"127.0.0.1:5000": {"username": "pod", "password": "p"}, "quay.io": {"username": "q", "password": "r"}}}"#,
        )
        .unwrap();
        let merged = pod.over(&c);
        assert_eq!(
            merged.auth("127.0.0.1:5000"),
            RegistryAuth::Basic("pod".into(), "p".into())
        );
        assert_eq!(
            merged.auth("quay.io"),
            RegistryAuth::Basic("q".into(), "r".into())
        );
        assert_eq!(merged.auth("docker.io"), c.auth("docker.io"));
        for bad in [
            "{",
            r#"{"auths": {"r": {}}}"#,
            r#"{"auths": {"r": {"auth": "bm9jb2xvbg=="}}}"#,
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Credentials::parse("{}").unwrap(), Credentials::default());
    }
}
