#!/usr/bin/env bash
# Runs every test: unit tests of the pure core, and integration tests against a real containerd
# + runc (private, in temporary directories), a real OCI registry on loopback, the real kubectl and
# the official Python client; then the packages in a booted Debian 12 (tests/packaging.sh).
# Needs root and what scripts/install-deps.sh installs. Nothing is skipped: a missing component
# fails the run. Every group runs whatever the others did; the summary at the end names the ones
# that failed, with their wall times (under .ci/run, its summary lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
groups_begin
[ "$(id -u)" = 0 ] || { echo "test.sh: the integration tests start containerd and need root" >&2; exit 1; }
missing=()
for bin in containerd runc containerd-shim-runc-v2 ctr docker-registry skopeo protoc python3 \
  journalctl /lib/systemd/systemd-journald openssl debootstrap systemd-nspawn rpm strip pkill; do
  command -v "$bin" >/dev/null || missing+=("$bin")
done
[ ${#missing[@]} = 0 ] || { echo "test.sh: missing ${missing[*]}: run scripts/install-deps.sh (as root)" >&2; exit 1; }
bash scripts/find-kubectl.sh >/dev/null # says what to install when kubectl is missing or too old
[ -x target/venv/bin/python ] ||
  { echo "test.sh: target/venv (the official Python client) is missing: run scripts/install-deps.sh" >&2; exit 1; }

# One loopback registry for the whole run (tests/common uses it through DSA_TEST_REGISTRY).
regdir=$(mktemp -d /tmp/dsa-registry.XXXXXX)
cleanup() {
  local pid
  pid=$(cat "$regdir/registry.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
  rm -rf "$regdir"
}
trap cleanup EXIT
export DSA_TEST_REGISTRY
DSA_TEST_REGISTRY=$(bash tests/fixtures/registry.sh "$regdir" "127.0.0.1:$(free_port)")

group "build" cargo build --all-targets
# The fault matrix (tests/faults.rs) runs in a group of its own after the others, alone: it
# measures how fast its fleet converges after each fault, and 4 other tests beside it would be
# what it measures. Smoke counts here (about 2-3 min); DSA_FAULTS=full runs the full matrix.
if command -v cargo-nextest >/dev/null; then
  group "cargo tests" cargo nextest run --no-fail-fast --test-threads 4 -E 'not binary(faults)'
  group "fault matrix, smoke" cargo nextest run --no-fail-fast --no-capture --test faults
else
  group "cargo tests" cargo test --no-fail-fast -- --skip fault_matrix
  group "fault matrix, smoke" cargo test --no-fail-fast --test faults -- --nocapture
fi
# The .deb installed, run, upgraded and purged in a booted Debian 12 (systemd-nspawn), the .rpm
# inspected: after the other tests, alone, as it boots a machine. scripts/package.sh installs
# cargo-deb and cargo-generate-rpm the first time (compiled: a few minutes).
group "packages" bash tests/packaging.sh
groups_summary
