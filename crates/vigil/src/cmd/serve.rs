//! `vigil serve`: one process serving the FHIR API (`/fhir`), device ingest
//! (`/ingest`), the monitoring API (`/v1`), metrics (`/metrics`) and the care-team
//! dashboard (`/`), with the normalization and scoring pipeline running beside them.

use crate::config::{Config, ServeArgs};
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use vigil_auth::SigningKey;
use vigil_dashboard::{DashboardConfig, UserStore};
use vigil_eventlog::{EventLog, FileLog, FileLogOptions};
use vigil_monitor::{Monitor, MonitorOptions};
use vigil_server::{axum, tokio, CareTeamPolicy, FhirApi, FhirServerConfig, PolicyError};
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

/// The FHIR store `vigil serve` runs on.
pub struct FhirBackend {
    /// What the FHIR API and the pipeline use.
    pub store: Arc<dyn FhirStore>,
    /// The embedded store, kept to close it (finish its queued writes) at shutdown.
    pub sqlite: Option<Arc<SqliteStore>>,
}

/// The embedded SQLite store under the data directory, or PostgreSQL with
/// `--database-url` (builds with the `postgres` feature).
pub fn open_fhir_store(config: &Config) -> Result<FhirBackend> {
    if let Some(url) = &config.database_url {
        return Ok(FhirBackend {
            store: open_postgres(url, &config.database_schema)?,
            sqlite: None,
        });
    }
    let fhir_dir = config.data_dir.join("fhir");
    std::fs::create_dir_all(&fhir_dir)
        .with_context(|| format!("cannot create the data directory {}", fhir_dir.display()))?;
    let store = Arc::new(
        SqliteStore::open(&fhir_dir.join("store.db"))
            .with_context(|| format!("opening the FHIR store in {}", fhir_dir.display()))?,
    );
    Ok(FhirBackend {
        store: store.clone(),
        sqlite: Some(store),
    })
}

#[cfg(feature = "postgres")]
fn open_postgres(url: &str, schema: &str) -> Result<Arc<dyn FhirStore>> {
    use vigil_store_postgres::{PgOptions, PostgresStore};
    // Never echo the URL: it may carry a password.
    let store = PostgresStore::connect(url, PgOptions::with_schema(schema))
        .with_context(|| format!("opening the FHIR store in PostgreSQL (schema {schema})"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_url: &str, _schema: &str) -> Result<Arc<dyn FhirStore>> {
    anyhow::bail!(
        "--database-url: this vigil was built without PostgreSQL support; rebuild with `cargo build --release --features postgres`"
    )
}

/// The care-team rules of `vigil serve` for `user/` scopes on the FHIR API: a token's
/// `fhirUser` `Practitioner/<username>` is the dashboard user `<username>` (what `vigil
/// token issue --user` writes); an `admin` reaches every patient, a `care-team` user
/// the patients of their teams (`monitor.db`'s `patient_team`), anyone else none.
pub struct TeamPolicy {
    pub users: Arc<UserStore>,
    pub db: Arc<vigil_monitor::MonitorDb>,
}

/// The `fhirUser` of a dashboard user.
pub fn fhir_user_of(username: &str) -> String {
    format!("Practitioner/{username}")
}

impl CareTeamPolicy for TeamPolicy {
    fn patients_for(&self, fhir_user: &str) -> Result<Option<HashSet<String>>, PolicyError> {
        let Some(username) = fhir_user.strip_prefix("Practitioner/") else {
            return Ok(Some(HashSet::new()));
        };
        let user = self
            .users
            .user(username)
            .map_err(|e| PolicyError(e.to_string()))?;
        let Some(user) = user else {
            return Ok(Some(HashSet::new()));
        };
        if user.role == vigil_dashboard::Role::Admin {
            return Ok(None);
        }
        let patients = self
            .db
            .patients(Some(&user.teams))
            .map_err(|e| PolicyError(e.to_string()))?;
        Ok(Some(patients.into_iter().map(|p| p.id).collect()))
    }
}

/// Everything `vigil serve` runs, opened on a data directory.
pub struct Server {
    pub config: Config,
    /// The FHIR store (SQLite or PostgreSQL).
    pub store: Arc<dyn FhirStore>,
    sqlite: Option<Arc<SqliteStore>>,
    pub key: Arc<SigningKey>,
    pub monitor: Arc<Monitor>,
    pub users: Arc<UserStore>,
}

impl Server {
    /// Opens the stores under the data directory (creating it).
    pub fn open(config: &Config) -> Result<Server> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let FhirBackend { store, sqlite } = open_fhir_store(config)?;
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
                identity: config.identity_resolution,
                error_policy: config.error_policy,
                ..Default::default()
            },
            ingest: vigil_monitor::IngestLimits {
                max_body_bytes: config.ingest_max_body_bytes,
                ..Default::default()
            },
        };
        let log_dyn: Arc<dyn EventLog> = log.clone();
        let monitor = Monitor::open(data_dir, store.clone(), log_dyn, templates, options)?;
        vigil_monitor::templates_api::enable_management(&monitor, data_dir, template_version);
        let users = Arc::new(UserStore::open(data_dir)?);
        Ok(Server {
            config: config.clone(),
            store,
            sqlite,
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
        let api = FhirApi::try_new(self.store.clone(), self.key.clone(), fhir_config)?
            .with_care_team_policy(Arc::new(TeamPolicy {
                users: self.users.clone(),
                db: self.monitor.db.clone(),
            }));
        // Writes through /fhir (a Device re-linked to another Patient) drop the
        // pipeline's cached identities.
        let monitor = self.monitor.clone();
        let api = api.on_write(Arc::new(move |t: &str, id: &str| {
            monitor.resource_written(t, id)
        }));
        let dashboard = vigil_dashboard::router(
            self.users.clone(),
            self.monitor.care_data(),
            DashboardConfig {
                secure_cookies: self.config.secure_cookies,
                ..Default::default()
            },
        );
        let app = axum::Router::new()
            .merge(api.mount("/fhir"))
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
        let Server {
            store,
            sqlite,
            monitor,
            ..
        } = self;
        drop(monitor);
        drop(api);
        // A PostgreSQL client owns a runtime of its own, which must not be dropped on an
        // async worker.
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .context("closing the store")?;
        if let Some(Ok(store)) = sqlite.map(Arc::try_unwrap) {
            tokio::task::spawn_blocking(move || store.close())
                .await
                .context("closing the store")?
                .context("closing the store")?;
        }
        Ok(())
    }
}
