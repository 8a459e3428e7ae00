use super::*;
use crate::server::kinds::{DAEMONSETS, NODES, PODS};
use crate::server::store::SqliteStore;

fn test_api(dir: &tempfile::TempDir) -> Api {
    let store = SqliteStore::open(&dir.path().join("s.db"), 100).unwrap();
    Api::new(Arc::new(store), Policy::default())
}

fn admin() -> User {
    User::internal("test")
}

#[tokio::test]
async fn field_validation_modes() {
    let dir = tempfile::tempdir().unwrap();
    let api = test_api(&dir);
    let with_typo = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "a", "labelz": {"x": "y"}}, "spec": {"foo": 1}});
    let opts = |validation| WriteOpts {
        dry_run: false,
        validation,
        field_manager: None,
    };
    let strict = api
        .create(
            &admin(),
            &NAMESPACES,
            None,
            with_typo.clone(),
            opts(FieldValidation::Strict),
        )
        .await
        .expect_err("strict refuses unknown fields");
    assert_eq!(strict.code, 400);
    assert!(
        strict
            .message
            .contains("unknown field \"metadata.labelz\", unknown field \"spec.foo\""),
        "{}",
        strict.message
    );
    let warned = api
        .create(
            &admin(),
            &NAMESPACES,
            None,
            with_typo.clone(),
            opts(FieldValidation::Warn),
        )
        .await
        .unwrap();
    assert_eq!(
        warned.warnings,
        [
            "unknown field \"metadata.labelz\"",
            "unknown field \"spec.foo\""
        ]
    );
    assert!(
        warned.object["metadata"].get("labelz").is_none(),
        "unknown fields are dropped"
    );
    let mut other = with_typo;
    other["metadata"]["name"] = json!("b");
    let ignored = api
        .create(
            &admin(),
            &NAMESPACES,
            None,
            other,
            opts(FieldValidation::Ignore),
        )
        .await
        .unwrap();
    assert!(ignored.warnings.is_empty());
}

fn daemonset(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": image}]}}},
        "status": {"numberReady": 5}})
}

#[tokio::test]
async fn strategies_decide_status_generation_and_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let api = test_api(&dir);
    let user = admin();
    let ns = json!({"metadata": {"name": "default"}});
    let ns = api
        .create(&user, &NAMESPACES, None, ns, WriteOpts::INTERNAL)
        .await
        .unwrap();
    assert_eq!(ns.object["status"]["phase"], "Active", "initial status");
    assert!(ns.object["metadata"].get("generation").is_none());

    let ds = api
        .create(
            &user,
            &DAEMONSETS,
            Some("default"),
            daemonset("i:1"),
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap();
    assert_eq!(ds.object["metadata"]["generation"], 1);
    assert_eq!(ds.object["status"]["numberReady"], 0, "initial status wins");

    // (part, image, status.numberReady written, generation after, numberReady after)
    let cases = [
        (Part::Main, "i:1", 7, 1, 0),
        (Part::Main, "i:2", 7, 2, 0),
        (Part::Status, "i:3", 7, 2, 7),
        (Part::Main, "i:2", 9, 2, 7),
    ];
    for (i, (part, image, ready, generation, ready_after)) in cases.into_iter().enumerate() {
        let mut obj = daemonset(image);
        obj["status"]["numberReady"] = json!(ready);
        let w = api
            .update(
                &user,
                ObjectRef::new(&DAEMONSETS, Some("default"), "d"),
                part,
                obj,
                WriteOpts::INTERNAL,
            )
            .await
            .unwrap();
        assert_eq!(w.object["metadata"]["generation"], generation, "case {i}");
        assert_eq!(w.object["status"]["numberReady"], ready_after, "case {i}");
        let want_image = if part == Part::Status { "i:2" } else { image };
        assert_eq!(
            w.object.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!(want_image)),
            "case {i}"
        );
    }

    let pod =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let pod = api
        .create(&user, &PODS, Some("default"), pod, WriteOpts::INTERNAL)
        .await
        .unwrap();
    assert_eq!(pod.object["status"]["phase"], "Pending");
    api.delete(
        &user,
        ObjectRef::new(&NAMESPACES, None, "default"),
        &DeleteOptions::default(),
    )
    .await
    .unwrap();
    for r in [&DAEMONSETS, &PODS] {
        let (items, _) = api
            .list(&user, r, Some("default"), &Filter::default())
            .await
            .unwrap();
        assert!(items.is_empty(), "{} left in a deleted namespace", r.plural);
    }
}

#[tokio::test]
async fn patches_use_the_kinds_merge_keys() {
    let dir = tempfile::tempdir().unwrap();
    let api = test_api(&dir);
    let user = admin();
    let node = json!({"metadata": {"name": "n"}, "status": {"conditions": [
        {"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}});
    api.create(&user, &NODES, None, node, WriteOpts::INTERNAL)
        .await
        .unwrap();
    let doc = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    let cases = [
        (PatchType::Strategic, 2, "False"),
        (PatchType::Merge, 1, "False"),
    ];
    for (ty, n, ready) in cases {
        let w = api
            .patch(
                &user,
                ObjectRef::new(&NODES, None, "n"),
                Part::Status,
                ty,
                &doc,
                WriteOpts::INTERNAL,
            )
            .await
            .unwrap();
        let conds = w.object["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), n, "{ty:?}");
        assert_eq!(conds[0]["status"], ready, "{ty:?}");
    }
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"unschedulable": true}});
    let e = api
        .patch(
            &user,
            ObjectRef::new(&NODES, None, "n"),
            Part::Main,
            PatchType::Merge,
            &stale,
            WriteOpts::INTERNAL,
        )
        .await
        .expect_err("a stale resourceVersion in a patch is a precondition");
    assert_eq!(e.code, 409);
}

async fn with_namespace(dir: &tempfile::TempDir) -> Api {
    let api = test_api(dir);
    let ns = json!({"metadata": {"name": "default"}});
    api.create(&admin(), &NAMESPACES, None, ns, WriteOpts::INTERNAL)
        .await
        .unwrap();
    api
}

fn deleting(obj: &Value) -> (Option<&str>, Option<i64>) {
    (
        obj.pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str),
        obj.pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64),
    )
}

fn grace(g: i64) -> DeleteOptions {
    DeleteOptions {
        grace_period_seconds: Some(g),
        ..Default::default()
    }
}

/// A pod bound to a node is marked, kept, only shortened by a second delete, and removed by
/// a delete with a grace period of 0 (the agent's, with a uid precondition); an unbound pod
/// and other kinds go at once.
#[tokio::test]
async fn bound_pods_are_deleted_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let api = with_namespace(&dir).await;
    let user = admin();
    let pod = |name: &str, node: &str| {
        json!({"metadata": {"name": name}, "spec": {"nodeName": node,
            "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "i"}]}})
    };
    for p in [pod("bound", "n1"), pod("unbound", "")] {
        api.create(&user, &PODS, Some("default"), p, WriteOpts::INTERNAL)
            .await
            .unwrap();
    }
    let at = |name| ObjectRef::new(&PODS, Some("default"), name);
    let gone = api
        .delete(&user, at("unbound"), &DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(deleting(&gone).1, None);
    assert_eq!(api.get(&user, at("unbound")).await.unwrap_err().code, 404);

    let t0 = Utc::now();
    let marked = api
        .delete(&user, at("bound"), &DeleteOptions::default())
        .await
        .unwrap();
    let (ts, g) = deleting(&marked);
    assert_eq!(g, Some(30));
    let ts = DateTime::parse_from_rfc3339(ts.unwrap()).unwrap();
    let from_now = (ts.with_timezone(&Utc) - t0).num_seconds();
    assert!((29..=30).contains(&from_now), "{from_now}");
    assert!(
        api.get(&user, at("bound")).await.is_ok(),
        "kept while its node stops it"
    );
    // a longer grace period changes nothing; a shorter one moves the deadline earlier
    let same = api.delete(&user, at("bound"), &grace(60)).await.unwrap();
    assert_eq!(deleting(&same), deleting(&marked));
    let shorter = api.delete(&user, at("bound"), &grace(10)).await.unwrap();
    let (ts2, g2) = deleting(&shorter);
    assert_eq!(g2, Some(10));
    let ts2 = DateTime::parse_from_rfc3339(ts2.unwrap()).unwrap();
    assert_eq!((ts - ts2).num_seconds(), 20);
    // updates keep the mark
    let mut edited = (*api.get(&user, at("bound")).await.unwrap()).clone();
    edited["metadata"]["labels"] = json!({"x": "y"});
    edited["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    let w = api
        .update(&user, at("bound"), Part::Main, edited, WriteOpts::INTERNAL)
        .await
        .unwrap();
    assert_eq!(deleting(&w.object), deleting(&shorter));
    // the agent's final delete: another uid is refused, its own removes the pod
    let e = api
        .delete(&user, at("bound"), &DeleteOptions::now_if_uid("other"))
        .await
        .unwrap_err();
    assert_eq!(e.code, 409);
    assert!(
        e.message.contains("Precondition failed: UID"),
        "{}",
        e.message
    );
    let uid = meta::meta_str(&marked, "uid").unwrap().to_string();
    api.delete(&user, at("bound"), &DeleteOptions::now_if_uid(&uid))
        .await
        .unwrap();
    assert_eq!(api.get(&user, at("bound")).await.unwrap_err().code, 404);
}

/// An object with finalizers is only marked; the update that removes the last one deletes
/// it, and no finalizer may be added while it is being deleted.
#[tokio::test]
async fn finalizers_hold_a_deletion_until_the_last_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let api = with_namespace(&dir).await;
    let user = admin();
    let ds = |finalizers: Value| {
        let mut d = daemonset("i:1");
        d["metadata"]["finalizers"] = finalizers;
        d
    };
    api.create(
        &user,
        &DAEMONSETS,
        Some("default"),
        ds(json!(["a/x", "a/y"])),
        WriteOpts::INTERNAL,
    )
    .await
    .unwrap();
    let at = ObjectRef::new(&DAEMONSETS, Some("default"), "d");
    let marked = api
        .delete(&user, at, &DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(deleting(&marked).1, Some(0));
    assert!(deleting(&marked).0.is_some());
    let again = api
        .delete(&user, at, &DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(again, marked, "a second delete changes nothing");
    let e = api
        .update(
            &user,
            at,
            Part::Main,
            ds(json!(["a/x", "a/y", "a/z"])),
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 422);
    assert!(e.message.contains("no new finalizers"), "{}", e.message);
    api.update(
        &user,
        at,
        Part::Main,
        ds(json!(["a/y"])),
        WriteOpts::INTERNAL,
    )
    .await
    .unwrap();
    assert!(api.get(&user, at).await.is_ok(), "one finalizer left");
    api.update(&user, at, Part::Main, ds(json!([])), WriteOpts::INTERNAL)
        .await
        .unwrap();
    assert_eq!(api.get(&user, at).await.unwrap_err().code, 404);
}

#[tokio::test]
async fn writes_naming_another_uid_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let api = with_namespace(&dir).await;
    let user = admin();
    api.create(
        &user,
        &DAEMONSETS,
        Some("default"),
        daemonset("i:1"),
        WriteOpts::INTERNAL,
    )
    .await
    .unwrap();
    let at = ObjectRef::new(&DAEMONSETS, Some("default"), "d");
    let doc = json!({"metadata": {"uid": "not-its-uid", "labels": {"a": "b"}}});
    let e = api
        .patch(
            &user,
            at,
            Part::Main,
            PatchType::Merge,
            &doc,
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason), (409, "Conflict"));
    let uid = api.get(&user, at).await.unwrap()["metadata"]["uid"].clone();
    let doc = json!({"metadata": {"uid": uid, "labels": {"a": "b"}}});
    api.patch(
        &user,
        at,
        Part::Main,
        PatchType::Merge,
        &doc,
        WriteOpts::INTERNAL,
    )
    .await
    .unwrap();
}

#[test]
fn delete_options_come_from_the_body_or_the_query() {
    let q = |s: &str| Query::parse(Some(s));
    let o = DeleteOptions::from_request(&q("gracePeriodSeconds=5&propagationPolicy=Orphan"), None)
        .unwrap();
    assert_eq!(
        (o.grace_period_seconds, o.propagation),
        (Some(5), Some(Propagation::Orphan))
    );
    let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
        "propagationPolicy": "Background", "preconditions": {"uid": "u", "resourceVersion": "7"},
        "dryRun": ["All"]});
    let o = DeleteOptions::from_request(&q("gracePeriodSeconds=9"), Some(&body)).unwrap();
    assert_eq!(o.grace_period_seconds, Some(0), "the body wins");
    assert_eq!(o.propagation, Some(Propagation::Background));
    assert_eq!(o.preconditions.uid.as_deref(), Some("u"));
    assert_eq!(o.preconditions.resource_version, Some(7));
    assert!(o.dry_run);
    let o = DeleteOptions::from_request(&q("orphanDependents=true"), None).unwrap();
    assert_eq!(o.propagation, Some(Propagation::Orphan));
    for bad in [
        "propagationPolicy=Sometimes",
        "gracePeriodSeconds=soon",
        "orphanDependents=false&propagationPolicy=Foreground",
    ] {
        assert!(DeleteOptions::from_request(&q(bad), None).is_err(), "{bad}");
    }
}
