//! Tolerations and node affinity in a pod spec (pkg/apis/core/validation).

use k8s_openapi::api::core::v1::{Affinity, NodeSelectorRequirement, NodeSelectorTerm, Toleration};

use crate::core::names;

use super::*;

pub(super) const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

pub(super) fn validate_toleration(t: &Toleration, path: &str, errs: &mut Vec<FieldError>) {
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("");
    let value = t.value.as_deref().unwrap_or("");
    let effect = t.effect.as_deref().unwrap_or("");
    if !key.is_empty() {
        validate_label_name(key, &format!("{path}.key"), errs);
    }
    if key.is_empty() && op != "Exists" {
        errs.push(FieldError::invalid(
            &format!("{path}.operator"),
            &q(op),
            "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ));
    }
    if t.toleration_seconds.is_some() && effect != "NoExecute" {
        errs.push(FieldError::invalid(
            &format!("{path}.effect"),
            &q(effect),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
    match op {
        "Equal" | "" => {
            let m = names::is_valid_label_value(value);
            if !m.is_empty() {
                errs.push(FieldError::invalid(
                    &format!("{path}.operator"),
                    &q(value),
                    &m.join(";"),
                ));
            }
        }
        "Exists" if !value.is_empty() => errs.push(FieldError::invalid(
            &format!("{path}.operator"),
            &q(value),
            "value must be empty when `operator` is 'Exists'",
        )),
        "Exists" => {}
        other => errs.push(FieldError::not_supported(
            &format!("{path}.operator"),
            other,
            &["Equal", "Exists"],
        )),
    }
    if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
        errs.push(FieldError::not_supported(
            &format!("{path}.effect"),
            effect,
            &TAINT_EFFECTS,
        ));
    }
}

pub(super) fn validate_affinity(a: &Affinity, path: &str, errs: &mut Vec<FieldError>) {
    let Some(na) = &a.node_affinity else {
        return;
    };
    let path = format!("{path}.nodeAffinity");
    if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
        let p = format!("{path}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
        if req.node_selector_terms.is_empty() {
            errs.push(FieldError::required(
                &p,
                "must have at least one node selector term",
            ));
        }
        for (i, term) in req.node_selector_terms.iter().enumerate() {
            validate_node_selector_term(term, &format!("{p}[{i}]"), errs);
        }
    }
    let prefs = na
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .flatten();
    for (i, pref) in prefs.enumerate() {
        let p = format!("{path}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        if !(1..=100).contains(&pref.weight) {
            errs.push(FieldError::invalid(
                &format!("{p}.weight"),
                &pref.weight.to_string(),
                "must be in the range 1-100",
            ));
        }
        validate_node_selector_term(&pref.preference, &format!("{p}.preference"), errs);
    }
}

pub(super) fn validate_node_selector_term(
    t: &NodeSelectorTerm,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    for (i, r) in t.match_expressions.iter().flatten().enumerate() {
        validate_node_selector_requirement(r, &format!("{path}.matchExpressions[{i}]"), errs);
    }
    for (i, r) in t.match_fields.iter().flatten().enumerate() {
        let p = format!("{path}.matchFields[{i}]");
        if r.key != "metadata.name" {
            errs.push(FieldError::invalid(
                &format!("{p}.key"),
                &q(&r.key),
                "not a valid field selector key",
            ));
        }
        if !matches!(r.operator.as_str(), "In" | "NotIn") {
            errs.push(FieldError::invalid(
                &format!("{p}.operator"),
                &q(&r.operator),
                "not a valid selector operator",
            ));
        }
        if r.values.as_ref().map_or(0, Vec::len) != 1 {
            errs.push(FieldError::required(
                &format!("{p}.values"),
                "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
            ));
        }
    }
}

pub(super) fn validate_node_selector_requirement(
    r: &NodeSelectorRequirement,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let values = r.values.as_deref().unwrap_or(&[]);
    let vp = format!("{path}.values");
    match r.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
            &vp,
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
            &vp,
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if values.len() != 1 => errs.push(FieldError::required(
            &vp,
            "must be specified single value when `operator` is 'Lt' or 'Gt'",
        )),
        "Gt" | "Lt" => {
            if values[0].parse::<i64>().is_err() {
                errs.push(FieldError::invalid(
                    &format!("{vp}[0]"),
                    &q(&values[0]),
                    "must be an integer when `operator` is 'Lt' or 'Gt'",
                ));
            }
        }
        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
        op => errs.push(FieldError::invalid(
            &format!("{path}.operator"),
            &q(op),
            "not a valid selector operator",
        )),
    }
    validate_label_name(&r.key, &format!("{path}.key"), errs);
}
