//! The `vigil` command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// The store's writer thread frees what request threads allocated; glibc's malloc spends
// a quarter of that thread's time on such cross-thread frees, mimalloc a fraction of it.
// Built with `no_thp` (Cargo.toml): asked for transparent huge pages, mimalloc had the
// kernel zero 2 MiB pages for memory it had given back, a tenth of a Bundle load's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd;
mod config;
mod logging;

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
    /// Run Vigil: FHIR API, device ingest, pipeline, alerts and dashboard, until
    /// SIGINT/SIGTERM.
    Serve(Box<cmd::serve::Args>),
    /// Run the whole system with a simulated cohort streaming live.
    Demo(cmd::demo::Args),
    /// Device credentials (`vigil devices add --patient ID --type pulse-oximeter`).
    Devices(cmd::devices::Args),
    /// Dashboard users (`vigil users add --username U --team T`).
    Users(vigil_dashboard::UsersArgs),
    /// Care-team panels (`vigil patients assign --team T PATIENT...`).
    Patients(cmd::patients::Args),
    /// Benchmarks (`vigil bench fhir`: FHIR server throughput and search latency).
    Bench(cmd::bench::Args),
    /// MedTech templates: `vigil templates test` (the mapping debugger) and `check`.
    Templates(cmd::templates::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Fhirpath(args) => cmd::fhirpath::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Token(args) => cmd::token::run(args),
        Command::Serve(args) => cmd::serve::run(*args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Devices(args) => cmd::devices::run(args),
        Command::Users(args) => args.run(),
        Command::Patients(args) => cmd::patients::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Templates(args) => cmd::templates::run(args),
    }
}
