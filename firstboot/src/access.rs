//! Rotating the unit's SSH keys without locking anyone out.
//!
//! `firstboot access keys --unit FILE --confirm-within SECS` takes the
//! `[access] ssh_authorized_keys` of FILE (this unit's config, as the fleet
//! files now say it) and puts them in force at once: the admins' keys files
//! (`/etc/flypack/ssh/ADMIN.keys`, which sshd reads) are rewritten. The old
//! files are saved first and a rollback is armed (the same deadline as a
//! network change): unless `firstboot access confirm` comes within SECS,
//! over a connection that logged in with a new key, the old files come back
//! by themselves. Only a confirmed set is written into the config in force,
//! so a power cut before the confirm also ends on the old keys (the boot
//! rolls back an expired change).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flypack_contracts::atomic::{remove_any, write_atomic};
use flypack_contracts::unit::{Unit, parse_unit, validate};
use serde::{Deserialize, Serialize};

use crate::deadline::{self, now_secs};
use crate::root::Root;
use crate::stages::identity::{self, KEYS_DIR};

/// Where a pending key change lives.
pub const PENDING: &str = "/var/lib/flypack/access/pending.json";

/// The key change's deadline.
const DEADLINE: deadline::Kind = deadline::Kind {
    subcommand: "access",
    unit_prefix: "flypack-access-rollback-",
    description: "Flypack: roll back unconfirmed SSH keys",
};

/// A key change waiting for `firstboot access confirm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// Identifies this change.
    pub token: String,
    /// Seconds since the epoch after which it rolls back.
    pub deadline: u64,
    /// Each admin's keys file before the change (None: there was none).
    pub previous: BTreeMap<String, Option<String>>,
    /// The config in force with the new keys (written when confirmed).
    pub unit: String,
}

/// What `set_keys` did.
#[derive(Debug)]
pub enum Set {
    /// The keys in force are those already.
    Unchanged,
    /// In force, waiting for the confirm.
    Pending(Pending),
}

/// The keys of `file`, a unit config that must be this unit's.
pub fn keys_from_unit(root: &Root, file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let given = parse_unit(file, &text)?;
    let here = crate::config::in_force_required(root)?;
    if given.hostname != here.hostname {
        bail!(
            "{} is the config of {}, and this unit is {}: nothing changed",
            file.display(),
            given.hostname.as_str(),
            here.hostname.as_str()
        );
    }
    Ok(given.access.ssh_authorized_keys.clone())
}

/// Reads the pending change, if any.
pub fn pending(root: &Root) -> Result<Option<Pending>> {
    match std::fs::read(root.path(PENDING)) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).context("reading the pending SSH key change")?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("reading the pending SSH key change"),
    }
}

fn keys_file(root: &Root, admin: &str) -> PathBuf {
    root.path(KEYS_DIR).join(format!("{admin}.keys"))
}

fn current_files(root: &Root) -> Result<BTreeMap<String, Option<String>>> {
    let mut m = BTreeMap::new();
    for a in identity::admins(root) {
        let p = keys_file(root, &a);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        m.insert(a, text);
    }
    Ok(m)
}

/// Puts `keys` in force with a rollback armed for `secs` seconds.
pub fn set_keys(root: &Root, keys: Vec<String>, secs: u64, self_exe: &Path) -> Result<Set> {
    if let Some(p) = pending(root)? {
        bail!(
            "an SSH key change ({}) is already waiting for confirmation: run `firstboot access confirm` \
             or `firstboot access rollback` first",
            p.token
        );
    }
    if keys.is_empty() {
        bail!("no SSH keys given: that would lock every admin out; list at least one in [access] ssh_authorized_keys");
    }
    let here = crate::config::in_force_required(root)?;
    let mut raw = (*here).clone();
    raw.access.ssh_authorized_keys = keys;
    let next: Unit = validate(Path::new(crate::config::RESOLVED), "", raw)?;
    let previous = current_files(root)?;
    if previous.is_empty() {
        bail!("this unit has no admins (members of the sudo group): nobody to give the keys to");
    }
    let want = identity::keys_text(&next.access.ssh_authorized_keys);
    if here.access.ssh_authorized_keys == next.access.ssh_authorized_keys
        && previous.values().all(|t| t.as_deref() == Some(want.as_str()))
    {
        return Ok(Set::Unchanged);
    }
    let pend = Pending {
        token: deadline::token(),
        deadline: now_secs() + secs,
        previous,
        unit: next.to_toml(),
    };
    let p = root.path(PENDING);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Armed before anything changes: a crash from here on still rolls back.
    write_atomic(&p, &serde_json::to_vec_pretty(&pend)?, 0o600)?;
    deadline::arm(root, DEADLINE, &pend.token, secs, self_exe)?;
    if let Err(e) = identity::authorized_keys(root, &next.access.ssh_authorized_keys) {
        restore(root, &pend)?;
        return Err(e.context("writing the new keys (the old ones are back)"));
    }
    Ok(Set::Pending(pend))
}

fn restore(root: &Root, p: &Pending) -> Result<()> {
    for (admin, text) in &p.previous {
        let f = keys_file(root, admin);
        match text {
            Some(t) => write_atomic(&f, t.as_bytes(), 0o644)?,
            None => remove_any(&f)?,
        }
    }
    remove_any(&root.path(PENDING))?;
    deadline::disarm(root, DEADLINE, &p.token);
    Ok(())
}

/// Keeps the pending keys: they go into the config in force. Returns the
/// change's token, and what keeping it changed.
pub fn confirm(root: &Root) -> Result<(String, crate::config::Persisted)> {
    let Some(p) = pending(root)? else {
        bail!("no SSH key change is waiting for confirmation (it may have rolled back: its deadline passed)")
    };
    if now_secs() > p.deadline {
        // Its rollback is due (or was lost with a reboot): it wins.
        restore(root, &p)?;
        bail!(
            "SSH key change {} came too late for its confirm: the old keys are back",
            p.token
        );
    }
    let unit = parse_unit(Path::new("pending"), &p.unit)?;
    let persisted = crate::config::persist_local_because(
        root,
        &unit,
        "SSH keys set on the unit with `firstboot access keys` and confirmed",
    )?;
    remove_any(&root.path(PENDING))?;
    deadline::disarm(root, DEADLINE, &p.token);
    Ok((p.token, persisted))
}

/// Puts the old keys back (only the change `if_pending` names, when given);
/// returns the change rolled back.
pub fn rollback(root: &Root, if_pending: Option<&str>) -> Result<Option<String>> {
    match pending(root)? {
        Some(p) if if_pending.is_none_or(|t| t == p.token) => {
            restore(root, &p)?;
            Ok(Some(p.token))
        }
        _ => Ok(None),
    }
}

/// At boot: a change still pending after its deadline is rolled back.
pub fn rollback_expired(root: &Root) -> Result<Option<String>> {
    match pending(root)? {
        Some(p) if now_secs() >= p.deadline => rollback(root, Some(&p.token)),
        _ => Ok(None),
    }
}

/// Other files that let keys in for the admins, which this does not change
/// (`~/.ssh/authorized_keys`, from the image's profile): (file, keys).
pub fn other_key_files(root: &Root) -> Vec<(String, usize)> {
    let passwd = std::fs::read_to_string(root.path("/etc/passwd")).unwrap_or_default();
    let mut out = Vec::new();
    for a in identity::admins(root) {
        let Some(home) = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 6 && f[0] == a)
            .map(|f| f[5].to_string())
        else {
            continue;
        };
        let abs = format!("{}/.ssh/authorized_keys", home.trim_end_matches('/'));
        if let Ok(t) = std::fs::read_to_string(root.path(&abs)) {
            let n = t
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .count();
            if n > 0 {
                out.push((abs, n));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
