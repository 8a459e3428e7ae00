//! Image references, parsed and normalized as docker/distribution's `reference` package
//! (`ParseNormalizedNamed`) does, which is what containerd's CRI and `ctr` record:
//!
//! ```text
//! reference   := name [ ":" tag ] [ "@" digest ]
//! name        := [ domain "/" ] path-component ( "/" path-component )*
//! domain      := host [ ":" port ]          host := domain-name | "[" IPv6 "]"
//! path-comp.  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag         := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest      := algorithm ":" [A-Fa-f0-9]{32,}
//! ```
//!
//! Written by hand: the regular expression the `oci-spec` crate compiles for the same grammar
//! costs the agent about 7 MiB of heap for its whole life (its `\w` is Unicode).

const NAME_TOTAL_LENGTH_MAX: usize = 255;
const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";

/// A normalized reference: `docker.io/library/busybox:latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Parses and normalizes `s`: the Docker Hub domain and its `library/` prefix are added, and
/// `:latest` when neither tag nor digest is given. Errors read as distribution's do.
pub fn parse(s: &str) -> Result<ImageRef, String> {
    if s.is_empty() {
        return Err("repository name must have at least one component".into());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    // a tag follows the last ':' that has no '/' after it ("host:5000/repo" has no tag)
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if name.is_empty() {
        return Err("invalid reference format".into());
    }
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err("invalid reference format".into());
        }
    }
    if let Some(d) = digest {
        valid_digest(d)?;
    }
    // distribution's splitDockerDomain: the first component is a domain when it looks like one
    let (domain, remote) = match name.split_once('/') {
        Some((first, remote))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, remote)
        }
        _ => (DEFAULT_DOMAIN, name),
    };
    if domain != DEFAULT_DOMAIN && !valid_domain(domain) {
        return Err("invalid reference format".into());
    }
    if !remote.split('/').all(valid_path_component) {
        return Err(if remote.bytes().any(|b| b.is_ascii_uppercase()) {
            "invalid reference format: repository name must be lowercase".into()
        } else {
            "invalid reference format".into()
        });
    }
    let registry = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let repository = if registry == DEFAULT_DOMAIN && !remote.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{remote}")
    } else {
        remote.to_string()
    };
    // distribution's Parse limits the path of the normalized name (`library/` included, the
    // domain not), so a name and its normalized form get the same verdict
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(format!(
            "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        ));
    }
    Ok(ImageRef {
        registry: registry.to_string(),
        repository,
        tag: match (tag, digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t.map(str::to_string),
        },
        digest: digest.map(str::to_string),
    })
}

fn alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum_lower(first) || !alnum_lower(last) {
        return false;
    }
    // separators between alphanumeric runs
    let mut i = 0;
    while i < b.len() {
        if alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }
        _ => false,
    }
}

/// `host [":" port]`, host a dotted name of components or a bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(v6) = d.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    host.is_empty() && d.starts_with('[') || host.split('.').all(valid_domain_component)
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `[\w][\w.-]{0,127}` with Go's ASCII `\w`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// `algorithm ":" hex`, with the lengths of the registered algorithms checked.
fn valid_digest(d: &str) -> Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err("invalid digest format".into());
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|c| {
            let b = c.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
        });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid digest format".into());
    }
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(format!("unsupported digest algorithm {alg}")),
    };
    if hex.len() != want {
        return Err("invalid checksum digest length".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_as_distribution() {
        let with_digest = format!("busybox@{D}");
        let tag_and_digest = format!("quay.io/a/b:v1@{D}");
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            ("busybox:v1", "docker.io/library/busybox:v1".into()),
            ("library/busybox", "docker.io/library/busybox:latest".into()),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest".into(),
            ),
            ("docker.io/x/y", "docker.io/x/y:latest".into()),
            ("quay.io/x/y:1", "quay.io/x/y:1".into()),
            (
                "127.0.0.1:5000/busybox:v1",
                "127.0.0.1:5000/busybox:v1".into(),
            ),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest".into()),
            ("localhost/a", "localhost/a:latest".into()),
            ("[::1]:5000/a:t", "[::1]:5000/a:t".into()),
            ("test.com:5000", "docker.io/library/test.com:5000".into()),
            ("Registry/a", "Registry/a:latest".into()),
            (
                "a/b-c__d.e/f---g",
                "docker.io/a/b-c__d.e/f---g:latest".into(),
            ),
            ("x:V1.0_rc-2", "docker.io/library/x:V1.0_rc-2".into()),
            (&with_digest, format!("docker.io/library/busybox@{D}")),
            (&tag_and_digest, format!("quay.io/a/b:v1@{D}")),
        ] {
            assert_eq!(parse(input).map(|r| r.to_string()), Ok(want), "{input}");
        }
    }

    #[test]
    fn splits_into_parts() {
        let r = parse("127.0.0.1:5000/busybox:v1").unwrap();
        assert_eq!(
            r,
            ImageRef {
                registry: "127.0.0.1:5000".into(),
                repository: "busybox".into(),
                tag: Some("v1".into()),
                digest: None,
            }
        );
        assert_eq!(parse(&format!("a@{D}")).unwrap().tag, None);
    }

    /// Found by fuzz/ (reference): the limit was on the name as written, so a 249-character
    /// official image passed and its normalized form (`docker.io/library/...`) did not.
    #[test]
    fn limits_the_normalized_path_to_255_characters() {
        let official = "a".repeat(249);
        assert!(parse(&official).is_err(), "library/ + 249 characters");
        assert!(parse(&format!("docker.io/library/{official}")).is_err());
        let path = format!("x/{}", "b".repeat(253));
        let r = parse(&format!("quay.io/{path}:v1")).expect("a path of 255 characters");
        assert_eq!(r.repository, path);
        assert_eq!(parse(&r.to_string()), Ok(r));
        assert!(parse(&format!("quay.io/{path}b")).is_err());
    }

    #[test]
    fn refuses_what_distribution_refuses() {
        let long = format!("a/{}", "b".repeat(260));
        let long_tag = format!("a:{}", "t".repeat(129));
        for bad in [
            "",
            "a b",
            ":tag",
            "Busybox",
            "docker.io/Busybox",
            "busybox@sha256:nothex",
            "busybox@sha256:0123",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            "busybox:bad:tag",
            "busybox:-tag",
            "a//b",
            "a/",
            "/a",
            "a_-b",
            "a.",
            "-a",
            "host.-x/a",
            "host:port/a",
            "[::1/a",
            "[zz]:5000/a",
            "busybox:tåg",
            &long,
            &long_tag,
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed as {:?}", parse(bad));
        }
    }
}
