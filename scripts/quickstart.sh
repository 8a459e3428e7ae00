#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (as root) to a DaemonSet running on this machine.
# Must already be there: Rust (rustup) and kubectl 1.27+ (it checks first and says where they come
# from). It installs the Debian packages it needs (scripts/install-deps.sh --run), builds
# daemonset-agent (release), starts containerd (unless one answers on the socket), a loopback OCI
# registry holding busybox-based images (this machine has no internet registry), the API server
# (embedded SQLite store) and an agent for this node, then applies the guide's two DaemonSets with
# kubectl and waits until their pods run. When they do not within 2 minutes it says so and exits
# non-zero. Everything it starts keeps running; `scripts/quickstart.sh stop` stops it again.
#
# It reuses only what it started itself: a pid file in its directory whose process is alive and
# names that directory on its command line. When 127.0.0.1:6443 (API) or 127.0.0.1:5000 (registry)
# is taken by anything else, it picks free ports and says which.
#
# Environment: DSA_QUICKSTART_DIR (default /var/lib/daemonset-agent-quickstart),
# DSA_CONTAINERD_SOCKET (default /run/containerd/containerd.sock), DSA_QUICKSTART_LISTEN (default
# 127.0.0.1:6443), DSA_QUICKSTART_REGISTRY (default 127.0.0.1:5000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
root=${DSA_QUICKSTART_DIR:-/var/lib/daemonset-agent-quickstart}
sock=${DSA_CONTAINERD_SOCKET:-/run/containerd/containerd.sock}
t0=$SECONDS
say() { echo "[quickstart $((SECONDS - t0)) s] $*" >&2; }

# The pid in $root/NAME.pid if that process is alive and is ours: its command line runs PROGRAM
# and names $root (every process started here has its files there). Pids get reused; names do not.
ours() {
  local name=$1 program=$2 pid cmd
  pid=$(cat "$root/$name.pid" 2>/dev/null) || return 1
  cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
  case "$cmd" in "$program "*"$root/"*) echo "$pid" ;; *) return 1 ;; esac
}

# Stops our process NAME (SIGTERM, then waits up to 10 s).
stop_one() {
  local name=$1 program=$2 pid
  if pid=$(ours "$name" "$program"); then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$root/$name.pid"
}

stop() {
  stop_one agent "$root/bin/daemonset-agent"
  stop_one server "$root/bin/daemonset-agent"
  stop_one registry docker-registry
  stop_one containerd containerd
  echo "containers of the agent keep running until their DaemonSets are deleted (ctr -n daemonset-agent tasks ls)"
}
[ "${1:-}" = stop ] && { stop; exit 0; }
[ $# = 0 ] || { echo "usage: $0 [stop]" >&2; exit 64; }
[ "$(id -u)" = 0 ] || { echo "run as root (containers need it)" >&2; exit 1; }

# Waits up to SECS for CMD to succeed, saying what it waits for and, when done, how long it took.
wait_until() {
  local secs=$1 what=$2 start=$SECONDS
  shift 2
  say "waiting for $what (up to $secs s)"
  until "$@" >/dev/null 2>&1; do
    [ $((SECONDS - start)) -lt "$secs" ] || { say "$what: not there after $secs s"; return 1; }
    sleep 0.2
  done
  say "$what: after $((SECONDS - start)) s"
}

# Whether something listens on ADDR's port (SO_REUSEADDR: closed connections in TIME_WAIT do not count).
port_taken() {
  ! python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "${1##*:}" 2>/dev/null
}

# ADDR, or a free port on loopback when something else holds ADDR's port (saying so).
free_or_other() {
  local addr=$1 what=$2 other
  if port_taken "$addr"; then
    other=127.0.0.1:$(free_port)
    say "$addr is taken by something that is not this quickstart's $what: using $other instead"
    echo "$other"
  else
    echo "$addr"
  fi
}

# ---- prerequisites, Debian packages, the build -------------------------------------------------
bash scripts/install-deps.sh --run
say "building daemonset-agent (release, optimised: about 7 minutes on 2 cores the first time)"
cargo build --release --bin daemonset-agent
mkdir -p "$root/bin"
# our own copy: a later build does not change what runs, and `ours` recognises it by its path
built=${CARGO_TARGET_DIR:-target}/release/daemonset-agent
cmp -s "$built" "$root/bin/daemonset-agent" || install -m 755 "$built" "$root/bin/daemonset-agent.new"
[ ! -e "$root/bin/daemonset-agent.new" ] || mv "$root/bin/daemonset-agent.new" "$root/bin/daemonset-agent"
bin=$root/bin/daemonset-agent

# ---- containerd ---------------------------------------------------------------------------------
if ctr --address "$sock" version >/dev/null 2>&1; then
  say "using the containerd that answers on $sock"
else
  say "starting containerd on $sock (its root and state in $root/containerd)"
  mkdir -p "$(dirname "$sock")" "$root/containerd"
  containerd --address "$sock" --root "$root/containerd/root" --state "$root/containerd/state" \
    >"$root/containerd.log" 2>&1 &
  echo $! >"$root/containerd.pid"
  wait_until 30 "containerd" ctr --address "$sock" version || { tail -n 20 "$root/containerd.log" >&2; exit 1; }
fi

# ---- the registry and its images ----------------------------------------------------------------
if pid=$(ours registry docker-registry); then
  registry=$(sed -n 's/^ *addr: *//p' "$root/registry/config.yml")
  say "reusing this quickstart's registry on $registry (pid $pid)"
else
  registry=$(free_or_other "${DSA_QUICKSTART_REGISTRY:-127.0.0.1:5000}" registry)
fi
say "loopback registry on $registry: building the busybox images and pushing them"
bash tests/fixtures/registry.sh "$root/registry" "$registry" >/dev/null
cp "$root/registry/registry.pid" "$root/registry.pid"
ours registry docker-registry >/dev/null || { say "the registry on $registry is not this quickstart's"; exit 1; }

# ---- the API server -----------------------------------------------------------------------------
if pid=$(ours server "$bin"); then
  listen=$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n '/^--listen$/{n;p}')
  say "reusing this quickstart's server on $listen (pid $pid)"
else
  listen=$(free_or_other "${DSA_QUICKSTART_LISTEN:-127.0.0.1:6443}" "API server")
  say "starting the API server on $listen (store in $root/server)"
  "$bin" server --data-dir "$root/server" --listen "$listen" >"$root/server.log" 2>&1 &
  echo $! >"$root/server.pid"
  # HTTPS only; /readyz needs no credential (the CA is checked once admin.kubeconfig is written)
  wait_until 30 "the API server" curl -fsS --cacert "$root/server/tls/ca.crt" "https://$listen/readyz" || { tail -n 20 "$root/server.log" >&2; exit 1; }
fi
export KUBECONFIG=$root/server/admin.kubeconfig
kubectl=$(bash scripts/find-kubectl.sh)

# ---- the pod network ----------------------------------------------------------------------------
# pods without hostNetwork get an address from CNI: the packages' default network unless the
# machine has a CNI configuration already
if ! ls /etc/cni/net.d/*.conflist /etc/cni/net.d/*.conf /etc/cni/net.d/*.json >/dev/null 2>&1; then
  say "writing the default pod network /etc/cni/net.d/10-daemonset-agent.conflist (bridge dsa0, 10.85.0.0/24)"
  install -D -m 644 packaging/cni/10-daemonset-agent.conflist /etc/cni/net.d/10-daemonset-agent.conflist
fi

# ---- the agent ----------------------------------------------------------------------------------
if pid=$(ours agent "$bin"); then
  say "reusing this quickstart's agent (pid $pid)"
else
  say "starting the agent (state in $root/agent)"
  "$bin" agent --kubeconfig "$KUBECONFIG" --containerd-socket "$sock" \
    --state-dir "$root/agent" --node-label node-role.kubernetes.io/worker=true >"$root/agent.log" 2>&1 &
  echo $! >"$root/agent.pid"
fi

# ---- the DaemonSets -----------------------------------------------------------------------------
sed "s|127.0.0.1:5000/|$registry/|" examples/daemonsets.yaml | "$kubectl" apply -f -
want=2 # node-monitor and kube-proxy both select this node
running() { "$kubectl" get pods --no-headers 2>/dev/null | grep -c ' Running ' || true; }
say "waiting for the $want pods to run (up to 120 s)"
start=$SECONDS last="" next=0
until [ "$(running)" -ge "$want" ]; do
  now="$(running)/$want pods running"
  # progress: on every change, and every 10 s
  if [ "$now" != "$last" ] || [ $((SECONDS - start)) -ge "$next" ]; then
    say "$now"
    last=$now next=$((SECONDS - start + 10))
  fi
  if [ $((SECONDS - start)) -ge 120 ] || ! ours agent "$bin" >/dev/null; then
    ours agent "$bin" >/dev/null || say "the agent exited"
    "$kubectl" get pods -o wide >&2 || true
    echo "--- last lines of $root/agent.log ---" >&2
    tail -n 20 "$root/agent.log" >&2
    cat >&2 <<MSG

The DaemonSets' pods did NOT all run ($(running)/$want after $((SECONDS - start)) s). What runs stays
running: look at $root/{server,agent}.log, or stop it with scripts/quickstart.sh stop.
MSG
    exit 1
  fi
  sleep 0.5
done
say "$want/$want pods running after $((SECONDS - start)) s"
"$kubectl" get nodes --show-labels
"$kubectl" get ds
"$kubectl" get pods -o wide
ctr --address "$sock" -n daemonset-agent tasks ls
cat <<MSG

The server, the agent and the DaemonSets run (in $((SECONDS - t0)) s). Try:
  export KUBECONFIG=$KUBECONFIG
  kubectl get ds; kubectl get pods -o wide
  kubectl label node $(hostname | tr A-Z a-z) node-role.kubernetes.io/worker-   # pods go away
API server $listen, registry $registry, containerd $sock.
Logs: $root/{server,agent}.log.  Stop: scripts/quickstart.sh stop
MSG
