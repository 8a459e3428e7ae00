//! The watch stream: one JSON line per event, filtered by the watcher's selectors (an object
//! that enters or leaves the selection is ADDED or DELETED for it, as in Kubernetes), as Table
//! rows when asked, with bookmarks, the initial-events-end bookmark of `sendInitialEvents`, and
//! 410 Gone for a watcher that falls behind.
//!
//! A watcher reads the store's history from its own cursor when the client takes the next line,
//! and holds nothing of it while it waits: a client that stops reading costs no memory, and once
//! the history moved past its cursor it is told 410 and relists. A watch from a resourceVersion
//! the store has not reached waits for it up to [`query::FRESHNESS_WAIT`], then gets kube-apiserver's
//! 504 "Too large resource version" as its one ERROR event.
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::watch as changes;

use super::auth::User;
use super::body::Body;
use super::query::{self, Filter, Query};
use super::resources::Resource;
use super::status::ApiError;
use super::store::{EventType, ObjectStore, StoreError, WatchEvent, WatchFrom};
use super::table;
use super::verbs::Api;
use crate::core::validation::FieldError;

/// How often a watch that asked for bookmarks gets one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);
/// A watch without timeoutSeconds ends after this long (clients re-watch).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// How many events of the history a watcher looks at per read.
const HISTORY_BATCH: usize = 256;

/// How one watcher renders events.
struct WatchRender {
    r: &'static Resource,
    /// `r.key()`, the resource the history is read for (made once: every event of the store
    /// is compared with it, for every watcher).
    key: String,
    /// The resource the client asked for (`r` unless it is served over `r`'s storage).
    shown: &'static Resource,
    /// How a stored object is shown to the client (None: as it is).
    present: Option<fn(&Value) -> Value>,
    ns: Option<String>,
    filter: Filter,
    table: bool,
}

fn json_line(v: &Value) -> Bytes {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

impl WatchRender {
    fn line(&self, event_type: &str, obj: &Value) -> Bytes {
        let object = if self.table {
            table::table(self.r, &[obj], None, "Metadata", Utc::now())
        } else if let Some(present) = self.present {
            present(obj)
        } else {
            obj.clone()
        };
        json_line(&json!({"type": event_type, "object": object}))
    }

    /// The line this watcher sends for `ev`, if any.
    fn render(&self, ev: &WatchEvent) -> Option<Bytes> {
        if ev.resource != self.key || self.ns.as_ref().is_some_and(|ns| *ns != ev.namespace) {
            return None;
        }
        if self.filter.is_empty() {
            if self.table || self.present.is_some() {
                return Some(self.line(ev.event_type.as_str(), &ev.object));
            }
            return Some(ev.line.clone());
        }
        let now = self.filter.matches(&ev.object);
        let before = ev.prev.as_ref().is_some_and(|p| self.filter.matches(p));
        let ty = match (ev.event_type, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Deleted, _, true) => "DELETED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        if ty == ev.event_type.as_str() && !self.table && self.present.is_none() {
            return Some(ev.line.clone());
        }
        Some(self.line(ty, &ev.object))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.shown.kind, "apiVersion": self.shown.api_version(),
            "metadata": meta});
        json_line(&json!({"type": "BOOKMARK", "object": obj}))
    }
}

fn error_line(e: &ApiError) -> Bytes {
    json_line(&json!({"type": "ERROR", "object": e.to_status()}))
}

struct WatchState {
    render: WatchRender,
    store: Arc<dyn ObjectStore>,
    /// The value the selector asks the resource's indexed field to equal (a node's name for
    /// its pods): the watch is woken by, and reads, those objects' events only.
    trigger: Option<String>,
    pending: VecDeque<Bytes>,
    /// The store's resourceVersion as it changes; None once the watch ended with an error.
    changes: Option<changes::Receiver<u64>>,
    /// The history has been read through this resourceVersion.
    cursor: u64,
    /// The watch's end, one timer for its whole life (a `sleep_until` made at each wait would
    /// enter the runtime's timer wheel and leave it again for every event, for every watcher).
    deadline: Pin<Box<tokio::time::Sleep>>,
    bookmarks: Option<tokio::time::Interval>,
}

impl WatchState {
    /// Renders what the history holds after the cursor (a batch); false when it held nothing.
    fn read_history(&mut self) -> bool {
        let ns = self.render.ns.as_deref();
        let key = &self.render.key;
        let found = match &self.trigger {
            Some(value) => {
                self.store
                    .events_after_trigger(self.cursor, key, value, ns, HISTORY_BATCH)
            }
            None => self.store.events_after(self.cursor, key, ns, HISTORY_BATCH),
        };
        match found {
            Ok(found) => {
                let progressed = found.through > self.cursor;
                self.cursor = found.through;
                for ev in &found.events {
                    if let Some(line) = self.render.render(ev) {
                        self.pending.push_back(line);
                    }
                }
                progressed
            }
            Err(e) => {
                let e = match e {
                    StoreError::Expired { .. } => {
                        tracing::debug!(
                            resource = self.render.key.as_str(),
                            "watcher fell behind the history"
                        );
                        ApiError::gone("the watch fell too far behind: relist and watch again")
                    }
                    other => ApiError::internal(other.to_string()),
                };
                self.pending.push_back(error_line(&e));
                self.changes = None;
                true
            }
        }
    }
}

async fn next_line(mut st: WatchState) -> Option<(Result<Frame<Bytes>, Infallible>, WatchState)> {
    loop {
        if let Some(line) = st.pending.pop_front() {
            return Some((Ok(Frame::data(line)), st));
        }
        // Marked seen before reading: a write from here on wakes the wait below.
        st.changes.as_mut()?.borrow_and_update();
        if st.read_history() {
            continue;
        }
        let changes = st.changes.as_mut()?;
        let tick = async {
            match st.bookmarks.as_mut() {
                Some(iv) => {
                    iv.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            _ = st.deadline.as_mut() => return None,
            _ = tick => {
                // read through first: a node's pod watch is not woken by other pods' events,
                // so its cursor moves on here and its bookmark tells a current resourceVersion
                st.read_history();
                if st.changes.is_some() {
                    let line = st.render.bookmark(st.cursor, false);
                    st.pending.push_back(line);
                }
            }
        }
    }
}

/// kube-apiserver's `validateWatchOptions` (with the WatchList feature on), and the bookmarks that
/// `sendInitialEvents` needs to tell where the initial events end.
fn validate(query: &Query) -> Result<(), ApiError> {
    const MATCH: &str = "resourceVersionMatch";
    let rv_match = query.get(MATCH).unwrap_or("");
    let send_initial = query.get("sendInitialEvents");
    let mut errs = Vec::new();
    if send_initial.is_some() && rv_match != "NotOlderThan" {
        errs.push(FieldError::forbidden(
            MATCH,
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if send_initial == Some("true") && !query.flag("allowWatchBookmarks") {
        errs.push(FieldError::forbidden(
            "allowWatchBookmarks",
            "sendInitialEvents requires setting allowWatchBookmarks to true",
        ));
    }
    if !rv_match.is_empty() {
        if send_initial.is_none() {
            errs.push(FieldError::forbidden(
                MATCH,
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if rv_match != "NotOlderThan" {
            errs.push(FieldError::not_supported(
                MATCH,
                rv_match,
                &["NotOlderThan"],
            ));
        }
        if query.get("continue").is_some_and(|c| !c.is_empty()) {
            errs.push(FieldError::forbidden(
                MATCH,
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    match errs.is_empty() {
        true => Ok(()),
        false => Err(ApiError::invalid("ListOptions.meta.k8s.io", "", &errs)),
    }
}

/// When a watch of `timeout` ends; a timeoutSeconds beyond what the clock holds would overflow,
/// so the default applies to it.
fn deadline(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + DEFAULT_WATCH_TIMEOUT)
}

/// `GET ...?watch=1`: a streamed response of watch events.
pub async fn watch(
    api: Arc<Api>,
    user: &User,
    r: &'static Resource,
    ns: Option<&str>,
    query: &Query,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    watch_converted(api, user, r, r, None, ns, query, accept).await
}

/// A watch of `r`'s stored objects shown as `shown` (each through `present`).
#[allow(clippy::too_many_arguments)]
pub async fn watch_converted(
    api: Arc<Api>,
    user: &User,
    r: &'static Resource,
    shown: &'static Resource,
    present: Option<fn(&Value) -> Value>,
    ns: Option<&str>,
    query: &Query,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(query)?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let allow_bookmarks = query.flag("allowWatchBookmarks");
    validate(query)?;
    let send_initial = query.get("sendInitialEvents");
    let rv = query::resource_version(query)?;
    let from = match (rv, send_initial) {
        (_, Some("true")) => WatchFrom::Current { initial: true },
        (None, Some("false")) => WatchFrom::Current { initial: false },
        (None, _) => WatchFrom::Current { initial: true },
        (Some(rv), _) => WatchFrom::After(rv),
    };
    let render = WatchRender {
        r,
        key: r.key(),
        shown,
        present,
        ns: ns.map(str::to_string),
        filter,
        table: table::wants_table(accept),
    };
    let mut pending = VecDeque::new();
    let store = api.store.clone();
    // woken by events of this resource only (not by every write of the store), and of a
    // node's pods only for a watch of that node's pods
    let trigger = super::store::trigger_field(&render.key)
        .and_then(|field| render.filter.field_equals(field))
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let mut changes = Some(match &trigger {
        Some(value) => store.changes_of_trigger(&render.key, value),
        None => store.changes_of(&render.key),
    });
    // the initial events of `NotOlderThan` a resourceVersion wait for it too
    let started = match rv {
        Some(rv) => query::fresh_enough(&*store, rv).await,
        None => Ok(()),
    };
    let started = match started {
        Ok(()) => api.watch(user, r, ns, from).await,
        Err(e) => Err(e),
    };
    let cursor = match started {
        Ok(w) => {
            for ev in &w.initial {
                if let Some(line) = render.render(ev) {
                    pending.push_back(line);
                }
            }
            if send_initial == Some("true") {
                pending.push_back(render.bookmark(w.rv, true));
            }
            // The history is read from the cursor: the broadcast receiver is not needed.
            drop(w.rx);
            w.rv
        }
        // Too old or too new a resourceVersion is told in the stream, as kube-apiserver does.
        Err(e) if e.code == 410 || e.code == 504 => {
            pending.push_back(error_line(&e));
            changes = None;
            0
        }
        Err(e) => return Err(e),
    };
    let bookmarks = allow_bookmarks.then(|| {
        let mut iv = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        iv
    });
    let state = WatchState {
        trigger,
        render,
        store,
        pending,
        changes,
        cursor,
        deadline: Box::pin(tokio::time::sleep_until(deadline(timeout))),
        bookmarks,
    };
    let stream = futures::stream::unfold(state, next_line);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::super::kinds::NODES;
    use super::super::store::SqliteStore;
    use super::*;

    async fn watch_lines(
        api: &Arc<Api>,
        resp: Response<Body>,
        writes: Vec<(&str, Value)>,
    ) -> Vec<Value> {
        for (name, obj) in writes {
            match api.store.get("nodes", "", name).await.unwrap() {
                Some(_) => api
                    .store
                    .update("nodes", "", name, obj, None)
                    .await
                    .unwrap(),
                None => api.store.create("nodes", "", name, obj).await.unwrap(),
            };
        }
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(3), body.frame()).await
        {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push(serde_json::from_slice::<Value>(line).unwrap());
            }
        }
        out
    }

    fn node(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
    }

    fn test_api(dir: &tempfile::TempDir, ring: usize) -> Arc<Api> {
        let store = SqliteStore::open(&dir.path().join("s.db"), ring).unwrap();
        Arc::new(Api::new(Arc::new(store), Default::default()))
    }

    async fn start(api: &Arc<Api>, query: &str) -> Response<Body> {
        let q = Query::parse(Some(query));
        watch(api.clone(), &User::internal("test"), &NODES, None, &q, "")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn label_selected_watch_sees_objects_enter_and_leave() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        let resp = start(&api, "watch=1&timeoutSeconds=1&labelSelector=a%3Db").await;
        let lines = watch_lines(
            &api,
            resp,
            vec![
                ("n1", node("n1", json!({"a": "b"}))),
                ("n1", node("n1", json!({"a": "c"}))),
                ("n2", node("n2", json!({}))),
                ("n1", node("n1", json!({"a": "b", "x": "y"}))),
                ("n1", node("n1", json!({"a": "b"}))),
            ],
        )
        .await;
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| {
                (
                    l["type"].as_str().unwrap(),
                    l["object"]["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("ADDED", "n1"),
                ("DELETED", "n1"),
                ("ADDED", "n1"),
                ("MODIFIED", "n1")
            ]
        );
    }

    #[tokio::test]
    async fn initial_events_end_with_a_bookmark() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        api.store
            .create("nodes", "", "n1", node("n1", json!({})))
            .await
            .unwrap();
        let resp = start(
            &api,
            "watch=1&timeoutSeconds=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
        )
        .await;
        let lines = watch_lines(&api, resp, vec![]).await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["type"], "ADDED");
        assert_eq!(lines[1]["type"], "BOOKMARK");
        assert_eq!(lines[1]["object"]["metadata"]["resourceVersion"], "1");
        assert_eq!(
            lines[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
    }

    async fn next_event(body: &mut Body) -> Value {
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        serde_json::from_slice(&frame).unwrap()
    }

    /// `allowWatchBookmarks`: a BOOKMARK at the watcher's resourceVersion every
    /// [`BOOKMARK_INTERVAL`], between the events; none for a watcher that did not ask.
    #[tokio::test(start_paused = true)]
    async fn bookmarks_come_every_interval_to_those_who_ask() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        let t0 = tokio::time::Instant::now();
        let mut body = start(&api, "watch=1&allowWatchBookmarks=true")
            .await
            .into_body();
        let mut plain = start(&api, "watch=1&timeoutSeconds=40").await.into_body();
        api.store
            .create("nodes", "", "n1", node("n1", json!({})))
            .await
            .unwrap();
        assert_eq!(next_event(&mut body).await["type"], "ADDED");
        let bookmark = next_event(&mut body).await;
        assert_eq!(t0.elapsed(), BOOKMARK_INTERVAL);
        assert_eq!(bookmark["type"], "BOOKMARK");
        assert_eq!(bookmark["object"]["kind"], "Node");
        assert_eq!(bookmark["object"]["metadata"]["resourceVersion"], "1");
        api.store
            .create("nodes", "", "n2", node("n2", json!({})))
            .await
            .unwrap();
        assert_eq!(next_event(&mut body).await["type"], "ADDED");
        let bookmark = next_event(&mut body).await;
        assert_eq!(t0.elapsed(), 2 * BOOKMARK_INTERVAL);
        assert_eq!(bookmark["object"]["metadata"]["resourceVersion"], "2");
        let mut types = Vec::new();
        while let Some(frame) = plain.frame().await {
            let line: Value = serde_json::from_slice(&frame.unwrap().into_data().unwrap()).unwrap();
            types.push(line["type"].as_str().unwrap().to_string());
        }
        assert_eq!(types, ["ADDED", "ADDED"], "no bookmarks unasked");
    }

    /// A node's watch of its own pods (`fieldSelector=spec.nodeName=a`, the indexed trigger)
    /// gets a's pods only, and its bookmark tells the store's current resourceVersion although
    /// the other nodes' pods never woke it.
    #[tokio::test(start_paused = true)]
    async fn a_node_pod_watch_gets_its_pods_and_current_bookmarks() {
        use super::super::kinds::PODS;
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        let q = Query::parse(Some(
            "watch=1&allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Da",
        ));
        let mut body = watch(api.clone(), &User::internal("test"), &PODS, None, &q, "")
            .await
            .unwrap()
            .into_body();
        let pod = |name: &str, node: &str| {
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})
        };
        for (name, node) in [("b1", "b"), ("a1", "a"), ("b2", "b"), ("b3", "b")] {
            api.store
                .create("pods", "default", name, pod(name, node))
                .await
                .unwrap();
        }
        let added = next_event(&mut body).await;
        assert_eq!(added["type"], "ADDED");
        assert_eq!(added["object"]["metadata"]["name"], "a1");
        let bookmark = next_event(&mut body).await;
        assert_eq!(bookmark["type"], "BOOKMARK");
        assert_eq!(bookmark["object"]["metadata"]["resourceVersion"], "4");
    }

    /// An event is serialised once, by the store: every watcher that shows it as it is sends
    /// the same bytes (no copy per watcher), and a label-selected one that sees it unchanged too.
    #[tokio::test]
    async fn watchers_send_the_event_serialised_once() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        let mut bodies = Vec::new();
        for q in ["watch=1", "watch=1", "watch=1&labelSelector=a%3Db"] {
            bodies.push(start(&api, q).await.into_body());
        }
        api.store
            .create("nodes", "", "n1", node("n1", json!({"a": "b"})))
            .await
            .unwrap();
        let mut frames = Vec::new();
        for body in &mut bodies {
            frames.push(body.frame().await.unwrap().unwrap().into_data().unwrap());
        }
        let stored = api.store.events_after(0, "nodes", None, 10).unwrap();
        let line = &stored.events[0].line;
        for frame in &frames {
            assert_eq!(frame, line);
            assert_eq!(
                frame.as_ptr(),
                line.as_ptr(),
                "the store's bytes, not a copy"
            );
        }
    }

    #[tokio::test]
    async fn watch_options_are_validated_as_kube_apiserver_does() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        let refused = |q: &'static str| {
            let api = api.clone();
            async move {
                let q = Query::parse(Some(q));
                let Err(e) = watch(api, &User::internal("test"), &NODES, None, &q, "").await else {
                    panic!("not refused");
                };
                assert_eq!(e.code, 422, "{}", e.message);
                e.message
            }
        };
        let prefix = "ListOptions.meta.k8s.io \"\" is invalid: ";
        assert_eq!(
            refused("watch=1&sendInitialEvents=true&allowWatchBookmarks=true").await,
            format!("{prefix}resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")
        );
        assert_eq!(
            refused("watch=1&resourceVersionMatch=NotOlderThan").await,
            format!("{prefix}resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided")
        );
        assert_eq!(
            refused("watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan").await,
            format!("{prefix}allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true")
        );
        assert_eq!(
            refused("watch=1&sendInitialEvents=false&allowWatchBookmarks=true&resourceVersionMatch=Exact").await,
            format!("{prefix}[resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, resourceVersionMatch: Unsupported value: \"Exact\": supported values: \"NotOlderThan\"]")
        );
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_dropped_with_410() {
        let dir = tempfile::tempdir().unwrap();
        // Ring of 4: the broadcast buffer holds 16 events.
        let api = test_api(&dir, 4);
        let resp = start(&api, "watch=1&resourceVersion=0").await;
        let writes: Vec<(String, Value)> = (0..40)
            .map(|i| (format!("n{i}"), node(&format!("n{i}"), json!({}))))
            .collect();
        let lines = watch_lines(
            &api,
            resp,
            writes
                .iter()
                .map(|(n, v)| (n.as_str(), v.clone()))
                .collect(),
        )
        .await;
        let last = lines.last().unwrap();
        assert_eq!(last["type"], "ERROR");
        assert_eq!(last["object"]["code"], 410);
        assert!(lines.len() < 40);
    }

    /// Found writing fuzz/'s server target (on the fuzzing branch, in the old api.rs):
    /// `timeoutSeconds=18446744073709551615` overflowed the deadline and panicked the request.
    #[tokio::test(start_paused = true)]
    async fn a_watch_timeout_beyond_the_clock_is_the_default_one() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        let start_at = tokio::time::Instant::now();
        let resp = start(&api, "watch=1&timeoutSeconds=18446744073709551615").await;
        assert!(resp.into_body().frame().await.is_none());
        let lasted = start_at.elapsed();
        assert!(
            (DEFAULT_WATCH_TIMEOUT..DEFAULT_WATCH_TIMEOUT + Duration::from_secs(1))
                .contains(&lasted),
            "{lasted:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_from_the_future_is_told_504_after_waiting_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        let start_at = tokio::time::Instant::now();
        let resp = start(&api, "watch=1&resourceVersion=99").await;
        assert_eq!(start_at.elapsed(), query::FRESHNESS_WAIT);
        let lines = watch_lines(&api, resp, vec![]).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["type"], "ERROR");
        let status = &lines[0]["object"];
        assert_eq!(status["code"], 504);
        assert_eq!(status["reason"], "Timeout");
        assert_eq!(
            status["message"],
            "Timeout: Too large resource version: 99, current: 0"
        );
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
        // one the store reaches while the watch waits is served from there
        let writer = api.clone();
        let waiting = tokio::spawn(async move {
            start(&writer, "watch=1&resourceVersion=1&timeoutSeconds=1").await
        });
        api.store
            .create("nodes", "", "n1", node("n1", json!({})))
            .await
            .unwrap();
        let resp = waiting.await.unwrap();
        let lines = watch_lines(&api, resp, vec![("n2", node("n2", json!({})))]).await;
        let names: Vec<&str> = lines
            .iter()
            .map(|l| l["object"]["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["n2"]);
    }

    #[tokio::test]
    async fn a_watcher_that_reads_nothing_holds_no_history() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 4);
        let resp = start(&api, "watch=1&resourceVersion=0").await;
        let mut body = resp.into_body();
        api.store
            .create("nodes", "", "first", node("first", json!({})))
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("\"first\""));
        for i in 0..8 {
            let n = format!("n{i}");
            api.store
                .create("nodes", "", &n, node(&n, json!({})))
                .await
                .unwrap();
        }
        // the only references to the events left are the history's own (4)
        let found = api.store.events_after(5, "nodes", None, 10).unwrap();
        assert_eq!(found.events.len(), 4);
        for e in &found.events {
            assert_eq!(Arc::strong_count(e), 2, "the history's and this read's");
        }
        let next = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let line: Value = serde_json::from_slice(&next).unwrap();
        assert_eq!(line["type"], "ERROR");
        assert_eq!(line["object"]["code"], 410);
        assert!(body.frame().await.is_none());
    }
}
