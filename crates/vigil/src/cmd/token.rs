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
    /// The token's subject (`sub` claim). [default: operator, or the --user]
    #[arg(long)]
    subject: Option<String>,
    /// The `fhirUser` claim, e.g. Practitioner/123.
    #[arg(long, conflicts_with = "user")]
    fhir_user: Option<String>,
    /// A dashboard user (`vigil users add`) the token acts for: `fhirUser` becomes
    /// `Practitioner/<user>` and, unless --subject is given, the subject `<user>`; with
    /// `vigil serve`, that user's `user/` scopes reach only their care teams' patients.
    #[arg(long)]
    user: Option<String>,
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
    let mut fhir_user = args.fhir_user.clone();
    let mut subject = args.subject.clone();
    if let Some(user) = &args.user {
        let users = vigil_dashboard::UserStore::open(&args.data_dir)
            .with_context(|| format!("cannot open the users of {}", args.data_dir.display()))?;
        if users.user(user)?.is_none() {
            anyhow::bail!(
                "--user {user}: no such user in {} (add it with `vigil users add`)",
                args.data_dir.display()
            );
        }
        fhir_user = Some(crate::cmd::serve::fhir_user_of(user));
        subject.get_or_insert_with(|| user.clone());
    }
    let subject = subject.unwrap_or_else(|| "operator".to_string());
    let mut request = TokenRequest::new(&subject, scopes).ttl(Duration::from_secs(args.ttl));
    if let Some(p) = &args.patient {
        request = request.patient(p);
    }
    if let Some(u) = &fhir_user {
        request = request.fhir_user(u);
    }
    request.check().context("cannot issue this token")?;
    let key = SigningKey::load_or_create(&args.data_dir)
        .with_context(|| format!("cannot open the signing key in {}", args.data_dir.display()))?;
    Ok(key.issue(&request))
}
