//! The event recorder: the I/O side of client-go's `EventRecorder`/`EventBroadcaster`. A
//! component records an event with [`Recorder::event`] (cheap, synchronous, never waits on the
//! API): the pure correlator (`core::events`) decides what to write, and a bounded queue hands
//! that to one sender task, which creates the event or patches the one written before
//! (`count`, `lastTimestamp`, `message`). A full queue drops the event and counts it
//! ([`Recorder::dropped`]): the container path and the controllers never wait for the API.
//!
//! Where events go is a [`Sink`]: the agent's is the API through its kube client
//! ([`KubeSink`]); the server's controllers write through the verbs
//! (`server::kinds::event::ApiSink`).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::agent::clock::Clock;
use crate::core::events::{Config, Correlator, Event, Involved, Record, Source, Type};
use crate::core::probe::Outcome;
use crate::runtime::{PullPolicy, PulledImage, Runtime, RuntimeError};

/// How many events may wait for the sender; past that they are dropped.
pub const QUEUE: usize = 1000;
/// Attempts per event before the sender gives it up.
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The event (or the one to patch) is not there.
    #[error("event {0} not found")]
    NotFound(String),
    #[error("writing event {name}")]
    Write {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where events are written.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Creates `event` (a v1 Event) in `namespace`.
    async fn create(&self, namespace: &str, event: Value) -> Result<(), SinkError>;
    /// Merge-patches the event `name` of `namespace`.
    async fn patch(&self, namespace: &str, name: &str, patch: Value) -> Result<(), SinkError>;
}

fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The v1 Event of a record.
pub fn to_v1(r: &Record) -> Value {
    let i = &r.involved;
    let mut involved = json!({"kind": i.kind, "name": i.name, "apiVersion": i.api_version});
    for (k, v) in [
        ("namespace", &i.namespace),
        ("uid", &i.uid),
        ("fieldPath", &i.field_path),
    ] {
        if !v.is_empty() {
            involved[k] = json!(v);
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": r.name, "namespace": r.namespace},
        "involvedObject": involved,
        "reason": r.reason,
        "message": r.message,
        "type": r.type_.as_str(),
        "source": {"component": r.source.component, "host": r.source.host},
        "reportingComponent": r.source.component,
        "reportingInstance": r.source.host,
        "firstTimestamp": time(r.first_ms),
        "lastTimestamp": time(r.last_ms),
        "count": r.count,
    })
}

struct Inner {
    correlator: Mutex<Correlator>,
    tx: mpsc::Sender<Record>,
    clock: Clock,
    dropped: AtomicU64,
}

impl Inner {
    /// Counts a dropped event; says so in the log at the 1st, 2nd, 4th, 8th... drop.
    fn dropped(&self) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                dropped = n,
                "events dropped: the API does not take them fast enough"
            );
        }
    }
}

/// A component's handle to record events; cloning it is cheap. A disabled recorder records
/// nothing (tests of parts that do not look at events).
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Recorder {
    /// A recorder for `source`, its sender task spawned on the current runtime.
    pub fn start(source: Source, clock: Clock, sink: Arc<dyn Sink>) -> Recorder {
        Self::with_queue(source, clock, sink, QUEUE, Config::default())
    }

    pub fn with_queue(
        source: Source,
        clock: Clock,
        sink: Arc<dyn Sink>,
        queue: usize,
        cfg: Config,
    ) -> Recorder {
        let (tx, rx) = mpsc::channel(queue);
        let inner = Arc::new(Inner {
            correlator: Mutex::new(Correlator::new(source, cfg)),
            tx,
            clock,
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(send(sink, rx, Arc::downgrade(&inner)));
        Recorder { inner: Some(inner) }
    }

    pub fn disabled() -> Recorder {
        Recorder { inner: None }
    }

    /// Records an event about `involved`. Never waits.
    pub fn event(
        &self,
        involved: &Involved,
        type_: Type,
        reason: &str,
        message: impl Into<String>,
    ) {
        let Some(inner) = &self.inner else {
            return;
        };
        let ev = Event {
            involved: involved.clone(),
            type_,
            reason: reason.to_string(),
            message: message.into(),
        };
        let now = inner.clock.now_ms();
        let record = match inner.correlator.lock() {
            Ok(mut c) => c.correlate(ev, now),
            Err(_) => return,
        };
        if let Some(record) = record {
            if inner.tx.try_send(record).is_err() {
                inner.dropped();
            }
        }
    }

    pub fn normal(&self, involved: &Involved, reason: &str, message: impl Into<String>) {
        self.event(involved, Type::Normal, reason, message);
    }

    pub fn warning(&self, involved: &Involved, reason: &str, message: impl Into<String>) {
        self.event(involved, Type::Warning, reason, message);
    }

    /// Events dropped so far: the queue was full, or the API refused or was unreachable.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }
}

/// Writes one record: a create, or a patch of the event written before (created when it is
/// gone, as client-go does).
async fn write(sink: &dyn Sink, r: &Record) -> Result<(), SinkError> {
    if r.update {
        let patch =
            json!({"count": r.count, "lastTimestamp": time(r.last_ms), "message": r.message});
        match sink.patch(&r.namespace, &r.name, patch).await {
            Err(SinkError::NotFound(_)) => {}
            other => return other,
        }
    }
    sink.create(&r.namespace, to_v1(r)).await
}

/// The sender task: until every recorder handle is gone.
async fn send(sink: Arc<dyn Sink>, mut rx: mpsc::Receiver<Record>, inner: std::sync::Weak<Inner>) {
    while let Some(r) = rx.recv().await {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match write(&*sink, &r).await {
                Ok(()) => break,
                Err(e) if attempt >= ATTEMPTS => {
                    tracing::debug!(error = %crate::runtime::chain(&e), event = r.name.as_str(), "event dropped");
                    if let Some(i) = inner.upgrade() {
                        i.dropped();
                    }
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await,
            }
        }
    }
}

/// The agent's sink: the API through its kube client.
pub struct KubeSink(pub kube::Client);

fn kube_error(name: &str, e: kube::Error) -> SinkError {
    match e {
        kube::Error::Api(s) if s.code == 404 => SinkError::NotFound(name.to_string()),
        e => SinkError::Write {
            name: name.to_string(),
            source: Box::new(e),
        },
    }
}

#[async_trait]
impl Sink for KubeSink {
    async fn create(&self, namespace: &str, event: Value) -> Result<(), SinkError> {
        let name = event["metadata"]["name"].as_str().unwrap_or("").to_string();
        let api: kube::Api<k8s_openapi::api::core::v1::Event> =
            kube::Api::namespaced(self.0.clone(), namespace);
        let ev = serde_json::from_value(event).map_err(|e| SinkError::Write {
            name: name.clone(),
            source: Box::new(e),
        })?;
        api.create(&kube::api::PostParams::default(), &ev)
            .await
            .map(|_| ())
            .map_err(|e| kube_error(&name, e))
    }
    async fn patch(&self, namespace: &str, name: &str, patch: Value) -> Result<(), SinkError> {
        let api: kube::Api<k8s_openapi::api::core::v1::Event> =
            kube::Api::namespaced(self.0.clone(), namespace);
        api.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| kube_error(name, e))
    }
}

/// A duration as Go prints one (`1.234s`, `512ms`), for the kubelet's pull messages.
fn go_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// The image of a container made present, with the kubelet's image events around it
/// (`imageManager.EnsureImageExists`): `Pulled` "already present on machine", or `Pulling`
/// then `Pulled` with the time it took or `Failed` with why; `ErrImageNeverPull`.
pub async fn ensure_image(
    rec: &Recorder,
    rt: &dyn Runtime,
    about: &Involved,
    image: &str,
    policy: PullPolicy,
    auth: &crate::runtime::pull::Credentials,
) -> Result<PulledImage, RuntimeError> {
    let present = policy != PullPolicy::Always && rt.has_image(image).await;
    if present {
        rec.normal(
            about,
            "Pulled",
            format!("Container image \"{image}\" already present on machine"),
        );
    } else if policy == PullPolicy::Never {
        let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
        rec.warning(about, "ErrImageNeverPull", msg);
    } else {
        rec.normal(about, "Pulling", format!("Pulling image \"{image}\""));
    }
    let began = tokio::time::Instant::now();
    let pulled = rt.image_for_pod(image, policy, auth).await;
    match &pulled {
        Ok(_) if !present && policy != PullPolicy::Never => {
            let took = go_duration(began.elapsed());
            let msg = format!("Successfully pulled image \"{image}\" in {took}");
            rec.normal(about, "Pulled", msg);
        }
        Err(e @ RuntimeError::ImagePull { .. }) => {
            let msg = format!(
                "Failed to pull image \"{image}\": {}",
                crate::runtime::chain(e)
            );
            rec.warning(about, "Failed", msg);
        }
        _ => {}
    }
    pulled
}

/// The kubelet's events of a container start that failed: `FailedMount` for a volume that could
/// not be set up, else `Failed` "Error: REASON" (ErrImagePull, CreateContainerError, ...).
pub fn start_failed(rec: &Recorder, about: &Involved, e: &RuntimeError) {
    match e {
        RuntimeError::InvalidSpec {
            source: crate::runtime::spec::SpecError::Mount(_),
            ..
        } => rec.warning(about, "FailedMount", crate::runtime::chain(e)),
        _ => rec.warning(about, "Failed", format!("Error: {}", e.reason())),
    }
}

/// The kubelet's events of a container waiting in back-off: restarting a crashed one, or
/// pulling its image again.
pub fn back_off(rec: &Recorder, about: &Involved, image: &str, crashed: bool) {
    if crashed {
        let (pod, ns, uid) = (&about.name, &about.namespace, &about.uid);
        let container = about
            .field_path
            .trim_start_matches("spec.containers{")
            .trim_end_matches('}');
        let msg =
            format!("Back-off restarting failed container {container} in pod {pod}_{ns}({uid})");
        rec.warning(about, "BackOff", msg);
    } else {
        rec.normal(
            about,
            "BackOff",
            format!("Back-off pulling image \"{image}\""),
        );
        rec.warning(about, "Failed", "Error: ImagePullBackOff");
    }
}

/// The prober's events: `Unhealthy` for a probe that failed ("Liveness probe failed: ...") or
/// could not run ("... probe errored: ..."), `ProbeWarning` for one that succeeded with a
/// warning ("Readiness probe warning: ...").
pub fn probe_outcome(rec: &Recorder, about: &Involved, probe: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Success => {}
        Outcome::Warning(m) => {
            rec.warning(about, "ProbeWarning", format!("{probe} probe warning: {m}"))
        }
        Outcome::Failure(m) => {
            rec.warning(about, "Unhealthy", format!("{probe} probe failed: {m}"))
        }
        Outcome::Error(m) => rec.warning(about, "Unhealthy", format!("{probe} probe errored: {m}")),
    }
}

/// The reference of a Node, as the kubelet and the node controller make it (the uid is the
/// node's name, so that `kubectl describe node` finds the events).
pub fn node_ref(name: &str) -> Involved {
    Involved {
        api_version: "v1".into(),
        kind: "Node".into(),
        namespace: String::new(),
        name: name.into(),
        uid: name.into(),
        field_path: String::new(),
    }
}

/// The reference of a pod (or of one of its containers, `container` non-empty).
pub fn pod_ref(namespace: &str, name: &str, uid: &str, container: &str) -> Involved {
    Involved {
        api_version: "v1".into(),
        kind: "Pod".into(),
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
        field_path: if container.is_empty() {
            String::new()
        } else {
            format!("spec.containers{{{container}}}")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records what it is asked, or refuses everything (an API that is down).
    #[derive(Default)]
    struct Recording {
        writes: Mutex<Vec<(String, Value)>>,
        down: bool,
        gate: Option<tokio::sync::Semaphore>,
    }

    #[async_trait]
    impl Sink for Recording {
        async fn create(&self, _ns: &str, event: Value) -> Result<(), SinkError> {
            if let Some(g) = &self.gate {
                g.acquire().await.unwrap().forget();
            }
            if self.down {
                return Err(SinkError::Write {
                    name: "x".into(),
                    source: "connection refused".into(),
                });
            }
            self.writes.lock().unwrap().push(("create".into(), event));
            Ok(())
        }
        async fn patch(&self, _ns: &str, name: &str, patch: Value) -> Result<(), SinkError> {
            if self.down {
                return Err(SinkError::NotFound(name.into()));
            }
            self.writes
                .lock()
                .unwrap()
                .push((format!("patch {name}"), patch));
            Ok(())
        }
    }

    fn source() -> Source {
        Source {
            component: "kubelet".into(),
            host: "n1".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_created_then_patched_with_their_count() {
        let sink = Arc::new(Recording::default());
        let rec = Recorder::start(source(), Clock::starting_at(1_000_000), sink.clone());
        let pod = pod_ref("default", "p", "u1", "c");
        rec.warning(&pod, "BackOff", "Back-off pulling image \"x\"");
        tokio::time::sleep(Duration::from_secs(1)).await;
        rec.warning(&pod, "BackOff", "Back-off pulling image \"x\"");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let writes = sink.writes.lock().unwrap().clone();
        assert_eq!(writes.len(), 2, "{writes:?}");
        let (verb, created) = &writes[0];
        assert_eq!(verb, "create");
        assert_eq!(created["involvedObject"]["fieldPath"], "spec.containers{c}");
        assert_eq!(created["count"], 1);
        let name = created["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("p."), "{name}");
        assert_eq!(writes[1].0, format!("patch {name}"));
        assert_eq!(writes[1].1["count"], 2);
        assert_eq!(writes[1].1["lastTimestamp"], "1970-01-01T00:16:41Z");
    }

    /// A sink that never answers fills the queue; recording still returns at once and counts
    /// what it drops.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_api_never_blocks_the_recorder() {
        let sink = Arc::new(Recording {
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..Default::default()
        });
        let rec = Recorder::with_queue(
            source(),
            Clock::starting_at(0),
            sink,
            2,
            Config {
                spam_burst: 100,
                ..Config::default()
            },
        );
        for i in 0..10 {
            rec.normal(
                &pod_ref("default", &format!("p{i}"), "u", ""),
                "Pulled",
                "m",
            );
        }
        tokio::task::yield_now().await;
        assert!(rec.dropped() >= 7, "{}", rec.dropped());
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_that_is_down_costs_events_not_time() {
        let sink = Arc::new(Recording {
            down: true,
            ..Default::default()
        });
        let rec = Recorder::start(source(), Clock::starting_at(0), sink);
        rec.normal(&pod_ref("default", "p", "u", ""), "Pulled", "m");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(rec.dropped(), 1);
    }
}
