//! firstboot's journal: one JSON file, written atomically (temp file, fsync,
//! rename, fsync of the directory) after every change, so a power cut at any
//! moment leaves either the previous state or the new one.
//!
//! Each stage is marked `started` (with the digest of its inputs) before it
//! runs and `done` after. A stage found `started` was interrupted and runs
//! again; stages converge, so running one twice is safe.

use std::path::Path;

use anyhow::{Context, Result, bail};
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::status::StageState;
use serde::{Deserialize, Serialize};

/// Journal schema version.
pub const JOURNAL_SCHEMA: u32 = 1;
/// Runs remembered.
const KEEP_RUNS: usize = 20;

/// One run of `firstboot run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// firstboot version.
    pub version: String,
    /// When it started.
    pub started: String,
    /// The kernel's boot id, to tell boots apart.
    pub boot_id: String,
    /// Peak resident memory of this run (VmHWM), KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
}

/// This process's peak resident set size (VmHWM), KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// One stage's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage name.
    pub name: String,
    /// State.
    pub state: StageState,
    /// Times started.
    pub attempts: u32,
    /// Digest of the inputs of the last attempt.
    pub input_digest: String,
    /// Last start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Last finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Duration of the last finished attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// What it did, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// [`JOURNAL_SCHEMA`].
    pub schema: u32,
    /// Runs, oldest first (bounded).
    pub runs: Vec<RunRecord>,
    /// Stage records in the order they first ran.
    pub stages: Vec<StageRecord>,
}

impl Default for Journal {
    fn default() -> Self {
        Self {
            schema: JOURNAL_SCHEMA,
            runs: Vec::new(),
            stages: Vec::new(),
        }
    }
}

impl Journal {
    /// Loads the journal; a missing file is an empty journal.
    pub fn load(path: &Path) -> Result<Journal> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Journal::default()),
            Err(e) => return Err(e).with_context(|| format!("reading journal {}", path.display())),
        };
        let j: Journal = serde_json::from_slice(&bytes).with_context(|| {
            format!("journal {} is not valid: it is only ever replaced atomically, so this is disk corruption; move it away to start provisioning over", path.display())
        })?;
        if j.schema != JOURNAL_SCHEMA {
            bail!(
                "journal {} has schema {}, this firstboot reads {JOURNAL_SCHEMA}",
                path.display(),
                j.schema
            );
        }
        Ok(j)
    }

    /// Writes the journal atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let bytes = serde_json::to_vec_pretty(self).context("serialising the journal")?;
        write_atomic(path, &bytes, 0o600)
    }

    /// Records a run.
    pub fn add_run(&mut self, run: RunRecord) {
        self.runs.push(run);
        if self.runs.len() > KEEP_RUNS {
            let excess = self.runs.len() - KEEP_RUNS;
            self.runs.drain(..excess);
        }
    }

    /// The record of a stage.
    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The record of a stage, created pending if absent.
    pub fn stage_mut(&mut self, name: &str) -> &mut StageRecord {
        if let Some(i) = self.stages.iter().position(|s| s.name == name) {
            return &mut self.stages[i];
        }
        self.stages.push(StageRecord {
            name: name.to_string(),
            state: StageState::Pending,
            attempts: 0,
            input_digest: String::new(),
            started: None,
            finished: None,
            duration_ms: None,
            detail: None,
        });
        self.stages.last_mut().expect("just pushed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state/journal.json");
        assert_eq!(Journal::load(&p).unwrap(), Journal::default());
        let mut j = Journal::default();
        j.stage_mut("disk").state = StageState::Done;
        j.add_run(RunRecord {
            version: "0.1.0".into(),
            started: "t".into(),
            boot_id: "b".into(),
            peak_rss_kib: None,
        });
        j.save(&p).unwrap();
        assert_eq!(Journal::load(&p).unwrap(), j);
    }

    #[test]
    fn corrupt_journal_is_an_error_that_says_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal.json");
        std::fs::write(&p, b"{\"schema\":1,").unwrap();
        let e = format!("{:#}", Journal::load(&p).unwrap_err());
        assert!(e.contains("move it away"), "{e}");
    }

    #[test]
    fn runs_are_bounded() {
        let mut j = Journal::default();
        for i in 0..30 {
            j.add_run(RunRecord {
                version: "v".into(),
                started: i.to_string(),
                boot_id: String::new(),
                peak_rss_kib: None,
            });
        }
        assert_eq!(j.runs.len(), 20);
        assert_eq!(j.runs[0].started, "10");
    }
}
