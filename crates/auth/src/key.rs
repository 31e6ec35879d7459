//! The server's HS256 signing key and the key file that keeps it across restarts.

use crate::AuthError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Length of the HS256 secret in bytes (the SHA-256 block output size: shorter keys
/// weaken HMAC, longer ones add nothing).
pub const KEY_LEN: usize = 32;

/// The key file's location under the data directory.
pub const KEY_FILE: &str = "auth/signing.key";

/// The server's token signing secret.
///
/// `Debug` prints no key material, and there is deliberately no accessor for the
/// bytes: the key is only ever used through [`SigningKey::issue`] and
/// [`SigningKey::verify`].
#[derive(Clone)]
pub struct SigningKey {
    secret: [u8; KEY_LEN],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A key from known bytes (tests, or a secret supplied by a secret manager).
    pub fn from_bytes(secret: [u8; KEY_LEN]) -> SigningKey {
        SigningKey { secret }
    }

    /// A fresh random key from the operating system's random source.
    pub fn generate() -> Result<SigningKey, AuthError> {
        let mut secret = [0u8; KEY_LEN];
        getrandom::fill(&mut secret).map_err(|e| AuthError::Random(e.to_string()))?;
        Ok(SigningKey { secret })
    }

    /// The path of the key file for a data directory: `DATA_DIR/auth/signing.key`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE)
    }

    /// Load the key from `DATA_DIR/auth/signing.key`, creating it (random, mode 0600,
    /// in a 0700 directory) when it does not exist yet.
    ///
    /// The file holds the key in base64 on one line. Creation writes a temporary file,
    /// fsyncs it and then links it into place, so a crash never leaves a truncated key
    /// and two processes starting at once agree on one key (the loser loads the
    /// winner's). On Unix a key file readable by group or others is refused, as ssh
    /// does: a leaked key lets anyone mint tokens with any scope.
    pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, AuthError> {
        let path = SigningKey::path(data_dir);
        match SigningKey::load(&path) {
            Err(AuthError::KeyIo { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                SigningKey::create(&path)
            }
            other => other,
        }
    }

    /// Load an existing key file.
    pub fn load(path: &Path) -> Result<SigningKey, AuthError> {
        let io_err = |source| AuthError::KeyIo {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |reason: &str| AuthError::KeyInvalid {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(invalid(&format!(
                    "permissions {:03o} are too open (must not be accessible by group or others; chmod 600)",
                    mode & 0o777
                )));
            }
        }
        if !meta.is_file() {
            return Err(invalid("not a regular file"));
        }
        let text = fs::read_to_string(path).map_err(io_err)?;
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| invalid("not base64"))?;
        let secret: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| invalid(&format!("key must be {KEY_LEN} bytes")))?;
        Ok(SigningKey { secret })
    }

    fn create(path: &Path) -> Result<SigningKey, AuthError> {
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| AuthError::KeyIo { path: p, source }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(io_err(dir))?;
        let key = SigningKey::generate()?;
        // A temporary name unique per process and call: concurrent creators (processes
        // or threads) do not clobber each other's half-written files.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".signing.key.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_private(&tmp, &key).map_err(io_err(&tmp));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // hard_link fails if the key already exists, unlike rename, so a concurrent
        // creator's key (already handed out in tokens) is never replaced.
        let linked = fs::hard_link(&tmp, path);
        let result = match linked {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => SigningKey::load(path),
            // Filesystems without hard links: fall back to an atomic rename.
            Err(_) => fs::rename(&tmp, path).map(|()| key).map_err(io_err(path)),
        };
        let _ = fs::remove_file(&tmp);
        let key = result?;
        sync_dir(dir).map_err(io_err(dir))?;
        Ok(key)
    }

    /// A fresh HMAC-SHA256 keyed with this key.
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail; the fallback only
        // exists to avoid an unwrap.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_private(tmp: &Path, key: &SigningKey) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Created 0600 from the start: a chmod after writing would leave a window in
        // which the key is readable by others.
        opts.mode(0o600);
    }
    let mut file = match opts.open(tmp) {
        // A leftover from a crashed earlier run that had the same pid.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            opts.open(tmp)?
        }
        other => other?,
    };
    let mut text = STANDARD.encode(key.secret);
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Make the new directory entry durable (the file's own fsync does not cover its name).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        assert!(matches!((a, b), (Ok(a), Ok(b)) if a.secret != b.secret));
    }

    #[test]
    fn debug_is_redacted() {
        let k = SigningKey::from_bytes([0x41; KEY_LEN]);
        let d = format!("{k:?}");
        assert!(!d.contains("65") && !d.contains("QUFB") && d.contains("redacted"));
    }
}
