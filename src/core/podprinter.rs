//! The READY, STATUS and RESTARTS columns of `kubectl get pods`, as kube-apiserver's pod printer
//! (`printPod` in pkg/printers/internalversion) makes them from a pod's status: `Init:1/2`,
//! `Init:Error`, `Init:CrashLoopBackOff`, `PodInitializing`, `CrashLoopBackOff`, `Terminating`.
//! Pure: the pod as JSON in, the strings out.
use serde_json::Value;

/// The three columns of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodColumns {
    /// `ready/total`: app containers plus sidecars (restartable init containers).
    pub ready: String,
    pub status: String,
    pub restarts: i64,
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn list<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// What a terminated state prints: its reason, else the signal or exit code.
fn terminated(t: &Value) -> String {
    let reason = s(t, "/reason");
    if !reason.is_empty() {
        return reason.to_string();
    }
    match t.get("signal").and_then(Value::as_i64).filter(|n| *n != 0) {
        Some(sig) => format!("Signal:{sig}"),
        None => format!(
            "ExitCode:{}",
            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
        ),
    }
}

pub fn pod_columns(pod: &Value) -> PodColumns {
    let init_specs = list(pod, "/spec/initContainers");
    let sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always")
    };
    let total = list(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| s(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut reason = match s(pod, "/status/reason") {
        "" => s(pod, "/status/phase").to_string(),
        r => r.to_string(),
    };
    let mut initializing = false;
    for (i, c) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let n = c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        restarts += n;
        let is_sidecar = sidecar(s(c, "/name"));
        if is_sidecar {
            sidecar_restarts += n;
        }
        let term = c.pointer("/state/terminated");
        let waiting = s(c, "/state/waiting/reason");
        let started = c.get("started").and_then(Value::as_bool).unwrap_or(false);
        if term.is_some_and(|t| t.get("exitCode").and_then(Value::as_i64) == Some(0)) {
            continue;
        }
        if is_sidecar && started {
            if c.get("ready").and_then(Value::as_bool).unwrap_or(false) {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        reason = match term {
            Some(t) => format!("Init:{}", terminated(t)),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        break;
    }
    let initialized = list(pod, "/status/conditions")
        .iter()
        .any(|c| s(c, "/type") == "Initialized" && s(c, "/status") == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        let mut has_running = false;
        for c in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
            let waiting = s(c, "/state/waiting/reason");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = terminated(t);
            } else if c.get("ready").and_then(Value::as_bool).unwrap_or(false)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = list(pod, "/status/conditions")
                .iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    if !s(pod, "/metadata/deletionTimestamp").is_empty() {
        let terminal = matches!(s(pod, "/status/phase"), "Failed" | "Succeeded");
        if s(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if !terminal {
            reason = "Terminating".into();
        }
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    PodColumns {
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(init: Value, status: Value) -> Value {
        json!({"metadata": {"name": "p"},
            "spec": {"initContainers": init, "containers": [{"name": "app"}]},
            "status": status})
    }

    #[test]
    fn status_column_as_kubectl_prints_it() {
        let two = json!([{"name": "i1"}, {"name": "i2"}]);
        let side = json!([{"name": "i1"}, {"name": "side", "restartPolicy": "Always"}]);
        let not_init = json!([{"type": "Initialized", "status": "False"}]);
        let init =
            json!([{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}]);
        let waiting = |r: &str| json!({"waiting": {"reason": r}});
        let done = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        let running = json!({"running": {}});
        #[rustfmt::skip]
        let cases = [
            ("nothing run yet", pod(two.clone(), json!({"phase": "Pending", "conditions": not_init,
                "initContainerStatuses": [{"name": "i1", "state": waiting("PodInitializing")}, {"name": "i2", "state": waiting("PodInitializing")}],
                "containerStatuses": [{"name": "app", "state": waiting("PodInitializing")}]})),
                ("0/1", "Init:0/2", 0)),
            ("first running", pod(two.clone(), json!({"phase": "Pending", "conditions": not_init,
                "initContainerStatuses": [{"name": "i1", "state": running}, {"name": "i2", "state": waiting("PodInitializing")}],
                "containerStatuses": [{"name": "app", "state": waiting("PodInitializing")}]})),
                ("0/1", "Init:0/2", 0)),
            ("second running", pod(two.clone(), json!({"phase": "Pending", "conditions": not_init,
                "initContainerStatuses": [{"name": "i1", "state": done}, {"name": "i2", "state": running, "restartCount": 1}],
                "containerStatuses": [{"name": "app", "state": waiting("PodInitializing")}]})),
                ("0/1", "Init:1/2", 1)),
            ("first failed", pod(two.clone(), json!({"phase": "Pending", "conditions": not_init,
                "initContainerStatuses": [{"name": "i1", "restartCount": 1, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}, {"name": "i2", "state": waiting("PodInitializing")}],
                "containerStatuses": [{"name": "app", "state": waiting("PodInitializing")}]})),
                ("0/1", "Init:Error", 1)),
            ("first in back-off", pod(two.clone(), json!({"phase": "Pending", "conditions": not_init,
                "initContainerStatuses": [{"name": "i1", "restartCount": 2, "state": waiting("CrashLoopBackOff")}, {"name": "i2", "state": waiting("PodInitializing")}],
                "containerStatuses": [{"name": "app", "state": waiting("PodInitializing")}]})),
                ("0/1", "Init:CrashLoopBackOff", 2)),
            ("exit code without reason", pod(two.clone(), json!({"phase": "Pending", "conditions": not_init,
                "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 3}}}]})),
                ("0/1", "Init:ExitCode:3", 0)),
            ("initialized, app being created", pod(two.clone(), json!({"phase": "Pending", "conditions": init,
                "initContainerStatuses": [{"name": "i1", "state": done, "restartCount": 2}, {"name": "i2", "state": done}],
                "containerStatuses": [{"name": "app", "state": waiting("PodInitializing")}]})),
                ("0/1", "PodInitializing", 0)),
            ("initialized, app running", pod(two.clone(), json!({"phase": "Running", "conditions": init,
                "initContainerStatuses": [{"name": "i1", "state": done}, {"name": "i2", "state": done}],
                "containerStatuses": [{"name": "app", "state": running, "ready": true}]})),
                ("1/1", "Running", 0)),
            ("sidecar started, counted in ready and total", pod(side.clone(), json!({"phase": "Running", "conditions": init,
                "initContainerStatuses": [{"name": "i1", "state": done}, {"name": "side", "state": running, "started": true, "ready": true, "restartCount": 3}],
                "containerStatuses": [{"name": "app", "state": running, "ready": true, "restartCount": 1}]})),
                ("2/2", "Running", 4)),
            ("sidecar not started yet", pod(side, json!({"phase": "Pending", "conditions": not_init,
                "initContainerStatuses": [{"name": "i1", "state": done}, {"name": "side", "state": running, "started": false}],
                "containerStatuses": [{"name": "app", "state": waiting("PodInitializing")}]})),
                ("0/2", "Init:1/2", 0)),
            ("no init containers: the app's reason", pod(json!(null), json!({"phase": "Running",
                "containerStatuses": [{"name": "app", "state": waiting("CrashLoopBackOff"), "restartCount": 5}]})),
                ("0/1", "CrashLoopBackOff", 5)),
            ("nothing at all", pod(json!(null), json!({})), ("0/1", "Pending", 0)),
        ];
        for (what, p, (ready, status, restarts)) in cases {
            let got = pod_columns(&p);
            assert_eq!(
                (got.ready.as_str(), got.status.as_str(), got.restarts),
                (ready, status, restarts),
                "{what}"
            );
        }
        let mut going = pod(json!(null), json!({"phase": "Running"}));
        going["metadata"]["deletionTimestamp"] = json!("2026-11-24T00:00:30Z");
        assert_eq!(pod_columns(&going).status, "Terminating");
    }
}
