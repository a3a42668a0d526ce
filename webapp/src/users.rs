//! Local users (`/var/lib/flypack/webapp/users.json`): name, role, argon2id
//! password hash, optional TOTP secret. Written atomically, mode 0600.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use crate::role::Role;

/// users.json schema version.
pub const USERS_SCHEMA: u32 = 1;
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

/// Hashes a password with argon2id (default parameters: 19 MiB, 2 passes),
/// as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    crate::security::random_bytes(&mut salt);
    // Encoding 16 random bytes as a salt and hashing with the default
    // parameters cannot fail (their limits are far away).
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// Whether `password` matches the PHC `hash` (false for a malformed hash).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(e) => {
            tracing::warn!("malformed password hash: {e}");
            false
        }
    }
}

/// Checks a user name: 1-32 of a-z, 0-9, '.', '_', '-', starting with a letter.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if !ok {
        bail!(
            "{name:?} is not a user name: expected 1-32 lower-case letters, digits, '.', '_' or '-', starting with a letter"
        );
    }
    Ok(())
}

/// Checks a new password.
pub fn check_password(pw: &str) -> Result<()> {
    if pw.chars().count() < MIN_PASSWORD {
        bail!("the password is too short: use at least {MIN_PASSWORD} characters");
    }
    if pw.len() > 256 {
        bail!("the password is too long: at most 256 bytes");
    }
    Ok(())
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
    /// TOTP secret (base32), when the user turned TOTP on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<String>,
    /// When the user was made (RFC 3339).
    pub created: String,
}

/// users.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// [`USERS_SCHEMA`].
    pub version: u32,
    /// Users.
    pub users: Vec<User>,
}

/// What a login attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCheck {
    /// Password (and TOTP code, when on) right.
    Ok(User),
    /// Password right, TOTP on, and no code given.
    NeedCode,
    /// Wrong name, password or code.
    Wrong,
}

/// The users, in memory, written through to users.json.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    inner: Mutex<UsersFile>,
    /// Last TOTP time step used per user (a code works once).
    totp_steps: Mutex<HashMap<String, u64>>,
    dummy_hash: String,
}

impl Users {
    /// Loads users.json under `root` (none yet: no users).
    pub fn load(root: &Path) -> Result<Users> {
        let path = crate::paths::under(root, crate::paths::USERS);
        let file = match std::fs::read_to_string(&path) {
            Ok(t) => {
                let f: UsersFile = serde_json::from_str(&t).with_context(|| format!("parsing {}", path.display()))?;
                if f.version != USERS_SCHEMA {
                    bail!(
                        "{}: version {} (this web app reads {USERS_SCHEMA})",
                        path.display(),
                        f.version
                    );
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => UsersFile {
                version: USERS_SCHEMA,
                users: vec![],
            },
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Users {
            path,
            inner: Mutex::new(file),
            totp_steps: Mutex::new(HashMap::new()),
            dummy_hash: hash_password("not a password of anyone"),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UsersFile> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, f: &UsersFile) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_vec_pretty(f).context("serialising users")?;
        flypack_contracts::atomic::write_atomic(&self.path, &text, 0o600)
    }

    /// Every user, by name.
    pub fn list(&self) -> Vec<User> {
        let mut v = self.lock().users.clone();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One user.
    pub fn get(&self, name: &str) -> Option<User> {
        self.lock().users.iter().find(|u| u.name == name).cloned()
    }

    /// Whether there is any user.
    pub fn is_empty(&self) -> bool {
        self.lock().users.is_empty()
    }

    /// Whether there is an admin.
    pub fn has_admin(&self) -> bool {
        self.lock().users.iter().any(|u| u.role == Role::Admin)
    }

    /// Adds a user with an already hashed password.
    pub fn add_hashed(&self, name: &str, role: Role, password_hash: &str) -> Result<()> {
        check_name(name)?;
        let mut f = self.lock();
        if f.users.iter().any(|u| u.name == name) {
            bail!("user {name:?} exists already");
        }
        let mut next = f.clone();
        next.users.push(User {
            name: name.to_string(),
            role,
            password_hash: password_hash.to_string(),
            totp_secret: None,
            created: crate::security::now_rfc3339(),
        });
        self.save(&next)?;
        *f = next;
        Ok(())
    }

    /// Adds a user.
    pub fn add(&self, name: &str, role: Role, password: &str) -> Result<()> {
        check_name(name)?;
        check_password(password)?;
        self.add_hashed(name, role, &hash_password(password))
    }

    /// Changes a user with `f`, and saves.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut User) -> Result<()>) -> Result<()> {
        let mut file = self.lock();
        let mut next = file.clone();
        let u = next
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .with_context(|| format!("no user {name:?}"))?;
        f(u)?;
        if !next.users.iter().any(|u| u.role == Role::Admin) && file.users.iter().any(|u| u.role == Role::Admin) {
            bail!("this would leave no admin");
        }
        self.save(&next)?;
        *file = next;
        Ok(())
    }

    /// Replaces every user with `next` (checked by the caller), and saves.
    pub fn replace(&self, next: UsersFile) -> Result<()> {
        let mut file = self.lock();
        self.save(&next)?;
        *file = next;
        Ok(())
    }

    /// Removes a user (never the last admin).
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut file = self.lock();
        let mut next = file.clone();
        let before = next.users.len();
        next.users.retain(|u| u.name != name);
        if next.users.len() == before {
            bail!("no user {name:?}");
        }
        if !next.users.iter().any(|u| u.role == Role::Admin) {
            bail!("{name:?} is the last admin");
        }
        self.save(&next)?;
        *file = next;
        Ok(())
    }

    /// Checks a login. Takes as long for an unknown name as for a known one.
    pub fn check_login(&self, name: &str, password: &str, code: &str) -> LoginCheck {
        let Some(user) = self.get(name) else {
            verify_password(&self.dummy_hash, password);
            return LoginCheck::Wrong;
        };
        if !verify_password(&user.password_hash, password) {
            return LoginCheck::Wrong;
        }
        match &user.totp_secret {
            None => LoginCheck::Ok(user),
            Some(_) if code.trim().is_empty() => LoginCheck::NeedCode,
            Some(secret) => {
                if self.check_totp(&user.name, secret, code) {
                    LoginCheck::Ok(user)
                } else {
                    LoginCheck::Wrong
                }
            }
        }
    }

    /// Checks a TOTP code for `name` (each time step works once).
    pub fn check_totp(&self, name: &str, secret: &str, code: &str) -> bool {
        let Ok(totp) = totp_from_secret(secret) else {
            return false;
        };
        let code = code.trim();
        let now = crate::security::unix_now();
        let mut steps = self.totp_steps.lock().unwrap_or_else(|e| e.into_inner());
        let last = steps.get(name).copied().unwrap_or(0);
        // The current step and one either side (clock drift on a phone).
        for step in [now / 30, (now / 30).saturating_sub(1), now / 30 + 1] {
            if step > last && totp.generate(step * 30) == code {
                steps.insert(name.to_string(), step);
                return true;
            }
        }
        false
    }
}

/// A new TOTP secret (160 random bits, base32).
pub fn new_totp_secret() -> String {
    let mut b = [0u8; 20];
    crate::security::random_bytes(&mut b);
    match totp_rs::Secret::Raw(b.to_vec()).to_encoded() {
        totp_rs::Secret::Encoded(s) => s,
        totp_rs::Secret::Raw(_) => unreachable!("to_encoded gives Encoded"),
    }
}

/// The TOTP (RFC 6238: SHA-1, 6 digits, 30 s) of a base32 secret.
pub fn totp_from_secret(secret: &str) -> Result<totp_rs::TOTP> {
    let bytes = totp_rs::Secret::Encoded(secret.to_string())
        .to_bytes()
        .map_err(|e| anyhow::anyhow!("TOTP secret: {e:?}"))?;
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).map_err(|e| anyhow::anyhow!("TOTP secret: {e}"))
}

/// The otpauth:// URI an authenticator app takes.
pub fn otpauth_uri(issuer: &str, name: &str, secret: &str) -> String {
    let enc = crate::pages::jobs::path_segment;
    format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(issuer),
        enc(name),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterx"));
        assert!(!verify_password("garbage", "x"));
        assert_ne!(h, hash_password("correct horse battery"), "salted");
    }

    #[test]
    fn names_and_passwords_are_checked() {
        for ok in ["admin", "a", "jo.smith", "cam-op_2"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "Admin", "1abc", "a b", "a/b", &"a".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_password("short").is_err());
        check_password("long enough!").unwrap();
    }

    #[test]
    fn users_persist_and_the_last_admin_stays() {
        let dir = tempfile::tempdir().unwrap();
        let u = Users::load(dir.path()).unwrap();
        assert!(u.is_empty());
        u.add("admin", Role::Admin, "admin password 1").unwrap();
        u.add("op", Role::Operator, "operator password").unwrap();
        assert!(u.add("op", Role::Viewer, "another password").is_err());
        assert!(u.remove("admin").is_err());
        assert!(
            u.update("admin", |x| {
                x.role = Role::Viewer;
                Ok(())
            })
            .is_err()
        );
        let again = Users::load(dir.path()).unwrap();
        assert_eq!(again.list().len(), 2);
        assert!(matches!(
            again.check_login("op", "operator password", ""),
            LoginCheck::Ok(_)
        ));
        assert_eq!(again.check_login("op", "wrong", ""), LoginCheck::Wrong);
        assert_eq!(again.check_login("nobody", "operator password", ""), LoginCheck::Wrong);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("var/lib/flypack/webapp/users.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn totp_codes_work_once() {
        let dir = tempfile::tempdir().unwrap();
        let u = Users::load(dir.path()).unwrap();
        u.add("eng", Role::Engineer, "engineer password").unwrap();
        let secret = new_totp_secret();
        u.update("eng", |x| {
            x.totp_secret = Some(secret.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(u.check_login("eng", "engineer password", ""), LoginCheck::NeedCode);
        let code = totp_from_secret(&secret).unwrap().generate(crate::security::unix_now());
        assert!(matches!(
            u.check_login("eng", "engineer password", &code),
            LoginCheck::Ok(_)
        ));
        assert_eq!(
            u.check_login("eng", "engineer password", &code),
            LoginCheck::Wrong,
            "replayed"
        );
        assert!(otpauth_uri("Flypack fp-01", "eng", &secret).starts_with("otpauth://totp/Flypack%20fp-01:eng?secret="));
    }
}
