//! Container probes as the kubelet's prober (pkg/kubelet/prober) decides them. Pure: the caller
//! runs the probes and passes their outcomes and the time in.
//!
//! Per probe of one container incarnation: the last result (readiness starts as Failure, liveness
//! as Success, startup as Unknown), the run of equal outcomes, and whether the probe is on hold
//! (a liveness or startup failure past the threshold stops probing until a new container).
//! Until the startup probe succeeds the other probes do not run; once it has, it stops.
//! `started` = running and (startup Success or no startup probe); `ready` = started and
//! (readiness Success or no readiness probe).
use k8s_openapi::api::core::v1::{Container, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// The result a probe manager holds for a container (results.Result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result {
    Unknown,
    Success,
    Failure,
}

/// What one probe run gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A success with something to say (the kubelet's `probe.Warning`: an HTTP probe whose
    /// redirect to another host was not followed, so the 3xx itself answered): it counts as a
    /// success, and the kubelet records a `ProbeWarning` event with the message.
    Warning(String),
    Failure(String),
    /// The probe could not be run (unknown port name, exec not possible, unsupported handler):
    /// the kubelet throws such a result away and keeps the state.
    Error(String),
}

/// The timing and thresholds of a probe, with the Kubernetes defaults filled where unset or 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay_ms: i64,
    pub period_ms: i64,
    pub timeout_ms: i64,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(p: &Probe) -> Timing {
        let pos = |v: Option<i32>, d: i32| v.filter(|v| *v > 0).unwrap_or(d);
        Timing {
            initial_delay_ms: p.initial_delay_seconds.unwrap_or(0).max(0) as i64 * 1000,
            period_ms: pos(p.period_seconds, 10) as i64 * 1000,
            timeout_ms: pos(p.timeout_seconds, 1) as i64 * 1000,
            success_threshold: pos(p.success_threshold, 1) as u32,
            failure_threshold: pos(p.failure_threshold, 3) as u32,
        }
    }
}

/// The state of one probe of one container incarnation (prober.worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    pub kind: Kind,
    pub timing: Timing,
    pub result: Result,
    last: Option<bool>,
    run: u32,
    pub on_hold: bool,
    /// The message of the last failed run, for status and logs.
    pub message: String,
}

impl ProbeState {
    pub fn new(kind: Kind, timing: Timing) -> ProbeState {
        ProbeState {
            kind,
            timing,
            result: match kind {
                Kind::Readiness => Result::Failure,
                Kind::Liveness => Result::Success,
                Kind::Startup => Result::Unknown,
            },
            last: None,
            run: 0,
            on_hold: false,
            message: String::new(),
        }
    }

    /// Records one run; returns true when the held result changed.
    pub fn record(&mut self, outcome: &Outcome) -> bool {
        let ok = match outcome {
            Outcome::Success | Outcome::Warning(_) => true,
            Outcome::Failure(m) => {
                self.message = m.clone();
                false
            }
            Outcome::Error(m) => {
                self.message = m.clone();
                return false;
            }
        };
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.timing.success_threshold
        } else {
            self.timing.failure_threshold
        };
        if self.run < threshold {
            return false;
        }
        let new = if ok { Result::Success } else { Result::Failure };
        let changed = self.result != new;
        self.result = new;
        if !ok && matches!(self.kind, Kind::Liveness | Kind::Startup) {
            // the container will be restarted: stop probing until a new one
            self.on_hold = true;
            self.run = 0;
        }
        changed
    }
}

/// The probes of one container incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProbes {
    /// Unix ms at which the container's task started (initialDelaySeconds counts from it).
    pub started_at_ms: i64,
    pub startup: Option<ProbeState>,
    pub liveness: Option<ProbeState>,
    pub readiness: Option<ProbeState>,
}

/// What the probes say about a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gates {
    pub started: bool,
    pub ready: bool,
}

/// Why a container must be killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub kind: Kind,
    pub message: String,
}

impl ContainerProbes {
    /// The probes of `c`, for an incarnation whose task started at `started_at_ms`; None when
    /// the container has no probe.
    pub fn of(c: &Container, started_at_ms: i64) -> Option<ContainerProbes> {
        let mk = |kind, p: &Option<Probe>| p.as_ref().map(|p| ProbeState::new(kind, Timing::of(p)));
        let cp = ContainerProbes {
            started_at_ms,
            startup: mk(Kind::Startup, &c.startup_probe),
            liveness: mk(Kind::Liveness, &c.liveness_probe),
            readiness: mk(Kind::Readiness, &c.readiness_probe),
        };
        (cp.startup.is_some() || cp.liveness.is_some() || cp.readiness.is_some()).then_some(cp)
    }

    pub fn get(&self, kind: Kind) -> Option<&ProbeState> {
        match kind {
            Kind::Startup => self.startup.as_ref(),
            Kind::Liveness => self.liveness.as_ref(),
            Kind::Readiness => self.readiness.as_ref(),
        }
    }

    pub fn get_mut(&mut self, kind: Kind) -> Option<&mut ProbeState> {
        match kind {
            Kind::Startup => self.startup.as_mut(),
            Kind::Liveness => self.liveness.as_mut(),
            Kind::Readiness => self.readiness.as_mut(),
        }
    }

    /// started and ready of the running container (prober_manager.UpdatePodStatus).
    pub fn gates(&self) -> Gates {
        let started = self
            .startup
            .as_ref()
            .is_none_or(|s| s.result == Result::Success);
        let ready = started
            && self
                .readiness
                .as_ref()
                .is_none_or(|r| r.result == Result::Success);
        Gates { started, ready }
    }

    /// Whether probe `kind` runs at `now_ms` (prober.worker.doProbe before running the probe):
    /// not on hold, past the initial delay, and startup only before the container started,
    /// the others only after.
    pub fn due(&self, kind: Kind, now_ms: i64) -> bool {
        let Some(p) = self.get(kind) else {
            return false;
        };
        if p.on_hold || now_ms - self.started_at_ms < p.timing.initial_delay_ms {
            return false;
        }
        let started = self.gates().started;
        match kind {
            Kind::Startup => !started,
            _ => started,
        }
    }

    /// Records a run of `kind`; true when started/ready or a kill verdict changed.
    pub fn record(&mut self, kind: Kind, outcome: &Outcome) -> bool {
        match self.get_mut(kind) {
            Some(p) => p.record(outcome),
            None => false,
        }
    }

    /// The container failed its startup or liveness probe: the kubelet kills it, and the restart
    /// policy restarts it.
    pub fn kill(&self) -> Option<Kill> {
        [&self.startup, &self.liveness]
            .into_iter()
            .flatten()
            .find(|p| p.result == Result::Failure)
            .map(|p| Kill {
                kind: p.kind,
                message: format!(
                    "Container failed {} probe, will be restarted: {}",
                    p.kind.as_str().to_lowercase(),
                    p.message
                ),
            })
    }
}

/// What a probe runs, resolved against its container (port names looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Exec(Vec<String>),
    Http {
        /// scheme HTTPS: TLS without verifying the server's certificate, as the kubelet does.
        https: bool,
        /// `httpGet.host`; None: the pod's address (loopback in the pod's network namespace).
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    /// grpc.health.v1.Health/Check on the pod's address.
    Grpc {
        port: u16,
        service: String,
    },
}

/// The handler of `p` for container `c`, or why it cannot run (an Outcome::Error for the caller):
/// an unknown port name, a scheme other than HTTP and HTTPS.
pub fn handler(p: &Probe, c: &Container) -> std::result::Result<Handler, String> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let port = |port: &IntOrString| -> std::result::Result<u16, String> {
        let n = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("cannot find port {name:?} in container {}", c.name))?,
        };
        u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid port number {n}"))
    };
    let host = |h: &Option<String>| h.clone().filter(|h| !h.is_empty());
    if let Some(e) = &p.exec {
        return Ok(Handler::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &p.http_get {
        let https = match h.scheme.as_deref().unwrap_or("HTTP") {
            "HTTP" => false,
            "HTTPS" => true,
            other => return Err(format!("unsupported httpGet scheme {other:?}")),
        };
        let mut path = h.path.clone().unwrap_or_default();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        return Ok(Handler::Http {
            https,
            host: host(&h.host),
            port: port(&h.port)?,
            path,
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        });
    }
    if let Some(t) = &p.tcp_socket {
        return Ok(Handler::Tcp {
            host: host(&t.host),
            port: port(&t.port)?,
        });
    }
    if let Some(g) = &p.grpc {
        return Ok(Handler::Grpc {
            port: u16::try_from(g.port)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("invalid port number {}", g.port))?,
            service: g.service.clone().unwrap_or_default(),
        });
    }
    Err("probe has no handler".into())
}

/// Whether an HTTP status code is a probe success (kubelet: 200 <= code < 400).
pub fn http_success(code: u16) -> bool {
    (200..400).contains(&code)
}

/// started/ready of a container that has probes but no probe state yet (just seen running).
pub fn initial_gates(c: &Container) -> Gates {
    let started = c.startup_probe.is_none();
    Gates {
        started,
        ready: started && c.readiness_probe.is_none(),
    }
}

/// The grace period of a kill for a failed probe: the probe's terminationGracePeriodSeconds, else
/// the pod's (default 30).
pub fn kill_grace_seconds(c: &Container, kind: Kind, pod_grace: Option<i64>) -> i64 {
    let probe = match kind {
        Kind::Startup => c.startup_probe.as_ref(),
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => None,
    };
    probe
        .and_then(|p| p.termination_grace_period_seconds)
        .or(pod_grace)
        .unwrap_or(30)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ExecAction;

    fn probe(period: i32, success: i32, failure: i32, delay: i32) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            period_seconds: Some(period),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            initial_delay_seconds: Some(delay),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_unset_and_zero() {
        let t = Timing::of(&Probe::default());
        assert_eq!(
            t,
            Timing {
                initial_delay_ms: 0,
                period_ms: 10_000,
                timeout_ms: 1_000,
                success_threshold: 1,
                failure_threshold: 3
            }
        );
        let t = Timing::of(&Probe {
            period_seconds: Some(0),
            timeout_seconds: Some(0),
            ..Default::default()
        });
        assert_eq!((t.period_ms, t.timeout_ms), (10_000, 1_000));
    }

    #[test]
    fn thresholds() {
        use Outcome::*;
        let f = || Failure("exit 1".into());
        let e = || Error("no such port".into());
        // (what, kind, success threshold, failure threshold, outcomes, result after each)
        type Case = (
            &'static str,
            Kind,
            i32,
            i32,
            Vec<Outcome>,
            Vec<super::Result>,
        );
        use super::Result::{Failure as F, Success as S, Unknown as U};
        let cases: Vec<Case> = vec![
            (
                "readiness starts failed, one success makes it ready",
                Kind::Readiness,
                1,
                3,
                vec![Success, f(), f(), f(), Success],
                vec![S, S, S, F, S],
            ),
            (
                "readiness successThreshold 2",
                Kind::Readiness,
                2,
                1,
                vec![Success, Success, f(), Success, Success],
                vec![F, S, F, F, S],
            ),
            (
                "liveness starts Success, fails on the third failure in a row",
                Kind::Liveness,
                1,
                3,
                vec![f(), f(), Success, f(), f(), f()],
                vec![S, S, S, S, S, F],
            ),
            (
                "errors are thrown away and do not break a run",
                Kind::Liveness,
                1,
                2,
                vec![f(), e(), f()],
                vec![S, S, F],
            ),
            (
                "startup Unknown until it succeeds",
                Kind::Startup,
                1,
                3,
                vec![f(), e(), Success],
                vec![U, U, S],
            ),
        ];
        for (what, kind, st, ft, outcomes, want) in cases {
            let mut p = ProbeState::new(kind, Timing::of(&probe(1, st, ft, 0)));
            let got: Vec<super::Result> = outcomes
                .iter()
                .map(|o| {
                    p.record(o);
                    p.result
                })
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }

    fn container(startup: bool, liveness: bool, readiness: bool) -> Container {
        Container {
            name: "c".into(),
            startup_probe: startup.then(|| probe(1, 1, 2, 0)),
            liveness_probe: liveness.then(|| probe(1, 1, 2, 5)),
            readiness_probe: readiness.then(|| probe(1, 1, 2, 0)),
            ..Default::default()
        }
    }

    #[test]
    fn startup_gates_liveness_and_readiness() {
        let c = container(true, true, true);
        assert_eq!(
            initial_gates(&c),
            Gates {
                started: false,
                ready: false
            }
        );
        let mut p = ContainerProbes::of(&c, 1_000).unwrap();
        assert!(p.due(Kind::Startup, 1_000));
        assert!(
            !p.due(Kind::Liveness, 100_000),
            "liveness waits for startup"
        );
        assert!(!p.due(Kind::Readiness, 1_000));
        assert_eq!(p.gates(), initial_gates(&c));
        assert!(p.record(Kind::Startup, &Outcome::Success));
        assert_eq!(
            p.gates(),
            Gates {
                started: true,
                ready: false
            }
        );
        assert!(!p.due(Kind::Startup, 2_000), "startup stops once started");
        assert!(p.due(Kind::Readiness, 2_000));
        assert!(
            !p.due(Kind::Liveness, 5_999),
            "initial delay from the start"
        );
        assert!(p.due(Kind::Liveness, 6_000));
        p.record(Kind::Readiness, &Outcome::Success);
        assert_eq!(
            p.gates(),
            Gates {
                started: true,
                ready: true
            }
        );
        assert_eq!(p.kill(), None);
    }

    #[test]
    fn liveness_and_startup_failures_kill_and_hold() {
        let c = container(true, true, false);
        let mut p = ContainerProbes::of(&c, 0).unwrap();
        p.record(Kind::Startup, &Outcome::Failure("exit 1".into()));
        assert_eq!(p.kill(), None);
        p.record(Kind::Startup, &Outcome::Failure("exit 1".into()));
        let k = p.kill().unwrap();
        assert_eq!(k.kind, Kind::Startup);
        assert!(k.message.contains("startup probe"), "{}", k.message);
        assert!(
            !p.due(Kind::Startup, 10_000),
            "on hold until a new container"
        );
        assert!(!p.gates().started);

        let mut p = ContainerProbes::of(&c, 0).unwrap();
        p.record(Kind::Startup, &Outcome::Success);
        assert!(p.due(Kind::Liveness, 5_000));
        p.record(Kind::Liveness, &Outcome::Failure("exit 1".into()));
        p.record(Kind::Liveness, &Outcome::Failure("exit 1".into()));
        assert_eq!(p.kill().unwrap().kind, Kind::Liveness);
        assert!(!p.due(Kind::Liveness, 10_000));
        // readiness never kills
        let c = container(false, false, true);
        let mut p = ContainerProbes::of(&c, 0).unwrap();
        for _ in 0..5 {
            p.record(Kind::Readiness, &Outcome::Failure("503".into()));
        }
        assert_eq!(p.kill(), None);
        assert_eq!(
            p.gates(),
            Gates {
                started: true,
                ready: false
            }
        );
        assert!(p.due(Kind::Readiness, 0), "readiness keeps probing");
    }

    #[test]
    fn no_probes_no_state() {
        assert!(ContainerProbes::of(&container(false, false, false), 0).is_none());
        assert_eq!(
            initial_gates(&container(false, false, false)),
            Gates {
                started: true,
                ready: true
            }
        );
        assert_eq!(
            initial_gates(&container(false, true, false)),
            Gates {
                started: true,
                ready: true
            }
        );
    }

    #[test]
    fn handlers_resolve_port_names_and_refuse_what_is_unsupported() {
        use k8s_openapi::api::core::v1::{
            ContainerPort, GRPCAction, HTTPGetAction, HTTPHeader, TCPSocketAction,
        };
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let c = Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let http = |port: IntOrString, scheme: Option<&str>| Probe {
            http_get: Some(HTTPGetAction {
                port,
                path: Some("healthz".into()),
                scheme: scheme.map(Into::into),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-Probe".into(),
                    value: "1".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            handler(&http(IntOrString::String("http".into()), None), &c),
            Ok(Handler::Http {
                https: false,
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![("X-Probe".into(), "1".into())]
            })
        );
        assert!(
            handler(&http(IntOrString::String("metrics".into()), None), &c)
                .unwrap_err()
                .contains("cannot find port")
        );
        assert!(matches!(
            handler(&http(IntOrString::Int(80), Some("HTTPS")), &c),
            Ok(Handler::Http { https: true, .. })
        ));
        assert!(handler(&http(IntOrString::Int(80), Some("FTP")), &c)
            .unwrap_err()
            .contains("unsupported"));
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(53),
                host: Some(String::new()),
            }),
            ..Default::default()
        };
        assert_eq!(
            handler(&tcp, &c),
            Ok(Handler::Tcp {
                host: None,
                port: 53
            })
        );
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 9000,
                service: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            handler(&grpc, &c),
            Ok(Handler::Grpc {
                port: 9000,
                service: String::new()
            })
        );
        for (code, ok) in [
            (199, false),
            (200, true),
            (302, true),
            (399, true),
            (400, false),
            (503, false),
        ] {
            assert_eq!(http_success(code), ok, "{code}");
        }
    }

    #[test]
    fn kill_grace() {
        let mut c = container(false, true, false);
        assert_eq!(kill_grace_seconds(&c, Kind::Liveness, Some(7)), 7);
        assert_eq!(kill_grace_seconds(&c, Kind::Liveness, None), 30);
        c.liveness_probe
            .as_mut()
            .unwrap()
            .termination_grace_period_seconds = Some(2);
        assert_eq!(kill_grace_seconds(&c, Kind::Liveness, Some(7)), 2);
    }
}
