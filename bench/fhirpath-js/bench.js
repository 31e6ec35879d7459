#!/usr/bin/env node
// The fhirpath.js side of the FHIRPath benchmark (run both engines with
// tools/bench-fhirpath.sh).
//
//   node bench.js run [suite|realistic|all] [--seconds S] [--warmup S]
//       Prints one JSON line per workload: evaluations per second, in the format the
//       Rust side (crates/fhirpath/examples/bench_suite.rs) prints.
//   node bench.js per-case [suite|realistic] [--seconds S]
//       One JSON line per case: nanoseconds per evaluation (for finding slow cases).
//   node bench.js select CANDIDATES.json
//       Writes cases.json: the candidate suite cases (from `bench_suite candidates`)
//       minus those fhirpath.js cannot compile or that throw when evaluated, with the
//       excluded ones and the reason listed, so both engines run the same list.
//
// Every expression is compiled once with fhirpath.compile(expr, r4model); an evaluation
// is one compiled expression applied to one input. Like the Rust EvalContext::new, an
// evaluation over a resource has %resource and %rootResource set to that resource; cases
// without an input file are evaluated over an empty collection.
'use strict';

const fs = require('fs');
const path = require('path');
const fhirpath = require('fhirpath');
const r4model = require('fhirpath/fhir-context/r4');

const BENCH_DIR = __dirname;
const SUITE_INPUTS = path.join(BENCH_DIR, '..', '..', 'tests', 'fixtures', 'fhirpath-r4', 'input');

// trace() would otherwise print to the console (the Rust engine discards trace output
// unless asked for it). Results are left as fhirpath.js's internal values
// (resolveInternalTypes: false), as the Rust engine returns borrowed items rather than
// converting them to JSON: this is the faster fhirpath.js setting, so the comparison
// does not flatter the Rust engine.
const OPTIONS = { traceFn: () => {}, resolveInternalTypes: false };

// fhirpath.js warns on the console for some cases (e.g. `@1973-12-25 + 7.7 days` warns
// that it truncated the quantity); writing thousands of those per second would measure
// the terminal, not the engine, and bury the results. Results go to process.stdout.
console.warn = () => {};
console.log = () => {};
const print = (line) => process.stdout.write(line + '\n');

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function loadSuite() {
  const list = readJson(path.join(BENCH_DIR, 'cases.json'));
  const inputs = new Map();
  const cases = list.cases.map((c) => {
    let input = [];
    if (c.input) {
      if (!inputs.has(c.input)) inputs.set(c.input, readJson(path.join(SUITE_INPUTS, c.input)));
      input = inputs.get(c.input);
    }
    return { name: c.name, ...compileCase(c.expression, input), input };
  });
  return { name: 'suite', cases };
}

function loadRealistic() {
  const spec = readJson(path.join(BENCH_DIR, 'realistic.json'));
  const bundle = spec.bundle;
  const resources = bundle.entry.map((e) => e.resource).filter(Boolean);
  const cases = [];
  for (const expr of spec.bundle_expressions) {
    cases.push({ name: expr, ...compileCase(expr, bundle), input: bundle });
  }
  for (const expr of spec.resource_expressions) {
    const { fn } = compileCase(expr, {});
    for (const r of resources) {
      const vars = USES_RESOURCE.test(expr) ? { resource: r, rootResource: r } : undefined;
      cases.push({ name: expr, fn, vars, input: r });
    }
  }
  return { name: 'realistic', cases };
}

// fhirpath.js needs %resource and %rootResource passed in (the Rust EvalContext::new
// sets both to the input). They are passed only to expressions that use them, so the
// other evaluations do not pay for fhirpath.js's handling of user variables.
const USES_RESOURCE = /%(resource|rootResource)\b/;

function compileCase(expression, input) {
  const fn = fhirpath.compile(expression, r4model, OPTIONS);
  const vars = USES_RESOURCE.test(expression) && !Array.isArray(input)
    ? { resource: input, rootResource: input }
    : undefined;
  return { fn, vars };
}

function evaluate(c) {
  return c.fn(c.input, c.vars);
}

// Evaluate every case once; returns [result items, errors] (a checksum that also keeps
// the work from being optimised away).
function round(w) {
  let items = 0;
  let errors = 0;
  for (const c of w.cases) {
    try {
      items += evaluate(c).length;
    } catch (e) {
      errors += 1;
    }
  }
  return [items, errors];
}

function measure(w, warmupSec, seconds) {
  let start = process.hrtime.bigint();
  const ns = (s) => BigInt(Math.round(s * 1e9));
  while (process.hrtime.bigint() - start < ns(warmupSec)) round(w);
  const [items, errors] = round(w);
  start = process.hrtime.bigint();
  let rounds = 0;
  while (process.hrtime.bigint() - start < ns(seconds)) {
    round(w);
    rounds += 1;
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  const evaluations = rounds * w.cases.length;
  return {
    engine: 'fhirpath.js',
    version: require('fhirpath/package.json').version,
    workload: w.name,
    cases: w.cases.length,
    rounds,
    evaluations,
    seconds: Math.round(elapsed * 1000) / 1000,
    evals_per_sec: Math.round(evaluations / elapsed),
    result_items_per_round: items,
    errors_per_round: errors,
  };
}

// One JSON line per case (grouped by name, as the realistic workload repeats each
// resource expression over every resource): nanoseconds per evaluation.
function perCase(args) {
  let which = 'suite';
  let seconds = 10;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--seconds') seconds = Number(args[++i]);
    else if (args[i] === 'suite' || args[i] === 'realistic') which = args[i];
    else throw new Error(`unknown argument ${args[i]}`);
  }
  const w = which === 'suite' ? loadSuite() : loadRealistic();
  const groups = [];
  for (const c of w.cases) {
    const last = groups[groups.length - 1];
    if (last && last.name === c.name) last.cases.push(c);
    else groups.push({ name: c.name, cases: [c] });
  }
  const perGroupNs = BigInt(Math.round((seconds * 1e9) / groups.length));
  // Warm the JIT over everything first, as run() does.
  for (let i = 0; i < 20; i++) round(w);
  for (const g of groups) {
    const evalAll = () => { for (const c of g.cases) { try { evaluate(c); } catch (e) { /* counted in run() */ } } };
    evalAll();
    const start = process.hrtime.bigint();
    let rounds = 0;
    while (process.hrtime.bigint() - start < perGroupNs) { evalAll(); rounds += 1; }
    const ns = Number(process.hrtime.bigint() - start) / (Math.max(rounds, 1) * g.cases.length);
    print(JSON.stringify({ name: g.name, evaluations: g.cases.length, ns_per_eval: Math.round(ns) }));
  }
}

function run(args) {
  let which = 'all';
  let seconds = 5;
  let warmup = 1;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--seconds') seconds = Number(args[++i]);
    else if (a === '--warmup') warmup = Number(args[++i]);
    else if (['suite', 'realistic', 'all'].includes(a)) which = a;
    else throw new Error(`unknown argument ${a}`);
  }
  const workloads = [];
  if (which !== 'realistic') workloads.push(loadSuite());
  if (which !== 'suite') workloads.push(loadRealistic());
  for (const w of workloads) print(JSON.stringify(measure(w, warmup, seconds)));
}

function select(candidatesFile) {
  const candidates = readJson(candidatesFile);
  const inputs = new Map();
  const cases = [];
  const excluded = [];
  for (const c of candidates.cases) {
    let input = [];
    if (c.input) {
      if (!inputs.has(c.input)) inputs.set(c.input, readJson(path.join(SUITE_INPUTS, c.input)));
      input = inputs.get(c.input);
    }
    let compiled;
    try {
      compiled = compileCase(c.expression, input);
    } catch (e) {
      excluded.push({ name: c.name, expression: c.expression, reason: `fhirpath.js cannot compile it: ${firstLine(e)}` });
      continue;
    }
    try {
      const out = evaluate({ ...compiled, input });
      if (out && typeof out.then === 'function') throw new Error('returned a Promise');
    } catch (e) {
      excluded.push({ name: c.name, expression: c.expression, reason: `fhirpath.js throws when evaluating it: ${firstLine(e)}` });
      continue;
    }
    cases.push(c);
  }
  const out = {
    about:
      'The HL7 FHIRPath R4 suite cases both engines are benchmarked on: the valid (not invalid) cases, ' +
      'minus those fhirpath.js cannot compile or that throw in fhirpath.js (listed in "excluded"). ' +
      'Regenerate with tools/bench-fhirpath.sh --regen.',
    fhirpath_js_version: require('fhirpath/package.json').version,
    suite_cases: candidates.suite_cases,
    invalid_cases: candidates.invalid_cases,
    candidates: candidates.cases.length,
    excluded_count: excluded.length,
    excluded,
    cases,
  };
  fs.writeFileSync(path.join(BENCH_DIR, 'cases.json'), JSON.stringify(out, null, 2) + '\n');
  process.stderr.write(`cases.json: ${cases.length} cases, ${excluded.length} of ${candidates.cases.length} candidates excluded\n`);
}

function firstLine(e) {
  return String((e && e.message) || e).split('\n')[0].slice(0, 200);
}

function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === 'run') run(rest);
  else if (cmd === 'per-case') perCase(rest);
  else if (cmd === 'select' && rest.length === 1) select(rest[0]);
  else {
    process.stderr.write('usage: node bench.js run [suite|realistic|all] [--seconds S] [--warmup S] | per-case [suite|realistic] [--seconds S] | select CANDIDATES.json\n');
    process.exit(2);
  }
}

main();
