//! ConfigMaps, Secrets and ServiceAccounts end to end, with real parts only: the
//! `daemonset-agent` binary as server and as an agent that joined with a token (so it reads the
//! API as its node, through the Node authorizer), one real containerd + runc, images from the
//! loopback registry, and the real kubectl (the newest on the machine and 1.27).
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::proc::Proc;
use common::{wait_for, Containerd};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_daemonset-agent");

struct Cluster {
    /// First, so it drops first: removes everything below and all the test made, pass or fail.
    _guard: common::Guard,
    dir: tempfile::TempDir,
    ctd: Containerd,
    server: Proc,
    listen: String,
    kubeconfig: PathBuf,
    agent: Option<Proc>,
    extra_server_args: Vec<String>,
}

impl Cluster {
    fn start(extra_server_args: &[&str]) -> Cluster {
        let ctd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("dsa-cfg-")
            .tempdir_in("/tmp")
            .unwrap();
        let listen = format!("127.0.0.1:{}", common::free_port());
        let kubeconfig = dir.path().join("server/admin.kubeconfig");
        let mut c = Cluster {
            _guard: common::Guard::new().containerd(&ctd).dir(dir.path()),
            server: Proc::spawn(&["true"], dir.path().join("none.log")),
            dir,
            ctd,
            listen,
            kubeconfig,
            agent: None,
            extra_server_args: extra_server_args.iter().map(|s| s.to_string()).collect(),
        };
        c.start_server("server.log");
        c
    }

    fn start_server(&mut self, log: &str) {
        let data = self.dir.path().join("server");
        let mut args = vec![
            "server".to_string(),
            "--data-dir".into(),
            data.to_string_lossy().into(),
            "--listen".into(),
            self.listen.clone(),
        ];
        args.extend(self.extra_server_args.iter().cloned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.server = Proc::spawn(&argv, self.dir.path().join(log));
        wait_for("the server to answer", Duration::from_secs(20), || {
            (self.kubeconfig.exists()
                && self.kubectl(&["get", "--raw", "/readyz"]).status.success())
            .then_some(())
        });
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// The node's own kubeconfig, written by its join.
    fn node_kubeconfig(&self) -> PathBuf {
        daemonset_agent::agent::join::NodeFiles::new(&self.state_dir()).kubeconfig()
    }

    /// Starts the agent of node `n1`, joining with a fresh token.
    fn start_agent(&mut self) {
        let token = dsa(&[
            "token",
            "create",
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--ttl",
            "1h",
        ]);
        let config = self.dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "server = \"https://{}\"\ntoken = \"{}\"\ncontainer-logs-to-journald = false\nresync-seconds = 2\n",
                self.listen,
                token.trim()
            ),
        )
        .unwrap();
        let ns = format!("cfg-{}", std::process::id());
        let state = self.state_dir();
        let args = [
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--node-name",
            "n1",
            "--containerd-socket",
            self.ctd.socket.to_str().unwrap(),
            "--containerd-namespace",
            &ns,
            "--state-dir",
            state.to_str().unwrap(),
        ];
        self.agent = Some(Proc::spawn(&args, self.dir.path().join("agent.log")));
        wait_for("node n1 to register", Duration::from_secs(30), || {
            self.kubectl(&["get", "node", "n1"])
                .status
                .success()
                .then_some(())
        });
    }

    fn kubectl_with(&self, bin: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(bin)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(common::kubectl(), &self.kubeconfig, args)
    }

    fn ok(&self, out: Output, args: &[&str]) -> String {
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}\n--- server log ---\n{}\n--- agent log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server.log_tail(30),
            self.agent
                .as_ref()
                .map(|a| a.log_tail(30))
                .unwrap_or_default(),
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        self.ok(self.kubectl(args), args)
    }

    fn apply(&self, name: &str, yaml: &str) -> String {
        let f = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        self.kubectl_ok(&["apply", "-f", f.to_str().unwrap()])
    }

    fn get_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).unwrap()
    }

    /// The pods of DaemonSet `ds` (by its label `app=ds`).
    fn pod_of(&self, ds: &str) -> Option<Value> {
        let pods = self.get_json(&["get", "pods", "-l", &format!("app={ds}")]);
        pods["items"].as_array()?.first().cloned()
    }
}

fn dsa(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "daemonset-agent {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn image() -> String {
    format!("{}/busybox:v1", common::registry())
}

/// The waiting reason of the pod's first container, if it waits.
fn waiting_reason(pod: &Value) -> Option<(String, String)> {
    let w = pod.pointer("/status/containerStatuses/0/state/waiting")?;
    Some((
        w["reason"].as_str()?.to_string(),
        w["message"].as_str().unwrap_or("").to_string(),
    ))
}

/// A DaemonSet whose container reports what it reads, once a second, into `out/seen` (a
/// hostPath the test reads): an env var from a ConfigMap, one from a Secret, a ConfigMap file, a
/// Secret file and its mode, and envFrom with a prefix.
fn reader_ds(out: &Path) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: reader, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reader}}}}
  template:
    metadata: {{labels: {{app: reader}}}}
    spec:
      terminationGracePeriodSeconds: 1
      # no pod network needed: the test must not depend on the machine's shared IPAM range
      hostNetwork: true
      containers:
      - name: c
        image: {image}
        command: ["sh", "-c", "while true; do echo \"env=$LEVEL/$PASSWORD/$CFG_color file=$(cat /etc/app/level) secret=$(cat /etc/creds/pw) $(ls -lL /etc/creds/pw | cut -c1-10) optional=$(ls /etc/opt | wc -l)\" > /out/seen.tmp; mv /out/seen.tmp /out/seen; sleep 0.2; done"]
        env:
        - name: LEVEL
          valueFrom: {{configMapKeyRef: {{name: app, key: level}}}}
        - name: PASSWORD
          valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
        - name: MISSING
          valueFrom: {{configMapKeyRef: {{name: nowhere, key: x, optional: true}}}}
        envFrom:
        - prefix: CFG_
          configMapRef: {{name: app}}
        - configMapRef: {{name: app}}
        volumeMounts:
        - {{name: app, mountPath: /etc/app}}
        - {{name: creds, mountPath: /etc/creds}}
        - {{name: opt, mountPath: /etc/opt}}
        - {{name: out, mountPath: /out}}
      volumes:
      - name: app
        configMap: {{name: app}}
      - name: creds
        secret:
          secretName: creds
          defaultMode: 0400
          items: [{{key: password, path: pw}}]
      - name: opt
        secret: {{secretName: nowhere, optional: true}}
      - name: out
        hostPath: {{path: {out}, type: Directory}}
"#,
        image = image(),
        out = out.display(),
    )
}

/// A DaemonSet configured by a ConfigMap and a Secret: the container reads the env vars and the
/// files; a missing ConfigMap keeps it waiting with CreateContainerConfigError until it is made;
/// an edit of the ConfigMap reaches the mounted file within a minute; a node reads its pods'
/// Secret and no other.
#[test]
fn a_daemonset_configured_by_a_config_map_and_a_secret() {
    let mut c = Cluster::start(&[]);
    c.start_agent();
    let out = c.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // the Secret first, the ConfigMap only after the pod waited for it
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
    ]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "not-yours",
        "--from-literal=x=y",
    ]);
    c.apply("reader", &reader_ds(&out));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (reason, message) = loop {
        let pod = c.pod_of("reader");
        if let Some(w) = pod
            .as_ref()
            .and_then(waiting_reason)
            .filter(|(_, m)| m.contains("app"))
        {
            break w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pod never waited for its ConfigMap: {pod:#?}\n--- agent log ---\n{}",
            c.agent.as_ref().unwrap().log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(reason, "CreateContainerConfigError", "{message}");
    assert!(message.contains("configmap \"app\" not found"), "{message}");
    c.kubectl_ok(&[
        "create",
        "configmap",
        "app",
        "--from-literal=level=info",
        "--from-literal=color=blue",
        "--from-literal=1st=skipped",
    ]);
    let seen = out.join("seen");
    let read = || std::fs::read_to_string(&seen).ok();
    let first = wait_for(
        "the container to read its config",
        Duration::from_secs(60),
        read,
    );
    assert_eq!(
        first.trim(),
        "env=info/hunter2/blue file=info secret=hunter2 -r-------- optional=0",
        "{}",
        c.agent.as_ref().unwrap().log_tail(20)
    );
    // envFrom without a prefix: "1st" is no variable name, skipped with the kubelet's warning
    let log = c.agent.as_ref().unwrap().log();
    assert!(
        log.contains("Keys [1st] from the EnvFrom configMap default/app were skipped"),
        "{log}"
    );
    // kubectl's verbs on the new kinds
    let table = c.kubectl_ok(&["get", "configmap", "app"]);
    assert!(
        table.starts_with("NAME") && table.contains("DATA"),
        "{table}"
    );
    let table = c.kubectl_ok(&["get", "secret", "creds"]);
    assert!(
        table.contains("Opaque") && table.contains("TYPE"),
        "{table}"
    );
    // an edit reaches the mounted file (not the env, as in Kubernetes) within a minute
    let edited = std::time::Instant::now();
    c.kubectl_ok(&[
        "patch",
        "configmap",
        "app",
        "-p",
        r#"{"data":{"level":"debug"}}"#,
    ]);
    let updated = wait_for("the file to change", Duration::from_secs(60), || {
        read().filter(|s| s.contains("file=debug"))
    });
    eprintln!(
        "a ConfigMap edit reached the mounted file in {:?} (resync-seconds = 2)",
        edited.elapsed()
    );
    assert!(updated.contains("env=info/"), "{updated}");
    // the node reads what its pod uses, and nothing else
    let node_kc = c.node_kubeconfig();
    let kubectl = common::kubectl();
    for (args, ok) in [
        (vec!["get", "secret", "creds"], true),
        (vec!["get", "configmap", "app"], true),
        (vec!["get", "secret", "not-yours"], false),
        (vec!["get", "secrets"], false),
    ] {
        let got = c.kubectl_with(kubectl, &node_kc, &args);
        assert_eq!(
            got.status.success(),
            ok,
            "{args:?}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        if !ok {
            assert!(
                String::from_utf8_lossy(&got.stderr).contains("forbidden"),
                "{}",
                String::from_utf8_lossy(&got.stderr)
            );
        }
    }
    // the default ServiceAccount exists in every namespace, as the controller makes it
    c.kubectl_ok(&["create", "namespace", "team"]);
    wait_for(
        "the default ServiceAccount of team",
        Duration::from_secs(20),
        || {
            c.kubectl(&["get", "serviceaccount", "default", "-n", "team"])
                .status
                .success()
                .then_some(())
        },
    );
}

/// The create verbs of kubectl 1.27 and the newest on the new kinds, and their validation.
#[test]
fn kubectl_creates_config_maps_secrets_and_service_accounts() {
    let c = Cluster::start(&[]);
    let cfg = c.dir.path().join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("app.conf"), "a=1\n").unwrap();
    for (i, bin) in [
        common::kubectl().to_path_buf(),
        common::kubectl_release("1.27"),
    ]
    .iter()
    .enumerate()
    {
        let k = |args: &[&str]| {
            let out = c.kubectl_with(bin, &c.kubeconfig, args);
            c.ok(out, args)
        };
        let n = |s: &str| format!("{s}-{i}");
        k(&[
            "create",
            "configmap",
            &n("files"),
            &format!("--from-file={}", cfg.display()),
        ]);
        k(&[
            "create",
            "secret",
            "generic",
            &n("gen"),
            "--from-literal=u=v",
        ]);
        k(&[
            "create",
            "secret",
            "docker-registry",
            &n("pull"),
            "--docker-server=127.0.0.1:1",
            "--docker-username=u",
            "--docker-password=p",
        ]);
        k(&["create", "serviceaccount", &n("sa")]);
        let cm = c.get_json(&["get", "configmap", &n("files")]);
        assert_eq!(cm["data"]["app.conf"], "a=1\n");
        let pull = c.get_json(&["get", "secret", &n("pull")]);
        assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
        let table = k(&["get", "serviceaccounts"]);
        assert!(
            table.contains(&n("sa")) && table.contains("SECRETS"),
            "{table}"
        );
    }
    // validation as kube-apiserver's: a bad key, a dockerconfigjson that is no JSON
    let bad = c.kubectl(&["create", "configmap", "bad", "--from-literal=a/b=c"]);
    assert!(!bad.status.success());
    let f = c.dir.path().join("s.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/dockerconfigjson\nstringData: {.dockerconfigjson: nope}\n",
    )
    .unwrap();
    let out = c.kubectl(&["create", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(".dockerconfigjson"),
        "{err}"
    );
    // immutable stays so
    c.kubectl_ok(&["create", "configmap", "frozen", "--from-literal=a=1"]);
    c.kubectl_ok(&[
        "patch",
        "configmap",
        "frozen",
        "-p",
        r#"{"immutable":true}"#,
    ]);
    let out = c.kubectl(&[
        "patch",
        "configmap",
        "frozen",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("field is immutable when `immutable` is set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn encryption_config(keys: &[(&str, &str)]) -> String {
    let mut s = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n".to_string();
    for (name, secret) in keys {
        s.push_str(&format!("      - name: {name}\n        secret: {secret}\n"));
    }
    s.push_str("  - identity: {}\n");
    s
}

/// The SQLite files of the server's store, as bytes (the database and its write-ahead log).
fn raw_store(c: &Cluster) -> Vec<u8> {
    let mut out = Vec::new();
    for f in ["state.db", "state.db-wal"] {
        out.extend(std::fs::read(c.dir.path().join("server").join(f)).unwrap_or_default());
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `--encryption-provider-config`: Secrets are stored encrypted (the raw store holds neither the
/// value nor its base64), a restart with the configuration reads them back, a rotated key list
/// still reads the old key's values, and a configuration without the key is a clear error at
/// start, not garbage.
#[test]
fn secrets_are_encrypted_at_rest() {
    const K1: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=";
    const K2: &str = "YWJjZGVmZ2hpamtsbW5vcA==";
    let keys = tempfile::tempdir().unwrap();
    let config = keys.path().join("encryption.yaml");
    std::fs::write(&config, encryption_config(&[("k1", K1)])).unwrap();
    let mut c = Cluster::start(&["--encryption-provider-config", config.to_str().unwrap()]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "vault",
        "--from-literal=password=s3cr3t-value",
    ]);
    c.kubectl_ok(&[
        "create",
        "configmap",
        "plain",
        "--from-literal=visible=in-clear-value",
    ]);
    let raw = raw_store(&c);
    assert!(!contains(&raw, b"s3cr3t-value"));
    assert!(
        !contains(&raw, b"czNjcjN0LXZhbHVl"),
        "the base64 of the value is in the store"
    );
    assert!(contains(&raw, b"k8s:enc:aesgcm:v1:k1:"));
    assert!(
        contains(&raw, b"in-clear-value"),
        "ConfigMaps are not encrypted"
    );
    let read_back = |c: &Cluster| {
        let s = c.get_json(&["get", "secret", "vault"]);
        s["data"]["password"].as_str().unwrap_or("").to_string()
    };
    // restarted with a rotated list (k2 first): k1's value still reads, new writes use k2
    c.server.stop();
    std::fs::write(&config, encryption_config(&[("k2", K2), ("k1", K1)])).unwrap();
    c.start_server("server-2.log");
    assert_eq!(read_back(&c), "czNjcjN0LXZhbHVl");
    c.kubectl_ok(&["create", "secret", "generic", "newer", "--from-literal=a=b"]);
    assert!(contains(&raw_store(&c), b"k8s:enc:aesgcm:v1:k2:"));
    // without k1: the server refuses to start, naming the object and the key
    c.server.stop();
    std::fs::write(&config, encryption_config(&[("k2", K2)])).unwrap();
    let data = c.dir.path().join("server");
    let mut failed = Proc::spawn(
        &[
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &c.listen,
            "--encryption-provider-config",
            config.to_str().unwrap(),
        ],
        c.dir.path().join("server-3.log"),
    );
    let status = wait_for(
        "the server to refuse to start",
        Duration::from_secs(20),
        || failed.child.try_wait().unwrap(),
    );
    assert!(!status.success());
    let log = failed.log();
    assert!(
        log.contains("opening store")
            && log.contains(": encrypted with aesgcm key \"k1\", which the encryption configuration does not hold"),
        "{log}"
    );
}

/// A pod's imagePullSecrets (a `kubernetes.io/dockerconfigjson` Secret made with `kubectl create
/// secret docker-registry`) log its pull in to a registry that asks for a login; a pod without
/// them waits in ErrImagePull/ImagePullBackOff (imagePullPolicy Always: an image already on the
/// node is not pulled again under IfNotPresent, as with the kubelet).
#[test]
fn image_pull_secrets_log_pulls_in() {
    let mut c = Cluster::start(&[]);
    c.start_agent();
    let password = format!("pw-{:08x}", std::process::id());
    let reg = common::authreg::AuthRegistry::start(
        &c.dir.path().join("private-registry"),
        "puller",
        &password,
    );
    let private = format!("{}/private/busybox:v1", reg.addr);
    let copied = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("--dest-creds=puller:{password}"))
        .arg(format!("docker://{}", image()))
        .arg(format!("docker://{private}"))
        .status()
        .unwrap();
    assert!(copied.success(), "skopeo copy");
    c.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", reg.addr),
        "--docker-username=puller",
        &format!("--docker-password={password}"),
    ]);
    let ds = |name: &str, secrets: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      hostNetwork: true\n      imagePullSecrets: {secrets}\n      containers:\n      - {{name: c, image: {private}, imagePullPolicy: Always}}\n"
        )
    };
    c.apply("with", &ds("with", "[{name: regcred}]"));
    c.apply("without", &ds("without", "[]"));
    // a pod naming none gets its ServiceAccount's (the ServiceAccount admission)
    c.kubectl_ok(&["create", "serviceaccount", "puller"]);
    c.kubectl_ok(&[
        "patch",
        "serviceaccount",
        "puller",
        "-p",
        r#"{"imagePullSecrets":[{"name":"regcred"}]}"#,
    ]);
    c.apply(
        "via-sa",
        &ds("via-sa", "[]").replace(
            "      imagePullSecrets: []\n",
            "      serviceAccountName: puller\n",
        ),
    );
    for name in ["with", "via-sa"] {
        let p = wait_for(
            "the pods with the pull secret to run",
            Duration::from_secs(90),
            || {
                let p = c.pod_of(name)?;
                (p["status"]["phase"] == "Running").then_some(p)
            },
        );
        assert_eq!(p["spec"]["imagePullSecrets"][0]["name"], "regcred", "{p}");
    }
    let (reason, message) = wait_for(
        "the pod without it to fail its pull",
        Duration::from_secs(90),
        || {
            c.pod_of("without")
                .as_ref()
                .and_then(waiting_reason)
                .filter(|(r, _)| r.contains("ImagePull"))
        },
    );
    assert!(
        reason == "ErrImagePull" || reason == "ImagePullBackOff",
        "{reason}: {message}"
    );
}

/// The claims of a JWT (its middle part, unpadded base64url JSON).
fn jwt_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.trim().split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

impl Cluster {
    /// Who `token` is, by `kubectl auth whoami` (a SelfSubjectReview) with it: Err with kubectl's
    /// stderr when the server refuses it.
    fn whoami(&self, token: &str) -> Result<Value, String> {
        let out = self.kubectl(&["--token", token.trim(), "auth", "whoami", "-o", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    }
}

/// A DaemonSet's pod gets the ServiceAccount admission's `kube-api-access-*` volume; the agent
/// writes the token it requested for the pod (TokenRequest bound to it), the root CA and the
/// namespace atomically (`..data`) at /var/run/secrets/kubernetes.io/serviceaccount; the token
/// authenticates as the pod's ServiceAccount, which may do nothing else; it is requested again
/// at 80% of its life (here capped at 20 s by `--service-account-max-token-expiration`) and the
/// new one reaches the file.
#[test]
fn sa_token_volume_is_mounted_verified_and_refreshed() {
    let mut c = Cluster::start(&["--service-account-max-token-expiration", "20s"]);
    c.start_agent();
    let out = c.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    c.apply(
        "token-reader",
        &format!(
            r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: token-reader, namespace: default}}
spec:
  selector: {{matchLabels: {{app: token-reader}}}}
  template:
    metadata: {{labels: {{app: token-reader}}}}
    spec:
      terminationGracePeriodSeconds: 1
      hostNetwork: true
      containers:
      - name: c
        image: {image}
        command: ["sh", "-c", "while true; do for f in token ca.crt namespace; do cat {sa}/$f > /out/$f.tmp && mv /out/$f.tmp /out/$f; done; ls -la {sa} > /out/ls; sleep 0.2; done"]
        volumeMounts:
        - {{name: out, mountPath: /out}}
      volumes:
      - name: out
        hostPath: {{path: {out}, type: Directory}}
"#,
            image = image(),
            out = out.display(),
        ),
    );
    let read = |f: &str| {
        std::fs::read_to_string(out.join(f))
            .ok()
            .filter(|s| !s.is_empty())
    };
    // the container's loop writes token, ca.crt, namespace, then ls: all four there once ls is
    let token = wait_for(
        "the container to read its token and list the volume",
        Duration::from_secs(90),
        || read("ls").and_then(|_| read("token")),
    );
    let pod = c.pod_of("token-reader").unwrap();
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    // what the admission added
    let vols = pod["spec"]["volumes"].as_array().unwrap();
    let vol = vols
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("no kube-api-access volume: {vols:?}"));
    assert_eq!(
        vol["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3607
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][1]["mountPath"],
        sa
    );
    // the files
    assert_eq!(read("namespace").unwrap(), "default");
    let ca = c.kubectl_ok(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(read("ca.crt").unwrap(), ca);
    let ls = read("ls").unwrap();
    assert!(
        ls.contains("token -> ..data/token") && ls.contains("..data -> "),
        "{ls}"
    );
    // the token: bound to this pod on node n1, authenticating as default/default
    let claims = jwt_claims(&token);
    let k8s = &claims["kubernetes.io"];
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        claims["iss"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert_eq!(k8s["pod"]["name"], pod_name.as_str());
    assert_eq!(k8s["pod"]["uid"], pod["metadata"]["uid"]);
    assert_eq!(k8s["node"]["name"], "n1");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        20,
        "capped by --service-account-max-token-expiration: {claims}"
    );
    let who = c.whoami(&token).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"], "system:serviceaccount:default:default",
        "{who}"
    );
    // an SA may ask about itself and nothing else
    let listed = c.kubectl(&["--token", token.trim(), "get", "pods"]);
    assert!(!listed.status.success());
    assert!(
        String::from_utf8_lossy(&listed.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // refreshed: a new token in the file well before the first expires
    let first = std::time::Instant::now();
    let renewed = wait_for("a new token in the file", Duration::from_secs(60), || {
        read("token").filter(|t| *t != token)
    });
    eprintln!(
        "the token file changed after {:?} (token life 20 s)",
        first.elapsed()
    );
    assert!(c.whoami(&renewed).is_ok());
    let new_claims = jwt_claims(&renewed);
    assert!(new_claims["iat"].as_i64() > claims["iat"].as_i64());
    // the pod deleted, its tokens stop working
    c.kubectl_ok(&["delete", "ds", "token-reader"]);
    wait_for("the pod to go", Duration::from_secs(60), || {
        c.pod_of("token-reader").is_none().then_some(())
    });
    let refused = c.whoami(&renewed).unwrap_err();
    assert!(refused.contains("Unauthorized"), "{refused}");
}

/// `kubectl create token` (1.27 and the newest: a protobuf TokenRequest) and the Python
/// client's `create_namespaced_service_account_token` get tokens the server verifies, with the
/// duration asked, bound to a pod when asked (and dead with it); what is refused is refused as
/// kube-apiserver does.
#[test]
fn kubectl_and_python_create_service_account_tokens() {
    let c = Cluster::start(&[]);
    wait_for(
        "the default ServiceAccount",
        Duration::from_secs(20),
        || {
            c.kubectl(&["get", "serviceaccount", "default"])
                .status
                .success()
                .then_some(())
        },
    );
    for bin in [
        common::kubectl().to_path_buf(),
        common::kubectl_release("1.27"),
    ] {
        let run = |args: &[&str]| c.kubectl_with(&bin, &c.kubeconfig, args);
        let out = run(&["create", "token", "default", "--duration", "10m"]);
        let token = c.ok(out, &["create", "token"]);
        let claims = jwt_claims(&token);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            600,
            "{bin:?}: {claims}"
        );
        assert_eq!(
            claims["aud"],
            serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
        );
        assert!(claims["kubernetes.io"].get("pod").is_none(), "{claims}");
        let who = c.whoami(&token).unwrap();
        assert_eq!(
            who["status"]["userInfo"]["groups"],
            serde_json::json!([
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ])
        );
        // too short, a missing ServiceAccount
        let short = run(&["create", "token", "default", "--duration", "5m"]);
        assert!(!short.status.success());
        let err = String::from_utf8_lossy(&short.stderr);
        assert!(
            err.contains("may not specify a duration less than 10 minutes"),
            "{err}"
        );
        let missing = run(&["create", "token", "nobody"]);
        let err = String::from_utf8_lossy(&missing.stderr);
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "{err}"
        );
    }
    // bound to a pod: the pod's claim, and no longer valid once the pod is gone
    c.kubectl_ok(&[
        "run",
        "bound",
        "--image",
        &image(),
        "--overrides",
        r#"{"spec":{"nodeName":"nowhere"}}"#,
    ]);
    let token = c.kubectl_ok(&[
        "create",
        "token",
        "default",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "bound",
    ]);
    let uid = c.kubectl_ok(&["get", "pod", "bound", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(
        jwt_claims(&token)["kubernetes.io"]["pod"]["uid"],
        uid.as_str()
    );
    assert!(c.whoami(&token).is_ok());
    c.kubectl_ok(&["delete", "pod", "bound", "--grace-period=0", "--force"]);
    assert!(c.whoami(&token).unwrap_err().contains("Unauthorized"));
    // the official Python client
    let script = "import sys\nfrom kubernetes import client, config\n\
        config.load_kube_config(config_file=sys.argv[1])\n\
        body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))\n\
        tr = client.CoreV1Api().create_namespaced_service_account_token('default', 'default', body)\n\
        print(tr.status.token)\n";
    let out = Command::new(common::python_client())
        .args(["-c", script])
        .arg(&c.kubeconfig)
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !token.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who = c.whoami(&token).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
}
