//! Which nodes a DaemonSet's pod runs on: Kubernetes' NodeShouldRunDaemonPod, pure.
//!
//! A port of pkg/controller/daemon (`NodeShouldRunDaemonPod`, `predicates`), component-helpers'
//! nodeaffinity (`GetRequiredNodeAffinity(pod).Match(node)`), v1helper's taint/toleration
//! matching and `util.AddOrUpdateDaemonPodTolerations`. On top of the verdict it says why, in
//! words, for every predicate that fails; [`explain`] gives every rule, passing or not, from the
//! same checks the verdict is made of (the `why` command prints them).
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};

use crate::core::labels::{validate_label_key, validate_label_value};

/// The verdict for one (node, DaemonSet) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligibility {
    /// A pod should be created on the node.
    pub should_run: bool,
    /// A pod already on the node may keep running (false: remove it promptly).
    pub should_continue_running: bool,
    /// Why not, in words a person reads (empty when it runs).
    pub reasons: Vec<String>,
}

pub const TAINT_EFFECT_NO_SCHEDULE: &str = "NoSchedule";
pub const TAINT_EFFECT_NO_EXECUTE: &str = "NoExecute";
pub const TAINT_NODE_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_NODE_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NODE_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_NODE_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_NODE_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_NODE_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Kubernetes' NodeShouldRunDaemonPod for `ds` on `node`, the automatic DaemonSet tolerations
/// included.
pub fn node_should_run(node: &Node, ds: &DaemonSet) -> Eligibility {
    explain(node, ds).eligibility
}

/// The same verdict for a bare pod spec (already carrying its tolerations).
pub fn pod_fits_node(node: &Node, spec: &PodSpec) -> Eligibility {
    evaluate(node, spec, spec.tolerations.as_deref().unwrap_or(&[]))
}

/// Adds the tolerations Kubernetes' DaemonSet controller adds to every daemon pod
/// (util.AddOrUpdateDaemonPodTolerations).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    add_daemon_tolerations_to(&mut tolerations, spec.host_network.unwrap_or(false));
    spec.tolerations = Some(tolerations);
}

fn add_daemon_tolerations_to(tolerations: &mut Vec<Toleration>, host_network: bool) {
    add_or_update_toleration(tolerations, TAINT_NODE_NOT_READY, TAINT_EFFECT_NO_EXECUTE);
    add_or_update_toleration(tolerations, TAINT_NODE_UNREACHABLE, TAINT_EFFECT_NO_EXECUTE);
    add_or_update_toleration(
        tolerations,
        TAINT_NODE_DISK_PRESSURE,
        TAINT_EFFECT_NO_SCHEDULE,
    );
    add_or_update_toleration(
        tolerations,
        TAINT_NODE_MEMORY_PRESSURE,
        TAINT_EFFECT_NO_SCHEDULE,
    );
    add_or_update_toleration(
        tolerations,
        TAINT_NODE_PID_PRESSURE,
        TAINT_EFFECT_NO_SCHEDULE,
    );
    add_or_update_toleration(
        tolerations,
        TAINT_NODE_UNSCHEDULABLE,
        TAINT_EFFECT_NO_SCHEDULE,
    );
    if host_network {
        add_or_update_toleration(
            tolerations,
            TAINT_NODE_NETWORK_UNAVAILABLE,
            TAINT_EFFECT_NO_SCHEDULE,
        );
    }
}

fn s(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// v1helper.AddOrUpdateTolerationInPodSpec with an `Exists` toleration for `key:effect`:
/// tolerations are identified by key, operator, value and effect; an identical one is left
/// alone, one differing only in tolerationSeconds is replaced, otherwise it is appended.
fn add_or_update_toleration(tolerations: &mut Vec<Toleration>, key: &str, effect: &str) {
    let same = |t: &Toleration| {
        s(&t.key) == key
            && s(&t.effect) == effect
            && s(&t.operator) == "Exists"
            && s(&t.value).is_empty()
    };
    if tolerations
        .iter()
        .any(|t| same(t) && t.toleration_seconds.is_none())
    {
        return;
    }
    let wanted = Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        value: None,
        toleration_seconds: None,
    };
    let mut updated = false;
    for t in tolerations.iter_mut().filter(|t| same(t)) {
        *t = wanted.clone();
        updated = true;
    }
    if !updated {
        tolerations.push(wanted);
    }
}

/// v1 Toleration.ToleratesTaint: an empty effect matches every effect, an empty key every key;
/// `Exists` ignores the value, `Equal` (or no operator) compares it.
pub fn tolerates_taint(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = s(&toleration.effect);
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = s(&toleration.key);
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match s(&toleration.operator) {
        "" | "Equal" => s(&toleration.value) == s(&taint.value),
        "Exists" => true,
        _ => false,
    }
}

/// A taint as kubectl prints it: `key=value:Effect`, or `key:Effect` without a value.
pub fn taint_to_string(taint: &Taint) -> String {
    match s(&taint.value) {
        "" => format!("{}:{}", taint.key, taint.effect),
        value => format!("{}={}:{}", taint.key, value, taint.effect),
    }
}

/// The rule a [`Check`] is about, in the order [`explain`] goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `spec.nodeName` (fitsNodeName).
    NodeName,
    /// One key of `spec.nodeSelector`.
    NodeSelector,
    /// The required node affinity: its terms, each expression and field of a term.
    NodeAffinity,
    /// One taint of the node against the pod's tolerations.
    Taint,
    /// `spec.unschedulable` (a cordoned node): DaemonSets ignore it.
    Unschedulable,
    /// The node's Ready condition: said, not judged (NodeShouldRunDaemonPod does not read it).
    Ready,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NodeName => "nodeName",
            Rule::NodeSelector => "nodeSelector",
            Rule::NodeAffinity => "nodeAffinity",
            Rule::Taint => "taint",
            Rule::Unschedulable => "unschedulable",
            Rule::Ready => "ready",
        }
    }
}

/// What one rule does to the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The rule lets the pod run here.
    Pass,
    /// No new pod; a running one stays (an untolerated NoSchedule taint).
    Blocks,
    /// No pod, and a running one is removed (nodeName, nodeSelector, node affinity, an
    /// untolerated NoExecute taint).
    Evicts,
    /// Told for the reader, without effect on the verdict.
    Note,
}

/// One rule applied to one (node, pod spec) pair, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub rule: Rule,
    pub outcome: Outcome,
    pub detail: String,
}

impl Check {
    fn new(rule: Rule, outcome: Outcome, detail: impl Into<String>) -> Check {
        Check {
            rule,
            outcome,
            detail: detail.into(),
        }
    }
}

/// Every rule for one pair, and the verdict they give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub eligibility: Eligibility,
    pub checks: Vec<Check>,
}

/// [`node_should_run`] rule by rule: the checks it decides from (the same code), with the rules
/// that pass and those that only inform (a cordoned node, the Ready condition) said too.
pub fn explain(node: &Node, ds: &DaemonSet) -> Explanation {
    let default_spec = PodSpec::default();
    let spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap_or(&default_spec);
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    add_daemon_tolerations_to(&mut tolerations, spec.host_network.unwrap_or(false));
    explain_with(node, spec, &tolerations)
}

/// The verdict the checks give: any Blocks or Evicts stops a new pod, any Evicts a running one;
/// the reasons are their details, in order.
fn verdict(checks: &[Check]) -> Eligibility {
    let failing = |o: Outcome| matches!(o, Outcome::Blocks | Outcome::Evicts);
    Eligibility {
        should_run: !checks.iter().any(|c| failing(c.outcome)),
        should_continue_running: !checks.iter().any(|c| c.outcome == Outcome::Evicts),
        reasons: checks
            .iter()
            .filter(|c| failing(c.outcome))
            .map(|c| c.detail.clone())
            .collect(),
    }
}

fn evaluate(node: &Node, spec: &PodSpec, tolerations: &[Toleration]) -> Eligibility {
    explain_with(node, spec, tolerations).eligibility
}

fn explain_with(node: &Node, spec: &PodSpec, tolerations: &[Toleration]) -> Explanation {
    let node_name = node.metadata.name.as_deref().unwrap_or("");
    let no_labels = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    let mut checks = Vec::new();

    // fitsNodeName
    checks.push(match spec.node_name.as_deref() {
        Some(wanted) if !wanted.is_empty() && wanted != node_name => Check::new(
            Rule::NodeName,
            Outcome::Evicts,
            format!("spec.nodeName is {wanted:?}, not this node {node_name:?}"),
        ),
        Some(wanted) if !wanted.is_empty() => Check::new(
            Rule::NodeName,
            Outcome::Pass,
            format!("spec.nodeName is this node {wanted:?}"),
        ),
        _ => Check::new(Rule::NodeName, Outcome::Pass, "spec.nodeName is not set"),
    });

    // fitsNodeAffinity: nodeSelector AND the required node affinity.
    checks.extend(explain_node_affinity(spec, labels, node_name));

    // fitsTaints: NoSchedule and NoExecute taints must be tolerated.
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    if taints.is_empty() {
        checks.push(Check::new(
            Rule::Taint,
            Outcome::Pass,
            "the node has no taints",
        ));
    }
    let own = spec.tolerations.as_deref().unwrap_or(&[]);
    for taint in taints {
        checks.push(explain_taint(taint, tolerations, own));
    }

    checks.extend(explain_node_state(node));
    Explanation {
        eligibility: verdict(&checks),
        checks,
    }
}

/// fitsNodeAffinity, explained: each key of the nodeSelector, then the required node affinity
/// (component-helpers' GetRequiredNodeAffinity(pod).Match(node)).
fn explain_node_affinity(
    spec: &PodSpec,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let selector = spec.node_selector.as_ref().filter(|s| !s.is_empty());
    if selector.is_none() {
        checks.push(Check::new(
            Rule::NodeSelector,
            Outcome::Pass,
            "node selector: none",
        ));
    }
    for (key, wanted) in selector.into_iter().flatten() {
        checks.push(match labels.get(key) {
            None => Check::new(
                Rule::NodeSelector,
                Outcome::Evicts,
                format!("node selector: label {key} is missing"),
            ),
            Some(got) if got != wanted => Check::new(
                Rule::NodeSelector,
                Outcome::Evicts,
                format!("node selector: label {key} is {got:?}, not {wanted:?}"),
            ),
            Some(_) => Check::new(
                Rule::NodeSelector,
                Outcome::Pass,
                format!("node selector: label {key} is {wanted:?}"),
            ),
        });
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(required) => checks.extend(explain_node_selector(required, labels, node_name)),
        None => checks.push(Check::new(
            Rule::NodeAffinity,
            Outcome::Pass,
            "node affinity: no required node affinity",
        )),
    }
    checks
}

/// Whether `spec`'s nodeSelector and required node affinity match `node` (the scheduler's
/// NodeAffinity filter): no check of [`explain_node_affinity`] evicts.
pub fn matches_node_affinity(node: &Node, spec: &PodSpec) -> bool {
    let no_labels = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    let node_name = node.metadata.name.as_deref().unwrap_or("");
    explain_node_affinity(spec, labels, node_name)
        .iter()
        .all(|c| c.outcome != Outcome::Evicts)
}

/// Whether one node selector term matches `node` (a preferred node affinity term's preference):
/// every result of [`explain_term`] is Ok.
pub fn matches_term(term: &NodeSelectorTerm, node: &Node) -> bool {
    let no_labels = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    let node_name = node.metadata.name.as_deref().unwrap_or("");
    explain_term(term, labels, node_name)
        .iter()
        .all(Result::is_ok)
}

fn explain_taint(taint: &Taint, tolerations: &[Toleration], own: &[Toleration]) -> Check {
    let shown = taint_to_string(taint);
    let no_execute = taint.effect == TAINT_EFFECT_NO_EXECUTE;
    if !no_execute && taint.effect != TAINT_EFFECT_NO_SCHEDULE {
        return Check::new(
            Rule::Taint,
            Outcome::Note,
            format!(
                "taint {shown} is not enforced: only NoSchedule and NoExecute keep pods off a node"
            ),
        );
    }
    match tolerations.iter().find(|t| tolerates_taint(t, taint)) {
        Some(t) if own.contains(t) => Check::new(
            Rule::Taint,
            Outcome::Pass,
            format!(
                "taint {shown} is tolerated by the pod's toleration {}",
                toleration_to_string(t)
            ),
        ),
        Some(t) => Check::new(
            Rule::Taint,
            Outcome::Pass,
            format!(
                "taint {shown} is tolerated by {}, which every DaemonSet pod gets",
                toleration_to_string(t)
            ),
        ),
        None if no_execute => Check::new(
            Rule::Taint,
            Outcome::Evicts,
            format!("taint {shown} is not tolerated (a running pod is removed)"),
        ),
        None => Check::new(
            Rule::Taint,
            Outcome::Blocks,
            format!("taint {shown} is not tolerated"),
        ),
    }
}

/// A toleration in one line: `key=value:Effect` (Equal) or `key:Effect (Exists)`; `*` for an
/// empty key or effect (every one).
pub fn toleration_to_string(t: &Toleration) -> String {
    let key = match s(&t.key) {
        "" => "*",
        k => k,
    };
    let effect = match s(&t.effect) {
        "" => "*",
        e => e,
    };
    match s(&t.operator) {
        "Exists" => format!("{key}:{effect} (Exists)"),
        "" | "Equal" => format!("{key}={}:{effect}", s(&t.value)),
        op => format!("{key} {op} {}:{effect}", s(&t.value)),
    }
}

/// The node's cordon and Ready condition: neither changes NodeShouldRunDaemonPod's verdict.
fn explain_node_state(node: &Node) -> Vec<Check> {
    let mut checks = Vec::new();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        checks.push(Check::new(
            Rule::Unschedulable,
            Outcome::Note,
            format!(
                "the node is cordoned (spec.unschedulable), which DaemonSets ignore: their pods \
                 tolerate {TAINT_NODE_UNSCHEDULABLE}:{TAINT_EFFECT_NO_SCHEDULE}"
            ),
        ));
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let detail = match ready {
        Some(c) if c.status == "True" => "the node is Ready".to_string(),
        Some(c) => format!(
            "the node is not Ready (Ready={}{}): the pod is still the node's (DaemonSet pods \
             tolerate the not-ready and unreachable taints), its containers run when the node's \
             agent is back",
            c.status,
            c.reason
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default()
        ),
        None => "the node has not reported a Ready condition yet: the pod runs once its agent does"
            .to_string(),
    };
    checks.push(Check::new(Rule::Ready, Outcome::Note, detail));
    checks
}

/// nodeaffinity.LazyErrorNodeSelector.Match, explained: terms ORed; an empty term, or one with an
/// invalid requirement, matches nothing. When a term matches, the failures of the others are
/// notes; when none does, every failure evicts.
fn explain_node_selector(
    selector: &NodeSelector,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> Vec<Check> {
    let terms = &selector.node_selector_terms;
    if terms.is_empty() {
        return vec![Check::new(
            Rule::NodeAffinity,
            Outcome::Evicts,
            "node affinity: the required node selector has no terms, so it matches no node",
        )];
    }
    let results: Vec<Vec<Result<String, String>>> = terms
        .iter()
        .map(|t| explain_term(t, labels, node_name))
        .collect();
    let matching = results.iter().position(|r| r.iter().all(Result::is_ok));
    let mut checks = Vec::new();
    for (i, term) in results.into_iter().enumerate() {
        let prefix = if terms.len() > 1 {
            format!("node affinity term {} of {}", i + 1, terms.len())
        } else {
            "node affinity".to_string()
        };
        for r in term {
            checks.push(match (r, matching) {
                (Ok(why), _) => Check::new(
                    Rule::NodeAffinity,
                    Outcome::Pass,
                    format!("{prefix}: {why}"),
                ),
                (Err(why), None) => Check::new(
                    Rule::NodeAffinity,
                    Outcome::Evicts,
                    format!("{prefix}: {why}"),
                ),
                (Err(why), Some(m)) => Check::new(
                    Rule::NodeAffinity,
                    Outcome::Note,
                    format!(
                        "{prefix}: {why} (term {} matches, the terms are ORed)",
                        m + 1
                    ),
                ),
            });
        }
    }
    checks
}

/// One term: each expression and field, Ok with what matched or Err with what did not. The term
/// matches when all are Ok.
fn explain_term(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> Vec<Result<String, String>> {
    let expressions = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if expressions.is_empty() && fields.is_empty() {
        return vec![Err("the term is empty and matches no node".to_string())];
    }
    let invalid: Vec<Result<String, String>> = expressions
        .iter()
        .filter_map(|e| validate_expression(e).err())
        .chain(fields.iter().filter_map(|f| validate_field(f).err()))
        .map(Err)
        .collect();
    if !invalid.is_empty() {
        return invalid;
    }
    let mut results: Vec<Result<String, String>> = expressions
        .iter()
        .map(|e| match_expression(e, labels))
        .collect();
    // Kubernetes only has fields to match when the node has a name.
    if !node_name.is_empty() {
        results.extend(fields.iter().map(|f| match_field(f, node_name)));
    }
    results
}

fn values_of(r: &NodeSelectorRequirement) -> &[String] {
    r.values.as_deref().unwrap_or(&[])
}

fn list(values: &[String]) -> String {
    format!("[{}]", values.join(", "))
}

/// What labels.NewRequirement refuses for a matchExpressions entry.
fn validate_expression(r: &NodeSelectorRequirement) -> Result<(), String> {
    let values = values_of(r);
    let invalid = |why: String| format!("invalid requirement on label {}: {why}", r.key);
    validate_label_key(&r.key).map_err(|e| invalid(e.to_string()))?;
    match r.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => {
            return Err(invalid(format!("{} needs at least one value", r.operator)))
        }
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            return Err(invalid(format!("{} takes no values", r.operator)))
        }
        "Gt" | "Lt" => {
            if values.len() != 1 {
                return Err(invalid(format!("{} needs exactly one value", r.operator)));
            }
            if values[0].parse::<i64>().is_err() {
                return Err(invalid(format!(
                    "{} value {:?} is not an integer",
                    r.operator, values[0]
                )));
            }
        }
        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
        other => return Err(invalid(format!("operator {other:?} is not supported"))),
    }
    values
        .iter()
        .try_for_each(|v| validate_label_value(v))
        .map_err(|e| invalid(e.to_string()))
}

/// What nodeSelectorRequirementsAsFieldSelector refuses for a matchFields entry.
fn validate_field(r: &NodeSelectorRequirement) -> Result<(), String> {
    match r.operator.as_str() {
        "In" | "NotIn" if values_of(r).len() == 1 => Ok(()),
        "In" | "NotIn" => Err(format!(
            "invalid requirement on field {}: {} needs exactly one value",
            r.key, r.operator
        )),
        other => Err(format!(
            "invalid requirement on field {}: operator {other:?} is not supported (In, NotIn)",
            r.key
        )),
    }
}

/// One matchExpressions entry against the node's labels: Ok with what matched, Err with why not.
fn match_expression(
    r: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<String, String> {
    let key = &r.key;
    let values = values_of(r);
    let got = labels.get(key);
    match (r.operator.as_str(), got) {
        ("In", Some(v)) if values.contains(v) => {
            Ok(format!("label {key}={v} is In {}", list(values)))
        }
        ("In", Some(v)) => Err(format!("label {key}={v} is not In {}", list(values))),
        ("In", None) => Err(format!(
            "label {key} is missing (required In {})",
            list(values)
        )),
        ("NotIn", Some(v)) if values.contains(v) => Err(format!(
            "label {key}={v} is excluded by NotIn {}",
            list(values)
        )),
        ("NotIn", Some(v)) => Ok(format!("label {key}={v} is NotIn {}", list(values))),
        ("NotIn", None) => Ok(format!("label {key} is absent, so NotIn {}", list(values))),
        ("Exists", Some(v)) => Ok(format!("label {key}={v} exists")),
        ("Exists", None) => Err(format!("label {key} is missing (required to exist)")),
        ("DoesNotExist", None) => Ok(format!("label {key} does not exist")),
        ("DoesNotExist", Some(v)) => Err(format!("label {key}={v} exists (required not to exist)")),
        (op @ ("Gt" | "Lt"), got) => {
            // Validated: exactly one integer value.
            let bound: i64 = values
                .first()
                .and_then(|v| v.parse().ok())
                .unwrap_or_default();
            let Some(v) = got else {
                return Err(format!("label {key} is missing (required {op} {bound})"));
            };
            let Ok(n) = v.parse::<i64>() else {
                return Err(format!(
                    "label {key}={v} is not an integer (required {op} {bound})"
                ));
            };
            if (op == "Gt" && n > bound) || (op == "Lt" && n < bound) {
                Ok(format!("label {key}={v} is {op} {bound}"))
            } else {
                Err(format!("label {key}={v} is not {op} {bound}"))
            }
        }
        (op, _) => Err(format!("operator {op:?} is not supported")),
    }
}

/// matchFields: the node's only field is `metadata.name`; any other key reads as empty, as in
/// Kubernetes' field set.
fn match_field(r: &NodeSelectorRequirement, node_name: &str) -> Result<String, String> {
    let key = &r.key;
    let wanted = values_of(r).first().map(String::as_str).unwrap_or("");
    let got = if key == "metadata.name" {
        node_name
    } else {
        ""
    };
    match r.operator.as_str() {
        "In" if got == wanted => Ok(format!("field {key} is {got:?}")),
        "In" => Err(format!("field {key} is {got:?}, not {wanted:?}")),
        "NotIn" if got != wanted => Ok(format!("field {key} is {got:?}, not {wanted:?}")),
        _ => Err(format!("field {key} is {got:?}, excluded by NotIn")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn node(name: &str, labels: &[(&str, &str)], taints: Value) -> Node {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
        }))
        .expect("valid node")
    }

    fn ds(spec: Value) -> DaemonSet {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
        serde_json::from_value(json!({
            "metadata": {"name": "ds", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}}, "spec": spec},
            },
        }))
        .expect("valid daemonset")
    }

    fn affinity(terms: Value) -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": terms}}}})
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Value {
        json!({"key": key, "operator": op, "values": values})
    }

    fn one_term(exprs: Vec<Value>) -> Value {
        affinity(json!([{"matchExpressions": exprs}]))
    }

    struct Case {
        name: &'static str,
        node: Node,
        ds: DaemonSet,
        run: bool,
        keep: bool,
        /// Every reason expected, in order (exact text).
        reasons: &'static [&'static str],
    }

    fn worker() -> Node {
        node(
            "worker-1",
            &[
                ("node-role.kubernetes.io/worker", "true"),
                ("kubernetes.io/hostname", "worker-1"),
                ("zone", "a"),
                ("cpus", "8"),
                ("gen", "v2"),
            ],
            json!([]),
        )
    }

    fn bare() -> Node {
        node("bare-1", &[("kubernetes.io/hostname", "bare-1")], json!([]))
    }

    fn tainted(taints: Value) -> Node {
        node("worker-1", &[("zone", "a")], taints)
    }

    fn cases() -> Vec<Case> {
        let node_monitor =
            || ds(json!({"nodeSelector": {"node-role.kubernetes.io/worker": "true"}}));
        let kube_proxy = || {
            one_term(vec![expr(
                "node-role.kubernetes.io/worker",
                "In",
                &["true"],
            )])
        };
        vec![
            // The two DaemonSets of the issue.
            Case { name: "node-monitor on a worker", node: worker(), ds: node_monitor(), run: true, keep: true, reasons: &[] },
            Case {
                name: "node-monitor on an unlabelled node",
                node: bare(),
                ds: node_monitor(),
                run: false,
                keep: false,
                reasons: &["node selector: label node-role.kubernetes.io/worker is missing"],
            },
            Case { name: "kube-proxy on a worker", node: worker(), ds: ds(kube_proxy()), run: true, keep: true, reasons: &[] },
            Case {
                name: "kube-proxy on an unlabelled node",
                node: bare(),
                ds: ds(kube_proxy()),
                run: false,
                keep: false,
                reasons: &["node affinity: label node-role.kubernetes.io/worker is missing (required In [true])"],
            },
            // nodeName
            Case { name: "no constraints", node: bare(), ds: ds(json!({})), run: true, keep: true, reasons: &[] },
            Case { name: "nodeName this node", node: worker(), ds: ds(json!({"nodeName": "worker-1"})), run: true, keep: true, reasons: &[] },
            Case {
                name: "nodeName other node",
                node: worker(),
                ds: ds(json!({"nodeName": "worker-2"})),
                run: false,
                keep: false,
                reasons: &["spec.nodeName is \"worker-2\", not this node \"worker-1\""],
            },
            // nodeSelector
            Case {
                name: "nodeSelector all keys",
                node: worker(),
                ds: ds(json!({"nodeSelector": {"zone": "a", "gen": "v2"}})),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "nodeSelector wrong value",
                node: worker(),
                ds: ds(json!({"nodeSelector": {"zone": "b", "gen": "v2"}})),
                run: false,
                keep: false,
                reasons: &["node selector: label zone is \"a\", not \"b\""],
            },
            Case {
                name: "nodeSelector and affinity both required",
                node: worker(),
                ds: ds({
                    let mut v = one_term(vec![expr("zone", "In", &["b"])]);
                    v["nodeSelector"] = json!({"zone": "a"});
                    v
                }),
                run: false,
                keep: false,
                reasons: &["node affinity: label zone=a is not In [b]"],
            },
            Case {
                name: "nodeSelector fails, affinity holds",
                node: worker(),
                ds: ds({
                    let mut v = one_term(vec![expr("zone", "In", &["a"])]);
                    v["nodeSelector"] = json!({"zone": "b"});
                    v
                }),
                run: false,
                keep: false,
                reasons: &["node selector: label zone is \"a\", not \"b\""],
            },
            // Operators
            Case { name: "In", node: worker(), ds: ds(one_term(vec![expr("zone", "In", &["b", "a"])])), run: true, keep: true, reasons: &[] },
            Case { name: "NotIn other value", node: worker(), ds: ds(one_term(vec![expr("zone", "NotIn", &["b"])])), run: true, keep: true, reasons: &[] },
            Case {
                name: "NotIn listed value",
                node: worker(),
                ds: ds(one_term(vec![expr("zone", "NotIn", &["a", "b"])])),
                run: false,
                keep: false,
                reasons: &["node affinity: label zone=a is excluded by NotIn [a, b]"],
            },
            Case { name: "NotIn missing label matches", node: worker(), ds: ds(one_term(vec![expr("region", "NotIn", &["x"])])), run: true, keep: true, reasons: &[] },
            Case { name: "Exists", node: worker(), ds: ds(one_term(vec![expr("zone", "Exists", &[])])), run: true, keep: true, reasons: &[] },
            Case {
                name: "Exists missing",
                node: worker(),
                ds: ds(one_term(vec![expr("region", "Exists", &[])])),
                run: false,
                keep: false,
                reasons: &["node affinity: label region is missing (required to exist)"],
            },
            Case { name: "DoesNotExist missing label matches", node: worker(), ds: ds(one_term(vec![expr("region", "DoesNotExist", &[])])), run: true, keep: true, reasons: &[] },
            Case {
                name: "DoesNotExist present",
                node: worker(),
                ds: ds(one_term(vec![expr("zone", "DoesNotExist", &[])])),
                run: false,
                keep: false,
                reasons: &["node affinity: label zone=a exists (required not to exist)"],
            },
            Case { name: "Gt", node: worker(), ds: ds(one_term(vec![expr("cpus", "Gt", &["4"])])), run: true, keep: true, reasons: &[] },
            Case {
                name: "Gt equal is not greater",
                node: worker(),
                ds: ds(one_term(vec![expr("cpus", "Gt", &["8"])])),
                run: false,
                keep: false,
                reasons: &["node affinity: label cpus=8 is not Gt 8"],
            },
            Case { name: "Lt", node: worker(), ds: ds(one_term(vec![expr("cpus", "Lt", &["16"])])), run: true, keep: true, reasons: &[] },
            Case { name: "Lt not less", node: worker(), ds: ds(one_term(vec![expr("cpus", "Lt", &["4"])])), run: false, keep: false, reasons: &["node affinity: label cpus=8 is not Lt 4"] },
            Case {
                // Kubernetes validates Gt/Lt values as label values too, so "-1" is refused.
                name: "Lt with a negative value",
                node: worker(),
                ds: ds(one_term(vec![expr("cpus", "Lt", &["-1"])])),
                run: false,
                keep: false,
                reasons: &["node affinity: invalid requirement on label cpus: label value \"-1\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"],
            },
            Case {
                name: "Gt on a non-integer label",
                node: worker(),
                ds: ds(one_term(vec![expr("gen", "Gt", &["1"])])),
                run: false,
                keep: false,
                reasons: &["node affinity: label gen=v2 is not an integer (required Gt 1)"],
            },
            Case {
                name: "Lt on a missing label",
                node: worker(),
                ds: ds(one_term(vec![expr("ram", "Lt", &["1"])])),
                run: false,
                keep: false,
                reasons: &["node affinity: label ram is missing (required Lt 1)"],
            },
            Case {
                name: "Gt with a non-integer value",
                node: worker(),
                ds: ds(one_term(vec![expr("cpus", "Gt", &["four"])])),
                run: false,
                keep: false,
                reasons: &["node affinity: invalid requirement on label cpus: Gt value \"four\" is not an integer"],
            },
            Case {
                name: "Gt with two values",
                node: worker(),
                ds: ds(one_term(vec![expr("cpus", "Gt", &["1", "2"])])),
                run: false,
                keep: false,
                reasons: &["node affinity: invalid requirement on label cpus: Gt needs exactly one value"],
            },
            Case {
                name: "unknown operator",
                node: worker(),
                ds: ds(one_term(vec![expr("zone", "Equals", &["a"])])),
                run: false,
                keep: false,
                reasons: &["node affinity: invalid requirement on label zone: operator \"Equals\" is not supported"],
            },
            Case {
                name: "In without values",
                node: worker(),
                ds: ds(one_term(vec![expr("zone", "In", &[])])),
                run: false,
                keep: false,
                reasons: &["node affinity: invalid requirement on label zone: In needs at least one value"],
            },
            Case {
                name: "expressions in a term are ANDed",
                node: worker(),
                ds: ds(one_term(vec![expr("zone", "In", &["a"]), expr("cpus", "Gt", &["16"]), expr("gen", "In", &["v3"])])),
                run: false,
                keep: false,
                reasons: &["node affinity: label cpus=8 is not Gt 16", "node affinity: label gen=v2 is not In [v3]"],
            },
            // Terms
            Case {
                name: "terms are ORed",
                node: worker(),
                ds: ds(affinity(json!([
                    {"matchExpressions": [expr("zone", "In", &["b"])]},
                    {"matchExpressions": [expr("zone", "In", &["a"])]},
                ]))),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "an empty term matches nothing, another term can",
                node: worker(),
                ds: ds(affinity(json!([{}, {"matchExpressions": [expr("zone", "Exists", &[])]}]))),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "only an empty term",
                node: worker(),
                ds: ds(affinity(json!([{"matchExpressions": []}]))),
                run: false,
                keep: false,
                reasons: &["node affinity: the term is empty and matches no node"],
            },
            Case {
                name: "no terms",
                node: worker(),
                ds: ds(affinity(json!([]))),
                run: false,
                keep: false,
                reasons: &["node affinity: the required node selector has no terms, so it matches no node"],
            },
            Case {
                name: "an invalid term does not spoil a valid one",
                node: worker(),
                ds: ds(affinity(json!([
                    {"matchExpressions": [expr("cpus", "Gt", &["x"])]},
                    {"matchExpressions": [expr("zone", "In", &["a"])]},
                ]))),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "every failing term is explained",
                node: worker(),
                ds: ds(affinity(json!([
                    {"matchExpressions": [expr("zone", "In", &["b"])]},
                    {"matchFields": [expr("metadata.name", "In", &["worker-2"])]},
                ]))),
                run: false,
                keep: false,
                reasons: &[
                    "node affinity term 1 of 2: label zone=a is not In [b]",
                    "node affinity term 2 of 2: field metadata.name is \"worker-1\", not \"worker-2\"",
                ],
            },
            // matchFields
            Case {
                name: "matchFields In this node",
                node: worker(),
                ds: ds(affinity(json!([{"matchFields": [expr("metadata.name", "In", &["worker-1"])]}]))),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "matchFields NotIn this node",
                node: worker(),
                ds: ds(affinity(json!([{"matchFields": [expr("metadata.name", "NotIn", &["worker-1"])]}]))),
                run: false,
                keep: false,
                reasons: &["node affinity: field metadata.name is \"worker-1\", excluded by NotIn"],
            },
            Case {
                name: "matchFields NotIn another node",
                node: worker(),
                ds: ds(affinity(json!([{"matchFields": [expr("metadata.name", "NotIn", &["worker-2"])]}]))),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "matchFields needs exactly one value",
                node: worker(),
                ds: ds(affinity(json!([{"matchFields": [expr("metadata.name", "In", &["worker-1", "worker-2"])]}]))),
                run: false,
                keep: false,
                reasons: &["node affinity: invalid requirement on field metadata.name: In needs exactly one value"],
            },
            Case {
                name: "matchFields and matchExpressions in one term are ANDed",
                node: worker(),
                ds: ds(affinity(json!([{
                    "matchExpressions": [expr("zone", "In", &["a"])],
                    "matchFields": [expr("metadata.name", "In", &["worker-2"])],
                }]))),
                run: false,
                keep: false,
                reasons: &["node affinity: field metadata.name is \"worker-1\", not \"worker-2\""],
            },
            // Taints
            Case {
                name: "NoSchedule taint not tolerated, a running pod stays",
                node: tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])),
                ds: ds(json!({})),
                run: false,
                keep: true,
                reasons: &["taint dedicated=gpu:NoSchedule is not tolerated"],
            },
            Case {
                name: "NoExecute taint not tolerated, a running pod goes",
                node: tainted(json!([{"key": "dedicated", "effect": "NoExecute"}])),
                ds: ds(json!({})),
                run: false,
                keep: false,
                reasons: &["taint dedicated:NoExecute is not tolerated (a running pod is removed)"],
            },
            Case {
                name: "PreferNoSchedule is ignored",
                node: tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "PreferNoSchedule"}])),
                ds: ds(json!({})),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "Equal toleration with the value",
                node: tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])),
                ds: ds(json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]})),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "empty operator means Equal",
                node: tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])),
                ds: ds(json!({"tolerations": [{"key": "dedicated", "value": "gpu"}]})),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "Equal toleration with another value",
                node: tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])),
                ds: ds(json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ssd"}]})),
                run: false,
                keep: true,
                reasons: &["taint dedicated=gpu:NoSchedule is not tolerated"],
            },
            Case {
                name: "Exists ignores the value",
                node: tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}])),
                ds: ds(json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]})),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "toleration for another effect",
                node: tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}])),
                ds: ds(json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]})),
                run: false,
                keep: false,
                reasons: &["taint dedicated=gpu:NoExecute is not tolerated (a running pod is removed)"],
            },
            Case {
                name: "empty key with Exists tolerates every taint",
                node: tainted(json!([
                    {"key": "a", "value": "1", "effect": "NoSchedule"},
                    {"key": "b", "effect": "NoExecute"},
                ])),
                ds: ds(json!({"tolerations": [{"operator": "Exists"}]})),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "NoExecute tolerated, NoSchedule not: a running pod stays",
                node: tainted(json!([
                    {"key": "a", "effect": "NoSchedule"},
                    {"key": "b", "effect": "NoExecute"},
                ])),
                ds: ds(json!({"tolerations": [{"key": "b", "operator": "Exists"}]})),
                run: false,
                keep: true,
                reasons: &["taint a:NoSchedule is not tolerated"],
            },
            Case {
                name: "unknown toleration operator tolerates nothing",
                node: tainted(json!([{"key": "a", "effect": "NoSchedule"}])),
                ds: ds(json!({"tolerations": [{"key": "a", "operator": "Gt", "value": "1"}]})),
                run: false,
                keep: true,
                reasons: &["taint a:NoSchedule is not tolerated"],
            },
            Case {
                name: "a failing node selector and an untolerated taint are both explained",
                node: node("n", &[], json!([{"key": "a", "effect": "NoExecute"}])),
                ds: ds(json!({"nodeSelector": {"x": "y"}})),
                run: false,
                keep: false,
                reasons: &[
                    "node selector: label x is missing",
                    "taint a:NoExecute is not tolerated (a running pod is removed)",
                ],
            },
            // Automatic DaemonSet tolerations
            Case {
                name: "unschedulable node still runs daemon pods",
                node: tainted(json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}])),
                ds: ds(json!({})),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "not-ready and unreachable NoExecute are tolerated",
                node: tainted(json!([
                    {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
                    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                    {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/pid-pressure", "effect": "NoSchedule"},
                ])),
                ds: ds(json!({})),
                run: true,
                keep: true,
                reasons: &[],
            },
            Case {
                name: "not-ready NoSchedule is not auto-tolerated",
                node: tainted(json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}])),
                ds: ds(json!({})),
                run: false,
                keep: true,
                reasons: &["taint node.kubernetes.io/not-ready:NoSchedule is not tolerated"],
            },
            Case {
                name: "network-unavailable without hostNetwork",
                node: tainted(json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}])),
                ds: ds(json!({})),
                run: false,
                keep: true,
                reasons: &["taint node.kubernetes.io/network-unavailable:NoSchedule is not tolerated"],
            },
            Case {
                name: "network-unavailable with hostNetwork",
                node: tainted(json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}])),
                ds: ds(json!({"hostNetwork": true})),
                run: true,
                keep: true,
                reasons: &[],
            },
        ]
    }

    #[test]
    fn node_should_run_table() {
        for case in cases() {
            let got = node_should_run(&case.node, &case.ds);
            let want = Eligibility {
                should_run: case.run,
                should_continue_running: case.keep,
                reasons: case.reasons.iter().map(|r| r.to_string()).collect(),
            };
            assert_eq!(got, want, "{}", case.name);
        }
    }

    #[test]
    fn pod_fits_node_uses_only_the_pod_tolerations() {
        let node =
            tainted(json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]));
        let mut spec = PodSpec::default();
        assert!(!pod_fits_node(&node, &spec).should_run);
        add_daemon_tolerations(&mut spec);
        assert!(pod_fits_node(&node, &spec).should_run);
    }

    fn tol(key: &str, op: &str, effect: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            effect: Some(effect.into()),
            value: None,
            toleration_seconds: seconds,
        }
    }

    #[test]
    fn daemon_tolerations_are_added_once() {
        let auto = |key: &str, effect: &str| tol(key, "Exists", effect, None);
        let base = vec![
            auto(TAINT_NODE_NOT_READY, TAINT_EFFECT_NO_EXECUTE),
            auto(TAINT_NODE_UNREACHABLE, TAINT_EFFECT_NO_EXECUTE),
            auto(TAINT_NODE_DISK_PRESSURE, TAINT_EFFECT_NO_SCHEDULE),
            auto(TAINT_NODE_MEMORY_PRESSURE, TAINT_EFFECT_NO_SCHEDULE),
            auto(TAINT_NODE_PID_PRESSURE, TAINT_EFFECT_NO_SCHEDULE),
            auto(TAINT_NODE_UNSCHEDULABLE, TAINT_EFFECT_NO_SCHEDULE),
        ];
        let user = tol("dedicated", "Exists", "NoSchedule", None);
        let with_network = |mut v: Vec<Toleration>| {
            v.push(auto(
                TAINT_NODE_NETWORK_UNAVAILABLE,
                TAINT_EFFECT_NO_SCHEDULE,
            ));
            v
        };
        // (case, tolerations before, hostNetwork, tolerations after)
        type Row<'a> = (&'a str, Option<Vec<Toleration>>, bool, Vec<Toleration>);
        let table: Vec<Row> = vec![
            ("none", None, false, base.clone()),
            ("hostNetwork", None, true, with_network(base.clone())),
            (
                "user toleration kept first",
                Some(vec![user.clone()]),
                false,
                [vec![user.clone()], base.clone()].concat(),
            ),
            (
                "already present: unchanged",
                Some(base.clone()),
                false,
                base.clone(),
            ),
            (
                "tolerationSeconds replaced by the infinite one",
                Some(vec![tol(
                    TAINT_NODE_NOT_READY,
                    "Exists",
                    TAINT_EFFECT_NO_EXECUTE,
                    Some(300),
                )]),
                false,
                base.clone(),
            ),
            (
                "a different operator is another toleration",
                Some(vec![tol(
                    TAINT_NODE_UNSCHEDULABLE,
                    "Equal",
                    TAINT_EFFECT_NO_SCHEDULE,
                    None,
                )]),
                false,
                [
                    vec![tol(
                        TAINT_NODE_UNSCHEDULABLE,
                        "Equal",
                        TAINT_EFFECT_NO_SCHEDULE,
                        None,
                    )],
                    base.clone(),
                ]
                .concat(),
            ),
        ];
        for (name, tolerations, host_network, want) in table {
            let mut spec = PodSpec {
                tolerations,
                host_network: Some(host_network),
                ..Default::default()
            };
            add_daemon_tolerations(&mut spec);
            assert_eq!(spec.tolerations.as_ref(), Some(&want), "{name}");
            add_daemon_tolerations(&mut spec);
            assert_eq!(spec.tolerations.as_ref(), Some(&want), "{name}: twice");
        }
    }

    #[test]
    fn toleration_matching() {
        let taint = |key: &str, value: Option<&str>, effect: &str| Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        };
        let t = |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
            Toleration {
                key: key.map(Into::into),
                operator: op.map(Into::into),
                value: value.map(Into::into),
                effect: effect.map(Into::into),
                toleration_seconds: None,
            }
        };
        let gpu = taint("dedicated", Some("gpu"), "NoSchedule");
        let table = [
            (
                "exact",
                t(
                    Some("dedicated"),
                    Some("Equal"),
                    Some("gpu"),
                    Some("NoSchedule"),
                ),
                true,
            ),
            (
                "empty effect matches all",
                t(Some("dedicated"), Some("Equal"), Some("gpu"), None),
                true,
            ),
            (
                "other effect",
                t(
                    Some("dedicated"),
                    Some("Equal"),
                    Some("gpu"),
                    Some("NoExecute"),
                ),
                false,
            ),
            (
                "other key",
                t(Some("other"), Some("Exists"), None, None),
                false,
            ),
            (
                "empty key Exists",
                t(None, Some("Exists"), None, None),
                true,
            ),
            (
                "empty key Equal compares value only",
                t(None, Some("Equal"), Some("gpu"), None),
                true,
            ),
            (
                "Equal other value",
                t(Some("dedicated"), None, Some("ssd"), None),
                false,
            ),
            (
                "Equal without value",
                t(Some("dedicated"), None, None, None),
                false,
            ),
            (
                "Exists ignores value",
                t(Some("dedicated"), Some("Exists"), Some("ssd"), None),
                true,
            ),
            (
                "unknown operator",
                t(Some("dedicated"), Some("Lt"), Some("gpu"), None),
                false,
            ),
        ];
        for (name, toleration, want) in table {
            assert_eq!(tolerates_taint(&toleration, &gpu), want, "{name}");
        }
        let no_value = taint("dedicated", None, "NoSchedule");
        assert!(tolerates_taint(
            &t(Some("dedicated"), Some("Equal"), Some(""), None),
            &no_value
        ));
        assert_eq!(taint_to_string(&gpu), "dedicated=gpu:NoSchedule");
        assert_eq!(taint_to_string(&no_value), "dedicated:NoSchedule");
    }

    fn ready(mut node: Node, status: &str) -> Node {
        node.status = Some(
            serde_json::from_value(json!({"conditions": [
                {"type": "Ready", "status": status, "reason": "KubeletReady"}]}))
            .expect("valid status"),
        );
        node
    }

    #[test]
    fn explain_table() {
        use Outcome::*;
        use Rule::*;
        let cordoned = {
            let mut n = tainted(json!([
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                {"key": "spot", "effect": "PreferNoSchedule"},
            ]));
            n.spec.as_mut().unwrap().unschedulable = Some(true);
            ready(n, "True")
        };
        // (case, node, daemonset, every check in order)
        type Row = (
            &'static str,
            Node,
            DaemonSet,
            Vec<(Rule, Outcome, &'static str)>,
        );
        let table: Vec<Row> = vec![
            (
                "no constraints on a node without status",
                bare(),
                ds(json!({})),
                vec![
                    (NodeName, Pass, "spec.nodeName is not set"),
                    (NodeSelector, Pass, "node selector: none"),
                    (NodeAffinity, Pass, "node affinity: no required node affinity"),
                    (Taint, Pass, "the node has no taints"),
                    (Ready, Note, "the node has not reported a Ready condition yet: the pod runs once its agent does"),
                ],
            ),
            (
                "nodeName, each selector key and each expression",
                ready(worker(), "True"),
                ds(json!({
                    "nodeName": "worker-1",
                    "nodeSelector": {"zone": "a", "gen": "v3"},
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            expr("cpus", "Gt", &["4"]),
                            expr("zone", "NotIn", &["b"]),
                            expr("gpu", "DoesNotExist", &[]),
                        ]}]}}},
                })),
                vec![
                    (NodeName, Pass, "spec.nodeName is this node \"worker-1\""),
                    (NodeSelector, Evicts, "node selector: label gen is \"v2\", not \"v3\""),
                    (NodeSelector, Pass, "node selector: label zone is \"a\""),
                    (NodeAffinity, Pass, "node affinity: label cpus=8 is Gt 4"),
                    (NodeAffinity, Pass, "node affinity: label zone=a is NotIn [b]"),
                    (NodeAffinity, Pass, "node affinity: label gpu does not exist"),
                    (Taint, Pass, "the node has no taints"),
                    (Ready, Note, "the node is Ready"),
                ],
            ),
            (
                "a matching term turns the other term's failures into notes",
                worker(),
                ds(affinity(json!([
                    {"matchExpressions": [expr("zone", "In", &["b"])]},
                    {"matchExpressions": [expr("zone", "In", &["a"])],
                     "matchFields": [expr("metadata.name", "In", &["worker-1"])]},
                ]))),
                vec![
                    (NodeName, Pass, "spec.nodeName is not set"),
                    (NodeSelector, Pass, "node selector: none"),
                    (NodeAffinity, Note, "node affinity term 1 of 2: label zone=a is not In [b] (term 2 matches, the terms are ORed)"),
                    (NodeAffinity, Pass, "node affinity term 2 of 2: label zone=a is In [a]"),
                    (NodeAffinity, Pass, "node affinity term 2 of 2: field metadata.name is \"worker-1\""),
                    (Taint, Pass, "the node has no taints"),
                    (Ready, Note, "the node has not reported a Ready condition yet: the pod runs once its agent does"),
                ],
            ),
            (
                "no term matches: every failure evicts",
                worker(),
                ds(affinity(json!([
                    {"matchExpressions": [expr("zone", "In", &["b"]), expr("gen", "Exists", &[])]},
                    {"matchExpressions": [expr("ssd", "Exists", &[])]},
                ]))),
                vec![
                    (NodeName, Pass, "spec.nodeName is not set"),
                    (NodeSelector, Pass, "node selector: none"),
                    (NodeAffinity, Evicts, "node affinity term 1 of 2: label zone=a is not In [b]"),
                    (NodeAffinity, Pass, "node affinity term 1 of 2: label gen=v2 exists"),
                    (NodeAffinity, Evicts, "node affinity term 2 of 2: label ssd is missing (required to exist)"),
                    (Taint, Pass, "the node has no taints"),
                    (Ready, Note, "the node has not reported a Ready condition yet: the pod runs once its agent does"),
                ],
            ),
            (
                "taints: automatic, the pod's own, untolerated, preferences; cordon ignored",
                cordoned,
                ds(json!({"tolerations": [{"key": "other", "operator": "Exists"}]})),
                vec![
                    (NodeName, Pass, "spec.nodeName is not set"),
                    (NodeSelector, Pass, "node selector: none"),
                    (NodeAffinity, Pass, "node affinity: no required node affinity"),
                    (Taint, Pass, "taint node.kubernetes.io/unschedulable:NoSchedule is tolerated by node.kubernetes.io/unschedulable:NoSchedule (Exists), which every DaemonSet pod gets"),
                    (Taint, Blocks, "taint dedicated=gpu:NoSchedule is not tolerated"),
                    (Taint, Note, "taint spot:PreferNoSchedule is not enforced: only NoSchedule and NoExecute keep pods off a node"),
                    (Unschedulable, Note, "the node is cordoned (spec.unschedulable), which DaemonSets ignore: their pods tolerate node.kubernetes.io/unschedulable:NoSchedule"),
                    (Ready, Note, "the node is Ready"),
                ],
            ),
            (
                "the pod's own toleration; a node not Ready still gets the pod",
                ready(tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}])), "False"),
                ds(json!({"tolerations": [{"key": "dedicated", "value": "gpu"}]})),
                vec![
                    (NodeName, Pass, "spec.nodeName is not set"),
                    (NodeSelector, Pass, "node selector: none"),
                    (NodeAffinity, Pass, "node affinity: no required node affinity"),
                    (Taint, Pass, "taint dedicated=gpu:NoExecute is tolerated by the pod's toleration dedicated=gpu:*"),
                    (Ready, Note, "the node is not Ready (Ready=False, KubeletReady): the pod is still the node's (DaemonSet pods tolerate the not-ready and unreachable taints), its containers run when the node's agent is back"),
                ],
            ),
        ];
        for (name, node, ds, want) in table {
            let got = explain(&node, &ds);
            let got_checks: Vec<(Rule, Outcome, &str)> = got
                .checks
                .iter()
                .map(|c| (c.rule, c.outcome, c.detail.as_str()))
                .collect();
            assert_eq!(got_checks, want, "{name}");
            assert_eq!(got.eligibility, node_should_run(&node, &ds), "{name}");
        }
    }

    #[test]
    fn explain_gives_the_verdict_of_every_node_should_run_case() {
        for case in cases() {
            let e = explain(&case.node, &case.ds);
            assert_eq!(e.eligibility.should_run, case.run, "{}", case.name);
            assert_eq!(
                e.eligibility.should_continue_running, case.keep,
                "{}",
                case.name
            );
            let failing: Vec<&str> = e
                .checks
                .iter()
                .filter(|c| matches!(c.outcome, Outcome::Blocks | Outcome::Evicts))
                .map(|c| c.detail.as_str())
                .collect();
            assert_eq!(failing, case.reasons, "{}", case.name);
        }
    }
}
