//! Label selectors (apps/v1 `LabelSelector` and the `labelSelector=` query string syntax) and
//! field selectors. STUB: signatures agreed; bodies filled in by the core owner.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("invalid selector {selector:?}: {reason}")]
    Invalid { selector: String, reason: String },
}

/// Whether a (non-nil) `LabelSelector` matches `labels`. An empty selector matches everything,
/// as LabelSelectorAsSelector does; an invalid expression matches nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let _ = (sel, labels);
    unimplemented!("stub")
}

/// One requirement of a parsed selector string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed `labelSelector=` / `fieldSelector=` string: requirements ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses the label selector syntax: `a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j`.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        let _ = s;
        unimplemented!("stub")
    }
    /// Parses a field selector: `metadata.name=x,spec.nodeName!=y` (only =, ==, !=).
    pub fn parse_fields(s: &str) -> Result<Selector, SelectorError> {
        let _ = s;
        unimplemented!("stub")
    }
    /// Whether `get(key)` (label or field lookup) satisfies every requirement.
    pub fn matches_with(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        let _ = get;
        unimplemented!("stub")
    }
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(&|k| labels.get(k).cloned())
    }
}
