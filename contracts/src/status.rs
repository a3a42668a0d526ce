//! The status contract: the verdict firstboot reaches, as printed on the
//! serial console (`FLYPACK-STATUS {json}`), returned by
//! `firstboot status --json` and written to the status file.
//!
//! Exit codes of `firstboot status` never change: 0 GO, 1 NO-GO,
//! 2 GO with warnings.

use serde::{Deserialize, Serialize};

/// Every status line starts with this (followed by one JSON object).
pub const STATUS_PREFIX: &str = "FLYPACK-STATUS ";
/// Version of the status JSON.
pub const STATUS_SCHEMA: u32 = 1;

/// The go/no-go verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Fit for the show.
    #[serde(rename = "GO")]
    Go,
    /// Fit for the show, with warnings worth reading.
    #[serde(rename = "GO-WITH-WARNINGS")]
    GoWithWarnings,
    /// Not fit: the reasons say why.
    #[serde(rename = "NO-GO")]
    NoGo,
}

impl Verdict {
    /// The exit code of `firstboot status` for this verdict (a contract).
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Go => 0,
            Verdict::NoGo => 1,
            Verdict::GoWithWarnings => 2,
        }
    }

    /// The verdict as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Go => "GO",
            Verdict::GoWithWarnings => "GO-WITH-WARNINGS",
            Verdict::NoGo => "NO-GO",
        }
    }

    /// The worse of two verdicts.
    pub fn worst(self, other: Verdict) -> Verdict {
        fn rank(v: Verdict) -> u8 {
            match v {
                Verdict::Go => 0,
                Verdict::GoWithWarnings => 1,
                Verdict::NoGo => 2,
            }
        }
        if rank(other) > rank(self) { other } else { self }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where provisioning stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provisioning {
    /// Stages are still running (or will run again after a restart).
    InProgress,
    /// Every stage finished.
    Done,
    /// A stage failed and firstboot gave up; the reasons say which.
    Failed,
}

/// State of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageState {
    /// Not started yet.
    Pending,
    /// Started and not finished (running now, or interrupted).
    Started,
    /// Finished.
    Done,
    /// Failed on its last attempt.
    Failed,
    /// Not applicable to this unit (the detail says why).
    Skipped,
}

/// One stage as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStatus {
    /// Stage name (`disk`, `identity`, `network`, `qa`, ...).
    pub name: String,
    /// Its state.
    pub state: StageState,
    /// How many times it was started.
    pub attempts: u32,
    /// Wall time of the last finished attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// What it did, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Summary of the last QA run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaSummary {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed (any severity, not waived).
    pub failed: u32,
    /// Failed checks covered by a valid waiver.
    pub waived: u32,
    /// Ids of failed critical checks.
    #[serde(default)]
    pub critical: Vec<String>,
    /// Ids of failed major/minor checks.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Ids of checks that did not run here (not applicable, or not the
    /// running system): named, never counted as passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Where the full report is on the unit.
    pub report: String,
}

/// A stack service's container as Docker reports it: its health when it has
/// a health check and is running, else its container state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Running, and its health check passes.
    Healthy,
    /// Running (no health check).
    Running,
    /// Running, health not known yet (within its start period).
    Starting,
    /// Running, and its health check fails.
    Unhealthy,
    /// Docker is restarting it (it exited; its restart policy applies).
    Restarting,
    /// Created, never started.
    Created,
    /// Paused.
    Paused,
    /// Stopping.
    Stopping,
    /// Exited.
    Exited,
    /// Dead (Docker could not stop or remove it).
    Dead,
    /// Being removed.
    Removing,
    /// No such container.
    Missing,
    /// Docker reported nothing usable.
    Unknown,
}

impl ServiceState {
    /// Whether a service in this state is up: healthy, or running when it
    /// has no health check.
    pub fn is_up(self, has_healthcheck: bool) -> bool {
        match self {
            ServiceState::Healthy => true,
            ServiceState::Running => !has_healthcheck,
            _ => false,
        }
    }

    /// Whether the container's process is running (whatever its health).
    pub fn is_running(self) -> bool {
        matches!(
            self,
            ServiceState::Healthy | ServiceState::Running | ServiceState::Starting | ServiceState::Unhealthy
        )
    }

    /// The state as printed (`healthy`, `exited`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Healthy => "healthy",
            ServiceState::Running => "running",
            ServiceState::Starting => "starting",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Restarting => "restarting",
            ServiceState::Created => "created",
            ServiceState::Paused => "paused",
            ServiceState::Stopping => "stopping",
            ServiceState::Exited => "exited",
            ServiceState::Dead => "dead",
            ServiceState::Removing => "removing",
            ServiceState::Missing => "missing",
            ServiceState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of one stack service (the monitoring stack).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Compose service name.
    pub name: String,
    /// Its state.
    pub state: ServiceState,
    /// Whether the verdict depends on it.
    pub critical: bool,
}

/// The status document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Version of this JSON ([`STATUS_SCHEMA`]).
    pub schema: u32,
    /// The verdict.
    pub verdict: Verdict,
    /// firstboot's version.
    pub version: String,
    /// The unit's hostname.
    pub hostname: String,
    /// When this status was computed (RFC 3339, UTC).
    pub time: String,
    /// Where provisioning stands.
    pub provisioning: Provisioning,
    /// Every stage, in order.
    pub stages: Vec<StageStatus>,
    /// The last QA run, once QA has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<QaSummary>,
    /// The stack's services, once the stack stage has run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceStatus>,
    /// Why the verdict is not GO, one human line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl Status {
    /// The console line: `FLYPACK-STATUS {json}` (no newline).
    pub fn to_line(&self) -> String {
        // Serialising plain data to JSON cannot fail.
        format!(
            "{STATUS_PREFIX}{}",
            serde_json::to_string(self).expect("status serialises")
        )
    }
}

/// Finds the first status line in console text and parses it. Console text
/// may carry other output on the same line before the prefix.
pub fn find_status(text: &str) -> Option<Result<Status, serde_json::Error>> {
    text.lines().find_map(parse_status_line)
}

/// Parses one console line, if it holds a status.
pub fn parse_status_line(line: &str) -> Option<Result<Status, serde_json::Error>> {
    let at = line.find(STATUS_PREFIX)?;
    let json = line[at + STATUS_PREFIX.len()..].trim_end_matches(['\r', '\n']);
    Some(serde_json::from_str(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            schema: STATUS_SCHEMA,
            verdict: Verdict::Go,
            version: "0.1.0".into(),
            hostname: "flypack".into(),
            time: "2026-11-27T10:00:00Z".into(),
            provisioning: Provisioning::Done,
            stages: vec![StageStatus {
                name: "disk".into(),
                state: StageState::Done,
                attempts: 1,
                duration_ms: Some(12),
                detail: None,
            }],
            qa: None,
            services: vec![],
            reasons: vec![],
        }
    }

    #[test]
    fn line_round_trips_and_has_the_contract_fields() {
        let line = sample().to_line();
        assert_eq!(
            line,
            r#"FLYPACK-STATUS {"schema":1,"verdict":"GO","version":"0.1.0","hostname":"flypack","time":"2026-11-27T10:00:00Z","provisioning":"done","stages":[{"name":"disk","state":"done","attempts":1,"duration_ms":12}]}"#
        );
        let noisy = format!("[   31.2] random kernel text{line}\r");
        assert_eq!(parse_status_line(&noisy).unwrap().unwrap(), sample());
        let text = format!("login:\n{line}\nmore\n");
        assert_eq!(find_status(&text).unwrap().unwrap(), sample());
        assert!(find_status("nothing here").is_none());
    }

    #[test]
    fn exit_codes_are_the_contract() {
        assert_eq!(Verdict::Go.exit_code(), 0);
        assert_eq!(Verdict::NoGo.exit_code(), 1);
        assert_eq!(Verdict::GoWithWarnings.exit_code(), 2);
        assert_eq!(Verdict::Go.worst(Verdict::GoWithWarnings), Verdict::GoWithWarnings);
        assert_eq!(Verdict::NoGo.worst(Verdict::GoWithWarnings), Verdict::NoGo);
    }
}
