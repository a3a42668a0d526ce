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

/// Every check firstboot runs: its id never changes meaning. A check
/// without an implementation, or an implementation without an id, does not
/// compile (firstboot's `qa` matches on this exhaustively).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CheckId {
    /// the unit's network config is applied and verified (not rolled back).
    #[serde(rename = "net.config-applied")]
    NetConfigApplied,
    /// carrier on every required interface.
    #[serde(rename = "net.carrier")]
    NetCarrier,
    /// configured addresses present.
    #[serde(rename = "net.addresses")]
    NetAddresses,
    /// default routes via the configured gateways.
    #[serde(rename = "net.routes")]
    NetRoutes,
    /// gateways answer ping.
    #[serde(rename = "net.gateway")]
    NetGateway,
    /// configured DNS servers answer.
    #[serde(rename = "net.dns")]
    NetDns,
    /// the path to the gateway carries the configured MTU (don't-fragment ping).
    #[serde(rename = "net.mtu")]
    NetMtu,
    /// configured multicast groups can be joined and show in /proc/net/igmp.
    #[serde(rename = "mcast.join")]
    McastJoin,
    /// reverse-path filter is not strict on multicast interfaces.
    #[serde(rename = "mcast.rp-filter")]
    McastRpFilter,
    /// rmem_max/wmem_max hold SRT's buffer at the configured bitrate and latency.
    #[serde(rename = "net.udp-buffers")]
    NetUdpBuffers,
    /// the unit's firewall is loaded, dropping what is not allowed (input and forward).
    #[serde(rename = "net.firewall")]
    NetFirewall,
    /// clock synchronised by chrony (NTP) or PTP.
    #[serde(rename = "time.sync")]
    TimeSync,
    /// Debian 12.
    #[serde(rename = "sys.debian")]
    SysDebian,
    /// the image's key packages are installed.
    #[serde(rename = "sys.packages")]
    SysPackages,
    /// key services are running.
    #[serde(rename = "sys.services")]
    SysServices,
    /// free space on the root filesystem.
    #[serde(rename = "sys.disk")]
    SysDisk,
    /// firstboot's journal is consistent.
    #[serde(rename = "sys.journal")]
    SysJournal,
    /// every critical service of the container stack is healthy.
    #[serde(rename = "stack.services")]
    StackServices,
    /// Docker is running (where the stack is enabled).
    #[serde(rename = "stack.docker")]
    StackDocker,
}

impl CheckId {
    /// Every check, in the order QA runs and reports them.
    pub const ALL: &'static [CheckId] = &[
        CheckId::NetConfigApplied,
        CheckId::NetCarrier,
        CheckId::NetAddresses,
        CheckId::NetRoutes,
        CheckId::NetGateway,
        CheckId::NetDns,
        CheckId::NetMtu,
        CheckId::McastJoin,
        CheckId::McastRpFilter,
        CheckId::NetUdpBuffers,
        CheckId::NetFirewall,
        CheckId::TimeSync,
        CheckId::SysDebian,
        CheckId::SysPackages,
        CheckId::SysServices,
        CheckId::SysDisk,
        CheckId::SysJournal,
        CheckId::StackServices,
        CheckId::StackDocker,
    ];

    /// The stable id (`area.name`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::NetConfigApplied => "net.config-applied",
            CheckId::NetCarrier => "net.carrier",
            CheckId::NetAddresses => "net.addresses",
            CheckId::NetRoutes => "net.routes",
            CheckId::NetGateway => "net.gateway",
            CheckId::NetDns => "net.dns",
            CheckId::NetMtu => "net.mtu",
            CheckId::McastJoin => "mcast.join",
            CheckId::McastRpFilter => "mcast.rp-filter",
            CheckId::NetUdpBuffers => "net.udp-buffers",
            CheckId::NetFirewall => "net.firewall",
            CheckId::TimeSync => "time.sync",
            CheckId::SysDebian => "sys.debian",
            CheckId::SysPackages => "sys.packages",
            CheckId::SysServices => "sys.services",
            CheckId::SysDisk => "sys.disk",
            CheckId::SysJournal => "sys.journal",
            CheckId::StackServices => "stack.services",
            CheckId::StackDocker => "stack.docker",
        }
    }

    /// Default severity (some depend on the unit config).
    pub fn severity(self) -> Severity {
        match self {
            CheckId::NetConfigApplied => Severity::Critical,
            CheckId::NetCarrier => Severity::Critical,
            CheckId::NetAddresses => Severity::Critical,
            CheckId::NetRoutes => Severity::Critical,
            CheckId::NetGateway => Severity::Critical,
            CheckId::NetDns => Severity::Major,
            CheckId::NetMtu => Severity::Major,
            CheckId::McastJoin => Severity::Critical,
            CheckId::McastRpFilter => Severity::Major,
            CheckId::NetUdpBuffers => Severity::Major,
            CheckId::NetFirewall => Severity::Critical,
            CheckId::TimeSync => Severity::Major,
            CheckId::SysDebian => Severity::Critical,
            CheckId::SysPackages => Severity::Critical,
            CheckId::SysServices => Severity::Critical,
            CheckId::SysDisk => Severity::Major,
            CheckId::SysJournal => Severity::Critical,
            CheckId::StackServices => Severity::Critical,
            CheckId::StackDocker => Severity::Critical,
        }
    }

    /// What it checks.
    pub fn title(self) -> &'static str {
        match self {
            CheckId::NetConfigApplied => "the unit's network config is applied and verified (not rolled back)",
            CheckId::NetCarrier => "carrier on every required interface",
            CheckId::NetAddresses => "configured addresses present",
            CheckId::NetRoutes => "default routes via the configured gateways",
            CheckId::NetGateway => "gateways answer ping",
            CheckId::NetDns => "configured DNS servers answer",
            CheckId::NetMtu => "the path to the gateway carries the configured MTU (don't-fragment ping)",
            CheckId::McastJoin => "configured multicast groups can be joined and show in /proc/net/igmp",
            CheckId::McastRpFilter => "reverse-path filter is not strict on multicast interfaces",
            CheckId::NetUdpBuffers => "rmem_max/wmem_max hold SRT's buffer at the configured bitrate and latency",
            CheckId::NetFirewall => "the unit's firewall is loaded, dropping what is not allowed (input and forward)",
            CheckId::TimeSync => "clock synchronised by chrony (NTP) or PTP",
            CheckId::SysDebian => "Debian 12",
            CheckId::SysPackages => "the image's key packages are installed",
            CheckId::SysServices => "key services are running",
            CheckId::SysDisk => "free space on the root filesystem",
            CheckId::SysJournal => "firstboot's journal is consistent",
            CheckId::StackServices => "every critical service of the container stack is healthy",
            CheckId::StackDocker => "Docker is running (where the stack is enabled)",
        }
    }

    /// The check with this id.
    pub fn parse(id: &str) -> Option<CheckId> {
        CheckId::ALL.iter().copied().find(|c| c.as_str() == id)
    }
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Check id.
    pub id: CheckId,
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
