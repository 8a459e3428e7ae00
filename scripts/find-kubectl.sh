#!/usr/bin/env bash
# Prints the path of a kubectl this project can use, or says what to install and fails.
#
#   scripts/find-kubectl.sh          # `kubectl` on the PATH, 1.27 or newer
#   scripts/find-kubectl.sh 1.29     # `kubectl.1.29` on the PATH or beside the kubectl on the PATH
#                                    # (Google's packaging puts kubectl.1.27 ... kubectl.1.33 there)
#
# The one place that knows the minimum kubectl: scripts/install-deps.sh, scripts/test.sh,
# scripts/quickstart.sh, tests/packaging.sh and the Rust tests (tests/common) all ask it. Debian's
# own kubernetes-client package is 1.20, so being on the PATH is not enough: the version is checked.
set -euo pipefail
MIN_MINOR=27

install_help() {
  cat >&2 <<'EOF'
kubectl is not part of Debian 12 in a usable version (Debian's kubernetes-client is 1.20; remove it
with `apt-get remove kubernetes-client`). Install kubectl 1.27 or newer from the Kubernetes project,
either from its apt repository pkgs.k8s.io:
    curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.32/deb/Release.key -o /etc/apt/keyrings/kubernetes.asc
    echo 'deb [signed-by=/etc/apt/keyrings/kubernetes.asc] https://pkgs.k8s.io/core:/stable:/v1.32/deb/ /' \
      > /etc/apt/sources.list.d/kubernetes.list
    apt-get update && apt-get install -y kubectl
or as the released binary:
    curl -fLo /usr/local/bin/kubectl https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl
    chmod 755 /usr/local/bin/kubectl
(both described at https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/)
EOF
}

# "MAJOR MINOR" of the kubectl at $1 (client only: no server is asked)
version_of() {
  "$1" version --client -o json 2>/dev/null | grep -o '"m[ajin]*or": *"[0-9]*' | grep -o '[0-9]*$' |
    head -n2 | tr '\n' ' '
}

kubectl=$(command -v kubectl || true)
if [ -z "$kubectl" ]; then
  echo "kubectl is not on the PATH ($PATH)." >&2
  install_help
  exit 1
fi
read -r major minor <<<"$(version_of "$kubectl")" || true
if [ "${major:-}" != 1 ] || [ "${minor:-0}" -lt "$MIN_MINOR" ]; then
  echo "$kubectl is kubectl ${major:-?}.${minor:-?}: daemonset-agent needs 1.$MIN_MINOR or newer." >&2
  install_help
  exit 1
fi

release=${1:-}
if [ -z "$release" ]; then
  echo "$kubectl"
  exit 0
fi
name=kubectl.$release
found=$(command -v "$name" || true)
beside=$(dirname "$(readlink -f "$kubectl")")/$name
[ -n "$found" ] || { [ -x "$beside" ] && found=$beside; } || true
if [ -z "$found" ]; then
  echo "$name is neither on the PATH nor beside $(readlink -f "$kubectl")." >&2
  exit 1
fi
read -r major minor <<<"$(version_of "$found")" || true
[ "${major:-}.${minor:-}" = "$release" ] || {
  echo "$found is kubectl ${major:-?}.${minor:-?}, not $release" >&2
  exit 1
}
echo "$found"
