//! What the server's store holds per pod (issue 14, item 5: <= 1 GiB RSS with 100 000 pods).
//!
//! A counting allocator (this test binary's only) gives the bytes live after storing pods through
//! the SQLite store: the watch cache's objects alone (a history of one event), then with the
//! default history. The pod is a real one of the scale benchmark (4.9 KB of JSON).
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use daemonset_agent::server::store::{ObjectStore, SqliteStore, WATCH_HISTORY_BYTES};
use serde_json::Value;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, counting the bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        // SAFETY: allocated by `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Relaxed);
        // SAFETY: as `alloc`/`dealloc`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

const PODS: usize = 2000;

/// The scale benchmark's pod, as pod `i` (its own name, node and uid).
fn pod(template: &Value, i: usize) -> Value {
    let mut p = template.clone();
    p["metadata"]["name"] = format!("scale-00-{i:05}").into();
    p["metadata"]["uid"] = format!("00000000-0000-0000-0000-{i:012}").into();
    p["spec"]["nodeName"] = format!("sim-{i:05}").into();
    p
}

/// Bytes live per pod after `PODS` pods are created and then each updated once (an update's
/// event holds the object before it too), in a store whose history keeps `max_events`.
async fn per_pod(max_events: usize) -> (f64, f64) {
    let template: Value =
        serde_json::from_str(include_str!("fixtures/pod-4k9.json")).expect("the fixture");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open_with(&dir.path().join("db"), max_events, WATCH_HISTORY_BYTES)
        .expect("the store");
    let before = LIVE.load(Relaxed);
    for i in 0..PODS {
        let p = pod(&template, i);
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        store
            .create("pods", "default", &name, p)
            .await
            .expect("created");
    }
    let created = LIVE.load(Relaxed);
    for i in 0..PODS {
        let mut p = pod(&template, i);
        p["status"]["phase"] = "Running".into();
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        store
            .update("pods", "default", &name, p, None)
            .await
            .expect("updated");
    }
    let updated = LIVE.load(Relaxed);
    let (items, _) = store.list("pods", None).await.expect("the list");
    assert_eq!(items.len(), PODS);
    drop(items);
    drop(store);
    (
        (created - before) as f64 / PODS as f64,
        (updated - before) as f64 / PODS as f64,
    )
}

/// Prints the breakdown (the report's figures) and holds the store to its budget: 100 000 pods in
/// well under 1 GiB.
#[tokio::test(flavor = "current_thread")]
async fn the_store_holds_a_pod_in_a_few_kilobytes() {
    let json = include_str!("fixtures/pod-4k9.json").len();
    let (objects, objects_updated) = per_pod(1).await;
    let (with_history, with_history_updated) = per_pod(100_000).await;
    println!("pod: {json} bytes of JSON");
    println!(
        "objects only: {objects:.0} B/pod created, {objects_updated:.0} B/pod after an update"
    );
    println!(
        "with the default history: {with_history:.0} B/pod created, \
         {with_history_updated:.0} B/pod after an update"
    );
    assert!(
        objects < 8_000.0,
        "the cache holds {objects:.0} bytes per pod"
    );
}
