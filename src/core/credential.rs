//! Credentials as strings and numbers, without I/O: bearer tokens `ID.SECRET` (kubeadm's bootstrap
//! token format, 6 and 16 characters of `[a-z0-9]`), join tokens `sha256:HEX::ID.SECRET` (the hash
//! of the CA's SubjectPublicKeyInfo as kubeadm's `--discovery-token-ca-cert-hash` pins it, then the
//! token, as k3s's secure token form), the SHA-256 a token record stores instead of the secret, and
//! when a certificate is renewed (the kubelet's rotation deadline).
use std::fmt;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token is ID.SECRET: 6 and 16 characters of a-z and 0-9")]
    Format,
    #[error("a join token is sha256:HASH::ID.SECRET (HASH: 64 hex digits of the CA's public key hash), as `daemonset-agent token create` prints it")]
    JoinFormat,
    #[error("a CA hash is sha256: and 64 hex digits")]
    CaHash,
}

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
/// The characters of ids and secrets.
pub const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

/// A bearer token: the id is public (it names the record), the secret is not.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for Token {
    /// Never the secret: tokens end up in logs through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}.<secret>)", self.id)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl Token {
    pub fn parse(s: &str) -> Result<Token, TokenError> {
        let (id, secret) = s.split_once('.').ok_or(TokenError::Format)?;
        if !is_token_part(id, ID_LEN) || !is_token_part(secret, SECRET_LEN) {
            return Err(TokenError::Format);
        }
        Ok(Token {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// A token from 22 random bytes (each mapped into the alphabet).
    pub fn from_random(bytes: &[u8; ID_LEN + SECRET_LEN]) -> Token {
        let pick = |b: &u8| ALPHABET[*b as usize % ALPHABET.len()] as char;
        Token {
            id: bytes[..ID_LEN].iter().map(pick).collect(),
            secret: bytes[ID_LEN..].iter().map(pick).collect(),
        }
    }

    /// What a token record stores: the hex SHA-256 of the secret.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }
}

/// The pin of a CA: SHA-256 of its certificate's SubjectPublicKeyInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaHash(pub [u8; 32]);

impl CaHash {
    pub fn of_spki(spki_der: &[u8]) -> CaHash {
        CaHash(Sha256::digest(spki_der).into())
    }

    pub fn parse(s: &str) -> Result<CaHash, TokenError> {
        let hex = s.strip_prefix("sha256:").ok_or(TokenError::CaHash)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).map_err(|_| TokenError::CaHash)?;
        Ok(CaHash(out))
    }
}

impl fmt::Display for CaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

/// What a node joins with: the CA it must find, and the token it authenticates with until it has
/// a certificate of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca: CaHash,
    pub token: Token,
}

impl JoinToken {
    pub fn parse(s: &str) -> Result<JoinToken, TokenError> {
        let (ca, token) = s.trim().split_once("::").ok_or(TokenError::JoinFormat)?;
        Ok(JoinToken {
            ca: CaHash::parse(ca).map_err(|_| TokenError::JoinFormat)?,
            token: Token::parse(token).map_err(|_| TokenError::JoinFormat)?,
        })
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.ca, self.token)
    }
}

/// When a certificate valid from `not_before` to `not_after` (seconds since the epoch) is renewed:
/// at `fraction` (0.7 to 0.9, jittered by the caller as the kubelet does) of its lifetime.
pub fn rotation_deadline(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    let fraction = fraction.clamp(0.0, 1.0);
    let lifetime = (not_after - not_before).max(0);
    not_before + (lifetime as f64 * fraction) as i64
}

/// Whether a certificate lacks any of `wanted` names, or is past its rotation deadline at `now`.
pub fn needs_reissue(
    have_names: &[String],
    wanted: &[String],
    not_before: i64,
    not_after: i64,
    now: i64,
) -> bool {
    wanted.iter().any(|w| !have_names.contains(w))
        || now >= rotation_deadline(not_before, not_after, 2.0 / 3.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_print() {
        let hash = format!("sha256:{}", "ab".repeat(32));
        type Case<'a> = (String, Result<(&'a str, &'a str), TokenError>);
        let cases: Vec<Case> = vec![
            (
                format!("{hash}::abcdef.0123456789abcdef"),
                Ok(("abcdef", "0123456789abcdef")),
            ),
            (
                format!(" {hash}::abcdef.0123456789abcdef\n"),
                Ok(("abcdef", "0123456789abcdef")),
            ),
            (
                "abcdef.0123456789abcdef".into(),
                Err(TokenError::JoinFormat),
            ),
            (
                format!("{hash}::ABCDEF.0123456789abcdef"),
                Err(TokenError::JoinFormat),
            ),
            (
                format!("{hash}::abcde.0123456789abcdef"),
                Err(TokenError::JoinFormat),
            ),
            (
                format!("{hash}::abcdef.0123456789abcde"),
                Err(TokenError::JoinFormat),
            ),
            (
                format!("sha1:{}::abcdef.0123456789abcdef", "ab".repeat(32)),
                Err(TokenError::JoinFormat),
            ),
            (
                format!("sha256:{}::abcdef.0123456789abcdef", "ab".repeat(31)),
                Err(TokenError::JoinFormat),
            ),
            (
                format!("sha256:{}::abcdef.0123456789abcdef", "zz".repeat(32)),
                Err(TokenError::JoinFormat),
            ),
        ];
        for (s, want) in cases {
            let got = JoinToken::parse(&s);
            match (&got, &want) {
                (Ok(j), Ok((id, secret))) => {
                    assert_eq!(
                        (j.token.id.as_str(), j.token.secret.as_str()),
                        (*id, *secret)
                    );
                    assert_eq!(j.to_string(), s.trim(), "round trip");
                }
                (Err(e), Err(w)) => assert_eq!(e, w, "{s}"),
                _ => panic!("{s}: {got:?}, want {want:?}"),
            }
        }
        assert_eq!(Token::parse("abc.def"), Err(TokenError::Format));
        assert_eq!(
            Token::parse("abcdef0123456789abcdefx"),
            Err(TokenError::Format)
        );
    }

    #[test]
    fn random_tokens_parse_and_secrets_never_print() {
        let t = Token::from_random(&[255; 22]);
        assert_eq!(Token::parse(&t.to_string()), Ok(t.clone()));
        assert!(!format!("{t:?}").contains(&t.secret));
        assert_eq!(t.secret_hash().len(), 64);
        assert_ne!(t.secret_hash(), Token::from_random(&[0; 22]).secret_hash());
    }

    #[test]
    fn rotation_at_a_fraction_of_the_lifetime() {
        // (not_before, not_after, fraction, deadline)
        let cases = [
            (0, 1000, 0.7, 700),
            (0, 1000, 0.9, 900),
            (100, 100, 0.8, 100),
            (0, 1000, 1.5, 1000),
            (500, 0, 0.8, 500),
        ];
        for (nb, na, f, want) in cases {
            assert_eq!(rotation_deadline(nb, na, f), want, "{nb} {na} {f}");
        }
        let names = vec!["a".to_string(), "127.0.0.1".to_string()];
        // (wanted names, now, reissue)
        let cases = [
            (vec!["a"], 0, false),
            (vec!["a", "b"], 0, true),
            (vec![], 665, false),
            (vec![], 666, true),
        ];
        for (wanted, now, want) in cases {
            let wanted: Vec<String> = wanted.into_iter().map(String::from).collect();
            assert_eq!(
                needs_reissue(&names, &wanted, 0, 1000, now),
                want,
                "{wanted:?} {now}"
            );
        }
    }
}
