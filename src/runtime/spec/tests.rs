use super::*;
use crate::runtime::{PodMeta, SandboxInfo};

const MOUNTINFO: &str = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
28 27 0:5 / /proc rw,nosuid - proc proc rw
29 27 0:6 / /sys rw,nosuid shared:2 - sysfs sysfs rw
30 27 0:40 / /srv/slave rw master:7 - tmpfs t rw
31 27 0:41 / /srv/private rw - tmpfs t rw";

fn facts() -> HostFacts {
    HostFacts {
        node: NodeCapacity {
            cpu_milli: 2000,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 10 << 30,
        },
        hostname: "node-1".into(),
        resolv_conf: "nameserver 192.0.2.53\n".into(),
        hosts: "127.0.0.1 localhost node-1\n".into(),
        mountinfo: MOUNTINFO.into(),
        ..Default::default()
    }
}

fn req(pod: Value, container: Value) -> ContainerRequest {
    ContainerRequest {
        id: "c1".into(),
        labels: Default::default(),
        pod_spec: serde_json::from_value(pod).unwrap(),
        container: serde_json::from_value(container).unwrap(),
        sandbox: SandboxInfo {
            netns: Some(PathBuf::from("/state/netns/u1")),
            ipc_ns: Some(PathBuf::from("/state/ipcns/u1")),
            pod_dir: PathBuf::from("/state/pods/u1"),
            ips: vec!["10.1.0.5".into()],
        },
        image: crate::runtime::PulledImage {
            info: crate::runtime::ImageInfo {
                reference: "img".into(),
                digest: "sha256:0".into(),
            },
            config: Value::Null,
            chain_id: "sha256:1".into(),
        },
        hostname: "web-abc".into(),
        log_path: PathBuf::from("/log"),
        pod: PodMeta {
            name: "web-abc".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            host_ips: vec!["192.0.2.2".into()],
            ..Default::default()
        },
    }
}

fn build_with(r: &ContainerRequest, f: &HostFacts) -> Result<SpecPlan, SpecError> {
    build(r, "ns", Path::new("/state"), f)
}

fn spec(pod: Value, container: Value, image: Value) -> Value {
    let mut r = req(pod, container);
    r.image.config = image;
    build_with(&r, &facts()).unwrap().spec
}

fn base() -> Value {
    json!({"containers": []})
}

fn err(pod: Value, container: Value) -> SpecError {
    match build_with(&req(pod, container.clone()), &facts()) {
        Err(e) => e,
        Ok(_) => panic!("{container} built"),
    }
}

fn bind_mounts(s: &Value) -> Vec<(String, String, Vec<String>)> {
    s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "bind")
        .map(|m| {
            (
                m["destination"].as_str().unwrap().into(),
                m["source"].as_str().unwrap().into(),
                strings(&m["options"]),
            )
        })
        .collect()
}

#[test]
fn process_args_follow_kubernetes() {
    let image = json!({"Entrypoint": ["/ep"], "Cmd": ["cmd1", "cmd2"]});
    for (container, want) in [
        (json!({"name": "c"}), vec!["/ep", "cmd1", "cmd2"]),
        (json!({"name": "c", "command": ["/bin/x"]}), vec!["/bin/x"]),
        (json!({"name": "c", "args": ["a"]}), vec!["/ep", "a"]),
        (
            json!({"name": "c", "command": ["/bin/x"], "args": ["a"]}),
            vec!["/bin/x", "a"],
        ),
        (
            json!({"name": "c", "command": [], "args": []}),
            vec!["/ep", "cmd1", "cmd2"],
        ),
    ] {
        let c: Container = serde_json::from_value(container.clone()).unwrap();
        assert_eq!(process_args(&c, &image), want, "{container}");
    }
    let none = build_with(&req(base(), json!({"name": "c"})), &facts());
    assert!(matches!(none, Err(SpecError::Invalid(m)) if m.starts_with("no command")));
    // $(VAR) in command and args from the container's environment
    let s = spec(
        base(),
        json!({"name": "c", "command": ["/bin/x", "--addr=$(POD_IP):$(PORT)", "$$(PORT)"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "PORT", "value": "9100"}]}),
        json!({}),
    );
    assert_eq!(
        s["process"]["args"],
        json!(["/bin/x", "--addr=10.1.0.5:9100", "$(PORT)"])
    );
}

#[test]
fn defaults_are_containerds() {
    let s = spec(
        base(),
        json!({"name": "c", "command": ["sh"]}),
        json!({"Env": ["A=1"]}),
    );
    assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));
    assert_eq!(s["process"]["cwd"], "/");
    assert_eq!(s["process"]["user"], json!({"uid": 0, "gid": 0}));
    assert_eq!(
        s["process"]["capabilities"]["bounding"],
        json!(DEFAULT_CAPS)
    );
    // the CRI plugin removes containerd's default rlimits; no_new_privs only when asked
    assert!(s["process"].get("rlimits").is_none());
    assert_eq!(s["process"]["noNewPrivileges"], false);
    assert_eq!(s["process"]["oomScoreAdj"], 1000, "BestEffort");
    assert!(
        s["linux"].get("seccomp").is_none(),
        "Unconfined unless asked"
    );
    assert_eq!(s["hostname"], "web-abc");
    let ns: Vec<&str> = s["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
    assert_eq!(s["linux"]["namespaces"][1]["path"], "/state/ipcns/u1");
    assert_eq!(s["linux"]["namespaces"][4]["path"], "/state/netns/u1");
    assert_eq!(s["linux"]["maskedPaths"], json!(MASKED_PATHS));
    assert_eq!(s["linux"]["readonlyPaths"], json!(READONLY_PATHS));
    assert_eq!(s["linux"]["cgroupsPath"], "/daemonset-agent/ns/c1");
    let dests: Vec<&str> = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/hostname",
            "/dev/termination-log",
        ]
    );
    assert!(s["mounts"][5]["options"]
        .as_array()
        .unwrap()
        .contains(&json!("ro")));
    // no PATH in the image: containerd's default PATH first; HOSTNAME as the CRI plugin sets it
    assert_eq!(
        s["process"]["env"],
        json!([DEFAULT_PATH, "HOSTNAME=web-abc", "A=1"])
    );
}

#[test]
fn env_user_and_workdir() {
    let image = json!({"Env": ["PATH=/bin", "A=image"], "User": "1000:2000", "WorkingDir": "/w"});
    let cases = [
        (
            base(),
            json!({"name": "c", "command": ["x"]}),
            (1000, 2000),
            "/w",
        ),
        (
            base(),
            json!({"name": "c", "command": ["x"], "workingDir": "/o"}),
            (1000, 2000),
            "/o",
        ),
        (
            json!({"containers": [], "securityContext": {"runAsUser": 5, "runAsGroup": 6}}),
            json!({"name": "c", "command": ["x"]}),
            (5, 6),
            "/w",
        ),
        (
            json!({"containers": [], "securityContext": {"runAsUser": 5, "runAsGroup": 6}}),
            json!({"name": "c", "command": ["x"], "securityContext": {"runAsUser": 7}}),
            (7, 6),
            "/w",
        ),
    ];
    for (pod, c, (uid, gid), cwd) in cases {
        let s = spec(pod, c.clone(), image.clone());
        assert_eq!(s["process"]["user"], json!({"uid": uid, "gid": gid}), "{c}");
        assert_eq!(s["process"]["cwd"], cwd, "{c}");
    }
    let s = spec(
        base(),
        json!({"name": "c", "command": ["x"]}),
        json!({"User": "nobody"}),
    );
    assert_eq!(s["process"]["user"], json!({"uid": 0, "gid": 0}));
    let s = spec(
        base(),
        json!({"name": "c", "command": ["x"], "env": [{"name": "A", "value": "mine"}, {"name": "B"}]}),
        image,
    );
    assert_eq!(
        s["process"]["env"],
        json!(["HOSTNAME=web-abc", "PATH=/bin", "A=mine", "B="])
    );
    match err(
        base(),
        json!({"name": "c", "command": ["x"], "env": [{"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
    ) {
        SpecError::Config(reason) => {
            // the agent found no such Secret (CreateContainerConfigError)
            assert_eq!(reason, "secret \"s\" not found")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_as_non_root_is_checked() {
    let pod = json!({"containers": [], "securityContext": {"runAsNonRoot": true}});
    let build_image = |c: Value, image: Value| {
        let mut r = req(pod.clone(), c);
        r.image.config = image;
        build_with(&r, &facts())
    };
    let ok = build_image(
        json!({"name": "c", "command": ["x"]}),
        json!({"User": "65534"}),
    );
    assert!(ok.is_ok());
    let ok = build_image(
        json!({"name": "c", "command": ["x"], "securityContext": {"runAsUser": 1000}}),
        json!({}),
    );
    assert!(ok.is_ok());
    for (c, image, want) in [
        (json!({"name": "c", "command": ["x"]}), json!({}), "container has runAsNonRoot and image will run as root (pod: \"web-abc_default(u1)\", container: c)"),
        (json!({"name": "c", "command": ["x"]}), json!({"User": "0"}), "image will run as root"),
        (json!({"name": "c", "command": ["x"]}), json!({"User": "nobody"}), "image has non-numeric user (nobody), cannot verify user is non-root"),
        (json!({"name": "c", "command": ["x"], "securityContext": {"runAsUser": 0}}), json!({"User": "1"}), "container's runAsUser breaks non-root policy"),
    ] {
        match build_image(c.clone(), image) {
            Err(SpecError::Config(m)) => assert!(m.contains(want), "{c}: {m}"),
            other => panic!("{c}: {other:?}"),
        }
    }
}

#[test]
fn groups_and_fs_group() {
    let pod = json!({"containers": [], "securityContext": {"runAsGroup": 3000, "supplementalGroups": [4000, 3000, 5000], "fsGroup": 2000},
        "volumes": [{"name": "tmp", "emptyDir": {}}]});
    let plan = build_with(
        &req(pod, json!({"name": "c", "command": ["x"], "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]})),
        &facts(),
    )
    .unwrap();
    assert_eq!(
        plan.spec["process"]["user"],
        json!({"uid": 0, "gid": 3000, "additionalGids": [2000, 4000, 5000]})
    );
    assert!(plan.host.contains(&HostPrep::Own {
        path: "/state/pods/u1/volumes/tmp".into(),
        gid: 2000
    }));
    // and on the host: group-owned, group-writable, setgid
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("v");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("f"), "x").unwrap();
    prepare_host(&[HostPrep::Own {
        path: vol.clone(),
        gid: 2000,
    }])
    .unwrap();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&vol).unwrap();
    assert_eq!((m.gid(), m.mode() & 0o2070), (2000, 0o2070));
    assert_eq!(std::fs::metadata(vol.join("f")).unwrap().gid(), 2000);
}

#[test]
fn resources() {
    for (res, want) in [
        (
            json!({"limits": {"cpu": "100m", "memory": "200Mi"}}),
            json!({"cpu": {"quota": 10000, "period": 100000, "shares": 102}, "memory": {"limit": 209715200}}),
        ),
        (
            json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "2"}}),
            json!({"cpu": {"quota": 200000, "period": 100000, "shares": 256}, "memory": null}),
        ),
        (
            json!({"requests": {"cpu": "1"}}),
            json!({"cpu": {"shares": 1024}, "memory": null}),
        ),
        (
            json!({"limits": {"memory": "1Gi"}}),
            json!({"cpu": null, "memory": {"limit": 1073741824}}),
        ),
        (json!({}), json!({"cpu": null, "memory": null})),
    ] {
        let s = spec(
            base(),
            json!({"name": "c", "command": ["x"], "resources": res.clone()}),
            json!({}),
        );
        let r = &s["linux"]["resources"];
        assert_eq!(r["cpu"], want["cpu"], "{res}");
        assert_eq!(r["memory"], want["memory"], "{res}");
        assert_eq!(r["devices"], json!([{"allow": false, "access": "rwm"}]));
    }
    let bad = build_with(
        &req(
            base(),
            json!({"name": "c", "command": ["x"], "resources": {"limits": {"cpu": "lots"}}}),
        ),
        &facts(),
    );
    assert!(
        matches!(bad, Err(SpecError::Quantity { what: "cpu limit", value, .. }) if value == "lots")
    );
    // OOM score by QoS: Guaranteed, Burstable by the share of the node's memory
    let oom = |res: Value| {
        let c = json!({"name": "c", "command": ["x"], "resources": res});
        spec(json!({"containers": [c.clone()]}), c, json!({}))["process"]["oomScoreAdj"].clone()
    };
    assert_eq!(oom(json!({"limits": {"cpu": "1", "memory": "1Gi"}})), -997);
    // without CAP_SYS_RESOURCE, not below the agent's own (containerd's restriction)
    let c = json!({"name": "c", "command": ["x"],
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}});
    let restricted = HostFacts {
        oom_score_adj_floor: Some(0),
        ..facts()
    };
    let s = build_with(&req(json!({"containers": [c.clone()]}), c), &restricted)
        .unwrap()
        .spec;
    assert_eq!(s["process"]["oomScoreAdj"], 0);
    let status = |eff: &str| format!("Name:\tagent\nCapEff:\t{eff}\n");
    assert_eq!(
        oom_score_adj_floor(&status("000001ffffffffff"), "0\n"),
        None
    );
    // a VM whose root lacks CAP_SYS_RESOURCE (bit 24), as this project's machines
    assert_eq!(
        oom_score_adj_floor(&status("000001fffeffffff"), "0\n"),
        Some(0)
    );
    assert_eq!(
        oom_score_adj_floor(&status("000001fffeffffff"), "-5\n"),
        Some(-5)
    );
    assert_eq!(oom_score_adj_floor("", "0"), None);
    // half of the node's 1 GiB
    assert_eq!(oom(json!({"requests": {"memory": "512Mi"}})), 500);
}

#[test]
fn security_context() {
    let caps = |c: Value| -> Value {
        spec(
            base(),
            json!({"name": "c", "command": ["x"], "securityContext": c}),
            json!({}),
        )["process"]["capabilities"]["effective"]
            .clone()
    };
    let mut with_admin: Vec<&str> = DEFAULT_CAPS.to_vec();
    with_admin.push("CAP_NET_ADMIN");
    assert_eq!(
        caps(json!({"capabilities": {"add": ["NET_ADMIN"]}})),
        json!(with_admin)
    );
    assert_eq!(
        caps(json!({"capabilities": {"drop": ["ALL"], "add": ["CAP_NET_BIND_SERVICE"]}})),
        json!(["CAP_NET_BIND_SERVICE"])
    );
    let without_kill: Vec<&str> = DEFAULT_CAPS
        .iter()
        .copied()
        .filter(|c| *c != "CAP_KILL")
        .collect();
    assert_eq!(
        caps(json!({"capabilities": {"drop": ["kill"]}})),
        json!(without_kill)
    );
    assert_eq!(caps(json!({"privileged": true})), json!(ALL_CAPS));

    let s = spec(
        base(),
        json!({"name": "c", "command": ["x"], "securityContext": {"privileged": true, "readOnlyRootFilesystem": true}}),
        json!({}),
    );
    assert!(s["linux"].get("maskedPaths").is_none() && s["linux"].get("readonlyPaths").is_none());
    assert_eq!(s["root"]["readonly"], true);
    assert_eq!(s["process"]["noNewPrivileges"], false);
    assert!(s["mounts"][5]["options"]
        .as_array()
        .unwrap()
        .contains(&json!("rw")));
    assert_eq!(
        s["linux"]["resources"]["devices"],
        json!([{"allow": true, "access": "rwm"}])
    );
    // allowPrivilegeEscalation: false is no_new_privs
    let s = spec(
        base(),
        json!({"name": "c", "command": ["x"], "securityContext": {"allowPrivilegeEscalation": false}}),
        json!({}),
    );
    assert_eq!(s["process"]["noNewPrivileges"], true);
}

#[test]
fn proc_mount_unmasked() {
    let s = spec(
        base(),
        json!({"name": "c", "command": ["x"], "securityContext": {"procMount": "Unmasked"}}),
        json!({}),
    );
    assert!(s["linux"].get("maskedPaths").is_none() && s["linux"].get("readonlyPaths").is_none());
    let s = spec(
        base(),
        json!({"name": "c", "command": ["x"], "securityContext": {"procMount": "Default"}}),
        json!({}),
    );
    assert_eq!(s["linux"]["maskedPaths"], json!(MASKED_PATHS));
}

#[test]
fn seccomp_profiles() {
    let mut f = facts();
    f.seccomp_profiles.insert(
        "profiles/audit.json".into(),
        Ok(json!({"defaultAction": "SCMP_ACT_LOG"})),
    );
    f.seccomp_profiles
        .insert("missing.json".into(), Err("no such file".into()));
    let with = |pod_sc: Value, c_sc: Value| {
        let r = req(
            json!({"containers": [], "securityContext": pod_sc}),
            json!({"name": "c", "command": ["x"], "securityContext": c_sc}),
        );
        build_with(&r, &f)
    };
    let s = with(
        json!({"seccompProfile": {"type": "RuntimeDefault"}}),
        json!({}),
    )
    .unwrap()
    .spec;
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        s["linux"]["seccomp"],
        seccomp::default_profile(
            &DEFAULT_CAPS
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
        )
    );
    // the container's wins over the pod's
    let s = with(
        json!({"seccompProfile": {"type": "RuntimeDefault"}}),
        json!({"seccompProfile": {"type": "Unconfined"}}),
    )
    .unwrap()
    .spec;
    assert!(s["linux"].get("seccomp").is_none());
    let s = with(
        json!({}),
        json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}}),
    )
    .unwrap()
    .spec;
    assert_eq!(
        s["linux"]["seccomp"],
        json!({"defaultAction": "SCMP_ACT_LOG"})
    );
    let e = with(
        json!({}),
        json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "missing.json"}}),
    );
    assert!(
        matches!(e, Err(SpecError::Config(m)) if m.contains("missing.json") && m.contains("no such file"))
    );
}

#[test]
fn sysctls_are_checked() {
    let pod = |sysctls: Value, extra: Value| {
        let mut p = json!({"containers": [], "securityContext": {"sysctls": sysctls}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let c = json!({"name": "c", "command": ["x"]});
    let s = spec(
        pod(
            json!([{"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"},
                  {"name": "kernel/shm_rmid_forced", "value": "1"}]),
            json!({}),
        ),
        c.clone(),
        json!({}),
    );
    assert_eq!(
        s["linux"]["sysctl"],
        json!({"kernel.shm_rmid_forced": "1", "net.ipv4.ip_local_port_range": "1024 65000"})
    );
    let mut f = facts();
    f.allowed_unsafe_sysctls = vec!["net.core.*".into()];
    let r = req(
        pod(
            json!([{"name": "net.core.somaxconn", "value": "1024"}]),
            json!({}),
        ),
        c.clone(),
    );
    assert!(build_with(&r, &f).is_ok());
    for (p, want) in [
        (
            pod(
                json!([{"name": "net.core.somaxconn", "value": "1"}]),
                json!({}),
            ),
            "forbidden sysctl: \"net.core.somaxconn\" not allowlisted",
        ),
        (
            pod(
                json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}]),
                json!({"hostNetwork": true}),
            ),
            "not allowed with host net enabled",
        ),
        (
            pod(
                json!([{"name": "kernel.shm_rmid_forced", "value": "1"}]),
                json!({"hostIPC": true}),
            ),
            "not allowed with host ipc enabled",
        ),
    ] {
        match err(p.clone(), c.clone()) {
            SpecError::Config(m) => assert!(m.contains(want), "{p}: {m}"),
            other => panic!("{p}: {other:?}"),
        }
    }
}

#[test]
fn host_network_shares_host_net_and_uts() {
    let s = spec(
        json!({"containers": [], "hostNetwork": true}),
        json!({"name": "c", "command": ["x"]}),
        json!({}),
    );
    let ns: Vec<&str> = s["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, ["pid", "ipc", "mount"]);
    assert!(s.get("hostname").is_none());
    // its pod IP is the node's, and its hostname is the node's
    let s = spec(
        json!({"containers": [], "hostNetwork": true}),
        json!({"name": "c", "command": ["x"], "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}),
        json!({}),
    );
    assert!(s["process"]["env"]
        .as_array()
        .unwrap()
        .contains(&json!("IP=192.0.2.2")));
}

#[test]
fn pod_namespaces() {
    let kinds = |s: &Value| -> Vec<String> {
        s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect()
    };
    let c = json!({"name": "c", "command": ["x"]});
    let s = spec(
        json!({"containers": [], "hostPID": true}),
        c.clone(),
        json!({}),
    );
    assert_eq!(kinds(&s), ["ipc", "uts", "mount", "network"]);
    let s = spec(
        json!({"containers": [], "hostIPC": true}),
        c.clone(),
        json!({}),
    );
    assert_eq!(kinds(&s), ["pid", "uts", "mount", "network"]);
    let shm = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/shm")
        .unwrap();
    assert_eq!(
        shm["source"], "/dev/shm",
        "the node's /dev/shm with hostIPC"
    );
    let s = spec(
        json!({"containers": [], "hostPID": true, "hostIPC": true, "hostNetwork": true}),
        c,
        json!({}),
    );
    assert_eq!(kinds(&s), ["mount"]);
}

#[test]
fn mount_propagation_as_containerd_maps_it() {
    let pod = json!({"containers": [], "volumes": [
        {"name": "root", "hostPath": {"path": "/"}},
        {"name": "sys", "hostPath": {"path": "/sys"}},
        {"name": "slave", "hostPath": {"path": "/srv/slave/x"}},
        {"name": "private", "hostPath": {"path": "/srv/private"}}]});
    let with = |mounts: Value| {
        build_with(
            &req(
                pod.clone(),
                json!({"name": "c", "command": ["x"], "securityContext": {"privileged": true}, "volumeMounts": mounts}),
            ),
            &facts(),
        )
    };
    let s = with(json!([
        {"name": "root", "mountPath": "/host/root", "mountPropagation": "HostToContainer", "readOnly": true},
        {"name": "sys", "mountPath": "/host/sys", "mountPropagation": "None"},
        {"name": "slave", "mountPath": "/slave", "mountPropagation": "HostToContainer"}]))
    .unwrap()
    .spec;
    let m = bind_mounts(&s);
    let opts = |d: &str| m.iter().find(|(dest, _, _)| dest == d).unwrap().2.clone();
    assert_eq!(opts("/host/root"), ["rbind", "rslave", "ro"]);
    assert_eq!(opts("/host/sys"), ["rbind", "rprivate", "rw"]);
    assert_eq!(opts("/slave"), ["rbind", "rslave", "rw"]);
    assert_eq!(s["linux"]["rootfsPropagation"], "rslave");
    let s = with(
        json!([{"name": "root", "mountPath": "/host/root", "mountPropagation": "Bidirectional"}]),
    )
    .unwrap()
    .spec;
    assert_eq!(
        bind_mounts(&s)
            .iter()
            .find(|x| x.0 == "/host/root")
            .unwrap()
            .2,
        ["rbind", "rshared", "rw"]
    );
    assert_eq!(s["linux"]["rootfsPropagation"], "rshared");
    let s = with(json!([{"name": "sys", "mountPath": "/s"}]))
        .unwrap()
        .spec;
    assert!(s["linux"].get("rootfsPropagation").is_none());
    // containerd's checks of the source mount
    for (mounts, want) in [
        (json!([{"name": "private", "mountPath": "/p", "mountPropagation": "HostToContainer"}]),
            "path \"/srv/private\" is mounted on \"/srv/private\" but it is not a shared or slave mount"),
        (json!([{"name": "slave", "mountPath": "/p", "mountPropagation": "Bidirectional"}]),
            "path \"/srv/slave/x\" is mounted on \"/srv/slave\" but it is not a shared mount"),
    ] {
        match with(mounts.clone()) {
            Err(SpecError::Invalid(m)) => assert_eq!(m, want),
            other => panic!("{mounts}: {other:?}"),
        }
    }
}

#[test]
fn volumes() {
    let pod = json!({"containers": [], "volumes": [
        {"name": "logs", "hostPath": {"path": "/var/log", "type": "Directory"}},
        {"name": "made", "hostPath": {"path": "/srv/made", "type": "DirectoryOrCreate"}},
        {"name": "sock", "hostPath": {"path": "/run/x.sock", "type": "FileOrCreate"}},
        {"name": "conf", "hostPath": {"path": "/etc/x.conf", "type": "File"}},
        {"name": "any", "hostPath": {"path": "/opt"}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "cm", "configMap": {"name": "x"}}]});
    let mounts = json!([
        {"name": "logs", "mountPath": "/host/logs", "readOnly": true},
        {"name": "made", "mountPath": "/made"},
        {"name": "sock", "mountPath": "/x.sock"},
        {"name": "conf", "mountPath": "/x.conf"},
        {"name": "any", "mountPath": "/opt"},
        {"name": "tmp", "mountPath": "/tmp", "subPath": "a/b"},
        {"name": "tmp", "mountPath": "/data", "subPathExpr": "$(POD)"},
        {"name": "tmp", "mountPath": "/dev/shm"},
        {"name": "mem", "mountPath": "/mem"}]);
    let mut accepted = pod.clone();
    accepted["volumes"].as_array_mut().unwrap().pop();
    let plan = build_with(
        &req(
            accepted,
            json!({"name": "c", "command": ["x"], "volumeMounts": mounts,
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
        ),
        &facts(),
    )
    .unwrap();
    let vm: Vec<(String, String, String)> = bind_mounts(&plan.spec)
        .into_iter()
        .filter(|(d, _, _)| !d.starts_with("/etc/") && d != "/dev/termination-log")
        .map(|(d, s, o)| (d, s, o[2].clone()))
        .collect();
    let t = |d: &str, s: &str, o: &str| (d.to_string(), s.to_string(), o.to_string());
    // in containerd's order: fewer path parts first
    assert_eq!(
        vm,
        [
            t("/made", "/srv/made", "rw"),
            t("/x.sock", "/run/x.sock", "rw"),
            t("/x.conf", "/etc/x.conf", "rw"),
            t("/opt", "/opt", "rw"),
            t("/tmp", "/state/pods/u1/volumes/tmp/a/b", "rw"),
            t("/data", "/state/pods/u1/volumes/tmp/web-abc", "rw"),
            t("/mem", "/state/pods/u1/volumes/mem", "rw"),
            t("/host/logs", "/var/log", "ro"),
            t("/dev/shm", "/state/pods/u1/volumes/tmp", "rw"),
        ]
    );
    // the emptyDir replaced the default /dev/shm tmpfs
    assert_eq!(
        plan.spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"] == "/dev/shm")
            .count(),
        1
    );
    let volumes: Vec<&HostPrep> = plan
        .host
        .iter()
        .filter(|h| !matches!(h, HostPrep::WriteFile { .. }))
        .collect();
    let check = |volume: &str, path: &str, want| HostPrep::Check {
        volume: volume.into(),
        path: path.into(),
        want,
    };
    assert_eq!(
        volumes,
        [
            &check("logs", "/var/log", PathType::Directory),
            &HostPrep::CreateDir("/srv/made".into()),
            &check("made", "/srv/made", PathType::Directory),
            &HostPrep::CreateFile("/run/x.sock".into()),
            &check("sock", "/run/x.sock", PathType::File),
            &check("conf", "/etc/x.conf", PathType::File),
            &HostPrep::CreateDir("/state/pods/u1/volumes/tmp".into()),
            &HostPrep::CreateDir("/state/pods/u1/volumes/tmp/a/b".into()),
            &HostPrep::CreateDir("/state/pods/u1/volumes/tmp".into()),
            &HostPrep::CreateDir("/state/pods/u1/volumes/tmp/web-abc".into()),
            &HostPrep::CreateDir("/state/pods/u1/volumes/tmp".into()),
            &HostPrep::Tmpfs {
                path: "/state/pods/u1/volumes/mem".into(),
                size: Some(64 << 20)
            },
        ]
    );
    for (mount, needle) in [
        (
            json!({"name": "cm", "mountPath": "/cm"}),
            "configmap \"x\" not found",
        ),
        (json!({"name": "nope", "mountPath": "/x"}), "nope"),
        (
            json!({"name": "tmp", "mountPath": "/x", "subPath": "../escape"}),
            "../escape",
        ),
        (json!({"name": "tmp", "mountPath": "relative"}), "relative"),
    ] {
        let mut pod = pod.clone();
        if mount["name"] != "cm" {
            pod["volumes"].as_array_mut().unwrap().pop();
        }
        let r = build_with(
            &req(
                pod,
                json!({"name": "c", "command": ["x"], "volumeMounts": [mount.clone()]}),
            ),
            &facts(),
        );
        match r {
            Err(
                SpecError::Invalid(reason) | SpecError::Config(reason) | SpecError::Mount(reason),
            ) => {
                assert!(reason.contains(needle), "{reason}")
            }
            other => panic!("{mount}: {other:?}"),
        }
    }
}

#[test]
fn dns_files_and_the_termination_log_are_mounted() {
    let pod = json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["203.0.113.1"]},
        "hostAliases": [{"ip": "198.51.100.7", "hostnames": ["foo"]}], "hostname": "custom"});
    let plan = build_with(
        &req(
            pod,
            json!({"name": "c", "command": ["x"], "terminationMessagePath": "/tmp/msg"}),
        ),
        &facts(),
    )
    .unwrap();
    let written = |p: &str| {
        plan.host
            .iter()
            .find_map(|h| match h {
                HostPrep::WriteFile { path, content, .. } if path == Path::new(p) => {
                    Some(content.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{p} not written"))
    };
    assert_eq!(
        written("/state/pods/u1/etc/resolv.conf"),
        "nameserver 203.0.113.1\n"
    );
    assert!(written("/state/pods/u1/etc/hosts")
        .ends_with("10.1.0.5\tcustom\n\n# Entries added by HostAliases.\n198.51.100.7\tfoo\n"));
    assert_eq!(written("/state/pods/u1/etc/hostname"), "custom\n");
    assert_eq!(written("/state/containers/c1/termination-log"), "");
    assert_eq!(plan.spec["hostname"], "custom");
    let m = bind_mounts(&plan.spec);
    assert!(m.contains(&(
        "/tmp/msg".into(),
        "/state/containers/c1/termination-log".into(),
        vec!["rbind".into(), "rprivate".into(), "rw".into()]
    )));
    assert!(m
        .iter()
        .any(|(d, s, _)| d == "/etc/resolv.conf" && s == "/state/pods/u1/etc/resolv.conf"));
}

#[test]
fn host_path_types_as_the_kubelet_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("a/b");
    let file = dir.path().join("f");
    let sock = dir.path().join("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    prepare_host(&[
        HostPrep::CreateDir(made.clone()),
        HostPrep::CreateFile(file.clone()),
    ])
    .unwrap();
    assert!(made.is_dir() && file.is_file());
    let check = |path: &Path, want| HostPrep::Check {
        volume: "v".into(),
        path: path.to_path_buf(),
        want,
    };
    prepare_host(&[
        check(&made, PathType::Directory),
        check(&file, PathType::File),
        check(&sock, PathType::Socket),
        check(Path::new("/dev/null"), PathType::CharDevice),
    ])
    .unwrap();
    let missing = dir.path().join("missing");
    let p = |x: &Path| x.display().to_string();
    for (step, want) in [
        (
            check(&missing, PathType::Directory),
            format!("hostPath {} doesn't exist", p(&missing)),
        ),
        (
            check(&made, PathType::File),
            format!(
                "hostPath type check failed: {} is not a file, it's a Directory",
                p(&made)
            ),
        ),
        (
            check(&file, PathType::Socket),
            format!(
                "hostPath type check failed: {} is not a socket file, it's a File",
                p(&file)
            ),
        ),
        (
            check(&file, PathType::BlockDevice),
            format!(
                "hostPath type check failed: {} is not a block device, it's a File",
                p(&file)
            ),
        ),
        (
            check(Path::new("/dev/null"), PathType::Directory),
            "hostPath type check failed: /dev/null is not a directory, it's a CharDevice"
                .to_string(),
        ),
    ] {
        match prepare_host(&[step]) {
            Err(SpecError::Mount(reason)) => {
                assert_eq!(
                    reason,
                    format!("MountVolume.SetUp failed for volume \"v\" : {want}")
                )
            }
            other => panic!("{other:?}"),
        }
    }
    // FileOrCreate makes no parent directories, as the kubelet's makeFile
    let orphan = dir.path().join("no/such/file");
    assert!(matches!(
        prepare_host(&[HostPrep::CreateFile(orphan)]),
        Err(SpecError::Host { .. })
    ));
}
