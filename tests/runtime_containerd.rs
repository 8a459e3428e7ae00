//! The containerd adapter against a real containerd 1.6 + runc and a real loopback registry.
//! Nothing here skips: missing binaries fail the tests (see tests/common).
mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots::{ListSnapshotsRequest, StatSnapshotRequest};
use containerd_client::services::v1::{
    GetContainerRequest, GetImageRequest, GetRequest, InfoRequest, ListContentRequest,
};
use containerd_client::tonic::Code;
use daemonset_agent::runtime::client::Ctd;
use daemonset_agent::runtime::pull::{
    chain_ids, diff_ids, parse_manifest, read_content, PullError,
};
use daemonset_agent::runtime::{
    chain, ContainerRequest, ContainerdRuntime, OutputMode, PodSandbox, Runtime, RuntimeError,
    SandboxInfo, TaskState,
};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::json;

struct Env {
    /// First, so it drops first: tasks, mounts, cgroups and directories of the test go.
    _guard: common::Guard,
    /// The containerd namespace, one per test ("dsa-test-PID-RANDOM"): the guard removes its cgroups
    /// (`/sys/fs/cgroup/*/daemonset-agent/NS`) while other tests run in theirs.
    ns: String,
    ctd: common::Containerd,
    rt: ContainerdRuntime,
    state: PathBuf,
}

async fn env() -> Env {
    let ctd = common::Containerd::start();
    let state = ctd.path().join("agent-state");
    let ns = unique("dsa-test");
    let rt = ContainerdRuntime::connect(&ctd.socket, &ns, &state)
        .await
        .expect("connect to containerd");
    Env {
        _guard: common::Guard::new().containerd(&ctd),
        ns,
        ctd,
        rt,
        state,
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), rand::random::<u32>())
}

fn image(tag: &str) -> String {
    format!("{}/busybox:{tag}", common::registry())
}

fn pod_spec(v: serde_json::Value) -> PodSpec {
    serde_json::from_value(v).expect("pod spec")
}

/// A request for `container` with its image resolved, as the agent makes it.
async fn request(
    e: &Env,
    id: &str,
    pod: &PodSpec,
    container: serde_json::Value,
    sandbox: &SandboxInfo,
) -> ContainerRequest {
    let container: Container = serde_json::from_value(container).expect("container");
    let image =
        e.rt.ensure_image(container.image.as_deref().expect("an image"))
            .await
            .expect("ensure image");
    ContainerRequest {
        id: id.to_string(),
        labels: BTreeMap::from([
            (
                "io.daemonset-agent.managed-by".to_string(),
                "daemonset-agent".to_string(),
            ),
            (
                "io.daemonset-agent.container.name".to_string(),
                container.name.clone(),
            ),
        ]),
        pod_spec: pod.clone(),
        container,
        image,
        sandbox: sandbox.clone(),
        hostname: "testpod".to_string(),
        log_path: e.state.join("logs").join(format!("{id}.log")),
        pod: Default::default(),
    }
}

async fn sandbox(e: &Env, uid: &str, host_network: bool) -> SandboxInfo {
    e.rt.create_sandbox(&PodSandbox {
        uid: uid.to_string(),
        namespace: "default".into(),
        name: "testpod".into(),
        host_network,
        ..Default::default()
    })
    .await
    .expect("create sandbox")
}

async fn state_of(rt: &ContainerdRuntime, id: &str) -> Option<TaskState> {
    rt.list_containers()
        .await
        .expect("list")
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.state)
}

async fn wait_state(
    rt: &ContainerdRuntime,
    id: &str,
    what: &str,
    f: impl Fn(&TaskState) -> bool,
) -> TaskState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = state_of(rt, id).await;
        if let Some(s) = &st {
            if f(s) {
                return s.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {id} to be {what}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `net:[INODE]` out of `ls -l /proc/self/ns/net` output.
fn net_ns_of(ls: &str) -> String {
    let start = ls
        .find("net:[")
        .unwrap_or_else(|| panic!("no net:[..] in {ls:?}"));
    let end = ls[start..].find(']').map(|e| start + e + 1).unwrap();
    ls[start..end].to_string()
}

async fn wait_log(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never contained {needle:?}: {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that containerd has no task, container or snapshot `id` left.
async fn assert_gone(c: &Ctd, id: &str) {
    let task = c
        .tasks()
        .get(c.req(GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }))
        .await;
    assert_eq!(
        task.err().map(|s| s.code()),
        Some(Code::NotFound),
        "task {id} left"
    );
    let container = c
        .containers()
        .get(c.req(GetContainerRequest { id: id.into() }))
        .await;
    assert_eq!(
        container.err().map(|s| s.code()),
        Some(Code::NotFound),
        "container {id} left"
    );
    let snap = c
        .snapshots()
        .stat(c.req(StatSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: id.into(),
        }))
        .await;
    assert_eq!(
        snap.err().map(|s| s.code()),
        Some(Code::NotFound),
        "snapshot {id} left"
    );
}

/// A TCP proxy on loopback in front of the registry that counts the connections it accepted.
async fn counting_proxy(target: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (addr, count)
}

async fn content_labels(c: &Ctd, digest: &str) -> HashMap<String, String> {
    c.content()
        .info(c.req(InfoRequest {
            digest: digest.into(),
        }))
        .await
        .unwrap_or_else(|s| panic!("content {digest} missing in {}: {s}", c.namespace))
        .into_inner()
        .info
        .unwrap()
        .labels
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_leaves_what_ctr_leaves_and_a_second_pull_transfers_nothing() {
    let e = env().await;
    let (proxy, connections) = counting_proxy(common::registry()).await;
    let reference = format!("{proxy}/busybox:v1");
    let c = e.rt.client();

    let pulled = e.rt.ensure(&reference).await.expect("pull busybox:v1");
    assert_eq!(pulled.info.reference, reference);
    assert!(connections.load(Ordering::SeqCst) > 0);

    // image record -> manifest -> config -> layers, with the GC labels
    let img = c
        .images()
        .get(c.req(GetImageRequest {
            name: reference.clone(),
        }))
        .await
        .expect("image record")
        .into_inner()
        .image
        .unwrap();
    let target = img.target.unwrap();
    assert_eq!(target.digest, pulled.info.digest);
    let manifest_doc: serde_json::Value = serde_json::from_slice(
        &read_content(c, &target.digest)
            .await
            .unwrap()
            .expect("manifest stored"),
    )
    .unwrap();
    let manifest = parse_manifest(&manifest_doc).unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &read_content(c, &manifest.config.digest)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let diffs = diff_ids(&config).unwrap();
    let chain = chain_ids(&diffs);
    assert_eq!(pulled.chain_id, *chain.last().unwrap());

    let m = content_labels(c, &target.digest).await;
    assert_eq!(
        m.get("containerd.io/gc.ref.content.config"),
        Some(&manifest.config.digest)
    );
    for (i, l) in manifest.layers.iter().enumerate() {
        assert_eq!(
            m.get(&format!("containerd.io/gc.ref.content.l.{i}")),
            Some(&l.digest)
        );
        let ll = content_labels(c, &l.digest).await;
        assert_eq!(ll.get("containerd.io/uncompressed"), Some(&diffs[i]));
    }
    let cl = content_labels(c, &manifest.config.digest).await;
    assert_eq!(
        cl.get("containerd.io/gc.ref.snapshot.overlayfs"),
        Some(&pulled.chain_id)
    );
    for (i, id) in chain.iter().enumerate() {
        let info = c
            .snapshots()
            .stat(c.req(StatSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: id.clone(),
            }))
            .await
            .expect("committed snapshot of the chain")
            .into_inner()
            .info
            .unwrap();
        assert_eq!(info.kind, 3, "snapshot {id} is committed");
        let parent = if i == 0 {
            String::new()
        } else {
            chain[i - 1].clone()
        };
        assert_eq!(info.parent, parent);
    }
    // the pull lease is gone: nothing but the image holds the content
    let leases = c
        .leases()
        .list(c.req(containerd_client::services::v1::ListRequest { filters: vec![] }))
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert!(leases.is_empty(), "leases left: {leases:?}");

    // `ctr images pull --plain-http` of the same reference in another namespace leaves the same
    // content labels, the same snapshot chain and the same image target
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&e.ctd.socket)
        .args([
            "-n",
            "ctr-ref",
            "images",
            "pull",
            "--plain-http",
            &reference,
        ])
        .output()
        .expect("run ctr");
    assert!(
        out.status.success(),
        "ctr pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference_ns = Ctd::connect(&e.ctd.socket, "ctr-ref").await.unwrap();
    let ctr_img = reference_ns
        .images()
        .get(reference_ns.req(GetImageRequest {
            name: reference.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(ctr_img.target.unwrap(), target);
    let list_content = |c: Ctd| async move {
        let mut s = c
            .content()
            .list(c.req(ListContentRequest { filters: vec![] }))
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            out.extend(m.info);
        }
        out
    };
    let ours = list_content(c.clone()).await;
    let theirs = list_content(reference_ns.clone()).await;
    let by_digest = |infos: Vec<containerd_client::services::v1::Info>| {
        let mut m: Vec<(String, BTreeMap<String, String>)> = infos
            .into_iter()
            .map(|i| (i.digest, i.labels.into_iter().collect()))
            .collect();
        m.sort();
        m
    };
    assert_eq!(by_digest(ours), by_digest(theirs));
    let snaps = |c: Ctd| async move {
        let mut s = c
            .snapshots()
            .list(c.req(ListSnapshotsRequest {
                snapshotter: "overlayfs".into(),
                filters: vec![],
            }))
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            out.extend(m.info.into_iter().map(|i| {
                (
                    i.name,
                    i.parent,
                    i.kind,
                    i.labels.into_iter().collect::<BTreeMap<_, _>>(),
                )
            }));
        }
        out.sort();
        out
    };
    let ours_snaps = snaps(c.clone()).await;
    let theirs_snaps = snaps(reference_ns.clone()).await;
    let strip = |v: Vec<(String, String, i32, BTreeMap<String, String>)>| {
        v.into_iter()
            .map(|(n, p, k, mut l)| {
                l.retain(|k, _| !k.starts_with("containerd.io/snapshot/"));
                (n, p, k, l)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(ours_snaps), strip(theirs_snaps));

    // a second ensure of the present image does not touch the registry
    let before = connections.load(Ordering::SeqCst);
    let again = e.rt.ensure(&reference).await.expect("ensure present image");
    assert_eq!(again, pulled);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        before,
        "second ensure contacted the registry"
    );
    let info = e.rt.ensure_image(&reference).await.unwrap();
    assert_eq!(info, pulled);
    assert_eq!(connections.load(Ordering::SeqCst), before);

    // concurrent ensures of a new image: one pull, all succeed with the same result
    let v2 = format!("{proxy}/busybox:v2");
    let rt = &e.rt;
    let all = futures::future::join_all((0..4).map(|_| rt.ensure(&v2))).await;
    let first = all[0].as_ref().expect("concurrent pull").clone();
    for r in all {
        assert_eq!(r.expect("concurrent pull"), first);
    }
    assert_ne!(first.info.digest, pulled.info.digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_image_is_an_image_pull_error_naming_it() {
    let e = env().await;
    let reference = image("no-such-tag");
    let err = e.rt.ensure_image(&reference).await.unwrap_err();
    match &err {
        RuntimeError::ImagePull { image, source } => {
            assert_eq!(image, &reference);
            assert!(
                matches!(source, PullError::Registry { op: "resolve", .. }),
                "{source:?}"
            );
        }
        other => panic!("expected ImagePull, got {other:?}"),
    }
    // the pod's message says what failed and gives the registry's answer
    let message = chain(&err);
    assert!(
        message.starts_with(&format!("pull image {reference}: resolve ")),
        "{message}"
    );
    assert!(message.contains("manifest unknown"), "{message}");
    eprintln!("a missing tag's message: {message}");
    let unreachable = format!("127.0.0.1:{}/busybox:v1", common::free_port());
    let err = e.rt.ensure_image(&unreachable).await.unwrap_err();
    let message = chain(&err);
    assert!(
        message.contains(&unreachable) && message.contains("Connection refused"),
        "{message}"
    );
    eprintln!("an unreachable registry's message: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_with_limits_logs_stop_and_remove() {
    let e = env().await;
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let pod = pod_spec(json!({"containers": []}));
    let id = unique("limits");
    let t = Instant::now();
    let req = request(
        &e,
        &id,
        &pod,
        json!({"name": "main", "image": image("v1"), "command": ["sleep", "3600"],
               "resources": {"limits": {"cpu": "100m", "memory": "200Mi"}}}),
        &sb,
    )
    .await;
    e.rt.run_container(&req).await.expect("run");
    eprintln!(
        "first ensure_image + run_container (pull included): {:?}",
        t.elapsed()
    );
    let st = wait_state(&e.rt, &id, "running", |s| {
        matches!(s, TaskState::Running { .. })
    })
    .await;
    assert!(matches!(st, TaskState::Running { pid } if pid > 0));
    let listed =
        e.rt.list_containers()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.id == id)
            .unwrap();
    assert_eq!(listed.labels, req.labels);
    assert_eq!(listed.image, image("v1"));
    assert!(listed.created_at > 0);

    let cg = format!("daemonset-agent/{}/{id}", e.ns);
    let mem = std::fs::read_to_string(format!("/sys/fs/cgroup/memory/{cg}/memory.limit_in_bytes"))
        .unwrap();
    assert_eq!(mem.trim(), "209715200");
    let quota =
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/{cg}/cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "10000");
    let period =
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/{cg}/cpu.cfs_period_us")).unwrap();
    assert_eq!(period.trim(), "100000");
    let shares = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/{cg}/cpu.shares")).unwrap();
    assert_eq!(shares.trim(), "102");

    // running the same id again fails and leaves the running one alone
    assert!(e.rt.run_container(&req).await.is_err());
    assert!(matches!(
        state_of(&e.rt, &id).await,
        Some(TaskState::Running { .. })
    ));

    // create+start of a present image through the adapter, timed
    let mut times = Vec::new();
    for i in 0..5 {
        let id2 = format!("{id}-t{i}");
        let r2 = request(
            &e,
            &id2,
            &pod,
            json!({"name": "t", "image": image("v1"), "command": ["sleep", "3600"]}),
            &sb,
        )
        .await;
        let t = Instant::now();
        e.rt.run_container(&r2).await.expect("run timed");
        times.push(t.elapsed());
        e.rt.remove_container(&id2).await.unwrap();
        assert_gone(e.rt.client(), &id2).await;
    }
    times.sort();
    eprintln!("run_container of a present image (create+start), sorted: {times:?}");

    // busybox sleep is PID 1 and has no TERM handler, so TERM is ignored: SIGKILL after the grace
    let t = Instant::now();
    e.rt.stop_container(&id, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(500));
    let st = state_of(&e.rt, &id).await.unwrap();
    assert!(
        matches!(
            st,
            TaskState::Stopped {
                exit_code: 137,
                exited_at: Some(_)
            }
        ),
        "{st:?}"
    );
    e.rt.stop_container(&id, Duration::from_secs(1))
        .await
        .expect("stop of a stopped task is ok");
    e.rt.remove_container(&id).await.unwrap();
    assert_gone(e.rt.client(), &id).await;
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory/{cg}")).exists(),
        "cgroup left"
    );
    e.rt.remove_container(&id)
        .await
        .expect("removing a gone container is ok");
    e.rt.stop_container(&id, Duration::from_secs(1))
        .await
        .expect("stopping a gone container is ok");
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn output_goes_to_the_log_file_and_exits_are_reported() {
    let e = env().await;
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let pod = pod_spec(json!({"containers": []}));
    let mut exits = e.rt.subscribe_exits().await.unwrap();
    let id = unique("hello");
    let req = request(
        &e,
        &id,
        &pod,
        json!({"name": "hello", "image": image("v1"), "command": ["sh", "-c", "echo hello; echo oops >&2; echo $GREETING; exit 3"],
               "env": [{"name": "GREETING", "value": "from-env"}]}),
        &sb,
    )
    .await;
    e.rt.run_container(&req).await.expect("run");
    let exited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match exits.recv().await {
                Some(x) if x == id => return x,
                Some(_) => continue,
                None => panic!("exit stream closed"),
            }
        }
    })
    .await
    .expect("exit event");
    assert_eq!(exited, id);
    let st = wait_state(&e.rt, &id, "stopped", |s| {
        matches!(s, TaskState::Stopped { .. })
    })
    .await;
    assert!(
        matches!(st, TaskState::Stopped { exit_code: 3, .. }),
        "{st:?}"
    );
    wait_log(&req.log_path, "from-env").await;
    let log = wait_log(&req.log_path, "oops").await;
    // stdout and stderr are copied by separate goroutines of the shim: order between them varies
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort();
    assert_eq!(lines, ["from-env", "hello", "oops"]);
    e.rt.remove_container(&id).await.unwrap();
    assert_gone(e.rt.client(), &id).await;
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_honoured_within_the_grace_and_sigkill_follows_when_ignored() {
    let e = env().await;
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let pod = pod_spec(json!({"containers": []}));
    let polite = unique("polite");
    let stubborn = unique("stubborn");
    for (id, script) in [
        (
            &polite,
            "trap 'echo got-term; exit 0' TERM; echo ready; sleep 3600 & wait",
        ),
        (
            &stubborn,
            "trap '' TERM; echo ready; while true; do sleep 1; done",
        ),
    ] {
        let req = request(
            &e,
            id,
            &pod,
            json!({"name": "c", "image": image("v1"), "command": ["sh", "-c", script]}),
            &sb,
        )
        .await;
        e.rt.run_container(&req).await.expect("run");
        wait_log(&req.log_path, "ready").await;
    }
    let t = Instant::now();
    e.rt.stop_container(&polite, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "TERM not honoured: {:?}",
        t.elapsed()
    );
    let st = state_of(&e.rt, &polite).await.unwrap();
    assert!(
        matches!(st, TaskState::Stopped { exit_code: 0, .. }),
        "{st:?}"
    );
    wait_log(
        &e.state.join("logs").join(format!("{polite}.log")),
        "got-term",
    )
    .await;

    let t = Instant::now();
    e.rt.stop_container(&stubborn, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "stopped before the grace ended"
    );
    let st = state_of(&e.rt, &stubborn).await.unwrap();
    assert!(
        matches!(st, TaskState::Stopped { exit_code: 137, .. }),
        "{st:?}"
    );
    for id in [&polite, &stubborn] {
        e.rt.remove_container(id).await.unwrap();
        assert_gone(e.rt.client(), id).await;
    }
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_host_path_is_invalid_spec_and_leaves_nothing() {
    let e = env().await;
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let missing = e.ctd.path().join("no-such-dir");
    let pod = pod_spec(json!({"containers": [], "volumes": [
        {"name": "data", "hostPath": {"path": missing, "type": "Directory"}}]}));
    let id = unique("badvol");
    let req = request(
        &e,
        &id,
        &pod,
        json!({"name": "c", "image": image("v1"), "command": ["true"],
               "volumeMounts": [{"name": "data", "mountPath": "/data"}]}),
        &sb,
    )
    .await;
    match e.rt.run_container(&req).await {
        Err(RuntimeError::InvalidSpec { id: got, source }) => {
            assert_eq!(got, id);
            let reason = source.to_string();
            assert!(
                reason.contains("data") && reason.contains(&missing.display().to_string()),
                "{reason}"
            );
        }
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    assert_gone(e.rt.client(), &id).await;

    // a failure after the container exists (runc cannot exec the command) is cleaned up too,
    // so a retry with the same id starts clean
    let id = unique("noexec");
    let pod = pod_spec(json!({"containers": []}));
    let mut req = request(
        &e,
        &id,
        &pod,
        json!({"name": "c", "image": image("v1"), "command": ["/no/such/binary"]}),
        &sb,
    )
    .await;
    let err = e.rt.run_container(&req).await.unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Containerd {
                op: "create task",
                ..
            }
        ),
        "{err:?}"
    );
    assert_gone(e.rt.client(), &id).await;
    req.container.command = Some(vec!["true".into()]);
    e.rt.run_container(&req)
        .await
        .expect("retry with the same id");
    wait_state(&e.rt, &id, "stopped", |s| {
        matches!(s, TaskState::Stopped { exit_code: 0, .. })
    })
    .await;
    e.rt.remove_container(&id).await.unwrap();
    assert_gone(e.rt.client(), &id).await;
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_of_a_pod_share_its_network_namespace_and_volumes() {
    let e = env().await;
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let again = sandbox(&e, &uid, false).await;
    assert_eq!(sb, again, "create_sandbox is idempotent");
    let pod_sb = PodSandbox {
        uid: uid.clone(),
        namespace: "default".into(),
        name: "testpod".into(),
        host_network: false,
        ..Default::default()
    };
    assert_eq!(
        e.rt.sandbox(&pod_sb).await.unwrap(),
        Some(sb.clone()),
        "the sandbox of a pod a restarted agent adopts"
    );
    let netns = sb.netns.clone().expect("a network namespace");
    let host_dir = e.ctd.path().join("hostdir");
    let pod = pod_spec(json!({"containers": [], "volumes": [
        {"name": "scratch", "emptyDir": {}},
        {"name": "host", "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"}}]}));
    let mounts = json!([{"name": "scratch", "mountPath": "/scratch"}, {"name": "host", "mountPath": "/host"}]);
    let server = unique("server");
    let client = unique("client");
    let server_req = request(
        &e,
        &server,
        &pod,
        json!({"name": "server", "image": image("v1"), "volumeMounts": mounts,
               "command": ["sh", "-c", "ls -l /proc/self/ns/net > /scratch/server-ns; sleep 60 | nc -l -p 7777"]}),
        &sb,
    )
    .await;
    e.rt.run_container(&server_req).await.expect("run server");
    let ns_file = sb.pod_dir.join("volumes/scratch/server-ns");
    common::wait_for("server netns file", Duration::from_secs(20), || {
        std::fs::read_to_string(&ns_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    // nc needs a moment to listen; retry the client until the message arrives. (The server's
    // stdin stays open: busybox nc may end at stdin's EOF before it reads the connection.)
    let client_req = request(
        &e,
        &client,
        &pod,
        json!({"name": "client", "image": image("v1"), "volumeMounts": mounts,
               "command": ["sh", "-c", "ls -l /proc/self/ns/net > /host/client-ns; until echo ping-over-lo | nc 127.0.0.1 7777; do sleep 0.1; done"]}),
        &sb,
    )
    .await;
    e.rt.run_container(&client_req).await.expect("run client");
    wait_log(&server_req.log_path, "ping-over-lo").await;
    let server_ns = net_ns_of(&std::fs::read_to_string(&ns_file).unwrap());
    let client_ns = net_ns_of(&wait_log(&host_dir.join("client-ns"), "net:").await);
    assert_eq!(server_ns, client_ns);
    let pod_ns = std::fs::metadata(&netns).unwrap();
    assert!(server_ns.contains(&format!(
        "net:[{}]",
        std::os::unix::fs::MetadataExt::ino(&pod_ns)
    )));
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        server_ns.trim(),
        own.to_string_lossy(),
        "pod shares the host's network namespace"
    );

    for id in [&server, &client] {
        e.rt.stop_container(id, Duration::from_secs(1))
            .await
            .unwrap();
        e.rt.remove_container(id).await.unwrap();
        assert_gone(e.rt.client(), id).await;
    }
    e.rt.remove_sandbox(&uid).await.unwrap();
    assert!(!netns.exists() && !sb.pod_dir.exists());
    assert_eq!(e.rt.sandbox(&pod_sb).await.unwrap(), None);
    e.rt.remove_sandbox(&uid)
        .await
        .expect("removing a gone sandbox is ok");
}

/// `/daemonset-agent/NS` (and `/daemonset-agent/NS/ID` with an id) in every cgroup hierarchy
/// where it exists.
fn cgroups_of(namespace: &str, id: Option<&str>) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            let fstype = fs.split(' ').next()?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| mount.split(' ').nth(4))?
        })
        .map(|h| {
            let dir = Path::new(h).join("daemonset-agent").join(namespace);
            id.map_or(dir.clone(), |id| dir.join(id))
        })
        .filter(|p| p.is_dir())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_pod_leaves_no_cgroup_behind() {
    // every test has a namespace of its own: the parent cgroup is the namespace's
    let e = env().await;
    let ns = e.ns.clone();
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let pod = pod_spec(json!({"containers": []}));
    let (a, b) = (unique("cg-a"), unique("cg-b"));
    for id in [&a, &b] {
        let req = request(
            &e,
            id,
            &pod,
            json!({"name": id, "image": image("v1"), "command": ["sleep", "3600"]}),
            &sb,
        )
        .await;
        e.rt.run_container(&req).await.expect("run");
    }
    assert!(
        !cgroups_of(&ns, Some(&a)).is_empty(),
        "runc made the container's cgroup under /daemonset-agent/{ns}"
    );
    e.rt.stop_container(&a, Duration::from_secs(1))
        .await
        .unwrap();
    e.rt.remove_container(&a).await.unwrap();
    assert_eq!(cgroups_of(&ns, Some(&a)), Vec::<PathBuf>::new());
    assert!(
        !cgroups_of(&ns, None).is_empty(),
        "the namespace's cgroup stays while a container of it has one"
    );
    e.rt.stop_container(&b, Duration::from_secs(1))
        .await
        .unwrap();
    e.rt.remove_container(&b).await.unwrap();
    assert_eq!(
        cgroups_of(&ns, None),
        Vec::<PathBuf>::new(),
        "the last container took the namespace's cgroup with it"
    );
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pods_share_the_host_namespace() {
    let e = env().await;
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, true).await;
    assert_eq!(sb.netns, None);
    let pod = pod_spec(json!({"containers": [], "hostNetwork": true}));
    let id = unique("hostnet");
    let req = request(
        &e,
        &id,
        &pod,
        json!({"name": "c", "image": image("v1"), "command": ["ls", "-l", "/proc/self/ns/net"]}),
        &sb,
    )
    .await;
    e.rt.run_container(&req).await.expect("run");
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    wait_log(&req.log_path, &own.to_string_lossy()).await;
    wait_state(&e.rt, &id, "stopped", |s| {
        matches!(s, TaskState::Stopped { .. })
    })
    .await;
    e.rt.remove_container(&id).await.unwrap();
    assert_gone(e.rt.client(), &id).await;
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oci_archive_imports_and_runs_without_a_registry() {
    let e = env().await;
    let layout = e.ctd.path().join("layout");
    let out = std::process::Command::new("python3")
        .arg(common::repo_root().join("tests/fixtures/make-image.py"))
        .arg(&layout)
        .arg("v1")
        .output()
        .expect("run make-image.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tar = e.ctd.path().join("image.tar");
    let ok = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar");

    let images =
        e.rt.import_oci_archive(&tar, "airgap.invalid/busybox")
            .await
            .expect("import");
    assert_eq!(images.len(), 1);
    let img = &images[0];
    assert_eq!(img.info.reference, "airgap.invalid/busybox:v1");
    // the same bytes as the registry's busybox:v1
    let pulled = e.rt.ensure(&image("v1")).await.unwrap();
    assert_eq!(img.chain_id, pulled.chain_id);
    assert_eq!(img.info.digest, pulled.info.digest);
    // importing again is a no-op that succeeds
    assert_eq!(
        e.rt.import_oci_archive(&tar, "airgap.invalid/busybox")
            .await
            .unwrap(),
        images
    );

    // a container of it runs: its registry does not exist, so nothing was fetched
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let pod = pod_spec(json!({"containers": []}));
    let id = unique("airgap");
    let req = request(
        &e,
        &id,
        &pod,
        json!({"name": "c", "image": "airgap.invalid/busybox:v1", "command": ["cat", "/etc/image-label"]}),
        &sb,
    )
    .await;
    e.rt.run_container(&req).await.expect("run imported image");
    wait_log(&req.log_path, "v1").await;
    wait_state(&e.rt, &id, "stopped", |s| {
        matches!(s, TaskState::Stopped { exit_code: 0, .. })
    })
    .await;
    e.rt.remove_container(&id).await.unwrap();
    assert_gone(e.rt.client(), &id).await;
    e.rt.remove_sandbox(&uid).await.unwrap();
}

/// The first `n` CRI records of a log file, as (stream, partial, message), once there are `n`.
async fn cri_records(
    path: &Path,
    n: usize,
) -> Vec<(daemonset_agent::logdriver::cri::Stream, bool, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = std::fs::read(path).unwrap_or_default();
        let lines: Vec<&[u8]> = f.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        if lines.len() >= n {
            return lines
                .iter()
                .map(|l| {
                    let r = daemonset_agent::logdriver::cri::parse_record(l).unwrap_or_else(|| {
                        panic!("not a CRI record: {:?}", String::from_utf8_lossy(l))
                    });
                    (r.stream, r.partial, r.message.to_vec())
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} has fewer than {n} records: {:?}",
            path.display(),
            String::from_utf8_lossy(&f)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The journal entries of container `id`, once there are at least `n`.
async fn journal_entries(j: &common::Journald, id: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = j.entries_where("CONTAINER_ID", id);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "journald has {} entries of {id}, not {n}: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The log driver, as the agent uses it: started by the shim, it writes CRI records to the file
/// and one journald entry per record to a journald of the test's own, with the container's
/// fields; long lines are cut at 16 KiB, bytes are kept as they are, and the driver exits once
/// the container's streams are closed.
#[tokio::test(flavor = "multi_thread")]
async fn output_goes_through_the_log_driver_to_journald_and_a_cri_file() {
    use daemonset_agent::logdriver::cri::{Stream, MAX_LINE};
    let journald = common::Journald::start();
    let mut e = env().await;
    e.rt = e.rt.clone().with_output(OutputMode::Driver {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_daemonset-agent")),
        journal: Some(journald.socket.clone()),
        node: "node-x".into(),
        max_size: 0,
        max_files: 5,
    });
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let pod = pod_spec(json!({"containers": []}));
    let id = unique("talker");
    let mut req = request(
        &e,
        &id,
        &pod,
        json!({"name": "main", "image": image("v1"), "command": ["sh", "-c",
            "echo out-1; sleep 0.2; echo err-1 >&2; sleep 0.2; \
             s=x; for i in $(seq 15); do s=$s$s; done; printf '%sEND\\n' \"$s\"; \
             printf 'bad\\377utf\\n'; printf 'nul\\000byte\\n'; printf 'two\\r\\n'; sleep 0.2; \
             echo err-2 >&2; sleep 0.2; printf no-newline"]}),
        &sb,
    )
    .await;
    for (k, v) in [
        ("io.daemonset-agent.pod.name", "testpod"),
        ("io.daemonset-agent.pod.namespace", "default"),
        ("io.daemonset-agent.daemonset.name", "talkers"),
    ] {
        req.labels.insert(k.into(), v.into());
    }
    e.rt.run_container(&req).await.expect("run");
    wait_state(&e.rt, &id, "stopped", |s| {
        matches!(s, TaskState::Stopped { exit_code: 0, .. })
    })
    .await;
    let big = "x".repeat(1 << 15);
    let want: Vec<(Stream, bool, Vec<u8>)> = vec![
        (Stream::Stdout, false, b"out-1".to_vec()),
        (Stream::Stderr, false, b"err-1".to_vec()),
        (Stream::Stdout, true, big.as_bytes()[..MAX_LINE].to_vec()),
        (Stream::Stdout, true, big.as_bytes()[MAX_LINE..].to_vec()),
        (Stream::Stdout, false, b"END".to_vec()),
        (Stream::Stdout, false, b"bad\xffutf".to_vec()),
        (Stream::Stdout, false, b"nul\0byte".to_vec()),
        (Stream::Stdout, false, b"two".to_vec()),
        (Stream::Stderr, false, b"err-2".to_vec()),
        (Stream::Stdout, true, b"no-newline".to_vec()),
    ];
    // The shim keeps its ends of the pipes until the task is deleted: every line is there at
    // once, the unfinished last one only when the task goes and the streams close.
    let records = cri_records(&req.log_path, want.len() - 1).await;
    assert_eq!(records, want[..want.len() - 1]);
    journal_entries(&journald, &id, want.len() - 1).await;
    e.rt.remove_container(&id).await.unwrap();
    let records = cri_records(&req.log_path, want.len()).await;
    assert_eq!(records, want);
    // journald: one entry per record, with the container's fields
    let entries = journal_entries(&journald, &id, want.len()).await;
    assert_eq!(entries.len(), want.len());
    for (entry, (stream, partial, msg)) in entries.iter().zip(&want) {
        assert_eq!(
            common::field(entry, "MESSAGE").as_ref(),
            Some(msg),
            "{entry}"
        );
        let priority = if *stream == Stream::Stdout { "6" } else { "3" };
        assert_eq!(entry["PRIORITY"], priority, "{entry}");
        assert_eq!(
            entry.get("CONTAINER_PARTIAL_MESSAGE").is_some(),
            *partial,
            "{entry}"
        );
        for (k, v) in [
            ("SYSLOG_IDENTIFIER", "main"),
            ("CONTAINER_NAME", "main"),
            ("POD", "testpod"),
            ("NAMESPACE", "default"),
            ("DAEMONSET", "talkers"),
            ("NODE", "node-x"),
        ] {
            assert_eq!(entry[k], v, "{k} in {entry}");
        }
    }
    // the driver exits once both streams are closed
    let log_path = req.log_path.to_string_lossy().to_string();
    common::wait_for("the log driver to exit", Duration::from_secs(20), || {
        common::pids_with(&["log-driver", &log_path])
            .is_empty()
            .then_some(())
    });
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test]
async fn the_log_driver_rotates_the_file_at_its_size() {
    use daemonset_agent::logdriver::cri;
    let mut e = env().await;
    e.rt = e.rt.clone().with_output(OutputMode::Driver {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_daemonset-agent")),
        journal: None,
        node: "node-x".into(),
        max_size: 4096,
        max_files: 3,
    });
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let pod = pod_spec(json!({"containers": []}));
    let id = unique("chatty");
    // 400 numbered lines of 60 bytes: about 34 KB of CRI records, 8 rotations at 4 KiB
    let req = request(
        &e,
        &id,
        &pod,
        json!({"name": "main", "image": image("v1"), "command": ["sh", "-c",
            "i=0; while [ $i -lt 400 ]; do i=$((i+1)); printf 'line-%04d-%s\\n' $i \
             xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done"]}),
        &sb,
    )
    .await;
    e.rt.run_container(&req).await.expect("run");
    wait_state(&e.rt, &id, "stopped", |s| {
        matches!(s, TaskState::Stopped { exit_code: 0, .. })
    })
    .await;
    e.rt.remove_container(&id).await.unwrap();
    let log_path = req.log_path.to_string_lossy().to_string();
    common::wait_for("the log driver to exit", Duration::from_secs(20), || {
        common::pids_with(&["log-driver", &log_path])
            .is_empty()
            .then_some(())
    });
    let numbered = |i: u32| PathBuf::from(format!("{log_path}.{i}"));
    assert!(
        numbered(1).exists() && numbered(2).exists(),
        "rotated files"
    );
    assert!(!numbered(3).exists(), "at most 3 files");
    // oldest first: the kept lines are the last ones written, consecutive, none torn
    let mut lines = Vec::new();
    for p in [numbered(2), numbered(1), req.log_path.clone()] {
        let text = std::fs::read(&p).unwrap();
        if p != req.log_path {
            assert!(
                text.len() >= 4096,
                "{} rotated at {} bytes",
                p.display(),
                text.len()
            );
        }
        for l in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let rec = cri::parse_record(l).unwrap_or_else(|| panic!("not a CRI record: {l:?}"));
            lines.push(String::from_utf8(rec.message.to_vec()).unwrap());
        }
    }
    assert_eq!(
        lines.last().map(|l| &l[..9]),
        Some("line-0400"),
        "{lines:?}"
    );
    let first: usize = lines[0][5..9].parse().unwrap();
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(&l[..9], format!("line-{:04}", first + k), "consecutive");
    }
    assert!(first > 1, "older lines were rotated away");
    e.rt.remove_sandbox(&uid).await.unwrap();
}

#[tokio::test]
async fn probes_exec_in_the_container_with_a_timeout_and_dial_into_its_netns() {
    use daemonset_agent::agent::prober::{NetProber, Prober, Target};
    use daemonset_agent::core::probe::{Handler, Outcome};
    use daemonset_agent::runtime::ExecExit;
    let e = env().await;
    let uid = unique("pod");
    let sb = sandbox(&e, &uid, false).await;
    let pod = pod_spec(json!({"containers": []}));
    let id = unique("probed");
    let port = common::free_port();
    let req = request(
        &e,
        &id,
        &pod,
        json!({"name": "main", "image": image("v1"), "command": ["sh", "-c",
            format!("echo hi > /tmp/f; mkdir -p /www; echo ok > /www/index.html; exec httpd -f -p {port} -h /www")]}),
        &sb,
    )
    .await;
    e.rt.run_container(&req).await.expect("run");
    wait_state(&e.rt, &id, "running", |s| {
        matches!(s, TaskState::Running { .. })
    })
    .await;
    let sh = |c: &str| vec!["sh".to_string(), "-c".to_string(), c.to_string()];
    let one = Duration::from_secs(1);
    // the command runs inside the container: its files, its exit code
    let mut exit = Err(RuntimeError::NotFound(String::new()));
    for _ in 0..50 {
        exit =
            e.rt.exec_sync(&id, &sh("test -f /tmp/f"), one)
                .await
                .map(|r| r.exit);
        if matches!(exit, Ok(ExecExit::Exited(0))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(exit.unwrap(), ExecExit::Exited(0));
    // its output (stdout and stderr) comes back, for the failure's message
    let r =
        e.rt.exec_sync(&id, &sh("echo out; echo err >&2; cat /tmp/f; exit 3"), one)
            .await
            .unwrap();
    assert_eq!(r.exit, ExecExit::Exited(3));
    for line in ["out", "err", "hi"] {
        assert!(r.output.lines().any(|l| l == line), "{:?}", r.output);
    }
    assert!(
        std::fs::read_dir(e.state.join("exec"))
            .unwrap()
            .next()
            .is_none(),
        "the output files are removed"
    );
    // timeoutSeconds is enforced: the command is killed and the call returns soon after
    let t = Instant::now();
    assert_eq!(
        e.rt.exec_sync(&id, &sh("sleep 30"), one)
            .await
            .unwrap()
            .exit,
        ExecExit::TimedOut
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!("exec probe timing out at 1 s returned after {took:?}");
    let mut times = vec![];
    for _ in 0..10 {
        let t = Instant::now();
        e.rt.exec_sync(&id, &sh("true"), one).await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "exec probe round trip: median {:?}, max {:?}",
        times[5], times[9]
    );
    // network probes dial the pod's own loopback, where httpd listens
    let prober = NetProber {
        runtime: Arc::new(e.rt.clone()),
    };
    let target = Target {
        container_id: id.clone(),
        netns: sb.netns.clone(),
    };
    let http = Handler::Http {
        https: false,
        host: None,
        port,
        path: "/index.html".into(),
        headers: vec![],
    };
    let mut outcome = Outcome::Error(String::new());
    for _ in 0..50 {
        outcome = prober.probe(&target, &http, one).await;
        if outcome == Outcome::Success {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outcome, Outcome::Success);
    let mut times = vec![];
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(prober.probe(&target, &http, one).await, Outcome::Success);
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "httpGet probe in the pod netns: median {:?}, max {:?}",
        times[5], times[9]
    );
    let missing = Handler::Http {
        https: false,
        host: None,
        port,
        path: "/missing".into(),
        headers: vec![],
    };
    assert!(
        matches!(prober.probe(&target, &missing, one).await, Outcome::Failure(m) if m.contains("404"))
    );
    let tcp = Handler::Tcp { host: None, port };
    assert_eq!(prober.probe(&target, &tcp, one).await, Outcome::Success);
    // from the host's namespace nothing answers there
    let host = Target {
        container_id: id.clone(),
        netns: None,
    };
    assert!(matches!(
        prober.probe(&host, &tcp, one).await,
        Outcome::Failure(_)
    ));
    // grpc: a health server listening only inside the pod's network namespace
    let (grpc_port, netns) = (common::free_port(), sb.netns.clone().unwrap());
    let listener = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&netns).unwrap();
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        std::net::TcpListener::bind(("127.0.0.1", grpc_port)).unwrap()
    })
    .join()
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(
        tokio::net::TcpListener::from_std(listener).unwrap(),
    );
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
    });
    let grpc = Handler::Grpc {
        port: grpc_port,
        service: String::new(),
    };
    assert_eq!(prober.probe(&target, &grpc, one).await, Outcome::Success);
    assert!(matches!(
        prober.probe(&host, &grpc, one).await,
        Outcome::Failure(_)
    ));
    // exec through the prober, and the container's own task is untouched by all this
    let exec = Handler::Exec(sh("echo not healthy; exit 1"));
    assert!(matches!(
        prober.probe(&target, &exec, one).await,
        Outcome::Failure(m) if m.contains("exited with 1: not healthy")
    ));
    assert!(matches!(
        state_of(&e.rt, &id).await,
        Some(TaskState::Running { .. })
    ));
    e.rt.stop_container(&id, Duration::from_secs(2))
        .await
        .unwrap();
    e.rt.remove_container(&id).await.unwrap();
    e.rt.remove_sandbox(&uid).await.unwrap();
}
