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
//! let app = axum::Router::new().nest("/fhir", api.router());
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
pub mod error;
mod export;
pub mod http;
mod patch;
mod search;
mod subset;

pub use audit::{AuditLog, AuditRecord};
pub use error::ApiError;
/// The axum and tokio this crate is built on, so callers mount routes and run the
/// server with the same versions.
pub use {axum, tokio};

use axum::routing::any;
use axum::Router;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// Where `$export` writes its NDJSON files.
    pub export_dir: PathBuf,
    /// The append-only audit file (JSON lines); `None` keeps the audit in memory only.
    pub audit_file: Option<PathBuf>,
}

impl FhirServerConfig {
    /// Defaults: 8 MiB bodies, 1,000 Bundle entries, 10 s search deadline, pages of 20
    /// (at most 1,000), exports under the system temp dir, in-memory audit.
    pub fn new(base_url: impl Into<String>) -> FhirServerConfig {
        FhirServerConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            max_body_bytes: 8 << 20,
            max_bundle_entries: 1_000,
            search_timeout: Duration::from_secs(10),
            default_page_size: 20,
            max_page_size: 1_000,
            export_dir: std::env::temp_dir().join("vigil-export"),
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
}

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
        FhirApi {
            inner: Arc::new(Inner {
                store,
                key,
                config,
                audit,
                exports: export::Jobs::default(),
            }),
        }
    }

    /// The routes, relative to the FHIR base: mount with
    /// `Router::new().nest("/fhir", api.router())`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", any(api::dispatch))
            .route("/{*rest}", any(api::dispatch))
            .with_state(self.clone())
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
