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
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

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
            tokio::select! {
                _ = daemonset::Controller::new(api.clone()).run() => {}
                _ = replicaset::Controller::new(api.clone(), clock.clone()).run() => {}
                _ = scheduler::Scheduler::new(api.clone(), clock.clone()).run() => {}
                _ = nodelifecycle::Controller::new(api.clone(), clock.clone(), nodes).run() => {}
                _ = serviceaccounts::run(&api) => {}
                _ = gc::run(api.clone(), clock.clone(), std::future::pending::<()>()) => {}
                _ = super::kinds::event::compact(api.clone(), clock, opts.event_ttl) => {}
            }
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

/// `first` and what else `rx` holds now, at most `max` results in all.
pub fn drain<T: Clone>(
    first: Result<T, RecvError>,
    rx: &mut broadcast::Receiver<T>,
    max: usize,
) -> Drained<T> {
    let mut d = Drained {
        events: vec![],
        lagged: false,
        closed: false,
    };
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(r) = next.take() {
        taken += 1;
        match r {
            Ok(ev) => d.events.push(ev),
            Err(RecvError::Lagged(_)) => d.lagged = true,
            Err(RecvError::Closed) => {
                d.closed = true;
                break;
            }
        }
        if taken >= max {
            break;
        }
        next = match rx.try_recv() {
            Ok(ev) => Some(Ok(ev)),
            Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
            Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
            Err(TryRecvError::Empty) => None,
        };
    }
    d
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

    /// A turn takes at most `max`, tells a lag once and stops at what the channel holds.
    #[tokio::test]
    async fn a_turn_takes_a_bounded_share_of_the_watch() {
        let (tx, mut rx) = broadcast::channel::<u32>(16);
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        let first = rx.recv().await;
        let d = drain(first, &mut rx, 4);
        assert_eq!(
            (d.events, d.lagged, d.closed),
            (vec![0, 1, 2, 3], false, false)
        );
        let first = rx.recv().await;
        let d = drain(first, &mut rx, 100);
        assert_eq!(
            (d.events, d.lagged, d.closed),
            (vec![4, 5, 6, 7, 8, 9], false, false)
        );
        // 40 sent into 16 places: lagged, then the 16 kept, bounded again
        for i in 0..40 {
            tx.send(i).unwrap();
        }
        let first = rx.recv().await;
        let d = drain(first, &mut rx, 10);
        assert!(d.lagged);
        assert_eq!(d.events, (24..33).collect::<Vec<_>>());
        let first = rx.recv().await;
        let d = drain(first, &mut rx, 100);
        assert_eq!((d.events, d.lagged), ((33..40).collect::<Vec<_>>(), false));
        // closed: what was left, then closed
        tx.send(7).unwrap();
        drop(tx);
        let first = rx.recv().await;
        let d = drain(first, &mut rx, 100);
        assert_eq!((d.events, d.lagged, d.closed), (vec![7], false, true));
    }
}
