//! The DaemonSet's pods: as the pure decisions (`core::rollout`) see them, and the Pod the
//! controller creates on a node (`util.CreatePodTemplate` + `NewControllerRef`).
use chrono::DateTime;
use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::{json, Value};

use super::super::claim::Owner;
use super::super::s;
use crate::core::eligibility::add_daemon_tolerations;
use crate::core::plan::REVISION_HASH_LABEL;
use crate::core::rollout::{
    is_failure_reason, DaemonPod, NextRevision, Phase, Problem, NEXT_REVISION_READY, PULL_NEXT,
};

/// Kubernetes' generated names keep at most 58 characters of their prefix (63 minus the random
/// suffix of 5).
const MAX_GENERATE_NAME: usize = 58;

fn unix_ms(t: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A stored Pod's Ready condition, when it is True.
fn ready_condition(pod: &Value) -> Option<&Value> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "Ready"))
        .filter(|c| s(c, "/status") == "True")
}

/// A stored Pod is Ready.
pub fn is_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some()
}

/// A stored Pod as the decisions see it.
pub fn daemon_pod(pod: &Value) -> DaemonPod {
    let conditions = pod.pointer("/status/conditions").and_then(Value::as_array);
    let ready = ready_condition(pod);
    DaemonPod {
        name: s(pod, "/metadata/name").to_string(),
        node: s(pod, "/spec/nodeName").to_string(),
        hash: s(pod, &format!("/metadata/labels/{REVISION_HASH_LABEL}")).to_string(),
        created_ms: unix_ms(s(pod, "/metadata/creationTimestamp")).unwrap_or(0),
        phase: Phase::parse(s(pod, "/status/phase")),
        deleting: pod.pointer("/metadata/deletionTimestamp").is_some(),
        ready: ready.is_some(),
        ready_since_ms: ready.and_then(|c| unix_ms(s(c, "/lastTransitionTime"))),
        next: conditions
            .and_then(|cs| cs.iter().find(|c| s(c, "/type") == NEXT_REVISION_READY))
            .and_then(|c| NextRevision::parse(s(c, "/status"), s(c, "/message"))),
        problem: problem(pod),
        pull_next: pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(PULL_NEXT))
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// The first container (init containers first) waiting for a failure reason, or the phase
/// Failed: why the pod does not run.
fn problem(pod: &Value) -> Option<Problem> {
    let statuses = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| {
            pod.pointer(&format!("/status/{k}"))
                .and_then(Value::as_array)
        })
        .flatten();
    for c in statuses {
        let reason = s(c, "/state/waiting/reason");
        if is_failure_reason(reason) {
            return Some(Problem {
                reason: reason.to_string(),
                message: s(c, "/state/waiting/message").to_string(),
            });
        }
    }
    (s(pod, "/status/phase") == "Failed").then(|| Problem {
        reason: match s(pod, "/status/reason") {
            "" => "Failed".to_string(),
            r => r.to_string(),
        },
        message: s(pod, "/status/message").to_string(),
    })
}

/// The Pod `owner` (the DaemonSet `ds`) creates on `node` for revision `hash`: its template's
/// labels with `controller-revision-hash`, its annotations with an empty `PULL_NEXT` (its node
/// pre-pulls a next revision when the controller names it there), the controller reference, and
/// its spec with the automatic DaemonSet tolerations, bound to the node.
pub fn new_pod(ds: &DaemonSet, owner: &Owner<'_>, node: &str, hash: &str) -> Value {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let meta = template.and_then(|t| t.metadata.as_ref());
    let mut spec = template.and_then(|t| t.spec.clone()).unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec.node_name = Some(node.to_string());
    let mut labels = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.to_string(), hash.to_string());
    let mut prefix: String = format!("{}-", owner.name);
    prefix.truncate(MAX_GENERATE_NAME);
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": prefix,
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": spec,
    });
    let mut annotations = meta.and_then(|m| m.annotations.clone()).unwrap_or_default();
    annotations.insert(PULL_NEXT.to_string(), String::new());
    pod["metadata"]["annotations"] = json!(annotations);
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pod_is_the_template_bound_to_its_node() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "mon", "namespace": "ops", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "mon"}},
                "template": {"metadata": {"labels": {"app": "mon"}, "annotations": {"a": "b"}},
                    "spec": {"tolerations": [{"key": "k", "operator": "Exists"}],
                        "containers": [{"name": "c", "image": "i"}]}}}}))
        .unwrap();
        let owner = Owner {
            api_version: "apps/v1",
            kind: "DaemonSet",
            namespace: "ops",
            name: "mon",
            uid: "u1",
            deleting: false,
        };
        let p = new_pod(&ds, &owner, "n1", "h1");
        assert_eq!(p["metadata"]["generateName"], "mon-");
        assert_eq!(p["metadata"]["namespace"], "ops");
        assert_eq!(
            p["metadata"]["labels"],
            json!({"app": "mon", "controller-revision-hash": "h1"})
        );
        assert_eq!(
            p["metadata"]["annotations"],
            json!({"a": "b", PULL_NEXT: ""}),
            "its node waits for the word to pre-pull"
        );
        assert_eq!(
            p["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "mon", "uid": "u1",
                "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(p["spec"]["nodeName"], "n1");
        let tolerations: Vec<&str> = p["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(tolerations[0], "k", "the template's own first");
        assert!(tolerations.contains(&"node.kubernetes.io/unreachable"));
        let long = Owner {
            name: &"x".repeat(80),
            ..owner
        };
        let p = new_pod(&ds, &long, "n1", "h1");
        assert_eq!(p["metadata"]["generateName"].as_str().unwrap().len(), 58);
    }

    #[test]
    fn stored_pods_are_read_as_the_decisions_see_them() {
        let p = json!({"metadata": {"name": "mon-abcde", "creationTimestamp": "2026-11-24T12:00:00Z",
                "deletionTimestamp": "2026-11-24T12:01:00Z", "labels": {"controller-revision-hash": "h1"}},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-24T12:00:05Z"}]}});
        let d = daemon_pod(&p);
        assert_eq!(
            (d.name.as_str(), d.node.as_str(), d.hash.as_str()),
            ("mon-abcde", "n1", "h1")
        );
        assert_eq!(d.phase, Phase::Running);
        assert!(d.deleting && d.ready);
        assert_eq!(d.ready_since_ms.unwrap() - d.created_ms, 5_000);
        assert_eq!(d.pull_next, None);
        let d = daemon_pod(&json!({"metadata": {"name": "x", "annotations": {PULL_NEXT: "h2"}}}));
        assert!(!d.ready && !d.deleting && d.node.is_empty());
        assert_eq!(d.pull_next.as_deref(), Some("h2"));
        assert_eq!(d.phase, Phase::Pending);
    }
}
