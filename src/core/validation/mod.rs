//! Validation and defaulting of API objects, as the Kubernetes API server does for the kinds
//! served here (k8s.io/kubernetes pkg/apis/apps/validation, pkg/apis/core/validation and the
//! v1 defaulters). Pure: the server turns the errors into a 422 `Status`. The string rules for
//! names, label keys and values are `core::names`.
//!
//! Call [`default_daemonset`] before [`validate_daemonset`], as the API server does. Fields that
//! defaulting fills (restartPolicy, updateStrategy.type, port protocol, ...) are accepted when
//! absent.
//!
//! The parts: this file (the field errors and their messages, object metadata, labels and
//! selectors), [`podspec`] (ValidatePodSpec: volumes, containers, probes, lifecycle, resources),
//! [`scheduling`] (tolerations, node affinity), [`workloads`] (DaemonSets, ReplicaSets, Nodes,
//! Pods), [`policy`] (what the node cannot honour, what the operator allows), [`defaults`].
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::core::names;

mod defaults;
mod podspec;
mod policy;
mod scheduling;
#[cfg(test)]
mod tests;
mod workloads;

pub use defaults::*;
use podspec::*;
pub use policy::*;
use scheduling::*;
pub use workloads::*;

/// The `reason` of a Kubernetes field cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
}

impl ErrorType {
    /// The cause `reason` in a `Status` (`FieldValueInvalid`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
        }
    }
    /// How Kubernetes names the error type in messages (`Invalid value`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
        }
    }
}

/// One field error: `field` is the JSON path Kubernetes prints (`spec.template.metadata.labels`).
/// `message` is the cause message as Kubernetes prints it (its `ErrorBody`, e.g.
/// `Invalid value: "Never": ...`), so `field: message` is the line kubectl shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: ErrorType,
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl FieldError {
    fn new(kind: ErrorType, field: &str, message: String) -> FieldError {
        FieldError {
            kind,
            field: field.to_string(),
            message,
        }
    }
    /// `Required value[: detail]`.
    pub fn required(field: &str, detail: &str) -> FieldError {
        Self::new(
            ErrorType::Required,
            field,
            with_detail("Required value", detail),
        )
    }
    /// `Invalid value: VALUE[: detail]`; `value` is already rendered as Go prints it (see [`q`]).
    pub fn invalid(field: &str, value: &str, detail: &str) -> FieldError {
        let body = format!("Invalid value: {value}");
        Self::new(ErrorType::Invalid, field, with_detail(&body, detail))
    }
    /// `Unsupported value: "v": supported values: "a", "b"`.
    pub fn not_supported(field: &str, value: &str, supported: &[&str]) -> FieldError {
        let list: Vec<String> = supported.iter().map(|s| q(s)).collect();
        let body = format!(
            "Unsupported value: {}: supported values: {}",
            q(value),
            list.join(", ")
        );
        Self::new(ErrorType::NotSupported, field, body)
    }
    /// `Duplicate value: VALUE`.
    pub fn duplicate(field: &str, value: &str) -> FieldError {
        Self::new(
            ErrorType::Duplicate,
            field,
            format!("Duplicate value: {value}"),
        )
    }
    /// `Forbidden: detail`.
    pub fn forbidden(field: &str, detail: &str) -> FieldError {
        Self::new(
            ErrorType::Forbidden,
            field,
            with_detail("Forbidden", detail),
        )
    }
    /// `Too long: may not be more than N bytes`.
    pub fn too_long(field: &str, max: usize) -> FieldError {
        let body = format!("Too long: may not be more than {max} bytes");
        Self::new(ErrorType::TooLong, field, body)
    }
}

fn with_detail(body: &str, detail: &str) -> String {
    if detail.is_empty() {
        body.to_string()
    } else {
        format!("{body}: {detail}")
    }
}

/// A string as Go's `%q` prints it.
pub fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// A `map[string]string` as Go's `%#v` prints it.
fn go_map(m: Option<&BTreeMap<String, String>>) -> String {
    match m {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", q(k), q(v)))
                .collect();
            format!("map[string]string{{{}}}", items.join(", "))
        }
    }
}

/// A label selector as Go's `%#v` prints a `v1.LabelSelector`.
fn go_selector(sel: &LabelSelector) -> String {
    let exprs = match &sel.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|r| {
                    let values = match &r.values {
                        None => "[]string(nil)".to_string(),
                        Some(v) => format!(
                            "[]string{{{}}}",
                            v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        q(&r.key),
                        q(&r.operator),
                        values
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
        go_map(sel.match_labels.as_ref()),
        exprs
    )
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => q(s),
    }
}

// ---------------------------------------------------------------------------------------------
// Object metadata, labels, annotations (k8s.io/apimachinery/pkg/api/validation); the string
// rules and their messages are `core::names`.

/// How an object's name is checked (`ValidateNameFunc`): [`names::is_dns1123_subdomain`] for
/// most kinds, [`names::is_dns1123_label`] for namespaces.
pub type NameRule = fn(&str) -> Vec<String>;

fn validate_label_name(key: &str, field: &str, errs: &mut Vec<FieldError>) {
    for m in names::is_qualified_name(key) {
        errs.push(FieldError::invalid(field, &q(key), &m));
    }
}

fn validate_labels(labels: Option<&BTreeMap<String, String>>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        validate_label_name(k, field, &mut errs);
        for m in names::is_valid_label_value(v) {
            errs.push(FieldError::invalid(field, &q(v), &m));
        }
    }
    errs
}

fn validate_annotations(ann: Option<&BTreeMap<String, String>>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(ann) = ann else {
        return errs;
    };
    for k in ann.keys() {
        for m in names::is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(field, &q(k), &m));
        }
    }
    if names::annotations_size(ann) > names::TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(
            field,
            names::TOTAL_ANNOTATION_SIZE_LIMIT,
        ));
    }
    errs
}

/// `ValidateObjectMeta`: the name (by `name_rule`) or generateName, the namespace (required
/// format when given on namespaced kinds, forbidden otherwise), labels and annotations.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    name_rule: NameRule,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta.name.as_deref().unwrap_or("");
    let generate = meta.generate_name.as_deref().unwrap_or("");
    if !generate.is_empty() {
        let prefix = generate.strip_suffix('-').unwrap_or(generate);
        for m in name_rule(prefix) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                &q(generate),
                &m,
            ));
        }
    }
    if name.is_empty() {
        if generate.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for m in name_rule(name) {
            errs.push(FieldError::invalid("metadata.name", &q(name), &m));
        }
    }
    let ns = meta.namespace.as_deref().unwrap_or("");
    if namespaced {
        // The server fills the namespace from the request path; only a given one is checked.
        for m in names::is_dns1123_label(ns)
            .into_iter()
            .filter(|_| !ns.is_empty())
        {
            errs.push(FieldError::invalid("metadata.namespace", &q(ns), &m));
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    errs.extend(validate_labels(meta.labels.as_ref(), "metadata.labels"));
    errs.extend(validate_annotations(
        meta.annotations.as_ref(),
        "metadata.annotations",
    ));
    errs
}

// ---------------------------------------------------------------------------------------------
// Selectors

fn validate_label_selector(sel: &LabelSelector, field: &str) -> Vec<FieldError> {
    let mut errs = validate_labels(sel.match_labels.as_ref(), &format!("{field}.matchLabels"));
    for (i, r) in sel.match_expressions.iter().flatten().enumerate() {
        let path = format!("{field}.matchExpressions[{i}]");
        let values = r.values.as_deref().unwrap_or(&[]);
        match r.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
                &format!("{path}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
                &format!("{path}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.push(FieldError::invalid(
                &format!("{path}.operator"),
                &q(op),
                "not a valid selector operator",
            )),
        }
        validate_label_name(&r.key, &format!("{path}.key"), &mut errs);
        for (j, v) in values.iter().enumerate() {
            for m in names::is_valid_label_value(v) {
                errs.push(FieldError::invalid(
                    &format!("{path}.values[{j}]"),
                    &q(v),
                    &m,
                ));
            }
        }
    }
    errs
}
