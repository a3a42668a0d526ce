//! The fleet's backup key, as restic keys a repository: backups are private
//! (encrypted with age to the fleet's X25519 recipient) and authentic (an
//! HMAC-SHA256 over the manifest, which lists every entry's digest).
//!
//! Two files, both made by `builder backup-key new`:
//! - the **fleet key** (`NAME.key`), on the engineer's laptop only: the age
//!   identity that decrypts every backup of the fleet, and the
//!   authentication key. It never goes on a unit.
//! - the **unit part** (`NAME.unit.toml`), on every unit (in the image
//!   through the profile, or on a unit's seed): the recipients backups are
//!   encrypted to and the authentication keys. A unit can make a backup and
//!   verify one, but cannot read a backup another unit made.
//!
//! Whoever holds a unit part (a unit's disk, an image built with it) can make
//! an archive that a restore accepts, but can read none. Rotation: a unit
//! part may carry several recipients and keys: backups are encrypted to
//! every recipient, authenticated with the first key, and any key verifies.

use std::path::Path;

use age::secrecy::ExposeSecret;
use anyhow::{Context, Result, bail};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

/// Version of the key files.
pub const VERSION: u32 = 1;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A 32-byte authentication key.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey([u8; 32]);

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

impl AuthKey {
    fn generate() -> Result<Self> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(AuthKey(k))
    }

    fn parse(s: &str, what: &str) -> Result<Self> {
        let b = hex::decode(s.trim()).with_context(|| format!("{what}: not hexadecimal"))?;
        let k: [u8; 32] = b
            .try_into()
            .map_err(|_| anyhow::anyhow!("{what}: an authentication key is 64 hex digits"))?;
        Ok(AuthKey(k))
    }

    fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The tag of `data`, hex.
    pub fn tag(&self, data: &[u8]) -> String {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(data);
        hex::encode(m.finalize().into_bytes())
    }

    /// Whether `tag` (hex) is the tag of `data` (compared in constant time).
    pub fn verifies(&self, data: &[u8], tag: &str) -> bool {
        let Ok(t) = hex::decode(tag.trim()) else {
            return false;
        };
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(data);
        m.verify_slice(&t).is_ok()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    version: u32,
    created: String,
    identity: String,
    auth: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitFile {
    version: u32,
    recipients: Vec<String>,
    auth: Vec<String>,
}

/// The fleet key (laptop only).
#[derive(Clone)]
pub struct FleetKey {
    identity: age::x25519::Identity,
    auth: AuthKey,
    created: String,
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FleetKey({})", self.identity.to_public())
    }
}

/// The unit part of one or more fleet keys.
#[derive(Debug, Clone)]
pub struct UnitKey {
    /// Backups are encrypted to every one.
    pub recipients: Vec<age::x25519::Recipient>,
    /// The first authenticates new backups; any verifies.
    pub auth: Vec<AuthKey>,
}

/// Writes a secret file with mode 0600, atomically.
fn write_secret(path: &Path, text: &str) -> Result<()> {
    flypack_contracts::atomic::write_atomic(path, text.as_bytes(), 0o600)
}

fn read_private(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading the backup key {}", path.display()))
}

impl FleetKey {
    /// A new key.
    pub fn generate(created: &str) -> Result<Self> {
        Ok(FleetKey {
            identity: age::x25519::Identity::generate(),
            auth: AuthKey::generate()?,
            created: created.to_string(),
        })
    }

    /// Reads a fleet key file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_private(path)?;
        Self::parse(&text).with_context(|| format!("{} is not a Flypack fleet backup key", path.display()))
    }

    fn parse(text: &str) -> Result<Self> {
        let f: FleetFile = toml::from_str(text).map_err(|e| {
            if text.contains("recipients") {
                anyhow::anyhow!(
                    "this is a unit part (recipients and authentication only); restoring needs the fleet key it was made from"
                )
            } else {
                anyhow::anyhow!("{e}")
            }
        })?;
        if f.version != VERSION {
            bail!("key file version {} is not {VERSION}", f.version);
        }
        let identity: age::x25519::Identity = f
            .identity
            .parse()
            .map_err(|e| anyhow::anyhow!("identity: not an age X25519 secret key: {e}"))?;
        Ok(FleetKey {
            identity,
            auth: AuthKey::parse(&f.auth, "auth")?,
            created: f.created,
        })
    }

    /// The key file's text.
    pub fn to_toml(&self) -> String {
        format!(
            "# Flypack fleet backup key. SECRET: whoever holds this file can read every\n\
             # backup of the fleet. It never goes on a unit (units get the unit part).\n\
             # Keep a second copy offline (printed, or on a stick in the flight case):\n\
             # without it no backup of the fleet can be restored.\n\
             # Public recipient: {}\n\
             version = {VERSION}\n\
             created = \"{}\"\n\
             identity = \"{}\"\n\
             auth = \"{}\"\n",
            self.identity.to_public(),
            self.created,
            self.identity.to_string().expose_secret(),
            self.auth.hex()
        )
    }

    /// Writes the key file (0600).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_secret(path, &self.to_toml())
    }

    /// The public recipient.
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.identity.to_public()
    }

    /// The identity that decrypts.
    pub fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }

    /// The authentication key.
    pub fn auth(&self) -> &AuthKey {
        &self.auth
    }

    /// The unit part of this key.
    pub fn unit_part(&self) -> UnitKey {
        UnitKey {
            recipients: vec![self.recipient()],
            auth: vec![self.auth.clone()],
        }
    }
}

impl UnitKey {
    /// Reads a unit part, or the unit part of a fleet key file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_private(path)?;
        Self::parse(&text).with_context(|| format!("{} is not a Flypack backup key", path.display()))
    }

    /// Parses a unit part (or takes the unit part of a fleet key).
    pub fn parse(text: &str) -> Result<Self> {
        if let Ok(k) = FleetKey::parse(text) {
            return Ok(k.unit_part());
        }
        let f: UnitFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        if f.version != VERSION {
            bail!("key file version {} is not {VERSION}", f.version);
        }
        if f.recipients.is_empty() || f.auth.is_empty() {
            bail!("a unit part needs at least one recipient and one auth key");
        }
        let recipients = f
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.parse::<age::x25519::Recipient>()
                    .map_err(|e| anyhow::anyhow!("recipients[{i}]: not an age X25519 recipient: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let auth = f
            .auth
            .iter()
            .enumerate()
            .map(|(i, a)| AuthKey::parse(a, &format!("auth[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(UnitKey { recipients, auth })
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let q = |v: Vec<String>| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
        format!(
            "# Flypack backup key, unit part. Units encrypt backups to these recipients\n\
             # (only the fleet key decrypts them) and authenticate them with the first\n\
             # auth key; any auth key verifies. Secret: it lets its holder make backups\n\
             # that a restore accepts. Mode 0600.\n\
             version = {VERSION}\n\
             recipients = [{}]\n\
             auth = [{}]\n",
            q(self.recipients.iter().map(|r| r.to_string()).collect()),
            q(self.auth.iter().map(AuthKey::hex).collect())
        )
    }

    /// Writes the file (0600).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_secret(path, &self.to_toml())
    }

    /// Adds another key's unit part (rotation: encrypt to both, accept both).
    pub fn merge(&mut self, other: &UnitKey) {
        for r in &other.recipients {
            if !self.recipients.iter().any(|x| x.to_string() == r.to_string()) {
                self.recipients.push(r.clone());
            }
        }
        for a in &other.auth {
            if !self.auth.contains(a) {
                self.auth.push(a.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_parts_hold_no_identity() {
        let k = FleetKey::generate("2026-11-28T00:00:00Z").unwrap();
        let back = FleetKey::parse(&k.to_toml()).unwrap();
        assert_eq!(back.recipient().to_string(), k.recipient().to_string());
        assert_eq!(back.auth, k.auth);
        let unit = k.unit_part().to_toml();
        assert!(!unit.contains("AGE-SECRET-KEY"), "{unit}");
        assert!(unit.contains(&k.recipient().to_string()));
        let u = UnitKey::parse(&unit).unwrap();
        assert_eq!(u.auth, vec![k.auth.clone()]);
        // A unit part is not a fleet key: restoring says what is missing.
        let e = format!("{:#}", FleetKey::parse(&unit).unwrap_err());
        assert!(e.contains("unit part"), "{e}");
        // A fleet key file given where a unit part is expected: its unit part.
        assert_eq!(UnitKey::parse(&k.to_toml()).unwrap().auth, vec![k.auth.clone()]);
    }

    #[test]
    fn tags_verify_only_with_their_key_and_data() {
        let a = AuthKey::generate().unwrap();
        let b = AuthKey::generate().unwrap();
        let t = a.tag(b"manifest");
        assert!(a.verifies(b"manifest", &t));
        assert!(!a.verifies(b"manifesT", &t));
        assert!(!b.verifies(b"manifest", &t));
        assert!(!a.verifies(b"manifest", "zz"));
    }

    #[test]
    fn bad_key_files_name_the_problem() {
        for (text, want) in [
            ("version = 1\nrecipients = []\nauth = []\n", "at least one"),
            (
                "version = 1\nrecipients = [\"age1nope\"]\nauth = [\"00\"]\n",
                "recipients[0]",
            ),
            ("version = 2\nrecipients = [\"x\"]\nauth = [\"x\"]\n", "version 2"),
        ] {
            let e = format!("{:#}", UnitKey::parse(text).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
