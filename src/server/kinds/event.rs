//! v1 Events: what happened to an object, told by the component that saw it (the agent's
//! kubelet-like reasons, the DaemonSet controller's, the node-lifecycle controller's), as
//! kube-apiserver serves them: create, get, list, watch, update, patch, delete; the field
//! selectors of upstream's event strategy (`involvedObject.kind|namespace|name|uid|apiVersion|
//! resourceVersion|fieldPath`, `reason`, `reportingComponent`, `source`, `type`) through the
//! generic dotted-path selection, which the stored v1 fields answer; the Table of
//! `kubectl get events`. The store forgets an event an hour (`--event-ttl`) after its last
//! write ([`compact`], as kube-apiserver's etcd lease does).
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Event;
use serde_json::{json, Value};

use crate::agent::clock::Clock;
use crate::agent::events::{Recorder, Sink, SinkError};
use crate::core::events::Source;
use crate::core::names;
use crate::core::validation::{validate_object_meta, FieldError};
use crate::server::auth::User;
use crate::server::converted::Conversion;
use crate::server::query::{Filter, WriteOpts};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::table::{human_duration, i, s};
use crate::server::verbs::{Api, DeleteOptions, ObjectRef, Part, PatchType};

pub static EVENTS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "events",
    singular: "event",
    kind: "Event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    strategy: &EventStrategy,
};

/// events.k8s.io/v1 Events: the same stored objects as core v1 Events, converted
/// (`converted`, [`to_events_v1`], [`from_events_v1`]), so `kubectl events`, client-go's new
/// recorder and clients of either group see one set of events.
pub static EVENTS_V1: Resource = Resource {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    singular: "event",
    kind: "Event",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    strategy: &EventsV1Strategy,
};

pub static V1_CONVERSION: Conversion = Conversion {
    stored: &EVENTS,
    to_stored: from_events_v1,
    from_stored: to_events_v1,
    field_label: v1_field_label,
};

struct EventsV1Strategy;

#[async_trait]
impl Kind for EventsV1Strategy {
    type Object = k8s_openapi::api::events::v1::Event;

    /// What events.k8s.io/v1 asks of a new event beyond the core rules (upstream's
    /// ValidateEventCreate for the new group): its time, reporting controller and instance,
    /// action and reason, a note of at most 1 kB, no `deprecated*` fields of its own.
    fn validate(&self, ev: &Self::Object) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if ev.event_time.is_none() {
            errs.push(FieldError::required("eventTime", ""));
        }
        for (field, v) in [
            ("reportingController", &ev.reporting_controller),
            ("reportingInstance", &ev.reporting_instance),
            ("action", &ev.action),
            ("reason", &ev.reason),
        ] {
            if v.as_deref().unwrap_or("").is_empty() {
                errs.push(FieldError::required(field, ""));
            }
        }
        if ev.note.as_deref().unwrap_or("").len() > MAX_NOTE_BYTES {
            errs.push(FieldError::too_long("note", MAX_NOTE_BYTES));
        }
        if ev.deprecated_source.is_some()
            || ev.deprecated_first_timestamp.is_some()
            || ev.deprecated_last_timestamp.is_some()
            || ev.deprecated_count.is_some_and(|c| c != 0)
        {
            errs.push(FieldError::invalid(
                "deprecatedSource",
                "",
                "needs to be unset",
            ));
        }
        errs
    }
    fn validate_update(&self, _ev: &Self::Object, _old: &Self::Object) -> Vec<FieldError> {
        Vec::new()
    }
    fn conversion(&self) -> Option<&'static Conversion> {
        Some(&V1_CONVERSION)
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        EventStrategy.cells(&from_events_v1(obj), now)
    }
}

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

struct EventStrategy;

/// The columns of upstream's event printer (the wide ones at priority 1).
const COLUMNS: &[Column] = &[
    Column::string("Last Seen", 0),
    Column::string("Type", 0),
    Column::string("Reason", 0),
    Column::string("Object", 0),
    Column::string("Subobject", 1),
    Column::string("Source", 1),
    Column::string("Message", 0),
    Column::string("First Seen", 1),
    Column::integer("Count", 1),
    Column {
        priority: 1,
        ..Column::NAME
    },
];

const MAX_NOTE_BYTES: usize = 1024;

/// Event types a new event may have (as upstream validates `type`).
const TYPES: &[&str] = &["Normal", "Warning"];

#[async_trait]
impl Kind for EventStrategy {
    type Object = Event;

    /// The reference fields kubectl's describe selects on are stored even when empty: upstream's
    /// field set has "" for them, so `involvedObject.namespace=` finds a Node's events.
    fn default(&self, ev: &mut Event) {
        let o = &mut ev.involved_object;
        for f in [&mut o.namespace, &mut o.uid, &mut o.kind, &mut o.name] {
            f.get_or_insert_with(String::new);
        }
    }

    /// upstream's `source` field: the reporting component
    fn field_label(&self, label: &str) -> Option<&'static str> {
        (label == "source").then_some("source.component")
    }
    fn validate(&self, ev: &Event) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&ev.metadata, true, names::is_dns1123_subdomain);
        let ns = ev.metadata.namespace.as_deref().unwrap_or("");
        let involved_ns = ev.involved_object.namespace.as_deref().unwrap_or("");
        // legacy events: the event lives in its object's namespace (or `default` for
        // cluster-scoped objects, whose reference has none)
        if !involved_ns.is_empty() && involved_ns != ns {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                involved_ns,
                "does not match event.namespace",
            ));
        }
        if let Some(t) = ev.type_.as_deref().filter(|t| !t.is_empty()) {
            if !TYPES.contains(&t) {
                errs.push(FieldError::not_supported("type", t, TYPES));
            }
        }
        if ev.message.as_deref().unwrap_or("").len() > 4 * MAX_NOTE_BYTES {
            errs.push(FieldError::too_long("message", 4 * MAX_NOTE_BYTES));
        }
        errs
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let since = |t: Option<DateTime<Utc>>| match t {
            Some(t) => human_duration((now - t).num_seconds()),
            None => "<unknown>".to_string(),
        };
        let first = time(obj, "/firstTimestamp").or_else(|| time(obj, "/eventTime"));
        let (last, count) = match obj.get("series").filter(|v| v.is_object()) {
            Some(series) => (time(series, "/lastObservedTime"), i(series, "/count")),
            None => (
                time(obj, "/lastTimestamp").or(first),
                i(obj, "/count").max(1),
            ),
        };
        let kind = s(obj, "/involvedObject/kind").to_lowercase();
        let target = match s(obj, "/involvedObject/name") {
            "" => kind,
            name => format!("{kind}/{name}"),
        };
        vec![
            json!(since(last)),
            json!(s(obj, "/type")),
            json!(s(obj, "/reason")),
            json!(target),
            json!(s(obj, "/involvedObject/fieldPath")),
            json!(source(obj)),
            json!(s(obj, "/message").trim()),
            json!(since(first)),
            json!(count),
            json!(s(obj, "/metadata/name")),
        ]
    }
}

/// The fields that differ between core v1 and events.k8s.io/v1 Events (upstream's conversion:
/// `regarding`/`involvedObject`, `note`/`message`, `reportingController`/`reportingComponent`,
/// `deprecatedSource`/`source`, the `deprecated*` timestamps and count); the others (metadata,
/// `eventTime`, `series`, `action`, `reason`, `related`, `reportingInstance`, `type`) are the same.
const V1_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn renamed(obj: &Value, from_core: bool, api_version: &str) -> Value {
    let Some(map) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        let key = V1_RENAMES
            .iter()
            .find_map(|(v1, core)| match from_core {
                true => (k == core).then_some(*v1),
                false => (k == v1).then_some(*core),
            })
            .unwrap_or(k);
        out.insert(key.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// A stored (core v1) Event as events.k8s.io/v1 shows it. An event of an old recorder that
/// names no reporting controller or instance shows its source's component and host there.
pub fn to_events_v1(core: &Value) -> Value {
    let mut v1 = renamed(core, true, "events.k8s.io/v1");
    for (field, from) in [
        ("reportingController", "/source/component"),
        ("reportingInstance", "/source/host"),
    ] {
        if s(&v1, &format!("/{field}")).is_empty() && !s(core, from).is_empty() {
            v1[field] = json!(s(core, from));
        }
    }
    v1
}

/// An events.k8s.io/v1 Event as it is stored (core v1).
pub fn from_events_v1(v1: &Value) -> Value {
    renamed(v1, false, "v1")
}

/// An events.k8s.io/v1 field selector's label as the stored event has it (upstream's field
/// label conversion); None: not selectable.
pub fn v1_field_label(label: &str) -> Option<String> {
    match label {
        "reason" | "type" | "metadata.namespace" | "metadata.name" => Some(label.into()),
        "reportingController" => Some("reportingComponent".into()),
        l => {
            let rest = l.strip_prefix("regarding.")?;
            let known = [
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "resourceVersion",
                "fieldPath",
            ];
            known
                .contains(&rest)
                .then(|| format!("involvedObject.{rest}"))
        }
    }
}

/// The time at `ptr` (RFC 3339, with or without fractions).
fn time(obj: &Value, ptr: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s(obj, ptr))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The Source cell: `component, host` (the reporting controller and instance for new events).
fn source(obj: &Value) -> String {
    let (component, host) = match s(obj, "/source/component") {
        "" => (s(obj, "/reportingComponent"), s(obj, "/reportingInstance")),
        c => (c, s(obj, "/source/host")),
    };
    match (component, host) {
        ("", _) => "<unknown>".into(),
        (c, "") => c.into(),
        (c, h) => format!("{c}, {h}"),
    }
}

/// When the event was last written or last seen: the lease kube-apiserver's TTL runs from.
fn last_write(obj: &Value) -> Option<DateTime<Utc>> {
    [
        "/metadata/creationTimestamp",
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
    ]
    .iter()
    .filter_map(|p| time(obj, p))
    .max()
}

/// Whether the event's TTL ran out at `now`.
pub fn expired(obj: &Value, now: DateTime<Utc>, ttl: Duration) -> bool {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    last_write(obj).is_some_and(|t| now - t >= ttl)
}

/// Deletes the events whose TTL ran out; returns how many.
pub async fn compact_once(api: &Api, user: &User, now: DateTime<Utc>, ttl: Duration) -> usize {
    let Ok((items, _)) = api.list(user, &EVENTS, None, &Filter::default()).await else {
        return 0;
    };
    let mut n = 0;
    for ev in items.iter().filter(|e| expired(e, now, ttl)) {
        let at = ObjectRef::new(
            &EVENTS,
            Some(s(ev, "/metadata/namespace")),
            s(ev, "/metadata/name"),
        );
        let opts = DeleteOptions {
            preconditions: crate::server::verbs::Preconditions {
                resource_version: crate::server::store::object_rv(ev).into(),
                uid: None,
            },
            ..Default::default()
        };
        if api.delete(user, at, &opts).await.is_ok() {
            n += 1;
        }
    }
    n
}

/// Compacts the events every tenth of the TTL (at most a minute), forever.
pub async fn compact(api: Arc<Api>, clock: Clock, ttl: Duration) {
    let user = User::internal("event-ttl");
    let every = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let now = DateTime::from_timestamp_millis(clock.now_ms()).unwrap_or_default();
        let n = compact_once(&api, &user, now, ttl).await;
        if n > 0 {
            tracing::debug!(deleted = n, "events past their TTL compacted");
        }
        tokio::time::sleep_until(clock.deadline(clock.now_ms() + every.as_millis() as i64)).await;
    }
}

/// The event sink of the server's controllers: the verbs, under the controller's identity.
pub struct ApiSink {
    pub api: Arc<Api>,
    pub user: User,
}

fn sink_error(name: &str, e: crate::server::status::ApiError) -> SinkError {
    match e.code {
        404 => SinkError::NotFound(name.to_string()),
        _ => SinkError::Write {
            name: name.to_string(),
            source: Box::new(e),
        },
    }
}

#[async_trait]
impl Sink for ApiSink {
    async fn create(&self, namespace: &str, event: Value) -> Result<(), SinkError> {
        let name = s(&event, "/metadata/name").to_string();
        self.api
            .create(
                &self.user,
                &EVENTS,
                Some(namespace),
                event,
                WriteOpts::INTERNAL,
            )
            .await
            .map(|_| ())
            .map_err(|e| sink_error(&name, e))
    }
    async fn patch(&self, namespace: &str, name: &str, patch: Value) -> Result<(), SinkError> {
        let at = ObjectRef::new(&EVENTS, Some(namespace), name);
        self.api
            .patch(
                &self.user,
                at,
                Part::Main,
                PatchType::Merge,
                &patch,
                WriteOpts::INTERNAL,
            )
            .await
            .map(|_| ())
            .map_err(|e| sink_error(name, e))
    }
}

/// A recorder of the server's `component` (`daemonset-controller`, `node-controller`) writing
/// through the verbs: `recorder.warning(&involved, "NodeNotReady", "...")` is the whole call.
pub fn recorder(api: Arc<Api>, component: &str, clock: Clock) -> Recorder {
    let user = User::internal(component);
    let source = Source {
        component: component.to_string(),
        host: String::new(),
    };
    Recorder::start(source, clock, Arc::new(ApiSink { api, user }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn events_convert_between_core_and_events_k8s_io() {
        use super::*;
        let core = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "d"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "d"},
            "reason": "Pulled", "message": "pulled it", "type": "Normal",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2030-01-01T00:00:00Z", "lastTimestamp": "2030-01-01T00:01:00Z",
            "count": 3, "reportingComponent": "", "reportingInstance": ""});
        let v1 = to_events_v1(&core);
        assert_eq!(
            v1,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "e", "namespace": "d"},
                "regarding": {"kind": "Pod", "name": "p", "namespace": "d"},
                "reason": "Pulled", "note": "pulled it", "type": "Normal",
                "deprecatedSource": {"component": "kubelet", "host": "n1"},
                "deprecatedFirstTimestamp": "2030-01-01T00:00:00Z",
                "deprecatedLastTimestamp": "2030-01-01T00:01:00Z",
                "deprecatedCount": 3, "reportingController": "kubelet", "reportingInstance": "n1"})
        );
        let mut back = core.clone();
        back["reportingComponent"] = json!("kubelet");
        back["reportingInstance"] = json!("n1");
        assert_eq!(from_events_v1(&v1), back);
        // a new event: eventTime, series, action, related pass through
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "x"},
            "eventTime": "2030-01-01T00:00:00.000000Z", "series": {"count": 2,
            "lastObservedTime": "2030-01-01T00:00:01.000000Z"}, "action": "Pull",
            "reportingController": "c", "reportingInstance": "i", "note": "n",
            "regarding": {"kind": "Node", "name": "n1"}});
        let stored = from_events_v1(&new);
        assert_eq!(stored["reportingComponent"], "c");
        assert_eq!(stored["message"], "n");
        assert_eq!(stored["series"], new["series"]);
        assert_eq!(to_events_v1(&stored), new);
        for (label, want) in [
            ("regarding.name", Some("involvedObject.name")),
            ("reportingController", Some("reportingComponent")),
            ("reason", Some("reason")),
            ("regarding.bogus", None),
            ("note", None),
        ] {
            assert_eq!(v1_field_label(label).as_deref(), want, "{label}");
        }
    }

    use super::*;
    use crate::server::kinds::NAMESPACES;
    use crate::server::store::SqliteStore;

    fn event(name: &str, last: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default", "uid": "u1"},
            "reason": "Pulled", "type": "Normal", "message": "Successfully pulled image \"i\" ",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2026-11-26T10:00:00Z", "lastTimestamp": last, "count": 3})
    }

    #[test]
    fn table_cells_read_like_kubectl_get_events() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cells = EVENTS
            .strategy
            .cells(&event("e", "2026-11-26T10:04:30Z"), now);
        assert_eq!(
            cells,
            vec![
                json!("30s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/p"),
                json!(""),
                json!("kubelet, n1"),
                json!("Successfully pulled image \"i\""),
                json!("5m"),
                json!(3),
                json!("e"),
            ]
        );
        let mut series = event("s", "2026-11-26T10:01:00Z");
        series["series"] = json!({"count": 7, "lastObservedTime": "2026-11-26T10:04:59.123456Z"});
        let cells = EVENTS.strategy.cells(&series, now);
        assert_eq!((&cells[0], &cells[8]), (&json!("0s"), &json!(7)));
    }

    #[test]
    fn events_expire_an_hour_after_their_last_write() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let ev = event("e", "2026-11-26T10:30:00Z");
        assert!(!expired(&ev, at("2026-11-26T11:29:59Z"), DEFAULT_TTL));
        assert!(expired(&ev, at("2026-11-26T11:30:00Z"), DEFAULT_TTL));
        assert!(!expired(
            &json!({}),
            at("2030-01-01T00:00:00Z"),
            DEFAULT_TTL
        ));
    }

    /// The compaction loop on paused time: an event written now is gone once the TTL passed,
    /// and not before.
    #[tokio::test(start_paused = true)]
    async fn compaction_forgets_old_events_on_paused_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), 100).unwrap();
        let api = Arc::new(Api::new(Arc::new(store), Default::default()));
        let user = User::internal("test");
        api.create(
            &user,
            &NAMESPACES,
            None,
            json!({"metadata": {"name": "default"}}),
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap();
        let clock = Clock::starting_at(Utc::now().timestamp_millis());
        let now = DateTime::from_timestamp_millis(clock.now_ms()).unwrap();
        let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        api.create(
            &user,
            &EVENTS,
            Some("default"),
            event("e", &stamp),
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap();
        let ttl = Duration::from_secs(600);
        let task = tokio::spawn(compact(api.clone(), clock.clone(), ttl));
        let count = || async {
            let (items, _) = api
                .list(&user, &EVENTS, None, &Filter::default())
                .await
                .unwrap();
            items.len()
        };
        tokio::time::sleep(Duration::from_secs(590)).await;
        assert_eq!(count().await, 1, "kept within its TTL");
        tokio::time::sleep(Duration::from_secs(75)).await;
        assert_eq!(count().await, 0, "compacted once the TTL passed");
        task.abort();
    }

    #[test]
    fn validation_follows_upstream() {
        let ctx = crate::server::strategy::Prepare {
            resource: &EVENTS,
            old: None,
            validation: crate::server::query::FieldValidation::Strict,
            policy: None,
        };
        let ok = event("e", "2026-11-26T10:04:30Z");
        if let Err(e) = EVENTS.strategy.prepare(&ok, ctx) {
            panic!("{}", e.message);
        }
        let mut node = ok.clone();
        node["involvedObject"] = json!({"kind": "Node", "name": "n1"});
        let stored = EVENTS.strategy.prepare(&node, ctx).unwrap().object;
        assert_eq!(
            (
                &stored["involvedObject"]["namespace"],
                &stored["involvedObject"]["uid"]
            ),
            (&json!(""), &json!("")),
            "selectable as empty, as upstream's field set has them"
        );
        let mut elsewhere = ok.clone();
        elsewhere["involvedObject"]["namespace"] = json!("other");
        let mut odd = ok.clone();
        odd["type"] = json!("Sometimes");
        for bad in [elsewhere, odd] {
            assert_eq!(EVENTS.strategy.prepare(&bad, ctx).unwrap_err().code, 422);
        }
    }
}
