//! The controllers inside the server, as kube-controller-manager runs them against the API:
//! every read and write goes through the verbs (`super::verbs`) under the controller's own
//! internal identity, so authorization, validation and the watch see them like any client's.
//!
//! - `daemonset/`: the DaemonSet controller: claims its pods, creates one per node that should
//!   run it, deletes those that may not stay, rolls updates out within maxUnavailable, keeps the
//!   ControllerRevisions and the status;
//! - `claim`: the ControllerRefManager (adopt orphans that match, release owned pods that no
//!   longer match);
//! - `gc`: the garbage collector: dependents follow their owners' deletion (background,
//!   foreground, orphan);
//! - `nodelifecycle`: node health from Leases and heartbeats (Ready=Unknown, the unreachable and
//!   not-ready taints, pods marked not ready) and the NoExecute taint eviction;
//! - `replicaset`: the ReplicaSet controller: claims its pods, creates unbound pods up to
//!   `replicas`, deletes the surplus in upstream's victim order, keeps the status;
//! - `scheduler`: binds pending pods to nodes (`core::scheduler` decides) through the
//!   `pods/binding` write, or marks them `PodScheduled=False` with the reason;
//! - `serviceaccounts`: a `default` ServiceAccount in every namespace;
//! - `queue`: the work queue keyed by namespace/name;
//! - `leader`: leader election on the Lease `kube-system/daemonset-agent-controllers`
//!   (client-go's semantics): every controller above, and the events' TTL compaction, runs only
//!   while this server leads, and is dropped when it stops leading.
//!
//! [`run`] is one future without global state: the leader elector makes it anew each time this
//! server starts leading.
pub mod claim;
#[cfg(test)]
pub(crate) mod counting;
pub mod daemonset;
pub mod gc;
pub mod leader;
pub mod nodelifecycle;
mod queue;
pub mod replicaset;
pub mod scheduler;
pub mod serviceaccounts;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use super::store::WatchEvent;
use super::verbs::Api;

/// What the controllers are started with.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: nodelifecycle::Options,
    pub leader: leader::Options,
    /// How long an event is kept after its last write (`--event-ttl`).
    pub event_ttl: std::time::Duration,
}

/// Runs the controllers while this server leads (always, without leader election) until `stop`
/// completes.
pub async fn run(api: Arc<Api>, opts: Options, stop: impl Future<Output = ()>) {
    let clock = crate::agent::clock::Clock::system();
    let work = || {
        let (api, clock, nodes) = (api.clone(), clock.clone(), opts.nodes);
        async move {
            // each controller a task of its own, as kube-controller-manager's goroutines: one
            // controller's long turn neither stops the others nor keeps them off the other
            // cores; all are aborted when the set is dropped (leadership lost)
            let mut all = tokio::task::JoinSet::new();
            all.spawn(daemonset::Controller::new(api.clone()).run());
            all.spawn(replicaset::Controller::new(api.clone(), clock.clone()).run());
            all.spawn(scheduler::Scheduler::new(api.clone(), clock.clone()).run());
            all.spawn(nodelifecycle::Controller::new(api.clone(), clock.clone(), nodes).run());
            let sa = api.clone();
            all.spawn(async move { serviceaccounts::run(&sa).await });
            all.spawn(gc::run(
                api.clone(),
                clock.clone(),
                std::future::pending::<()>(),
            ));
            all.spawn(super::kinds::event::compact(
                api.clone(),
                clock,
                opts.event_ttl,
            ));
            // one returns: the store closed (the server stops)
            all.join_next().await;
        }
    };
    let lease = opts.leader.clone();
    tokio::select! {
        _ = leader::run(api.clone(), clock.clone(), opts.leader.clone(), work) => {}
        _ = stop => leader::release(&api, clock, &lease).await,
    }
}

/// The batch sizes of upstream's `slowStartBatch` for `n` calls: 1, 2, 4, ... (what is left in
/// the last one).
fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut left, mut size) = (n, 1);
    while left > 0 {
        let b = size.min(left);
        out.push(b);
        left -= b;
        size *= 2;
    }
    out
}

/// upstream's `slowStartBatch`: `call(0)` .. `call(n - 1)` in batches sent at once (each write
/// waits on the store and its fan-out, so a hundred one after another took most of a scale-up),
/// the batches doubling from 1 while all their calls succeed. The results of the calls sent, in
/// order: fewer than `n` when a batch had an error (a template the API refuses is not sent once
/// per node; the sync that called is retried with back-off).
async fn slow_start<T, E, Fut>(n: usize, mut call: impl FnMut(usize) -> Fut) -> Vec<Result<T, E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut out = Vec::with_capacity(n);
    for batch in slow_start_batches(n) {
        let from = out.len();
        let sent = futures::future::join_all((from..from + batch).map(&mut call)).await;
        out.extend(sent);
        if out[from..].iter().any(Result::is_err) {
            break;
        }
    }
    out
}

/// The labels of an object.
fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The string at `ptr` in `v`, or "".
fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The controller owner reference of an object: its kind, name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRef {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// `metav1.GetControllerOf`: the owner reference with `controller: true`, if any.
pub fn controller_of(obj: &Value) -> Option<ControllerRef> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|o| ControllerRef {
            kind: s(o, "/kind").to_string(),
            name: s(o, "/name").to_string(),
            uid: s(o, "/uid").to_string(),
        })
}

/// The most a controller's loop takes from its watch in one turn before it syncs what that
/// queued: a watch of the whole store brings every Lease renewal too (hundreds a second with
/// thousands of nodes), and a loop that drained it for as long as it had events never reached
/// its queue (the DaemonSet controller created no pod for minutes in a 5000-node run).
pub const DRAIN_MAX: usize = 1024;

/// What one turn of a controller's loop took from its watch.
#[derive(Debug, PartialEq)]
pub struct Drained<T> {
    pub events: Vec<T>,
    /// The watch lost events (once, however often): the controller relists.
    pub lagged: bool,
    /// The store closed the watch (the server stops).
    pub closed: bool,
}

/// A controller's watch of its resources: their events after a cursor, read from the store's
/// history (as the API's own watches, `server::watch`), woken only by changes of those
/// resources. A controller that fell behind resumes from its cursor while the history still
/// holds it, as client-go's reflector resumes its watch from its resourceVersion, and relists
/// only when its events left the history (`lagged`: kube-apiserver's 410). With a broadcast of
/// every event, each lag meant a relist, and at 5000 nodes a relist of every pod and node took
/// long enough for the next lag: the scheduler and the node-lifecycle controller relisted over
/// and over and the DaemonSet controller created nothing for minutes.
pub struct Feed {
    api: Arc<Api>,
    resources: Vec<String>,
    /// Per resource, the store's resourceVersion when it last had an event of it.
    changes: Vec<tokio::sync::watch::Receiver<u64>>,
    /// The history has been read through this resourceVersion.
    cursor: u64,
}

impl Feed {
    /// A feed of `resources` from now on, for `user` (authorized to watch each).
    pub fn new(
        api: Arc<Api>,
        user: &crate::server::auth::User,
        resources: &[&'static crate::server::resources::Resource],
    ) -> Result<Feed, crate::server::status::ApiError> {
        let cursor = api.watch_from_now(user, resources)?;
        let changes = resources
            .iter()
            .map(|r| api.store.changes_of(&r.key()))
            .collect();
        Ok(Feed {
            resources: resources.iter().map(|r| r.key()).collect(),
            api,
            changes,
            cursor,
        })
    }

    /// The store's resourceVersion now: call before a relist, and [`Feed::relisted`] with it
    /// after (the events of the relist's time are delivered again, as a watch opened before a
    /// list delivers them).
    pub fn now(&self) -> u64 {
        *self.api.store.changes().borrow()
    }

    /// Reads on from `rv` (taken by [`Feed::now`] before a relist).
    pub fn relisted(&mut self, rv: u64) {
        self.cursor = rv;
    }

    /// The next events of the feed's resources, oldest first, among at most `max` of the
    /// history's events; waits until there is one. Cancel-safe: the cursor moves only when
    /// the events read are returned.
    pub async fn recv(&mut self, max: usize) -> Drained<Arc<WatchEvent>> {
        loop {
            for c in &mut self.changes {
                c.borrow_and_update();
            }
            let before = self.cursor;
            let d = self.read(max);
            if !d.events.is_empty() || d.lagged {
                return d;
            }
            if self.cursor > before {
                // other resources' events only: read on
                continue;
            }
            let changed = self.changes.iter_mut().map(|c| Box::pin(c.changed()));
            if futures::future::select_all(changed).await.0.is_err() {
                return Drained {
                    events: vec![],
                    lagged: false,
                    closed: true,
                };
            }
        }
    }

    /// The events after the cursor among the next `max` of the history, all resources merged
    /// in order; `lagged` when the history no longer holds one of the resources' events after
    /// the cursor (or the store went back in time): the caller relists.
    fn read(&mut self, max: usize) -> Drained<Arc<WatchEvent>> {
        let mut d = Drained {
            events: vec![],
            lagged: false,
            closed: false,
        };
        let mut through = u64::MAX;
        for key in &self.resources {
            match self.api.store.events_after(self.cursor, key, None, max) {
                Ok(found) => {
                    // each read looks at the same first `max` events after the cursor, unless
                    // the history grew between two reads: keep what all of them looked at
                    through = through.min(found.through);
                    d.events.extend(found.events);
                }
                Err(e) => {
                    tracing::debug!(resource = %key, cursor = self.cursor, error = %e, "a controller's feed left the history: relisting");
                    d.lagged = true;
                    d.events.clear();
                    return d;
                }
            }
        }
        d.events.retain(|e| e.rv <= through);
        d.events.sort_by_key(|e| e.rv);
        if through != u64::MAX {
            self.cursor = self.cursor.max(through);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_go_in_slow_start_batches() {
        let cases: [(usize, &[usize]); 5] = [
            (0, &[]),
            (1, &[1]),
            (3, &[1, 2]),
            (10, &[1, 2, 4, 3]),
            (100, &[1, 2, 4, 8, 16, 32, 37]),
        ];
        for (n, want) in cases {
            assert_eq!(slow_start_batches(n), want, "{n}");
        }
    }

    /// The batch with the first error is the last one sent; every call of it still reports.
    #[tokio::test]
    async fn slow_start_stops_after_the_first_batch_with_an_error() {
        let cases: [(usize, Option<usize>, usize); 5] = [
            // (calls, the one that fails, calls sent)
            (10, None, 10),
            (10, Some(0), 1),
            (10, Some(1), 3),
            (10, Some(4), 7),
            (10, Some(8), 10),
        ];
        for (n, fails, sent) in cases {
            let got = slow_start(n, |i| async move {
                if Some(i) == fails {
                    Err(i)
                } else {
                    Ok(i)
                }
            })
            .await;
            assert_eq!(got.len(), sent, "{n} {fails:?}");
            for (i, r) in got.iter().enumerate() {
                let want = if Some(i) == fails { Err(i) } else { Ok(i) };
                assert_eq!(*r, want, "{n} {fails:?}");
            }
        }
    }

    mod feed {
        use super::super::*;
        use crate::server::auth::User;
        use crate::server::kinds::{CONFIG_MAPS, LEASES, NAMESPACES};
        use crate::server::query::WriteOpts;
        use crate::server::store::SqliteStore;
        use serde_json::json;

        struct Rig {
            api: Arc<Api>,
            user: User,
            _dir: tempfile::TempDir,
        }

        impl Rig {
            /// An API on a store whose history keeps `history` events.
            async fn new(history: usize) -> Rig {
                let dir = tempfile::tempdir().unwrap();
                let store = SqliteStore::open(&dir.path().join("s.db"), history).unwrap();
                let api = Arc::new(Api::new(Arc::new(store), Default::default()));
                let user = User::internal("test");
                let ns = json!({"metadata": {"name": "default"}});
                api.create(&user, &NAMESPACES, None, ns, WriteOpts::INTERNAL)
                    .await
                    .unwrap();
                Rig {
                    api,
                    user,
                    _dir: dir,
                }
            }

            async fn write(&self, r: &'static crate::server::resources::Resource, name: &str) {
                let obj = json!({"metadata": {"name": name, "namespace": "default"}});
                self.api
                    .create(&self.user, r, Some("default"), obj, WriteOpts::INTERNAL)
                    .await
                    .unwrap();
            }

            fn feed(&self, resources: &[&'static crate::server::resources::Resource]) -> Feed {
                Feed::new(self.api.clone(), &self.user, resources).unwrap()
            }
        }

        fn names(d: &Drained<Arc<WatchEvent>>) -> Vec<&str> {
            d.events.iter().map(|e| e.name.as_str()).collect()
        }

        /// Only the feed's resources, oldest first, however many other events came between;
        /// a turn looks at a bounded share of the history.
        #[tokio::test]
        async fn a_feed_reads_its_resources_in_order_in_bounded_turns() {
            let rig = Rig::new(1000).await;
            let mut feed = rig.feed(&[&CONFIG_MAPS, &NAMESPACES]);
            rig.write(&CONFIG_MAPS, "a").await;
            for i in 0..10 {
                rig.write(&LEASES, &format!("l{i}")).await;
            }
            rig.write(&CONFIG_MAPS, "b").await;
            let ns = json!({"metadata": {"name": "other"}});
            rig.api
                .create(&rig.user, &NAMESPACES, None, ns, WriteOpts::INTERNAL)
                .await
                .unwrap();
            rig.write(&CONFIG_MAPS, "c").await;
            let d = feed.recv(4).await;
            assert_eq!((names(&d), d.lagged, d.closed), (vec!["a"], false, false));
            let d = feed.recv(4).await;
            assert_eq!(names(&d), ["b"]);
            let d = feed.recv(100).await;
            assert_eq!(names(&d), ["other", "c"]);
        }

        /// A feed that falls behind resumes from its cursor while the history holds its
        /// events (another resource's churn dropping out of the history does not matter), and
        /// is told to relist once its own events left; after the relist it reads on.
        #[tokio::test]
        async fn a_feed_behind_resumes_from_the_history_and_relists_only_past_it() {
            let rig = Rig::new(8).await;
            let mut feed = rig.feed(&[&CONFIG_MAPS]);
            rig.write(&CONFIG_MAPS, "a").await;
            assert_eq!(names(&feed.recv(100).await), ["a"]);
            // Lease churn past the history's bound: nothing of the feed's was dropped
            for i in 0..20 {
                rig.write(&LEASES, &format!("l{i}")).await;
            }
            rig.write(&CONFIG_MAPS, "b").await;
            let d = feed.recv(100).await;
            assert_eq!((names(&d), d.lagged), (vec!["b"], false));
            // its own events past the bound: a relist, then on from where it was taken
            for i in 0..20 {
                rig.write(&CONFIG_MAPS, &format!("c{i}")).await;
            }
            let d = feed.recv(100).await;
            assert!(d.lagged && d.events.is_empty(), "{:?}", names(&d));
            let at = feed.now();
            feed.relisted(at);
            rig.write(&CONFIG_MAPS, "d").await;
            let d = feed.recv(100).await;
            assert_eq!((names(&d), d.lagged), (vec!["d"], false));
        }

        /// A feed waits for an event of its resources: another resource's write does not
        /// return it empty-handed.
        #[tokio::test]
        async fn a_feed_waits_for_its_own_resources() {
            let rig = Rig::new(1000).await;
            let mut feed = rig.feed(&[&CONFIG_MAPS]);
            let reader = tokio::spawn(async move { feed.recv(100).await });
            rig.write(&LEASES, "l").await;
            tokio::task::yield_now().await;
            rig.write(&CONFIG_MAPS, "a").await;
            let d = reader.await.unwrap();
            assert_eq!((names(&d), d.lagged, d.closed), (vec!["a"], false, false));
        }
    }
}
