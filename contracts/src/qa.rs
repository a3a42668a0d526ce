//! The QA contract: the catalogue of checks (ids never change meaning), and
//! the report (JSON, canonical and versioned).

use serde::{Deserialize, Serialize};

/// Report schema version.
pub const REPORT_SCHEMA: u32 = 1;

/// How bad a failed check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational: reported, does not change the verdict.
    Minor,
    /// A warning: GO with warnings.
    Major,
    /// NO-GO.
    Critical,
}

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It passed.
    Pass,
    /// It failed.
    Fail,
    /// It failed, and a valid waiver covers it.
    Waived,
    /// Not applicable to this unit's config.
    Skip,
}

/// A check in the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckDef {
    /// Stable id, `area.name`.
    pub id: &'static str,
    /// Default severity (some depend on the unit config).
    pub severity: Severity,
    /// What it checks.
    pub title: &'static str,
}

/// Every check firstboot runs.
pub const CATALOGUE: &[CheckDef] = &[
    CheckDef {
        id: "net.config-applied",
        severity: Severity::Critical,
        title: "the unit's network config is applied and verified (not rolled back)",
    },
    CheckDef {
        id: "net.carrier",
        severity: Severity::Critical,
        title: "carrier on every required interface",
    },
    CheckDef {
        id: "net.addresses",
        severity: Severity::Critical,
        title: "configured addresses present",
    },
    CheckDef {
        id: "net.routes",
        severity: Severity::Critical,
        title: "default routes via the configured gateways",
    },
    CheckDef {
        id: "net.gateway",
        severity: Severity::Critical,
        title: "gateways answer ping",
    },
    CheckDef {
        id: "net.dns",
        severity: Severity::Major,
        title: "configured DNS servers answer",
    },
    CheckDef {
        id: "net.mtu",
        severity: Severity::Major,
        title: "the path to the gateway carries the configured MTU (don't-fragment ping)",
    },
    CheckDef {
        id: "mcast.join",
        severity: Severity::Critical,
        title: "configured multicast groups can be joined and show in /proc/net/igmp",
    },
    CheckDef {
        id: "mcast.rp-filter",
        severity: Severity::Major,
        title: "reverse-path filter is not strict on multicast interfaces",
    },
    CheckDef {
        id: "net.udp-buffers",
        severity: Severity::Major,
        title: "rmem_max/wmem_max hold SRT's buffer at the configured bitrate and latency",
    },
    CheckDef {
        id: "net.firewall",
        severity: Severity::Critical,
        title: "the unit's firewall is loaded, dropping what is not allowed (input and forward)",
    },
    CheckDef {
        id: "time.sync",
        severity: Severity::Major,
        title: "clock synchronised by chrony (NTP) or PTP",
    },
    CheckDef {
        id: "sys.debian",
        severity: Severity::Critical,
        title: "Debian 12",
    },
    CheckDef {
        id: "sys.packages",
        severity: Severity::Critical,
        title: "the image's key packages are installed",
    },
    CheckDef {
        id: "sys.services",
        severity: Severity::Critical,
        title: "key services are running",
    },
    CheckDef {
        id: "sys.disk",
        severity: Severity::Major,
        title: "free space on the root filesystem",
    },
    CheckDef {
        id: "sys.journal",
        severity: Severity::Critical,
        title: "firstboot's journal is consistent",
    },
    CheckDef {
        id: "stack.docker",
        severity: Severity::Critical,
        title: "Docker is running (where the stack is enabled)",
    },
];

/// The catalogue entry of a check id.
pub fn check_def(id: &str) -> Option<&'static CheckDef> {
    CATALOGUE.iter().find(|c| c.id == id)
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Check id.
    pub id: String,
    /// What it checks.
    pub title: String,
    /// Severity for this unit.
    pub severity: Severity,
    /// Result.
    pub outcome: Outcome,
    /// What was observed.
    pub evidence: String,
    /// What to do when it fails.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fix: String,
    /// The waiver's reason, when waived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiver: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// A QA report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: u32,
    /// The unit.
    pub hostname: String,
    /// When it ran.
    pub time: String,
    /// firstboot version.
    pub version: String,
    /// The verdict QA reached.
    pub verdict: crate::status::Verdict,
    /// Every check, in catalogue order.
    pub checks: Vec<CheckResult>,
}
