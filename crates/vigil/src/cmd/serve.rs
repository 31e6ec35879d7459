//! `vigil serve`: the FHIR R4 server on a data directory.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vigil_auth::SigningKey;
use vigil_server::{axum, tokio, FhirApi, FhirServerConfig};
use vigil_store::SqliteStore;

#[derive(clap::Args)]
pub struct Args {
    /// The data directory: the store lives in DIR/fhir, the signing key in DIR/auth,
    /// the audit trail in DIR/audit.jsonl.
    #[arg(long, env = "VIGIL_DATA_DIR")]
    data_dir: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The public base URL of the FHIR API (default: http://LISTEN/fhir).
    #[arg(long)]
    base_url: Option<String>,
}

pub fn run(args: Args) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn serve(args: Args) -> Result<()> {
    let fhir_dir = args.data_dir.join("fhir");
    std::fs::create_dir_all(&fhir_dir)
        .with_context(|| format!("creating {}", fhir_dir.display()))?;
    let store = Arc::new(
        SqliteStore::open(&fhir_dir.join("store.db"))
            .with_context(|| format!("opening the store in {}", fhir_dir.display()))?,
    );
    let key = Arc::new(SigningKey::load_or_create(&args.data_dir)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let base_url = args
            .base_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}/fhir"));
        let mut config = FhirServerConfig::new(&base_url);
        config.export_dir = args.data_dir.join("export");
        config.audit_file = Some(args.data_dir.join("audit.jsonl"));
        let api = FhirApi::try_new(store.clone(), key, config)?;
        let app = axum::Router::new().nest("/fhir", api.router());
        println!("vigil: FHIR server listening on {base_url}");
        vigil_server::serve(listener, app, vigil_server::shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    // In-flight requests have finished; searches abandoned at their deadline may still
    // hold the store until they end, which the runtime shutdown waits for.
    drop(runtime);
    // Still shared (should not happen): dropping the last reference closes it.
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().context("closing the store")?;
    }
    println!("vigil: stopped");
    Ok(())
}
