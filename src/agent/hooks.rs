//! Container lifecycle hooks, as the kubelet runs them (pkg/kubelet/lifecycle/handlers.go and
//! kuberuntime_container.go): `postStart` right after the container started (a failure kills
//! the container), `preStop` before its SIGTERM, within the grace period it shares with the stop.
//! `exec` runs through containerd (Tasks.Exec, as exec probes do), `httpGet` goes to the pod's IP
//! (the node's with hostNetwork) from inside its network namespace, as httpGet probes do, and
//! `sleep` sleeps here.
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

use crate::agent::prober::{Prober, Target};
use crate::core::plan::PodKey;
use crate::core::podactions;
use crate::core::probe::{self, Handler, Outcome};

/// Where and for whom a container's hooks run.
#[derive(Debug, Clone)]
pub struct HookTarget {
    pub pod: PodKey,
    pub container: Container,
    pub target: Target,
    /// The pod's IP (the node's with hostNetwork), the default host of an httpGet hook.
    pub pod_ip: Option<String>,
}

/// Runs `h` once for `t`, waiting at most `limit`: Ok, or the failure in the kubelet's words.
pub async fn run(
    prober: &dyn Prober,
    t: &HookTarget,
    h: &LifecycleHandler,
    limit: Duration,
) -> Result<(), String> {
    let name = &t.container.name;
    let pod = &t.pod;
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(limit)).await;
        return Ok(());
    }
    // the probe handlers know exec and httpGet (named ports, scheme, headers) already
    let as_probe = Probe {
        exec: h.exec.clone(),
        http_get: h.http_get.clone(),
        ..Default::default()
    };
    let handler = match (&h.exec, &h.http_get) {
        (None, None) => {
            return Err(format!(
                "Cannot run handler: invalid handler for Container {name:?} in Pod {pod:?}"
            ))
        }
        _ => probe::handler(&as_probe, &t.container)?,
    };
    let handler = match handler {
        Handler::Http {
            https,
            host: None,
            port,
            path,
            headers,
        } => Handler::Http {
            https,
            host: t.pod_ip.clone(),
            port,
            path,
            headers,
        },
        other => other,
    };
    let outcome = prober.probe(&t.target, &handler, limit).await;
    match (&handler, outcome) {
        (_, Outcome::Success | Outcome::Warning(_)) => Ok(()),
        // the kubelet's hook only fails when no answer came: the status code is not looked at
        (Handler::Http { .. }, Outcome::Failure(m)) if m.starts_with(HTTP_ANSWERED) => Ok(()),
        (Handler::Http { path, .. }, Outcome::Failure(m) | Outcome::Error(m)) => Err(format!(
            "HTTP lifecycle hook ({path}) for Container {name:?} in Pod {pod:?} failed - error: {m}"
        )),
        (Handler::Exec(cmd), Outcome::Failure(m) | Outcome::Error(m)) => Err(format!(
            "Exec lifecycle hook ({cmd:?}) for Container {name:?} in Pod {pod:?} failed - error: {m}"
        )),
        (_, Outcome::Failure(m) | Outcome::Error(m)) => Err(m),
    }
}

/// How the prober's httpGet says that the server answered with a failing status code.
const HTTP_ANSWERED: &str = "HTTP probe failed with statuscode";

/// How long a postStart hook may run before it counts as failed (the kubelet waits without end;
/// a bound keeps a hung hook from holding the pod's worker for ever).
pub const POST_START_LIMIT: Duration = Duration::from_secs(300);

/// Runs the container's postStart hook, if it has one: Ok, or the failure's message.
pub async fn post_start(prober: &dyn Prober, t: &HookTarget) -> Result<(), String> {
    let Some(h) = t
        .container
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
    else {
        return Ok(());
    };
    match tokio::time::timeout(POST_START_LIMIT, run(prober, t, h, POST_START_LIMIT)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "PostStartHook for Container {:?} in Pod {:?} did not end within {}s",
            t.container.name,
            t.pod,
            POST_START_LIMIT.as_secs()
        )),
    }
}

/// Runs the container's preStop hook, if it has one, within `grace_seconds`, and gives the grace
/// period left for the SIGTERM: the time the hook took is taken out, and at least the kubelet's
/// minimum is left (`podactions::grace_after_pre_stop`). A hook still running when the grace
/// period ends is left to the stop (it dies with the container).
pub async fn pre_stop(prober: &dyn Prober, t: &HookTarget, grace_seconds: i64) -> i64 {
    let Some(h) = t
        .container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    else {
        return grace_seconds;
    };
    if grace_seconds <= 0 {
        return grace_seconds;
    }
    let started = tokio::time::Instant::now();
    let limit = Duration::from_secs(grace_seconds as u64);
    let container_id = t.target.container_id.as_str();
    match tokio::time::timeout(limit, run(prober, t, h, limit)).await {
        Ok(Ok(())) => tracing::info!(container_id, "preStop hook ran"),
        Ok(Err(message)) => {
            tracing::warn!(
                container_id,
                reason = "FailedPreStopHook",
                message = message.as_str(),
                "preStop hook failed"
            )
        }
        Err(_) => tracing::warn!(
            container_id,
            grace_secs = grace_seconds,
            "preStop hook did not end within the grace period"
        ),
    }
    podactions::grace_after_pre_stop(grace_seconds, started.elapsed().as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::prober::fake::FakeProber;
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, Lifecycle, SleepAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn target(lifecycle: Lifecycle) -> HookTarget {
        HookTarget {
            pod: PodKey {
                namespace: "default".into(),
                name: "p".into(),
            },
            container: Container {
                name: "c".into(),
                lifecycle: Some(lifecycle),
                ..Default::default()
            },
            target: Target {
                container_id: "id".into(),
                netns: None,
            },
            pod_ip: Some("10.1.0.7".into()),
        }
    }

    fn exec(cmd: &str) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![cmd.into()]),
            }),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pre_stop_shares_the_grace_period() {
        let prober = FakeProber::default();
        // an exec hook that answers at once leaves the whole grace period
        let t = target(Lifecycle {
            pre_stop: Some(exec("drain")),
            ..Default::default()
        });
        assert_eq!(pre_stop(&prober, &t, 10).await, 10);
        assert_eq!(prober.count("drain"), 1);
        // a sleep of 4 s out of 10 leaves 6
        let t = target(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 4 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let before = tokio::time::Instant::now();
        assert_eq!(pre_stop(&prober, &t, 10).await, 6);
        assert_eq!(before.elapsed(), Duration::from_secs(4));
        // longer than the grace period: cut at it, 2 s left for the SIGTERM
        let before = tokio::time::Instant::now();
        assert_eq!(pre_stop(&prober, &t, 3).await, 2);
        assert_eq!(before.elapsed(), Duration::from_secs(3));
        // no grace: no hook
        assert_eq!(pre_stop(&prober, &t, 0).await, 0);
    }

    #[tokio::test]
    async fn hooks_fail_as_the_kubelet_says() {
        let prober = FakeProber::default();
        prober.set(
            "bad",
            Outcome::Failure("command [\"bad\"] exited with 1".into()),
        );
        let t = target(Lifecycle {
            post_start: Some(exec("bad")),
            ..Default::default()
        });
        let e = post_start(&prober, &t).await.unwrap_err();
        assert!(
            e.starts_with("Exec lifecycle hook ([\"bad\"]) for Container \"c\" in Pod"),
            "{e}"
        );
        // httpGet goes to the pod's IP; an answer with any status is a success
        let http = LifecycleHandler {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(8080),
                path: Some("/hook".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = target(Lifecycle {
            post_start: Some(http),
            ..Default::default()
        });
        prober.set(
            "http:8080",
            Outcome::Failure("HTTP probe failed with statuscode: 500".into()),
        );
        assert_eq!(post_start(&prober, &t).await, Ok(()));
        prober.set(
            "http:8080",
            Outcome::Failure("Get \"http://10.1.0.7:8080/hook\": dial tcp: refused".into()),
        );
        let e = post_start(&prober, &t).await.unwrap_err();
        assert!(e.starts_with("HTTP lifecycle hook (/hook)"), "{e}");
        // nothing to run
        let t = target(Lifecycle::default());
        assert_eq!(post_start(&prober, &t).await, Ok(()));
        assert_eq!(pre_stop(&prober, &t, 9).await, 9);
    }
}
