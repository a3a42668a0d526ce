//! The one-time enrolment code that creates the first admin: random, stored
//! hashed (argon2id) with its expiry, spent when used.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The alphabet of codes: no 0/O, 1/I/L (read off a console, typed on a phone).
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolFile {
    version: u32,
    code_hash: String,
    expires: u64,
}

/// What checking a code found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnrolError {
    /// No code is pending.
    #[error("no enrolment code is pending: run `flypack-web enrol-code` on the unit's console")]
    NoCode,
    /// The code is past its expiry.
    #[error("the enrolment code has expired: run `flypack-web enrol-code` on the unit's console for a new one")]
    Expired,
    /// Not the code.
    #[error("wrong enrolment code")]
    Wrong,
}

/// Gives `path` the owner of its folder: root runs `enrol-code` (over SSH,
/// or firstboot's stage), the web app runs as its own user and must read
/// and spend the code.
fn own_like_parent(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = path.parent() else { return Ok(()) };
    let d = std::fs::metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
    let f = std::fs::metadata(path).with_context(|| format!("inspecting {}", path.display()))?;
    if (f.uid(), f.gid()) != (d.uid(), d.gid()) {
        std::os::unix::fs::chown(path, Some(d.uid()), Some(d.gid()))
            .with_context(|| format!("giving {} the owner of {}", path.display(), dir.display()))?;
    }
    Ok(())
}

/// Makes a new code valid for `ttl`, replacing any pending one; returns it
/// (`XXXX-XXXX-XXXX`, about 59 bits). Its hash is owned like the state folder.
pub fn create_code(root: &Path, ttl: Duration) -> Result<String> {
    let mut raw = [0u8; 12];
    crate::security::random_bytes(&mut raw);
    let chars: Vec<char> = raw
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    let code = format!(
        "{}-{}-{}",
        chars[0..4].iter().collect::<String>(),
        chars[4..8].iter().collect::<String>(),
        chars[8..12].iter().collect::<String>()
    );
    let f = EnrolFile {
        version: 1,
        code_hash: crate::users::hash_password(&normalise(&code)),
        expires: crate::security::unix_now() + ttl.as_secs(),
    };
    let path = crate::paths::under(root, crate::paths::ENROL);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    flypack_contracts::atomic::write_atomic(&path, &serde_json::to_vec(&f).context("serialising")?, 0o600)?;
    own_like_parent(&path)?;
    Ok(code)
}

fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Whether a code is pending (and not expired).
pub fn pending(root: &Path) -> bool {
    read(root).is_ok_and(|f| f.is_some_and(|f| f.expires > crate::security::unix_now()))
}

fn read(root: &Path) -> Result<Option<EnrolFile>> {
    let path = crate::paths::under(root, crate::paths::ENROL);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(
            serde_json::from_str(&t).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Checks a code (case and dashes do not matter).
pub fn check(root: &Path, code: &str) -> Result<(), EnrolError> {
    let f = match read(root) {
        Ok(Some(f)) => f,
        Ok(None) => return Err(EnrolError::NoCode),
        Err(e) => {
            tracing::warn!("{e:#}");
            return Err(EnrolError::NoCode);
        }
    };
    if f.expires <= crate::security::unix_now() {
        return Err(EnrolError::Expired);
    }
    if crate::users::verify_password(&f.code_hash, &normalise(code)) {
        Ok(())
    } else {
        Err(EnrolError::Wrong)
    }
}

/// Spends the pending code.
pub fn spend(root: &Path) -> Result<()> {
    let path = crate::paths::under(root, crate::paths::ENROL);
    flypack_contracts::atomic::remove_any(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_until_spent_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(dir.path(), "x"), Err(EnrolError::NoCode));
        let code = create_code(dir.path(), Duration::from_secs(600)).unwrap();
        assert_eq!(code.len(), 14);
        assert!(pending(dir.path()));
        assert_eq!(check(dir.path(), "AAAA-AAAA-AAAA"), Err(EnrolError::Wrong));
        check(dir.path(), &code.to_lowercase().replace('-', " ")).unwrap();
        spend(dir.path()).unwrap();
        assert_eq!(check(dir.path(), &code), Err(EnrolError::NoCode));
        let code = create_code(dir.path(), Duration::from_secs(0)).unwrap();
        assert_eq!(check(dir.path(), &code), Err(EnrolError::Expired));
        assert!(!pending(dir.path()));
    }
}
