#!/usr/bin/env bash
# What tests and benchmarks must not leave on the machine, one "KIND WHAT" per line:
#   mount      a mount under /tmp/dsa-* (pods' network namespaces, rootfs)
#   dir        a /tmp/dsa-* directory
#   cgroup     a cgroup of a test namespace: /sys/fs/cgroup/*/daemonset-agent/{ns-*,dsa-test*,dsab*}
#   runc       runc state of a test namespace: /run/containerd/runc/{ns-*,dsa-test*,dsab*}[/ID]
#   process    a process naming /tmp/dsa-* (containerd, shims, registries, servers, agents, ...)
#   ipam       a host-local address reservation (/var/lib/cni/networks/*/IP) of a pod whose network
#              namespace is mounted nowhere (its CNI DEL never ran)
#
#   scripts/leftovers.sh                # list them
#   scripts/leftovers.sh --since FILE   # fail, with counts by kind, on any not listed in FILE (an
#                                       # earlier listing: what an earlier run left is only reported)
# The test namespaces are those of tests/ (ns-NODE, dsa-test-*) and bench/ (dsabPID-*); the
# production namespace (daemonset-agent) is never counted: a real agent or the quickstart may run.
set -euo pipefail
pat=/tmp/dsa-

list() {
  local p cmd d
  awk -v p="$pat" 'index($5, p) == 1 {print "mount " $5}' /proc/self/mountinfo
  for d in "$pat"*; do [ -d "$d" ] && echo "dir $d"; done
  for d in /sys/fs/cgroup/*/daemonset-agent/{ns-*,dsa-test*,dsab*}; do
    [ -d "$d" ] && find "$d" -type d | sed 's/^/cgroup /'
  done
  for d in /run/containerd/runc/{ns-*,dsa-test*,dsab*}; do
    [ -e "$d" ] && find "$d" -maxdepth 1 | sed 's/^/runc /'
  done
  local mounted e id
  # the pods' network namespaces mounted anywhere (their reservations are in use)
  mounted=$(awk 'index($5, "/netns/") {n = split($5, p, "/"); print p[n]}' /proc/self/mountinfo | sort -u)
  for e in /var/lib/cni/networks/*/*; do
    [ -f "$e" ] || continue
    case ${e##*/} in last_reserved_ip* | lock) continue ;; esac
    # host-local writes "ID\r\nIFNAME"
    id=$(head -n1 "$e" 2>/dev/null | tr -d '\r') || continue
    grep -qxF -- "$id" <<<"$mounted" || echo "ipam $e $id"
  done
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    cmd=$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
    case $cmd in *"$pat"*) echo "process ${p#/proc/} ${cmd:0:160}" ;; esac
  done
  return 0
}

case "${1:-}" in
  "") list ;;
  --since)
    earlier=${2:?--since needs a file}
    now=$(list | sort)
    new=$(comm -13 <(sort "$earlier") <(echo "$now") | sed '/^$/d')
    old=$(comm -12 <(sort "$earlier") <(echo "$now") | sed '/^$/d')
    [ -z "$old" ] || echo "leftovers.sh: $(wc -l <<<"$old") leftover(s) were there before this run (not counted)" >&2
    if [ -z "$new" ]; then
      echo "nothing left behind"
      exit 0
    fi
    echo "LEFT BEHIND by this run:"
    awk '{print $1}' <<<"$new" | sort | uniq -c | sed 's/^/  /'
    head -n 40 <<<"$new" | sed 's/^/  /'
    exit 1
    ;;
  *) echo "usage: $0 [--since FILE]" >&2; exit 64 ;;
esac
