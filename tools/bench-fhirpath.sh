#!/usr/bin/env bash
# Benchmark the FHIRPath engine (crates/fhirpath) against fhirpath.js, side by side, on
# this machine, in one run:
#
#   tools/bench-fhirpath.sh [--seconds S] [--reps N] [--regen]
#
# Two workloads, the same for both engines (files in bench/fhirpath-js/):
#   suite      the valid cases of the HL7 FHIRPath R4 suite (cases.json), each over its
#              suite input file;
#   realistic  realistic expressions over a generated Bundle of a Patient and 100
#              Observations (realistic.json): some evaluated once over the Bundle, some
#              over every resource in it.
# Every expression is compiled once; an evaluation is one compiled expression over one
# input. Each engine evaluates whole rounds of its workload for S seconds (default 5)
# after a 1 s warm-up; the two engines take turns N times (default 3) and the best run of
# each is reported, so a burst of other load on the machine does not decide the ratio.
#
# It installs fhirpath.js if missing (npm ci in bench/fhirpath-js: fhirpath 5.1.1, as
# pinned by package-lock.json), builds the Rust side in release
# (crates/fhirpath/examples/bench_suite.rs) and prints cases, evaluations per second of
# both engines, and their ratio. --regen first regenerates cases.json (the suite's valid
# cases minus those fhirpath.js cannot compile or run) and realistic.json.
#
# Needs cargo, node and npm. The same figures, per engine, come from
#   cargo run --release -p vigil-fhirpath --example bench_suite -- run
#   node bench/fhirpath-js/bench.js run
# and a criterion bench of the same workloads from
#   cargo bench -p vigil-fhirpath --bench fhirpath
set -euo pipefail

seconds=5
reps=3
regen=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --reps) reps="$2"; shift 2 ;;
        --regen) regen=1; shift ;;
        -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-fhirpath: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

tmp=""
results=""
trap 'rm -f ${tmp:+"$tmp"} ${results:+"$results"}' EXIT

root="$(cd "$(dirname "$0")/.." && pwd)"
js="$root/bench/fhirpath-js"
cd "$root"

for tool in cargo node npm; do
    command -v "$tool" >/dev/null || { echo "bench-fhirpath: $tool is needed" >&2; exit 1; }
done

# fhirpath.js, exactly as locked (its only install script sets up a demo that the
# package does not ship, so scripts are skipped).
installed="$(node -p "try { require('$js/node_modules/fhirpath/package.json').version } catch (e) { '' }")"
if [ "$installed" != "5.1.1" ]; then
    echo "bench-fhirpath: installing fhirpath.js (npm ci in bench/fhirpath-js)" >&2
    (cd "$js" && npm ci --ignore-scripts --no-audit --no-fund >&2)
fi

echo "bench-fhirpath: building the Rust side (release)" >&2
cargo build --release -q -p vigil-fhirpath --example bench_suite >&2
rust_bin="$root/target/release/examples/bench_suite"

if [ "$regen" = 1 ]; then
    tmp="$(mktemp)"
    "$rust_bin" candidates >"$tmp"
    (cd "$js" && node bench.js select "$tmp")
    "$rust_bin" realistic >"$js/realistic.json"
fi

results="$(mktemp)"
for rep in $(seq 1 "$reps"); do
    echo "bench-fhirpath: run $rep of $reps (${seconds} s per workload and engine)" >&2
    "$rust_bin" run all --seconds "$seconds" | tee -a "$results" >&2
    (cd "$js" && node bench.js run all --seconds "$seconds") | tee -a "$results" >&2
done

node - "$results" "$seconds" "$reps" <<'EOF'
const fs = require('fs');
const [file, seconds, reps] = process.argv.slice(2);
const runs = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const best = (engine, workload) => runs
  .filter((r) => r.engine === engine && r.workload === workload)
  .reduce((a, r) => (!a || r.evals_per_sec > a.evals_per_sec ? r : a), null);
const fmt = (n) => Math.round(n).toLocaleString('en-US');
const jsVersion = (runs.find((r) => r.engine === 'fhirpath.js') || {}).version;
console.log(`FHIRPath: vigil-fhirpath (release) vs fhirpath.js ${jsVersion} (node ${process.version}), ` +
  `best of ${reps} runs of ${seconds} s, ${require('os').cpus().length} cores`);
const rows = [['workload', 'cases', 'vigil-fhirpath evals/s', 'fhirpath.js evals/s', 'ratio']];
const summary = {};
for (const w of ['suite', 'realistic']) {
  const r = best('vigil-fhirpath', w);
  const j = best('fhirpath.js', w);
  if (!r || !j) continue;
  const ratio = r.evals_per_sec / j.evals_per_sec;
  summary[w] = { cases: r.cases, rust_evals_per_sec: r.evals_per_sec, js_evals_per_sec: j.evals_per_sec, ratio: Math.round(ratio * 10) / 10 };
  rows.push([w, String(r.cases), fmt(r.evals_per_sec), fmt(j.evals_per_sec), ratio.toFixed(1) + 'x']);
}
const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
for (const row of rows) {
  console.log(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
}
console.log(JSON.stringify(summary));
EOF
