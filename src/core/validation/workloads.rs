//! The kinds' own rules: DaemonSets and ReplicaSets (their templates, update strategies and
//! immutable selectors; pkg/apis/apps/validation), Nodes and Pods.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, ReplicaSet, ReplicaSetSpec, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::core::labels::Selector;
use crate::core::names;

use super::*;

/// The words a workload kind's shared template rules report with.
pub(super) struct Workload {
    empty_selector: &'static str,
    active_deadline: &'static str,
}

impl Workload {
    const DAEMONSET: Workload = Workload {
        empty_selector: "empty selector is invalid for daemonset",
        active_deadline: "activeDeadlineSeconds in DaemonSet is not Supported",
    };
    /// kube-apiserver's ReplicaSet validation says "deployment" here, and so do we.
    const REPLICASET: Workload = Workload {
        empty_selector: "empty selector is invalid for deployment",
        active_deadline: "activeDeadlineSeconds in ReplicaSet is not Supported",
    };
}

/// The selector and pod template rules DaemonSets and ReplicaSets share (apps validation's
/// ValidatePodTemplateSpecFor...): a valid non-empty selector matching the template's labels, a
/// valid pod spec, restartPolicy Always, no activeDeadlineSeconds.
pub(super) fn validate_workload_template(
    sel: &LabelSelector,
    template: &PodTemplateSpec,
    w: Workload,
    errs: &mut Vec<FieldError>,
) {
    errs.extend(validate_label_selector(sel, "spec.selector"));
    let template_labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    let empty = BTreeMap::new();
    // As LabelSelectorAsSelector: a selector that does not convert is reported above, not here.
    let matches = Selector::from_label_selector(sel)
        .map(|selector| selector.matches(template_labels.unwrap_or(&empty)));
    if matches == Ok(false) {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            &go_map(template_labels),
            "`selector` does not match template `labels`",
        ));
    }
    let n = sel.match_labels.as_ref().map_or(0, BTreeMap::len)
        + sel.match_expressions.as_ref().map_or(0, Vec::len);
    if n == 0 {
        errs.push(FieldError::invalid(
            "spec.selector",
            &go_selector(sel),
            w.empty_selector,
        ));
    }
    if let Some(meta) = &template.metadata {
        errs.extend(validate_labels(
            meta.labels.as_ref(),
            "spec.template.metadata.labels",
        ));
        errs.extend(validate_annotations(
            meta.annotations.as_ref(),
            "spec.template.metadata.annotations",
        ));
    }
    let pod = template.spec.as_ref();
    errs.extend(validate_pod_spec(pod, "spec.template.spec"));
    if let Some(rp) = pod
        .and_then(|p| p.restart_policy.as_deref())
        .filter(|rp| *rp != "Always")
    {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            rp,
            &["Always"],
        ));
    }
    if let Some(ads) = pod.and_then(|p| p.active_deadline_seconds) {
        errs.push(FieldError::invalid(
            "spec.template.spec.activeDeadlineSeconds",
            &ads.to_string(),
            w.active_deadline,
        ));
    }
}

pub(super) fn validate_daemonset_spec(spec: &DaemonSetSpec, errs: &mut Vec<FieldError>) {
    validate_workload_template(&spec.selector, &spec.template, Workload::DAEMONSET, errs);
    for (value, field) in [
        (spec.min_ready_seconds, "spec.minReadySeconds"),
        (spec.revision_history_limit, "spec.revisionHistoryLimit"),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            errs.push(FieldError::invalid(
                field,
                &v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(us) = &spec.update_strategy {
        match us.type_.as_deref() {
            None | Some("OnDelete") => {}
            Some("RollingUpdate") => match &us.rolling_update {
                Some(ru) => validate_rolling_update(ru, errs),
                None => errs.push(FieldError::required(
                    "spec.updateStrategy.rollingUpdate",
                    "",
                )),
            },
            Some(t) => errs.push(FieldError::not_supported(
                "spec.updateStrategy",
                t,
                &["RollingUpdate", "OnDelete"],
            )),
        }
    }
}

/// The value of an int-or-percent ("25%" -> 25), if well formed.
pub(crate) fn int_or_percent(v: &IntOrString) -> Option<i64> {
    match v {
        IntOrString::Int(i) => Some(i64::from(*i)),
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%')?;
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        }
    }
}

pub(super) fn validate_rolling_update(ru: &RollingUpdateDaemonSet, errs: &mut Vec<FieldError>) {
    let base = "spec.updateStrategy.rollingUpdate";
    let mut value_of = |v: Option<&IntOrString>, name: &str| -> i64 {
        let field = format!("{base}.{name}");
        let Some(v) = v else { return 0 };
        match (v, int_or_percent(v)) {
            (IntOrString::String(_), None) => {
                errs.push(FieldError::invalid(&field, &int_or_string(v), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
                0
            }
            (_, Some(n)) if n < 0 => {
                errs.push(FieldError::invalid(
                    &field,
                    &n.to_string(),
                    "must be greater than or equal to 0",
                ));
                n
            }
            (IntOrString::String(_), Some(n)) if n > 100 => {
                errs.push(FieldError::invalid(
                    &field,
                    &int_or_string(v),
                    "must not be greater than 100%",
                ));
                n
            }
            (_, n) => n.unwrap_or(0),
        }
    };
    let unavailable = value_of(ru.max_unavailable.as_ref(), "maxUnavailable");
    let surge = value_of(ru.max_surge.as_ref(), "maxSurge");
    match (unavailable != 0, surge != 0) {
        (true, true) => errs.push(FieldError::invalid(
            &format!("{base}.maxSurge"),
            &ru.max_surge.as_ref().map_or("0".into(), int_or_string),
            "may not be set when maxUnavailable is non-zero",
        )),
        (false, false) => errs.push(FieldError::required(
            &format!("{base}.maxUnavailable"),
            "cannot be 0 when maxSurge is 0",
        )),
        _ => {}
    }
}

pub fn validate_daemonset(ds: &DaemonSet) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&ds.metadata, true, names::is_dns1123_subdomain);
    match &ds.spec {
        Some(spec) => validate_daemonset_spec(spec, &mut errs),
        None => errs.push(FieldError::required("spec", "")),
    }
    errs
}
/// Update rules on top of `validate_daemonset` (the selector is immutable).
pub fn validate_daemonset_update(new: &DaemonSet, old: &DaemonSet) -> Vec<FieldError> {
    let mut errs = validate_daemonset(new);
    immutable_selector(
        new.spec.as_ref().map(|s| &s.selector),
        old.spec.as_ref().map(|s| &s.selector),
        &mut errs,
    );
    errs
}
/// apps/v1 ReplicaSet (ValidateReplicaSet): replicas and minReadySeconds not negative, the
/// shared selector and template rules.
pub fn validate_replicaset(rs: &ReplicaSet) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&rs.metadata, true, names::is_dns1123_subdomain);
    let Some(spec) = &rs.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    validate_replicaset_spec(spec, &mut errs);
    errs
}

pub(super) fn validate_replicaset_spec(spec: &ReplicaSetSpec, errs: &mut Vec<FieldError>) {
    for (value, field) in [
        (spec.replicas, "spec.replicas"),
        (spec.min_ready_seconds, "spec.minReadySeconds"),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            errs.push(FieldError::invalid(
                field,
                &v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    let template = spec.template.clone().unwrap_or_default();
    validate_workload_template(&spec.selector, &template, Workload::REPLICASET, errs);
}

/// Update rules on top of `validate_replicaset` (apps/v1: the selector is immutable).
pub fn validate_replicaset_update(new: &ReplicaSet, old: &ReplicaSet) -> Vec<FieldError> {
    let mut errs = validate_replicaset(new);
    immutable_selector(
        new.spec.as_ref().map(|s| &s.selector),
        old.spec.as_ref().map(|s| &s.selector),
        &mut errs,
    );
    errs
}

pub(super) fn immutable_selector(
    new: Option<&LabelSelector>,
    old: Option<&LabelSelector>,
    errs: &mut Vec<FieldError>,
) {
    if let (Some(n), Some(o)) = (new, old) {
        if n != o {
            errs.push(FieldError::invalid(
                "spec.selector",
                &go_selector(n),
                "field is immutable",
            ));
        }
    }
}
pub fn validate_node(node: &Node) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&node.metadata, false, names::is_dns1123_subdomain);
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    let mut seen = BTreeSet::new();
    for (i, t) in taints.into_iter().flatten().enumerate() {
        let p = format!("spec.taints[{i}]");
        validate_label_name(&t.key, &format!("{p}.key"), &mut errs);
        let value = t.value.as_deref().unwrap_or("");
        let m = names::is_valid_label_value(value);
        if !m.is_empty() {
            errs.push(FieldError::invalid(
                &format!("{p}.value"),
                &q(value),
                &m.join(";"),
            ));
        }
        if t.effect.is_empty() {
            errs.push(FieldError::required(&format!("{p}.effect"), ""));
        } else if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            errs.push(FieldError::not_supported(
                &format!("{p}.effect"),
                &t.effect,
                &TAINT_EFFECTS,
            ));
        }
        if !seen.insert((t.key.clone(), t.effect.clone())) {
            errs.push(FieldError::duplicate(
                &p,
                &format!("{}:{}", q(&t.key), q(&t.effect)),
            ));
        }
    }
    errs
}
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&pod.metadata, true, names::is_dns1123_subdomain);
    errs.extend(validate_pod_spec(pod.spec.as_ref(), "spec"));
    errs
}
