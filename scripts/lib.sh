# Shared by scripts/*.sh, .ci/run and tests/packaging.sh (sourced, not run).

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# quiet_step MESSAGE CMD...: for long commands that print nothing useful (apt, pip, image builds).
# Prints MESSAGE, then every 15 s how long CMD has been running; CMD's output goes to a log, whose
# last 40 lines are shown when CMD fails. Returns CMD's status.
quiet_step() {
  local msg=$1 log t0=$SECONDS rc=0 pid i=0
  shift
  log=$(mktemp "${TMPDIR:-/tmp}/step.XXXXXX")
  echo "$msg ..." >&2
  "$@" >"$log" 2>&1 &
  pid=$!
  # (a progress ticker, not synchronisation: `wait` below is what waits)
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    i=$((i + 1))
    [ $((i % 15)) != 0 ] || echo "  ... $((SECONDS - t0)) s" >&2
  done
  wait "$pid" || rc=$?
  if [ "$rc" = 0 ]; then
    echo "  done in $((SECONDS - t0)) s" >&2
  else
    tail -n 40 "$log" >&2
    echo "  FAILED after $((SECONDS - t0)) s (exit status $rc): $*" >&2
  fi
  rm -f "$log"
  return "$rc"
}

# Test groups: `group NAME CMD...` runs CMD (a separate process: bash's errexit does not apply
# inside a function run as a condition, so groups are commands, never shell functions), records
# whether it passed and how long it took, and carries on whatever the result. `groups_summary`
# prints the table and fails when any group failed. Nested runs (scripts/test.sh under .ci/run)
# record into the outer run's file, so the outer summary lists every group once.
groups_begin() {
  if [ -z "${DSA_GROUPS_FILE:-}" ]; then
    DSA_GROUPS_FILE=$(mktemp "${TMPDIR:-/tmp}/groups.XXXXXX")
    export DSA_GROUPS_FILE
    groups_owner=1
  else
    groups_owner=""
  fi
  groups_failed=0
}

group() {
  local name=$1 t0=$SECONDS rc=0
  shift
  echo
  echo "== $name ($*)"
  "$@" || rc=$?
  if [ "$rc" = 0 ]; then
    printf 'ok      %6s s  %s\n' $((SECONDS - t0)) "$name" >>"$DSA_GROUPS_FILE"
  else
    printf 'FAILED  %6s s  %s (exit status %s)\n' $((SECONDS - t0)) "$name" "$rc" >>"$DSA_GROUPS_FILE"
    groups_failed=$((groups_failed + 1))
    echo "== $name FAILED (exit status $rc); carrying on with the other groups" >&2
  fi
}

groups_summary() {
  if [ -n "$groups_owner" ]; then
    echo
    echo "== summary"
    cat "$DSA_GROUPS_FILE"
    local failed
    failed=$(grep -c '^FAILED' "$DSA_GROUPS_FILE" || true)
    rm -f "$DSA_GROUPS_FILE"
    if [ "$failed" != 0 ]; then
      echo "$failed FAILED line(s) in the summary" >&2
      return 1
    fi
    echo "all groups passed"
  fi
  [ "$groups_failed" = 0 ]
}
