#!/usr/bin/env bash
# Installs what building, running and testing daemonset-agent needs on Debian 12 (as root).
# Idempotent: packages already present are skipped by apt; safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# systemd: journald and journalctl for the container-output tests (a journald namespace instance
# of the test's own runs without systemd as PID 1, as in CI's container); openssl: the HTTPS
# probe test's certificate; debootstrap, systemd-container (systemd-nspawn), rpm, dpkg-dev
# (dpkg-shlibdeps) and binutils (strip): building the packages and tests/packaging.sh.
pkgs=(containerd runc protobuf-compiler docker-registry skopeo busybox-static curl python3 ca-certificates
  systemd openssl debootstrap systemd-container rpm dpkg-dev binutils)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# journald needs a machine id; a container image may come without one
[ -s /etc/machine-id ] || systemd-machine-id-setup >/dev/null
# A packaged containerd may start its own service where systemd runs; that is fine, the tests
# start private ones. kubectl is expected on the machine (Debian's kubernetes-client is too old).
command -v kubectl >/dev/null || { echo "kubectl is required (1.27+): install it from https://dl.k8s.io" >&2; exit 1; }
if ! command -v cargo >/dev/null; then
  echo "cargo is required: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
# cargo-deb and cargo-generate-rpm at the versions scripts/package.sh pins (compiled: a few minutes once).
bash "$(dirname "$0")/package.sh" --tools-only
# The official Python client, for the compatibility test.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q 'kubernetes>=30' 2>&1 | tail -1 || true
