#!/usr/bin/env bash
# The packages as a user meets them. Builds the .deb and .rpm of the debug binary (stripped) with
# scripts/package.sh, twice (the second with a bumped version), then:
#  - .deb: boots a minimal Debian 12 with systemd (debootstrap + systemd-nspawn, host network) and,
#    inside, installs the package with apt (Recommends containerd and runc resolved from Debian),
#    checks that install enabled and started the server (Type=notify: active means READY; TLS, a
#    0600 admin kubeconfig, 401 without a credential) and the agent, points the agent at the
#    outside containerd, checks that
#    the Node registers and a DaemonSet applied with kubectl from outside runs as a container in a
#    containerd started by this test outside the machine (runc cannot create containers inside),
#    that `systemctl reload` applies a changed label, that an upgrade keeps a modified agent.toml
#    and adopts the running container, that `systemctl stop` leaves it running, that the agent's
#    journal has structured fields, that remove keeps and purge deletes the configuration, and that
#    a server-only install (--no-install-recommends) runs the server without containerd;
#  - .rpm: checks its files, %config(noreplace), scriptlets and dependencies with rpm on this
#    machine, and installs, modifies and erases it in a scratch rpm root (no booted Fedora here).
# Needs root and what scripts/install-deps.sh installs. Nothing is skipped: any miss fails loudly.
# The bookworm rootfs is cached in target/pkgtest/ per day (a fresh clone starts clean).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
t0=$(date +%s)
say() { echo "[packaging +$(($(date +%s) - t0))s] $*"; }
die() {
  echo "PACKAGING TEST FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, systemd-nspawn, containerd)"
for b in debootstrap systemd-nspawn nsenter containerd containerd-shim-runc-v2 runc ctr rpm python3 curl strip; do
  command -v "$b" >/dev/null || die "missing $b: run scripts/install-deps.sh"
done
kubectl=$(bash scripts/find-kubectl.sh) || die "no usable kubectl (above: what to install)"
bin=${DSA_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/daemonset-agent}
[ -x "$bin" ] || die "$bin is missing: cargo build first"

work=$(mktemp -d /tmp/dsa-pkgtest.XXXXXX)
root=$work/root
ctd=$work/ctd
state=$work/agent-state
kc=$work/admin.kubeconfig
nspawn_pid="" ctd_pid="" reg_pid="" sysd=""

# Runs a command inside the booted machine.
inside() { timeout 120 nsenter -t "$sysd" -a "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ] && [ -n "$sysd" ]; then
    echo "--- journal of the machine (last 60 lines of the two units) ---" >&2
    inside journalctl --no-pager -u daemonset-agent -u daemonset-agent-server -n 60 >&2
    echo "--- containerd (last 20 lines) ---" >&2
    tail -n 20 "$ctd/containerd.log" >&2
  fi
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    say "powering the machine off"
    kill -TERM "$nspawn_pid" # nspawn powers the machine off
    for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$nspawn_pid" 2>/dev/null
    wait "$nspawn_pid" 2>/dev/null
  fi
  # a machine whose nspawn was killed: killing its PID 1 ends its whole PID namespace
  # (only if that pid is still a systemd in another PID namespace: never a reused pid)
  if [ -n "$sysd" ] && [ "$(cat "/proc/$sysd/comm" 2>/dev/null)" = systemd ] &&
    [ "$(readlink "/proc/$sysd/ns/pid")" != "$(readlink /proc/self/ns/pid)" ]; then
    kill -KILL "$sysd"
  fi
  # Tasks deleted through containerd (the machine is off: no agent starts them again), so runc
  # removes their cgroups and state; a killed shim would leave them. Then what a task deletion
  # missed: the containers' cgroups (never the namespace's own: a real agent may use it).
  local c=(timeout 20 ctr --address "$ctd/containerd.sock") ns t ids=""
  for ns in $("${c[@]}" namespaces ls -q 2>/dev/null); do
    for t in $("${c[@]}" -n "$ns" tasks ls -q 2>/dev/null); do "${c[@]}" -n "$ns" tasks rm -f "$t" >/dev/null 2>&1; done
    for t in $("${c[@]}" -n "$ns" containers ls -q 2>/dev/null); do ids+=" $ns/$t"; done
  done
  # The shims and the containers under them outlive containerd: kill the ones of this socket.
  for p in $(pgrep -f "containerd-shim.*$ctd/containerd.sock"); do
    pkill -KILL -P "$p"
    kill -KILL "$p"
  done
  [ -n "$ctd_pid" ] && kill "$ctd_pid" && wait "$ctd_pid"
  [ -n "$reg_pid" ] && kill "$reg_pid"
  awk -v w="$work" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  for t in $ids; do
    rmdir /sys/fs/cgroup/*/daemonset-agent/"$t" 2>/dev/null
    rm -rf "/run/containerd/runc/$t"
  done
  rm -rf "$work"
  say "$([ "$rc" = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - t0))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls CMD... every 0.2 s for at most SECS seconds; fails naming WHAT.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local end=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

# ---- packages: the debug binary, stripped; a second build with a bumped version ----------------
say "building packages"
strip --strip-all -o "$work/daemonset-agent" "$bin" # once for both builds
out1=$(bash scripts/package.sh --fast --bin "$work/daemonset-agent" --out "$work/pkg1")
out2=$(bash scripts/package.sh --fast --bin "$work/daemonset-agent" --out "$work/pkg2" --version 0.1.1)
deb1=$(echo "$out1" | grep '\.deb$')
rpm1=$(echo "$out1" | grep '\.rpm$')
deb2=$(echo "$out2" | grep '\.deb$')
rpm2=$(echo "$out2" | grep '\.rpm$')
for f in "$deb1" "$rpm1" "$deb2" "$rpm2"; do [ -f "$f" ] || die "package $f not built"; done

# ---- .rpm: contents, config flags, scriptlets, dependencies; a scratch-root install -------------
say "checking $(basename "$rpm1")"
files=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm1")
for want in "-rwxr-xr-x  /usr/bin/daemonset-agent" \
  "-rw-r--r--  /usr/lib/systemd/system/daemonset-agent.service" \
  "-rw-r--r--  /usr/lib/systemd/system/daemonset-agent-server.service" \
  "-rw-r--r-- cn /etc/daemonset-agent/agent.toml"; do
  grep -qxF -- "$want" <<<"$files" || die "rpm: no '$want' in the file list"
done
grep -q '^/etc/daemonset-agent/agent.toml .* 1 0 ' <<<"$(rpm -qp --dump "$rpm1")" || die "rpm --dump: agent.toml is not a config file"
scripts=$(rpm -qp --scripts "$rpm1")
for want in "postinstall scriptlet" "install-system-units daemonset-agent.service daemonset-agent-server.service" \
  "preuninstall scriptlet" "remove-system-units" "postuninstall scriptlet" "mark-restart-system-units"; do
  grep -qF -- "$want" <<<"$scripts" || die "rpm --scripts: no '$want'"
done
grep -qx 'systemd' <<<"$(rpm -qp --requires "$rpm1")" || die "rpm: does not require systemd"
grep -qx 'containerd' <<<"$(rpm -qp --recommends "$rpm1")" || die "rpm: does not recommend containerd"
[ "$(rpm -qp --qf '%{VERSION}' "$rpm2")" = 0.1.1 ] || die "rpm: the second build is not 0.1.1"
rr=$work/rpmroot
rpm --root "$rr" --initdb
# (Debian's rpm warns that alien should install rpms: its stderr goes to a log)
rpm --root "$rr" -i --nodeps --noscripts "$rpm1" 2>>"$work/rpm.log"
echo '# changed by hand' >>"$rr/etc/daemonset-agent/agent.toml"
rpm --root "$rr" -U --nodeps --noscripts "$rpm2" 2>>"$work/rpm.log"
grep -q 'changed by hand' "$rr/etc/daemonset-agent/agent.toml" || die "rpm upgrade replaced a modified agent.toml"
rpm --root "$rr" -e --nodeps --noscripts daemonset-agent 2>>"$work/rpm.log"
[ -f "$rr/etc/daemonset-agent/agent.toml.rpmsave" ] || die "rpm erase did not keep the modified agent.toml as .rpmsave"
[ ! -e "$rr/usr/bin/daemonset-agent" ] || die "rpm erase left the binary"

# ---- a bookworm rootfs, cached per day -----------------------------------------------------------
cache=$repo/target/pkgtest/bookworm-$(date +%Y%m%d)
if [ ! -d "$cache" ]; then
  say "debootstrap bookworm into $cache (about a minute)"
  find "$repo/target/pkgtest" -maxdepth 1 -name 'bookworm-*' -exec rm -rf {} + 2>/dev/null || true
  mkdir -p "$repo/target/pkgtest"
  rm -rf "$cache.tmp"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$cache.tmp" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed"
  }
  mv "$cache.tmp" "$cache"
fi
cp -a "$cache" "$root"
# Debian's containerd would start inside the machine, where runc cannot run containers: mask it.
# The agent unit only Wants= it, so the agent starts and uses the containerd outside.
ln -sfn /dev/null "$root/etc/systemd/system/containerd.service"
# (not under /tmp: nspawn mounts a tmpfs there)
mkdir -p "$repo/target/pkgtest/apt-archives/partial" "$root/opt/pkg"
cp "$deb1" "$deb2" "$root/opt/pkg/"

# ---- containerd and a registry outside; the machine ----------------------------------------------
mkdir -p "$ctd" "$state"
containerd --address "$ctd/containerd.sock" --root "$ctd/root" --state "$ctd/state" >"$ctd/containerd.log" 2>&1 &
ctd_pid=$!
wait_for 20 "containerd" ctr --address "$ctd/containerd.sock" version
reg=${DSA_TEST_REGISTRY:-}
if [ -z "$reg" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  reg=$(bash tests/fixtures/registry.sh "$work/registry" "127.0.0.1:$port")
  reg_pid=$(cat "$work/registry/registry.pid" 2>/dev/null || true)
fi

say "booting the machine"
# The agent's state directory and containerd's directories at the same paths on both sides: the
# shims outside write container output into the agent's state directory and read the FIFOs.
systemd-nspawn --register=no --keep-unit -q -D "$root" -b -M "dsa-pkgtest" \
  --bind="$ctd" --bind="$state" --bind="$repo/target/pkgtest/apt-archives:/var/cache/apt/archives" \
  </dev/null >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!
find_systemd() { sysd=$(pgrep -P "$nspawn_pid" -x systemd); } # the machine's PID 1
end=$(($(date +%s) + 30))
until find_systemd; do
  kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/nspawn.log" >&2; die "systemd-nspawn exited"; }
  [ "$(date +%s)" -lt "$end" ] || die "no systemd in the machine after 30s"
  sleep 0.2
done
booted() { # (the bus socket appears a moment after PID 1)
  case "$(inside systemctl is-system-running --wait 2>/dev/null)" in running | degraded) return 0 ;; esac
  return 1
}
wait_for 60 "the machine to boot" booted

# ---- install (the server's port chosen before: install starts it, and the machine shares the
# host's network, where only loopback ports of the test's own may be used) --------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$root/etc/systemd/system/daemonset-agent-server.service.d"
cat >"$root/etc/systemd/system/daemonset-agent-server.service.d/port.conf" <<EOF
[Service]
ExecStart=
ExecStart=/usr/bin/daemonset-agent server --data-dir /var/lib/daemonset-agent-server --listen 127.0.0.1:$port
EOF
say "apt-get install $(basename "$deb1")"
inside apt-get update -qq >/dev/null
inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/opt/pkg/$(basename "$deb1")" >"$work/apt-install.log" 2>&1 ||
  { tail -n 30 "$work/apt-install.log" >&2; die "apt-get install failed"; }
inside dpkg -s containerd runc >/dev/null || die "apt did not install the recommended containerd and runc"
listed=$(inside dpkg -L daemonset-agent)
for f in /usr/bin/daemonset-agent /usr/lib/systemd/system/daemonset-agent.service \
  /usr/lib/systemd/system/daemonset-agent-server.service /etc/daemonset-agent/agent.toml; do
  grep -qxF "$f" <<<"$listed" || die "dpkg -L: $f not installed"
done
grep -q '/etc/daemonset-agent/agent.toml' <<<"$(inside dpkg-query -W -f='${Conffiles}' daemonset-agent)" || die "agent.toml is not a conffile"
# Debian's policy: services enabled and started on install
for u in daemonset-agent daemonset-agent-server; do
  [ "$(inside systemctl is-enabled $u || true)" = enabled ] || die "$u is not enabled on install"
done
[ "$(inside systemctl is-active daemonset-agent-server)" = active ] || die "the server did not start on install"
[ "$(stat -c %a "$root/var/lib/daemonset-agent-server/admin.kubeconfig")" = 600 ] || die "admin.kubeconfig is not 0600"
[ "$(stat -c %a "$root/var/lib/daemonset-agent-server/state.db")" = 600 ] || die "state.db is not 0600"
grep -q "server: https://127.0.0.1:$port" "$root/var/lib/daemonset-agent-server/admin.kubeconfig" || die "the admin kubeconfig does not name https://127.0.0.1:$port"
# no credential: 401; plain HTTP: nothing of the API
[ "$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/api/v1/nodes")" = 401 ] || die "an unauthenticated request was not refused with 401"
curl -s "http://127.0.0.1:$port/api/v1/nodes" | grep -q '"kind"' && die "plain HTTP got an API answer"
# ---- configure the agent (the outside containerd), restart it ---------------------------------
conf=$root/etc/daemonset-agent/agent.toml
sed -i -e 's|^# node-name = .*|node-name = "pkg-node"|' \
  -e "s|^containerd-socket = .*|containerd-socket = \"$ctd/containerd.sock\"|" \
  -e "s|^state-dir = .*|state-dir = \"$state\"|" "$conf"
# containerd's shims run outside the machine: they start the log driver from a path that holds
# the same binary on both sides
cp "$work/daemonset-agent" "$ctd/daemonset-agent"
sed -i "/^state-dir = /a log-driver-binary = \"$ctd/daemonset-agent\"" "$conf"
printf '"pkgtest/role" = "worker"\n"pkgtest/stage" = "one"\n' >>"$conf"
inside systemctl daemon-reload
say "systemctl restart daemonset-agent (the outside containerd)"
inside systemctl restart daemonset-agent || die "systemctl restart daemonset-agent failed"
for u in daemonset-agent daemonset-agent-server; do
  [ "$(inside systemctl is-active $u)" = active ] || die "$u is not active"
done
cp "$root/var/lib/daemonset-agent-server/admin.kubeconfig" "$kc"
grep -q "127.0.0.1:$port" "$kc" || die "the admin kubeconfig does not name 127.0.0.1:$port"
k() { timeout 30 "$kubectl" --kubeconfig "$kc" "$@"; }
label_is() { [ "$(k get node pkg-node -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['metadata']['labels'].get('$1',''))")" = "$2" ]; }
wait_for 30 "Node pkg-node with label pkgtest/stage=one" label_is pkgtest/stage one

# ---- a DaemonSet runs in the containerd outside ------------------------------------------------
# hostNetwork and hostIPC: the agent makes a pod's own network and IPC namespaces by bind-mounting
# them inside its mount namespace, which is the machine's here, while runc runs outside and cannot
# see those mounts (on a real node both share the host's mount namespace).
cat >"$work/ds.yaml" <<EOF
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: pkgtest
spec:
  selector:
    matchLabels: {app: pkgtest}
  template:
    metadata:
      labels: {app: pkgtest}
    spec:
      nodeSelector: {pkgtest/role: worker}
      hostNetwork: true
      hostIPC: true
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: $reg/busybox:v1
        command: ["sleep", "100000"]
EOF
k apply -f "$work/ds.yaml" >/dev/null
# "ID PID" of the running task of the agent's namespace
task() { ctr --address "$ctd/containerd.sock" -n daemonset-agent tasks ls 2>/dev/null | awk '$3 == "RUNNING" {print $1, $2}'; }
has_task() { [ -n "$(task)" ]; }
wait_for 60 "the DaemonSet's container to run" has_task
first=$(task)
say "container running: $first"
pod_running() { k get pods -o wide --no-headers | grep -q 'Running.*pkg-node'; }
wait_for 30 "the pod reported Running on pkg-node" pod_running

# ---- the agent's structured journal --------------------------------------------------------------
journal=$(inside journalctl -u daemonset-agent -o json --no-pager)
grep -q '"NODE":"pkg-node"' <<<"$journal" || die "journal: no NODE field"
grep -q '"DAEMONSET":"pkgtest"' <<<"$journal" || die "journal: no DAEMONSET field"
grep -q '"CONTAINER_ID":"' <<<"$journal" || die "journal: no CONTAINER_ID field"

# ---- SIGHUP reload applies a changed label ----------------------------------------------------
pid_before=$(inside systemctl show -P MainPID daemonset-agent)
sed -i 's|^"pkgtest/stage" = "one"|"pkgtest/stage" = "two"|' "$conf"
inside systemctl reload daemonset-agent
wait_for 20 "the reloaded label pkgtest/stage=two" label_is pkgtest/stage two
[ "$(inside systemctl show -P MainPID daemonset-agent)" = "$pid_before" ] || die "reload restarted the agent"
[ "$(task)" = "$first" ] || die "reload changed the container: $(task)"

# ---- upgrade: the modified agent.toml stays, the container is adopted ------------------------------
say "upgrade to $(basename "$deb2")"
inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/opt/pkg/$(basename "$deb2")" >"$work/apt-upgrade.log" 2>&1 ||
  { tail -n 30 "$work/apt-upgrade.log" >&2; die "upgrade failed"; }
[ "$(inside dpkg-query -W -f='${Version}' daemonset-agent)" = 0.1.1-1 ] || die "not upgraded to 0.1.1-1"
grep -q '^"pkgtest/stage" = "two"' "$conf" || die "the upgrade replaced the modified agent.toml"
[ ! -e "$conf.dpkg-new" ] && [ ! -e "$conf.dpkg-dist" ] || die "the upgrade left a .dpkg-new/.dpkg-dist"
for u in daemonset-agent daemonset-agent-server; do
  [ "$(inside systemctl is-active $u)" = active ] || die "$u not active after the upgrade"
done
[ "$(inside systemctl show -P MainPID daemonset-agent)" != "$pid_before" ] || die "the upgrade did not restart the agent"
sleep 3 # a round of the restarted agent's reconcile loop, which must leave the container alone
label_is pkgtest/stage two || die "after the upgrade the Node lost pkgtest/stage=two"
[ "$(task)" = "$first" ] || die "the upgrade replaced the container: $first -> $(task)"

# ---- stop leaves the container running ----------------------------------------------------------
inside systemctl stop daemonset-agent
[ "$(inside systemctl is-active daemonset-agent || true)" = inactive ] || die "the agent did not stop"
sleep 1
[ "$(task)" = "$first" ] || die "systemctl stop took the container down"

# ---- remove keeps the configuration, purge deletes it ----------------------------------------------
say "apt-get remove, then purge"
inside env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q daemonset-agent >"$work/apt-remove.log" 2>&1 || die "apt-get remove failed"
[ "$(inside systemctl is-active daemonset-agent-server || true)" = inactive ] || die "remove left the server running"
[ ! -e "$root/usr/bin/daemonset-agent" ] || die "remove left the binary"
[ ! -e "$root/usr/lib/systemd/system/daemonset-agent.service" ] || die "remove left the unit"
[ -f "$conf" ] || die "remove deleted agent.toml (only purge may)"
[ -d "$root/var/lib/daemonset-agent-server" ] || die "remove deleted the server's store (only purge may)"
inside env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q daemonset-agent >"$work/apt-purge.log" 2>&1 || die "apt-get purge failed"
[ ! -e "$root/etc/daemonset-agent" ] || die "purge left /etc/daemonset-agent"
[ ! -e "$root/var/lib/daemonset-agent-server" ] || die "purge left /var/lib/daemonset-agent-server"
[ ! -e "$root/var/lib/daemonset-agent" ] || die "purge left /var/lib/daemonset-agent"
inside dpkg -s daemonset-agent >/dev/null 2>&1 && die "dpkg still knows daemonset-agent after purge"
[ "$(task)" = "$first" ] || die "remove/purge took the container down"

# ---- a server-only machine: no containerd, no runc ---------------------------------------------
say "server-only install (--no-install-recommends, no containerd)"
inside env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q containerd runc >"$work/apt-purge-ctd.log" 2>&1 || die "apt-get purge containerd runc failed"
inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "/opt/pkg/$(basename "$deb1")" \
  >"$work/apt-server-only.log" 2>&1 || { tail -n 30 "$work/apt-server-only.log" >&2; die "server-only install failed"; }
inside dpkg -s containerd >/dev/null 2>&1 && die "--no-install-recommends still installed containerd"
[ "$(inside systemctl is-active daemonset-agent-server)" = active ] || die "the server did not start on a server-only install"
cp "$root/var/lib/daemonset-agent-server/admin.kubeconfig" "$kc"
k get --raw /readyz >/dev/null || die "the server-only machine's server is not ready"
inside systemctl stop daemonset-agent-server
say "all package checks passed"
