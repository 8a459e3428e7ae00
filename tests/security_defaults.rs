//! Container security defaults, checked and not assumed (issue 15, item 3): real containerd +
//! runc pods run through a real agent and server (a one-node [`Fleet`]), with every assertion
//! read from inside the container (`/proc/self/status`, `/proc/mounts`, masked and read-only
//! paths, the processes and network interfaces it sees) and from the OCI spec containerd holds
//! for it; the server's policy flags (`--allow-privileged`, `--allow-host-path`) seen from the
//! API; the agent's own files seen from the file system while it runs.
//!
//! ```text
//! cargo test --test security_defaults -- --nocapture
//! ```
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fleet::{Fleet, FleetOptions};
use containerd_client::services::v1::GetContainerRequest;
use daemonset_agent::runtime::client::Ctd;
use serde_json::{json, Value};

/// containerd's CRI default capabilities (`defaultUnixCaps`) as a CapEff mask: CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW,
/// SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP (the mask Docker and containerd are known by).
const DEFAULT_CAP_EFF: &str = "00000000a80425fb";

/// Masked paths the probe reads (containerd's list; the ones this kernel lacks are skipped by
/// runc, and only those the host has content in prove anything: see [`host_content`]).
const MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
];
const MASKED_DIRS: &[&str] = &["/proc/acpi", "/proc/scsi", "/proc/asound", "/sys/firmware"];

/// What the probe container prints, one fact a line, then `END`; it then sleeps. The write
/// probe of /proc/sys only runs in a pod of its own UTS namespace (`$WRITE` set): in a pod
/// sharing the host's, a writable /proc/sys would change the host.
const PROBE: &str = r#"
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
for p in MASKED_FILES; do
  echo "MASKED $p $(head -c 64 $p 2>/dev/null | wc -c)"
done
for d in MASKED_DIRS; do
  echo "MASKEDDIR $d $(ls -A $d 2>/dev/null | wc -l)"
done
if [ -n "$WRITE" ]; then
  if echo probe 2>/dev/null >/proc/sys/kernel/domainname; then echo "WRITE ok"; else echo "WRITE refused"; fi
fi
for d in /proc/[0-9]*; do echo "PROC $(cat $d/comm 2>/dev/null)"; done
grep ':' /proc/net/dev | while read l; do echo "NET ${l%%:*}"; done
while read dev mnt fs opts rest; do echo "MOUNT $mnt $fs $opts"; done </proc/mounts
echo END
exec sleep 100000
"#;

fn image() -> String {
    format!("{}/busybox:latest", common::registry())
}

/// A Pod on node n0 running [`PROBE`] as container `c`, with `container` merged into the
/// container and `spec` into the pod spec.
fn probe_pod(name: &str, spec: Value, container: Value, write: bool) -> Value {
    let probe = PROBE
        .replace("MASKED_FILES", &MASKED_FILES.join(" "))
        .replace("MASKED_DIRS", &MASKED_DIRS.join(" "));
    let mut c = json!({"name": "c", "image": image(), "command": ["sh", "-c", probe],
        "env": [{"name": "WRITE", "value": if write { "1" } else { "" }}]});
    merge(&mut c, container);
    let mut s = json!({"nodeName": "n0", "terminationGracePeriodSeconds": 1, "containers": [c]});
    merge(&mut s, spec);
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"}, "spec": s})
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

/// POST of `pod`: the status code and the answer.
fn create(f: &Fleet, pod: &Value) -> (u16, Value) {
    let (code, body) = f.endpoint().send(
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        &pod.to_string(),
    );
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// What the probe of pod `name` printed, once it printed `END`, by `kubectl logs`.
fn report(f: &Fleet, name: &str) -> Report {
    let text = common::wait_for(
        &format!("the probe of pod {name} to report"),
        Duration::from_secs(90),
        || {
            let out = f.kubectl(&["logs", "-n", "default", name]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.lines().any(|l| l == "END").then_some(text)
        },
    );
    Report::parse(&text)
}

/// The probe's lines, by their first word.
#[derive(Debug, Default)]
struct Report {
    status: BTreeMap<String, String>,
    /// path -> bytes read from it
    masked: BTreeMap<String, usize>,
    /// directory -> entries seen in it
    masked_dirs: BTreeMap<String, usize>,
    write: Option<String>,
    procs: Vec<String>,
    nets: BTreeSet<String>,
    /// mount point -> (fs type, options)
    mounts: BTreeMap<String, (String, String)>,
}

impl Report {
    fn parse(text: &str) -> Report {
        let mut r = Report::default();
        for l in text.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [k, v] if k.ends_with(':') => {
                    r.status
                        .insert(k.trim_end_matches(':').to_string(), v.to_string());
                }
                ["MASKED", p, n] => {
                    r.masked.insert(p.to_string(), n.parse().unwrap());
                }
                ["MASKEDDIR", p, n] => {
                    r.masked_dirs.insert(p.to_string(), n.parse().unwrap());
                }
                ["WRITE", v] => r.write = Some(v.to_string()),
                ["PROC", comm] => r.procs.push(comm.to_string()),
                ["PROC"] => r.procs.push(String::new()),
                ["NET", n] => {
                    r.nets.insert(n.to_string());
                }
                ["MOUNT", m, fs, opts] => {
                    r.mounts
                        .insert(m.to_string(), (fs.to_string(), opts.to_string()));
                }
                _ => {}
            }
        }
        r
    }

    fn status(&self, key: &str) -> &str {
        self.status.get(key).map(String::as_str).unwrap_or("")
    }

    fn read_only(&self, mount: &str) -> bool {
        self.mounts
            .get(mount)
            .is_some_and(|(_, o)| o.split(',').any(|x| x == "ro"))
    }
}

/// The containerd id of pod `name`'s container `c`, once it runs.
fn container_id(f: &Fleet, name: &str) -> String {
    common::wait_for(
        &format!("pod {name}'s container to run"),
        Duration::from_secs(90),
        || {
            let p = f.get_json(&format!("/api/v1/namespaces/default/pods/{name}"))?;
            let s = p["status"]["containerStatuses"].get(0)?;
            s["state"]["running"].as_object()?;
            let id = s["containerID"].as_str()?;
            Some(id.trim_start_matches("containerd://").to_string())
        },
    )
}

/// The OCI runtime spec containerd holds for container `id` of node n0.
fn oci_spec(f: &Fleet, id: &str) -> Value {
    let n = &f.nodes[0];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Ctd::connect(&n.ctd.socket, &n.namespace).await.unwrap();
        let got = c
            .containers()
            .get(c.req(GetContainerRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner()
            .container
            .unwrap();
        serde_json::from_slice(&got.spec.unwrap().value).unwrap()
    })
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The namespace types the spec gives the container (without a path: new ones; with a path:
/// joined, the pod's sandbox or the host's).
fn namespaces(spec: &Value) -> BTreeMap<String, Option<String>> {
    spec["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["type"].as_str().unwrap_or("").to_string(),
                n["path"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// What the host has at masked path `p`: bytes (of the first 64) of a file, entries of a
/// directory.
fn host_content(p: &str) -> usize {
    match std::fs::read_dir(p) {
        Ok(d) => d.count(),
        Err(_) => std::fs::read(p).map(|b| b.len().min(64)).unwrap_or(0),
    }
}

/// The network interfaces of the host (this test's network namespace).
fn host_interfaces() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim().to_string())
        .collect()
}

#[test]
fn security_defaults() {
    // the policy flags off, as an operator who refuses host access runs the server
    let mut f = Fleet::start(FleetOptions {
        agents: 1,
        server_args: vec![
            "--allow-privileged=false".into(),
            "--allow-host-path=false".into(),
        ],
        ..FleetOptions::default()
    });
    refusals_name_the_field(&f);
    default_pod(&f);
    asked_for_hardening(&f);
    names_cannot_traverse(&f);
    agent_files_are_private(&f);
    // the same server with its default flags: the host's namespaces and paths for those who ask
    f.kill_server();
    f.server_args = vec![];
    f.start_server();
    host_access_when_allowed(&f);
}

/// privileged and hostPath refused by the policy flags with a Status naming the field.
fn refusals_name_the_field(f: &Fleet) {
    let cases = [
        (
            "privileged",
            probe_pod(
                "refused-privileged",
                json!({}),
                json!({"securityContext": {"privileged": true}}),
                false,
            ),
            "spec.containers[0].securityContext.privileged",
        ),
        (
            "hostPath",
            probe_pod(
                "refused-hostpath",
                json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
                json!({"volumeMounts": [{"name": "root", "mountPath": "/host"}]}),
                false,
            ),
            "spec.volumes[0].hostPath",
        ),
    ];
    for (what, pod, field) in cases {
        let (code, status) = create(f, &pod);
        assert_eq!(code, 422, "{what}: {status}");
        assert_eq!(status["kind"], "Status", "{what}: {status}");
        assert_eq!(status["reason"], "Invalid", "{what}: {status}");
        let causes: Vec<&str> = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["field"].as_str())
            .collect();
        assert_eq!(causes, vec![field], "{what}: {status}");
        assert!(
            status["message"].as_str().unwrap_or("").contains(field),
            "{what}: the message names {field}: {status}"
        );
    }
}

/// A pod that asks for nothing: containerd's CRI defaults, its own namespaces.
fn default_pod(f: &Fleet) {
    assert_eq!(
        create(f, &probe_pod("plain", json!({}), json!({}), true)).0,
        201
    );
    let r = report(f, "plain");
    assert_eq!(r.status("CapEff"), DEFAULT_CAP_EFF, "{r:#?}");
    assert_eq!(
        r.status("NoNewPrivs"),
        "0",
        "no_new_privs only when asked: {r:#?}"
    );
    assert_eq!(
        r.status("Seccomp"),
        "0",
        "unconfined unless asked (the kubelet's default): {r:#?}"
    );
    let (mut files, mut dirs) = (0, 0);
    for p in MASKED_FILES.iter().chain(MASKED_DIRS) {
        let inside = r.masked.get(*p).or(r.masked_dirs.get(*p));
        assert_eq!(
            inside,
            Some(&0),
            "{p} is masked: nothing to read inside: {r:#?}"
        );
        if host_content(p) > 0 {
            match MASKED_FILES.contains(p) {
                true => files += 1,
                false => dirs += 1,
            }
        }
    }
    // the check means something only for paths the host has content in
    assert!(
        files > 0 && dirs > 0,
        "no masked file and directory with content on this host ({files}, {dirs})"
    );
    // (runc skips the paths this kernel lacks: /proc/sysrq-trigger on some VMs)
    for p in daemonset_agent::runtime::spec::READONLY_PATHS
        .iter()
        .filter(|p| Path::new(p).exists())
    {
        assert!(r.read_only(p), "{p} is mounted read-only: {:#?}", r.mounts);
    }
    assert!(r.read_only("/proc/sys"), "{:#?}", r.mounts);
    assert_eq!(
        r.write.as_deref(),
        Some("refused"),
        "/proc/sys is read-only"
    );
    // its own pid namespace: only the probe's shell and the cat it runs
    assert!(
        !r.procs.is_empty()
            && r.procs
                .iter()
                .all(|c| c == "sh" || c == "cat" || c.is_empty()),
        "only the pod's processes are seen: {:?}",
        r.procs
    );
    // its own network namespace: loopback and the CNI interface, none of the host's
    assert_eq!(
        r.nets,
        BTreeSet::from(["lo".to_string(), "eth0".to_string()]),
        "the pod's interfaces"
    );
    assert!(
        host_interfaces().contains(&f.net.bridge),
        "the host has the bridge"
    );
    // its own mounts: the image's root, no mount of the host's test directories
    assert_eq!(
        r.mounts.get("/").map(|m| m.0.as_str()),
        Some("overlay"),
        "{:#?}",
        r.mounts
    );
    let fleet_dir = f.dir.path().to_string_lossy().to_string();
    assert!(
        r.mounts.keys().all(|m| !m.starts_with(&fleet_dir)),
        "no host mount is seen: {:#?}",
        r.mounts
    );

    // and the spec containerd holds says the same
    let spec = oci_spec(f, &container_id(f, "plain"));
    let caps = &spec["process"]["capabilities"];
    let want: BTreeSet<String> = daemonset_agent::runtime::spec::DEFAULT_CAPS
        .iter()
        .map(|s| s.to_string())
        .collect();
    for set in ["bounding", "effective", "permitted"] {
        assert_eq!(strings(&caps[set]), want, "capabilities.{set}");
    }
    assert!(
        strings(&caps["ambient"]).is_empty(),
        "no ambient capabilities"
    );
    assert_ne!(spec["process"]["noNewPrivileges"], true);
    assert!(spec["linux"]["seccomp"].is_null(), "no seccomp filter");
    let masked = strings(&spec["linux"]["maskedPaths"]);
    for p in daemonset_agent::runtime::spec::MASKED_PATHS {
        assert!(masked.contains(*p), "maskedPaths has {p}: {masked:?}");
    }
    let ro = strings(&spec["linux"]["readonlyPaths"]);
    for p in daemonset_agent::runtime::spec::READONLY_PATHS {
        assert!(ro.contains(*p), "readonlyPaths has {p}: {ro:?}");
    }
    let ns = namespaces(&spec);
    assert_eq!(
        ns.get("pid"),
        Some(&None),
        "a pid namespace of its own: {ns:?}"
    );
    assert_eq!(
        ns.get("mount"),
        Some(&None),
        "a mount namespace of its own: {ns:?}"
    );
    for t in ["network", "ipc", "uts"] {
        // a new one (no path) or the pod sandbox's (a path the agent keeps), never a process's
        let path = ns.get(t);
        assert!(
            path.is_some_and(|p| p.as_deref().is_none_or(|p| !p.starts_with("/proc/"))),
            "{t}: a namespace of the pod's own, not the host's: {ns:?}"
        );
    }
    assert_eq!(spec["process"]["user"]["uid"], 0);
}

/// allowPrivilegeEscalation: false -> no_new_privs; seccompProfile RuntimeDefault -> a filter.
fn asked_for_hardening(f: &Fleet) {
    let nnp = probe_pod(
        "no-escalation",
        json!({}),
        json!({"securityContext": {"allowPrivilegeEscalation": false}}),
        true,
    );
    let seccomp = probe_pod(
        "runtime-default",
        json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}),
        json!({}),
        true,
    );
    assert_eq!(create(f, &nnp).0, 201);
    assert_eq!(create(f, &seccomp).0, 201);

    let r = report(f, "no-escalation");
    assert_eq!(r.status("NoNewPrivs"), "1", "{r:#?}");
    assert_eq!(r.status("Seccomp"), "0", "{r:#?}");
    let spec = oci_spec(f, &container_id(f, "no-escalation"));
    assert_eq!(spec["process"]["noNewPrivileges"], true);

    let r = report(f, "runtime-default");
    assert_eq!(r.status("Seccomp"), "2", "seccomp filter mode: {r:#?}");
    assert_eq!(r.status("CapEff"), DEFAULT_CAP_EFF, "{r:#?}");
    let spec = oci_spec(f, &container_id(f, "runtime-default"));
    assert_eq!(
        spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO",
        "{}",
        spec["linux"]["seccomp"]
    );
}

/// Names that would reach outside the pod's log directory are refused by the API before any
/// agent sees them (the path builders below it are unit-tested in src/logdriver).
fn names_cannot_traverse(f: &Fleet) {
    let cases = [
        ("pod name", "..", "c", "metadata.name"),
        ("pod name", "a/b", "c", "metadata.name"),
        ("container name", "trav-c1", "..", "spec.containers[0].name"),
        (
            "container name",
            "trav-c2",
            "../../x",
            "spec.containers[0].name",
        ),
    ];
    for (what, pod, container, field) in cases {
        let mut p = probe_pod(pod, json!({}), json!({}), false);
        p["spec"]["containers"][0]["name"] = json!(container);
        let (code, status) = create(f, &p);
        // a name with a slash is refused by the router or the validation alike
        assert!(
            code == 422 || code == 400 || code == 404,
            "{what} {pod:?}/{container:?}: {code} {status}"
        );
        if code == 422 {
            let fields: Vec<&str> = status["details"]["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["field"].as_str())
                .collect();
            assert!(fields.contains(&field), "{what}: {status}");
        }
    }
    for ns in ["..", "a%2Fb"] {
        let (code, body) = f.endpoint().send(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            "application/json",
            &probe_pod("trav-ns", json!({}), json!({}), false).to_string(),
        );
        assert!(
            (400..500).contains(&code),
            "namespace {ns:?}: {code} {body}"
        );
    }
    // nothing of them reached the node
    let logs = f.nodes[0].state_dir.join("logs");
    for e in walk(&f.nodes[0].state_dir) {
        let p = e.0.to_string_lossy().to_string();
        assert!(!p.contains("trav-") && !p.contains("/../"), "{p}");
    }
    assert!(
        logs.is_dir(),
        "the agent keeps its logs in {}",
        logs.display()
    );
}

/// Every file of the running agent's state directory, with its mode.
fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), m));
        }
    }
    out
}

/// The agent's state (cache of pod objects, credentials, node API key, logs) is its own: no file
/// of its tree can be read, no directory listed and no socket connected to by group or others.
/// An entry is exposed to a class (group, others) when every directory from the state directory
/// down to it lets that class through (x) and the entry itself lets it read (r; w for a socket).
fn agent_files_are_private(f: &Fleet) {
    let root = &f.nodes[0].state_dir;
    let mut entries = vec![(root.clone(), std::fs::symlink_metadata(root).unwrap())];
    entries.extend(walk(root));
    let modes: BTreeMap<PathBuf, u32> = entries
        .iter()
        .map(|(p, m)| (p.clone(), m.mode() & 0o7777))
        .collect();
    // every ancestor from the root down lets the class through
    let through = |p: &Path, x: u32| {
        p.ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(root))
            .all(|a| modes.get(a).is_some_and(|m| m & x != 0))
    };
    let mut listing = String::new();
    let mut exposed = vec![];
    let mut files = 0;
    for (p, m) in &entries {
        let mode = modes[p];
        let ft = m.file_type();
        let (kind, read) = match () {
            _ if ft.is_dir() => ("dir", 0o044),
            _ if ft.is_socket() => ("socket", 0o022),
            _ if ft.is_symlink() => ("symlink", 0),
            _ if ft.is_fifo() => ("fifo", 0o066),
            _ => {
                files += 1;
                ("file", 0o044)
            }
        };
        listing.push_str(&format!("{mode:04o} {kind:7} {}\n", p.display()));
        for (class, x, r) in [
            ("group", 0o010, read & 0o070),
            ("others", 0o001, read & 0o007),
        ] {
            if mode & r != 0 && through(p, x) {
                exposed.push(format!("{mode:04o} {kind} {} (to {class})", p.display()));
            }
        }
    }
    eprintln!("the running agent's state directory:\n{listing}");
    assert!(
        files > 3 && listing.contains("/logs/"),
        "the tree holds the agent's files and the pods' logs:\n{listing}"
    );
    assert!(
        exposed.is_empty(),
        "the agent's files exposed to other users:\n{}",
        exposed.join("\n")
    );
}

/// With the server's default flags a pod that asks for the host's pid and network namespaces,
/// or a hostPath, is admitted and gets them.
fn host_access_when_allowed(f: &Fleet) {
    let pod = probe_pod(
        "host-ns",
        json!({"hostPID": true, "hostNetwork": true,
            "volumes": [{"name": "etc", "hostPath": {"path": "/etc"}}]}),
        json!({"volumeMounts": [{"name": "etc", "mountPath": "/host-etc", "readOnly": true}]}),
        false,
    );
    let (code, body) = create(f, &pod);
    assert_eq!(code, 201, "{body}");
    let r = report(f, "host-ns");
    assert!(
        r.procs.len() > 20 && r.procs.iter().any(|c| c == "containerd"),
        "hostPID: the host's processes are seen: {:?}",
        r.procs
    );
    assert!(
        r.nets.contains(&f.net.bridge),
        "hostNetwork: the host's interfaces are seen: {:?}",
        r.nets
    );
    assert!(r.mounts.contains_key("/host-etc"), "{:#?}", r.mounts);
    let spec = oci_spec(f, &container_id(f, "host-ns"));
    let ns = namespaces(&spec);
    assert!(!ns.contains_key("pid"), "hostPID: no pid namespace: {ns:?}");
    assert!(
        !ns.contains_key("network"),
        "hostNetwork: no network namespace: {ns:?}"
    );
    // privileged is admitted too (whether it starts depends on the machine: see ENVIRONMENT)
    let (code, body) = create(
        f,
        &probe_pod(
            "allowed-privileged",
            json!({}),
            json!({"securityContext": {"privileged": true}}),
            false,
        ),
    );
    assert_eq!(code, 201, "{body}");
}
