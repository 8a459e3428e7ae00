#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (fuzz/README.md says what each covers) and runs them.
# The build is what `cargo fuzz build` does, done here with cargo itself so that nothing has to be
# installed outside the checkout: the sanitizer-coverage instrumentation flags are stable rustc
# flags, so the toolchain of the main build serves (FUZZ_TOOLCHAIN=nightly picks another one,
# installing it with rustup when missing); libFuzzer itself is C++, built with g++ (installed
# with apt-get when missing). Nothing is skipped: a missing tool is installed or the script fails.
#
#   scripts/fuzz.sh --smoke [TARGET...]       # a few seconds per target, fails on any crash
#   scripts/fuzz.sh --seconds N [TARGET...]   # N seconds per target, one after the other (default 600)
#   scripts/fuzz.sh --build-only              # build the targets, run nothing
#   scripts/fuzz.sh --list                    # the targets
#
# The seeds are fuzz/corpus/TARGET (checked in, never written by a run); a long run grows its
# corpus in fuzz/work/corpus/TARGET and keeps it for the next run, the smoke run starts from the
# seeds in a temporary directory. A crash, timeout or out-of-memory input is written to
# fuzz/artifacts/TARGET/ and the script exits 1 after the remaining targets ran; replay one with
# `BIN fuzz/artifacts/TARGET/crash-...` (BIN is printed). Environment: FUZZ_ARGS (more libFuzzer
# flags, e.g. "-max_len=65536"), FUZZ_SANITIZER (none by default: the targets are safe Rust;
# "address" rebuilds everything with ASan, through RUSTC_BOOTSTRAP=1 on a stable toolchain),
# FUZZ_TOOLCHAIN, CARGO_TARGET_DIR (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."
# The targets, one per parser of untrusted input.
# (src/fuzzing.rs has their bodies; its test checks that this list names each of them.)
TARGETS=(manifests patch quantity selectors eligibility reference server agent_config kubeconfig join_token)
SMOKE_SECONDS=5

mode=long seconds=600 targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) mode=smoke; seconds=$SMOKE_SECONDS; shift ;;
    --seconds) seconds=$2; shift 2 ;;
    --build-only) mode=build; shift ;;
    --list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "usage: $0 [--smoke | --seconds N | --build-only | --list] [TARGET...]" >&2; exit 64 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
for t in "${targets[@]}"; do
  printf '%s\n' "${TARGETS[@]}" | grep -qx -- "$t" || { echo "unknown target $t (--list)" >&2; exit 64; }
done
case "$seconds" in '' | *[!0-9]*) echo "--seconds wants a number, not $seconds" >&2; exit 64 ;; esac

# The toolchain: the main build's unless FUZZ_TOOLCHAIN names one (installed when missing).
cargo=(cargo)
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  if ! rustup run "$FUZZ_TOOLCHAIN" rustc -V >/dev/null 2>&1; then
    echo "installing the $FUZZ_TOOLCHAIN toolchain" >&2
    rustup toolchain install "$FUZZ_TOOLCHAIN" --profile minimal >&2
  fi
  cargo=(cargo "+$FUZZ_TOOLCHAIN")
fi
if ! command -v g++ >/dev/null; then
  echo "installing g++ (libFuzzer is C++)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends g++; } >&2 || { echo "fuzz.sh: libFuzzer needs g++" >&2; exit 1; }
fi

# cargo-fuzz 0.13's flags for `cargo fuzz build --sanitizer none` on Linux: sanitizer-coverage
# feeding libFuzzer (8-bit counters, PC table, compares, stack depth), `--cfg fuzzing`, debug
# assertions (integer overflow panics), no branch folding. 16 codegen units instead of its one: the
# dependency tree (k8s-openapi, kube, hyper) would take several times longer to build, for a few
# percent of speed.
sanitizer=${FUZZ_SANITIZER:-none}
rustflags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
rustflags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
rustflags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
rustflags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
rustflags+=" -Cllvm-args=-sanitizer-coverage-stack-depth"
rustflags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
rustflags+=" --cfg fuzzing -Cdebug-assertions -Ccodegen-units=16"
if [ "$sanitizer" != none ]; then
  rustflags+=" -Zsanitizer=$sanitizer"
  export RUSTC_BOOTSTRAP=1 # -Z flags on a stable toolchain
fi
target_dir=${CARGO_TARGET_DIR:-$PWD/fuzz/target}
triple=$(rustc -vV | sed -n 's/^host: //p')
echo "building the fuzz targets with $("${cargo[@]}" --version) for $triple into $target_dir" >&2
build_start=$(date +%s)
# --target: the flags then reach the targets and their dependencies but not build scripts and
# proc macros. Line tables only, as cargo-fuzz builds (backtraces of a crash keep their lines).
RUSTFLAGS="$rustflags ${RUSTFLAGS:-}" "${cargo[@]}" build --manifest-path fuzz/Cargo.toml \
  --release --config 'profile.release.debug="line-tables-only"' --bins \
  --target "$triple" --target-dir "$target_dir" >&2
echo "built ${#TARGETS[@]} fuzz targets in $(( $(date +%s) - build_start ))s" >&2
[ "$mode" != build ] || exit 0
bin_dir=$target_dir/$triple/release

work=fuzz/work
if [ "$mode" = smoke ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

failed=() summary=()
for t in "${targets[@]}"; do
  corpus=$work/corpus/$t artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  log=$work/$t.log
  dict=()
  [ ! -f "fuzz/dict/$t.dict" ] || dict=("-dict=fuzz/dict/$t.dict")
  echo "== fuzz $t for ${seconds}s" >&2
  start=$(date +%s)
  status=0
  # -timeout: one input running 10 s is a hang; -rss_limit_mb: 2 GiB is an out-of-memory bug.
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  "$bin_dir/$t" "$corpus" "fuzz/corpus/$t" "${dict[@]}" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  elapsed=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  # without the final stats (killed, or a crash): the last progress line's count
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -n1 | tr -d '#')
  files=$(find "$corpus" -type f | wc -l)
  line=$(printf '%-13s %10s execs %5ss %6s exec/s  corpus %5s' "$t" "${execs:-?}" "$elapsed" \
    "$(( ${execs:-0} / (elapsed > 0 ? elapsed : 1) ))" "$files")
  if [ "$status" -ne 0 ]; then
    line="$line  FAILED (exit $status)"
    failed+=("$t")
    grep -E '^(==[0-9]+== ERROR|SUMMARY|thread .* panicked)|^artifact_prefix|Test unit written' "$log" >&2 || tail -n 30 "$log" >&2
    echo "replay: $bin_dir/$t $artifacts/<file>   (full log: $log)" >&2
    [ "$mode" != smoke ] || cp "$log" "$artifacts/smoke.log"
  fi
  echo "$line" >&2
  summary+=("$line")
done

echo >&2
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
