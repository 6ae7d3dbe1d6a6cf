#!/usr/bin/env bash
# README command 2: install what is missing, build, and run every test
# (unit and integration) with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/build.sh
cd "${BUILD_DIR:-build}"
ctest -j2 --output-on-failure --timeout 300
