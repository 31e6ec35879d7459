//! The `vigil` command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cmd;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vigil: open-source remote patient monitoring on FHIR R4"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a FHIRPath expression and print the result collection as a JSON array.
    Fhirpath(cmd::fhirpath::Args),
    /// Validate FHIR R4 resources (structure, formats, required bindings, invariants).
    /// Exits 1 if any resource has errors.
    Validate(cmd::validate::Args),
    /// Bearer tokens signed by a data directory's key (`vigil token issue ...`).
    Token(cmd::token::Args),
    /// Run the FHIR R4 server on a data directory until SIGINT/SIGTERM.
    Serve(cmd::serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Fhirpath(args) => cmd::fhirpath::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Token(args) => cmd::token::run(args),
        Command::Serve(args) => cmd::serve::run(args),
    }
}
