//! Request options as the query string carries them: the decoded query, write options
//! (`dryRun`, `fieldValidation`), the label/field selection of lists, watches and
//! deletecollection, and the paging and consistency options of a list (`limit`, `continue`,
//! `resourceVersion`, `resourceVersionMatch`) with kube-apiserver's continue tokens.
use std::collections::HashMap;

use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::status::ApiError;
use super::store::{self, ObjectStore};
use crate::core::labels::{Requirement, Selector};
use crate::core::validation::FieldError;

/// How long a read or watch at a resourceVersion the store has not reached waits for it, as
/// kube-apiserver's watch cache does (`blockTimeout`).
pub const FRESHNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Decoded query string (`application/x-www-form-urlencoded`: `+` is a space).
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

fn form_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut m = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(form_decode(k), form_decode(v));
        }
        Query(m)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
    pub fn set(&mut self, k: &str, v: &str) {
        self.0.insert(k.to_string(), v.to_string());
    }
}

/// The `resourceVersion` a read asks for ("" and "0": any), as a number.
pub fn resource_version(q: &Query) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion") {
        None | Some("") | Some("0") => Ok(None),
        Some(rv) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
    }
}

/// Waits up to [`FRESHNESS_WAIT`] for the store to reach `rv`; kube-apiserver's 504 "Too large
/// resource version" when it does not.
pub async fn fresh_enough(store: &dyn ObjectStore, rv: u64) -> Result<(), ApiError> {
    let current = store.current_rv();
    if rv > current && store.went_back() {
        return Err(ApiError::gone(format!(
            "too old resource version: {rv} (the store was restored to {current}: list again)"
        )));
    }
    store::wait_for_rv(store, rv, FRESHNESS_WAIT)
        .await
        .map_err(|current| ApiError::too_large_resource_version(rv, current))
}

/// Where a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAt {
    /// The current state, once the store reached `min` (`resourceVersionMatch=NotOlderThan`;
    /// 0: any).
    Latest { min: u64 },
    /// The state at exactly this resourceVersion (`Exact`, or the snapshot of a continue token).
    Exact(u64),
}

/// The paging and consistency options of a list, validated as kube-apiserver's
/// `ValidateListOptions` and its storage layer do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOpts {
    /// At most this many items (`limit`; none, 0 or negative: all).
    pub limit: Option<usize>,
    pub at: ReadAt,
    /// From a continue token: the (namespace, name) the previous page ended with.
    pub after: Option<(String, String)>,
}

/// The apiVersion kube-apiserver writes into its continue tokens.
const CONTINUE_VERSION: &str = "meta.k8s.io/v1";

/// The continue token after the item (`namespace`, `name`) of a list read at `rv` (-1: an
/// inconsistent token, continuing at the latest state): base64url of
/// `{"v":"meta.k8s.io/v1","rv":RV,"start":"KEY\u0000"}`, as kube-apiserver encodes it, the key
/// `namespace/name` (`name` for a cluster-scoped object).
pub fn encode_continue(rv: i64, namespace: &str, name: &str) -> String {
    use base64::Engine as _;
    let key = match namespace {
        "" => format!("{name}\0"),
        ns => format!("{ns}/{name}\0"),
    };
    let token = serde_json::json!({"v": CONTINUE_VERSION, "rv": rv, "start": key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

/// A continue token's resourceVersion (-1: the latest) and the (namespace, name) it continues
/// after; the reason it is not valid otherwise.
fn decode_continue(token: &str) -> Result<(i64, (String, String)), String> {
    use base64::Engine as _;
    /// Missing fields are zero, as Go's encoding/json leaves them.
    #[derive(serde::Deserialize)]
    #[serde(default)]
    #[derive(Default)]
    struct Token {
        v: String,
        rv: i64,
        start: String,
    }
    let invalid = |e: &dyn std::fmt::Display| format!("continue key is not valid: {e}");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| invalid(&e))?;
    let t: Token = serde_json::from_slice(&bytes).map_err(|e| invalid(&e))?;
    if t.v != CONTINUE_VERSION {
        return Err(format!("got invalid continue key version {:?}", t.v));
    }
    if t.rv == 0 {
        return Err("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".into());
    }
    let key = t.start.strip_suffix('\0').unwrap_or(&t.start);
    if key.is_empty() {
        return Err(
            "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)".into(),
        );
    }
    if key.split('/').any(|part| part == ".." || part == ".") {
        return Err("continue key is not valid: path traversal attempt".into());
    }
    let after = match key.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), key.to_string()),
    };
    Ok((t.rv, after))
}

/// kube-apiserver's 410 for a continue token whose snapshot was compacted away; its
/// `metadata.continue` continues after the same item at the latest state (an inconsistent list).
pub fn continue_expired(namespace: &str, name: &str) -> ApiError {
    const MESSAGE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";
    let mut e = ApiError::gone(MESSAGE);
    let mut status = e.to_status();
    status["metadata"]["continue"] = serde_json::json!(encode_continue(-1, namespace, name));
    e.body = Some(Box::new(status));
    e
}

impl ListOpts {
    pub fn from_query(q: &Query) -> Result<ListOpts, ApiError> {
        let rv = q.get("resourceVersion").unwrap_or("");
        let rv_match = q.get("resourceVersionMatch").unwrap_or("");
        let token = q.get("continue").unwrap_or("");
        let mut errs = Vec::new();
        if !rv_match.is_empty() {
            const FIELD: &str = "resourceVersionMatch";
            if rv.is_empty() {
                errs.push(FieldError::forbidden(
                    FIELD,
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if !token.is_empty() {
                errs.push(FieldError::forbidden(
                    FIELD,
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if rv_match != "Exact" && rv_match != "NotOlderThan" {
                errs.push(FieldError::not_supported(
                    FIELD,
                    rv_match,
                    &["Exact", "NotOlderThan", ""],
                ));
            }
            if rv_match == "Exact" && rv == "0" {
                errs.push(FieldError::forbidden(
                    FIELD,
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if q.get("sendInitialEvents").is_some() {
            errs.push(FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid("ListOptions.meta.k8s.io", "", &errs));
        }
        let limit = match q.get("limit").filter(|l| !l.is_empty()) {
            None => None,
            Some(l) => {
                let n: i64 = l.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit must be an integer, not {l:?}"))
                })?;
                usize::try_from(n).ok().filter(|n| *n > 0)
            }
        };
        if !token.is_empty() {
            if !rv.is_empty() && rv != "0" {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rv, after) = decode_continue(token)
                .map_err(|e| ApiError::bad_request(format!("invalid continue token: {e}")))?;
            let at = match u64::try_from(rv) {
                Ok(rv) => ReadAt::Exact(rv),
                Err(_) => ReadAt::Latest { min: 0 },
            };
            return Ok(ListOpts {
                limit,
                at,
                after: Some(after),
            });
        }
        let at = match resource_version(q)? {
            None => ReadAt::Latest { min: 0 },
            // a paged list at a resourceVersion without a match is exact (the legacy rule)
            Some(rv) if rv_match == "Exact" || (rv_match.is_empty() && limit.is_some()) => {
                ReadAt::Exact(rv)
            }
            Some(rv) => ReadAt::Latest { min: rv },
        };
        Ok(ListOpts {
            limit,
            at,
            after: None,
        })
    }
}

/// What a write does with fields the schema does not know (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    fn from_query(q: &Query) -> Result<FieldValidation, ApiError> {
        match q.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict, not {other:?}"
            ))),
        }
    }
}

/// Options of one write.
#[derive(Debug, Clone)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub validation: FieldValidation,
    /// Who writes, for managedFields (`fieldManager`, else the User-Agent's prefix; see
    /// `server::apply`); None for the server's own writes.
    pub field_manager: Option<String>,
}

impl WriteOpts {
    /// What the server's own writes use.
    pub const INTERNAL: WriteOpts = WriteOpts {
        dry_run: false,
        validation: FieldValidation::Ignore,
        field_manager: None,
    };
    pub fn from_query(q: &Query) -> Result<WriteOpts, ApiError> {
        let dry_run = match q.get("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported dryRun value {other:?}: only All is supported"
                )))
            }
        };
        Ok(WriteOpts {
            dry_run,
            validation: FieldValidation::from_query(q)?,
            field_manager: q.get("fieldManager").map(str::to_string),
        })
    }
}

/// The label and field selectors of a list, watch or deletecollection; the default selects
/// everything.
#[derive(Debug, Default)]
pub struct Filter {
    labels: Option<Selector>,
    fields: Option<Selector>,
}

/// The value at a dotted field path (`spec.nodeName`), as a field selector compares it.
fn field_value(obj: &Value, key: &str) -> Option<String> {
    let mut cur = obj;
    for part in key.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl Filter {
    pub fn from_query(q: &Query) -> Result<Filter, ApiError> {
        let parse = |param: &str, parse: fn(&str) -> Result<Selector, _>| {
            q.get(param)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    parse(s).map_err(|e: crate::core::labels::SelectorError| {
                        ApiError::bad_request(e.to_string())
                    })
                })
                .transpose()
        };
        Ok(Filter {
            labels: parse("labelSelector", Selector::parse)?,
            fields: parse("fieldSelector", Selector::parse_fields)?,
        })
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }
    /// The value the field selector requires `field` to equal (`spec.nodeName=NODE`), if any.
    pub fn field_equals(&self, field: &str) -> Option<&str> {
        self.fields
            .as_ref()?
            .requirements
            .iter()
            .find_map(|r| match r {
                Requirement::Equals(k, v) if k == field => Some(v.as_str()),
                _ => None,
            })
    }
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(sel) = &self.labels {
            // the selector's keys looked up in place: a list of 100 000 pods through a
            // DaemonSet's selector copied every label of every pod first
            let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
            let get = |k: &str| -> Option<String> {
                labels?.get(k).map(|v| v.as_str().unwrap_or("").to_string())
            };
            if !sel.matches_with(&get) {
                return false;
            }
        }
        if let Some(sel) = &self.fields {
            let get = |k: &str| -> Option<String> {
                field_value(obj, k).or_else(|| (k == "metadata.namespace").then(String::new))
            };
            if !sel.matches_with(&get) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_decoding() {
        let cases = [
            ("labelSelector=app%3Dx%2Cb", "labelSelector", "app=x,b"),
            (
                "fieldSelector=metadata.name%3Dds1&watch=1",
                "fieldSelector",
                "metadata.name=ds1",
            ),
            ("a=b+c", "a", "b c"),
            ("a=1%2B1", "a", "1+1"),
            ("a=100%", "a", "100%"),
            ("a=%zz", "a", "%zz"),
            ("caf%C3%A9=1", "café", "1"),
        ];
        for (q, k, want) in cases {
            assert_eq!(Query::parse(Some(q)).get(k), Some(want), "{q}");
        }
    }

    fn list_opts(q: &str) -> Result<ListOpts, ApiError> {
        ListOpts::from_query(&Query::parse(Some(q)))
    }

    #[test]
    fn list_options_are_read_and_validated_as_kube_apiserver_does() {
        let at = |q: &str| {
            let o = list_opts(q).unwrap();
            (o.limit, o.at)
        };
        assert_eq!(at(""), (None, ReadAt::Latest { min: 0 }));
        assert_eq!(at("limit=0"), (None, ReadAt::Latest { min: 0 }));
        assert_eq!(at("limit=-3"), (None, ReadAt::Latest { min: 0 }));
        assert_eq!(
            at("limit=5&resourceVersion=0"),
            (Some(5), ReadAt::Latest { min: 0 })
        );
        assert_eq!(at("resourceVersion=7"), (None, ReadAt::Latest { min: 7 }));
        assert_eq!(at("limit=2&resourceVersion=7"), (Some(2), ReadAt::Exact(7)));
        assert_eq!(
            at("limit=2&resourceVersion=7&resourceVersionMatch=NotOlderThan"),
            (Some(2), ReadAt::Latest { min: 7 })
        );
        assert_eq!(
            at("resourceVersion=7&resourceVersionMatch=Exact"),
            (None, ReadAt::Exact(7))
        );
        let token = encode_continue(12, "default", "web-1");
        let o = list_opts(&format!("limit=2&continue={token}")).unwrap();
        assert_eq!(o.at, ReadAt::Exact(12));
        assert_eq!(o.after, Some(("default".into(), "web-1".into())));
        let o = list_opts(&format!("continue={}", encode_continue(-1, "", "n1"))).unwrap();
        assert_eq!(o.at, ReadAt::Latest { min: 0 });
        assert_eq!(o.after, Some((String::new(), "n1".into())));
        // kube-apiserver's messages
        let message = |q: &str| {
            let e = list_opts(q).unwrap_err();
            (e.code, e.message)
        };
        let invalid = |detail: &str| {
            (
                422,
                format!("ListOptions.meta.k8s.io \"\" is invalid: {detail}"),
            )
        };
        assert_eq!(
            message("resourceVersionMatch=Exact"),
            invalid("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided")
        );
        assert_eq!(
            message("resourceVersion=0&resourceVersionMatch=Exact"),
            invalid("resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"")
        );
        assert_eq!(
            message("resourceVersion=3&resourceVersionMatch=Newest"),
            invalid("resourceVersionMatch: Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\", \"\"")
        );
        assert_eq!(
            message("sendInitialEvents=true"),
            invalid("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list")
        );
        assert_eq!(
            message(&format!("resourceVersion=5&continue={token}")),
            (
                400,
                "specifying resource version is not allowed when using continue".into()
            )
        );
        let (code, text) = message("continue=bm90LWpzb24");
        assert_eq!(code, 400);
        assert!(
            text.starts_with("invalid continue token: continue key is not valid"),
            "{text}"
        );
        assert_eq!(message("limit=x").0, 400);
    }

    #[test]
    fn filters_select_by_labels_and_fields() {
        let obj = json!({"metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "replicas": 2}});
        let cases = [
            ("", true),
            ("labelSelector=app%3Dweb", true),
            ("labelSelector=app%3Ddb", false),
            ("fieldSelector=spec.nodeName%3Dn1", true),
            ("fieldSelector=spec.replicas%3D2", true),
            ("fieldSelector=metadata.namespace%3D", true),
            (
                "labelSelector=app&fieldSelector=spec.nodeName%21%3Dn1",
                false,
            ),
        ];
        for (q, want) in cases {
            let f = Filter::from_query(&Query::parse(Some(q))).unwrap();
            assert_eq!(f.matches(&obj), want, "{q}");
            assert_eq!(f.is_empty(), q.is_empty(), "{q}");
        }
        let bad = Filter::from_query(&Query::parse(Some("labelSelector=a%3D%3D%3D"))).unwrap_err();
        assert_eq!(bad.code, 400);
    }
}
