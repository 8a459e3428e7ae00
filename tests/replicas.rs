//! Several `daemonset-agent server` replicas on one etcd, against real etcd members on loopback
//! (Debian's `etcd-server`; a missing `etcd` fails, it is not skipped): the cluster secrets they
//! share through the store (one CA when they start together, any admin kubeconfig or token on any
//! replica, the value encrypted at rest and never served by the API), one leader running the
//! controllers, a write on one seen by a watch on the other, the leader killed (the other takes
//! the controllers within the lease duration, no acknowledged write lost), an etcd member killed,
//! and a leader frozen past its lease that must not act as leader when it wakes.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::Endpoint;
use common::etcd::{ok, rv, watch_events, Etcd, Server};
use common::wait_for;
use serde_json::{json, Value};

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/daemonset-agent-controllers";
const CMS: &str = "/api/v1/namespaces/default/configmaps";
const DSS: &str = "/apis/apps/v1/namespaces/default/daemonsets";
/// The test's own ConfigMaps (the controllers also publish kube-root-ca.crt).
const SEL: &str = "labelSelector=t%3Dreplicas";
/// Short leader election, so that a take-over fits a test: lease 6 s, renew deadline 4 s,
/// retry 1 s (kube-controller-manager's are 15/10/2).
const LEASE_SECONDS: u64 = 6;
const ELECTION: &[&str] = &[
    "--leader-elect-lease-duration",
    "6s",
    "--leader-elect-renew-deadline",
    "4s",
    "--leader-elect-retry-period",
    "1s",
];
const STARTED_LEADING: &str = "leading: controllers started";
const STOPPED_LEADING: &str = "leadership lost: controllers stopped";

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap()
}

fn cm(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": {"t": "replicas"}}, "data": {"v": name}})
    .to_string()
}

fn daemonset(name: &str) -> String {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
           "spec": {"selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    .to_string()
}

/// `kubectl --kubeconfig KUBECONFIG [--server https://AT] ARGS`, which must succeed; its output.
fn kubectl(kubeconfig: &Path, at: Option<std::net::SocketAddr>, args: &[&str]) -> String {
    let mut cmd = Command::new(common::kubectl());
    cmd.arg("--kubeconfig").arg(kubeconfig);
    if let Some(at) = at {
        cmd.arg(format!("--server=https://{at}"));
    }
    let out = cmd.args(args).output().expect("run kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `daemonset-agent token ARGS --kubeconfig KUBECONFIG`: its output, or its error output.
fn token_cli(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"))
        .arg("token")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .expect("run daemonset-agent token");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn read(s: &Server, file: &str) -> String {
    std::fs::read_to_string(s.data.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn kubeconfig(s: &Server) -> PathBuf {
    s.data.join("admin.kubeconfig")
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

fn holder(api: &Endpoint) -> Option<String> {
    let (code, body) = api.try_get(LEASE).ok()?;
    if code != 200 {
        return None;
    }
    let lease: Value = serde_json::from_str(&body).ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

fn identity(s: &Server) -> String {
    read(s, "leader-identity").trim().to_string()
}

/// Two replicas started at the same moment on an empty etcd end with one CA, one signing key
/// and one admin token (one of them stored them, the other loaded them), each with a serving
/// certificate of its own; either admin kubeconfig works on either replica (also with kubectl),
/// and `token create|list|delete` on one is seen by the other. The shared value is encrypted at
/// rest by the EncryptionConfiguration and is no object of the API.
#[test]
fn replicas_started_together_share_one_ca_and_their_credentials() {
    use base64::Engine as _;
    let etcd = Etcd::start(1);
    let dir = tempdir("dsa-replicas-ca-");
    let config = dir.path().join("encryption.yaml");
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    std::fs::write(
        &config,
        format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k1\n        secret: {key}\n  - identity: {{}}\n"),
    )
    .unwrap();
    let extra = ["--encryption-provider-config", config.to_str().unwrap()];
    let a = Server::spawn(dir.path(), "a", &etcd, &extra);
    let b = Server::spawn(dir.path(), "b", &etcd, &extra);
    a.wait_ready("a");
    b.wait_ready("b");

    for file in ["tls/ca.crt", "tls/ca.key", "service-account.key"] {
        assert_eq!(read(&a, file), read(&b, file), "{file} differs");
    }
    assert_ne!(read(&a, "tls/server.crt"), read(&b, "tls/server.crt"));
    let stored: Vec<bool> = [&a, &b]
        .iter()
        .map(|s| {
            s.proc
                .log()
                .contains("stored the cluster's shared secrets in etcd")
        })
        .collect();
    assert_eq!(
        stored.iter().filter(|s| **s).count(),
        1,
        "one replica stores the secrets, the other loads them: {stored:?}"
    );
    assert_eq!(
        common::api::admin_credential(&kubeconfig(&a)),
        common::api::admin_credential(&kubeconfig(&b)),
        "one CA and one admin token in both kubeconfigs"
    );
    for (cred, at) in [(&a, &b), (&b, &a)] {
        ok(
            Endpoint::admin(at.addr, &cred.data).get("/api/v1/namespaces"),
            200,
        );
        kubectl(&kubeconfig(cred), Some(at.addr), &["get", "namespaces"]);
    }

    // encrypted at rest, beside the objects' prefix, and no object of the API
    let raw = etcd
        .ctl(&["get", "/bootstrap/registry", "--print-value-only"])
        .unwrap();
    assert!(raw.starts_with("k8s:enc:aesgcm:v1:k1:"), "{raw:.40}");
    assert!(!raw.contains("PRIVATE KEY"));
    let (code, _) = a
        .api()
        .get("/api/v1/namespaces/kube-system/secrets/daemonset-agent-bootstrap");
    assert_eq!(code, 404);
    let secrets = ok(a.api().get("/api/v1/secrets"), 200).to_string();
    assert!(!secrets.contains(&base64::engine::general_purpose::STANDARD.encode("-----BEGIN")));

    // a join token made on a works on b; deleted on b, it is refused by a
    let join = token_cli(&kubeconfig(&a), &["create", "--description", "replicas"]).unwrap();
    let bare = join.trim().rsplit("::").next().unwrap().to_string();
    let id = bare.split('.').next().unwrap().to_string();
    assert!(token_cli(&kubeconfig(&b), &["list"]).unwrap().contains(&id));
    let as_join = |s: &Server| Endpoint::admin(s.addr, &a.data).with_token(Some(&bare));
    assert_eq!(as_join(&b).get("/api/v1/namespaces").0, 403, "known on b");
    token_cli(&kubeconfig(&b), &["delete", &id]).unwrap();
    wait_for(
        "a to refuse the deleted token",
        Duration::from_secs(10),
        || (as_join(&a).get("/api/v1/namespaces").0 == 401).then_some(()),
    );
    assert!(!token_cli(&kubeconfig(&a), &["list"]).unwrap().contains(&id));
}

/// Writes ConfigMaps `prefix-0..n` alternately to `servers`, each once, and returns their names:
/// every one is acknowledged (201), an etcd member down or not (the backend sends again a
/// request that never reached etcd, and a write whose answer was lost finds itself applied).
fn write_acked(servers: &[&Server], prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let api = servers[i % servers.len()].api();
            let (code, body) = api
                .try_send("POST", CMS, "application/json", &cm(&name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(code, 201, "{name} not acknowledged: {body}");
            name
        })
        .collect()
}

/// Which of `servers` logged that it leads (their indexes).
fn leaders(servers: &[&Server]) -> Vec<usize> {
    servers
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            count(&s.proc.log(), STARTED_LEADING) > count(&s.proc.log(), STOPPED_LEADING)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Two replicas with leader election on a 3-member etcd: both serve the same objects at the
/// same resourceVersions (kubectl with either admin kubeconfig), a write on one reaches a watch
/// on the other, one replica (the Lease's holder) runs the controllers; an etcd member killed
/// -9 leaves writes and watches going; the leading replica killed -9 hands the controllers to
/// the other within the lease duration, a DaemonSet created right after gets its pod and
/// status, and every acknowledged write is there, key by key.
#[test]
fn two_replicas_on_three_members_survive_the_loss_of_a_member_and_of_the_leader() {
    let mut etcd = Etcd::start(3);
    let dir = tempdir("dsa-replicas-");
    let a = Server::start(dir.path(), "a", &etcd, ELECTION);
    let b = Server::start(dir.path(), "b", &etcd, ELECTION);
    let servers = [&a, &b];

    // one leader, the Lease's holder; the other runs no controller
    let leader = wait_for("one replica to lead", Duration::from_secs(30), || {
        let h = holder(&a.api())?;
        let l = leaders(&servers);
        (l.len() == 1 && identity(servers[l[0]]) == h).then(|| l[0])
    });
    let follower = 1 - leader;
    assert_eq!(count(&servers[follower].proc.log(), STARTED_LEADING), 0);
    assert_eq!(holder(&b.api()), Some(identity(servers[leader])));

    // a Node, so that a DaemonSet has somewhere to put a pod
    ok(
        a.api().send(
            "POST",
            "/api/v1/nodes",
            "application/json",
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}).to_string(),
        ),
        201,
    );
    ok(
        servers[follower]
            .api()
            .send("POST", DSS, "application/json", &daemonset("first")),
        201,
    );
    let ds_done = |s: &Server, name: &str| {
        let (code, body) = s.api().try_get(&format!("{DSS}/{name}")).ok()?;
        let ds: Value = serde_json::from_str(&body).ok()?;
        (code == 200
            && ds["status"]["observedGeneration"] == 1
            && ds["status"]["currentNumberScheduled"] == 1)
            .then_some(())
    };
    wait_for(
        "the first DaemonSet's status",
        Duration::from_secs(30),
        || ds_done(servers[follower], "first"),
    );
    let pods = |s: &Server, app: &str| -> Vec<Value> {
        let body = ok(
            s.api().get(&format!(
                "/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"
            )),
            200,
        );
        body["items"].as_array().cloned().unwrap_or_default()
    };
    let first_pods = pods(&a, "first");
    assert_eq!(first_pods.len(), 1, "one pod for one node, made once");
    assert_eq!(first_pods[0]["spec"]["nodeName"], "n1");

    // a write on one is seen by a watch on the other
    let start = rv(&ok(b.api().get(&format!("{CMS}?{SEL}")), 200));
    let written = ok(
        a.api().send("POST", CMS, "application/json", &cm("from-a")),
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
    assert_eq!(events[0]["object"]["metadata"]["name"], "from-a");
    assert_eq!(rv(&events[0]["object"]), rv(&written));
    let mut acked = vec!["from-a".to_string()];
    acked.extend(write_acked(&servers, "before", 30));
    assert_eq!(
        acked.len(),
        31,
        "every write acknowledged with all members up"
    );

    // kubectl with either admin kubeconfig, on either replica: the same objects and versions
    let listing = |cred: &Server, at: &Server| -> Vec<(String, String)> {
        let out = kubectl(
            &kubeconfig(cred),
            Some(at.addr),
            &["get", "configmaps", "-l", "t=replicas", "-o", "json"],
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    };
    let on_a = listing(&b, &a);
    assert_eq!(on_a.len(), acked.len());
    wait_for("b to list what a lists", Duration::from_secs(10), || {
        (listing(&a, &b) == on_a).then_some(())
    });

    // kill -9 an etcd member: writes and watches go on
    let before_kill = rv(&ok(a.api().get(&format!("{CMS}?{SEL}")), 200));
    etcd.kill(0);
    let after_member = write_acked(&servers, "member-down", 20);
    for s in servers {
        let seen = wait_for(
            "the watch to bring the writes after the kill",
            Duration::from_secs(20),
            || {
                let (code, events) = watch_events(&s.api(), CMS, SEL, before_kill);
                (code == 200).then_some(events)
            },
        );
        let names: Vec<&str> = seen
            .iter()
            .filter_map(|e| e["object"]["metadata"]["name"].as_str())
            .collect();
        for n in &after_member {
            assert!(names.contains(&n.as_str()), "{n} not watched on {}", s.addr);
        }
    }
    acked.extend(after_member);
    let retried: usize = servers
        .iter()
        .map(|s| count(&s.proc.log(), "etcd request failed: retrying"))
        .sum();
    eprintln!("etcd requests sent again while a member was down: {retried}");
    for s in servers {
        assert_eq!(count(&s.proc.log(), "etcd request failed: not retried"), 0);
    }

    // kill -9 the leading replica: the other leads within the lease duration
    let killed_at = Instant::now();
    let (mut leading, survivor) = match leader {
        0 => (a, b),
        _ => (b, a),
    };
    let _ = leading.proc.child.kill();
    let _ = leading.proc.child.wait();
    let took = wait_for("the survivor to lead", Duration::from_secs(30), || {
        (count(&survivor.proc.log(), STARTED_LEADING) == 1).then(|| killed_at.elapsed())
    });
    eprintln!("take-over after the leader's kill -9: {took:?} (lease {LEASE_SECONDS} s)");
    // the lease runs out LEASE_SECONDS after the survivor saw its last renewal, which it looks
    // for every retry period (1 s, jittered up to 1.2 s); a few seconds of slack for the machine
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS + 5),
        "the take-over took {took:?}"
    );
    assert_eq!(holder(&survivor.api()), Some(identity(&survivor)));

    // a DaemonSet created right after gets its pod and status from the new leader
    ok(
        survivor
            .api()
            .send("POST", DSS, "application/json", &daemonset("second")),
        201,
    );
    wait_for(
        "the second DaemonSet's status",
        Duration::from_secs(30),
        || ds_done(&survivor, "second"),
    );
    assert_eq!(pods(&survivor, "second").len(), 1);
    assert_eq!(
        pods(&survivor, "first").len(),
        1,
        "the first kept its one pod"
    );

    // no acknowledged write lost: every key, on the survivor and in etcd
    acked.extend(write_acked(&[&survivor], "after-leader", 10));
    let stored = etcd.keys("/registry/configmaps/default/");
    for name in &acked {
        ok(survivor.api().get(&format!("{CMS}/{name}")), 200);
        let key = format!("/registry/configmaps/default/{name}");
        assert!(stored.contains(&key), "{key} not in etcd");
    }
}

/// client-go's renew deadline, end to end: the leader frozen (SIGSTOP) past its lease cannot
/// renew; the other replica takes the Lease; woken (SIGCONT), the frozen one finds its renew
/// deadline passed and stops its controllers before doing anything as leader (its first word
/// about leadership is that it lost it), and it does not take the Lease back while the other
/// renews it.
#[test]
fn a_leader_frozen_past_its_lease_stops_leading_when_it_wakes() {
    let etcd = Etcd::start(1);
    let dir = tempdir("dsa-replicas-stop-");
    let a = Server::start(dir.path(), "a", &etcd, ELECTION);
    let b = Server::start(dir.path(), "b", &etcd, ELECTION);
    let servers = [&a, &b];
    let leader = wait_for("one replica to lead", Duration::from_secs(30), || {
        let l = leaders(&servers);
        (l.len() == 1 && holder(&a.api()) == Some(identity(servers[l[0]]))).then(|| l[0])
    });
    let (frozen, other) = (servers[leader], servers[1 - leader]);
    frozen.proc.signal(libc::SIGSTOP);
    wait_for("the other replica to lead", Duration::from_secs(30), || {
        (count(&other.proc.log(), STARTED_LEADING) == 1).then_some(())
    });
    let taken = holder(&other.api()).unwrap();
    assert_eq!(taken, identity(other));
    let lines_before = frozen.proc.log().lines().count();
    frozen.proc.signal(libc::SIGCONT);
    wait_for(
        "the woken replica to stop leading",
        Duration::from_secs(20),
        || (count(&frozen.proc.log(), STOPPED_LEADING) == 1).then_some(()),
    );
    // the other keeps the Lease through several renewals, and the woken one never leads again
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        "three renewals by the new leader",
        Duration::from_secs(20),
        || {
            let lease = ok(other.api().get(LEASE), 200);
            assert_eq!(
                lease["spec"]["holderIdentity"],
                taken.as_str(),
                "the Lease stays with the new leader"
            );
            seen.insert(lease["spec"]["renewTime"].to_string());
            (seen.len() >= 4).then_some(())
        },
    );
    let woke: Vec<String> = frozen
        .proc
        .log()
        .lines()
        .skip(lines_before)
        .filter(|l| l.contains(STARTED_LEADING) || l.contains(STOPPED_LEADING))
        .map(str::to_string)
        .collect();
    assert_eq!(woke.len(), 1, "{woke:?}");
    assert!(woke[0].contains(STOPPED_LEADING), "{woke:?}");
    assert_eq!(count(&frozen.proc.log(), STARTED_LEADING), 1);
    assert_eq!(holder(&frozen.api()), Some(taken));
}

/// Backup and restore on etcd (README "Backup and restore"): `etcdctl snapshot save`, more
/// writes, `etcdctl snapshot restore` on every member. The running server notices that etcd
/// went back (its watch finds etcd's revision behind its own), relists (the writes after the
/// snapshot are gone from its answers) and tells a watch or list from a resourceVersion given
/// out before the restore 410, so clients relist (the agent's reflectors relist on 410); the
/// server started again on its data directory notices it too, from the revision it noted there.
#[test]
fn a_server_notices_an_etcd_restored_from_a_snapshot() {
    let mut etcd = Etcd::start(1);
    let dir = tempdir("dsa-replicas-restore-");
    // no Lease renewals: the revision moves only with the test's writes (the 410 window below
    // lasts until etcd's revision passes the ones given out before the restore)
    let solo = ["--leader-elect=false"];
    let mut a = Server::start(dir.path(), "a", &etcd, &solo);
    ok(
        a.api().send("POST", CMS, "application/json", &cm("kept")),
        201,
    );
    let snap = dir.path().join("snapshot.db");
    etcd.snapshot(&snap);
    let mut later = 0;
    for i in 0..5 {
        let name = format!("lost-{i}");
        later = rv(&ok(
            a.api().send("POST", CMS, "application/json", &cm(&name)),
            201,
        ));
    }
    let mark = a.data.join("etcd.high-water");
    wait_for(
        "the server to note the revision",
        Duration::from_secs(10),
        || {
            let noted: u64 = std::fs::read_to_string(&mark).ok()?.trim().parse().ok()?;
            (noted >= later).then_some(())
        },
    );

    etcd.restore(&snap);
    wait_for(
        "the server to relist the restored etcd",
        Duration::from_secs(30),
        || (a.api().try_get(&format!("{CMS}/lost-0")).ok()?.0 == 404).then_some(()),
    );
    assert!(a.proc.log().contains("restored from a snapshot?"));
    ok(a.api().get(&format!("{CMS}/kept")), 200);
    let gone = |s: &Server| {
        let (code, body) = s.api().get(&format!(
            "{CMS}?{SEL}&watch=1&resourceVersion={later}&timeoutSeconds=5"
        ));
        assert_eq!(code, 200, "{body}");
        let first: Value = body
            .lines()
            .find_map(|l| serde_json::from_str(l.trim()).ok())
            .unwrap_or_else(|| panic!("no event in {body:?}"));
        assert_eq!(first["type"], "ERROR", "{body}");
        assert_eq!(first["object"]["code"], 410, "{body}");
        let (code, body) = s.api().get(&format!("{CMS}?{SEL}&resourceVersion={later}"));
        assert_eq!(code, 410, "a list from after the snapshot: {body}");
    };
    gone(&a);
    let listed = ok(a.api().get(&format!("{CMS}?{SEL}")), 200);
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kept"]);

    // started again on its data directory: the noted revision tells it at once
    a.proc.stop();
    a = Server::start(dir.path(), "a", &etcd, &solo);
    assert!(a.proc.log().contains("restored from a snapshot?"));
    gone(&a);
}

/// Backup and restore on SQLite (README "Backup and restore"): `sqlite3 state.db ".backup
/// FILE"` while the server runs and writes, then the copy put back on the stopped server: the
/// objects of the backup are there, the later ones are not, and a watch from a resourceVersion
/// given out after the backup is told 410 (the server jumped its resourceVersions ahead).
#[test]
fn an_online_sqlite_backup_restores() {
    common::require("sqlite3");
    let dir = tempdir("dsa-replicas-sqlite-");
    let data = dir.path().join("server");
    let start = |log: &str| {
        let listen = format!("127.0.0.1:{}", common::free_port());
        let proc = common::proc::Proc::spawn(
            &[
                "server",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &listen,
            ],
            dir.path().join(log),
        );
        let s = Server {
            proc,
            data: data.clone(),
            addr: listen.parse().unwrap(),
        };
        s.wait_ready("sqlite");
        s
    };
    let mut s = start("server-1.log");
    ok(
        s.api().send("POST", CMS, "application/json", &cm("kept")),
        201,
    );
    let backup = dir.path().join("backup.db");
    let out = Command::new("sqlite3")
        .arg(data.join("state.db"))
        .arg(format!(".backup {}", backup.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "sqlite3 .backup: {out:?}");
    let later = rv(&ok(
        s.api().send("POST", CMS, "application/json", &cm("lost")),
        201,
    ));
    s.proc.stop();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("state.db{suffix}")));
    }
    std::fs::copy(&backup, data.join("state.db")).unwrap();
    let s = start("server-2.log");
    ok(s.api().get(&format!("{CMS}/kept")), 200);
    ok(s.api().get(&format!("{CMS}/lost")), 404);
    let (_, events) = watch_events(&s.api(), CMS, SEL, later);
    assert_eq!(
        events.first().map(|e| e["object"]["code"].clone()),
        Some(json!(410)),
        "{events:?}"
    );
}
