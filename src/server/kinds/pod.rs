//! v1 Pods: the DaemonSet controller creates them bound to a node (`spec.nodeName`), the agent
//! of that node runs them and reports their status through the status subresource; the pod
//! policy applies to their spec. A pod bound to a node is deleted gracefully: the delete marks it
//! (`deletionTimestamp`), its agent stops it and then deletes it with a grace period of 0.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::core::nodehealth;
use crate::core::patch::{self, Schema};
use crate::core::validation::{self, FieldError, Policy};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::subresource::{BINDING, EVICTION, STATUS};
use crate::server::table::{age, name, none_if_empty, s};

pub static PODS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "pods",
    singular: "pod",
    kind: "Pod",
    namespaced: true,
    short_names: &["po"],
    categories: &["all"],
    verbs: ALL_VERBS,
    subresources: &[
        &STATUS,
        &EVICTION,
        &crate::server::proxy::POD_LOG,
        &crate::server::proxy::POD_EXEC,
        &crate::server::proxy::POD_ATTACH,
        &crate::server::proxy::POD_PORTFORWARD,
        &BINDING,
    ],
    strategy: &PodStrategy,
};

struct PodStrategy;

/// kube-apiserver's pod printer.
const COLUMNS: &[Column] = &[
    Column::NAME,
    Column::string("Ready", 0),
    Column::string("Status", 0),
    Column::string("Restarts", 0),
    Column::AGE,
    Column::string("IP", 1),
    Column::string("Node", 1),
    Column::string("Nominated Node", 1),
    Column::string("Readiness Gates", 1),
];

#[async_trait]
impl Kind for PodStrategy {
    type Object = Pod;

    fn default(&self, pod: &mut Pod) {
        if let Some(spec) = pod.spec.as_mut() {
            validation::default_pod_spec(spec);
        }
    }
    /// The DefaultTolerationSeconds admission: not-ready and unreachable NoExecute tolerated for
    /// the server's `--default-*-toleration-seconds` (300 s) unless the pod says otherwise: how
    /// long a pod stays on a lost node.
    fn mutate(&self, pod: &mut Pod, policy: Policy) {
        if let Some(spec) = pod.spec.as_mut() {
            nodehealth::add_default_toleration_seconds(
                spec,
                policy.default_not_ready_toleration_seconds,
                policy.default_unreachable_toleration_seconds,
            );
        }
    }
    fn validate(&self, pod: &Pod) -> Vec<FieldError> {
        validation::validate_pod(pod)
    }
    /// podStrategy.CheckGracefulDelete: the requested grace period, else the pod's
    /// `terminationGracePeriodSeconds`; 0 for a pod no node runs (unbound, or terminated).
    fn grace_period(&self, pod: &Value, requested: Option<i64>) -> Option<i64> {
        let period = requested.unwrap_or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        });
        let terminated = matches!(s(pod, "/status/phase"), "Failed" | "Succeeded");
        if s(pod, "/spec/nodeName").is_empty() || terminated {
            return Some(0);
        }
        // a negative period means 1 s, as the API has it
        Some(if period < 0 { 1 } else { period })
    }
    fn admit(&self, pod: &Pod, policy: Policy) -> Vec<FieldError> {
        let mut errs = validation::validate_policy(pod.spec.as_ref(), "spec", policy);
        errs.extend(validation::validate_node_support(pod.spec.as_ref(), "spec"));
        errs
    }
    fn initial_status(&self) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }
    fn patch_schema(&self) -> &'static Schema {
        &patch::POD
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        // the pod printer's READY, STATUS and RESTARTS (init containers and sidecars included)
        let cols = crate::core::podprinter::pod_columns(obj);
        let gates = obj
            .pointer("/spec/readinessGates")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        vec![
            name(obj),
            json!(cols.ready),
            json!(cols.status),
            json!(cols.restarts.to_string()),
            json!(age(obj, now)),
            json!(none_if_empty(s(obj, "/status/podIP").to_string())),
            json!(none_if_empty(s(obj, "/spec/nodeName").to_string())),
            json!(none_if_empty(
                s(obj, "/status/nominatedNodeName").to_string()
            )),
            json!(if gates == 0 {
                "<none>".to_string()
            } else {
                format!("0/{gates}")
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::support::{self, Rule};
    use std::collections::BTreeSet;

    /// The schema of `r` (a `$ref`, a list's items) among `defs`.
    fn resolve<'a>(defs: &'a serde_json::Map<String, Value>, s: &'a Value) -> &'a Value {
        let s = if s["type"] == "array" { &s["items"] } else { s };
        match s["$ref"].as_str() {
            Some(r) => &defs[r.rsplit('/').next().unwrap_or(r)],
            None => s,
        }
    }

    /// Walks the properties of `schema` against `table`: every property must be listed; `Inside`
    /// ones are walked into. Returns the paths seen; `missing` gets the unlisted ones.
    fn walk(
        defs: &serde_json::Map<String, Value>,
        schema: &Value,
        prefix: &str,
        table: &[(&str, Rule)],
        seen: &mut BTreeSet<String>,
        missing: &mut Vec<String>,
    ) {
        let props = schema["properties"].as_object().expect("an object schema");
        for (name, prop) in props {
            let list = prop["type"] == "array";
            let path = format!("{prefix}{name}");
            seen.insert(path.clone());
            match support::rule(table, &path) {
                None => missing.push(path),
                Some(Rule::Inside) if path == "containers" => {
                    let container = resolve(defs, prop);
                    let mut inner = BTreeSet::new();
                    walk(defs, container, "", support::CONTAINER, &mut inner, missing);
                    seen.extend(inner.into_iter().map(|p| format!("containers[].{p}")));
                }
                Some(Rule::Inside) => {
                    let inner = resolve(defs, prop);
                    let sep = if list { "[]." } else { "." };
                    walk(defs, inner, &format!("{path}{sep}"), table, seen, missing);
                }
                Some(_) => {}
            }
        }
    }

    /// Every `fn NAME(` under src/ and tests/.
    fn test_functions() -> String {
        fn read(dir: &std::path::Path, out: &mut String) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    read(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut all = String::new();
        read(&root.join("src"), &mut all);
        read(&root.join("tests"), &mut all);
        all
    }

    #[test]
    fn every_pod_spec_and_container_field_is_honoured_or_refused() {
        let mut gen = schemars::generate::SchemaSettings::openapi3().into_generator();
        PODS.strategy.openapi_schema(&mut gen);
        let defs = gen.definitions().clone();
        let pod_spec = defs
            .iter()
            .find(|(k, _)| k.ends_with(".PodSpec") || k.as_str() == "PodSpec")
            .map(|(_, v)| v.clone())
            .expect("the served schema has PodSpec");
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        walk(
            &defs,
            &pod_spec,
            "",
            support::POD_SPEC,
            &mut seen,
            &mut missing,
        );
        assert!(
            missing.is_empty(),
            "fields neither honoured nor refused (list them in core::support): {missing:?}"
        );
        let listed = support::POD_SPEC.iter().map(|(p, _)| p.to_string()).chain(
            support::CONTAINER
                .iter()
                .map(|(p, _)| format!("containers[].{p}")),
        );
        let stale: Vec<String> = listed.filter(|p| !seen.contains(p)).collect();
        assert!(stale.is_empty(), "listed but not in the schema: {stale:?}");
        // each honoured field names the test that proves it, and that test exists
        let sources = test_functions();
        for (path, rule) in support::POD_SPEC.iter().chain(support::CONTAINER) {
            let test = match rule {
                Rule::Honoured { test }
                | Rule::Values { test, .. }
                | Rule::Keys { test, .. }
                | Rule::Containers { test } => test,
                _ => continue,
            };
            assert!(
                sources.contains(&format!("fn {test}(")),
                "{path}: its test {test} does not exist"
            );
        }
    }

    #[test]
    fn status_column_follows_the_pod_printer() {
        let now = Utc::now();
        let pod = |status: Value| {
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": [{"name": "c"}, {"name": "d"}]},
                "status": status})
        };
        // (status, Ready, Status, Restarts)
        let cases = [
            (
                json!({"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2, "state": {"running": {}}}]}),
                "1/2",
                "Running",
                "2",
            ),
            (
                json!({"phase": "Running", "containerStatuses": [
                    {"ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                    {"ready": true, "restartCount": 1, "state": {"running": {}}}]}),
                "1/2",
                "CrashLoopBackOff",
                "4",
            ),
            (
                json!({"phase": "Failed", "reason": "Evicted"}),
                "0/2",
                "Evicted",
                "0",
            ),
            (json!({}), "0/2", "Pending", "0"),
        ];
        let mut going = pod(
            json!({"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 0}]}),
        );
        going["metadata"]["deletionTimestamp"] = json!("2026-11-24T00:00:30Z");
        let cells = PodStrategy.cells(&going, now);
        assert_eq!(cells[2], "Terminating");
        for (status, ready, reason, restarts) in cases {
            let cells = PodStrategy.cells(&pod(status.clone()), now);
            assert_eq!(
                &cells[..4],
                &[json!("p"), json!(ready), json!(reason), json!(restarts)],
                "{status}"
            );
            assert_eq!(cells[6], "n");
            assert_eq!(cells[8], "<none>");
        }
    }

    #[test]
    fn bound_pods_are_deleted_gracefully() {
        let pod = |node: &str, grace: Option<i64>, phase: &str| {
            json!({"spec": {"nodeName": node, "terminationGracePeriodSeconds": grace},
                "status": {"phase": phase}})
        };
        // (pod, requested, grace period)
        let cases = [
            (pod("n", Some(30), "Running"), None, 30),
            (pod("n", Some(30), "Running"), Some(5), 5),
            (pod("n", Some(30), "Running"), Some(0), 0),
            (pod("n", None, "Running"), None, 0),
            (pod("n", Some(30), "Running"), Some(-3), 1),
            (pod("", Some(30), "Pending"), Some(10), 0),
            (pod("n", Some(30), "Failed"), None, 0),
            (pod("n", Some(30), "Succeeded"), Some(20), 0),
        ];
        for (p, requested, want) in cases {
            assert_eq!(
                PodStrategy.grace_period(&p, requested),
                Some(want),
                "{p} {requested:?}"
            );
        }
    }
}
