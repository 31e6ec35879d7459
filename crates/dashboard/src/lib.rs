//! Vigil's care-team dashboard: users and sessions, the web UI, its JSON API and live
//! updates over Server-Sent Events.
//!
//! The clinical data comes from a [`CareData`] implementation; [`router`] returns an axum
//! router to mount at `/`:
//!
//! - `/`, `/patients/{id}`: the web UI (login page without a session);
//! - `/assets/*`: embedded static files;
//! - `/api/*`: the JSON API (see [`api`]).
//!
//! CSRF: every state-changing request (`POST`, `PUT`, `PATCH`, `DELETE`) under `/api`
//! must carry the header `X-Requested-With: vigil`. Browsers do not let other origins set
//! custom headers without a CORS preflight (which this server never grants), and the
//! session cookie is `SameSite=Strict`, so a forged cross-site request fails twice.

pub mod api;
mod assets;
pub mod cli;
pub mod model;
mod ratelimit;
pub mod users;

pub use cli::{run_users, UsersArgs, UsersCommand};
pub use model::{
    compare_rows, sort_worklist, Alert, AlertStatus, CareData, CareDataError, PatientDetail, Point,
    RiskSummary, Role, ScorePoint, Update, Viewer, VitalLatest, VitalSeries, WorklistRow,
};
pub use users::{UserInfo, UserStore};

use std::sync::Arc;
use std::time::Duration;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "vigil_session";

/// The header (and value) state-changing API calls must send, as CSRF protection.
pub const CSRF_HEADER: (&str, &str) = ("x-requested-with", "vigil");

/// Errors of the dashboard library (user store, CLI).
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// SQLite failure in `users.db`.
    #[error("user database: {0}")]
    Database(String),
    /// File-system failure.
    #[error("{0}")]
    Io(String),
    /// Password hashing failure.
    #[error("password hashing: {0}")]
    Password(String),
    /// The OS random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// Bad input from a caller (username, password, team, role...).
    #[error("{0}")]
    InvalidInput(String),
    /// `add_user` with a taken username.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// The user does not exist.
    #[error("no such user {0:?}")]
    UnknownUser(String),
}

impl From<rusqlite::Error> for DashboardError {
    fn from(e: rusqlite::Error) -> Self {
        DashboardError::Database(e.to_string())
    }
}

/// Settings of [`router`].
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Add `Secure` to the session cookie (set it when served over HTTPS).
    pub secure_cookies: bool,
    /// How long a session lasts after login.
    pub session_ttl: Duration,
    /// Failed logins per username allowed within `login_window`; more answer 429.
    pub login_max_failures: u32,
    /// The window for `login_max_failures`.
    pub login_window: Duration,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
    /// When this turns `true` (or its sender is dropped), open event streams end, so a
    /// graceful server shutdown does not wait for them forever.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            secure_cookies: false,
            session_ttl: Duration::from_secs(12 * 3600),
            login_max_failures: 5,
            login_window: Duration::from_secs(60),
            keep_alive: Duration::from_secs(15),
            shutdown: None,
        }
    }
}

/// The dashboard's router: web UI, assets and `/api`. Mount it at `/`.
pub fn router(
    users: Arc<UserStore>,
    data: Arc<dyn CareData>,
    config: DashboardConfig,
) -> axum::Router {
    api::router(users, data, config)
}
