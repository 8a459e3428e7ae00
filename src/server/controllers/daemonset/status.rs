//! The DaemonSet's status (`updateDaemonSetStatus`): computed from the nodes' verdicts and the
//! pods the DaemonSet owns, per node the oldest pod counting.
use serde_json::{json, Value};

use crate::core::rollout::{pods_by_node, DaemonPod, NodeFit, Stall};

/// The status fields this controller owns and, when a ready pod becomes available later
/// (minReadySeconds), when (unix ms).
pub fn compute_status(
    generation: i64,
    min_ready_seconds: i64,
    nodes: &[NodeFit],
    pods: &[DaemonPod],
    hash: &str,
    now_ms: i64,
) -> (Value, Option<i64>) {
    let by_node = pods_by_node(pods);
    let (mut desired, mut current, mut misscheduled, mut ready, mut updated, mut available) =
        (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    let mut wake: Option<i64> = None;
    for node in nodes {
        let oldest = by_node
            .get(node.name.as_str())
            .and_then(|l| l.first().copied());
        if !node.should_run {
            misscheduled += i64::from(oldest.is_some());
            continue;
        }
        desired += 1;
        let Some(pod) = oldest else { continue };
        current += 1;
        if pod.ready {
            ready += 1;
            if pod.is_available(min_ready_seconds, now_ms) {
                available += 1;
            } else if let Some(at) = pod.available_at(min_ready_seconds, now_ms) {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        if pod.hash == hash {
            updated += 1;
        }
    }
    let status = json!({
        "currentNumberScheduled": current,
        "desiredNumberScheduled": desired,
        "numberAvailable": available,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberUnavailable": (desired - available).max(0),
        "observedGeneration": generation,
        "updatedNumberScheduled": updated,
    });
    (status, wake)
}

/// The DaemonSet condition that says whether its rollout progresses, and if not why.
pub const PROGRESSING: &str = "Progressing";

/// `status.conditions`: the DaemonSet's others kept, and `Progressing`: False with the first
/// failing node and its reason when the new revision fails (`stall`), True otherwise (saying
/// which nodes are still pulling the new revision). `lastTransitionTime` moves only when the
/// status does.
pub fn conditions(
    ds: &Value,
    stall: Option<&Stall>,
    waiting_pull: &[String],
    now_ms: i64,
) -> Value {
    let old: Vec<Value> = ds
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (status, reason, message) = match stall {
        Some(st) => ("False", st.reason.clone(), st.describe()),
        None if !waiting_pull.is_empty() => (
            "True",
            "PullingNewRevision".to_string(),
            format!(
                "waiting for nodes {} to pull the new revision's images",
                waiting_pull.join(", ")
            ),
        ),
        None => ("True", "Progressing".to_string(), String::new()),
    };
    let previous = old.iter().find(|c| c["type"] == PROGRESSING);
    let since = previous
        .filter(|c| c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| {
            json!(chrono::DateTime::from_timestamp_millis(now_ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        });
    let mut out: Vec<Value> = old
        .into_iter()
        .filter(|c| c["type"] != PROGRESSING)
        .collect();
    out.push(
        json!({"type": PROGRESSING, "status": status, "reason": reason,
        "message": message, "lastTransitionTime": since}),
    );
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rollout::Phase;

    const NOW: i64 = 1_800_000_000_000;

    fn fit(name: &str, worker: bool) -> NodeFit {
        NodeFit {
            name: name.into(),
            should_run: worker,
            should_continue_running: worker,
            ready: true,
        }
    }

    fn pod(node: &str, hash: &str, ready_since_s: Option<i64>) -> DaemonPod {
        DaemonPod {
            name: format!("p-{node}"),
            node: node.into(),
            hash: hash.into(),
            created_ms: NOW - 3_600_000,
            phase: Phase::Running,
            deleting: false,
            ready: ready_since_s.is_some(),
            ready_since_ms: ready_since_s.map(|s| NOW - s * 1000),
            next: None,
            problem: None,
            pull_next: None,
        }
    }

    #[test]
    fn status_counts_follow_the_daemonset_controller() {
        let nodes = [
            fit("w1", true),
            fit("w2", true),
            fit("w3", true),
            fit("m1", false),
        ];
        struct Case {
            pods: Vec<DaemonPod>,
            want: Value,
            wake: Option<i64>,
        }
        let cases = [
            Case {
                pods: vec![],
                want: json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 0, "numberReady": 0,
                    "numberAvailable": 0, "numberUnavailable": 3, "numberMisscheduled": 0, "updatedNumberScheduled": 0}),
                wake: None,
            },
            Case {
                pods: vec![
                    pod("w1", "h2", Some(3600)),
                    pod("w2", "h1", Some(10)),
                    pod("w3", "h2", None),
                    pod("m1", "h2", Some(3600)),
                ],
                want: json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                    "numberAvailable": 1, "numberUnavailable": 2, "numberMisscheduled": 1, "updatedNumberScheduled": 2}),
                wake: Some(NOW + 20_001),
            },
            Case {
                // a terminating pod still counts where it runs; a failed one being deleted does not
                pods: vec![
                    DaemonPod {
                        deleting: true,
                        ..pod("w1", "h1", Some(3600))
                    },
                    DaemonPod {
                        deleting: true,
                        phase: Phase::Failed,
                        ..pod("w2", "h2", Some(3600))
                    },
                ],
                want: json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 1, "numberReady": 1,
                    "numberAvailable": 1, "numberUnavailable": 2, "numberMisscheduled": 0, "updatedNumberScheduled": 0}),
                wake: None,
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            let (status, wake) = compute_status(4, 30, &nodes, &c.pods, "h2", NOW);
            for (k, v) in c.want.as_object().unwrap() {
                assert_eq!(&status[k], v, "case {i}: {k}");
            }
            assert_eq!(status["observedGeneration"], 4);
            assert_eq!(wake, c.wake, "case {i}");
        }
    }
}
