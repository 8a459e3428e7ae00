#!/usr/bin/env bash
# Peer side of the benchmark harness (issue 3): how fast do the tools a user would pick instead of
# the agent get a busybox container running on this node, with the image already present?
#
#   ctr_run           `ctr run -d` against a private containerd: invoke -> returns (task RUNNING)
#   docker_run        `docker run -d`: invoke -> returns (container started)
#   docker_run_event  `docker run -d`: invoke -> dockerd's container "start" event
#   swarm_global      `docker service create --mode global --detach`: invoke -> dockerd's "start"
#                     event of the service's container (one-node swarm)
#
# usage: bench/peers.sh [--samples N] [--json OUT.json]      (default N=50; --samples 3 = smoke)
#
# Samples are interleaved (one of each metric per round) so load from other work on the machine
# hits every metric alike; each metric gets one discarded warm-up first. Containers accumulate
# within the run (round i runs with i-1 earlier containers of each kind still up), like N
# DaemonSets on one node. Everything listens on loopback only; the script installs the Debian
# packages it needs when they are missing, and removes all it started on exit, even on failure.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
export LC_ALL=C

samples=50
json_out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --samples) samples=${2:?--samples needs a number}; shift 2 ;;
    --json) json_out=${2:?--json needs a file name}; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "peers.sh: unknown argument $1 (usage: peers.sh [--samples N] [--json OUT.json])" >&2; exit 2 ;;
  esac
done
if ! [[ $samples =~ ^[0-9]+$ ]] || (( samples < 1 || samples > 500 )); then
  echo "peers.sh: --samples must be an integer in 1..500, got $samples" >&2
  exit 2
fi
if [[ -n $json_out ]]; then
  json_out=$(realpath -m -- "$json_out")
fi
[[ $(id -u) == 0 ]] || { echo "peers.sh: must run as root (containerd, dockerd)" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
registry_fixture="$repo/tests/fixtures/registry.sh"
[[ -f $registry_fixture ]] || { echo "peers.sh: missing $registry_fixture" >&2; exit 1; }

log() { printf '[peers %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# ---------------------------------------------------------------- packages (only when missing)
policy_rc_created=""
install_missing() {
  local -a missing=()
  have() { command -v "$1" >/dev/null 2>&1; }
  have containerd && have ctr || missing+=(containerd)
  have runc || missing+=(runc)
  have dockerd && [[ -x /usr/bin/docker ]] || missing+=(docker.io)
  have docker-registry || missing+=(docker-registry)
  have skopeo || missing+=(skopeo)
  have curl || missing+=(curl)
  have python3 || missing+=(python3)
  have ss || missing+=(iproute2)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
    || missing+=(busybox-static)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]}"
  # Packages must not start their own daemons (docker.io ships an init script): deny service
  # starts for the duration of the install unless a policy already exists.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_rc_created=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 600 apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    timeout 300 apt-get update >&2
    timeout 600 apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
  if [[ -n $policy_rc_created ]]; then rm -f /usr/sbin/policy-rc.d; policy_rc_created=""; fi
}

# ---------------------------------------------------------------- cleanup (trap)
D=""
docker_bin=/usr/bin/docker
ev_pid=""
run_docker_existed=""
key_json_existed=""
gwbridge_existed=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [[ -n $policy_rc_created ]] && rm -f /usr/sbin/policy-rc.d
  [[ -z $D || ! -d $D ]] && exit "$rc"
  log "cleaning up $D"
  [[ -n $ev_pid ]] && kill "$ev_pid" 2>/dev/null
  if [[ -S $D/docker.sock ]]; then
    local dk=(timeout 20 "$docker_bin" -H "unix://$D/docker.sock")
    local -a ids
    mapfile -t ids < <("${dk[@]}" service ls -q 2>/dev/null)
    [[ ${#ids[@]} -gt 0 ]] && "${dk[@]}" service rm "${ids[@]}" >/dev/null 2>&1
    mapfile -t ids < <("${dk[@]}" ps -aq 2>/dev/null)
    [[ ${#ids[@]} -gt 0 ]] && "${dk[@]}" rm -f "${ids[@]}" >/dev/null 2>&1
    "${dk[@]}" swarm leave --force >/dev/null 2>&1
    "${dk[@]}" network rm docker_gwbridge >/dev/null 2>&1
  fi
  stop_pidfile "$D/docker.pid" dockerd 20
  if [[ -z $gwbridge_existed ]] && ip link show docker_gwbridge >/dev/null 2>&1; then
    ip link del docker_gwbridge
  fi
  if [[ -S $D/containerd.sock ]]; then
    local c=(timeout 20 ctr --address "$D/containerd.sock")
    local ns t
    for ns in $("${c[@]}" namespaces ls -q 2>/dev/null); do
      for t in $("${c[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
        "${c[@]}" -n "$ns" tasks rm -f "$t" >/dev/null 2>&1
      done
    done
  fi
  stop_pidfile "$D/containerd.pid" containerd 20
  stop_pidfile "$D/reg/registry.pid" docker-registry 10
  reap_private_containerd "$D"
  rm -rf "$D"
  if [[ -z $run_docker_existed ]]; then
    rmdir /run/docker/plugins /run/docker 2>/dev/null
  fi
  if [[ -z $key_json_existed ]]; then rm -f /etc/docker/key.json; fi
  exit "$rc"
}
stop_pidfile() { # PIDFILE NAME SECONDS: TERM the recorded pid, KILL it after SECONDS
  local f=$1 name=$2 secs=$3 pid i
  [[ -f $f ]] || return 0
  pid=$(cat "$f" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  # Only a process that is still the one this run started (its command names our directory).
  { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$D" || return 0
  kill "$pid" 2>/dev/null
  for ((i = 0; i < secs * 10; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$name ($pid) did not stop in ${secs}s, killing it"
  kill -9 "$pid" 2>/dev/null
}

wait_for() { # SECONDS CMD...: poll CMD every 0.1 s until it succeeds, at most about SECONDS
  local secs=$1 deadline; shift
  deadline=$(( $(now_us) + secs * 1000000 ))
  while (( $(now_us) < deadline )); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
wait_up() { # PIDFILE SECONDS CMD...: like wait_for, but give up at once if the daemon exited
  local pid secs=$2 deadline
  pid=$(cat "$1"); shift 2
  deadline=$(( $(now_us) + secs * 1000000 ))
  while (( $(now_us) < deadline )) && kill -0 "$pid" 2>/dev/null; do
    timeout 5 "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install_missing
[[ -d /run/docker ]] && run_docker_existed=1
[[ -e /etc/docker/key.json ]] && key_json_existed=1 # dockerd 20.10 writes its key there
ip link show docker_gwbridge >/dev/null 2>&1 && gwbridge_existed=1
if ss -Hlntu | awk '{print $5}' | grep -qE ':7946$'; then
  die "port 7946 (swarm gossip, not configurable) is in use: is another swarm running here?"
fi

D=$(mktemp -d /tmp/peers-bench.XXXXXX)
export DOCKER_CONFIG=$D/docker-client
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# ---------------------------------------------------------------- containerd, registry, image
log "starting containerd in $D"
containerd --address "$D/containerd.sock" --root "$D/root" --state "$D/state" \
  >"$D/containerd.log" 2>&1 &
echo $! > "$D/containerd.pid"
ctr=(ctr --address "$D/containerd.sock" -n peers)
wait_up "$D/containerd.pid" 30 ctr --address "$D/containerd.sock" version \
  || { tail -20 "$D/containerd.log" >&2; die "containerd did not answer on $D/containerd.sock"; }

reg_addr=127.0.0.1:$(free_port)
log "starting the loopback registry on $reg_addr"
timeout 120 bash "$registry_fixture" "$D/reg" "$reg_addr" >/dev/null \
  || die "registry fixture failed (log: $D/reg/registry.log)"
image=$reg_addr/busybox:v1
timeout 60 "${ctr[@]}" images pull --plain-http "$image" >/dev/null \
  || die "ctr could not pull $image"

# ---------------------------------------------------------------- dockerd, swarm
log "starting dockerd"
mkdir -p "$D/docker" "$D/exec" "$DOCKER_CONFIG"
echo '{}' > "$D/daemon.json" # do not pick up /etc/docker/daemon.json
# No docker0 bridge and no iptables rules: Docker would otherwise set the host's FORWARD policy
# to DROP and add NAT rules on a machine shared with other work. Containers get a network
# namespace with loopback only, like `ctr run`.
dockerd --containerd "$D/containerd.sock" --data-root "$D/docker" --exec-root "$D/exec" \
  --pidfile "$D/dockerd.pid" -H "unix://$D/docker.sock" --config-file "$D/daemon.json" \
  --bridge=none --iptables=false --ip6tables=false \
  --insecure-registry "$reg_addr" --shutdown-timeout 2 >"$D/dockerd.log" 2>&1 &
echo $! > "$D/docker.pid"
dk=("$docker_bin" -H "unix://$D/docker.sock")
wait_up "$D/docker.pid" 30 "${dk[@]}" version || { tail -20 "$D/dockerd.log" >&2; die "dockerd did not start"; }
timeout 60 "${dk[@]}" pull -q "$image" >/dev/null || die "docker could not pull $image"

swarm_port=$(free_port)
timeout 60 "${dk[@]}" swarm init --advertise-addr 127.0.0.1 --listen-addr "127.0.0.1:$swarm_port" \
  --data-path-addr 127.0.0.1 >/dev/null || die "docker swarm init failed"
# The routing-mesh network would give the node an ingress sandbox with a veth into a host
# bridge; no service here publishes ports, so remove it (only docker_gwbridge, down, remains).
echo y | timeout 30 "${dk[@]}" network rm ingress >/dev/null 2>&1 || log "could not remove ingress"

# One event stream for the whole run, replayed from before the first container (no race with
# its subscription): "TIMENANO CONTAINER-NAME SERVICE-NAME" per container start.
since=$(date +%s)
coproc EVENTS {
  exec "${dk[@]}" events --since "$since" --filter type=container --filter event=start \
    --format '{{.TimeNano}} {{index .Actor.Attributes "name"}} {{index .Actor.Attributes "com.docker.swarm.service.name"}}'
}
ev_pid=$EVENTS_PID

# wait_event FIELD NAME SECONDS: read start events until field FIELD (2 = container name,
# 3 = service name) equals NAME; sets ev_ns to its TIMENANO. Runs in the main shell (the
# coprocess' descriptors are not meant for subshells), so results go through globals.
ev_ns=0
wait_event() {
  local field=$1 name=$2 secs=$3 line deadline
  local -a f
  deadline=$(( $(now_us) + secs * 1000000 ))
  while (( $(now_us) < deadline )); do
    if ! IFS= read -r -t 1 -u "${EVENTS[0]}" line; then
      kill -0 "$ev_pid" 2>/dev/null || die "docker events stream ended"
      continue
    fi
    read -r -a f <<< "$line"
    if [[ ${f[field - 1]:-} == "$name" ]]; then ev_ns=${f[0]}; return 0; fi
  done
  return 1
}

# ---------------------------------------------------------------- one sample of each kind
declare -a s_ctr=() s_run=() s_run_ev=() s_swarm=()
us_to_ms() { printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )); }
r_ctr=0 r_run=0 r_run_ev=0 r_swarm=0 # microseconds of the last sample of each kind

sample_ctr() { # CONTAINER-ID
  local t0 t1
  t0=$(now_us)
  timeout 30 "${ctr[@]}" run -d "$image" "$1" sleep 3600 >/dev/null || die "ctr run $1 failed"
  t1=$(now_us)
  r_ctr=$(( t1 - t0 ))
}
sample_docker_run() { # CONTAINER-NAME
  local t0 t1
  t0=$(now_us)
  timeout 30 "${dk[@]}" run -d --name "$1" "$image" sleep 3600 >/dev/null || die "docker run $1 failed"
  t1=$(now_us)
  wait_event 2 "$1" 30 || die "no start event for container $1"
  r_run=$(( t1 - t0 ))
  r_run_ev=$(( ev_ns / 1000 - t0 ))
}
sample_swarm() { # SERVICE-NAME
  local t0
  t0=$(now_us)
  timeout 30 "${dk[@]}" service create --mode global --detach --name "$1" --stop-signal KILL \
    "$image" sleep 3600 >/dev/null || die "docker service create $1 failed"
  wait_event 3 "$1" 30 || die "service $1: no container started within 30 s"
  r_swarm=$(( ev_ns / 1000 - t0 ))
}

log "warm-up (discarded)"
sample_ctr ctr-warm
sample_docker_run run-warm
sample_swarm swarm-warm

# Bounded in time as well as count: stop sampling (and say so) past the budget.
budget_s=$(( 60 + samples * 6 ))
deadline=$(( $(now_us) + budget_s * 1000000 ))
log "sampling: $samples rounds of ctr run / docker run / swarm global service (budget ${budget_s}s)"
for ((i = 1; i <= samples; i++)); do
  if (( $(now_us) > deadline )); then
    log "time budget of ${budget_s}s spent after $((i - 1)) rounds; reporting those"
    break
  fi
  sample_ctr "ctr-$i"
  s_ctr+=("$(us_to_ms "$r_ctr")")
  sample_docker_run "run-$i"
  s_run+=("$(us_to_ms "$r_run")")
  s_run_ev+=("$(us_to_ms "$r_run_ev")")
  sample_swarm "swarm-$i"
  s_swarm+=("$(us_to_ms "$r_swarm")")
  if (( i % 10 == 0 )); then log "round $i/$samples"; fi
done
rounds=${#s_ctr[@]}
(( rounds > 0 )) || die "no samples taken"

# Sanity: every sampled container really is running.
n_ctr=$("${ctr[@]}" tasks ls | awk '$1 ~ /^ctr-[0-9]+$/ && $3 == "RUNNING"' | wc -l)
n_run=$("${dk[@]}" ps -q --filter status=running --filter name='run-[0-9]+$' | wc -l)
n_sw=$("${dk[@]}" ps -q --filter status=running --filter label=com.docker.swarm.service.name | wc -l)
(( n_ctr == rounds )) || die "expected $rounds running ctr tasks, found $n_ctr"
(( n_run == rounds )) || die "expected $rounds running docker run containers, found $n_run"
(( n_sw == rounds + 1 )) || die "expected $((rounds + 1)) running swarm containers, found $n_sw"

# ---------------------------------------------------------------- remove what was started
log "removing services and containers"
mapfile -t ids < <("${dk[@]}" service ls -q)
timeout 60 "${dk[@]}" service rm "${ids[@]}" >/dev/null
no_swarm_containers() { [[ -z $(timeout 10 "${dk[@]}" ps -aq --filter label=com.docker.swarm.service.name) ]]; }
wait_for 60 no_swarm_containers \
  || log "swarm containers still present after 60 s"
timeout 60 "${dk[@]}" swarm leave --force >/dev/null || log "swarm leave failed"
mapfile -t ids < <("${dk[@]}" ps -aq)
if [[ ${#ids[@]} -gt 0 ]]; then timeout 60 "${dk[@]}" rm -f "${ids[@]}" >/dev/null; fi
for t in $("${ctr[@]}" tasks ls -q); do timeout 20 "${ctr[@]}" tasks rm -f "$t" >/dev/null 2>&1; done
for c in $("${ctr[@]}" containers ls -q); do timeout 20 "${ctr[@]}" containers rm "$c" >/dev/null; done

versions=$(printf 'containerd %s; runc %s; docker %s' \
  "$(containerd --version | awk '{print $3}')" "$(runc --version | awk 'NR==1{print $3}')" \
  "$("${dk[@]}" version -f '{{.Server.Version}}')")
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
python3 - "$json_out" "$samples" "$rounds" "$started" "$versions" "$load_start" "$load_end" \
  "${s_ctr[*]}" "${s_run[*]}" "${s_run_ev[*]}" "${s_swarm[*]}" <<'PY'
import json, math, platform, sys

out, asked, rounds, started, versions, load0, load1 = sys.argv[1:8]
names = ["ctr_run", "docker_run", "docker_run_event", "swarm_global"]
data = {n: [float(x) for x in s.split()] for n, s in zip(names, sys.argv[8:12])}

def pct(xs, q):  # nearest-rank percentile
    xs = sorted(xs)
    return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)]

floor = pct(data["ctr_run"], 50)
print(f"peers: {rounds} rounds (asked {asked}), {versions}")
print(f"loadavg at start {load0}, at end {load1}")
print(f"{'metric':<18}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'p50/ctr':>9}")
for n in names:
    xs = data[n]
    print(f"{n:<18}{len(xs):>5}{pct(xs, 50):>10.1f}{pct(xs, 95):>10.1f}{pct(xs, 99):>10.1f}"
          f"{pct(xs, 50) / floor:>9.2f}")
if out:
    doc = dict(data)
    doc["meta"] = {"started": started, "rounds": int(rounds), "versions": versions,
                   "host": platform.node(), "kernel": platform.release(),
                   "loadavg_start": load0, "loadavg_end": load1}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"samples written to {out}")
PY
