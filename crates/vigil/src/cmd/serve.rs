//! `vigil serve`: one process serving the FHIR API (`/fhir`), device ingest
//! (`/ingest`), the monitoring API (`/v1`), metrics (`/metrics`) and the care-team
//! dashboard (`/`), with the normalization and scoring pipeline running beside them.

use crate::config::{Config, ServeArgs};
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::sync::Arc;
use vigil_auth::SigningKey;
use vigil_dashboard::{DashboardConfig, UserStore};
use vigil_eventlog::{EventLog, FileLog, FileLogOptions};
use vigil_monitor::{Monitor, MonitorOptions};
use vigil_server::{axum, tokio, FhirApi, FhirServerConfig};
use vigil_store::{FhirStore, SqliteStore};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub fn run(args: Args) -> ExitCode {
    crate::logging::init();
    let result = Config::resolve(&args.serve).and_then(|config| {
        let runtime = runtime()?;
        let server = Server::open(&config)?;
        runtime.block_on(async {
            let listener = server.bind().await?;
            server
                .run(listener, vigil_server::shutdown_signal(), |url| {
                    println!("vigil: serving on {url}  (FHIR API {url}/fhir, dashboard {url}/)");
                })
                .await
        })
    });
    match result {
        Ok(()) => {
            println!("vigil: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A multi-threaded tokio runtime.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Everything `vigil serve` runs, opened on a data directory.
pub struct Server {
    pub config: Config,
    pub store: Arc<SqliteStore>,
    pub key: Arc<SigningKey>,
    pub monitor: Arc<Monitor>,
    pub users: Arc<UserStore>,
}

impl Server {
    /// Opens the stores under the data directory (creating it).
    pub fn open(config: &Config) -> Result<Server> {
        if let Some(url) = &config.database_url {
            anyhow::bail!(
                "--database-url {url}: this vigil was built without PostgreSQL support; rebuild with `cargo build --release --features postgres`"
            );
        }
        let data_dir = &config.data_dir;
        let fhir_dir = data_dir.join("fhir");
        std::fs::create_dir_all(&fhir_dir)
            .with_context(|| format!("cannot create the data directory {}", fhir_dir.display()))?;
        let store = Arc::new(
            SqliteStore::open(&fhir_dir.join("store.db"))
                .with_context(|| format!("opening the FHIR store in {}", fhir_dir.display()))?,
        );
        let key = Arc::new(SigningKey::load_or_create(data_dir)?);
        let log = Arc::new(
            FileLog::open(&data_dir.join("eventlog"), FileLogOptions::default()).with_context(
                || {
                    format!(
                        "opening the event log in {}",
                        data_dir.join("eventlog").display()
                    )
                },
            )?,
        );
        // The newest version saved through `PUT /v1/templates` wins over the flags.
        let (templates, template_version) = vigil_monitor::templates_api::startup_templates(
            data_dir,
            config.device_templates.as_deref(),
            config.fhir_templates.as_deref(),
        )?;
        let options = MonitorOptions {
            pipeline: vigil_monitor::PipelineConfig {
                window: config.score_window,
                flag_recovery: config.flag_recovery,
                default_team: config.default_team.clone(),
                ..Default::default()
            },
            ingest: vigil_monitor::IngestLimits {
                max_body_bytes: config.ingest_max_body_bytes,
                ..Default::default()
            },
        };
        let store_dyn: Arc<dyn FhirStore> = store.clone();
        let log_dyn: Arc<dyn EventLog> = log.clone();
        let monitor = Monitor::open(data_dir, store_dyn, log_dyn, templates, options)?;
        vigil_monitor::templates_api::enable_management(&monitor, data_dir, template_version);
        let users = Arc::new(UserStore::open(data_dir)?);
        Ok(Server {
            config: config.clone(),
            store,
            key,
            monitor,
            users,
        })
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(self.config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another vigil running? choose another address with --listen)",
                self.config.listen
            )
        })
    }

    /// Serves until `shutdown` completes, then stops accepting, finishes in-flight
    /// requests, lets the pipeline finish its batch and closes the stores.
    /// `on_ready` gets the base URL once listening.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        on_ready: impl FnOnce(&str),
    ) -> Result<()> {
        let addr = listener.local_addr()?;
        let public_url = if self.config.public_url == format!("http://{}", self.config.listen) {
            format!("http://{addr}")
        } else {
            self.config.public_url.clone()
        };
        let mut fhir_config = FhirServerConfig::new(format!("{public_url}/fhir"));
        fhir_config.export_dir = self.config.data_dir.join("export");
        fhir_config.audit_file = Some(self.config.data_dir.join("audit.jsonl"));
        fhir_config.max_body_bytes = self.config.fhir_max_body_bytes;
        fhir_config.search_timeout = self.config.search_timeout;
        let store_dyn: Arc<dyn FhirStore> = self.store.clone();
        let api = FhirApi::try_new(store_dyn, self.key.clone(), fhir_config)?;
        let dashboard = vigil_dashboard::router(
            self.users.clone(),
            self.monitor.care_data(),
            DashboardConfig {
                secure_cookies: self.config.secure_cookies,
                ..Default::default()
            },
        );
        let app = axum::Router::new()
            .nest("/fhir", api.router())
            .merge(self.monitor.router(self.key.clone()))
            .merge(dashboard);
        let pipeline = self.monitor.start();
        on_ready(&public_url);
        let served = vigil_server::serve(listener, app, shutdown).await;
        // Requests have finished; let the pipeline finish its batch and commit.
        tokio::task::spawn_blocking(move || pipeline.stop())
            .await
            .ok();
        served.context("serving HTTP")?;
        let Server { store, monitor, .. } = self;
        drop(monitor);
        drop(api);
        if let Ok(store) = Arc::try_unwrap(store) {
            tokio::task::spawn_blocking(move || store.close())
                .await
                .context("closing the store")?
                .context("closing the store")?;
        }
        Ok(())
    }
}
