//! Sessions: a random token in a cookie (`__Host-flypack`, HttpOnly, Secure,
//! SameSite=Strict); on disk only its SHA-256, the user, the CSRF token and
//! the times. Sessions end after an idle time and an absolute time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The session cookie's name (the `__Host-` prefix pins it to this host, Secure, Path=/).
pub const COOKIE: &str = "__Host-flypack";
/// The pre-session cookie that protects the login and enrolment forms (double submit).
pub const PRE_COOKIE: &str = "__Host-flypack-pre";
/// sessions.json schema version.
pub const SESSIONS_SCHEMA: u32 = 1;

/// The id a session is stored under: the SHA-256 of its token, in hex.
pub fn token_id(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// [`token_id`] of the cookie's token.
    pub id: String,
    /// User name.
    pub user: String,
    /// The CSRF token every mutating request of this session carries.
    pub csrf: String,
    /// Login time, Unix seconds.
    pub created: u64,
    /// Last request, Unix seconds.
    pub last_seen: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsFile {
    version: u32,
    sessions: Vec<Session>,
}

/// The sessions, in memory, written through to sessions.json.
#[derive(Debug)]
pub struct Sessions {
    path: PathBuf,
    map: Mutex<HashMap<String, Session>>,
    idle: u64,
    absolute: u64,
}

impl Sessions {
    /// Loads sessions.json under `root` (expired ones are dropped).
    pub fn load(root: &Path, idle_secs: u64, absolute_secs: u64) -> Result<Sessions> {
        let path = crate::paths::under(root, crate::paths::SESSIONS);
        let mut map = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(t) => match serde_json::from_str::<SessionsFile>(&t) {
                Ok(f) if f.version == SESSIONS_SCHEMA => {
                    for s in f.sessions {
                        map.insert(s.id.clone(), s);
                    }
                }
                // Sessions are not worth refusing to start for: everyone logs in again.
                Ok(_) | Err(_) => tracing::warn!("{}: unreadable, starting with no sessions", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        let s = Sessions {
            path,
            map: Mutex::new(map),
            idle: idle_secs,
            absolute: absolute_secs,
        };
        let now = crate::security::unix_now();
        s.lock().retain(|_, x| s.alive(x, now));
        Ok(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alive(&self, s: &Session, now: u64) -> bool {
        now.saturating_sub(s.last_seen) < self.idle && now.saturating_sub(s.created) < self.absolute
    }

    fn save(&self, map: &HashMap<String, Session>) {
        let mut sessions: Vec<Session> = map.values().cloned().collect();
        sessions.sort_by(|a, b| a.id.cmp(&b.id));
        let f = SessionsFile {
            version: SESSIONS_SCHEMA,
            sessions,
        };
        let r = serde_json::to_vec(&f).context("serialising sessions").and_then(|t| {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            flypack_contracts::atomic::write_atomic(&self.path, &t, 0o600)
        });
        // Sessions survive a restart when this works; when it does not, the
        // app goes on (users log in again after a restart) and says why.
        if let Err(e) = r {
            tracing::warn!("saving sessions: {e:#}");
        }
    }

    /// Starts a session for `user`; returns its token (for the cookie).
    pub fn create(&self, user: &str) -> (String, Session) {
        let token = crate::security::random_token();
        let now = crate::security::unix_now();
        let s = Session {
            id: token_id(&token),
            user: user.to_string(),
            csrf: crate::security::random_token(),
            created: now,
            last_seen: now,
        };
        let mut m = self.lock();
        m.retain(|_, x| self.alive(x, now));
        m.insert(s.id.clone(), s.clone());
        self.save(&m);
        (token, s)
    }

    /// The live session of a cookie token; touches it.
    pub fn get(&self, token: &str) -> Option<Session> {
        let id = token_id(token);
        let now = crate::security::unix_now();
        let mut m = self.lock();
        let s = m.get_mut(&id)?;
        if !self.alive(s, now) {
            m.remove(&id);
            self.save(&m);
            return None;
        }
        // Written to disk at most once a minute per session.
        let persist = now.saturating_sub(s.last_seen) >= 60;
        s.last_seen = now;
        let out = s.clone();
        if persist {
            self.save(&m);
        }
        Some(out)
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        let mut m = self.lock();
        if m.remove(id).is_some() {
            self.save(&m);
        }
    }

    /// Ends every session of a user (deleted, or password changed) except `keep`.
    pub fn remove_user(&self, user: &str, keep: Option<&str>) {
        let mut m = self.lock();
        let before = m.len();
        m.retain(|id, s| s.user != user || Some(id.as_str()) == keep);
        if m.len() != before {
            self.save(&m);
        }
    }

    /// The Set-Cookie value for a new session.
    pub fn cookie(&self, token: &str) -> String {
        format!(
            "{COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            self.absolute
        )
    }
}

/// The Set-Cookie value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// The value of cookie `name` in a Cookie header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_idle_and_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::load(dir.path(), 600, 3600).unwrap();
        let (tok, sess) = s.create("op");
        assert_eq!(s.get(&tok).unwrap().user, "op");
        assert_eq!(sess.id, token_id(&tok));
        assert!(s.get("other").is_none());
        // Loaded again (a restart), the session is still there.
        let again = Sessions::load(dir.path(), 600, 3600).unwrap();
        assert_eq!(again.get(&tok).unwrap().csrf, sess.csrf);
        // The same file read with a shorter absolute limit: gone.
        let strict = Sessions::load(dir.path(), 600, 0).unwrap();
        assert!(strict.get(&tok).is_none());
        s.remove_user("op", None);
        assert!(s.get(&tok).is_none());
    }

    #[test]
    fn cookies_have_the_flags_and_parse() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::load(dir.path(), 600, 3600).unwrap();
        let c = s.cookie("abc");
        assert_eq!(
            c,
            "__Host-flypack=abc; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Strict"
        );
        assert_eq!(cookie_value("a=1; __Host-flypack=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie_value("a=1", COOKIE), None);
    }
}
