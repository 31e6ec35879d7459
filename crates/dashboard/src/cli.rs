//! `vigil users ...`: manage dashboard users from the command line, without prompts.

use crate::model::Role;
use crate::users::{generate_password, UserStore};
use crate::DashboardError;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// `vigil users <add|list|set-password>`.
#[derive(clap::Args, Debug)]
pub struct UsersArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// The `vigil users` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Add a dashboard user. The password comes from --password-stdin or --password;
    /// with neither, a random one is generated and printed.
    Add(AddUserArgs),
    /// List users (username, role, teams, display name).
    List(ListUsersArgs),
    /// Replace a user's password (signs them out everywhere).
    SetPassword(SetPasswordArgs),
}

/// Arguments of `vigil users add`.
#[derive(clap::Args, Debug)]
pub struct AddUserArgs {
    /// The data directory (users are stored in DIR/users.db).
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Login name: letters, digits, '.', '_', '-', '@'.
    #[arg(long)]
    pub username: String,
    /// Name shown in the dashboard and on acknowledgements (default: the username).
    #[arg(long)]
    pub display_name: Option<String>,
    /// care-team (sees their teams' patients) or admin (sees everyone).
    #[arg(long, default_value = "care-team", value_parser = parse_role)]
    pub role: Role,
    /// A care team whose patients the user sees; repeat for several.
    #[arg(long = "team")]
    pub teams: Vec<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password (visible in the process list: prefer --password-stdin).
    #[arg(long)]
    pub password: Option<String>,
}

/// Arguments of `vigil users list`.
#[derive(clap::Args, Debug)]
pub struct ListUsersArgs {
    /// The data directory.
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vigil users set-password`.
#[derive(clap::Args, Debug)]
pub struct SetPasswordArgs {
    /// The data directory.
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The user.
    #[arg(long)]
    pub username: String,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password (visible in the process list: prefer --password-stdin).
    #[arg(long)]
    pub password: Option<String>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?}: use care-team or admin"))
}

impl UsersArgs {
    /// Runs the command with the process's stdin/stdout, printing errors to stderr.
    pub fn run(self) -> ExitCode {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut out = std::io::stdout();
        match run_users(&self, &mut input, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Where a password comes from: stdin, the argument, or generated (then printed).
fn obtain_password(
    from_stdin: bool,
    given: Option<&str>,
    input: &mut dyn BufRead,
) -> Result<(String, bool), DashboardError> {
    if from_stdin {
        let mut line = String::new();
        input
            .read_line(&mut line)
            .map_err(|e| DashboardError::Io(format!("cannot read password from stdin: {e}")))?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            return Err(DashboardError::InvalidInput(
                "--password-stdin: standard input held no password".into(),
            ));
        }
        Ok((pw, false))
    } else if let Some(p) = given {
        Ok((p.to_string(), false))
    } else {
        Ok((generate_password()?, true))
    }
}

fn io_err(e: std::io::Error) -> DashboardError {
    DashboardError::Io(format!("cannot write output: {e}"))
}

/// Executes `vigil users ...` with explicit input and output (testable form of
/// [`UsersArgs::run`]).
pub fn run_users(
    args: &UsersArgs,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), DashboardError> {
    match &args.command {
        UsersCommand::Add(a) => {
            let (password, generated) =
                obtain_password(a.password_stdin, a.password.as_deref(), input)?;
            let store = UserStore::open(&a.data_dir)?;
            let display = a.display_name.clone().unwrap_or_else(|| a.username.clone());
            store.add_user(&a.username, &display, &password, a.role, &a.teams)?;
            if generated {
                writeln!(out, "added user {} with password: {password}", a.username)
            } else {
                writeln!(out, "added user {}", a.username)
            }
            .map_err(io_err)
        }
        UsersCommand::List(a) => {
            let store = UserStore::open(&a.data_dir)?;
            let users = store.list_users()?;
            if a.json {
                let s = serde_json::to_string_pretty(&users)
                    .map_err(|e| DashboardError::Io(e.to_string()))?;
                writeln!(out, "{s}").map_err(io_err)
            } else {
                writeln!(out, "USERNAME\tROLE\tTEAMS\tDISPLAY NAME").map_err(io_err)?;
                for u in users {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        u.username,
                        u.role.as_str(),
                        if u.teams.is_empty() {
                            "-".to_string()
                        } else {
                            u.teams.join(",")
                        },
                        u.display_name
                    )
                    .map_err(io_err)?;
                }
                Ok(())
            }
        }
        UsersCommand::SetPassword(a) => {
            let (password, generated) =
                obtain_password(a.password_stdin, a.password.as_deref(), input)?;
            let store = UserStore::open(&a.data_dir)?;
            store.set_password(&a.username, &password)?;
            if generated {
                writeln!(out, "new password for {}: {password}", a.username)
            } else {
                writeln!(out, "password of {} changed", a.username)
            }
            .map_err(io_err)
        }
    }
}
