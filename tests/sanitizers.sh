#!/usr/bin/env bash
# Runs the tests against a build with AddressSanitizer, UndefinedBehavior-
# Sanitizer and LeakSanitizer (gcc, -DINFERMESH_SANITIZE=ON, every report
# fatal) in build-asan/. Part of README command 2 (tests/run.sh), after the
# normal build:
#  - the unit tests, built with the sanitizers;
#  - the integration tests of the normal build ($BUILD_DIR, default build/),
#    pointed by INFERMESH_TEST_BIN_DIR at the sanitized proxy, control
#    plane, infermeshctl and mock servers: the processes under test run
#    sanitized, the test driver itself does not (building a second copy of
#    it costs minutes and checks only test code).
# Every sanitized process, test binary or child, writes its reports to
# build-asan/sanitizer-reports/; any report fails the run, even one from a
# child whose test passed. A child killed with SIGKILL gets no leak check;
# one that exits (drain on SIGTERM) does.
#
#   SANITIZE_TESTS=unit    the unit tests only
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
build="${SANITIZE_BUILD_DIR:-build-asan}"
normal="${BUILD_DIR:-build}"
which="${SANITIZE_TESTS:-all}"
# The unit tests read what tests/npm/install.sh wrote for the normal build.
case "$normal" in
  /*) npm_dir="$normal/npm" ;;
  *) npm_dir="$root/$normal/npm" ;;
esac
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/infermesh-ccache}"
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
# -O1 -g1 (line tables): what ASan recommends, and half the compile time of
# -O2 -g for the same reports with file and line.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  -DINFERMESH_SANITIZE=ON -DINFERMESH_BENCH=OFF -DINFERMESH_NPM_DIR="$npm_dir" >/dev/null
targets=(infermesh_unit_tests)
if [ "$which" != unit ]; then
  targets+=(infermesh-proxy infermesh-proxy-test-filters infermesh-control infermeshctl infermesh-mock-model
    infermesh-mock-grpc-model)
fi
cmake --build "$build" -j"${JOBS:-2}" --target "${targets[@]}"

reports="$PWD/$build/sanitizer-reports"
rm -rf "$reports"
mkdir -p "$reports"
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$reports/asan${ASAN_EXTRA_OPTIONS:+:$ASAN_EXTRA_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
rc=0
(cd "$build" && ctest -j2 --output-on-failure --timeout 300 -L unit) || rc=$?
if [ "$which" != unit ]; then
  (cd "$normal" && INFERMESH_TEST_BIN_DIR="$root/$build" ctest -j2 --output-on-failure --timeout 300 -L integration) || rc=$?
fi
if [ -n "$(ls -A "$reports")" ]; then
  echo "sanitizers: reports in $reports:" >&2
  for f in "$reports"/*; do
    echo "== $f" >&2
    head -60 "$f" >&2
  done
  exit 1
fi
exit $rc
