#!/usr/bin/env bash
# Builds the .deb (cargo-deb) and the .rpm (cargo-generate-rpm) of daemonset-agent from the
# [package.metadata.deb] and [package.metadata.generate-rpm] tables of Cargo.toml. The binary is
# stripped into target/package/ first; cargo-deb and cargo-generate-rpm are installed at pinned
# versions when missing. Prints the paths of the two packages on its last two lines.
#
#   scripts/package.sh                      # release build (the default for users; fat LTO: slow)
#   scripts/package.sh --profile dev        # package the debug build (tests, CI)
#   scripts/package.sh --bin PATH           # package this binary, build nothing
#   scripts/package.sh --tools-only         # only install the pinned cargo-deb and cargo-generate-rpm
# This is the one way to build the packages: the assets of Cargo.toml's [package.metadata.*] name
# target/package/daemonset-agent, which only this script makes.
#   options: --fast (lighter compression, for tests), --version V (package version, default Cargo.toml's), --out DIR (default target/packages)
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

profile=release bin="" version="" out=target/packages tools_only="" fast=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --tools-only) tools_only=1; shift ;;
    --fast) fast=1; shift ;;
    *) echo "usage: $0 [--profile PROFILE | --bin PATH] [--version V] [--out DIR]" >&2; exit 64 ;;
  esac
done

# Installs cargo-NAME at VERSION unless that version is already there.
tool() {
  local name=$1 version=$2
  if ! "$name" --version 2>/dev/null | grep -qF " $version"; then
    echo "installing $name $version from crates.io (compiled: a few minutes, once)" >&2
    cargo install --locked --version "$version" "$name" -j "${PACKAGE_JOBS:-2}" >&2
  fi
}
tool cargo-deb "$CARGO_DEB_VERSION"
tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
[ -z "$tools_only" ] || exit 0

if [ -z "$bin" ]; then
  cargo build --profile "$profile" --bin daemonset-agent >&2
  target=${CARGO_TARGET_DIR:-target}
  case "$profile" in dev | test) bin=$target/debug/daemonset-agent ;; *) bin=$target/$profile/daemonset-agent ;; esac
fi
[ -x "$bin" ] || { echo "$bin: no such executable" >&2; exit 1; }
mkdir -p target/package "$out"
strip --strip-all -o target/package/daemonset-agent "$bin"

deb_args=() rpm_args=()
[ -z "$fast" ] || { deb_args+=(--fast); rpm_args+=(--payload-compress gzip); } # lighter compression (tests)
if [ -n "$version" ]; then
  deb_args+=(--deb-version "$version-1")
  rpm_args+=(--set-metadata "version = \"$version\"")
fi
deb=$(cargo deb --no-build --no-strip --output "$out" "${deb_args[@]}" | tail -n1)
rpm=$(cargo generate-rpm --output "$out" "${rpm_args[@]}" | tail -n1)
# cargo-generate-rpm prints nothing: find what it wrote
[ -n "$rpm" ] || rpm=$(ls -t "$out"/*.rpm | head -n1)
echo "$deb"
echo "$rpm"
