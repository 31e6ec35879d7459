//! `vigil token issue`: print a bearer token signed by a data directory's key, for
//! operators, services and tests.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vigil_auth::{ScopeSet, SigningKey, TokenRequest};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Issue a token and print it on stdout.
    Issue(IssueArgs),
}

#[derive(clap::Args)]
struct IssueArgs {
    /// The data directory whose signing key signs the token (created if missing).
    #[arg(long, env = "VIGIL_DATA_DIR")]
    data_dir: PathBuf,
    /// SMART scopes, space-separated, e.g. 'user/*.cruds' or 'patient/Observation.rs'.
    #[arg(long)]
    scope: String,
    /// The patient context (required with patient/ scopes).
    #[arg(long)]
    patient: Option<String>,
    /// The token's subject (`sub` claim).
    #[arg(long, default_value = "operator")]
    subject: String,
    /// The `fhirUser` claim, e.g. Practitioner/123.
    #[arg(long)]
    fhir_user: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

pub fn run(args: Args) -> ExitCode {
    let Action::Issue(issue) = args.action;
    match execute(&issue) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(args: &IssueArgs) -> Result<String> {
    let scopes = ScopeSet::parse(&args.scope).context("--scope is not a valid SMART scope list")?;
    let mut request = TokenRequest::new(&args.subject, scopes).ttl(Duration::from_secs(args.ttl));
    if let Some(p) = &args.patient {
        request = request.patient(p);
    }
    if let Some(u) = &args.fhir_user {
        request = request.fhir_user(u);
    }
    request.check().context("cannot issue this token")?;
    let key = SigningKey::load_or_create(&args.data_dir)
        .with_context(|| format!("cannot open the signing key in {}", args.data_dir.display()))?;
    Ok(key.issue(&request))
}
