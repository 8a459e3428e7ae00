//! Kubernetes' rules for names, label keys and values and annotations, with their messages: the
//! one home of k8s.io/apimachinery/pkg/util/validation here. Every caller (object validation,
//! selectors, node affinity, the agent's configuration) asks these functions, so the rules and
//! the words never drift apart.
//!
//! As in Go, each rule returns the list of problems; an empty list means valid.
use std::collections::BTreeMap;

/// Longest DNS-1123 label (namespaces, container and volume names).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Longest DNS-1123 subdomain (most object names).
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Longest name part of a qualified name (label keys).
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// Longest label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Largest total size of an object's annotations (keys and values), in bytes.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const EMPTY_MSG: &str = "must be non-empty";

/// `MaxLenError`.
fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => alnum(f) && alnum(l) && b.iter().all(|c| alnum(c) || *c == b'-'),
        _ => false,
    }
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `IsDNS1123Label`: namespaces, container names, volume names.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(s) {
        if matches_dns1123_subdomain(s) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(DNS1123_LABEL_MSG.to_string());
        }
    }
    errs
}

/// `IsDNS1123Subdomain`: most object names, label key prefixes.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(s) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// `IsQualifiedName`: label and annotation keys, `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {EMPTY_MSG}"));
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            name
        }
        _ => {
            errs.push(format!("a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {EMPTY_MSG}"));
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!("name part {}", max_len(QUALIFIED_NAME_MAX_LENGTH)));
    }
    if !matches_qualified_name(name) {
        errs.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    errs
}

/// `IsValidLabelValue`: empty, or a short qualified-name-like word.
pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len(LABEL_VALUE_MAX_LENGTH));
    }
    if !s.is_empty() && !matches_qualified_name(s) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// `IsValidPortName`: IANA service names (container port names).
pub fn is_valid_port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len(15));
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// `IsHTTPHeaderName`: `[-A-Za-z0-9]+`.
pub fn is_http_header_name(s: &str) -> Vec<String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Vec::new();
    }
    vec!["a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')".into()]
}

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const ENV_VAR_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";

/// `hasChDirPrefix`: a name that is a file name must not be `.`, `..` or start with `..`.
fn ch_dir_prefix(s: &str) -> Option<String> {
    match s {
        "." => Some("must not be '.'".into()),
        ".." => Some("must not be '..'".into()),
        _ if s.starts_with("..") => Some("must not start with '..'".into()),
        _ => None,
    }
}

/// `IsConfigMapKey`: the keys of ConfigMaps and Secrets (`[-._a-zA-Z0-9]+`, at most 253, not `.`
/// nor starting with `..`: a key is a file name in a volume).
pub fn is_config_map_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let charset = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if s.is_empty() || !s.bytes().all(charset) {
        errs.push(CONFIG_KEY_MSG.into());
    }
    errs.extend(ch_dir_prefix(s));
    errs
}

/// `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let ok = b
        .first()
        .is_some_and(|f| f.is_ascii_alphabetic() || matches!(f, b'-' | b'_' | b'.'))
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let mut errs = Vec::new();
    if !ok {
        errs.push(ENV_VAR_NAME_MSG.into());
    }
    errs.extend(ch_dir_prefix(s));
    errs
}

/// The size `ValidateAnnotationsSize` holds against [`TOTAL_ANNOTATION_SIZE_LIMIT`]: the bytes
/// of every key and value.
pub fn annotations_size(annotations: &BTreeMap<String, String>) -> usize {
    annotations.iter().map(|(k, v)| k.len() + v.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rule = fn(&str) -> Vec<String>;

    #[test]
    fn config_keys_and_env_var_names() {
        let long = "k".repeat(254);
        let cases: Vec<(&str, Rule, &[&str])> = vec![
            ("key.name", is_config_map_key, &[]),
            ("KEY_NAME-1", is_config_map_key, &[]),
            (".hidden", is_config_map_key, &[]),
            ("a/b", is_config_map_key, &[CONFIG_KEY_MSG]),
            ("", is_config_map_key, &[CONFIG_KEY_MSG]),
            (".", is_config_map_key, &["must not be '.'"]),
            ("..", is_config_map_key, &["must not be '..'"]),
            ("..data", is_config_map_key, &["must not start with '..'"]),
            (
                &long,
                is_config_map_key,
                &["must be no more than 253 characters"],
            ),
            ("MY_VAR", is_env_var_name, &[]),
            ("my.env-name", is_env_var_name, &[]),
            ("1ABC", is_env_var_name, &[ENV_VAR_NAME_MSG]),
            ("A B", is_env_var_name, &[ENV_VAR_NAME_MSG]),
            ("", is_env_var_name, &[ENV_VAR_NAME_MSG]),
        ];
        for (input, rule, want) in cases {
            assert_eq!(rule(input), want.to_vec(), "{input:?}");
        }
    }

    #[test]
    fn name_rules() {
        let long_label = "a".repeat(64);
        let long_subdomain = format!("{}b", "a.".repeat(127));
        let cases: Vec<(&str, Rule, &[&str])> = vec![
            ("my-name", is_dns1123_label, &[]),
            ("a.b", is_dns1123_label, &["must not contain dots"]),
            ("-a", is_dns1123_label, &[DNS1123_LABEL_MSG]),
            ("A", is_dns1123_label, &[DNS1123_LABEL_MSG]),
            (
                &long_label,
                is_dns1123_label,
                &["must be no more than 63 characters"],
            ),
            ("example.com", is_dns1123_subdomain, &[]),
            ("a..b", is_dns1123_subdomain, &[DNS1123_SUBDOMAIN_MSG]),
            (
                &long_subdomain,
                is_dns1123_subdomain,
                &["must be no more than 253 characters"],
            ),
            ("MyName", is_qualified_name, &[]),
            ("example.com/My_Name.1", is_qualified_name, &[]),
            ("/name", is_qualified_name, &["prefix part must be non-empty"]),
            (
                "example.com/",
                is_qualified_name,
                &["name part must be non-empty", "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"],
            ),
            ("Example.com/a", is_qualified_name, &["prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]),
            ("a/b/c", is_qualified_name, &["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]),
            ("", is_valid_label_value, &[]),
            ("my_value", is_valid_label_value, &[]),
            ("bad value", is_valid_label_value, &[LABEL_VALUE_MSG]),
            ("x_", is_valid_label_value, &[LABEL_VALUE_MSG]),
            ("http", is_valid_port_name, &[]),
            ("metrics-9100", is_valid_port_name, &[]),
            (
                "a--b",
                is_valid_port_name,
                &["must not contain consecutive hyphens"],
            ),
            (
                "123",
                is_valid_port_name,
                &["must contain at least one letter (a-z)"],
            ),
            ("X-Custom-1", is_http_header_name, &[]),
            ("", is_http_header_name, &["a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')"]),
        ];
        for (s, rule, want) in cases {
            assert_eq!(rule(s), want, "{s:?}");
        }
    }

    #[test]
    fn annotation_size_counts_keys_and_values() {
        let ann: BTreeMap<String, String> = [("ab".to_string(), "cde".to_string())].into();
        assert_eq!(annotations_size(&ann), 5);
        assert_eq!(annotations_size(&BTreeMap::new()), 0);
    }
}
