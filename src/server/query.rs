//! Request options as the query string carries them: the decoded query, write options
//! (`dryRun`, `fieldValidation`) and the label/field selection of lists, watches and
//! deletecollection.
use std::collections::{BTreeMap, HashMap};

use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::status::ApiError;
use super::store::{self, ObjectStore};
use crate::core::labels::Selector;

/// How long a read or watch at a resourceVersion the store has not reached waits for it, as
/// kube-apiserver's watch cache does (`blockTimeout`).
pub const FRESHNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Decoded query string (`application/x-www-form-urlencoded`: `+` is a space).
#[derive(Debug, Default)]
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
    store::wait_for_rv(store, rv, FRESHNESS_WAIT)
        .await
        .map_err(|current| ApiError::too_large_resource_version(rv, current))
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
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(sel) = &self.labels {
            let labels: BTreeMap<String, String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if !sel.matches(&labels) {
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
