//! The store on etcd, against real etcd 3.4 members the tests start on loopback ports with data
//! directories of their own (Debian's `etcd-server`; a missing `etcd` fails, it is not skipped):
//! the API verbs on etcd (create, update conflict, delete, paged lists, watch from a
//! resourceVersion, 410 after compaction), two servers on one etcd (a write on one seen by a
//! watch on the other), a member of three killed under writes and watches, the etcd watch's
//! relist after compaction, and an agent running a DaemonSet applied with kubectl.
mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::etcd::{ok, rv, watch_events, Etcd, Server};
use common::wait_for;
use daemonset_agent::server::encryption::Identity;
use daemonset_agent::server::store::etcd::{EtcdBackend, EtcdOptions};
use daemonset_agent::server::store::{Backend, Change, Expect, Key};
use serde_json::{json, Value};

fn cm(name: &str, value: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"t": "etcd"}}, "data": {"v": value}})
        .to_string()
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
/// The test's own ConfigMaps (the server also publishes kube-root-ca.crt in every namespace).
const SEL: &str = "labelSelector=t%3Detcd";

fn names_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap_or(""),
                e["object"]["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Create, update with a stale resourceVersion (409), delete, paged lists at a revision, a
/// watch from a resourceVersion, and a list or watch from a compacted revision (410); the
/// resourceVersions are etcd's revisions.
#[test]
fn the_api_on_etcd() {
    let etcd = Etcd::start(1);
    let dir = tempfile::Builder::new()
        .prefix("dsa-etcd-api-")
        .tempdir_in("/tmp")
        .unwrap();
    let a = Server::start(dir.path(), "a", &etcd, &[]);
    let api = a.api();

    let created = ok(
        api.send("POST", CMS, "application/json", &cm("one", "1")),
        201,
    );
    let r1 = rv(&created);
    let stored = etcd
        .ctl(&["get", "/registry/configmaps/default/one", "-w", "json"])
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        stored["kvs"][0]["mod_revision"].as_u64(),
        Some(r1),
        "rv = mod_revision"
    );
    let value = base64_decode(stored["kvs"][0]["value"].as_str().unwrap());
    assert!(
        !value.contains("resourceVersion"),
        "the value carries no resourceVersion: {value}"
    );
    ok(
        api.send("POST", CMS, "application/json", &cm("one", "1")),
        409,
    );

    let mut obj = ok(api.get(&format!("{CMS}/one")), 200);
    assert_eq!(rv(&obj), r1);
    obj["data"]["v"] = json!("2");
    let updated = ok(
        api.send(
            "PUT",
            &format!("{CMS}/one"),
            "application/json",
            &obj.to_string(),
        ),
        200,
    );
    let r2 = rv(&updated);
    assert!(r2 > r1);
    // the same update again holds the stale resourceVersion r1
    let (code, body) = api.send(
        "PUT",
        &format!("{CMS}/one"),
        "application/json",
        &obj.to_string(),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("the object has been modified"), "{body}");

    for i in 0..5 {
        ok(
            api.send("POST", CMS, "application/json", &cm(&format!("p{i}"), "x")),
            201,
        );
    }
    // a paged list: the later pages at the first page's revision, whatever changes between
    let page1 = ok(api.get(&format!("{CMS}?limit=2&{SEL}")), 200);
    let cont = page1["metadata"]["continue"].as_str().unwrap().to_string();
    let at = rv(&json!({"metadata": page1["metadata"]}));
    ok(
        api.send("POST", CMS, "application/json", &cm("p9", "late")),
        201,
    );
    let mut names: Vec<String> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut next = cont;
    while !next.is_empty() {
        let page = ok(
            api.get(&format!("{CMS}?limit=2&continue={next}&{SEL}")),
            200,
        );
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string()),
        );
        next = page["metadata"]["continue"]
            .as_str()
            .unwrap_or("")
            .to_string();
    }
    assert_eq!(
        names,
        ["one", "p0", "p1", "p2", "p3", "p4"],
        "the pages are a snapshot at {at}"
    );

    let deleted = ok(
        api.send("DELETE", &format!("{CMS}/p0"), "application/json", "{}"),
        200,
    );
    let (code, events) = watch_events(&api, CMS, SEL, r1);
    assert_eq!(code, 200);
    assert_eq!(
        names_of(&events),
        [
            "MODIFIED one",
            "ADDED p0",
            "ADDED p1",
            "ADDED p2",
            "ADDED p3",
            "ADDED p4",
            "ADDED p9",
            "DELETED p0"
        ],
    );
    assert!(rv(&events[7]["object"]) >= rv(&deleted));
    ok(api.get(&format!("{CMS}/p0")), 404);

    // a second server, started now: its history begins now, older revisions come from etcd
    let b = Server::start(dir.path(), "b", &etcd, &[]);
    let exact = ok(
        b.api().get(&format!(
            "{CMS}?resourceVersion={r1}&resourceVersionMatch=Exact&{SEL}"
        )),
        200,
    );
    let items = exact["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{exact}");
    assert_eq!(
        (items[0]["data"]["v"].as_str(), rv(&items[0])),
        (Some("1"), r1)
    );
    let (_, events) = watch_events(&b.api(), CMS, SEL, r1);
    assert_eq!(
        (
            events[0]["type"].as_str(),
            events[0]["object"]["code"].as_u64()
        ),
        (Some("ERROR"), Some(410)),
        "b's history starts after r1: {events:?}"
    );

    etcd.compact(etcd.revision());
    let (code, body) = b.api().get(&format!(
        "{CMS}?resourceVersion={r1}&resourceVersionMatch=Exact&{SEL}"
    ));
    assert_eq!(code, 410, "{body}");
    assert!(body.contains("Expired"), "{body}");
    // the servers still serve what is current
    let now = ok(b.api().get(&format!("{CMS}?{SEL}")), 200);
    assert_eq!(now["items"].as_array().unwrap().len(), 6);
    drop(a);
}

/// Two servers on one etcd: a write on one reaches a watcher on the other, and either sees the
/// same objects at the same resourceVersions.
#[test]
fn two_servers_on_one_etcd_see_each_others_writes() {
    let etcd = Etcd::start(1);
    let dir = tempfile::Builder::new()
        .prefix("dsa-etcd-two-")
        .tempdir_in("/tmp")
        .unwrap();
    let a = Server::start(dir.path(), "a", &etcd, &[]);
    let b = Server::start(dir.path(), "b", &etcd, &[]);
    let start = rv(&ok(b.api().get(&format!("{CMS}?{SEL}")), 200));
    let written = ok(
        a.api()
            .send("POST", CMS, "application/json", &cm("from-a", "1")),
        201,
    );
    let events = wait_for(
        "b's watch to bring a's write",
        Duration::from_secs(10),
        || {
            let (code, events) = watch_events(&b.api(), CMS, SEL, start);
            assert_eq!(code, 200);
            (!events.is_empty()).then_some(events)
        },
    );
    assert_eq!(names_of(&events), ["ADDED from-a"]);
    assert_eq!(rv(&events[0]["object"]), rv(&written));
    let on_b = ok(b.api().get(&format!("{CMS}/from-a")), 200);
    assert_eq!(on_b, written);
    // b updates what a wrote, with a's resourceVersion
    let mut obj = on_b;
    obj["data"]["v"] = json!("2");
    ok(
        b.api().send(
            "PUT",
            &format!("{CMS}/from-a"),
            "application/json",
            &obj.to_string(),
        ),
        200,
    );
    let (code, body) = a.api().send(
        "PUT",
        &format!("{CMS}/from-a"),
        "application/json",
        &obj.to_string(),
    );
    assert_eq!(code, 409, "a's stale write is a conflict: {body}");
}

/// kill -9 one member of three: writes and watches go on through the others.
#[test]
fn a_member_of_three_dies_and_writes_and_watches_continue() {
    let mut etcd = Etcd::start(3);
    let dir = tempfile::Builder::new()
        .prefix("dsa-etcd-3-")
        .tempdir_in("/tmp")
        .unwrap();
    let a = Server::start(dir.path(), "a", &etcd, &[]);
    let b = Server::start(dir.path(), "b", &etcd, &[]);
    let start = rv(&ok(b.api().get(&format!("{CMS}?{SEL}")), 200));
    ok(
        a.api()
            .send("POST", CMS, "application/json", &cm("before", "1")),
        201,
    );
    // the leader, or not: the first member
    etcd.kill(0);
    for i in 0..5 {
        let name = format!("after-{i}");
        wait_for(
            &format!("a write of {name} to be acknowledged"),
            Duration::from_secs(20),
            || {
                let (code, _) = a
                    .api()
                    .send("POST", CMS, "application/json", &cm(&name, "1"));
                (code == 201 || code == 409).then_some(())
            },
        );
    }
    let events = wait_for(
        "b's watch to bring every write",
        Duration::from_secs(20),
        || {
            let (code, events) = watch_events(&b.api(), CMS, SEL, start);
            assert_eq!(code, 200);
            (events.len() >= 6).then_some(events)
        },
    );
    assert_eq!(
        names_of(&events),
        [
            "ADDED before",
            "ADDED after-0",
            "ADDED after-1",
            "ADDED after-2",
            "ADDED after-3",
            "ADDED after-4"
        ],
        "{}",
        etcd.log()
    );
    // and both agree with etcd on every object's resourceVersion
    let on_a = ok(a.api().get(&format!("{CMS}?{SEL}")), 200);
    let on_b = ok(b.api().get(&format!("{CMS}?{SEL}")), 200);
    assert_eq!(on_a["items"], on_b["items"]);
}

/// The etcd watch from a compacted revision answers "compacted": the backend relists and feeds
/// the cache everything as it is now.
#[test]
fn a_watch_from_a_compacted_revision_relists() {
    let etcd = Etcd::start(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = EtcdOptions::new(&etcd.endpoints());
        let backend = Arc::new(EtcdBackend::connect(&opts, Arc::new(Identity)).await.unwrap());
        let key = |n: &str| Key {
            resource: "configmaps".into(),
            namespace: "default".into(),
            name: n.into(),
        };
        let obj = |n: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "namespace": "default"}});
        let a = backend.put(&key("a"), obj("a"), Expect::Absent).await.unwrap();
        let first = a["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap();
        backend.put(&key("b"), obj("b"), Expect::Absent).await.unwrap();
        let (rv, _) = backend.delete(&key("a"), None).await.unwrap();
        etcd.compact(rv);
        let mut feed = backend.feed(first).unwrap();
        match tokio::time::timeout(Duration::from_secs(10), feed.recv()).await.unwrap() {
            Some(Change::Replace { objects, rv: at }) => {
                let names: Vec<&str> = objects.iter().map(|(k, _)| k.name.as_str()).collect();
                assert_eq!(names, ["b"]);
                assert!(at >= rv);
            }
            other => panic!("want a relist, got {other:?}"),
        }
        // and after it, the changes as they come
        backend.put(&key("c"), obj("c"), Expect::Absent).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), feed.recv()).await.unwrap() {
            Some(Change::Put { key: k, .. }) => assert_eq!(k.name, "c"),
            other => panic!("want c, got {other:?}"),
        }
    });
}

fn base64_decode(s: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

#[allow(dead_code)]
fn quiet() -> Stdio {
    Stdio::null()
}
