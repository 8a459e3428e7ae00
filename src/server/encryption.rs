//! Encryption at rest, as kube-apiserver's `--encryption-provider-config` does it
//! (staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/aes): an EncryptionConfiguration names,
//! per resource, an ordered list of providers; the first one writes, each of them reads what it
//! wrote. Providers: `aesgcm` (AES-GCM with a random 12-byte nonce, the object's storage key as
//! additional data, keys of 16 or 32 bytes) and `identity` (plain). A stored value reads
//! `k8s:enc:aesgcm:v1:KEYNAME:` + base64(nonce || ciphertext || tag) (base64: the store's column
//! is text). Rotating a key: list a new key first (new writes use it; old values still read),
//! rewrite the objects, then drop the old key.
//!
//! [`Transformer`] is the seam: a store calls it on each value it writes and reads (the SQLite
//! store now; an etcd backend the same way), and knows nothing else of encryption.
use std::path::Path;

use base64::Engine as _;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("reading the encryption configuration {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the encryption configuration {path} is not an EncryptionConfiguration")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("the encryption configuration: {0}")]
    Invalid(String),
    #[error("{key}: encrypted with {provider} key {name:?}, which the encryption configuration does not hold")]
    UnknownKey {
        key: String,
        provider: String,
        name: String,
    },
    #[error(
        "{key}: stored in clear, and the encryption configuration has no identity provider for it"
    )]
    NotEncrypted { key: String },
    #[error("{key}: cannot decrypt with key {name:?} (wrong key or corrupted value)")]
    Decrypt { key: String, name: String },
    #[error("{key}: encryption failed")]
    Encrypt { key: String },
}

/// What a store hands to a [`Transformer`] with a value: which object it is.
#[derive(Debug, Clone, Copy)]
pub struct StorageKey<'a> {
    /// The resource's storage key (`secrets`, `daemonsets.apps`).
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl StorageKey<'_> {
    fn path(&self) -> String {
        format!("/{}/{}/{}", self.resource, self.namespace, self.name)
    }
}

/// Values on their way into and out of a store.
pub trait Transformer: Send + Sync {
    fn transform_to_storage(
        &self,
        key: StorageKey<'_>,
        plain: String,
    ) -> Result<String, EncryptionError>;
    fn transform_from_storage(
        &self,
        key: StorageKey<'_>,
        stored: String,
    ) -> Result<String, EncryptionError>;
}

/// Everything stored as it is.
pub struct Identity;

impl Transformer for Identity {
    fn transform_to_storage(
        &self,
        _: StorageKey<'_>,
        plain: String,
    ) -> Result<String, EncryptionError> {
        Ok(plain)
    }
    fn transform_from_storage(
        &self,
        key: StorageKey<'_>,
        stored: String,
    ) -> Result<String, EncryptionError> {
        match parse_prefix(&stored) {
            Some((provider, name, _)) => Err(EncryptionError::UnknownKey {
                key: key.path(),
                provider: provider.into(),
                name: name.into(),
            }),
            None => Ok(stored),
        }
    }
}

// The configuration file, as kube-apiserver reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<ProviderConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderConfig {
    aesgcm: Option<KeysConfig>,
    aescbc: Option<KeysConfig>,
    secretbox: Option<KeysConfig>,
    kms: Option<serde_yaml::Value>,
    identity: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
struct KeysConfig {
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
struct KeyConfig {
    name: String,
    secret: String,
}

struct Key {
    name: String,
    key: LessSafeKey,
}

enum Provider {
    AesGcm(Vec<Key>),
    Identity,
}

/// The providers of some resources, in order.
struct Rule {
    resources: Vec<String>,
    providers: Vec<Provider>,
}

/// The transformer an EncryptionConfiguration describes.
pub struct Config {
    rules: Vec<Rule>,
    rng: SystemRandom,
}

const PREFIX: &str = "k8s:enc:";

/// `k8s:enc:PROVIDER:v1:NAME:REST` -> (PROVIDER, NAME, REST).
fn parse_prefix(stored: &str) -> Option<(&str, &str, &str)> {
    let rest = stored.strip_prefix(PREFIX)?;
    let (provider, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("v1:")?;
    let (name, rest) = rest.split_once(':')?;
    Some((provider, name, rest))
}

/// Whether a rule's resource pattern (`secrets`, `*.apps`, `*.*`) names `resource` (a storage
/// key: `secrets`, `daemonsets.apps`).
fn matches(pattern: &str, resource: &str) -> bool {
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    match pattern {
        "*.*" => true,
        "*." => group.is_empty(),
        p if p.starts_with("*.") => group == &p[2..],
        p => {
            let (pp, pg) = p.split_once('.').unwrap_or((p, ""));
            pp == plural && pg == group
        }
    }
}

impl Config {
    /// Reads and checks `--encryption-provider-config`.
    pub fn load(path: &Path) -> Result<Config, EncryptionError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| EncryptionError::Read {
            path: p.clone(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            EncryptionError::Parse { source, .. } => EncryptionError::Parse { path: p, source },
            e => e,
        })
    }

    pub fn parse(text: &str) -> Result<Config, EncryptionError> {
        let file: ConfigFile =
            serde_yaml::from_str(text).map_err(|source| EncryptionError::Parse {
                path: String::new(),
                source,
            })?;
        let invalid = |m: String| EncryptionError::Invalid(m);
        if file.kind != "EncryptionConfiguration" {
            return Err(invalid(format!(
                "kind is {:?}, not EncryptionConfiguration",
                file.kind
            )));
        }
        let mut rules = Vec::new();
        for (i, r) in file.resources.into_iter().enumerate() {
            if r.resources.is_empty() || r.providers.is_empty() {
                return Err(invalid(format!(
                    "resources[{i}]: needs resources and providers"
                )));
            }
            let mut providers = Vec::new();
            for (j, p) in r.providers.into_iter().enumerate() {
                let at = format!("resources[{i}].providers[{j}]");
                let set = [
                    p.aesgcm.is_some(),
                    p.aescbc.is_some(),
                    p.secretbox.is_some(),
                    p.kms.is_some(),
                    p.identity.is_some(),
                ];
                if set.iter().filter(|x| **x).count() != 1 {
                    return Err(invalid(format!("{at}: exactly one provider type")));
                }
                if p.aescbc.is_some() || p.secretbox.is_some() || p.kms.is_some() {
                    return Err(invalid(format!(
                        "{at}: only aesgcm and identity are supported by this server"
                    )));
                }
                match p.aesgcm {
                    Some(keys) => {
                        if keys.keys.is_empty() {
                            return Err(invalid(format!("{at}.aesgcm: needs at least one key")));
                        }
                        let mut out = Vec::new();
                        for k in keys.keys {
                            out.push(aes_key(&at, k)?);
                        }
                        providers.push(Provider::AesGcm(out));
                    }
                    None => providers.push(Provider::Identity),
                }
            }
            rules.push(Rule {
                resources: r.resources,
                providers,
            });
        }
        Ok(Config {
            rules,
            rng: SystemRandom::new(),
        })
    }

    fn providers(&self, resource: &str) -> Option<&[Provider]> {
        self.rules
            .iter()
            .find(|r| r.resources.iter().any(|p| matches(p, resource)))
            .map(|r| r.providers.as_slice())
    }
}

fn aes_key(at: &str, k: KeyConfig) -> Result<Key, EncryptionError> {
    let invalid =
        |m: String| EncryptionError::Invalid(format!("{at}.aesgcm key {:?}: {m}", k.name));
    if k.name.is_empty() || k.name.contains(':') {
        return Err(invalid("a key needs a name without ':'".into()));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(k.secret.trim())
        .map_err(|e| invalid(format!("secret is not base64: {e}")))?;
    let alg = match bytes.len() {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        n => return Err(invalid(format!("secret is {n} bytes: want 16 or 32"))),
    };
    let key = UnboundKey::new(alg, &bytes).map_err(|_| invalid("unusable key".into()))?;
    Ok(Key {
        name: k.name.clone(),
        key: LessSafeKey::new(key),
    })
}

impl Transformer for Config {
    fn transform_to_storage(
        &self,
        key: StorageKey<'_>,
        plain: String,
    ) -> Result<String, EncryptionError> {
        let Some(Provider::AesGcm(keys)) = self.providers(key.resource).and_then(|p| p.first())
        else {
            return Ok(plain);
        };
        let k = &keys[0];
        let fail = || EncryptionError::Encrypt { key: key.path() };
        let mut nonce = [0u8; 12];
        self.rng.fill(&mut nonce).map_err(|_| fail())?;
        let mut data = plain.into_bytes();
        k.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.path().as_bytes()),
                &mut data,
            )
            .map_err(|_| fail())?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(format!(
            "{PREFIX}aesgcm:v1:{}:{}",
            k.name,
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    fn transform_from_storage(
        &self,
        key: StorageKey<'_>,
        stored: String,
    ) -> Result<String, EncryptionError> {
        let providers = self.providers(key.resource).unwrap_or(&[]);
        let Some((provider, name, rest)) = parse_prefix(&stored) else {
            let identity =
                providers.is_empty() || providers.iter().any(|p| matches!(p, Provider::Identity));
            return if identity {
                Ok(stored)
            } else {
                Err(EncryptionError::NotEncrypted { key: key.path() })
            };
        };
        let unknown = || EncryptionError::UnknownKey {
            key: key.path(),
            provider: provider.into(),
            name: name.into(),
        };
        let k = providers
            .iter()
            .filter(|_| provider == "aesgcm")
            .flat_map(|p| match p {
                Provider::AesGcm(keys) => keys.as_slice(),
                Provider::Identity => &[],
            })
            .find(|k| k.name == name)
            .ok_or_else(unknown)?;
        let fail = || EncryptionError::Decrypt {
            key: key.path(),
            name: name.into(),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| fail())?;
        if raw.len() < 12 {
            return Err(fail());
        }
        let (nonce, sealed) = raw.split_at(12);
        let mut sealed = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let plain = k
            .key
            .open_in_place(nonce, Aad::from(key.path().as_bytes()), &mut sealed)
            .map_err(|_| fail())?;
        String::from_utf8(plain.to_vec()).map_err(|_| fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="; // 32 bytes
    const K2: &str = "YWJjZGVmZ2hpamtsbW5vcA=="; // 16 bytes

    fn config(providers: &str) -> String {
        format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}")
    }

    fn aes(keys: &[(&str, &str)]) -> String {
        let mut s = "  - aesgcm:\n      keys:\n".to_string();
        for (n, k) in keys {
            s.push_str(&format!("      - name: {n}\n        secret: {k}\n"));
        }
        s
    }

    const IDENTITY: &str = "  - identity: {}\n";

    fn key(resource: &str) -> StorageKey<'_> {
        StorageKey {
            resource,
            namespace: "d",
            name: "s",
        }
    }

    #[test]
    fn configurations_are_checked() {
        // (file, Ok or a part of the error)
        let cases = [
            (config(&aes(&[("k1", K1)])), Ok(())),
            (config(&(aes(&[("k1", K1), ("k2", K2)]) + IDENTITY)), Ok(())),
            (config(IDENTITY), Ok(())),
            (
                config(&aes(&[("k1", "c2hvcnQ=")])),
                Err("secret is 5 bytes: want 16 or 32"),
            ),
            (config(&aes(&[("k1", "\"@@\"")])), Err("not base64")),
            (config(&aes(&[])), Err("needs at least one key")),
            (
                config("  - aescbc:\n      keys: [{name: a, secret: x}]\n"),
                Err("only aesgcm and identity"),
            ),
            (
                "kind: Other\n".to_string(),
                Err("not EncryptionConfiguration"),
            ),
            ("[".to_string(), Err("is not an EncryptionConfiguration")),
        ];
        for (text, want) in cases {
            let got = Config::parse(&text).map(|_| ()).map_err(|e| {
                let mut m = e.to_string();
                if let Some(s) = std::error::Error::source(&e) {
                    m.push_str(&format!(": {s}"));
                }
                m
            });
            match (&got, want) {
                (Ok(()), Ok(())) => {}
                (Err(m), Err(part)) => assert!(m.contains(part), "{text}: {m}"),
                _ => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn values_round_trip_rotate_and_fail_clearly() {
        let k1 = Config::parse(&config(&aes(&[("k1", K1)]))).unwrap();
        let plain = r#"{"data":{"password":"aHVudGVyMg=="}}"#.to_string();
        let stored = k1
            .transform_to_storage(key("secrets"), plain.clone())
            .unwrap();
        assert!(stored.starts_with("k8s:enc:aesgcm:v1:k1:"), "{stored}");
        assert!(!stored.contains("aHVudGVyMg"));
        assert_eq!(
            k1.transform_from_storage(key("secrets"), stored.clone())
                .unwrap(),
            plain
        );
        // other resources are not touched
        assert_eq!(
            k1.transform_to_storage(key("configmaps"), plain.clone())
                .unwrap(),
            plain
        );
        // bound to its object: moved to another name, it does not decrypt
        let moved = StorageKey {
            name: "t",
            ..key("secrets")
        };
        assert!(matches!(
            k1.transform_from_storage(moved, stored.clone()),
            Err(EncryptionError::Decrypt { .. })
        ));
        // rotation: k2 first writes with k2 and still reads k1's values
        let rotated = Config::parse(&config(&aes(&[("k2", K2), ("k1", K1)]))).unwrap();
        assert_eq!(
            rotated
                .transform_from_storage(key("secrets"), stored.clone())
                .unwrap(),
            plain
        );
        assert!(rotated
            .transform_to_storage(key("secrets"), plain.clone())
            .unwrap()
            .starts_with("k8s:enc:aesgcm:v1:k2:"));
        // k1 dropped: a clear error, not garbage
        let only_k2 = Config::parse(&config(&aes(&[("k2", K2)]))).unwrap();
        let e = only_k2
            .transform_from_storage(key("secrets"), stored.clone())
            .unwrap_err();
        assert_eq!(e.to_string(), "/secrets/d/s: encrypted with aesgcm key \"k1\", which the encryption configuration does not hold");
        // a server without the configuration says so too
        assert!(matches!(
            Identity.transform_from_storage(key("secrets"), stored),
            Err(EncryptionError::UnknownKey { .. })
        ));
        // plain values read only where identity is a provider (or the resource is not listed)
        assert!(matches!(
            k1.transform_from_storage(key("secrets"), plain.clone()),
            Err(EncryptionError::NotEncrypted { .. })
        ));
        let migrating = Config::parse(&config(&(aes(&[("k1", K1)]) + IDENTITY))).unwrap();
        assert_eq!(
            migrating
                .transform_from_storage(key("secrets"), plain.clone())
                .unwrap(),
            plain
        );
        assert_eq!(
            k1.transform_from_storage(key("configmaps"), plain.clone())
                .unwrap(),
            plain
        );
    }

    #[test]
    fn resource_patterns() {
        let cases = [
            ("secrets", "secrets", true),
            ("secrets", "configmaps", false),
            ("*.*", "daemonsets.apps", true),
            ("*.apps", "daemonsets.apps", true),
            ("*.apps", "secrets", false),
            ("*.", "secrets", true),
            ("daemonsets.apps", "daemonsets.apps", true),
        ];
        for (p, r, want) in cases {
            assert_eq!(matches(p, r), want, "{p} {r}");
        }
    }
}
