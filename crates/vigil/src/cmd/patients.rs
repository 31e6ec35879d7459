//! `vigil patients assign|unassign|list`: which care teams' panels a patient is in (what
//! decides which patients a care-team user reaches on the dashboard and, through `vigil
//! token issue --user`, on the FHIR API). Works on a data directory while the server
//! runs: the server reads the panels on every request.

use crate::cmd::devices::monitor_db;
use crate::config::{Config, ServeArgs};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Put patients in a care team's panel (the Patient must exist in the FHIR store).
    Assign {
        #[arg(long, env = "VIGIL_DATA_DIR")]
        data_dir: PathBuf,
        /// The care team (as in `vigil users add --team`).
        #[arg(long)]
        team: String,
        /// Patient ids (`p1` or `Patient/p1`).
        #[arg(required = true)]
        patients: Vec<String>,
        /// The server's PostgreSQL FHIR store, when it runs on one (as `vigil serve`).
        #[arg(long, env = "VIGIL_DATABASE_URL")]
        database_url: Option<String>,
        /// The server's PostgreSQL schema. [default: vigil]
        #[arg(long, env = "VIGIL_DATABASE_SCHEMA")]
        database_schema: Option<String>,
    },
    /// Take patients out of a care team's panel.
    Unassign {
        #[arg(long, env = "VIGIL_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long)]
        team: String,
        #[arg(required = true)]
        patients: Vec<String>,
    },
    /// List patients with their teams (tab-separated: id, name, teams).
    List {
        #[arg(long, env = "VIGIL_DATA_DIR")]
        data_dir: PathBuf,
        /// Only this team's panel.
        #[arg(long)]
        team: Option<String>,
    },
}

pub fn run(args: Args) -> ExitCode {
    match patients(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn bare(id: &str) -> &str {
    id.strip_prefix("Patient/").unwrap_or(id)
}

fn patients(args: Args) -> Result<()> {
    match args.command {
        Command::Assign {
            data_dir,
            team,
            patients,
            database_url,
            database_schema,
        } => {
            let config = Config::resolve(&ServeArgs {
                data_dir: Some(data_dir),
                database_url,
                database_schema,
                ..Default::default()
            })?;
            let db = monitor_db(&config.data_dir)?;
            let store = crate::cmd::serve::open_fhir_store(&config)?.store;
            for id in &patients {
                let id = bare(id);
                // A panel lists patients the read model knows: add it from the FHIR store
                // if the pipeline has not seen it yet.
                if db.patient(id)?.is_none() {
                    let Some(p) = store.read("Patient", id)?.found() else {
                        bail!(
                            "Patient/{id} is not in the FHIR store; create it first \
                             (POST /fhir/Patient) or check the id"
                        );
                    };
                    db.upsert_patient(&vigil_monitor::patient_row(id, &p.resource))?;
                }
                db.assign_team(id, &team)?;
                println!("Patient/{id}\tassigned to {team}");
            }
            Ok(())
        }
        Command::Unassign {
            data_dir,
            team,
            patients,
        } => {
            let db = monitor_db(&data_dir)?;
            for id in &patients {
                let id = bare(id);
                if db.unassign_team(id, &team)? {
                    println!("Patient/{id}\tremoved from {team}");
                } else {
                    println!("Patient/{id}\twas not in {team}");
                }
            }
            Ok(())
        }
        Command::List { data_dir, team } => {
            let db = monitor_db(&data_dir)?;
            let teams = team.map(|t| vec![t]);
            for p in db.patients(teams.as_deref())? {
                let teams = db.patient_teams(&p.id)?;
                println!("Patient/{}\t{}\t{}", p.id, p.name, teams.join(","));
            }
            Ok(())
        }
    }
}
