//! `vigil validate FILE...`: validate FHIR R4 resources against the base definitions.

use anyhow::{Context, Result};
use serde_json::Value;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// FHIR resources (JSON) to validate; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<String>,
    /// Print the OperationOutcome of each file as FHIR JSON instead of one line per issue.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> ExitCode {
    match execute(&args) {
        Ok(true) => ExitCode::SUCCESS,
        // some resource is invalid: like a compiler, exit 1 after reporting everything
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn execute(args: &Args) -> Result<bool> {
    let mut all_valid = true;
    for path in &args.files {
        let text = if path == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
        };
        let resource: Value =
            serde_json::from_str(&text).with_context(|| format!("{path} is not valid JSON"))?;
        let outcome = vigil_fhir::validate::validate(&resource);
        all_valid &= !outcome.has_errors();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&outcome.to_json())?);
        } else if outcome.issues.is_empty() {
            println!("{path}: valid");
        } else {
            for issue in &outcome.issues {
                println!("{path}: {issue}");
            }
        }
    }
    Ok(all_valid)
}
