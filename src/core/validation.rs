//! Validation and defaulting of API objects, as the Kubernetes API server does for the kinds
//! served here (k8s.io/kubernetes pkg/apis/apps/validation, pkg/apis/core/validation and the
//! v1 defaulters). Pure: the server turns the errors into a 422 `Status`. The string rules for
//! names, label keys and values are `core::names`.
//!
//! Call [`default_daemonset`] before [`validate_daemonset`], as the API server does. Fields that
//! defaulting fills (restartPolicy, updateStrategy.type, port protocol, ...) are accepted when
//! absent.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, ReplicaSet, ReplicaSetSpec, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::core::labels::Selector;
use crate::core::names;
use crate::core::quantity::Quantity;

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

// ---------------------------------------------------------------------------------------------
// Pod spec

/// The checks of a pod spec (ValidatePodSpec); owners add their own (DaemonSet: restartPolicy).
fn validate_pod_spec(spec: Option<&PodSpec>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = spec else {
        errs.push(FieldError::required(&format!("{path}.containers"), ""));
        return errs;
    };
    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or(&[]), path, &mut errs);

    let mut names = BTreeSet::new();
    let init = spec.init_containers.as_deref().unwrap_or(&[]);
    for (i, c) in init.iter().enumerate() {
        let p = format!("{path}.initContainers[{i}]");
        validate_container(c, &p, &volumes, &mut names, &mut errs);
        // validateInitContainers: restartPolicy Always (a sidecar) or none; probes and
        // lifecycle hooks only on sidecars
        if let Some(rp) = c.restart_policy.as_deref().filter(|rp| *rp != "Always") {
            errs.push(FieldError::not_supported(
                &format!("{p}.restartPolicy"),
                rp,
                &["Always"],
            ));
        }
        if c.restart_policy.as_deref() != Some("Always") {
            let probes = [
                (c.lifecycle.is_some(), "lifecycle"),
                (c.liveness_probe.is_some(), "livenessProbe"),
                (c.readiness_probe.is_some(), "readinessProbe"),
                (c.startup_probe.is_some(), "startupProbe"),
            ];
            for (set, name) in probes {
                if set {
                    errs.push(FieldError::forbidden(
                        &format!("{p}.{name}"),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required(&format!("{path}.containers"), ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let p = format!("{path}.containers[{i}]");
        validate_container(c, &p, &volumes, &mut names, &mut errs);
        if c.restart_policy.is_some() {
            errs.push(FieldError::forbidden(
                &format!("{p}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }

    if let Some(rp) = &spec.restart_policy {
        let ok = ["Always", "OnFailure", "Never"];
        if !ok.contains(&rp.as_str()) {
            errs.push(FieldError::not_supported(
                &format!("{path}.restartPolicy"),
                rp,
                &ok,
            ));
        }
    }
    if let Some(dp) = &spec.dns_policy {
        let ok = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !ok.contains(&dp.as_str()) {
            errs.push(FieldError::not_supported(
                &format!("{path}.dnsPolicy"),
                dp,
                &ok,
            ));
        }
    }
    if let Some(t) = spec.termination_grace_period_seconds.filter(|t| *t < 0) {
        errs.push(FieldError::invalid(
            &format!("{path}.terminationGracePeriodSeconds"),
            &t.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(validate_labels(
        spec.node_selector.as_ref(),
        &format!("{path}.nodeSelector"),
    ));
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        validate_toleration(t, &format!("{path}.tolerations[{i}]"), &mut errs);
    }
    if let Some(a) = &spec.affinity {
        validate_affinity(a, &format!("{path}.affinity"), &mut errs);
    }
    errs
}

/// Volume checks; returns the volume names for the mounts.
fn validate_volumes(vols: &[Volume], path: &str, errs: &mut Vec<FieldError>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in vols.iter().enumerate() {
        let name_path = format!("{path}.volumes[{i}].name");
        if v.name.is_empty() {
            errs.push(FieldError::required(&name_path, ""));
        } else {
            for m in names::is_dns1123_label(&v.name) {
                errs.push(FieldError::invalid(&name_path, &q(&v.name), &m));
            }
            if !names.insert(v.name.clone()) {
                errs.push(FieldError::duplicate(&name_path, &q(&v.name)));
            }
        }
        if let Some(hp) = &v.host_path {
            let p = format!("{path}.volumes[{i}].hostPath.path");
            if hp.path.is_empty() {
                errs.push(FieldError::required(&p, ""));
            } else if !hp.path.starts_with('/') {
                errs.push(FieldError::invalid(
                    &p,
                    &q(&hp.path),
                    "must be an absolute path",
                ));
            } else if hp.path.split('/').any(|s| s == "..") {
                errs.push(FieldError::invalid(
                    &p,
                    &q(&hp.path),
                    "must not contain '..'",
                ));
            }
            let ok = [
                "",
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
                "CharDevice",
                "BlockDevice",
            ];
            if let Some(t) = hp.type_.as_deref().filter(|t| !ok.contains(t)) {
                errs.push(FieldError::not_supported(
                    &format!("{path}.volumes[{i}].hostPath.type"),
                    t,
                    &ok,
                ));
            }
        }
    }
    names
}

fn validate_container(
    c: &Container,
    path: &str,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let name_path = format!("{path}.name");
    if c.name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else {
        for m in names::is_dns1123_label(&c.name) {
            errs.push(FieldError::invalid(&name_path, &q(&c.name), &m));
        }
        if !names.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(&name_path, &q(&c.name)));
        }
    }
    match c.image.as_deref() {
        None | Some("") => errs.push(FieldError::required(&format!("{path}.image"), "")),
        Some(i) if i.trim() != i => errs.push(FieldError::invalid(
            &format!("{path}.image"),
            &q(i),
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    let mut port_names = BTreeSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        if p.container_port == 0 {
            errs.push(FieldError::required(&format!("{pp}.containerPort"), ""));
        } else if !(1..=65535).contains(&p.container_port) {
            errs.push(FieldError::invalid(
                &format!("{pp}.containerPort"),
                &p.container_port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(hp) = p.host_port.filter(|h| *h != 0 && !(1..=65535).contains(h)) {
            errs.push(FieldError::invalid(
                &format!("{pp}.hostPort"),
                &hp.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = &p.protocol {
            let ok = ["SCTP", "TCP", "UDP"];
            if !ok.contains(&proto.as_str()) {
                errs.push(FieldError::not_supported(
                    &format!("{pp}.protocol"),
                    proto,
                    &ok,
                ));
            }
        }
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            for m in names::is_valid_port_name(n) {
                errs.push(FieldError::invalid(&format!("{pp}.name"), &q(n), &m));
            }
            if !port_names.insert(n.to_string()) {
                errs.push(FieldError::duplicate(&format!("{pp}.name"), &q(n)));
            }
        }
    }
    let mut mount_paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        if m.name.is_empty() {
            errs.push(FieldError::required(&format!("{mp}.name"), ""));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError::invalid(
                &format!("{mp}.name"),
                &q(&m.name),
                "not found: no volume of this name in the pod",
            ));
        }
        validate_mount_propagation(c, m, &mp, errs);
        validate_sub_path(m, &mp, errs);
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(&format!("{mp}.mountPath"), ""));
        } else if !mount_paths.insert(m.mount_path.clone()) {
            errs.push(FieldError::invalid(
                &format!("{mp}.mountPath"),
                &q(&m.mount_path),
                "must be unique",
            ));
        }
    }
    if let Some(r) = &c.resources {
        validate_resources(r, &format!("{path}.resources"), errs);
    }
    let probes = [
        (&c.liveness_probe, "livenessProbe"),
        (&c.readiness_probe, "readinessProbe"),
        (&c.startup_probe, "startupProbe"),
    ];
    for (probe, name) in probes {
        if let Some(p) = probe {
            validate_probe(p, &format!("{path}.{name}"), errs);
        }
    }
    if let Some(l) = &c.lifecycle {
        validate_lifecycle(l, &format!("{path}.lifecycle"), errs);
    }
    // validateContainersOnlyForPod: what differs between the three probes
    if let Some(t) = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.termination_grace_period_seconds)
    {
        errs.push(FieldError::invalid(
            &format!("{path}.readinessProbe.terminationGracePeriodSeconds"),
            &t.to_string(),
            "must not be set for readinessProbes",
        ));
    }
    for (probe, name) in [
        (&c.liveness_probe, "livenessProbe"),
        (&c.startup_probe, "startupProbe"),
    ] {
        if let Some(st) = probe
            .as_ref()
            // unset and 0 are defaulted to 1
            .map(|p| p.success_threshold.unwrap_or(1))
            .filter(|st| *st != 1 && *st != 0)
        {
            errs.push(FieldError::invalid(
                &format!("{path}.{name}.successThreshold"),
                &st.to_string(),
                "must be 1",
            ));
        }
    }
    let policies: [(&Option<String>, &str, &[&str]); 2] = [
        (
            &c.image_pull_policy,
            "imagePullPolicy",
            &["Always", "IfNotPresent", "Never"],
        ),
        (
            &c.termination_message_policy,
            "terminationMessagePolicy",
            &["File", "FallbackToLogsOnError"],
        ),
    ];
    for (value, name, ok) in policies {
        if let Some(v) = value.as_deref().filter(|v| !ok.contains(v)) {
            errs.push(FieldError::not_supported(&format!("{path}.{name}"), v, ok));
        }
    }
}

/// validateMountPropagation: a known mode, and Bidirectional only for privileged containers.
fn validate_mount_propagation(
    c: &Container,
    m: &k8s_openapi::api::core::v1::VolumeMount,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let Some(mode) = m.mount_propagation.as_deref() else {
        return;
    };
    let field = format!("{path}.mountPropagation");
    let ok = ["Bidirectional", "HostToContainer", "None"];
    if !ok.contains(&mode) {
        errs.push(FieldError::not_supported(&field, mode, &ok));
        return;
    }
    let privileged = c
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    if mode == "Bidirectional" && !privileged {
        errs.push(FieldError::forbidden(
            &field,
            "Bidirectional mount propagation is available only to privileged containers",
        ));
    }
}

/// validateLocalDescendingPath for subPath and subPathExpr, which are mutually exclusive.
fn validate_sub_path(
    m: &k8s_openapi::api::core::v1::VolumeMount,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let sub = m.sub_path.as_deref().filter(|s| !s.is_empty());
    let expr = m.sub_path_expr.as_deref().filter(|s| !s.is_empty());
    if sub.is_some() && expr.is_some() {
        errs.push(FieldError::invalid(
            &format!("{path}.subPathExpr"),
            &q(expr.unwrap_or_default()),
            "subPathExpr and subPath are mutually exclusive",
        ));
    }
    for (value, name) in [(sub, "subPath"), (expr, "subPathExpr")] {
        let Some(v) = value else { continue };
        let field = format!("{path}.{name}");
        if v.starts_with('/') {
            errs.push(FieldError::invalid(
                &field,
                &q(v),
                "must be a relative path",
            ));
        }
        if v.split('/').any(|part| part == "..") {
            errs.push(FieldError::invalid(&field, &q(v), "must not contain '..'"));
        }
    }
}

/// validateProbe and validateHandler: exactly one handler, each well formed, no negative timing.
fn validate_probe(p: &Probe, path: &str, errs: &mut Vec<FieldError>) {
    let mut handlers = 0;
    if let Some(e) = &p.exec {
        handlers += 1;
        if e.command.as_ref().is_none_or(|c| c.is_empty()) {
            errs.push(FieldError::required(&format!("{path}.exec.command"), ""));
        }
    }
    if let Some(h) = &p.http_get {
        let hp = format!("{path}.httpGet");
        if handlers > 0 {
            errs.push(FieldError::forbidden(
                &hp,
                "may not specify more than 1 handler type",
            ));
        } else {
            handlers += 1;
            // an empty path and scheme are defaulted ("/", HTTP)
            validate_port_num_or_name(&h.port, &format!("{hp}.port"), errs);
            let scheme = h.scheme.as_deref().unwrap_or("HTTP");
            if !["", "HTTP", "HTTPS"].contains(&scheme) {
                errs.push(FieldError::not_supported(
                    &format!("{hp}.scheme"),
                    scheme,
                    &["HTTP", "HTTPS"],
                ));
            }
            for header in h.http_headers.iter().flatten() {
                for m in names::is_http_header_name(&header.name) {
                    errs.push(FieldError::invalid(
                        &format!("{hp}.httpHeaders"),
                        &q(&header.name),
                        &m,
                    ));
                }
            }
        }
    }
    if let Some(t) = &p.tcp_socket {
        let tp = format!("{path}.tcpSocket");
        if handlers > 0 {
            errs.push(FieldError::forbidden(
                &tp,
                "may not specify more than 1 handler type",
            ));
        } else {
            handlers += 1;
            validate_port_num_or_name(&t.port, &format!("{tp}.port"), errs);
        }
    }
    if let Some(g) = &p.grpc {
        let gp = format!("{path}.grpc");
        if handlers > 0 {
            errs.push(FieldError::forbidden(
                &gp,
                "may not specify more than 1 handler type",
            ));
        } else {
            handlers += 1;
            if !(1..=65535).contains(&g.port) {
                errs.push(FieldError::invalid(
                    &format!("{gp}.port"),
                    &g.port.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
    if handlers == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    let fields = [
        (p.initial_delay_seconds, "initialDelaySeconds"),
        (p.timeout_seconds, "timeoutSeconds"),
        (p.period_seconds, "periodSeconds"),
        (p.success_threshold, "successThreshold"),
        (p.failure_threshold, "failureThreshold"),
    ];
    for (v, name) in fields {
        if let Some(v) = v.filter(|v| *v < 0) {
            errs.push(FieldError::invalid(
                &format!("{path}.{name}"),
                &v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(t) = p.termination_grace_period_seconds.filter(|t| *t <= 0) {
        errs.push(FieldError::invalid(
            &format!("{path}.terminationGracePeriodSeconds"),
            &t.to_string(),
            "must be greater than 0",
        ));
    }
}

/// validateLifecycle: each hook has exactly one handler, checked as a probe's (exec, httpGet,
/// tcpSocket), or `sleep` with a non-negative number of seconds.
fn validate_lifecycle(
    l: &k8s_openapi::api::core::v1::Lifecycle,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    for (hook, name) in [(&l.post_start, "postStart"), (&l.pre_stop, "preStop")] {
        let Some(h) = hook else { continue };
        let hp = format!("{path}.{name}");
        let as_probe = Probe {
            exec: h.exec.clone(),
            http_get: h.http_get.clone(),
            tcp_socket: h.tcp_socket.clone(),
            ..Default::default()
        };
        let others =
            as_probe.exec.is_some() || as_probe.http_get.is_some() || as_probe.tcp_socket.is_some();
        match &h.sleep {
            Some(_) if others => errs.push(FieldError::forbidden(
                &format!("{hp}.sleep"),
                "may not specify more than 1 handler type",
            )),
            Some(s) if s.seconds < 0 => errs.push(FieldError::invalid(
                &format!("{hp}.sleep.seconds"),
                &s.seconds.to_string(),
                "must be non-negative",
            )),
            Some(_) => {}
            None => validate_probe(&as_probe, &hp, errs),
        }
    }
}

/// ValidatePortNumOrName.
fn validate_port_num_or_name(port: &IntOrString, path: &str, errs: &mut Vec<FieldError>) {
    match port {
        IntOrString::Int(n) => {
            if !(1..=65535).contains(n) {
                errs.push(FieldError::invalid(
                    path,
                    &n.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        IntOrString::String(s) => {
            for m in names::is_valid_port_name(s) {
                errs.push(FieldError::invalid(path, &q(s), &m));
            }
        }
    }
}

fn validate_resources(r: &ResourceRequirements, path: &str, errs: &mut Vec<FieldError>) {
    let mut parse_all = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                         which: &str| {
        let mut out = BTreeMap::new();
        for (name, qty) in map.into_iter().flatten() {
            let field = format!("{path}.{which}[{name}]");
            validate_label_name(name, &field, errs);
            match Quantity::parse(&qty.0) {
                Ok(v) if v.nanos < 0 => errs.push(FieldError::invalid(
                    &field,
                    &q(&qty.0),
                    "must be greater than or equal to 0",
                )),
                Ok(v) => {
                    out.insert(name.clone(), (qty.0.clone(), v));
                }
                Err(e) => errs.push(FieldError::invalid(&field, &q(&qty.0), &e.to_string())),
            }
        }
        out
    };
    let limits = parse_all(r.limits.as_ref(), "limits");
    let requests = parse_all(r.requests.as_ref(), "requests");
    for (name, (raw, req)) in &requests {
        if let Some((limit_raw, limit)) = limits.get(name) {
            if req.nanos > limit.nanos {
                errs.push(FieldError::invalid(
                    &format!("{path}.requests"),
                    &q(raw),
                    &format!("must be less than or equal to {name} limit of {limit_raw}"),
                ));
            }
        }
    }
}

const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

fn validate_toleration(t: &Toleration, path: &str, errs: &mut Vec<FieldError>) {
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

fn validate_affinity(a: &Affinity, path: &str, errs: &mut Vec<FieldError>) {
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

fn validate_node_selector_term(t: &NodeSelectorTerm, path: &str, errs: &mut Vec<FieldError>) {
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

fn validate_node_selector_requirement(
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

// ---------------------------------------------------------------------------------------------
// DaemonSet

/// The words a workload kind's shared template rules report with.
struct Workload {
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
fn validate_workload_template(
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

fn validate_daemonset_spec(spec: &DaemonSetSpec, errs: &mut Vec<FieldError>) {
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

fn validate_rolling_update(ru: &RollingUpdateDaemonSet, errs: &mut Vec<FieldError>) {
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

fn validate_replicaset_spec(spec: &ReplicaSetSpec, errs: &mut Vec<FieldError>) {
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

fn immutable_selector(
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

/// The fields of a pod spec at `path` that this node agent cannot honour (`core::support`): each a
/// `Forbidden` cause saying so, for the admission of Pods and DaemonSet templates.
pub fn validate_node_support(spec: Option<&PodSpec>, path: &str) -> Vec<FieldError> {
    spec.map(|s| crate::core::support::refusals(s, path))
        .unwrap_or_default()
}

/// What the server's operator allows in pod specs (`--allow-privileged`, `--allow-host-path`), and
/// what its admission adds to them (kube-apiserver's `--default-not-ready-toleration-seconds`,
/// `--default-unreachable-toleration-seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub allow_privileged: bool,
    pub allow_host_path: bool,
    /// The DefaultTolerationSeconds admission's seconds for the not-ready NoExecute taint.
    pub default_not_ready_toleration_seconds: i64,
    /// ... and for the unreachable NoExecute taint: how long a pod stays on a lost node.
    pub default_unreachable_toleration_seconds: i64,
}

impl Default for Policy {
    /// Both allowed, as k3s runs kube-apiserver: node agents (kube-proxy, log shippers) need them.
    fn default() -> Policy {
        Policy {
            allow_privileged: true,
            allow_host_path: true,
            default_not_ready_toleration_seconds:
                crate::core::nodehealth::DEFAULT_TOLERATION_SECONDS,
            default_unreachable_toleration_seconds:
                crate::core::nodehealth::DEFAULT_TOLERATION_SECONDS,
        }
    }
}

/// The server policy on a pod spec at `path` (`spec` of a Pod, `spec.template.spec` of a
/// DaemonSet): privileged containers and hostPath volumes refused, with kube-apiserver's wording
/// for the first (`Forbidden: disallowed by cluster policy`).
pub fn validate_policy(spec: Option<&PodSpec>, path: &str, policy: Policy) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = spec else {
        return errs;
    };
    if !policy.allow_privileged {
        let groups = [
            (
                "initContainers",
                spec.init_containers.as_deref().unwrap_or(&[]),
            ),
            ("containers", spec.containers.as_slice()),
        ];
        for (group, containers) in groups {
            for (i, c) in containers.iter().enumerate() {
                if c.security_context
                    .as_ref()
                    .and_then(|s| s.privileged)
                    .unwrap_or(false)
                {
                    errs.push(FieldError::forbidden(
                        &format!("{path}.{group}[{i}].securityContext.privileged"),
                        "disallowed by cluster policy",
                    ));
                }
            }
        }
    }
    if !policy.allow_host_path {
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            if v.host_path.is_some() {
                errs.push(FieldError::forbidden(
                    &format!("{path}.volumes[{i}].hostPath"),
                    "disallowed by cluster policy",
                ));
            }
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Defaults

/// Kubernetes' defaults for a DaemonSet (updateStrategy, revisionHistoryLimit, pod template).
pub fn default_daemonset(ds: &mut DaemonSet) {
    let Some(spec) = ds.spec.as_mut() else {
        return;
    };
    let us = spec.update_strategy.get_or_insert_with(Default::default);
    let ty = us.type_.get_or_insert_with(|| "RollingUpdate".to_string());
    if ty == "RollingUpdate" {
        let ru = us.rolling_update.get_or_insert_with(Default::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    spec.revision_history_limit.get_or_insert(10);
    if let Some(pod) = spec.template.spec.as_mut() {
        default_pod_spec(pod);
    }
}

/// Kubernetes' defaults for a ReplicaSet (replicas 1, pod template).
pub fn default_replicaset(rs: &mut ReplicaSet) {
    let Some(spec) = rs.spec.as_mut() else {
        return;
    };
    spec.replicas.get_or_insert(1);
    if let Some(pod) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
        default_pod_spec(pod);
    }
}

/// SetDefaults_PodSpec and the container, port, volume and probe defaults under it.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.security_context.get_or_insert_with(Default::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    let host_network = spec.host_network == Some(true);
    let init = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init) {
        default_container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(hp) = v.host_path.as_mut() {
            hp.type_.get_or_insert_with(String::new);
        }
        if let Some(cm) = v.config_map.as_mut() {
            cm.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = v.secret.as_mut() {
            s.default_mode.get_or_insert(0o644);
        }
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    if c.image_pull_policy.is_none() {
        let policy = default_pull_policy(c.image.as_deref().unwrap_or(""));
        c.image_pull_policy = Some(policy.into());
    }
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for probe in [
        c.liveness_probe.as_mut(),
        c.readiness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

/// SetDefaults_Probe: Go's zero values count as unset, so an explicit 0 is defaulted too.
fn default_probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(h) = p.http_get.as_mut() {
        h.path.get_or_insert_with(|| "/".into());
        h.scheme.get_or_insert_with(|| "HTTP".into());
    }
}

/// `Always` when the image has no digest and its tag is `latest` or missing, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() && tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::patch::merge_patch;
    use serde_json::{json, Value};

    #[test]
    fn server_policy_refuses_privileged_and_host_path_when_told() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "initContainers": [{"name": "i", "image": "x", "securityContext": {"privileged": true}}],
            "containers": [
                {"name": "a", "image": "x"},
                {"name": "b", "image": "x", "securityContext": {"privileged": true}},
                {"name": "c", "image": "x", "securityContext": {"privileged": false}}],
            "volumes": [{"name": "e", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/"}}],
        }))
        .unwrap();
        let p = "spec.template.spec";
        let fields = |policy| -> Vec<(String, ErrorType, String)> {
            validate_policy(Some(&spec), p, policy)
                .into_iter()
                .map(|e| (e.field, e.kind, e.message))
                .collect()
        };
        let forbidden = |f: &str| {
            (
                format!("{p}.{f}"),
                ErrorType::Forbidden,
                "Forbidden: disallowed by cluster policy".to_string(),
            )
        };
        for (policy, want) in [
            (Policy::default(), vec![]),
            (
                Policy {
                    allow_privileged: false,
                    allow_host_path: true,
                    ..Policy::default()
                },
                vec![
                    forbidden("initContainers[0].securityContext.privileged"),
                    forbidden("containers[1].securityContext.privileged"),
                ],
            ),
            (
                Policy {
                    allow_privileged: true,
                    allow_host_path: false,
                    ..Policy::default()
                },
                vec![forbidden("volumes[1].hostPath")],
            ),
        ] {
            assert_eq!(fields(policy), want, "{policy:?}");
        }
        assert!(validate_policy(
            None,
            p,
            Policy {
                allow_privileged: false,
                allow_host_path: false,
                ..Policy::default()
            }
        )
        .is_empty());
    }

    /// (case name, change to the object, expected (field, error type) list)
    type Case = (&'static str, Value, Vec<(&'static str, ErrorType)>);

    fn ds_from_yaml(yaml: &str) -> DaemonSet {
        serde_yaml::from_str(yaml).expect("test yaml is a daemonset")
    }

    /// The three DaemonSets of /work/shared/reference/daemonsets-guide.md.
    const GUIDE: [&str; 3] = [
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-monitor
  labels:
    app: monitoring
spec:
  selector:
    matchLabels:
      app: monitoring
  template:
    metadata:
      labels:
        app: monitoring
    spec:
      containers:
      - name: node-monitor-agent
        image: monitoring-agent:latest
        resources:
          limits:
            memory: "200Mi"
            cpu: "100m"
      nodeSelector:
        node-role.kubernetes.io/worker: "true"
"#,
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-proxy
spec:
  selector:
    matchLabels:
      k8s-app: kube-proxy
  template:
    metadata:
      labels:
        k8s-app: kube-proxy
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - key: node-role.kubernetes.io/worker
                operator: In
                values:
                - "true"
      containers:
      - name: kube-proxy
        image: kube-proxy:latest
"#,
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: example-daemonset
spec:
  selector:
    matchLabels:
      app: example
  template:
    metadata:
      labels:
        app: example
    spec:
      containers:
      - name: example-container
        image: nginx
"#,
    ];

    #[test]
    fn guide_daemonsets_are_valid_before_and_after_defaulting() {
        for yaml in GUIDE {
            let mut ds = ds_from_yaml(yaml);
            assert_eq!(validate_daemonset(&ds), vec![], "{yaml}");
            default_daemonset(&mut ds);
            assert_eq!(validate_daemonset(&ds), vec![], "{yaml}");
        }
    }

    /// A minimal valid DaemonSet; each case below changes it with a JSON merge patch.
    fn base() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "ds", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "a"}},
                "template": {
                    "metadata": {"labels": {"app": "a"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
                }
            }
        })
    }

    fn with_containers(containers: Value) -> Value {
        json!({"spec": {"template": {"spec": {"containers": containers}}}})
    }

    fn with_pod(pod: Value) -> Value {
        json!({"spec": {"template": {"spec": pod}}})
    }

    fn check_daemonset_cases(cases: Vec<Case>) {
        for (name, patch, want) in cases {
            let doc = merge_patch(&base(), &patch).expect("merge patch");
            let ds: DaemonSet = serde_json::from_value(doc).expect("patched daemonset decodes");
            let got: Vec<(String, ErrorType)> = validate_daemonset(&ds)
                .into_iter()
                .map(|e| (e.field, e.kind))
                .collect();
            let want: Vec<(String, ErrorType)> =
                want.into_iter().map(|(f, k)| (f.to_string(), k)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn invalid_daemonsets_name_the_field() {
        use ErrorType::*;
        let affinity = |expr: Value| {
            with_pod(json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}}))
        };
        let strategy = |ru: Value| json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": ru}}});
        let vol = |v: Value| with_pod(json!({"volumes": v}));
        let c = |extra: Value| {
            let mut c = json!({"name": "c", "image": "busybox:1.36"});
            json_patch::merge(&mut c, &extra);
            with_containers(json!([c]))
        };
        let cases: Vec<Case> = vec![
            ("the base is valid", json!({}), vec![]),
            ("name missing", json!({"metadata": {"name": null}}), vec![("metadata.name", Required)]),
            ("generateName instead of name", json!({"metadata": {"name": null, "generateName": "ds-"}}), vec![]),
            ("name not a DNS subdomain", json!({"metadata": {"name": "Bad_Name"}}), vec![("metadata.name", Invalid)]),
            ("name too long", json!({"metadata": {"name": "a".repeat(254)}}), vec![("metadata.name", Invalid)]),
            ("namespace not a DNS label", json!({"metadata": {"namespace": "a.b"}}), vec![("metadata.namespace", Invalid)]),
            ("label key with two slashes", json!({"metadata": {"labels": {"a/b/c": "x"}}}), vec![("metadata.labels", Invalid)]),
            ("label key prefix not a subdomain", json!({"metadata": {"labels": {"Ex.com/a": "x"}}}), vec![("metadata.labels", Invalid)]),
            ("label value too long", json!({"metadata": {"labels": {"k": "v".repeat(64)}}}), vec![("metadata.labels", Invalid)]),
            ("label value bad charset", json!({"metadata": {"labels": {"k": "-v"}}}), vec![("metadata.labels", Invalid)]),
            ("annotation key invalid", json!({"metadata": {"annotations": {"_x": "1"}}}), vec![("metadata.annotations", Invalid)]),
            ("annotations over 256 KiB", json!({"metadata": {"annotations": {"big": "x".repeat(262_142)}}}), vec![("metadata.annotations", TooLong)]),
            ("empty selector", json!({"spec": {"selector": {"matchLabels": null}}}), vec![("spec.selector", Invalid)]),
            ("selector does not match template", json!({"spec": {"template": {"metadata": {"labels": {"app": "b"}}}}}),
                vec![("spec.template.metadata.labels", Invalid)]),
            ("In needs values", json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}}),
                vec![("spec.selector.matchExpressions[0].values", Required)]),
            ("Exists takes no values", json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}}}),
                vec![("spec.selector.matchExpressions[0].values", Forbidden)]),
            ("unknown selector operator", json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Has"}]}}}),
                vec![("spec.selector.matchExpressions[0].operator", Invalid)]),
            ("no containers", with_containers(json!([])), vec![("spec.template.spec.containers", Required)]),
            ("container name not a DNS label", c(json!({"name": "C_1"})), vec![("spec.template.spec.containers[0].name", Invalid)]),
            ("duplicate container names", with_containers(json!([{"name": "c", "image": "i"}, {"name": "c", "image": "i"}])),
                vec![("spec.template.spec.containers[1].name", Duplicate)]),
            ("image missing", c(json!({"image": null})), vec![("spec.template.spec.containers[0].image", Required)]),
            ("restartPolicy Never", with_pod(json!({"restartPolicy": "Never"})), vec![("spec.template.spec.restartPolicy", NotSupported)]),
            ("restartPolicy unknown", with_pod(json!({"restartPolicy": "Sometimes"})),
                vec![("spec.template.spec.restartPolicy", NotSupported), ("spec.template.spec.restartPolicy", NotSupported)]),
            ("dnsPolicy unknown", with_pod(json!({"dnsPolicy": "Google"})), vec![("spec.template.spec.dnsPolicy", NotSupported)]),
            ("port 0", c(json!({"ports": [{"containerPort": 0}]})), vec![("spec.template.spec.containers[0].ports[0].containerPort", Required)]),
            ("port 70000", c(json!({"ports": [{"containerPort": 70000}]})), vec![("spec.template.spec.containers[0].ports[0].containerPort", Invalid)]),
            ("hostPort 70000", c(json!({"ports": [{"containerPort": 80, "hostPort": 70000}]})), vec![("spec.template.spec.containers[0].ports[0].hostPort", Invalid)]),
            ("protocol unknown", c(json!({"ports": [{"containerPort": 80, "protocol": "ICMP"}]})), vec![("spec.template.spec.containers[0].ports[0].protocol", NotSupported)]),
            ("imagePullPolicy unknown", c(json!({"imagePullPolicy": "Sometimes"})), vec![("spec.template.spec.containers[0].imagePullPolicy", NotSupported)]),
            ("duplicate volume names", vol(json!([{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}])),
                vec![("spec.template.spec.volumes[1].name", Duplicate)]),
            ("volume name not a DNS label", vol(json!([{"name": "V", "emptyDir": {}}])), vec![("spec.template.spec.volumes[0].name", Invalid)]),
            ("hostPath relative", vol(json!([{"name": "v", "hostPath": {"path": "var/log"}}])), vec![("spec.template.spec.volumes[0].hostPath.path", Invalid)]),
            ("hostPath type unknown", vol(json!([{"name": "v", "hostPath": {"path": "/x", "type": "Pipe"}}])),
                vec![("spec.template.spec.volumes[0].hostPath.type", NotSupported)]),
            ("mount of a missing volume", c(json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]})),
                vec![("spec.template.spec.containers[0].volumeMounts[0].name", Invalid)]),
            ("mount of an existing volume", merge_patch(&c(json!({"volumeMounts": [{"name": "logs", "mountPath": "/x"}]})),
                &vol(json!([{"name": "logs", "hostPath": {"path": "/var/log"}}]))).expect("merge"), vec![]),
            ("updateStrategy type unknown", json!({"spec": {"updateStrategy": {"type": "Recreate"}}}), vec![("spec.updateStrategy", NotSupported)]),
            ("RollingUpdate without rollingUpdate", json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}}}),
                vec![("spec.updateStrategy.rollingUpdate", Required)]),
            ("OnDelete", json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}), vec![]),
            ("maxUnavailable percent", strategy(json!({"maxUnavailable": "20%"})), vec![]),
            ("maxSurge only", strategy(json!({"maxUnavailable": 0, "maxSurge": 1})), vec![]),
            ("maxUnavailable over 100%", strategy(json!({"maxUnavailable": "150%"})), vec![("spec.updateStrategy.rollingUpdate.maxUnavailable", Invalid)]),
            ("maxUnavailable not a percent", strategy(json!({"maxUnavailable": "ten", "maxSurge": 1})), vec![("spec.updateStrategy.rollingUpdate.maxUnavailable", Invalid)]),
            ("maxUnavailable negative", strategy(json!({"maxUnavailable": -1})), vec![("spec.updateStrategy.rollingUpdate.maxUnavailable", Invalid)]),
            ("both zero", strategy(json!({"maxUnavailable": 0, "maxSurge": "0%"})), vec![("spec.updateStrategy.rollingUpdate.maxUnavailable", Required)]),
            ("both non-zero", strategy(json!({"maxUnavailable": 1, "maxSurge": 1})), vec![("spec.updateStrategy.rollingUpdate.maxSurge", Invalid)]),
            ("minReadySeconds negative", json!({"spec": {"minReadySeconds": -1}}), vec![("spec.minReadySeconds", Invalid)]),
            ("revisionHistoryLimit negative", json!({"spec": {"revisionHistoryLimit": -1}}), vec![("spec.revisionHistoryLimit", Invalid)]),
            ("terminationGracePeriodSeconds negative", with_pod(json!({"terminationGracePeriodSeconds": -1})),
                vec![("spec.template.spec.terminationGracePeriodSeconds", Invalid)]),
            ("toleration operator unknown", with_pod(json!({"tolerations": [{"key": "k", "operator": "Like"}]})),
                vec![("spec.template.spec.tolerations[0].operator", NotSupported)]),
            ("toleration Exists with a value", with_pod(json!({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]})),
                vec![("spec.template.spec.tolerations[0].operator", Invalid)]),
            ("toleration effect unknown", with_pod(json!({"tolerations": [{"operator": "Exists", "effect": "NoRun"}]})),
                vec![("spec.template.spec.tolerations[0].effect", NotSupported)]),
            ("toleration of everything", with_pod(json!({"tolerations": [{"operator": "Exists"}]})), vec![]),
            ("toleration without key needs Exists", with_pod(json!({"tolerations": [{"value": "v"}]})),
                vec![("spec.template.spec.tolerations[0].operator", Invalid)]),
            ("nodeSelector key invalid", with_pod(json!({"nodeSelector": {"a/b/c": "x"}})), vec![("spec.template.spec.nodeSelector", Invalid)]),
            ("affinity operator unknown", affinity(json!({"key": "k", "operator": "Near", "values": ["a"]})), vec![("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator", Invalid)]),
            ("affinity Gt with two values", affinity(json!({"key": "k", "operator": "Gt", "values": ["1", "2"]})), vec![("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values", Required)]),
            ("affinity Lt with a non-integer", affinity(json!({"key": "k", "operator": "Lt", "values": ["x"]})), vec![("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]", Invalid)]),
            ("affinity Gt with one integer", affinity(json!({"key": "k", "operator": "Gt", "values": ["3"]})), vec![]),
            ("affinity In without values", affinity(json!({"key": "k", "operator": "In"})), vec![("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values", Required)]),
        ];
        check_daemonset_cases(cases);
    }

    #[test]
    fn init_containers_and_lifecycle_are_validated_as_kube_apiserver_does() {
        use ErrorType::*;
        let app = json!({"name": "c", "image": "i"});
        let init = |i: Value| with_pod(json!({"initContainers": [i], "containers": [app]}));
        let hook = |l: Value| with_containers(json!([{"name": "c", "image": "i", "lifecycle": l}]));
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("an init container", init(json!({"name": "i", "image": "i"})), vec![]),
            ("a sidecar with probes and hooks", init(json!({"name": "i", "image": "i", "restartPolicy": "Always",
                "startupProbe": {"exec": {"command": ["true"]}}, "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}})), vec![]),
            ("init restartPolicy other than Always", init(json!({"name": "i", "image": "i", "restartPolicy": "OnFailure"})),
                vec![("spec.template.spec.initContainers[0].restartPolicy", NotSupported)]),
            ("lifecycle on a regular init container", init(json!({"name": "i", "image": "i", "lifecycle": {"postStart": {"exec": {"command": ["x"]}}}})),
                vec![("spec.template.spec.initContainers[0].lifecycle", Forbidden)]),
            ("init name taken by an app container", init(json!({"name": "c", "image": "i"})),
                vec![("spec.template.spec.containers[0].name", Duplicate)]),
            ("init image missing", init(json!({"name": "i"})), vec![("spec.template.spec.initContainers[0].image", Required)]),
            ("restartPolicy on an app container", with_containers(json!([{"name": "c", "image": "i", "restartPolicy": "Always"}])),
                vec![("spec.template.spec.containers[0].restartPolicy", Forbidden)]),
            ("hooks", hook(json!({"postStart": {"httpGet": {"port": 80}}, "preStop": {"exec": {"command": ["x"]}}})), vec![]),
            ("hook without handler", hook(json!({"preStop": {}})), vec![("spec.template.spec.containers[0].lifecycle.preStop", Required)]),
            ("hook exec without command", hook(json!({"postStart": {"exec": {}}})),
                vec![("spec.template.spec.containers[0].lifecycle.postStart.exec.command", Required)]),
            ("hook with two handlers", hook(json!({"preStop": {"exec": {"command": ["x"]}, "sleep": {"seconds": 1}}})),
                vec![("spec.template.spec.containers[0].lifecycle.preStop.sleep", Forbidden)]),
            ("negative sleep", hook(json!({"preStop": {"sleep": {"seconds": -1}}})),
                vec![("spec.template.spec.containers[0].lifecycle.preStop.sleep.seconds", Invalid)]),
            ("hook port out of range", hook(json!({"postStart": {"httpGet": {"port": 70000}}})),
                vec![("spec.template.spec.containers[0].lifecycle.postStart.httpGet.port", Invalid)]),
        ];
        check_daemonset_cases(cases);
    }

    #[test]
    fn probes_are_validated_as_kube_apiserver_does() {
        use ErrorType::*;
        let probe = |kind: &str, p: Value| {
            with_containers(json!([{"name": "c", "image": "busybox:1.36", kind: p}]))
        };
        let c = "spec.template.spec.containers[0]";
        type ProbeCase = (&'static str, Value, Vec<(String, ErrorType)>);
        let cases: Vec<ProbeCase> = vec![
            (
                "exec readiness",
                probe(
                    "readinessProbe",
                    json!({"exec": {"command": ["true"]}, "periodSeconds": 1}),
                ),
                vec![],
            ),
            (
                "httpGet by port name",
                probe(
                    "livenessProbe",
                    json!({"httpGet": {"port": "http", "path": "/healthz"}}),
                ),
                vec![],
            ),
            (
                "tcpSocket startup",
                probe(
                    "startupProbe",
                    json!({"tcpSocket": {"port": 80}, "failureThreshold": 30}),
                ),
                vec![],
            ),
            (
                "no handler",
                probe("readinessProbe", json!({"periodSeconds": 1})),
                vec![(format!("{c}.readinessProbe"), Required)],
            ),
            (
                "two handlers",
                probe(
                    "readinessProbe",
                    json!({"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}),
                ),
                vec![(format!("{c}.readinessProbe.tcpSocket"), Forbidden)],
            ),
            (
                "exec without command",
                probe("livenessProbe", json!({"exec": {}})),
                vec![(format!("{c}.livenessProbe.exec.command"), Required)],
            ),
            (
                "port out of range",
                probe("livenessProbe", json!({"httpGet": {"port": 70000}})),
                vec![(format!("{c}.livenessProbe.httpGet.port"), Invalid)],
            ),
            (
                "port name invalid",
                probe(
                    "livenessProbe",
                    json!({"tcpSocket": {"port": "Not_A_Name"}}),
                ),
                vec![(format!("{c}.livenessProbe.tcpSocket.port"), Invalid)],
            ),
            (
                "scheme unknown",
                probe(
                    "readinessProbe",
                    json!({"httpGet": {"port": 80, "scheme": "FTP"}}),
                ),
                vec![(format!("{c}.readinessProbe.httpGet.scheme"), NotSupported)],
            ),
            (
                "header name invalid",
                probe(
                    "readinessProbe",
                    json!({"httpGet": {"port": 80, "httpHeaders": [{"name": "a b", "value": "x"}]}}),
                ),
                vec![(format!("{c}.readinessProbe.httpGet.httpHeaders"), Invalid)],
            ),
            (
                "negative period",
                probe(
                    "readinessProbe",
                    json!({"exec": {"command": ["true"]}, "periodSeconds": -1}),
                ),
                vec![(format!("{c}.readinessProbe.periodSeconds"), Invalid)],
            ),
            (
                "liveness successThreshold 2",
                probe(
                    "livenessProbe",
                    json!({"exec": {"command": ["true"]}, "successThreshold": 2}),
                ),
                vec![(format!("{c}.livenessProbe.successThreshold"), Invalid)],
            ),
            (
                "startup successThreshold 3",
                probe(
                    "startupProbe",
                    json!({"exec": {"command": ["true"]}, "successThreshold": 3}),
                ),
                vec![(format!("{c}.startupProbe.successThreshold"), Invalid)],
            ),
            (
                "readiness successThreshold 3",
                probe(
                    "readinessProbe",
                    json!({"exec": {"command": ["true"]}, "successThreshold": 3}),
                ),
                vec![],
            ),
            (
                "readiness grace",
                probe(
                    "readinessProbe",
                    json!({"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5}),
                ),
                vec![(
                    format!("{c}.readinessProbe.terminationGracePeriodSeconds"),
                    Invalid,
                )],
            ),
            (
                "probe on an init container",
                json!({"spec": {"template": {"spec": {"initContainers": [{"name": "init",
                    "image": "busybox:1.36", "readinessProbe": {"exec": {"command": ["true"]}}}]}}}}),
                vec![(
                    "spec.template.spec.initContainers[0].readinessProbe".to_string(),
                    Forbidden,
                )],
            ),
            (
                "liveness grace 0",
                probe(
                    "livenessProbe",
                    json!({"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 0}),
                ),
                vec![(
                    format!("{c}.livenessProbe.terminationGracePeriodSeconds"),
                    Invalid,
                )],
            ),
        ];
        for (name, patch, want) in cases {
            let doc = merge_patch(&base(), &patch).expect("merge patch");
            let mut ds: DaemonSet = serde_json::from_value(doc).expect("decodes");
            default_daemonset(&mut ds);
            let got: Vec<(String, ErrorType)> = validate_daemonset(&ds)
                .into_iter()
                .map(|e| (e.field, e.kind))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        // the defaults kube-apiserver fills, explicit zeroes included
        let doc = merge_patch(
            &base(),
            &probe(
                "livenessProbe",
                json!({"httpGet": {"port": 80}, "periodSeconds": 0}),
            ),
        )
        .unwrap();
        let mut ds: DaemonSet = serde_json::from_value(doc).unwrap();
        default_daemonset(&mut ds);
        let p = ds.spec.unwrap().template.spec.unwrap().containers[0]
            .liveness_probe
            .clone()
            .unwrap();
        assert_eq!(
            (
                p.period_seconds,
                p.timeout_seconds,
                p.success_threshold,
                p.failure_threshold
            ),
            (Some(10), Some(1), Some(1), Some(3))
        );
        let h = p.http_get.unwrap();
        assert_eq!(
            (h.path.as_deref(), h.scheme.as_deref()),
            (Some("/"), Some("HTTP"))
        );
    }

    #[test]
    fn resource_quantities_are_checked() {
        use ErrorType::*;
        let res = |resources: Value| {
            with_containers(json!([{"name": "c", "image": "i", "resources": resources}]))
        };
        let cases: Vec<Case> = vec![
            (
                "requests below limits",
                res(
                    json!({"requests": {"cpu": "50m", "memory": "100Mi"}, "limits": {"cpu": "0.1", "memory": "200Mi"}}),
                ),
                vec![],
            ),
            (
                "limit that does not parse",
                res(json!({"limits": {"cpu": "lots"}})),
                vec![(
                    "spec.template.spec.containers[0].resources.limits[cpu]",
                    Invalid,
                )],
            ),
            (
                "request above limit",
                res(json!({"requests": {"memory": "1Gi"}, "limits": {"memory": "200Mi"}})),
                vec![(
                    "spec.template.spec.containers[0].resources.requests",
                    Invalid,
                )],
            ),
            (
                "negative request",
                res(json!({"requests": {"cpu": "-1"}})),
                vec![(
                    "spec.template.spec.containers[0].resources.requests[cpu]",
                    Invalid,
                )],
            ),
        ];
        check_daemonset_cases(cases);
    }

    #[test]
    fn kubernetes_messages() {
        let ds = |patch: Value| -> DaemonSet {
            serde_json::from_value(merge_patch(&base(), &patch).expect("merge")).expect("decodes")
        };
        let cases = vec![
            (
                validate_daemonset(&ds(with_pod(json!({"restartPolicy": "Never"})))),
                r#"spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always""#,
            ),
            (
                validate_daemonset(&ds(with_containers(json!([])))),
                "spec.template.spec.containers: Required value",
            ),
            (
                validate_daemonset(&ds(json!({"spec": {"template": {"metadata": {"labels": {"app": "b"}}}}}))),
                r#"spec.template.metadata.labels: Invalid value: map[string]string{"app":"b"}: `selector` does not match template `labels`"#,
            ),
            (
                validate_daemonset(&ds(json!({"spec": {"selector": {"matchLabels": null}}}))),
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for daemonset",
            ),
            (
                validate_daemonset_update(
                    &ds(json!({"spec": {"selector": {"matchLabels": {"app": "a", "x": "y"}},
                        "template": {"metadata": {"labels": {"x": "y"}}}}})),
                    &ds(json!({})),
                ),
                r#"spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"a", "x":"y"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"#,
            ),
        ];
        for (errs, want) in cases {
            let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
            assert_eq!(lines, vec![want.to_string()]);
        }
    }

    #[test]
    fn update_keeps_the_selector() {
        let old: DaemonSet = serde_json::from_value(base()).expect("decodes");
        let mut same = old.clone();
        if let Some(spec) = same.spec.as_mut() {
            spec.min_ready_seconds = Some(5);
        }
        assert_eq!(validate_daemonset_update(&same, &old), vec![]);
        let invalid_new: DaemonSet = serde_json::from_value(
            merge_patch(&base(), &with_containers(json!([]))).expect("merge"),
        )
        .expect("decodes");
        let fields: Vec<String> = validate_daemonset_update(&invalid_new, &old)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, vec!["spec.template.spec.containers"]);
    }

    #[test]
    fn nodes() {
        use ErrorType::*;
        let cases: Vec<Case> = vec![
            (
                "plain node",
                json!({"metadata": {"name": "node-1.example", "labels": {"kubernetes.io/hostname": "node-1"}}}),
                vec![],
            ),
            (
                "name missing",
                json!({"metadata": {}}),
                vec![("metadata.name", Required)],
            ),
            (
                "name invalid",
                json!({"metadata": {"name": "Node_1"}}),
                vec![("metadata.name", Invalid)],
            ),
            (
                "namespace on a cluster-scoped kind",
                json!({"metadata": {"name": "n", "namespace": "default"}}),
                vec![("metadata.namespace", Forbidden)],
            ),
            (
                "label invalid",
                json!({"metadata": {"name": "n", "labels": {"k": "a b"}}}),
                vec![("metadata.labels", Invalid)],
            ),
            (
                "taint ok",
                json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
                vec![],
            ),
            (
                "taint effect unknown",
                json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "NoRun"}]}}),
                vec![("spec.taints[0].effect", NotSupported)],
            ),
            (
                "taint effect empty",
                json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": ""}]}}),
                vec![("spec.taints[0].effect", Required)],
            ),
            (
                "taint key invalid",
                json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k k", "effect": "NoExecute"}]}}),
                vec![("spec.taints[0].key", Invalid)],
            ),
            (
                "duplicate taint",
                json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "NoExecute"}, {"key": "k", "effect": "NoExecute"}]}}),
                vec![("spec.taints[1]", Duplicate)],
            ),
        ];
        for (name, doc, want) in cases {
            let node: Node = serde_json::from_value(doc).expect("node decodes");
            let got: Vec<(String, ErrorType)> = validate_node(&node)
                .into_iter()
                .map(|e| (e.field, e.kind))
                .collect();
            let want: Vec<(String, ErrorType)> =
                want.into_iter().map(|(f, k)| (f.to_string(), k)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn pods() {
        use ErrorType::*;
        let pod =
            |spec: Value| json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
        let cases: Vec<Case> = vec![
            (
                "plain pod",
                pod(json!({"containers": [{"name": "c", "image": "i"}]})),
                vec![],
            ),
            (
                "restartPolicy Never is fine for a pod",
                pod(json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]})),
                vec![],
            ),
            (
                "restartPolicy OnFailure is fine for a pod",
                pod(
                    json!({"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "i"}]}),
                ),
                vec![],
            ),
            (
                "restartPolicy unknown",
                pod(json!({"restartPolicy": "Later", "containers": [{"name": "c", "image": "i"}]})),
                vec![("spec.restartPolicy", NotSupported)],
            ),
            (
                "no containers",
                pod(json!({"containers": []})),
                vec![("spec.containers", Required)],
            ),
            (
                "no spec",
                json!({"metadata": {"name": "p"}}),
                vec![("spec.containers", Required)],
            ),
            (
                "init and app container share a name",
                pod(
                    json!({"initContainers": [{"name": "c", "image": "i"}], "containers": [{"name": "c", "image": "i"}]}),
                ),
                vec![("spec.containers[0].name", Duplicate)],
            ),
            (
                "image missing",
                pod(json!({"containers": [{"name": "c"}]})),
                vec![("spec.containers[0].image", Required)],
            ),
        ];
        for (name, doc, want) in cases {
            let p: Pod = serde_json::from_value(doc).expect("pod decodes");
            let got: Vec<(String, ErrorType)> = validate_pod(&p)
                .into_iter()
                .map(|e| (e.field, e.kind))
                .collect();
            let want: Vec<(String, ErrorType)> =
                want.into_iter().map(|(f, k)| (f.to_string(), k)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn defaults_fill_what_the_api_server_fills() {
        let mut ds = ds_from_yaml(GUIDE[0]);
        if let Some(spec) = ds.spec.as_mut() {
            if let Some(pod) = spec.template.spec.as_mut() {
                pod.containers[0].ports =
                    serde_json::from_value(json!([{"containerPort": 80}])).ok();
            }
        }
        default_daemonset(&mut ds);
        let got = serde_json::to_value(&ds).expect("serializes");
        let want = json!({
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "revisionHistoryLimit": 10,
        });
        assert_eq!(got["spec"]["updateStrategy"], want["updateStrategy"]);
        assert_eq!(
            got["spec"]["revisionHistoryLimit"],
            want["revisionHistoryLimit"]
        );
        let pod = &got["spec"]["template"]["spec"];
        let expected_pod = [
            ("restartPolicy", json!("Always")),
            ("terminationGracePeriodSeconds", json!(30)),
            ("dnsPolicy", json!("ClusterFirst")),
            ("schedulerName", json!("default-scheduler")),
            ("securityContext", json!({})),
        ];
        for (k, v) in expected_pod {
            assert_eq!(pod[k], v, "{k}");
        }
        let c = &pod["containers"][0];
        let expected_container = [
            ("terminationMessagePath", json!("/dev/termination-log")),
            ("terminationMessagePolicy", json!("File")),
            ("imagePullPolicy", json!("Always")),
        ];
        for (k, v) in expected_container {
            assert_eq!(c[k], v, "{k}");
        }
        assert_eq!(c["ports"][0]["protocol"], json!("TCP"));

        let mut again = ds.clone();
        default_daemonset(&mut again);
        assert_eq!(again, ds, "defaulting is idempotent");
    }

    #[test]
    fn defaults_complete_a_partial_strategy_and_keep_given_values() {
        let cases = vec![
            (
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}),
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0}}),
            ),
            (
                json!({"rollingUpdate": {"maxSurge": 1}}),
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}),
            ),
            (json!({"type": "OnDelete"}), json!({"type": "OnDelete"})),
        ];
        for (given, want) in cases {
            let patch = json!({"spec": {"updateStrategy": given, "revisionHistoryLimit": 3,
                "template": {"spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 5}}}});
            let mut ds: DaemonSet =
                serde_json::from_value(merge_patch(&base(), &patch).expect("merge"))
                    .expect("decodes");
            default_daemonset(&mut ds);
            let got = serde_json::to_value(&ds).expect("serializes");
            assert_eq!(got["spec"]["updateStrategy"], want, "{given}");
            assert_eq!(got["spec"]["revisionHistoryLimit"], json!(3));
            assert_eq!(
                got["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
                json!(5)
            );
        }
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("localhost:5000/busybox", "Always"),
            ("localhost:5000/busybox:1.36", "IfNotPresent"),
            ("busybox@sha256:abcd", "IfNotPresent"),
            ("busybox:latest@sha256:abcd", "IfNotPresent"),
        ];
        for (image, want) in cases {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }
}
