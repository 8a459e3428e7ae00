#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (as root) to a DaemonSet running on this machine:
# installs the dependencies, builds daemonset-agent, starts containerd (if none answers), a loopback
# OCI registry holding busybox-based images (this machine has no internet registry), the API server
# (embedded SQLite store) and an agent for this node, then applies the guide's two DaemonSets with
# kubectl and waits until they run. Everything it starts keeps running; `scripts/quickstart.sh stop`
# stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${DSA_QUICKSTART_DIR:-/var/lib/daemonset-agent-quickstart}
sock=${DSA_CONTAINERD_SOCKET:-/run/containerd/containerd.sock}
listen=127.0.0.1:6443
registry=127.0.0.1:5000

stop() {
  for p in agent server registry containerd; do
    [ -f "$root/$p.pid" ] && kill "$(cat "$root/$p.pid")" 2>/dev/null && echo "stopped $p"
    rm -f "$root/$p.pid"
  done
  echo "containers of the agent keep running until removed: ctr -n daemonset-agent tasks ls"
}
[ "${1:-}" = stop ] && { stop; exit 0; }
[ "$(id -u)" = 0 ] || { echo "run as root (containers need it)" >&2; exit 1; }

bash scripts/install-deps.sh
cargo build --release
bin=$PWD/target/release/daemonset-agent
mkdir -p "$root"

if ! ctr --address "$sock" version >/dev/null 2>&1; then
  echo "starting containerd on $sock"
  mkdir -p "$(dirname "$sock")"
  containerd --address "$sock" >"$root/containerd.log" 2>&1 &
  echo $! >"$root/containerd.pid"
  for _ in $(seq 100); do ctr --address "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
fi
bash tests/fixtures/registry.sh "$root/registry" "$registry" >/dev/null
[ -f "$root/registry/registry.pid" ] && cp "$root/registry/registry.pid" "$root/registry.pid"

if ! curl -fsS "http://$listen/readyz" >/dev/null 2>&1; then
  "$bin" server --data-dir "$root/server" --listen "$listen" >"$root/server.log" 2>&1 &
  echo $! >"$root/server.pid"
  for _ in $(seq 100); do curl -fsS "http://$listen/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
fi
export KUBECONFIG=$root/server/admin.kubeconfig
if [ ! -f "$root/agent.pid" ] || ! kill -0 "$(cat "$root/agent.pid")" 2>/dev/null; then
  "$bin" agent --kubeconfig "$KUBECONFIG" --containerd-socket "$sock" \
    --state-dir "$root/agent" --node-label node-role.kubernetes.io/worker=true >"$root/agent.log" 2>&1 &
  echo $! >"$root/agent.pid"
fi
kubectl apply -f examples/daemonsets.yaml
echo "waiting for the pods to run..."
for _ in $(seq 120); do
  [ "$(kubectl get pods --no-headers 2>/dev/null | grep -c Running)" -ge 2 ] && break
  sleep 0.5
done
kubectl get nodes --show-labels
kubectl get ds
kubectl get pods -o wide
ctr --address "$sock" -n daemonset-agent tasks ls
cat <<MSG

The server, the agent and the DaemonSets run. Try:
  export KUBECONFIG=$KUBECONFIG
  kubectl get ds; kubectl get pods -o wide
  kubectl label node $(hostname | tr A-Z a-z) node-role.kubernetes.io/worker-   # pods go away
Logs: $root/{server,agent}.log.  Stop: scripts/quickstart.sh stop
MSG
