"""The official Python client (`kubernetes`) against daemonset-agent's API server.

Run by tests/server_kubectl.rs (`python_client_lists_creates_watches`), which starts a server and
calls: target/venv/bin/python tests/python_client.py DATA_DIR/admin.kubeconfig
and by tests/node_api.rs (`kubectl_attach_sends_input_to_the_containers`), with a node running a
pod whose container `cat` has `stdin: true` and `term` `stdin` and `tty`:
target/venv/bin/python tests/python_client.py attach KUBECONFIG POD
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



def attach(kubeconfig, pod):
    """`stream(connect_get_namespaced_pod_attach, stdin=True)`: a line written to the stdin of
    the container `cat` comes back on its stdout; the terminal of the container `term` takes
    the size of a resize."""
    from kubernetes.stream import stream
    import time
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    def write_until_seen(resp, line, want):
        """Writes `line` again until `want` is in the output: the attach follows the output
        from when its session started, which the client is not told."""
        got = ""
        deadline = time.monotonic() + 30
        while want not in got:
            assert resp.is_open(), got
            assert time.monotonic() < deadline, got
            resp.write_stdin(line)
            got += resp.read_stdout(timeout=1)
        resp.close()

    resp = stream(v1.connect_get_namespaced_pod_attach, pod, "default", container="cat",
                  stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    write_until_seen(resp, "from python\n", "from python\n")
    print("python attach: cat ok", flush=True)

    # `term` (stdin and tty): a resize (channel 4) sizes its terminal
    resp = stream(v1.connect_get_namespaced_pod_attach, pod, "default", container="term",
                  stdin=True, stdout=True, stderr=False, tty=True, _preload_content=False)
    resp.write_channel(4, '{"Width": 111, "Height": 33}')
    write_until_seen(resp, "stty size\n", "33 111")
    print("python attach: ok")


if __name__ == "__main__":
    if sys.argv[1] == "attach":
        attach(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1])
