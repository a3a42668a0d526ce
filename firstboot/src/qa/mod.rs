//! QA: the go/no-go checks. Each has an id (the contract's catalogue), a
//! severity, evidence and a fix hint; waivers with an expiry date turn a
//! failure into "waived". Reports: JSON (canonical), JUnit XML, a table.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Instant;

use anyhow::{Context, Result};
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::cmd::Cmd;
use flypack_contracts::qa::{CheckId, CheckResult, Outcome, REPORT_SCHEMA, Report, Severity};
use flypack_contracts::status::{StageState, Verdict};
use flypack_contracts::unit::Unit;

use crate::journal::Journal;
use crate::netlink::{self, Snapshot};
use crate::network;
use crate::root::Root;

/// Where reports go.
pub const REPORT_JSON: &str = "/var/lib/flypack/qa/report.json";
/// JUnit XML report.
pub const REPORT_XML: &str = "/var/lib/flypack/qa/report.xml";
/// The network stage's last outcome.
pub const NETWORK_RESULT: &str = "/var/lib/flypack/network/result.json";

/// What QA looks at.
pub struct Ctx<'a> {
    /// The system.
    pub root: &'a Root,
    /// The unit config in force.
    pub unit: &'a Unit,
    /// Today, for waiver expiry.
    pub today: time::Date,
    /// firstboot's journal.
    pub journal: &'a Journal,
    /// The stage running QA now (allowed to be "started").
    pub running_stage: Option<&'a str>,
    /// Whether the container stack is enabled in this image.
    pub stack_enabled: bool,
}

struct Check {
    outcome: Outcome,
    evidence: String,
    fix: String,
    severity: Option<Severity>,
}

fn pass(evidence: impl Into<String>) -> Check {
    Check {
        outcome: Outcome::Pass,
        evidence: evidence.into(),
        fix: String::new(),
        severity: None,
    }
}
fn fail(evidence: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        outcome: Outcome::Fail,
        evidence: evidence.into(),
        fix: fix.into(),
        severity: None,
    }
}
fn skip(evidence: impl Into<String>) -> Check {
    Check {
        outcome: Outcome::Skip,
        evidence: evidence.into(),
        fix: String::new(),
        severity: None,
    }
}

/// An interface or VLAN of the config, with its kernel link (when found).
struct Iface<'a> {
    spec: flypack_contracts::unit::Link,
    link: Option<&'a netlink::Link>,
}

impl std::ops::Deref for Iface<'_> {
    type Target = flypack_contracts::unit::Link;
    fn deref(&self) -> &Self::Target {
        &self.spec
    }
}

fn ifaces<'a>(unit: &Unit, s: &'a Snapshot) -> Vec<Iface<'a>> {
    unit.links()
        .into_iter()
        .map(|spec| Iface {
            link: network::find_link(s, &spec),
            spec,
        })
        .collect()
}

fn read_sysctl(root: &Root, key: &str) -> Option<i64> {
    let p = root.path(format!("/proc/sys/{}", key.replace('.', "/")));
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

pub use flypack_contracts::netstat::igmp_groups;

mod mcast_join;
mod mcast_rp_filter;
mod net_addresses;
mod net_carrier;
mod net_config_applied;
mod net_dns;
mod net_firewall;
mod net_gateway;
mod net_mtu;
mod net_routes;
mod net_udp_buffers;
mod stack_docker;
mod stack_services;
mod sys_debian;
mod sys_disk;
mod sys_journal;
mod sys_packages;
mod sys_services;
mod time_sync;

/// Runs one check (the match is exhaustive: a check without an
/// implementation does not compile).
fn check(id: CheckId, ctx: &Ctx, s: &Snapshot) -> Check {
    match id {
        CheckId::NetConfigApplied => net_config_applied::check(ctx, s),
        CheckId::NetCarrier => net_carrier::check(ctx, s),
        CheckId::NetAddresses => net_addresses::check(ctx, s),
        CheckId::NetRoutes => net_routes::check(ctx, s),
        CheckId::NetGateway => net_gateway::check(ctx, s),
        CheckId::NetDns => net_dns::check(ctx, s),
        CheckId::NetMtu => net_mtu::check(ctx, s),
        CheckId::McastJoin => mcast_join::check(ctx, s),
        CheckId::McastRpFilter => mcast_rp_filter::check(ctx, s),
        CheckId::NetUdpBuffers => net_udp_buffers::check(ctx, s),
        CheckId::TimeSync => time_sync::check(ctx, s),
        CheckId::NetFirewall => net_firewall::check(ctx, s),
        CheckId::SysDebian => sys_debian::check(ctx, s),
        CheckId::SysPackages => sys_packages::check(ctx, s),
        CheckId::SysServices => sys_services::check(ctx, s),
        CheckId::SysDisk => sys_disk::check(ctx, s),
        CheckId::SysJournal => sys_journal::check(ctx, s),
        CheckId::StackServices => stack_services::check(ctx, s),
        CheckId::StackDocker => stack_docker::check(ctx, s),
    }
}

/// Runs every check.
pub fn run(ctx: &Ctx) -> Result<Report> {
    let snap = netlink::snapshot()?;
    let mut checks = Vec::new();
    for &id in CheckId::ALL {
        let t0 = Instant::now();
        let c = check(id, ctx, &snap);
        let severity = c.severity.unwrap_or(id.severity());
        let mut r = CheckResult {
            id,
            title: id.title().to_string(),
            severity,
            outcome: c.outcome,
            evidence: c.evidence,
            fix: c.fix,
            waiver: None,
            duration_ms: t0.elapsed().as_millis() as u64,
        };
        apply_waivers(&mut r, ctx.unit, ctx.today);
        checks.push(r);
    }
    Ok(Report {
        schema: REPORT_SCHEMA,
        hostname: ctx.root.hostname(),
        time: crate::runner::now(),
        version: flypack_contracts::VERSION.to_string(),
        verdict: verdict(&checks),
        checks,
    })
}

/// A failed check covered by an unexpired waiver is waived; an expired one
/// is named in the evidence.
pub fn apply_waivers(r: &mut CheckResult, unit: &Unit, today: time::Date) {
    if r.outcome != Outcome::Fail {
        return;
    }
    for w in unit.qa.waivers.iter().filter(|w| w.check == r.id.as_str()) {
        if w.expires.date() >= today {
            r.outcome = Outcome::Waived;
            r.waiver = Some(format!("{} (until {})", w.reason, w.expires));
        } else {
            r.evidence
                .push_str(&format!(" (a waiver expired on {}: {})", w.expires, w.reason));
        }
    }
}

/// The verdict of a set of results.
pub fn verdict(checks: &[CheckResult]) -> Verdict {
    let failed = |s: Severity| checks.iter().any(|c| c.outcome == Outcome::Fail && c.severity == s);
    if failed(Severity::Critical) {
        Verdict::NoGo
    } else if failed(Severity::Major) {
        Verdict::GoWithWarnings
    } else {
        Verdict::Go
    }
}

/// The report as JUnit XML (quick-junit): one testcase per check, in a
/// suite named after the unit; skipped and waived checks are skipped cases.
pub fn junit(r: &Report) -> String {
    use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(r.hostname.as_str());
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&r.time) {
        suite.set_timestamp(t);
    }
    for c in &r.checks {
        let status = match c.outcome {
            Outcome::Pass => TestCaseStatus::success(),
            Outcome::Fail => {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_type(format!("{:?}", c.severity).to_lowercase());
                st.set_message(c.evidence.as_str());
                st.set_description(format!("{}\nfix: {}", c.title, c.fix));
                st
            }
            Outcome::Skip => {
                let mut st = TestCaseStatus::skipped();
                st.set_message(c.evidence.as_str());
                st
            }
            Outcome::Waived => {
                let mut st = TestCaseStatus::skipped();
                st.set_message(format!("waived: {}", c.waiver.as_deref().unwrap_or("")));
                st
            }
        };
        let mut tc = TestCase::new(c.id.as_str(), status);
        let area = c.id.as_str().split('.').next().unwrap_or("qa");
        tc.set_classname(format!("flypack.{area}"));
        tc.set_time(std::time::Duration::from_millis(c.duration_ms));
        if c.outcome == Outcome::Pass {
            tc.set_system_out(c.evidence.as_str());
        }
        suite.add_test_case(tc);
    }
    let mut report = quick_junit::Report::new("flypack-qa");
    report.add_test_suite(suite);
    // Serialising in-memory data to a String cannot fail.
    report.to_string().unwrap_or_default()
}

/// The report as a table for humans.
pub fn table(r: &Report) -> String {
    let mut s = format!("QA on {} at {}: {}\n", r.hostname, r.time, r.verdict);
    for c in &r.checks {
        let mark = match c.outcome {
            Outcome::Pass => "ok  ",
            Outcome::Fail => "FAIL",
            Outcome::Waived => "waiv",
            Outcome::Skip => "-   ",
        };
        s.push_str(&format!(
            "  {mark} {:<18} {:<8} {}\n",
            c.id,
            format!("{:?}", c.severity).to_lowercase(),
            c.evidence
        ));
        if c.outcome == Outcome::Fail && !c.fix.is_empty() {
            s.push_str(&format!("       fix: {}\n", c.fix));
        }
        if let Some(w) = &c.waiver {
            s.push_str(&format!("       waived: {w}\n"));
        }
    }
    s
}

/// Writes the JSON and JUnit reports.
pub fn write(root: &Root, r: &Report) -> Result<()> {
    let p = root.path(REPORT_JSON);
    std::fs::create_dir_all(p.parent().expect("parent")).with_context(|| format!("creating {}", p.display()))?;
    write_atomic(&p, serde_json::to_vec_pretty(r)?.as_slice(), 0o644)?;
    write_atomic(&root.path(REPORT_XML), junit(r).as_bytes(), 0o644)
}

/// Reads the last report.
pub fn last(root: &Root) -> Option<Report> {
    serde_json::from_slice(&std::fs::read(root.path(REPORT_JSON)).ok()?).ok()
}

/// The status's summary of a report: every outcome counted, skipped
/// checks named (a check that did not run is not a pass).
pub fn summary(r: &Report) -> flypack_contracts::status::QaSummary {
    let ids = |o: Outcome, crit: bool| -> Vec<String> {
        r.checks
            .iter()
            .filter(|c| c.outcome == o && (c.severity == Severity::Critical) == crit)
            .map(|c| c.id.to_string())
            .collect()
    };
    flypack_contracts::status::QaSummary {
        passed: r.checks.iter().filter(|c| c.outcome == Outcome::Pass).count() as u32,
        failed: r.checks.iter().filter(|c| c.outcome == Outcome::Fail).count() as u32,
        waived: r.checks.iter().filter(|c| c.outcome == Outcome::Waived).count() as u32,
        critical: ids(Outcome::Fail, true),
        warnings: r
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail && c.severity == Severity::Major)
            .map(|c| c.id.to_string())
            .collect(),
        skipped: r
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Skip)
            .map(|c| c.id.to_string())
            .collect(),
        report: REPORT_JSON.to_string(),
    }
}

/// Lines for the status's reasons (failed critical and major checks).
pub fn reasons(r: &Report) -> Vec<String> {
    r.checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail && c.severity >= Severity::Major)
        .map(|c| {
            format!(
                "{} {}: {}",
                if c.severity == Severity::Critical {
                    "NO-GO"
                } else {
                    "warning"
                },
                c.id,
                c.evidence
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: CheckId, sev: Severity, outcome: Outcome) -> CheckResult {
        CheckResult {
            id,
            title: "t".into(),
            severity: sev,
            outcome,
            evidence: "e <&>".into(),
            fix: "f".into(),
            waiver: None,
            duration_ms: 5,
        }
    }

    #[test]
    fn verdicts() {
        use Outcome::*;
        use Severity::*;
        assert_eq!(
            verdict(&[
                result(CheckId::NetDns, Critical, Pass),
                result(CheckId::NetMtu, Minor, Fail)
            ]),
            Verdict::Go
        );
        assert_eq!(
            verdict(&[
                result(CheckId::NetDns, Critical, Waived),
                result(CheckId::NetMtu, Major, Fail)
            ]),
            Verdict::GoWithWarnings
        );
        assert_eq!(
            verdict(&[
                result(CheckId::NetDns, Critical, Fail),
                result(CheckId::NetMtu, Major, Fail)
            ]),
            Verdict::NoGo
        );
        assert_eq!(verdict(&[result(CheckId::NetDns, Critical, Skip)]), Verdict::Go);
    }

    #[test]
    fn every_check_in_the_catalogue_is_implemented() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let unit =
            flypack_contracts::unit::parse_unit(std::path::Path::new("u"), "version = 1\nhostname = \"a\"\n").unwrap();
        let journal = Journal::default();
        let ctx = Ctx {
            root: &root,
            unit: &unit,
            today: time::macros::date!(2026 - 11 - 27),
            journal: &journal,
            running_stage: None,
            stack_enabled: false,
        };
        let r = run(&ctx).unwrap();
        let ran: Vec<CheckId> = r.checks.iter().map(|c| c.id).collect();
        assert_eq!(ran, CheckId::ALL, "every check runs, in the catalogue's order");
        // Nothing configured: the network checks do not apply, and say so.
        let get = |id: CheckId| r.checks.iter().find(|c| c.id == id).unwrap().outcome;
        assert_eq!(get(CheckId::NetConfigApplied), Outcome::Skip);
        assert_eq!(get(CheckId::McastJoin), Outcome::Skip);
        assert_eq!(get(CheckId::SysJournal), Outcome::Pass);
        let s = summary(&r);
        assert!(s.skipped.contains(&"mcast.join".to_string()), "{s:?}");
        assert_eq!(
            s.passed as usize + s.failed as usize + s.waived as usize + s.skipped.len(),
            CheckId::ALL.len(),
            "a skipped check is not counted as passed"
        );
    }

    #[test]
    fn junit_golden() {
        let r = Report {
            schema: 1,
            hostname: "u1".into(),
            time: "2026-11-27T10:00:00Z".into(),
            version: "0.1.0".into(),
            verdict: Verdict::NoGo,
            checks: vec![
                result(CheckId::NetGateway, Severity::Critical, Outcome::Fail),
                result(CheckId::TimeSync, Severity::Major, Outcome::Skip),
            ],
        };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/qa/golden/junit.xml");
        if let Some(f) = crate::golden::check(&path, &junit(&r)) {
            panic!("{f}");
        }
    }

    #[test]
    fn every_check_is_documented_and_can_be_waived() {
        let docs =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/qa.md")).unwrap();
        for &id in CheckId::ALL {
            assert!(
                docs.contains(&format!("| `{id}` |")),
                "{id} is not in docs/qa.md's table"
            );
            let text = format!(
                "version = 1\nhostname = \"a\"\n[qa]\nwaivers = [{{ check = \"{id}\", reason = \"tested here\", expires = \"2030-01-01\" }}]\n"
            );
            let unit = flypack_contracts::unit::parse_unit(std::path::Path::new("u"), &text)
                .unwrap_or_else(|e| panic!("a waiver of {id} does not validate: {e}"));
            let mut r = result(id, Severity::Critical, Outcome::Fail);
            apply_waivers(&mut r, &unit, time::macros::date!(2029 - 12 - 31));
            assert_eq!(r.outcome, Outcome::Waived, "{id}");
            let mut r = result(id, Severity::Critical, Outcome::Fail);
            apply_waivers(&mut r, &unit, time::macros::date!(2030 - 01 - 02));
            assert_eq!(r.outcome, Outcome::Fail, "{id}: an expired waiver still counts");
        }
    }
}
