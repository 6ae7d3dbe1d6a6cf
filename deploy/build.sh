#!/usr/bin/env bash
# Installs missing Debian packages, then configures and builds everything
# into build/ (or $BUILD_DIR) with Ninja, two jobs and ccache.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
# The compiler cache lives outside the tree so clean clones reuse it.
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/infermesh-ccache}"
# Paths relative to the checkout, so another clone (CI) hits the same cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
BUILD_DIR="${BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"${JOBS:-2}"
