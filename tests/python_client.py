"""The official Python client (`kubernetes`) against daemonset-agent's API server.

Run by tests/server_kubectl.rs (`python_client_lists_creates_watches`), which starts a server and
calls: target/venv/bin/python tests/python_client.py DATA_DIR/admin.kubeconfig
(scripts/install-deps.sh makes that virtual environment with Debian's python3-venv.)
"""
import sys

import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: py-monitor
  labels: {app: py}
spec:
  selector:
    matchLabels: {app: py}
  template:
    metadata:
      labels: {app: py}
    spec:
      containers:
      - name: agent
        image: monitoring-agent:latest
        resources:
          limits: {memory: 200Mi, cpu: 100m}
"""


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    apps = client.AppsV1Api()

    listed = apps.list_namespaced_daemon_set("default")
    assert listed.items == [], listed.items
    start_rv = listed.metadata.resource_version
    assert start_rv, "list has no resourceVersion"

    created = apps.create_namespaced_daemon_set("default", yaml.safe_load(DS))
    assert created.metadata.generation == 1
    assert created.spec.update_strategy.type == "RollingUpdate"

    # Watch from the list's resourceVersion: the creation arrives as ADDED.
    seen = []
    w = watch.Watch()
    for ev in w.stream(apps.list_namespaced_daemon_set, "default",
                       resource_version=start_rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "py-monitor":
            w.stop()
    assert ("ADDED", "py-monitor") in seen, seen

    patched = apps.patch_namespaced_daemon_set(
        "py-monitor", "default",
        {"spec": {"template": {"spec": {"containers": [
            {"name": "agent", "image": "monitoring-agent:v2"}]}}}})
    container = patched.spec.template.spec.containers[0]
    assert container.image == "monitoring-agent:v2", container.image
    assert patched.metadata.generation == 2

    status = apps.read_namespaced_daemon_set_status("py-monitor", "default")
    assert status.status is not None

    everywhere = apps.list_daemon_set_for_all_namespaces(label_selector="app=py")
    assert [d.metadata.name for d in everywhere.items] == ["py-monitor"]

    apps.delete_namespaced_daemon_set("py-monitor", "default")
    try:
        apps.read_namespaced_daemon_set("py-monitor", "default")
        raise AssertionError("deleted daemonset is still there")
    except ApiException as e:
        assert e.status == 404, e.status

    nodes = client.CoreV1Api().list_node()
    assert nodes.items == []
    print("python client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
