//! ValidatePodSpec (pkg/apis/core/validation): volumes, containers, mounts, probes, lifecycle
//! hooks, resources.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe, ResourceRequirements, Volume};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::core::names;
use crate::core::quantity::Quantity;

use super::*;

/// The checks of a pod spec (ValidatePodSpec); owners add their own (DaemonSet: restartPolicy).
pub(super) fn validate_pod_spec(spec: Option<&PodSpec>, path: &str) -> Vec<FieldError> {
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
pub(super) fn validate_volumes(
    vols: &[Volume],
    path: &str,
    errs: &mut Vec<FieldError>,
) -> BTreeSet<String> {
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

pub(super) fn validate_container(
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
pub(super) fn validate_mount_propagation(
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
pub(super) fn validate_sub_path(
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
pub(super) fn validate_probe(p: &Probe, path: &str, errs: &mut Vec<FieldError>) {
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
pub(super) fn validate_lifecycle(
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
pub(super) fn validate_port_num_or_name(
    port: &IntOrString,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
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

pub(super) fn validate_resources(r: &ResourceRequirements, path: &str, errs: &mut Vec<FieldError>) {
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
