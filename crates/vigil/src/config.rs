//! `vigil serve` configuration: command-line flags, then `VIGIL_…` environment
//! variables, then the TOML config file, then defaults (first one set wins).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings that can come from the command line or the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (keys as below, snake_case; e.g. `listen = "0.0.0.0:8080"`).
    #[arg(long, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: FHIR store, event log, monitor and user databases, keys.
    /// [default: ./vigil-data]
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on. [default: 127.0.0.1:8080]
    #[arg(long, env = "VIGIL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The URL clients reach the server at (for FHIR links). [default: http://LISTEN]
    #[arg(long, env = "VIGIL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Store FHIR data in PostgreSQL instead of the embedded store
    /// (`postgres://user@host:5432/db`; needs a build with the `postgres` feature).
    #[arg(long, env = "VIGIL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The PostgreSQL schema holding Vigil's tables (created if absent). [default: vigil]
    #[arg(long, env = "VIGIL_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// MedTech device-mapping template file. [default: Vigil's templates for its demo devices]
    #[arg(long, env = "VIGIL_DEVICE_TEMPLATES")]
    pub device_templates: Option<PathBuf>,
    /// MedTech FHIR-mapping template file. [default: Vigil's templates]
    #[arg(long, env = "VIGIL_FHIR_TEMPLATES")]
    pub fhir_templates: Option<PathBuf>,
    /// NEWS2 window: the latest value of each vital within this many minutes before a
    /// patient's newest reading is scored. [default: 240]
    #[arg(long, env = "VIGIL_SCORE_WINDOW_MINUTES")]
    pub score_window_minutes: Option<u64>,
    /// Minutes (in reading time) a flagged patient must stay at low risk before the
    /// Flag is made inactive. [default: 30]
    #[arg(long, env = "VIGIL_FLAG_RECOVERY_MINUTES")]
    pub flag_recovery_minutes: Option<u64>,
    /// Care team that patients first seen by the pipeline are assigned to.
    #[arg(long, env = "VIGIL_DEFAULT_TEAM")]
    pub default_team: Option<String>,
    /// How the pipeline finds a message's Patient: `Lookup` (Device.patient),
    /// `LookupWithEncounter` (also an Encounter by the message's encounter id) or
    /// `Create` (creates the Patient from the message's patient id and links the
    /// Device). [default: Lookup]
    #[arg(long, env = "VIGIL_IDENTITY_RESOLUTION")]
    pub identity_resolution: Option<String>,
    /// What the pipeline does with a message it cannot process: `dead-letter` (record
    /// it and go on) or `block` (retry it with backoff, never moving past it).
    /// [default: dead-letter]
    #[arg(long, env = "VIGIL_ERROR_POLICY")]
    pub error_policy: Option<String>,
    /// Largest ingest request body in bytes. [default: 1048576]
    #[arg(long, env = "VIGIL_INGEST_MAX_BODY_BYTES")]
    pub ingest_max_body_bytes: Option<usize>,
    /// Largest FHIR request body in bytes. [default: 16777216]
    #[arg(long, env = "VIGIL_FHIR_MAX_BODY_BYTES")]
    pub fhir_max_body_bytes: Option<usize>,
    /// Seconds a FHIR search may run before it is stopped. [default: 10]
    #[arg(long, env = "VIGIL_SEARCH_TIMEOUT_SECONDS")]
    pub search_timeout_seconds: Option<u64>,
    /// Mark the dashboard's session cookie `Secure` (serve behind HTTPS).
    #[arg(long, env = "VIGIL_SECURE_COOKIES")]
    pub secure_cookies: Option<bool>,
}

/// The config file's keys (the same names as the flags, snake_case).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    database_url: Option<String>,
    database_schema: Option<String>,
    device_templates: Option<PathBuf>,
    fhir_templates: Option<PathBuf>,
    score_window_minutes: Option<u64>,
    flag_recovery_minutes: Option<u64>,
    default_team: Option<String>,
    identity_resolution: Option<String>,
    error_policy: Option<String>,
    ingest_max_body_bytes: Option<usize>,
    fhir_max_body_bytes: Option<usize>,
    search_timeout_seconds: Option<u64>,
    secure_cookies: Option<bool>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub public_url: String,
    pub database_url: Option<String>,
    pub database_schema: String,
    pub device_templates: Option<PathBuf>,
    pub fhir_templates: Option<PathBuf>,
    pub score_window: Duration,
    pub flag_recovery: Duration,
    pub default_team: Option<String>,
    pub identity_resolution: vigil_monitor::IdentityResolutionType,
    pub error_policy: vigil_monitor::ErrorPolicy,
    pub ingest_max_body_bytes: usize,
    pub fhir_max_body_bytes: usize,
    pub search_timeout: Duration,
    pub secure_cookies: bool,
}

fn relative_to(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

impl Config {
    /// Resolves flags/environment over the config file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                let mut parsed: FileConfig = toml::from_str(&text)
                    .with_context(|| format!("config file {} is not valid", path.display()))?;
                // Paths in the file are relative to the file.
                let base = path.parent().unwrap_or(Path::new("."));
                parsed.data_dir = parsed.data_dir.map(|p| relative_to(base, p));
                parsed.device_templates = parsed.device_templates.map(|p| relative_to(base, p));
                parsed.fhir_templates = parsed.fhir_templates.map(|p| relative_to(base, p));
                parsed
            }
            None => FileConfig::default(),
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let window = args
            .score_window_minutes
            .or(file.score_window_minutes)
            .unwrap_or(240);
        if window == 0 {
            bail!("score_window_minutes must be at least 1");
        }
        Ok(Config {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("vigil-data")),
            listen,
            public_url: args
                .public_url
                .clone()
                .or(file.public_url)
                .unwrap_or_else(|| format!("http://{listen}"))
                .trim_end_matches('/')
                .to_string(),
            database_url: args.database_url.clone().or(file.database_url),
            database_schema: args
                .database_schema
                .clone()
                .or(file.database_schema)
                .unwrap_or_else(|| "vigil".to_string()),
            device_templates: args.device_templates.clone().or(file.device_templates),
            fhir_templates: args.fhir_templates.clone().or(file.fhir_templates),
            score_window: Duration::from_secs(window * 60),
            flag_recovery: Duration::from_secs(
                args.flag_recovery_minutes
                    .or(file.flag_recovery_minutes)
                    .unwrap_or(30)
                    * 60,
            ),
            default_team: args.default_team.clone().or(file.default_team),
            identity_resolution: match args
                .identity_resolution
                .clone()
                .or(file.identity_resolution)
            {
                Some(s) => s
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("identity_resolution: {e}"))?,
                None => Default::default(),
            },
            error_policy: match args.error_policy.clone().or(file.error_policy) {
                Some(s) => s
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("error_policy: {e}"))?,
                None => Default::default(),
            },
            ingest_max_body_bytes: args
                .ingest_max_body_bytes
                .or(file.ingest_max_body_bytes)
                .unwrap_or(1024 * 1024),
            fhir_max_body_bytes: args
                .fhir_max_body_bytes
                .or(file.fhir_max_body_bytes)
                .unwrap_or(16 * 1024 * 1024),
            search_timeout: Duration::from_secs(
                args.search_timeout_seconds
                    .or(file.search_timeout_seconds)
                    .unwrap_or(10),
            ),
            secure_cookies: args.secure_cookies.or(file.secure_cookies).unwrap_or(false),
        })
    }
}
