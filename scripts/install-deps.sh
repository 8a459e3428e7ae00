#!/usr/bin/env bash
# Installs what building, running and testing daemonset-agent needs on Debian 12 (as root), and
# fails, naming what, when something cannot be installed. Idempotent: safe to run again.
#
#   scripts/install-deps.sh          # everything the tests need (what .ci/run uses)
#   scripts/install-deps.sh --run    # only what building and running needs (scripts/quickstart.sh)
#
# Must already be on the machine (this script checks them first and says where they come from):
# Rust with cargo (rustup) and kubectl 1.27+ (scripts/find-kubectl.sh). cargo-deb and
# cargo-generate-rpm are not installed here: scripts/package.sh installs them when it packages.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export DEBIAN_FRONTEND=noninteractive
mode=${1:-all}
case "$mode" in all | --run) ;; *) echo "usage: $0 [--run]" >&2; exit 64 ;; esac
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (it installs Debian packages)" >&2; exit 1; }

# ---- what this script does not install: checked first, so a newcomer learns it in a second ----
if ! command -v cargo >/dev/null; then
  cat >&2 <<'EOF'
cargo is not on the PATH. Install Rust with rustup (https://rustup.rs), then load its environment:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"
EOF
  exit 1
fi
bash scripts/find-kubectl.sh >/dev/null

# ---- Debian packages ---------------------------------------------------------------------------
# gcc, libc6-dev: the linker and C parts of the build (bundled SQLite, ring); protobuf-compiler:
# containerd's, etcd's and our gRPC protos, libprotobuf-dev: the well-known types etcd-client's
# protos import (google/protobuf/descriptor.proto); containerd, runc; docker-registry, skopeo, busybox-static,
# python3: the loopback registry and its busybox images (tests/fixtures); procps: pgrep/pkill;
# containernetworking-plugins (bridge, host-local, portmap, loopback in /usr/lib/cni), iptables
# (portmap's and bridge's NAT rules) and iproute2: pod networking for pods without hostNetwork.
pkgs=(gcc libc6-dev protobuf-compiler libprotobuf-dev containerd runc docker-registry skopeo busybox-static
  curl ca-certificates python3 procps containernetworking-plugins iptables iproute2)
# For the tests: systemd (journald and journalctl for the container-output tests, run as a
# journald namespace instance of the test's own), openssl (the HTTPS probe's certificate),
# python3-venv (the official Python client's virtual environment, below), debootstrap,
# systemd-container (systemd-nspawn), rpm, dpkg-dev (dpkg-shlibdeps) and binutils (strip): the
# packages and tests/packaging.sh; prometheus-node-exporter: the real DaemonSet workload of
# tests/workloads.rs (its binary goes into an image the fixtures build; its service is not used);
# etcd-server, etcd-client: the etcd store's tests (tests/etcd.rs starts its own members);
# faketime (libfaketime): the fault matrix steps one agent's wall clock (tests/faults.rs);
# python3-matplotlib: the soak's plot (benches/harness/soak.rs, bench/run.sh --only soak).
[ "$mode" = --run ] || pkgs+=(systemd openssl python3-venv debootstrap systemd-container rpm dpkg-dev binutils
  prometheus-node-exporter etcd-server etcd-client faketime python3-matplotlib)
missing=()
for p in "${pkgs[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  quiet_step "apt-get update" apt-get update
  quiet_step "apt-get install ${missing[*]} (a minute or two)" \
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
# journald needs a machine id; a container image may come without one
[ -s /etc/machine-id ] || systemd-machine-id-setup >/dev/null 2>&1 || [ "$mode" = --run ]
[ "$mode" = --run ] && exit 0

# ---- the official Python client, for tests/python_client.py ------------------------------------
# Debian's Python refuses system-wide pip installs (PEP 668) and has no pip: a virtual environment
# of Debian's own python3 (/usr/bin/python3, whatever else is first on the PATH) under target/,
# which tests/common (python_client) runs.
venv=target/venv
client_ok() {
  grep -qx 'home = /usr/bin' "$venv/pyvenv.cfg" 2>/dev/null &&
    "$venv/bin/python" -c 'import sys, kubernetes; sys.exit(int(kubernetes.__version__.split(".")[0]) < 30)' 2>/dev/null
}
if ! client_ok; then
  rm -rf "$venv"
  mkdir -p target
  quiet_step "making the Python virtual environment $venv" /usr/bin/python3 -m venv "$venv"
  quiet_step "pip install 'kubernetes>=30' into $venv (from PyPI)" \
    "$venv/bin/python" -m pip install --disable-pip-version-check 'kubernetes>=30'
  client_ok || { echo "install-deps.sh: $venv cannot import kubernetes 30+ after pip install" >&2; exit 1; }
fi
echo "official Python client: $("$venv/bin/python" -c 'import kubernetes; print(kubernetes.__version__)') in $venv" >&2
