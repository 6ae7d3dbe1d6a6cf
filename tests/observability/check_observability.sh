#!/usr/bin/env bash
# Checks deploy/observability/: the Prometheus rules load and their unit
# tests pass, the federation configs are valid, every dashboard query
# parses, and every metric they name still exists in the docs or the
# sources (so a renamed metric breaks this test, not a dashboard in
# production).
#
#   tests/observability/check_observability.sh [SOURCE_DIR]
#
# Needs promtool (Debian package prometheus, deploy/install-deps.sh) and
# python3. PROMTOOL may name the binary.
set -u

src="${1:-$(cd "$(dirname "$0")/../.." && pwd)}"
obs="$src/deploy/observability"
prom="$obs/prometheus"
fed="$prom/federation"
dashboard="$obs/grafana/infermesh-genai.json"

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

promtool="${PROMTOOL:-}"
if [ -z "$promtool" ] || [ ! -x "$promtool" ]; then promtool="$(command -v promtool || true)"; fi
if [ -z "$promtool" ]; then
  echo "FAIL: promtool not found; install the prometheus package (deploy/install-deps.sh does)" >&2
  exit 1
fi
if ! command -v python3 >/dev/null; then
  echo "FAIL: python3 not found" >&2
  exit 1
fi
for f in "$prom/rules.yml" "$prom/rules_test.yml" "$fed/edge.yml" "$fed/regional.yml" "$fed/central.yml" \
  "$fed/central-rules.yml" "$dashboard"; do
  [ -f "$f" ] || { echo "FAIL: $f is missing" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Runs a promtool command quietly; its output only when it fails.
run() {
  local what="$1"
  shift
  if ! "$@" >"$tmp/out" 2>&1; then
    cat "$tmp/out" >&2
    fail "$what"
  fi
}

# (a) rules and their unit tests. promtool test resolves rule_files
# relative to the test file.
run "promtool check rules" "$promtool" check rules "$prom/rules.yml" "$fed/central-rules.yml"
run "promtool test rules" "$promtool" test rules "$prom/rules_test.yml"

# (b) the federation tiers; check config also checks the rule files they load.
for f in edge regional central; do
  run "promtool check config $f.yml" "$promtool" check config "$fed/$f.yml"
done

# (c) and (d): the dashboard's queries and every metric name.
if ! PROMTOOL_BIN="$promtool" python3 - "$src" "$dashboard" "$tmp" "$prom/rules.yml" "$fed/central-rules.yml" <<'PY'; then
import json, os, re, subprocess, sys

src, dashboard, tmp = sys.argv[1:4]
rule_files = sys.argv[4:]
errors = []

try:
    with open(dashboard) as f:
        dash = json.load(f)
except (OSError, ValueError) as e:
    print(f"FAIL: {dashboard}: not valid JSON: {e}", file=sys.stderr)
    sys.exit(1)

variables = dash.get("templating", {}).get("list", [])
if not any(v.get("type") == "datasource" and v.get("query") == "prometheus" for v in variables):
    errors.append("dashboard: no datasource variable of type prometheus")

# What Grafana would put in place of each variable; the values only need
# to make the query parse.
values = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
          "__range_ms": "3600000", "__interval_ms": "60000"}
for v in variables:
    values.setdefault(v["name"], v.get("allValue") or ".*")

def substitute(expr, where):
    def one(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            errors.append(f"{where}: unknown variable ${name}")
            return m.group(0)
        return values[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)

def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))

queries = []  # (where, expr)
for p in walk(dash.get("panels", [])):
    for t in p.get("targets", []):
        expr = t.get("expr", "").strip()
        if not expr:
            errors.append(f"panel {p.get('id')} \"{p.get('title')}\" target {t.get('refId')}: no expr")
            continue
        queries.append((f"panel {p.get('id')} \"{p.get('title')}\" target {t.get('refId')}", expr))
for v in variables:
    if v.get("type") != "query":
        continue
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q, re.S)
    if not m:
        errors.append(f"variable {v['name']}: not label_values(selector, label): {q}")
        continue
    queries.append((f"variable {v['name']}", m.group(1)))
if not queries:
    errors.append("dashboard: no queries found")

# Each query as a recording rule, so promtool parses it as Prometheus would.
legend = []
with open(os.path.join(tmp, "dashboard_rules.yml"), "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (where, expr) in enumerate(queries):
        record = f"dashboard:query_{i}"
        legend.append(f"  {record}: {where}: {expr}")
        f.write(f"      - record: {record}\n        expr: {json.dumps(substitute(expr, where))}\n")
check = subprocess.run([os.environ["PROMTOOL_BIN"], "check", "rules", os.path.join(tmp, "dashboard_rules.yml")],
                       capture_output=True, text=True)
if check.returncode != 0:
    print(check.stdout + check.stderr, file=sys.stderr)
    print("dashboard queries by record name:\n" + "\n".join(legend), file=sys.stderr)
    errors.append("dashboard: a query does not parse (promtool check rules, above)")

# (d) Metric and label names. Raw names must appear in the docs or the
# sources; recorded names (level:metric:operation) must be recorded by a
# rule file here.
raw_name = re.compile(r"(?<![\w:])((?:infermesh|gen_ai)_[a-z0-9_]+)(?![\w:])")
recorded_name = re.compile(r"(?<![\w:])(infermesh(?:_[a-z0-9]+)*:[a-z0-9_]+(?::[a-z0-9_]+)*)")

recorded = set()
used = {}  # name -> where
for where, expr in queries:
    for n in raw_name.findall(expr) + recorded_name.findall(expr):
        used.setdefault(n, "dashboard " + where)
for path in rule_files:
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.lstrip().startswith("#"):
                continue
            m = re.match(r"\s*-\s*record:\s*(\S+)", line)
            if m:
                recorded.add(m.group(1))
                continue
            for n in raw_name.findall(line) + recorded_name.findall(line):
                used.setdefault(n, f"{os.path.relpath(path, src)}:{lineno}")

docs = [os.path.join(src, "docs", d) for d in ("observability.md", "rate-limits.md", "operations.md", "control-plane.md")]
text = []
for d in docs:
    with open(d) as f:
        text.append(f.read())
for top in ("proxy", "filters", "controlplane", "xds"):
    for root, _, files in os.walk(os.path.join(src, top)):
        for name in files:
            if name.endswith((".cc", ".h")):
                with open(os.path.join(root, name), errors="replace") as f:
                    text.append(f.read())
known = set(raw_name.findall("\n".join(text)))

for n, where in sorted(used.items()):
    if ":" in n:
        if n not in recorded:
            errors.append(f"{where}: {n} is no recording rule of {', '.join(os.path.basename(p) for p in rule_files)}")
        continue
    base = re.sub(r"_(bucket|count|sum)$", "", n)
    if n not in known and base not in known:
        errors.append(f"{where}: metric or label {n} is not in docs/ ({', '.join(os.path.basename(d) for d in docs)}) "
                      "nor in the sources (proxy, filters, controlplane, xds)")

# Label names in by/on lists and matchers: a label the proxy declares is
# a quoted string in the sources, and the docs name it in backticks.
# Prometheus's own labels and the federation tiers' are not ours.
label_list = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
matcher = re.compile(r"[{,]\s*([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
not_ours = {"le", "job", "instance", "__name__", "alertname", "alertstate", "site", "region"}
labels = {}
def find_labels(text, where):
    for group in label_list.findall(text):
        for l in filter(None, (x.strip() for x in group.split(","))):
            labels.setdefault(l, where)
    for l in matcher.findall(text):
        labels.setdefault(l, where)
for where, expr in queries:
    find_labels(expr, "dashboard " + where)
for path in rule_files:
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.lstrip().startswith("#"):
                find_labels(line, f"{os.path.relpath(path, src)}:{lineno}")
corpus = "\n".join(text)
known_labels = set(re.findall(r"\"(\w+)\"", corpus)) | set(re.findall(r"`(\w+)`", corpus))
for l, where in sorted(labels.items()):
    if l not in not_ours and l not in known_labels:
        errors.append(f"{where}: label {l} is not in docs/ nor in the sources")

for e in errors:
    print("FAIL: " + e, file=sys.stderr)
if errors:
    sys.exit(1)
print(f"dashboard: {len(queries)} queries parse; {len(used)} metric and recorded names, "
      f"{len(labels)} label names found")
PY
  fail "dashboard queries or metric names"
fi

if [ "$failures" -ne 0 ]; then
  echo "check_observability: $failures check(s) failed" >&2
  exit 1
fi
echo "check_observability: all checks passed"
