#!/usr/bin/env bash
# README command 2: install what is missing, build, install the npm reference
# packages the tests compare against (tests/npm/install.sh), and run every test
# (unit and integration) with ctest; then a bounded run of every fuzz target
# (tests/fuzz/run.sh, FUZZ_SECONDS each, default 20; FUZZ_SECONDS=0 skips
# it) and the tests against an ASan+UBSan+LSan build (tests/sanitizers.sh;
# SANITIZE=0 skips it). docs/hardening.md has both.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/build.sh
./tests/npm/install.sh
(cd "${BUILD_DIR:-build}" && ctest -j2 --output-on-failure --timeout 300)
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
  ./tests/fuzz/run.sh
fi
if [ "${SANITIZE:-1}" != 0 ]; then
  ./tests/sanitizers.sh
fi
