#!/usr/bin/env bash
# Runs every test: unit tests of the pure core, and integration tests against a real containerd
# + runc (private, in temporary directories), a real OCI registry on loopback and the real kubectl.
# Needs root (containers) and what scripts/install-deps.sh installs. Nothing is skipped: a missing
# component fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the integration tests start containerd and need root" >&2; exit 1; }
for bin in containerd runc containerd-shim-runc-v2 docker-registry skopeo kubectl protoc python3 \
  journalctl /lib/systemd/systemd-journald openssl debootstrap systemd-nspawn rpm cargo-deb cargo-generate-rpm; do
  command -v "$bin" >/dev/null || { echo "missing $bin: run scripts/install-deps.sh" >&2; exit 1; }
done
# One loopback registry for the whole run.
regdir=$(mktemp -d /tmp/dsa-registry.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { [ -f "$regdir/registry.pid" ] && kill "$(cat "$regdir/registry.pid")" 2>/dev/null; rm -rf "$regdir"; }
trap cleanup EXIT
export DSA_TEST_REGISTRY
DSA_TEST_REGISTRY=$(bash tests/fixtures/registry.sh "$regdir" "127.0.0.1:$port")
cargo build --all-targets
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --no-fail-fast --test-threads 4
else
  cargo test --no-fail-fast
fi
# The .deb installed, run, upgraded and purged in a booted Debian 12 (systemd-nspawn), the .rpm
# inspected: after the other tests, alone, as it boots a machine.
bash tests/packaging.sh
