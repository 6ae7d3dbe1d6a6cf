#!/usr/bin/env bash
# Installs the npm packages the tests compare against (tests/npm/package.json,
# exact versions, package-lock.json) into ${BUILD_DIR:-build}/npm -- never
# into the source tree -- and writes from them what the tests read:
#   build/npm/ranks/{cl100k_base,o200k_base}.tiktoken   (export_ranks.mjs)
#   build/npm/reference/{cl100k_base,o200k_base}{,.random}.jsonl
#     (reference_counts.mjs: js-tiktoken's token ids for each text of
#     tests/data/tokenizer_corpus.jsonl, and for 5000 random texts)
#   build/npm/openai_stream.mjs (the OpenAI SDK against a stream a limit
#     finished, run by tests/integration/ratelimit_test.cc)
# Idempotent: it installs again only when package.json or the lock file
# changed, and rewrites an output only when what it is made from is newer.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=tests/npm
BUILD_DIR="${BUILD_DIR:-build}"
npm_dir="$BUILD_DIR/npm"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "tests/npm/install.sh: node and npm are needed (deploy/install-deps.sh installs them)" >&2
  exit 1
fi

mkdir -p "$npm_dir"
stamp="$npm_dir/.installed"
want="$( (cat "$src/package.json"; cat "$src/package-lock.json" 2>/dev/null || true) | sha256sum | cut -d' ' -f1)"
if [ ! -d "$npm_dir/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  cp "$src/package.json" "$npm_dir/package.json"
  if [ -f "$src/package-lock.json" ]; then
    cp "$src/package-lock.json" "$npm_dir/package-lock.json"
    (cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$npm_dir" && npm install --no-audit --no-fund --loglevel=error)
    echo "tests/npm/install.sh: no tests/npm/package-lock.json; npm wrote $npm_dir/package-lock.json (commit it)" >&2
  fi
  echo "$want" >"$stamp"
  # New packages: make every output again.
  rm -rf "$npm_dir/ranks" "$npm_dir/reference"
fi

stale() {  # stale <output> <input>...: the output is missing or older than an input
  local out="$1"
  shift
  [ -f "$out" ] || return 0
  for in in "$@"; do
    [ "$in" -nt "$out" ] && return 0
  done
  return 1
}

for encoding in cl100k_base o200k_base; do
  if stale "$npm_dir/ranks/$encoding.tiktoken" "$src/export_ranks.mjs"; then
    node "$src/export_ranks.mjs" "$npm_dir" "$npm_dir/ranks"
    break
  fi
done
corpus=tests/data/tokenizer_corpus.jsonl
for out in {cl100k_base,o200k_base}.jsonl {cl100k_base,o200k_base}.random.jsonl; do
  if stale "$npm_dir/reference/$out" "$src/reference_counts.mjs" "$corpus"; then
    node "$src/reference_counts.mjs" "$npm_dir" "$corpus" "$npm_dir/reference"
    break
  fi
done
# Scripts the integration tests run with node import their packages from
# here, so they live beside node_modules.
cp "$src/openai_stream.mjs" "$npm_dir/"
