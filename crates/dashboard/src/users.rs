//! Users and sessions in `DATA_DIR/users.db`.

use crate::model::{Role, Viewer};
use crate::DashboardError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    teams TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(expires_at);
";

/// Minimum password length accepted by [`UserStore::add_user`] and
/// [`UserStore::set_password`].
pub const MIN_PASSWORD_LEN: usize = 8;

/// A user as listed by [`UserStore::list_users`] (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserInfo {
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Care teams.
    pub teams: Vec<String>,
}

/// A session just created: the token goes into the cookie, only its hash is stored.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// 256-bit random token, hex-encoded.
    pub token: String,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: i64,
}

/// A valid session's user and expiry.
#[derive(Debug, Clone)]
pub struct Session {
    /// The signed-in user, as currently stored.
    pub viewer: Viewer,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: i64,
}

/// Users (Argon2id password hashes) and sessions (SHA-256 token hashes), in SQLite.
pub struct UserStore {
    conn: Mutex<Connection>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], DashboardError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| DashboardError::Random(e.to_string()))?;
    Ok(buf)
}

/// Argon2id with the crate's default (OWASP-recommended) cost: m=19 MiB, t=2, p=1.
fn hash_password(password: &str) -> Result<String, DashboardError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| DashboardError::Password(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DashboardError::Password(e.to_string()))
}

fn password_matches(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user does not exist, so that unknown and known
/// usernames take the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("vigil-dummy-password").unwrap_or_default())
}

/// Generates a random password of 20 characters from an unambiguous alphabet (~115 bits).
pub fn generate_password() -> Result<String, DashboardError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = random_bytes::<20>()?;
    // 256 % 56 != 0 gives a slight bias; irrelevant at this length.
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

fn validate_username(username: &str) -> Result<(), DashboardError> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(DashboardError::InvalidInput(format!(
            "invalid username {username:?}: use 1-64 letters, digits, '.', '_', '-', '@'"
        )))
    }
}

fn validate_password(password: &str) -> Result<(), DashboardError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(DashboardError::InvalidInput(format!(
            "password too short: at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > 1024 {
        return Err(DashboardError::InvalidInput(
            "password too long: at most 1024 bytes".into(),
        ));
    }
    Ok(())
}

fn row_to_viewer(
    username: String,
    display_name: String,
    role: String,
    teams: String,
) -> Result<Viewer, DashboardError> {
    let role = Role::parse(&role)
        .ok_or_else(|| DashboardError::Database(format!("unknown role {role:?} in users.db")))?;
    let teams: Vec<String> = serde_json::from_str(&teams)
        .map_err(|e| DashboardError::Database(format!("bad teams in users.db: {e}")))?;
    Ok(Viewer {
        username,
        display_name,
        role,
        teams,
    })
}

impl UserStore {
    /// Opens (creating if needed) `data_dir/users.db`.
    pub fn open(data_dir: &Path) -> Result<Self, DashboardError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            DashboardError::Io(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let conn = Connection::open(data_dir.join("users.db"))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(UserStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent, so keep going.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a user. Fails with [`DashboardError::UserExists`] when the name is taken.
    pub fn add_user(
        &self,
        username: &str,
        display_name: &str,
        password: &str,
        role: Role,
        teams: &[String],
    ) -> Result<(), DashboardError> {
        validate_username(username)?;
        validate_password(password)?;
        if display_name.trim().is_empty() {
            return Err(DashboardError::InvalidInput(
                "display name must not be empty".into(),
            ));
        }
        if teams.iter().any(|t| t.trim().is_empty()) {
            return Err(DashboardError::InvalidInput(
                "team names must not be empty".into(),
            ));
        }
        let hash = hash_password(password)?;
        let teams_json = serde_json::to_string(teams)
            .map_err(|e| DashboardError::InvalidInput(e.to_string()))?;
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO users (username, display_name, password_hash, role, teams, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![username, display_name.trim(), hash, role.as_str(), teams_json, now_ms()],
        )?;
        if inserted == 0 {
            return Err(DashboardError::UserExists(username.to_string()));
        }
        Ok(())
    }

    /// Replaces a user's password and signs them out everywhere.
    pub fn set_password(&self, username: &str, password: &str) -> Result<(), DashboardError> {
        validate_password(password)?;
        let hash = hash_password(password)?;
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE users SET password_hash = ?2 WHERE username = ?1",
            params![username, hash],
        )?;
        if n == 0 {
            return Err(DashboardError::UnknownUser(username.to_string()));
        }
        conn.execute("DELETE FROM sessions WHERE username = ?1", [username])?;
        Ok(())
    }

    /// All users, by username.
    pub fn list_users(&self) -> Result<Vec<UserInfo>, DashboardError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT username, display_name, role, teams FROM users ORDER BY username")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (u, d, role, teams) = row?;
            let v = row_to_viewer(u, d, role, teams)?;
            out.push(UserInfo {
                username: v.username,
                display_name: v.display_name,
                role: v.role,
                teams: v.teams,
            });
        }
        Ok(out)
    }

    /// One user (never the hash); `None` when unknown.
    pub fn user(&self, username: &str) -> Result<Option<UserInfo>, DashboardError> {
        Ok(self.load_user(username)?.map(|(v, _)| UserInfo {
            username: v.username,
            display_name: v.display_name,
            role: v.role,
            teams: v.teams,
        }))
    }

    /// The stored PHC password hash of a user (for audits and tests).
    pub fn password_hash(&self, username: &str) -> Result<Option<String>, DashboardError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT password_hash FROM users WHERE username = ?1",
                [username],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn load_user(&self, username: &str) -> Result<Option<(Viewer, String)>, DashboardError> {
        let row = self
            .conn()
            .query_row(
                "SELECT username, display_name, role, teams, password_hash FROM users WHERE username = ?1",
                [username],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((u, d, role, teams, hash)) => Ok(Some((row_to_viewer(u, d, role, teams)?, hash))),
        }
    }

    /// Checks a password; `None` when the user is unknown or the password is wrong.
    /// Takes an Argon2 verification either way (tens of milliseconds): call it off the
    /// async executor.
    pub fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Viewer>, DashboardError> {
        match self.load_user(username)? {
            Some((viewer, hash)) => Ok(password_matches(password, &hash).then_some(viewer)),
            None => {
                let _ = password_matches(password, dummy_hash());
                Ok(None)
            }
        }
    }

    /// Creates a session for `username` valid for `ttl`.
    pub fn create_session(
        &self,
        username: &str,
        ttl: Duration,
    ) -> Result<NewSession, DashboardError> {
        let token = hex(&random_bytes::<32>()?);
        let now = now_ms();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at_ms = now.saturating_add(ttl_ms);
        let conn = self.conn();
        // Sweep expired sessions here so the table cannot grow without bound.
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
        conn.execute(
            "INSERT INTO sessions (token_hash, username, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash(&token), username, now, expires_at_ms],
        )?;
        Ok(NewSession {
            token,
            expires_at_ms,
        })
    }

    /// The session of a token, if it exists and has not expired.
    pub fn lookup_session(&self, token: &str) -> Result<Option<Session>, DashboardError> {
        // Tokens are 64 hex digits; anything else cannot match, skip the query.
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let row = self
            .conn()
            .query_row(
                "SELECT u.username, u.display_name, u.role, u.teams, s.expires_at
                 FROM sessions s JOIN users u ON u.username = s.username
                 WHERE s.token_hash = ?1 AND s.expires_at > ?2",
                params![token_hash(token), now_ms()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((u, d, role, teams, expires_at_ms)) => Ok(Some(Session {
                viewer: row_to_viewer(u, d, role, teams)?,
                expires_at_ms,
            })),
        }
    }

    /// Deletes a session (logout). Unknown tokens are ignored.
    pub fn delete_session(&self, token: &str) -> Result<(), DashboardError> {
        self.conn().execute(
            "DELETE FROM sessions WHERE token_hash = ?1",
            [token_hash(token)],
        )?;
        Ok(())
    }
}
