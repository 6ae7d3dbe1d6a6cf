#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang, ASan+UBSan) in their own
# build directory and runs each for FUZZ_SECONDS (default 20) from its seed
# corpus. Fails when any target crashes, leaks, trips a sanitizer or a
# property check, or times out on an input. Part of README command 2.
#
#   FUZZ_SECONDS=300 tests/fuzz/run.sh            # a longer run
#   FUZZ_TARGETS="yaml_config_fuzz" tests/fuzz/run.sh
#
# Inputs found are kept in $FUZZ_BUILD_DIR/fuzz-corpus/<target> (the next
# run starts from them); crashing inputs go to $FUZZ_BUILD_DIR/fuzz-artifacts.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/infermesh-ccache}"
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
build="${FUZZ_BUILD_DIR:-build-fuzz}"
seconds="${FUZZ_SECONDS:-20}"
all=(model_extractor_fuzz grpc_message_fuzz orca_load_report_fuzz path_normalizer_fuzz spiffe_id_fuzz
  json_string_fuzz yaml_config_fuzz xds_response_fuzz http1_request_fuzz jwt_fuzz trace_context_fuzz
  response_events_fuzz)
read -r -a targets <<<"${FUZZ_TARGETS:-${all[*]}}"

CXX="${FUZZ_CXX:-clang++-14}" cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DINFERMESH_FUZZ=ON -DINFERMESH_TESTS=OFF -DINFERMESH_BENCH=OFF >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target infermesh_fuzzers

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"
failed=()
for t in "${targets[@]}"; do
  work="$build/fuzz-corpus/$t"
  mkdir -p "$work"
  seeds=()
  if [ -d "tests/fuzz/corpus/$t" ]; then seeds=("tests/fuzz/corpus/$t"); fi
  # These two write seeds that need code (protobuf, signatures) to build.
  if [ "$t" = xds_response_fuzz ] || [ "$t" = jwt_fuzz ]; then INFERMESH_FUZZ_WRITE_SEEDS="$work" "$build/fuzz/$t"; fi
  dict=()
  if [ -f "tests/fuzz/$t.dict" ]; then dict=(-dict="tests/fuzz/$t.dict"); fi
  log="$build/fuzz-logs/$t.log"
  rc=0
  "$build/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$build/fuzz-artifacts/$t-" "$work" "${seeds[@]}" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
  printf 'fuzz: %-22s %-6s %10s execs %8s/s  %5s inputs  %s\n' "$t" "$([ $rc -eq 0 ] && echo ok || echo FAILED)" \
    "${execs:-?}" "${rate:-?}" "$(ls "$work" | wc -l)" "$cov"
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    grep -E 'ERROR|SUMMARY|property failed|runtime error|Test unit written' "$log" | head -20 || true
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: failures in ${failed[*]} (logs in $build/fuzz-logs, inputs in $build/fuzz-artifacts)" >&2
  exit 1
fi
