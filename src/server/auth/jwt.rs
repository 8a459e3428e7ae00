//! Compact JWS with ES256 (ECDSA P-256, SHA-256; RFC 7515/7518), signed and verified with ring,
//! the crypto provider rustls already uses. The key is made at the server's first start in
//! `DATA_DIR/service-account.key` (PKCS#8 PEM, mode 0600), as kube-apiserver reads its
//! `--service-account-signing-key-file`; the `kid` header is kube-apiserver's: the unpadded
//! base64url SHA-256 of the public key's PKIX (SubjectPublicKeyInfo) DER.
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("{what} {path}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PKCS#8 P-256 private key in PEM: {why}")]
    Key { path: PathBuf, why: String },
    #[error("cannot make a key: {0}")]
    Generate(String),
    #[error("cannot sign")]
    Sign,
    #[error("the token is not a compact JWS (three base64url parts)")]
    Format,
    #[error("the token's header is not ES256 with this server's key id")]
    Header,
    #[error("the token's signature does not verify")]
    Signature,
}

/// The DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of 66
/// bytes); the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The signing key of the service account tokens.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(b64).ok().filter(|d| !d.is_empty())
}

impl SigningKey {
    /// A key from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| e.to_string())?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(SigningKey { pair, rng, kid })
    }

    /// A key from PKCS#8 PEM (`PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<SigningKey, String> {
        let der = pem_body(pem).ok_or_else(|| "no PRIVATE KEY block".to_string())?;
        SigningKey::from_pkcs8(&der)
    }

    /// A new random key, and its PKCS#8 DER.
    pub fn generate() -> Result<(SigningKey, Vec<u8>), JwtError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| JwtError::Generate(e.to_string()))?;
        let der = doc.as_ref().to_vec();
        let key = SigningKey::from_pkcs8(&der).map_err(JwtError::Generate)?;
        Ok((key, der))
    }

    /// The key at `path`, made there (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, JwtError> {
        match std::fs::read_to_string(path) {
            Ok(pem) => SigningKey::from_pem(&pem).map_err(|why| JwtError::Key {
                path: path.to_path_buf(),
                why,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, der) = SigningKey::generate()?;
                crate::pki::write_private(path, crate::pki::pem("PRIVATE KEY", &der).as_bytes())
                    .map_err(|source| JwtError::File {
                        what: "writing",
                        path: path.to_path_buf(),
                        source,
                    })?;
                tracing::info!(path = %path.display(), kid = key.kid.as_str(), "made the service account signing key");
                Ok(key)
            }
            Err(source) => Err(JwtError::File {
                what: "reading",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `claims` signed: `HEADER.PAYLOAD.SIGNATURE`.
    pub fn sign(&self, claims: &Value) -> Result<String, JwtError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| JwtError::Sign)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The claims of a token this key signed (the signature checked, nothing else).
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Format);
        };
        let decode = |x: &str| URL_SAFE_NO_PAD.decode(x).map_err(|_| JwtError::Format);
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::Format)?;
        if header["alg"] != "ES256" || header["kid"] != self.kid.as_str() {
            return Err(JwtError::Header);
        }
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.pair.public_key());
        let input_len = h.len() + 1 + p.len();
        public
            .verify(&token.as_bytes()[..input_len], &decode(s)?)
            .map_err(|_| JwtError::Signature)?;
        serde_json::from_slice(&decode(p)?).map_err(|_| JwtError::Format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_unaltered_and_with_their_key() {
        let (key, _) = SigningKey::generate().unwrap();
        let claims = json!({"sub": "system:serviceaccount:d:sa", "exp": 1});
        let t = key.sign(&claims).unwrap();
        assert_eq!(key.verify(&t).unwrap(), claims);
        assert_eq!(t.split('.').count(), 3);
        // another key (another kid), an altered payload, garbage
        let (other, _) = SigningKey::generate().unwrap();
        assert!(matches!(other.verify(&t), Err(JwtError::Header)));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "system:admin"}).to_string());
        parts[1] = &forged;
        assert!(matches!(
            key.verify(&parts.join(".")),
            Err(JwtError::Signature)
        ));
        for bad in ["", "a.b", "a.b.c.d", "!.!.!"] {
            assert!(key.verify(bad).is_err(), "{bad}");
        }
        // the header says what it is
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header, json!({"alg": "ES256", "kid": key.kid()}));
    }

    #[test]
    fn the_key_is_made_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        let a = SigningKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
        let t = a.sign(&json!({"x": 1})).unwrap();
        assert_eq!(b.verify(&t).unwrap(), json!({"x": 1}));
        std::fs::write(&path, "garbage").unwrap();
        let e = SigningKey::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("not a PKCS#8"), "{e}");
    }
}
