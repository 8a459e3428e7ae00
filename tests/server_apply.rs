//! Server-side apply and managedFields against the real kubectl (1.27 and the newest on the
//! machine) and the official Python client: `kubectl apply --server-side` creating and updating,
//! a second manager's conflict (the 409 kubectl prints) and `--force-conflicts`, the upgrade from
//! client-side apply, and the managers `kubectl get --show-managed-fields` shows.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use daemonset_agent::core::validation::Policy;
use daemonset_agent::server::{start, RunningServer, ServerOptions};
use serde_json::Value;

/// A server on loopback and one kubectl binary to drive it.
struct Srv {
    rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    data: PathBuf,
    cache: tempfile::TempDir,
    kubectl: PathBuf,
}

impl Srv {
    fn start(data: &Path, kubectl: PathBuf) -> Srv {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(start(ServerOptions {
                data_dir: data.to_path_buf(),
                listen: "127.0.0.1:0".parse().unwrap(),
                insecure_listen: None,
                policy: Policy::default(),
                ..Default::default()
            }))
            .unwrap();
        Srv {
            rt,
            server: Some(server),
            data: data.to_path_buf(),
            cache: tempfile::tempdir().unwrap(),
            kubectl,
        }
    }
    fn stop(mut self) {
        let s = self.server.take().unwrap();
        self.rt.block_on(s.shutdown());
    }
    fn kubectl(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.data.join("admin.kubeconfig"))
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .unwrap();
        eprintln!(
            "$ {} {}\n{}{}",
            self.kubectl.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }
    fn ds(&self) -> Value {
        let out = self.kubectl_ok(&["get", "ds", "agent", "-o", "json", "--show-managed-fields"]);
        serde_json::from_str(&out).unwrap()
    }
    /// Applies `text` (written to a file) with the extra flags.
    fn apply(&self, text: &str, flags: &[&str]) -> Output {
        let file = self.data.join("ds.yaml");
        std::fs::write(&file, text).unwrap();
        let mut args = vec!["apply", "-f", file.to_str().unwrap()];
        args.extend_from_slice(flags);
        self.kubectl(&args)
    }
}

fn manifest(image: &str, labels: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  labels: {{{labels}}}
spec:
  selector:
    matchLabels: {{app: agent}}
  template:
    metadata:
      labels: {{app: agent}}
    spec:
      containers:
      - name: c
        image: {image}
        ports:
        - containerPort: 9100
"
    )
}

/// The managedFields entries of the main resource as (manager, operation) pairs (the status
/// controller's writes are on the status subresource).
fn managers(ds: &Value) -> Vec<(String, String)> {
    ds["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e.get("subresource").is_none())
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn entry<'a>(ds: &'a Value, manager: &str) -> &'a Value {
    ds["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["manager"] == manager))
        .unwrap_or_else(|| panic!("no managedFields entry of {manager}: {ds}"))
}

fn image(ds: &Value) -> &str {
    ds["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}

const CONTAINER_C: &str = "k:{\"name\":\"c\"}";

fn server_side_apply_with(kubectl: PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path(), kubectl);

    let out = srv.apply(
        &manifest("agent:1", "app: agent, tier: node"),
        &["--server-side"],
    );
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("daemonset.apps/agent serverside-applied"),
        "apply to a missing object creates it"
    );
    let ds = srv.ds();
    assert_eq!(managers(&ds), [("kubectl".into(), "Apply".into())]);
    let mine = &entry(&ds, "kubectl")["fieldsV1"];
    let c = &mine["f:spec"]["f:template"]["f:spec"]["f:containers"][CONTAINER_C];
    assert!(c["f:image"].is_object() && c.get(".").is_some(), "{mine}");
    assert!(
        c["f:ports"]["k:{\"containerPort\":9100,\"protocol\":\"TCP\"}"].is_object(),
        "ports keyed by port and protocol: {mine}"
    );
    assert!(
        mine["f:spec"]["f:selector"] == serde_json::json!({}),
        "atomic selector: {mine}"
    );
    assert_eq!(
        ds["spec"]["revisionHistoryLimit"], 10,
        "defaults still apply"
    );
    let status_writer = entry(&ds, "daemonset-controller");
    assert_eq!(status_writer["subresource"], "status");
    assert_eq!(status_writer["operation"], "Update");
    assert!(
        status_writer["fieldsV1"]["f:status"].is_object(),
        "{status_writer}"
    );
    let plain = srv.kubectl_ok(&["get", "ds", "agent", "-o", "yaml"]);
    assert!(
        !plain.contains("managedFields"),
        "kubectl hides them by default"
    );

    let out = srv.apply(
        &manifest("agent:2", "app: agent, tier: node"),
        &["--server-side"],
    );
    assert!(out.status.success());
    let ds = srv.ds();
    assert_eq!(image(&ds), "agent:2");
    assert_eq!(ds["metadata"]["generation"], 2);

    let out = srv.apply(
        &manifest("agent:2", "app: agent, tier: node"),
        &["--server-side", "--dry-run=server"],
    );
    assert!(out.status.success());

    // A second manager wants another image: refused with kube-apiserver's 409.
    let other = manifest("agent:other", "app: agent");
    let out = srv.apply(&other, &["--server-side", "--field-manager=other"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.template.spec.containers[name=\"c\"].image"),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "kubectl's advice: {err}");
    assert_eq!(
        image(&srv.ds()),
        "agent:2",
        "a refused apply changes nothing"
    );

    let out = srv.apply(
        &other,
        &[
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
        ],
    );
    assert!(out.status.success());
    let ds = srv.ds();
    assert_eq!(image(&ds), "agent:other");
    let theirs = &entry(&ds, "other")["fieldsV1"];
    assert!(
        theirs["f:spec"]["f:template"]["f:spec"]["f:containers"][CONTAINER_C]["f:image"]
            .is_object()
    );
    let mine = &entry(&ds, "kubectl")["fieldsV1"];
    assert!(
        mine["f:spec"]["f:template"]["f:spec"]["f:containers"][CONTAINER_C]
            .get("f:image")
            .is_none(),
        "forced: the image changed owner: {mine}"
    );

    // kubectl drops the tier label (only it owned it) from its configuration: removed.
    let out = srv.apply(&manifest("agent:other", "app: agent"), &["--server-side"]);
    assert!(out.status.success());
    let ds = srv.ds();
    assert_eq!(
        ds["metadata"]["labels"],
        serde_json::json!({"app": "agent"})
    );

    // Update managers from the kubectl commands' own field managers.
    srv.kubectl_ok(&["set", "image", "ds/agent", "c=agent:set"]);
    srv.kubectl_ok(&["label", "ds", "agent", "team=obs"]);
    srv.kubectl_ok(&["rollout", "restart", "ds/agent"]);
    let ds = srv.ds();
    assert_eq!(image(&ds), "agent:set");
    let all = managers(&ds);
    for want in [
        ("kubectl-set", "Update"),
        ("kubectl-rollout", "Update"),
        ("kubectl-label", "Update"),
        ("kubectl", "Apply"),
    ] {
        assert!(
            all.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {all:?}"
        );
    }
    let shown = srv.kubectl_ok(&["get", "ds", "agent", "-o", "yaml", "--show-managed-fields"]);
    assert!(shown.contains("manager: kubectl-set"), "{shown}");
    srv.stop();
}

#[test]
fn kubectl_server_side_apply_conflicts_and_force_newest() {
    server_side_apply_with(common::kubectl().to_path_buf());
}

#[test]
fn kubectl_server_side_apply_conflicts_and_force_1_27() {
    server_side_apply_with(common::kubectl_release("1.27"));
}

fn client_side_then_server_side_with(kubectl: PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path(), kubectl);
    let out = srv.apply(&manifest("agent:1", "app: agent, tier: node"), &[]);
    assert!(out.status.success());
    let ds = srv.ds();
    assert_eq!(
        managers(&ds),
        [("kubectl-client-side-apply".into(), "Update".into())]
    );
    let csa = &entry(&ds, "kubectl-client-side-apply")["fieldsV1"];
    assert!(
        csa["f:metadata"]["f:annotations"]["f:kubectl.kubernetes.io/last-applied-configuration"]
            .is_object(),
        "{csa}"
    );

    // Switching to server-side apply with a change: no conflict with the client-side manager,
    // whose fields move to kubectl's Apply entry.
    let out = srv.apply(
        &manifest("agent:2", "app: agent, tier: node"),
        &["--server-side"],
    );
    assert!(out.status.success());
    let ds = srv.ds();
    assert_eq!(image(&ds), "agent:2");
    let all = managers(&ds);
    assert!(all.contains(&("kubectl".into(), "Apply".into())), "{all:?}");
    assert!(
        !all.iter().any(|(m, _)| m == "kubectl-client-side-apply"),
        "migrated: {all:?}"
    );
    let last: Value = serde_json::from_str(
        ds["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        last["spec"]["template"]["spec"]["containers"][0]["image"], "agent:2",
        "the server keeps the annotation in step for a later client-side apply"
    );

    // What client-side apply set and the manifest drops is removed by the next apply.
    let out = srv.apply(&manifest("agent:2", "app: agent"), &["--server-side"]);
    assert!(out.status.success());
    assert_eq!(
        srv.ds()["metadata"]["labels"],
        serde_json::json!({"app": "agent"})
    );
    srv.stop();
}

#[test]
fn client_side_apply_upgrades_to_server_side_newest() {
    client_side_then_server_side_with(common::kubectl().to_path_buf());
}

#[test]
fn client_side_apply_upgrades_to_server_side_1_27() {
    client_side_then_server_side_with(common::kubectl_release("1.27"));
}

const PYTHON: &str = r#"
import json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
apps = client.AppsV1Api()
APPLY = "application/apply-patch+yaml"
ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "py"},
      "spec": {"selector": {"matchLabels": {"app": "py"}},
               "template": {"metadata": {"labels": {"app": "py"}},
                            "spec": {"containers": [{"name": "c", "image": "py:1"}]}}}}
made = apps.patch_namespaced_daemon_set("py", "default", ds, field_manager="py-one",
                                        _content_type=APPLY)
assert made.spec.template.spec.containers[0].image == "py:1"
assert [(m.manager, m.operation) for m in made.metadata.managed_fields] == [("py-one", "Apply")]

ds["spec"]["template"]["spec"]["containers"][0]["image"] = "py:2"
try:
    apps.patch_namespaced_daemon_set("py", "default", ds, field_manager="py-two",
                                     _content_type=APPLY)
    raise SystemExit("a conflicting apply was accepted")
except ApiException as e:
    assert e.status == 409, e.status
    status = json.loads(e.body)
    assert status["reason"] == "Conflict", status
    cause = status["details"]["causes"][0]
    assert cause["reason"] == "FieldManagerConflict", cause
    assert cause["message"] == 'conflict with "py-one"', cause
    assert cause["field"] == '.spec.template.spec.containers[name="c"].image', cause

forced = apps.patch_namespaced_daemon_set("py", "default", ds, field_manager="py-two",
                                          force=True, _content_type=APPLY)
assert forced.spec.template.spec.containers[0].image == "py:2"

try:
    apps.patch_namespaced_daemon_set("py", "default", ds, _content_type=APPLY)
    raise SystemExit("an apply without fieldManager was accepted")
except ApiException as e:
    assert e.status == 422, e.status
    assert "fieldManager: Required value" in json.loads(e.body)["message"], e.body

dry = apps.patch_namespaced_daemon_set("py", "default", {**ds, "metadata": {"name": "py", "labels": {"x": "y"}}},
                                       field_manager="py-two", dry_run="All", _content_type=APPLY)
assert dry.metadata.labels == {"x": "y"}, dry.metadata.labels
assert apps.read_namespaced_daemon_set("py", "default").metadata.labels is None

# An update by the client is recorded under its User-Agent's prefix.
apps.patch_namespaced_daemon_set("py", "default", {"metadata": {"labels": {"by": "py"}}})
entries = apps.read_namespaced_daemon_set("py", "default").metadata.managed_fields
updaters = [m.manager for m in entries if m.operation == "Update" and not m.subresource]
assert updaters == ["OpenAPI-Generator"], updaters

# managedFields reset by an update that sends [{}].
apps.patch_namespaced_daemon_set("py", "default", {"metadata": {"managedFields": [{}]}})
assert apps.read_namespaced_daemon_set("py", "default").metadata.managed_fields is None
print("ok")
"#;

#[test]
fn python_client_applies_with_conflicts_and_force() {
    let python = common::python_client();
    let dir = tempfile::tempdir().unwrap();
    let srv = Srv::start(dir.path(), common::kubectl().to_path_buf());
    let out = Command::new(python)
        .args(["-c", PYTHON])
        .arg(dir.path().join("admin.kubeconfig"))
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python client test failed");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    srv.stop();
}
