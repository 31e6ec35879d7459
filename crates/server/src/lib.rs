//! Vigil's FHIR R4 REST server: the HTTP layer (axum) over a [`FhirStore`], with SMART
//! bearer-token authorization from `vigil-auth`.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use vigil_server::{FhirApi, FhirServerConfig};
//! let store = Arc::new(vigil_store::SqliteStore::open_in_memory().unwrap());
//! let key = Arc::new(vigil_auth::SigningKey::from_bytes([7; 32]));
//! let api = FhirApi::new(store, key, FhirServerConfig::new("http://127.0.0.1:8080/fhir"));
//! let app = axum::Router::new().merge(api.mount("/fhir"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! vigil_server::serve(listener, app, vigil_server::shutdown_signal()).await
//! # }
//! ```
//!
//! The store is synchronous: every store call runs on `spawn_blocking`; searches run
//! under a deadline ([`FhirServerConfig::search_timeout`]) and answer 503 `too-costly`
//! when it passes (the blocking search finishes in the background).

mod api;
pub mod audit;
mod bundle;
mod capability;
pub mod careteam;
pub mod error;
mod export;
pub mod http;
mod patch;
mod search;
mod subset;

pub use audit::{AuditLog, AuditRecord};
pub use careteam::{CareTeamPolicy, PolicyError};
pub use error::ApiError;
/// The axum and tokio this crate is built on, so callers mount routes and run the
/// server with the same versions.
pub use {axum, tokio};

use axum::routing::any;
use axum::Router;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use vigil_auth::SigningKey;
use vigil_store::FhirStore;

/// Server settings.
#[derive(Debug, Clone)]
pub struct FhirServerConfig {
    /// The public base URL of the FHIR API, without trailing slash
    /// (`http://127.0.0.1:8080/fhir`); used in `Location`, `fullUrl` and paging links.
    pub base_url: String,
    /// Largest accepted request body (413 beyond).
    pub max_body_bytes: usize,
    /// Most entries in a batch/transaction Bundle (413 beyond).
    pub max_bundle_entries: usize,
    /// Deadline of one search page (503 `too-costly` when it passes).
    pub search_timeout: Duration,
    /// Page size when `_count` is absent.
    pub default_page_size: usize,
    /// Largest page size; larger `_count`s are clamped.
    pub max_page_size: usize,
    /// Where `$export` writes its NDJSON files and job records (one server per
    /// directory: jobs recorded there are resumed from it at start).
    pub export_dir: PathBuf,
    /// How long a finished `$export` job and its files are kept.
    pub export_retention: Duration,
    /// Resources per store page while exporting (at most 1,000): the export holds one
    /// page in memory at a time.
    pub export_page_size: usize,
    /// The append-only audit file (JSON lines); `None` keeps the audit in memory only.
    pub audit_file: Option<PathBuf>,
}

impl FhirServerConfig {
    /// Defaults: 8 MiB bodies, 1,000 Bundle entries, 10 s search deadline, pages of 20
    /// (at most 1,000), exports under the system temp dir (a directory per process)
    /// kept 24 hours, in-memory audit.
    pub fn new(base_url: impl Into<String>) -> FhirServerConfig {
        FhirServerConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            max_body_bytes: 8 << 20,
            max_bundle_entries: 1_000,
            search_timeout: Duration::from_secs(10),
            default_page_size: 20,
            max_page_size: 1_000,
            export_dir: std::env::temp_dir().join(format!("vigil-export-{}", std::process::id())),
            export_retention: Duration::from_secs(24 * 3600),
            export_page_size: 1_000,
            audit_file: None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn FhirStore>,
    pub(crate) key: Arc<SigningKey>,
    pub(crate) config: FhirServerConfig,
    pub(crate) audit: AuditLog,
    pub(crate) exports: export::Jobs,
    /// Care-team rules for `user/` scopes (see [`careteam`]).
    pub(crate) care_team: RwLock<Option<Arc<dyn CareTeamPolicy>>>,
    /// Told about every successful write (see [`FhirApi::on_write`]).
    pub(crate) write_observer: RwLock<Option<WriteObserver>>,
}

/// Called with `(resource type, id)` after each successful write through the API
/// (create, update, patch, delete, and each entry of a batch or transaction), so that
/// caches elsewhere in the process (the pipeline's Device → Patient links) can be
/// dropped. Runs on the request's thread: keep it quick.
pub type WriteObserver = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The FHIR API: cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct FhirApi {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for FhirApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirApi")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl FhirApi {
    /// An API over `store`, verifying tokens with `key`. When `config.audit_file` cannot
    /// be opened, the audit is kept in memory and the problem is reported on stderr (use
    /// [`FhirApi::try_new`] to fail instead).
    pub fn new(store: Arc<dyn FhirStore>, key: Arc<SigningKey>, config: FhirServerConfig) -> Self {
        let audit = match &config.audit_file {
            Some(path) => AuditLog::open(path).unwrap_or_else(|e| {
                eprintln!("vigil-server: {e}; keeping the audit in memory only");
                AuditLog::in_memory()
            }),
            None => AuditLog::in_memory(),
        };
        Self::with_audit(store, key, config, audit)
    }

    /// Like [`FhirApi::new`], but an audit file that cannot be opened is an error.
    pub fn try_new(
        store: Arc<dyn FhirStore>,
        key: Arc<SigningKey>,
        config: FhirServerConfig,
    ) -> Result<Self, audit::AuditError> {
        let audit = match &config.audit_file {
            Some(path) => AuditLog::open(path)?,
            None => AuditLog::in_memory(),
        };
        Ok(Self::with_audit(store, key, config, audit))
    }

    fn with_audit(
        store: Arc<dyn FhirStore>,
        key: Arc<SigningKey>,
        mut config: FhirServerConfig,
        audit: AuditLog,
    ) -> Self {
        config.base_url = config.base_url.trim_end_matches('/').to_string();
        let exports = export::Jobs::load(&config.export_dir, config.export_retention);
        FhirApi {
            inner: Arc::new(Inner {
                store,
                key,
                config,
                audit,
                exports,
                care_team: RwLock::new(None),
                write_observer: RwLock::new(None),
            }),
        }
    }

    /// The routes, relative to the FHIR base. Prefer [`FhirApi::mount`]: nested with
    /// `Router::new().nest("/fhir", api.router())`, the base with a trailing slash
    /// (`/fhir/`, where many clients post batches and transactions) answers 404.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", any(api::dispatch))
            .route("/{*rest}", any(api::dispatch))
            .with_state(self.clone())
    }

    /// The routes mounted at `prefix` (`/fhir`), including `prefix/` (the base with a
    /// trailing slash, which axum's `nest` does not match); merge them into an app with
    /// `Router::new().merge(api.mount("/fhir"))`.
    pub fn mount(&self, prefix: &str) -> Router {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return self.router();
        }
        Router::new()
            .route(&format!("{prefix}/"), any(api::dispatch_base))
            .with_state(self.clone())
            .nest(prefix, self.router())
    }

    /// Limit `user/` scopes to the patients of the user's care teams (see [`careteam`]).
    /// Without a policy, `user/` scopes grant type-level access.
    pub fn with_care_team_policy(self, policy: Arc<dyn CareTeamPolicy>) -> Self {
        *self
            .inner
            .care_team
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(policy);
        self
    }

    /// Registers the observer of successful writes (replacing any earlier one).
    pub fn on_write(self, observer: WriteObserver) -> Self {
        *self
            .inner
            .write_observer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(observer);
        self
    }

    pub(crate) fn notify_write(&self, resource_type: &str, id: &str) {
        let observer = self
            .inner
            .write_observer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(observer) = observer {
            observer(resource_type, id);
        }
    }

    pub(crate) fn care_team_policy(&self) -> Option<Arc<dyn CareTeamPolicy>> {
        self.inner
            .care_team
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The audit trail.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// The configuration.
    pub fn config(&self) -> &FhirServerConfig {
        &self.inner.config
    }
}

/// Serve `app` on `listener` until `shutdown` completes, then stop accepting, finish the
/// requests in flight and return.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No SIGINT handler could be installed: wait for SIGTERM only.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
