//! The server's `/metrics` (kube-apiserver's, Prometheus text through [`crate::metrics`]): the
//! process and its tokio runtime, `apiserver_request_total` by verb, resource, subresource and
//! code,
//! `apiserver_request_duration_seconds` (the time to the response's head: a watch's is its
//! set-up), `apiserver_longrunning_requests` (the open watches per resource) and
//! `apiserver_storage_objects` (the objects stored per resource).
//!
//! The counters are one registry per process, as kube-apiserver's legacy registry is: the router
//! records every request into it ([`observe`], [`watching`]), whichever server of the process
//! served it. Only users who may GET the path `/metrics` read it (admins; see `auth::authz`).
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use http_body_util::BodyExt;

use super::auth::authz::{self, Attributes, Decision};
use super::auth::{forbidden, User};
use super::body::Body;
use super::kinds;
use super::status::ApiError;
use super::verbs::Api;
use crate::metrics::{write_self, HistogramSnapshot, Kind, Text};

/// kube-apiserver's buckets for `apiserver_request_duration_seconds`.
const DURATION_BOUNDS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; DURATION_BOUNDS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = DURATION_BOUNDS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// A request's resource and subresource (empty when it has none).
pub type Res = (&'static str, &'static str);

#[derive(Debug, Default)]
struct Registry {
    /// (verb, (resource, subresource), code) -> requests.
    requests: BTreeMap<(&'static str, Res, u16), u64>,
    /// (verb, (resource, subresource)) -> durations.
    durations: BTreeMap<(&'static str, Res), Histogram>,
    /// resource -> open watches.
    watches: BTreeMap<&'static str, i64>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // a panic while holding it leaves counts, which stay valid
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The verb as kube-apiserver's metrics name it (the REST action: `POST` for a create, `PUT`
/// for an update), from the router's Kubernetes verb.
pub fn metric_verb(verb: &str) -> &'static str {
    match verb {
        "get" => "GET",
        "list" => "LIST",
        "watch" => "WATCH",
        "create" => "POST",
        "update" => "PUT",
        "patch" => "PATCH",
        "delete" => "DELETE",
        "deletecollection" => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

/// Records one answered request (`resource` empty for a non-resource path).
pub fn observe(verb: &'static str, resource: Res, code: u16, secs: f64) {
    let mut r = registry();
    *r.requests.entry((verb, resource, code)).or_default() += 1;
    r.durations
        .entry((verb, resource))
        .or_default()
        .observe(secs);
}

/// Counts an open watch of `resource` while it lives.
struct WatchGuard(&'static str);

impl WatchGuard {
    fn new(resource: &'static str) -> Self {
        *registry().watches.entry(resource).or_default() += 1;
        WatchGuard(resource)
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        *registry().watches.entry(self.0).or_default() -= 1;
    }
}

/// A watch's response body, counted in `apiserver_longrunning_requests` until it is dropped
/// (the stream ended or the client went away).
pub fn watching(resource: &'static str, body: Body) -> Body {
    let guard = WatchGuard::new(resource);
    body.map_frame(move |f| {
        let _ = &guard;
        f
    })
    .boxed()
}

/// `GET /metrics`.
pub async fn serve(api: &Api, user: &User) -> Result<String, ApiError> {
    let a = Attributes {
        verb: "get",
        path: Some("/metrics"),
        ..Attributes::default()
    };
    if let Decision::Deny(reason) = authz::decide(user, &a) {
        return Err(forbidden(user, &a, &reason));
    }
    let mut objects = vec![];
    for r in kinds::ALL {
        // a resource served over another's storage is counted there
        if r.strategy.conversion().is_some() {
            continue;
        }
        // counted, not listed: a list decoded every object (100 000 pods) per scrape
        if let Ok(n) = api.store.count(&r.key()).await {
            objects.push((r.key(), n));
        }
    }
    let mut t = Text::new();
    write_self(&mut t);
    render(&registry(), &objects, &mut t);
    Ok(t.finish())
}

fn render(r: &Registry, objects: &[(String, usize)], t: &mut Text) {
    const TOTAL: &str = "apiserver_request_total";
    t.family(
        TOTAL,
        "[STABLE] Counter of apiserver requests broken out for each verb, dry run value, \
         group, version, resource, scope, component, and HTTP response code.",
        Kind::Counter,
    );
    for ((verb, (resource, sub), code), n) in &r.requests {
        let code = code.to_string();
        t.sample(
            TOTAL,
            &[
                ("code", &code),
                ("resource", resource),
                ("subresource", sub),
                ("verb", verb),
            ],
            *n as f64,
        );
    }
    const DURATION: &str = "apiserver_request_duration_seconds";
    t.family(
        DURATION,
        "[STABLE] Response latency distribution in seconds for each verb, dry run value, \
         group, version, resource, subresource, scope and component.",
        Kind::Histogram,
    );
    for ((verb, (resource, sub)), h) in &r.durations {
        t.histogram(
            DURATION,
            &[("resource", resource), ("subresource", sub), ("verb", verb)],
            &HistogramSnapshot {
                bounds: &DURATION_BOUNDS,
                counts: &h.counts,
                sum: h.sum,
                count: h.count,
            },
        );
    }
    const LONG: &str = "apiserver_longrunning_requests";
    t.family(
        LONG,
        "[STABLE] Gauge of all active long-running apiserver requests broken out by verb, \
         group, version, resource, scope and component.",
        Kind::Gauge,
    );
    for (resource, n) in &r.watches {
        t.sample(
            LONG,
            &[("resource", resource), ("verb", "WATCH")],
            *n as f64,
        );
    }
    const OBJECTS: &str = "apiserver_storage_objects";
    t.family(
        OBJECTS,
        "[STABLE] Number of stored objects at the time of last check split by kind.",
        Kind::Gauge,
    );
    for (resource, n) in objects {
        t.sample(OBJECTS, &[("resource", resource)], *n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_kube_apiservers() {
        assert_eq!(metric_verb("create"), "POST");
        assert_eq!(metric_verb("update"), "PUT");
        assert_eq!(metric_verb("watch"), "WATCH");
        assert_eq!(metric_verb("deletecollection"), "DELETECOLLECTION");
    }

    #[test]
    fn requests_durations_watches_and_objects_render() {
        let mut r = Registry::default();
        *r.requests.entry(("POST", ("pods", ""), 201)).or_default() += 2;
        *r.requests
            .entry(("POST", ("pods", "binding"), 201))
            .or_default() += 1;
        let h = r.durations.entry(("POST", ("pods", ""))).or_default();
        h.observe(0.01);
        h.observe(100.0);
        r.watches.insert("pods", 3);
        let mut t = Text::new();
        render(&r, &[("daemonsets.apps".into(), 4)], &mut t);
        let text = t.finish();
        for line in [
            "# TYPE apiserver_request_total counter",
            "apiserver_request_total{code=\"201\",resource=\"pods\",subresource=\"\",verb=\"POST\"} 2",
            "# TYPE apiserver_request_duration_seconds histogram",
            "apiserver_request_duration_seconds_bucket{resource=\"pods\",subresource=\"\",verb=\"POST\",le=\"0.005\"} 0",
            "apiserver_request_duration_seconds_bucket{resource=\"pods\",subresource=\"\",verb=\"POST\",le=\"0.025\"} 1",
            "apiserver_request_duration_seconds_bucket{resource=\"pods\",subresource=\"\",verb=\"POST\",le=\"60\"} 1",
            "apiserver_request_duration_seconds_bucket{resource=\"pods\",subresource=\"\",verb=\"POST\",le=\"+Inf\"} 2",
            "apiserver_request_duration_seconds_count{resource=\"pods\",subresource=\"\",verb=\"POST\"} 2",
            "apiserver_request_total{code=\"201\",resource=\"pods\",subresource=\"binding\",verb=\"POST\"} 1",
            "apiserver_longrunning_requests{resource=\"pods\",verb=\"WATCH\"} 3",
            "apiserver_storage_objects{resource=\"daemonsets.apps\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_watch_counts_until_its_body_is_dropped() {
        let open = || registry().watches.get("metricstestwatches").copied();
        let body = watching(
            "metricstestwatches",
            http_body_util::Full::new(bytes::Bytes::from_static(b"x"))
                .map_err(|e| match e {})
                .boxed(),
        );
        assert_eq!(open(), Some(1));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"x");
        assert_eq!(open(), Some(0));
    }

    /// A scrape counts the objects: it reads none whole (it decoded every object per scrape).
    #[tokio::test]
    async fn a_scrape_counts_objects_without_reading_them_whole() {
        use crate::server::controllers::counting::Counting;
        use crate::server::store::ObjectStore;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting::open(&dir));
        for name in ["a", "b", "c"] {
            let pod = serde_json::json!({"metadata": {"name": name, "namespace": "d"}});
            store.create("pods", "d", name, pod).await.unwrap();
        }
        let api = Api::new(store.clone(), Default::default());
        store.reset();
        let text = serve(&api, &User::internal("test")).await.unwrap();
        let line = "apiserver_storage_objects{resource=\"pods\"} 3";
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        assert_eq!(store.whole(), 0);
    }
}
