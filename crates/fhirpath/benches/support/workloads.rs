//! The benchmark workloads shared by the criterion bench (`benches/fhirpath.rs`) and the
//! side-by-side runner (`examples/bench_suite.rs`), so both measure exactly what
//! `bench/fhirpath-js/bench.js` measures for fhirpath.js.
//!
//! Both workloads are read from files in `bench/fhirpath-js/` that both engines share:
//! - `cases.json`: the valid cases of the HL7 R4 suite (minus the ones fhirpath.js cannot
//!   run), each evaluated over its suite input file;
//! - `realistic.json`: a Bundle of a Patient and 100 Observations, expressions evaluated
//!   once over the Bundle, and expressions evaluated over every resource in it (as a
//!   search indexer or validator would).
//!
//! One evaluation is one compiled expression evaluated over one input.
//!
//! This file is not a bench target of its own (it sits in a subdirectory without a
//! `main.rs`); the bench and the example include it with `#[path]`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vigil_fhirpath::{CompileOptions, EvalContext, Expression};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn bench_dir() -> PathBuf {
    repo_root().join("bench/fhirpath-js")
}

pub fn suite_dir() -> PathBuf {
    repo_root().join("tests/fixtures/fhirpath-r4")
}

/// One compiled expression and the input it runs over (`None`: no input, an empty focus).
pub struct Case {
    pub name: String,
    pub expression: Expression,
    pub input: Option<usize>,
}

/// A set of cases over a set of inputs.
pub struct Workload {
    pub name: &'static str,
    pub inputs: Vec<Value>,
    pub cases: Vec<Case>,
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn str_field<'v>(v: &'v Value, key: &str) -> Result<&'v str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string field {key:?} in {v}"))
}

/// The suite workload from `cases.json`, compiled as the conformance test compiles them
/// (context type = the input's resourceType, strict mode where the suite asks for it).
pub fn suite() -> Result<Workload, String> {
    let list = read_json(&bench_dir().join("cases.json"))?;
    let entries = list
        .get("cases")
        .and_then(Value::as_array)
        .ok_or("cases.json has no \"cases\" array")?;
    let mut inputs: Vec<Value> = Vec::new();
    let mut input_names: Vec<String> = Vec::new();
    let mut cases = Vec::new();
    for entry in entries {
        let name = str_field(entry, "name")?.to_string();
        let source = str_field(entry, "expression")?;
        let strict = entry
            .get("strict")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let input = match entry.get("input").and_then(Value::as_str) {
            None => None,
            Some(file) => Some(match input_names.iter().position(|n| n == file) {
                Some(i) => i,
                None => {
                    inputs.push(read_json(&suite_dir().join("input").join(file))?);
                    input_names.push(file.to_string());
                    inputs.len() - 1
                }
            }),
        };
        let context_type = input
            .and_then(|i| inputs[i].get("resourceType"))
            .and_then(Value::as_str)
            .map(String::from);
        let expression = Expression::compile(
            source,
            &CompileOptions {
                context_type,
                strict,
            },
        )
        .map_err(|e| format!("case {name}: `{source}` does not compile: {e}"))?;
        cases.push(Case {
            name,
            expression,
            input,
        });
    }
    Ok(Workload {
        name: "suite",
        inputs,
        cases,
    })
}

/// The realistic workload from `realistic.json`: `bundle_expressions` over the Bundle,
/// `resource_expressions` over each entry's resource (compiled without a context type,
/// since they meet every resource type in the Bundle).
pub fn realistic() -> Result<Workload, String> {
    let spec = read_json(&bench_dir().join("realistic.json"))?;
    let bundle = spec
        .get("bundle")
        .cloned()
        .ok_or("realistic.json has no \"bundle\"")?;
    let resources: Vec<Value> = bundle
        .get("entry")
        .and_then(Value::as_array)
        .ok_or("the bundle has no entries")?
        .iter()
        .filter_map(|e| e.get("resource").cloned())
        .collect();
    let exprs = |key: &str| -> Result<Vec<(String, Expression)>, String> {
        let list = spec
            .get(key)
            .and_then(Value::as_array)
            .ok_or(format!("realistic.json has no {key:?}"))?;
        list.iter()
            .map(|v| {
                let src = v.as_str().ok_or(format!("{key}: not a string: {v}"))?;
                let e =
                    Expression::parse(src).map_err(|e| format!("`{src}` does not compile: {e}"))?;
                Ok((src.to_string(), e))
            })
            .collect()
    };
    let mut inputs = vec![bundle];
    let mut cases = Vec::new();
    for (src, e) in exprs("bundle_expressions")? {
        cases.push(Case {
            name: src,
            expression: e,
            input: Some(0),
        });
    }
    let first_resource = inputs.len();
    inputs.extend(resources);
    for (src, e) in exprs("resource_expressions")? {
        for i in first_resource..inputs.len() {
            cases.push(Case {
                name: src.clone(),
                expression: e.clone(),
                input: Some(i),
            });
        }
    }
    Ok(Workload {
        name: "realistic",
        inputs,
        cases,
    })
}

impl Workload {
    /// Evaluate every case once; returns the total number of result items (a checksum
    /// that also keeps the optimiser from discarding the work) and the number of cases
    /// that failed to evaluate.
    pub fn round(&self) -> (usize, usize) {
        let mut items = 0;
        let mut errors = 0;
        for case in &self.cases {
            let ctx = match case.input {
                Some(i) => EvalContext::new(&self.inputs[i]),
                None => EvalContext::empty(),
            };
            match case.expression.evaluate(&ctx) {
                Ok(out) => items += std::hint::black_box(out).len(),
                Err(_) => errors += 1,
            }
        }
        (items, errors)
    }

    /// Warm up, then evaluate whole rounds until `duration` has passed.
    pub fn measure(&self, warmup: Duration, duration: Duration) -> Report {
        let start = Instant::now();
        while start.elapsed() < warmup {
            self.round();
        }
        let (items, errors) = self.round();
        let start = Instant::now();
        let mut rounds = 0u64;
        while start.elapsed() < duration {
            self.round();
            rounds += 1;
        }
        let seconds = start.elapsed().as_secs_f64();
        let evaluations = rounds * self.cases.len() as u64;
        Report {
            workload: self.name,
            cases: self.cases.len(),
            rounds,
            evaluations,
            seconds,
            evals_per_sec: evaluations as f64 / seconds,
            result_items_per_round: items,
            errors_per_round: errors,
        }
    }
}

impl Workload {
    /// Time each case on its own (grouped by name: the realistic workload repeats a
    /// resource expression over every resource): (name, evaluations, nanoseconds per
    /// evaluation), in case order. For finding where the time goes, not for the figures.
    pub fn per_case(&self, duration: Duration) -> Vec<(String, usize, f64)> {
        let mut groups: Vec<(String, Vec<&Case>)> = Vec::new();
        for case in &self.cases {
            match groups.last_mut() {
                Some((name, list)) if *name == case.name => list.push(case),
                _ => groups.push((case.name.clone(), vec![case])),
            }
        }
        let per_group = duration.div_f64(groups.len().max(1) as f64);
        groups
            .into_iter()
            .map(|(name, list)| {
                let eval_all = || {
                    for case in &list {
                        let ctx = match case.input {
                            Some(i) => EvalContext::new(&self.inputs[i]),
                            None => EvalContext::empty(),
                        };
                        let _ = std::hint::black_box(case.expression.evaluate(&ctx));
                    }
                };
                eval_all();
                let start = Instant::now();
                let mut rounds = 0u64;
                while start.elapsed() < per_group {
                    eval_all();
                    rounds += 1;
                }
                let ns =
                    start.elapsed().as_nanos() as f64 / (rounds.max(1) as f64 * list.len() as f64);
                (name, list.len(), ns)
            })
            .collect()
    }
}

pub struct Report {
    pub workload: &'static str,
    pub cases: usize,
    pub rounds: u64,
    pub evaluations: u64,
    pub seconds: f64,
    pub evals_per_sec: f64,
    pub result_items_per_round: usize,
    pub errors_per_round: usize,
}

impl Report {
    /// The one-line JSON form `bench.js` prints too.
    pub fn json(&self) -> String {
        serde_json::json!({
            "engine": "vigil-fhirpath",
            "workload": self.workload,
            "cases": self.cases,
            "rounds": self.rounds,
            "evaluations": self.evaluations,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "evals_per_sec": self.evals_per_sec.round() as u64,
            "result_items_per_round": self.result_items_per_round,
            "errors_per_round": self.errors_per_round,
        })
        .to_string()
    }
}
