#!/usr/bin/env python3
"""Writes the checked-in seed corpora, fuzz/corpus/TARGET/NAME, from the repository's own
examples (examples/*.yaml, packaging/agent.toml) and the fixtures of its tests (the strings below
say which test they come from). Run it again when those change: `python3 fuzz/seeds.py`.
Needs PyYAML (examples become JSON seeds too). The fuzzer's own findings never land here:
scripts/fuzz.sh grows its corpus under fuzz/work/."""
import base64
import glob
import json
import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def js(v):
    return json.dumps(v, separators=(",", ":"))


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


# --- manifests: examples, the fixtures of tests/server_kubectl.rs and core::validation ---------
EXAMPLES = {os.path.basename(p): read(os.path.relpath(p, ROOT)) for p in sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml")))}
DOCS = [d for text in EXAMPLES.values() for d in yaml.safe_load_all(text) if d]

# tests/server_kubectl.rs NODE
NODE = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "worker-1", "labels": {"kubernetes.io/hostname": "worker-1", "kubernetes.io/os": "linux",
                                                "node-role.kubernetes.io/worker": "true"}},
    "spec": {"taints": [{"key": "dedicated", "value": "edge", "effect": "NoSchedule"},
                        {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]},
    "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                               "lastHeartbeatTime": "2026-11-24T00:00:00Z", "lastTransitionTime": "2026-11-24T00:00:00Z"}],
               "nodeInfo": {"kubeletVersion": "daemonset-agent-0.1.0", "machineID": "", "systemUUID": "", "bootID": "",
                            "kernelVersion": "6.1", "osImage": "Debian", "containerRuntimeVersion": "containerd://1.6.20",
                            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}},
}
# tests/server_kubectl.rs: a privileged pod, a pod bound to a node with probes and volumes
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "labels": {"app": "x"}},
       "spec": {"nodeName": "worker-1", "hostNetwork": True,
                "containers": [{"name": "c", "image": "127.0.0.1:5000/busybox:v1", "command": ["sh", "-c", "sleep 1000"],
                                "securityContext": {"privileged": True},
                                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                "resources": {"limits": {"cpu": "100m", "memory": "200Mi"}, "requests": {"cpu": "0.05"}},
                                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                                "readinessProbe": {"exec": {"command": ["true"]}},
                                "startupProbe": {"tcpSocket": {"port": "http"}, "failureThreshold": 3},
                                "volumeMounts": [{"name": "h", "mountPath": "/host", "readOnly": True}],
                                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
                "volumes": [{"name": "e", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/"}}],
                "tolerations": [{"operator": "Exists"}]}}
# core::validation tests: the kube-proxy DaemonSet with an update strategy, selectors and tolerations
DS_FULL = {"apiVersion": "apps/v1", "kind": "DaemonSet",
           "metadata": {"name": "agent", "namespace": "default", "labels": {"app": "a"},
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
           "spec": {"selector": {"matchLabels": {"app": "a"},
                                 "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 0}},
                    "minReadySeconds": 5, "revisionHistoryLimit": 3,
                    "template": {"metadata": {"labels": {"app": "a", "tier": "web"}}, "spec": POD["spec"] | {
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "node-role.kubernetes.io/worker", "operator": "Exists"}],
                             "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["worker-1"]}]},
                            {"matchExpressions": [{"key": "size", "operator": "Gt", "values": ["3"]}]}]}}},
                        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"},
                                        {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]}}}}

for name, text in EXAMPLES.items():
    write("manifests", name, text)
for i, d in enumerate(DOCS):
    write("manifests", f"example-{i}.json", js(d))
    write("manifests", f"example-{i}.yaml", yaml.safe_dump(d, sort_keys=False))
write("manifests", "node.json", js(NODE))
write("manifests", "pod.json", js(POD))
write("manifests", "daemonset-full.json", js(DS_FULL))
write("manifests", "daemonset-full.yaml", yaml.safe_dump(DS_FULL, sort_keys=False))
# tests/server_kubectl.rs: malformed YAML, a Namespace; YAML anchors and flow style
write("manifests", "malformed.yaml", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: [name: x\n")
write("manifests", "anchors.yaml", "x: &a {name: c, image: i}\nspec:\n  template:\n    spec:\n      containers: [*a, *a]\n")

# --- patch: document and patch as two JSON values (core::patch tests, kubectl's apply) ----------
DS = DOCS[0]
PATCHES = {
    "kubectl-apply-smp": ({**DS}, {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                                   "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "c"}],
                                                                  "containers": [{"image": "i2", "name": "c"}]}}}}),
    "smp-delete-element": ({"kind": "Pod", "spec": {"containers": [{"name": "a"}, {"name": "b"}]}},
                           {"spec": {"containers": [{"$patch": "delete", "name": "a"}]}}),
    "smp-replace-list": ({"kind": "Pod", "spec": {"containers": [{"name": "a"}, {"name": "b"}]}},
                         {"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "i"}]}}),
    "smp-replace-map": ({"kind": "DaemonSet", "spec": {"template": {"spec": {"nodeSelector": {"a": "1", "b": "2"}}}}},
                        {"spec": {"template": {"spec": {"nodeSelector": {"$patch": "replace", "c": "3"}}}}}),
    "smp-set-order": ({"kind": "Pod", "spec": {"containers": [{"name": "a"}, {"name": "s"}, {"name": "b"}]}},
                      {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}],
                                "containers": [{"name": "c"}]}}),
    "smp-primitive-list": ({"kind": "Pod", "metadata": {"finalizers": ["a", "b", "c"]}},
                           {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "$setElementOrder/finalizers": ["c", "a"]}}),
    "smp-retain-keys": ({"kind": "DaemonSet", "spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}}},
                        {"spec": {"updateStrategy": {"$retainKeys": ["type"], "type": "OnDelete"}}}),
    "smp-node": ({**NODE}, {"metadata": {"labels": {"a": None, "b": "2"}}, "spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]},
                            "status": {"conditions": [{"type": "Ready", "status": "False"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}),
    "smp-pod-status": ({**POD}, {"status": {"phase": "Running", "podIP": "10.0.0.5",
                                            "containerStatuses": [{"name": "c", "ready": True, "restartCount": 1, "image": "i", "imageID": ""}],
                                            "conditions": [{"type": "Ready", "status": "True"}]}}),
    "smp-other": ({"kind": "Lease", "a": 1, "b": {"c": 2}}, {"a": {"x": 1}, "z": None, "b": {"c": None}}),
    "json-patch": ({"a": {"b": 1}, "l": [1, 2]}, [{"op": "add", "path": "/l/-", "value": 3}, {"op": "move", "from": "/a/b", "path": "/m"},
                                                  {"op": "copy", "from": "/l", "path": "/c"}, {"op": "test", "path": "/m", "value": 1},
                                                  {"op": "replace", "path": "/l/0", "value": 9}, {"op": "remove", "path": "/a"}]),
    "json-patch-rv": ({**DS}, [{"op": "replace", "path": "/metadata/resourceVersion", "value": "5"}]),
    "merge-patch": ({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [3], "n": {"m": None}}),
}
for name, (doc, p) in PATCHES.items():
    write("patch", name, js(doc) + "\n" + js(p))

# --- quantity: the quantities of core::quantity's tests -----------------------------------------
for i, q in enumerate(["100m", "0.5", "1", "200Mi", "1.5Gi", "10Mi", "1e3", "1E-3", "-1k", "+12.345e-2",
                       "0.0001", "9223372036854775807", "8Ei", "1n", "1u", ".5", "5.", "123456789012345678901234567890m"]):
    write("quantity", f"q{i}", q)

# --- selectors: LABEL \n FIELD \n LabelSelector labels ------------------------------------------
SELECTORS = [
    ("app=x,tier!=db", "metadata.name=ds1", {"matchLabels": {"app": "x"}}, {"app": "x", "tier": "web"}),
    ("env in (prod, staging),!canary", "spec.nodeName!=worker-2,metadata.namespace==default",
     {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}, {"env": "prod"}),
    ("a notin (in),b,c==d", r"metadata.name=a\,b\=c\\", {"matchExpressions": [{"key": "b", "operator": "Exists"},
                                                                               {"key": "c", "operator": "DoesNotExist"}]}, {"b": ""}),
    ("example.com/key=v_1.2-3", "status.phase=Running", {"matchLabels": {"example.com/key": "v_1.2-3"}}, {}),
    ("a>1", "x", {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, {"a": "2"}),
]
for i, (label, field, ls, labels) in enumerate(SELECTORS):
    write("selectors", f"s{i}", f"{label}\n{field}\n{js(ls)}\n{js(labels)}")

# --- eligibility: a Node and a DaemonSet ----------------------------------------------------------
NODES = [
    NODE,
    {"metadata": {"name": "bare"}},
    {"metadata": {"name": "cordoned", "labels": {"size": "5"}}, "spec": {"unschedulable": True, "taints": [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}, {"key": "k", "value": "v", "effect": "NoExecute"}]}},
]
for i, node in enumerate(NODES):
    for j, ds in enumerate(DOCS + [DS_FULL]):
        write("eligibility", f"n{i}-ds{j}", js(node) + "\n" + js(ds))

# --- reference: images of the examples and the tests of core::reference ---------------------------
IMAGES = sorted({c["image"] for d in DOCS + [DS_FULL] for c in d["spec"]["template"]["spec"]["containers"]}) + [
    "busybox", "library/busybox:1.36", "docker.io/library/busybox:latest", "index.docker.io/x/y",
    "localhost:5000/a/b_c__d-e.f:tag", "[::1]:5000/img@sha256:" + "a" * 64, "ghcr.io/o/r:v1@sha256:" + "0" * 64,
    "UPPER/case", "a//b", "host:port/x", "x:" + "t" * 129,
]
for i, image in enumerate(IMAGES):
    write("reference", f"r{i}", image)

# --- server: requests as kubectl and the agent send them (tests/server_kubectl.rs) ----------------
DSP = "/apis/apps/v1/namespaces/default/daemonsets"
NAME = DS["metadata"]["name"]


def req(method, path, body=None, ctype="application/json", headers=()):
    head = [f"{method} {path}"] + ([f"Content-Type: {ctype}"] if body is not None else []) + list(headers)
    return "\n".join(head) + "\n\n" + (body if body is not None else "")


def session(*reqs):
    return "\n%%%%\n".join(reqs)


def field(tag, data):
    return bytes([(tag << 3) | 2, len(data)]) + data


# server::protobuf's test: runtime.Unknown{typeMeta: v1/Namespace, raw: Namespace{metadata: name, labels}}
PROTOBUF_NAMESPACE = (b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"Namespace"))
                      + field(2, field(1, field(1, b"team-a") + field(11, field(1, b"team") + field(2, b"a"))))
                      + field(4, b"application/vnd.kubernetes.protobuf")).decode("latin-1")
TABLE = "Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
SERVER = {
    "discovery": session(req("GET", "/version"), req("GET", "/api"), req("GET", "/apis"), req("GET", "/apis/apps/v1"),
                         req("GET", "/api/v1"), req("GET", "/openapi/v3"), req("GET", "/openapi/v3/apis/apps/v1"), req("GET", "/healthz")),
    "apply-create": session(req("GET", f"{DSP}/{NAME}"),
                            req("POST", f"{DSP}?fieldManager=kubectl-client-side-apply&fieldValidation=Strict", js(DS)),
                            req("GET", DSP, headers=[TABLE])),
    "apply-patch": session(req("POST", f"{DSP}?fieldValidation=Warn", js(DS)),
                           req("PATCH", f"{DSP}/{NAME}?fieldManager=kubectl-client-side-apply&fieldValidation=Ignore",
                               js(PATCHES["kubectl-apply-smp"][1]), "application/strategic-merge-patch+json"),
                           req("PATCH", f"{DSP}/{NAME}", js([{"op": "replace", "path": "/spec/revisionHistoryLimit", "value": 2}]),
                               "application/json-patch+json"),
                           req("PATCH", f"{DSP}/{NAME}/status", js({"status": {"numberReady": 1}}), "application/merge-patch+json"),
                           req("DELETE", f"{DSP}/{NAME}", js({"preconditions": {"resourceVersion": "5"}}))),
    "yaml-create": req("POST", f"{DSP}?dryRun=All", yaml.safe_dump(DS_FULL), "application/yaml"),
    "node-and-pods": session(req("POST", "/api/v1/nodes", js(NODE)),
                             req("PUT", "/api/v1/nodes/worker-1/status", js(NODE)),
                             req("POST", "/api/v1/namespaces/default/pods", js(POD)),
                             req("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-1&labelSelector=app%20in%20(x)"),
                             req("DELETE", "/api/v1/namespaces/default/pods?labelSelector=app%3Dx")),
    "watch": session(req("POST", f"{DSP}", js(DS)),
                     req("GET", "/apis/apps/v1/daemonsets?watch=1&timeoutSeconds=5&allowWatchBookmarks=true&resourceVersion=0"),
                     req("GET", f"{DSP}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
                         headers=[TABLE]),
                     req("GET", "/api/v1/nodes?watch=1&resourceVersion=99999")),
    # server::watch tests: a timeoutSeconds beyond the clock, selectors that fail to parse
    "watch-limits": session(req("GET", "/api/v1/nodes?watch=1&timeoutSeconds=18446744073709551615"),
                            req("GET", "/api/v1/pods?watch=1&timeoutSeconds=9999999999999999&allowWatchBookmarks=1"),
                            req("GET", "/api/v1/pods?labelSelector=a%20in%20(&fieldSelector=a%3D%3D%3Db")),
    # kubectl create namespace: the one protobuf body (server::protobuf's tests)
    "namespace-protobuf": req("POST", "/api/v1/namespaces", PROTOBUF_NAMESPACE, "application/vnd.kubernetes.protobuf"),
    "lease": session(req("POST", "/api/v1/namespaces", js({"metadata": {"name": "kube-node-lease"}})),
                     req("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                         js({"metadata": {"name": "worker-1"}, "spec": {"holderIdentity": "worker-1", "leaseDurationSeconds": 40}})),
                     req("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/worker-1",
                         js({"metadata": {"name": "worker-1", "resourceVersion": "3"},
                             "spec": {"holderIdentity": "worker-1", "renewTime": "2026-11-24T00:00:00.000000Z"}}))),
}
for name, text in SERVER.items():
    write("server", name, text)

# --- agent_config: packaging/agent.toml and the keys of agent::config's tests --------------------
write("agent_config", "packaging-agent.toml", read("packaging/agent.toml"))
write("agent_config", "full.toml", """node-name = "worker-1"
node-taints = ["dedicated=edge:NoSchedule", "k:NoExecute"]
kubeconfig = "/etc/daemonset-agent/kubeconfig"
containerd-socket = "/run/containerd/containerd.sock"
containerd-namespace = "daemonset-agent"
state-dir = "/var/lib/daemonset-agent"
resync-seconds = 30
container-logs-to-journald = false
journald-socket = "/run/systemd/journal/socket"
container-log-max-size = "10Mi"
container-log-max-files = 5
log-driver-binary = "/usr/bin/daemonset-agent"

[node-labels]
"node-role.kubernetes.io/worker" = "true"
zone = "a"
""")

# --- kubeconfig: the server's admin kubeconfig (server::kubeconfig_yaml) and a TLS one -----------
ADMIN = """apiVersion: v1
kind: Config
clusters:
- name: daemonset-agent
  cluster:
    server: http://127.0.0.1:6443
contexts:
- name: daemonset-agent
  context:
    cluster: daemonset-agent
    user: daemonset-agent
    namespace: default
current-context: daemonset-agent
users:
- name: daemonset-agent
  user: {}
preferences: {}
"""
write("kubeconfig", "admin.kubeconfig", ADMIN)
# A throwaway self-signed CA (openssl req -x509 -newkey ec, P-256) and its key, made for these seeds
# only: the client certificate and key of the seed are the same pair.
CA = """-----BEGIN CERTIFICATE-----
MIIBkTCCATegAwIBAgIUNWliaxGvJtA9eWfRcGFZb/nExDcwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSZGFlbW9uc2V0LWFnZW50LWNhMCAXDTI2MTEyNjA0MTYxOFoY
DzIxMjYxMTAyMDQxNjE4WjAdMRswGQYDVQQDDBJkYWVtb25zZXQtYWdlbnQtY2Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATLhStn63Zy83QkF9Ul1znXqOMvxH5x
mIz74sYCc8uFpB0J7xXau2dK0jvLKt2zv4p20Wnb3Ml/dJPWMkv/P9Cko1MwUTAd
BgNVHQ4EFgQULr9Xes7hKPTFBLapoekfhkG+76AwHwYDVR0jBBgwFoAULr9Xes7h
KPTFBLapoekfhkG+76AwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF
AiAG1JF4cRafAz35GPG2k4JVtV15Yff4IZSO6F7DGO2jkQIhANjcmZ5V9GfjlzEh
ASX9JALiBoWcPUpz5yljxY4ZRx85
-----END CERTIFICATE-----
"""
KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgWE15pQ6uvzBpELq2
p9OYQfz6kHittCPWRf7Y9OlEoPWhRANCAATLhStn63Zy83QkF9Ul1znXqOMvxH5x
mIz74sYCc8uFpB0J7xXau2dK0jvLKt2zv4p20Wnb3Ml/dJPWMkv/P9Ck
-----END PRIVATE KEY-----
"""
b64 = base64.b64encode(CA.encode()).decode()
key64 = base64.b64encode(KEY.encode()).decode()
write("kubeconfig", "tls.kubeconfig", ADMIN.replace("http://127.0.0.1:6443", "https://[::1]:6443")
      .replace("    server:", f"    certificate-authority-data: {b64}\n    tls-server-name: node\n    server:")
      .replace("  user: {}", f"  user:\n    token: abc.def\n    client-certificate-data: {b64}\n    client-key-data: {key64}"))
write("kubeconfig", "two-docs.kubeconfig", ADMIN + "---\n" + ADMIN.replace("daemonset-agent", "other"))

# --- join_token: join tokens as `token create` prints them, and the near misses of
# core::credential's tests (the agent's --token, DSA_TOKEN and agent.toml's `token`) -------------
HASH = "3f" * 32
JOIN_TOKENS = {
    "join": f"sha256:{HASH}::abcdef.0123456789abcdef",
    "join-newline": f"  sha256:{HASH}::abcdef.0123456789abcdef\n",
    "bearer": "abcdef.0123456789abcdef",
    "ca-hash": f"sha256:{HASH}",
    "upper-hash": f"sha256:{HASH.upper()}::abcdef.0123456789abcdef",
    "short-secret": f"sha256:{HASH}::abcdef.0123456789abcde",
    "upper-token": f"sha256:{HASH}::ABCDEF.0123456789abcdef",
    "no-prefix": f"{HASH}::abcdef.0123456789abcdef",
    "odd-hash": f"sha256:{HASH[:-1]}::abcdef.0123456789abcdef",
    "three-parts": f"sha256:{HASH}::abcdef.0123456789abcdef::x",
    "k3s-form": f"K10{HASH}::server:0123456789abcdef",
}
for name, token in JOIN_TOKENS.items():
    write("join_token", name, token)

if __name__ == "__main__":
    total = sum(len(files) for _, _, files in os.walk(CORPUS))
    print(f"wrote {total} seeds under {os.path.relpath(CORPUS, ROOT)}")
