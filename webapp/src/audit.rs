//! The audit log: every action (who, when, what, result) as one JSON line in
//! `/var/lib/flypack/webapp/audit.jsonl`, and in the journal (stderr).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// Who (user name, or `-` before login).
    pub user: String,
    /// From where.
    pub addr: String,
    /// What (`login`, `action.qa`, `job.start`, `user.add`, ...).
    pub action: String,
    /// Details (the service, the playbook, the user changed, ...).
    pub detail: String,
    /// `ok`, `refused`, `failed: ...`.
    pub result: String,
}

/// The audit log.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Audit {
    /// The log under `root`.
    pub fn new(root: &Path) -> Audit {
        Audit {
            path: crate::paths::under(root, crate::paths::AUDIT),
            lock: Mutex::new(()),
        }
    }

    /// Records one event; a failure to write is logged (the action already happened).
    pub fn record(&self, user: &str, addr: &str, action: &str, detail: &str, result: &str) {
        let r = Record {
            time: crate::security::now_rfc3339(),
            user: user.to_string(),
            addr: addr.to_string(),
            action: action.to_string(),
            detail: detail.to_string(),
            result: result.to_string(),
        };
        tracing::info!(target: "audit", user = %r.user, addr = %r.addr, action = %r.action, detail = %r.detail, result = %r.result, "audit");
        if let Err(e) = self.append(&r) {
            tracing::error!("writing the audit log: {e:#}");
        }
    }

    fn append(&self, r: &Record) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = serde_json::to_vec(r).context("serialising an audit record")?;
        line.push(b'\n');
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        f.write_all(&line)
            .and_then(|_| f.sync_data())
            .with_context(|| format!("appending to {}", self.path.display()))
    }

    /// The last `n` records, newest first.
    pub fn tail(&self, n: usize) -> Result<Vec<Record>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        Ok(text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str(l).ok())
            .take(n)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::new(dir.path());
        a.record("op", "127.0.0.1", "action.qa", "", "ok");
        a.record("eng", "127.0.0.1", "job.start", "diagnostics.yml", "ok");
        let t = a.tail(10).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].user, "eng");
        assert_eq!(t[1].action, "action.qa");
        let raw = std::fs::read_to_string(dir.path().join("var/lib/flypack/webapp/audit.jsonl")).unwrap();
        assert_eq!(raw.lines().count(), 2);
    }
}
