//! The watch cache's behaviour through its [`ObjectStore`] interface.
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::*;
use crate::server::store::{Backend, Change, Expect};

/// A backend others write: only its feed, which the test drives.
struct Driven {
    feed: Mutex<Option<mpsc::Receiver<Change>>>,
}

#[async_trait::async_trait]
impl Backend for Driven {
    async fn put(&self, _: &Key, _: Value, _: Expect) -> Result<Value, StoreError> {
        Err(StoreError::Worker("read only".into()))
    }
    async fn delete(&self, _: &Key, _: Option<u64>) -> Result<(u64, Option<Value>), StoreError> {
        Err(StoreError::Worker("read only".into()))
    }
    fn feed(&self, _: u64) -> Option<mpsc::Receiver<Change>> {
        lock(&self.feed).take()
    }
}

fn node(name: &str, rv: u64) -> (Key, Value) {
    (
        key("nodes", "", name),
        json!({"kind": "Node", "metadata": {"name": name, "resourceVersion": rv.to_string()}}),
    )
}

async fn next(rx: &mut broadcast::Receiver<Arc<WatchEvent>>) -> (EventType, String, u64) {
    let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event")
        .expect("the feed is open");
    (e.event_type, e.name.clone(), e.rv)
}

fn lease(name: &str, rv: u64) -> (Key, Value) {
    (
        key("leases.coordination.k8s.io", "kube-node-lease", name),
        json!({"kind": "Lease", "metadata": {"name": name, "resourceVersion": rv.to_string()}}),
    )
}

/// A watch of one resource is woken by that resource's events only, and resumes past other
/// resources' events the history's bounds dropped (the scale benchmark: 5000 nodes' Lease
/// renewals woke every pod and DaemonSet watcher, and pushed their cursors out of the history).
#[tokio::test]
async fn a_resource_watch_is_not_woken_nor_expired_by_other_resources() {
    let (tx, rx) = mpsc::channel(64);
    let backend = Driven {
        feed: Mutex::new(Some(rx)),
    };
    let store = Store::new(Arc::new(backend), vec![node("a", 1)], 1, 3, 1 << 20);
    let mut nodes_changed = store.changes_of("nodes");
    let mut all = store.changes();
    for rv in 2..=9 {
        let (k, v) = lease(&format!("l{rv}"), rv);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
    }
    all.wait_for(|rv| *rv == 9).await.unwrap();
    assert!(!nodes_changed.has_changed().unwrap(), "woken by leases");
    // the history holds leases 7..=9 only; no node event after 1 was dropped
    let found = store.events_after(1, "nodes", None, 10).unwrap();
    assert!(found.events.is_empty());
    assert_eq!(found.through, 9);
    assert!(matches!(
        store.events_after(1, "leases.coordination.k8s.io", None, 10),
        Err(StoreError::Expired {
            requested: 1,
            oldest: 6
        })
    ));
    let mut w = store
        .watch(Some("nodes"), None, WatchFrom::After(1))
        .await
        .unwrap();
    assert!(w.initial.is_empty());
    let (k, v) = node("b", 10);
    tx.send(Change::Put { key: k, value: v }).await.unwrap();
    assert_eq!(next(&mut w.rx).await, (EventType::Added, "b".into(), 10));
    nodes_changed.changed().await.unwrap();
    assert_eq!(*nodes_changed.borrow_and_update(), 10);
    let found = store.events_after(1, "nodes", None, 10).unwrap();
    assert_eq!(found.events.len(), 1);
    // once node events are dropped too, a node watch from before them is expired
    for rv in 11..=13 {
        let (k, v) = lease(&format!("l{rv}"), rv);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
    }
    all.wait_for(|rv| *rv == 13).await.unwrap();
    assert!(matches!(
        store.events_after(9, "nodes", None, 10),
        Err(StoreError::Expired {
            requested: 9,
            oldest: 10
        })
    ));
    assert!(store.events_after(10, "nodes", None, 10).is_ok());
}

fn pod(name: &str, node: &str, rv: u64) -> (Key, Value) {
    (
        key("pods", "default", name),
        json!({"kind": "Pod", "metadata": {"name": name, "namespace": "default",
            "resourceVersion": rv.to_string()}, "spec": {"nodeName": node}}),
    )
}

/// A controller's watch of several resources is sent their events only, in the order of their
/// changes: a watch of {pods, nodes} gets no Lease renewal (at 5000 nodes, 330 a second reached
/// every controller), while a watch of every resource still gets them all.
#[tokio::test]
async fn a_watch_of_some_kinds_is_sent_their_events_only() {
    let (tx, rx) = mpsc::channel(64);
    let backend = Driven {
        feed: Mutex::new(Some(rx)),
    };
    let store = Store::new(Arc::new(backend), vec![], 0, 100, 1 << 20);
    let from = WatchFrom::Current { initial: false };
    let mut kinds = store.watch_kinds(&["pods", "nodes"], from).await.unwrap();
    let mut same = store.watch_kinds(&["nodes", "pods"], from).await.unwrap();
    let mut leases = store
        .watch_kinds(&["leases.coordination.k8s.io"], from)
        .await
        .unwrap();
    let mut all = store.watch(None, None, from).await.unwrap();
    let changes = [
        lease("l1", 1),
        pod("p", "a", 2),
        lease("l3", 3),
        lease("l4", 4),
        node("a", 5),
        lease("l6", 6),
    ];
    for (k, v) in changes {
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
    }
    for rx in [&mut kinds.rx, &mut same.rx] {
        assert_eq!(next(rx).await, (EventType::Added, "p".into(), 2));
        assert_eq!(next(rx).await, (EventType::Added, "a".into(), 5));
    }
    for rv in [1, 3, 4, 6] {
        assert_eq!(next(&mut leases.rx).await.2, rv);
    }
    for rv in 1..=6 {
        assert_eq!(next(&mut all.rx).await.2, rv);
    }
    // every event was sent by now: the watch of pods and nodes has nothing more
    assert!(matches!(
        kinds.rx.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    assert!(matches!(
        leases.rx.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
}

/// A watch of one node's pods (the indexed trigger on spec.nodeName) is woken by that node's
/// pods only, reads only their events while its cursor passes the others', gets an event
/// of a pod that moved away from its node, and is expired only when one of its node's
/// events left the history, not by other nodes' pod churn.
#[tokio::test]
async fn a_node_pod_watch_reads_its_own_pods_events_only() {
    let (tx, rx) = mpsc::channel(64);
    let backend = Driven {
        feed: Mutex::new(Some(rx)),
    };
    let store = Store::new(Arc::new(backend), vec![], 1, 4, 1 << 20);
    let mut a_changed = store.changes_of_trigger("pods", "a");
    let mut all = store.changes();
    let (k, v) = pod("pa", "a", 2);
    tx.send(Change::Put { key: k, value: v }).await.unwrap();
    a_changed.changed().await.unwrap();
    assert_eq!(*a_changed.borrow_and_update(), 2);
    // three pods of node b: a's watch is not woken
    for rv in 3..=5 {
        let (k, v) = pod(&format!("pb{rv}"), "b", rv);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
    }
    all.wait_for(|rv| *rv == 5).await.unwrap();
    assert!(!a_changed.has_changed().unwrap(), "woken by node b's pods");
    let found = store
        .events_after_trigger(1, "pods", "a", None, 10)
        .unwrap();
    let names: Vec<_> = found.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!((names, found.through), (vec!["pa"], 5));
    // nothing more for a: the cursor passes b's events without them
    let found = store
        .events_after_trigger(2, "pods", "a", None, 10)
        .unwrap();
    assert_eq!((found.events.len(), found.through), (0, 5));
    // b's churn pushes a's only event out of the history (bounds: 4 events): a watch of a
    // from before it is expired, from after it is not
    for rv in 6..=8 {
        let (k, v) = pod(&format!("pb{rv}"), "b", rv);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
    }
    all.wait_for(|rv| *rv == 8).await.unwrap();
    assert!(matches!(
        store.events_after_trigger(1, "pods", "a", None, 10),
        Err(StoreError::Expired {
            requested: 1,
            oldest: 2
        })
    ));
    let found = store
        .events_after_trigger(2, "pods", "a", None, 10)
        .unwrap();
    assert_eq!((found.events.len(), found.through), (0, 8));
    // a pod moved from b to a, then from a to c: both concern a's watch
    let (k, v) = pod("pb8", "a", 9);
    tx.send(Change::Put { key: k, value: v }).await.unwrap();
    let (k, v) = pod("pb8", "c", 10);
    tx.send(Change::Put { key: k, value: v }).await.unwrap();
    all.wait_for(|rv| *rv == 10).await.unwrap();
    assert!(a_changed.has_changed().unwrap());
    let found = store
        .events_after_trigger(8, "pods", "a", None, 10)
        .unwrap();
    let rvs: Vec<_> = found.events.iter().map(|e| e.rv).collect();
    assert_eq!((rvs, found.through), (vec![9, 10], 10));
    // at most `limit` at a time, the cursor stopping at the last one given
    let found = store.events_after_trigger(8, "pods", "a", None, 1).unwrap();
    assert_eq!((found.events.len(), found.through), (1, 9));
    // a namespace that is not theirs, and a resource without an index, read as before
    let found = store
        .events_after_trigger(8, "pods", "a", Some("other"), 10)
        .unwrap();
    assert_eq!((found.events.len(), found.through), (0, 10));
    assert!(store
        .events_after_trigger(8, "nodes", "a", None, 10)
        .unwrap()
        .events
        .is_empty());
}

fn owned(name: &str, node: &str, controller: Option<&str>, rv: u64) -> (Key, Value) {
    let (k, mut v) = pod(name, node, rv);
    v["metadata"]["labels"] = json!({"app": "x"});
    if let Some(uid) = controller {
        v["metadata"]["ownerReferences"] =
            json!([{"kind": "DaemonSet", "name": "d", "uid": uid, "controller": true}]);
    }
    (k, v)
}

fn names(items: &[Arc<Value>]) -> Vec<&str> {
    items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect()
}

/// The cache keeps an object as its JSON and gives it back decoded, the same object (shared
/// while someone holds it, decoded again after); its indexes follow the writes (a pod bound
/// to another node, adopted, deleted); a watch resumed from a resourceVersion replays the
/// history's events, whose lines hold the same bytes.
#[tokio::test]
async fn objects_are_kept_encoded_and_indexed() {
    let (tx, rx) = mpsc::channel(64);
    let backend = Driven {
        feed: Mutex::new(Some(rx)),
    };
    let store = Store::new(
        Arc::new(backend),
        vec![owned("p1", "a", Some("u1"), 1), node("n", 1)],
        1,
        100,
        1 << 20,
    );
    let mut all = store.changes();
    // round trip: what was loaded, decoded again on each read no one else holds
    let want = owned("p1", "a", Some("u1"), 1).1;
    let got = store.get("pods", "default", "p1").await.unwrap().unwrap();
    assert_eq!(*got, want);
    let again = store.get("pods", "default", "p1").await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&got, &again), "decoded twice while held");
    drop((got, again));
    assert_eq!(
        *store.get("pods", "default", "p1").await.unwrap().unwrap(),
        want
    );

    for (k, v) in [
        owned("p2", "b", Some("u1"), 2),
        owned("p3", "a", None, 3),
        owned("p4", "", Some("u2"), 4),
    ] {
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
    }
    all.wait_for(|rv| *rv == 4).await.unwrap();
    let by = |by| {
        let store = &store;
        async move { store.list_indexed("pods", None, by).await.unwrap().0 }
    };
    assert_eq!(names(&by(Indexed::Trigger("a")).await), ["p1", "p3"]);
    assert_eq!(names(&by(Indexed::Trigger("")).await), ["p4"]);
    assert_eq!(names(&by(Indexed::Controller("u1")).await), ["p1", "p2"]);
    assert_eq!(names(&by(Indexed::Controller("")).await), ["p3"]);
    let (in_other, _) = store
        .list_indexed("pods", Some("other"), Indexed::Trigger("a"))
        .await
        .unwrap();
    assert!(in_other.is_empty());
    // a resource without indexes is filtered as a list would be
    let (nodes, _) = store
        .list_indexed("nodes", None, Indexed::Controller(""))
        .await
        .unwrap();
    assert_eq!(names(&nodes), ["n"]);

    // p3 adopted by u1 and bound to b, p1 deleted
    let (k, v) = owned("p3", "b", Some("u1"), 5);
    tx.send(Change::Put { key: k, value: v }).await.unwrap();
    tx.send(Change::Delete {
        key: key("pods", "default", "p1"),
        rv: 6,
        prev: None,
    })
    .await
    .unwrap();
    all.wait_for(|rv| *rv == 6).await.unwrap();
    assert!(by(Indexed::Trigger("a")).await.is_empty());
    assert_eq!(names(&by(Indexed::Trigger("b")).await), ["p2", "p3"]);
    assert_eq!(names(&by(Indexed::Controller("u1")).await), ["p2", "p3"]);
    assert!(by(Indexed::Controller("")).await.is_empty());
    let (items, rv) = store.list("pods", Some("default")).await.unwrap();
    assert_eq!((names(&items), rv), (vec!["p2", "p3", "p4"], 6));

    // resumed from 4: the adoption (with the pod before it) and the deletion
    let w = store
        .watch(Some("pods"), None, WatchFrom::After(4))
        .await
        .unwrap();
    let got: Vec<_> = w
        .initial
        .iter()
        .map(|e| (e.event_type, e.name.as_str(), e.rv))
        .collect();
    assert_eq!(
        got,
        [
            (EventType::Modified, "p3", 5),
            (EventType::Deleted, "p1", 6)
        ]
    );
    let adopted = &w.initial[0];
    assert_eq!(adopted.prev.as_deref(), Some(&owned("p3", "a", None, 3).1));
    let line: Value = serde_json::from_slice(&adopted.line).unwrap();
    assert_eq!(line["object"], *adopted.object);
    let json: Value = serde_json::from_slice(&adopted.json).unwrap();
    assert_eq!(json, *adopted.object);
    // the cache reads back what the event carried
    let cached = store.get("pods", "default", "p3").await.unwrap().unwrap();
    assert_eq!(*cached, *adopted.object);
    // the initial events of a watch from now: the objects as stored
    let w = store
        .watch(Some("pods"), None, WatchFrom::Current { initial: true })
        .await
        .unwrap();
    let objects: Vec<Value> = w.initial.iter().map(|e| (*e.object).clone()).collect();
    let lines: Vec<Value> = w
        .initial
        .iter()
        .map(|e| serde_json::from_slice::<Value>(&e.line).unwrap()["object"].clone())
        .collect();
    assert_eq!(objects, lines);
    assert_eq!(objects.len(), 3);
    // metadata only: from the bytes and from a live object alike, managedFields cut
    drop((w, cached));
    let mut p = owned("p5", "b", Some("u1"), 7).1;
    p["metadata"]["managedFields"] = json!([{"manager": "m"}]);
    let want = json!({"kind": "Pod", "metadata": p["metadata"].clone()});
    let mut want = want;
    want["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    tx.send(Change::Put {
        key: key("pods", "default", "p5"),
        value: p,
    })
    .await
    .unwrap();
    all.wait_for(|rv| *rv == 7).await.unwrap();
    let (meta, rv) = store.list_metadata("pods", None).await.unwrap();
    assert_eq!(rv, 7);
    assert_eq!(meta.len(), 4);
    assert_eq!(*meta[3], want);
    assert!(meta.iter().all(|m| m.get("spec").is_none()));
    let held = store.get("pods", "default", "p5").await.unwrap().unwrap();
    let (meta, _) = store.list_metadata("pods", None).await.unwrap();
    assert_eq!(*meta[3], want);
    drop(held);
}

/// A metadata-only list of objects no one holds decodes them from their bytes, cut as one
/// of a held object is.
#[tokio::test]
async fn metadata_only_lists_cut_objects_from_their_bytes() {
    let (_tx, rx) = mpsc::channel(1);
    let backend = Driven {
        feed: Mutex::new(Some(rx)),
    };
    let (k, mut p) = owned("p", "a", None, 1);
    p["apiVersion"] = json!("v1");
    p["metadata"]["managedFields"] = json!([{"manager": "m"}]);
    let store = Store::new(Arc::new(backend), vec![(k, p.clone())], 1, 10, 1 << 20);
    let (from_bytes, _) = store.list_metadata("pods", None).await.unwrap();
    let held = store.get("pods", "default", "p").await.unwrap().unwrap();
    let (from_held, _) = store.list_metadata("pods", None).await.unwrap();
    assert_eq!(from_bytes, from_held);
    let mut want = json!({"apiVersion": "v1", "kind": "Pod", "metadata": p["metadata"]});
    want["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    assert_eq!(*from_bytes[0], want);
    assert_eq!(*held, p);
}

/// The cache counts its objects per resource without reading one (what /metrics asks each
/// scrape).
#[tokio::test]
async fn objects_are_counted_per_resource() {
    let (_tx, rx) = mpsc::channel(1);
    let backend = Driven {
        feed: Mutex::new(Some(rx)),
    };
    let objects = ["a", "b", "c"].map(|n| owned(n, "x", None, 1));
    let store = Store::new(Arc::new(backend), objects.to_vec(), 1, 10, 1 << 20);
    assert_eq!(store.count("pods").await.unwrap(), 3);
    assert_eq!(store.count("nodes").await.unwrap(), 0);
}

/// A shared backend's feed drives the cache: changes become events in order, progress
/// advances the resourceVersion, and a relist (the backend's history was compacted) ends
/// every resumable watch with 410 while in-process watchers get the difference.
#[tokio::test]
async fn the_feed_drives_the_cache_and_a_relist_expires_the_history() {
    let (tx, rx) = mpsc::channel(16);
    let backend = Driven {
        feed: Mutex::new(Some(rx)),
    };
    let store = Store::new(
        Arc::new(backend),
        vec![node("a", 1), node("b", 2)],
        2,
        100,
        1 << 20,
    );
    let mut w = store
        .watch(Some("nodes"), None, WatchFrom::After(2))
        .await
        .unwrap();
    let (k, v) = node("c", 3);
    tx.send(Change::Put { key: k, value: v }).await.unwrap();
    assert_eq!(next(&mut w.rx).await, (EventType::Added, "c".into(), 3));
    tx.send(Change::Progress(4)).await.unwrap();
    let mut changes = store.changes();
    changes.wait_for(|rv| *rv == 4).await.unwrap();
    assert_eq!(
        store
            .events_after(2, "nodes", None, 10)
            .unwrap()
            .events
            .len(),
        1
    );

    // a unchanged, b changed, c gone, d new
    tx.send(Change::Replace {
        objects: vec![node("a", 1), node("b", 5), node("d", 6)],
        rv: 7,
    })
    .await
    .unwrap();
    let mut got = vec![
        next(&mut w.rx).await,
        next(&mut w.rx).await,
        next(&mut w.rx).await,
    ];
    got.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        got,
        [
            (EventType::Modified, "b".into(), 7),
            (EventType::Deleted, "c".into(), 7),
            (EventType::Added, "d".into(), 7),
        ]
    );
    assert!(matches!(
        store.events_after(3, "nodes", None, 10),
        Err(StoreError::Expired {
            requested: 3,
            oldest: 7
        })
    ));
    let (items, rv) = store.list("nodes", None).await.unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!((names, rv), (vec!["a", "b", "d"], 7));

    // a removal the cache knew of carries the object as last stored, at the removal's rv
    tx.send(Change::Delete {
        key: key("nodes", "", "d"),
        rv: 8,
        prev: None,
    })
    .await
    .unwrap();
    assert_eq!(next(&mut w.rx).await, (EventType::Deleted, "d".into(), 8));
    let found = store.events_after(7, "nodes", None, 10).unwrap();
    assert_eq!(object_rv(&found.events[0].object), 8);
    assert_eq!(store.current_rv(), 8);
}
