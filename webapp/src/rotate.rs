//! `flypack-web users apply FILE`: the web users a fleet hands to every unit
//! (`fleet/rotate-access.yml`), merged into the unit's users.json.
//!
//! The file comes from the engineer's laptop, but it is read as an
//! attacker's: names are checked, roles are the four known ones, and a
//! password hash must be an argon2id PHC string whose cost a unit can afford
//! at every login (a hash asking for 4 GiB per verification would be a
//! denial of service). Users the file lists are added or brought to its
//! role and hash (their sessions end when either changes); users it retires
//! are removed with their sessions; users it does not mention are left
//! alone. The web app must not be running (it holds users in memory and
//! would write its own copy back): the service lock says so.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, bail};
use argon2::password_hash::PasswordHash;
use serde::Deserialize;

use crate::role::Role;
use crate::users::{User, UsersFile};

/// The file's schema version.
pub const SCHEMA: u32 = 1;
/// The largest file read.
const MAX_FILE: u64 = 256 * 1024;
/// The most users one file may list.
const MAX_USERS: usize = 200;
/// The largest argon2 memory cost accepted, KiB (the default is 19456).
const MAX_M_KIB: u32 = 64 * 1024;
/// The most argon2 passes accepted (the default is 2).
const MAX_T: u32 = 8;
/// The most argon2 lanes accepted (the default is 1).
const MAX_P: u32 = 4;

/// The lock the serving web app holds (`flypack-web serve`), under the root.
pub const SERVE_LOCK: &str = "/var/lib/flypack/webapp/serve.lock";

/// One user as the fleet file gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetUser {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// argon2id PHC string (`flypack-web hash-password`).
    pub password_hash: String,
}

/// The fleet's web users file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetUsers {
    /// [`SCHEMA`].
    pub version: u32,
    /// Users to remove from every unit.
    #[serde(default)]
    pub retire: Vec<String>,
    /// Users every unit has, with this role and password.
    #[serde(default)]
    pub users: Vec<FleetUser>,
}

/// Checks that `hash` is an argon2id hash a unit can verify at every login.
pub fn check_hash(hash: &str) -> Result<()> {
    let h = PasswordHash::new(hash).map_err(|e| anyhow::anyhow!("not a PHC password hash ({e})"))?;
    if h.algorithm.as_str() != "argon2id" {
        bail!("the hash is {}, not argon2id", h.algorithm);
    }
    if h.version != Some(0x13) {
        bail!("the hash is not argon2 version 19");
    }
    let p = argon2::Params::try_from(&h).map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    if p.m_cost() > MAX_M_KIB || p.t_cost() > MAX_T || p.p_cost() > MAX_P {
        bail!(
            "the hash asks for m={} KiB, t={}, p={}: at most m={MAX_M_KIB}, t={MAX_T}, p={MAX_P} \
             (every login on a unit pays it)",
            p.m_cost(),
            p.t_cost(),
            p.p_cost()
        );
    }
    if h.hash.is_none() || h.salt.is_none() {
        bail!("the hash has no salt or no output");
    }
    Ok(())
}

/// Reads and checks the fleet's web users file.
pub fn read(path: &Path) -> Result<FleetUsers> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_FILE + 1), &mut text)
        .with_context(|| format!("reading {} (UTF-8 TOML)", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        bail!(
            "{}: larger than {} KiB, not a web users file",
            path.display(),
            MAX_FILE / 1024
        );
    }
    let f: FleetUsers = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut problems = Vec::new();
    if f.version != SCHEMA {
        problems.push(format!("version = {} (this web app reads {SCHEMA})", f.version));
    }
    if f.users.len() > MAX_USERS {
        problems.push(format!("{} users: at most {MAX_USERS}", f.users.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, u) in f.users.iter().enumerate() {
        if let Err(e) = crate::users::check_name(&u.name) {
            problems.push(format!("users[{i}].name: {e}"));
        }
        if let Err(e) = check_hash(&u.password_hash) {
            problems.push(format!(
                "users[{i}].password_hash ({}): {e}; make one with `flypack-web hash-password`",
                u.name
            ));
        }
        if !seen.insert(u.name.as_str()) {
            problems.push(format!("users[{i}].name: {:?} is listed twice", u.name));
        }
    }
    for (i, n) in f.retire.iter().enumerate() {
        if let Err(e) = crate::users::check_name(n) {
            problems.push(format!("retire[{i}]: {e}"));
        }
        if seen.contains(n.as_str()) {
            problems.push(format!("retire[{i}]: {n:?} is also in users: keep it or retire it"));
        }
    }
    if !problems.is_empty() {
        bail!("{}: {}", path.display(), problems.join("; "));
    }
    Ok(f)
}

/// What applying the file does to one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Not on the unit: added.
    Added(String),
    /// On the unit with another role or password: brought in line.
    Updated(String, Vec<&'static str>),
    /// Retired: removed.
    Removed(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(n) => write!(f, "added {n}"),
            Change::Updated(n, what) => write!(f, "updated {n} ({})", what.join(", ")),
            Change::Removed(n) => write!(f, "removed {n}"),
        }
    }
}

/// The users after applying `fleet` to `current`, and what changed.
pub fn plan(current: &UsersFile, fleet: &FleetUsers, now: &str) -> Result<(UsersFile, Vec<Change>)> {
    let mut next = current.clone();
    let mut changes = Vec::new();
    for n in &fleet.retire {
        let before = next.users.len();
        next.users.retain(|u| &u.name != n);
        if next.users.len() != before {
            changes.push(Change::Removed(n.clone()));
        }
    }
    for fu in &fleet.users {
        match next.users.iter_mut().find(|u| u.name == fu.name) {
            Some(u) => {
                let mut what = Vec::new();
                if u.role != fu.role {
                    u.role = fu.role;
                    what.push("role");
                }
                if u.password_hash != fu.password_hash {
                    u.password_hash = fu.password_hash.clone();
                    what.push("password");
                }
                if !what.is_empty() {
                    changes.push(Change::Updated(fu.name.clone(), what));
                }
            }
            None => {
                next.users.push(User {
                    name: fu.name.clone(),
                    role: fu.role,
                    password_hash: fu.password_hash.clone(),
                    totp_secret: None,
                    created: now.to_string(),
                });
                changes.push(Change::Added(fu.name.clone()));
            }
        }
    }
    let admin = |f: &UsersFile| f.users.iter().any(|u| u.role == Role::Admin);
    if admin(current) && !admin(&next) {
        bail!("this would leave the unit with no admin: keep one in users (role = \"admin\")");
    }
    Ok((next, changes))
}

/// Opens (making it when missing) the serve lock's file under `root`.
///
/// Opened read-only when it exists, so that the web app's own user can lock
/// a file root made, and root one the web app made.
pub fn lock_file(root: &Path) -> Result<File> {
    let p = crate::paths::under(root, SERVE_LOCK);
    match File::open(&p) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p)
                .with_context(|| format!("creating {}", p.display()))
        }
        Err(e) => Err(e).with_context(|| format!("opening {}", p.display())),
    }
}

/// Takes the serve lock: fails when a web app serves from `root`.
pub fn take_serve_lock(root: &Path, who: &str) -> Result<File> {
    let f = lock_file(root)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "the web app is running on this unit (it holds {}): {who}",
            crate::paths::under(root, SERVE_LOCK).display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).context("locking the web app's state"),
    }
}

/// Applies the fleet's web users file under `root`; returns what changed.
/// With `check`, changes nothing and only says what would change.
pub fn apply(root: &Path, config: &crate::config::Config, file: &Path, check: bool) -> Result<Vec<Change>> {
    let fleet = read(file)?;
    // A check reads only (users.json is replaced atomically).
    let _lock = if check {
        None
    } else {
        Some(take_serve_lock(
            root,
            "stop it first (systemctl stop flypack-web.service), apply, start it again; \
             the fleet playbook fleet/rotate-access.yml does this",
        )?)
    };
    let users = crate::users::Users::load(root)?;
    let current = UsersFile {
        version: crate::users::USERS_SCHEMA,
        users: users.list(),
    };
    let (next, changes) = plan(&current, &fleet, &crate::security::now_rfc3339())?;
    if check || changes.is_empty() {
        return Ok(changes);
    }
    users.replace(next)?;
    // Changed passwords or roles, and retired users: their sessions end.
    let sessions =
        crate::session::Sessions::load(root, config.login.idle_minutes * 60, config.login.absolute_hours * 3600)?;
    for c in &changes {
        if let Change::Updated(n, _) | Change::Removed(n) = c {
            sessions.remove_user(n, None);
        }
    }
    // Written by root here, read by the web app's own user: the files take
    // the owner of their folder (systemd's StateDirectory=).
    let dir = crate::paths::under(root, crate::paths::STATE_DIR);
    let owner = std::fs::metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
    for f in [crate::paths::USERS, crate::paths::SESSIONS, SERVE_LOCK] {
        let p = crate::paths::under(root, f);
        if p.exists() {
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid()))
                .with_context(|| format!("handing {} to the web app's user", p.display()))?;
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests;
