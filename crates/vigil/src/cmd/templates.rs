//! `vigil templates test|check`: the mapping debugger and template validation, offline.
//!
//! Exit codes: 0 ok, 1 some payload failed, 2 template errors (or unreadable templates).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vigil_monitor::templates_api::{self, TestPayload, DEFAULT_TEST_DEVICE};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run device payloads through the templates and print, as JSON, the measurements,
    /// the Observations that would be written (with --fhir) and every error.
    Test {
        /// Device mapping template (CollectionContent JSON).
        #[arg(long)]
        device: PathBuf,
        /// FHIR mapping template (CollectionFhir JSON).
        #[arg(long)]
        fhir: Option<PathBuf>,
        /// Device id of the ingest envelope a bare payload is wrapped in.
        #[arg(long, default_value = DEFAULT_TEST_DEVICE)]
        device_id: String,
        /// Device payloads (JSON), bare bodies or envelopes with `Body`; `-` reads stdin.
        #[arg(required = true)]
        payloads: Vec<String>,
    },
    /// Validate templates: every error with its JSON path and line:column, and the
    /// mapping warnings (device types without FHIR template, unproduced valueNames).
    Check {
        /// Device mapping template.
        #[arg(long)]
        device: PathBuf,
        /// FHIR mapping template.
        #[arg(long)]
        fhir: Option<PathBuf>,
        /// Print JSON instead of one line per problem.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> ExitCode {
    match args.command {
        Command::Test {
            device,
            fhir,
            device_id,
            payloads,
        } => test(&device, fhir.as_deref(), &device_id, &payloads),
        Command::Check { device, fhir, json } => check(&device, fhir.as_deref(), json),
    }
}

fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: {e}"),
    }
}

/// Reads both template texts; an unreadable file is reported and ends with status 2.
fn read_templates(
    device: &Path,
    fhir: Option<&Path>,
) -> Result<(String, Option<String>), ExitCode> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            eprintln!("error: cannot read {}: {e}", p.display());
            ExitCode::from(2)
        })
    };
    Ok((read(device)?, fhir.map(read).transpose()?))
}

/// `file:line:column: error: path: message` lines for people, on stderr or stdout.
fn error_lines(errors: &[Value], device: &Path, fhir: Option<&Path>) -> Vec<String> {
    errors
        .iter()
        .map(|e| {
            let file = match (e["template"].as_str(), fhir) {
                (Some("fhir"), Some(f)) => f.display().to_string(),
                _ => device.display().to_string(),
            };
            format!(
                "{file}:{}:{}: error: {}: {}",
                e["line"],
                e["column"],
                e["path"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn test(device: &Path, fhir: Option<&Path>, device_id: &str, files: &[String]) -> ExitCode {
    let (device_text, fhir_text) = match read_templates(device, fhir) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let (device_set, fhir_set) =
        match templates_api::parse_templates(&device_text, fhir_text.as_deref()) {
            Ok(t) => t,
            Err(errors) => {
                for line in error_lines(&errors, device, fhir) {
                    eprintln!("{line}");
                }
                print_json(&json!({"ok": false, "templateErrors": errors}));
                return ExitCode::from(2);
            }
        };
    let payloads = files
        .iter()
        .map(|f| TestPayload {
            name: f.clone(),
            payload: read_payload(f),
        })
        .collect();
    let mut out = templates_api::test_payloads(
        &device_set,
        fhir_set.as_ref(),
        payloads,
        device_id,
        now_millis(),
    );
    if let Some(f) = &fhir_set {
        out["warnings"] = json!(templates_api::check_mappings(&device_set, f));
    }
    print_json(&out);
    if out["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn read_payload(file: &str) -> Result<Value, String> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    serde_json::from_str(text).map_err(|e| format!("{file} is not JSON: {e}"))
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn check(device: &Path, fhir: Option<&Path>, as_json: bool) -> ExitCode {
    let (device_text, fhir_text) = match read_templates(device, fhir) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let (errors, warnings) =
        match templates_api::parse_templates(&device_text, fhir_text.as_deref()) {
            Ok((d, Some(f))) => (Vec::new(), templates_api::check_mappings(&d, &f)),
            Ok((_, None)) => (Vec::new(), Vec::new()),
            Err(errors) => (errors, Vec::new()),
        };
    if as_json {
        print_json(
            &json!({"ok": errors.is_empty(), "templateErrors": errors, "warnings": warnings}),
        );
    } else {
        for line in error_lines(&errors, device, fhir) {
            println!("{line}");
        }
        for w in &warnings {
            println!("warning: {w}");
        }
        if errors.is_empty() {
            println!("templates valid ({} warning(s))", warnings.len());
        } else {
            println!("{} template error(s)", errors.len());
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
