//! The verdict: computed from the journal (and, once QA exists, its report),
//! announced on the console as the `FLYPACK-STATUS` line, written to the
//! status file (for the web app) and to the login banner.

use anyhow::{Context, Result};
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::layout::target;
use flypack_contracts::status::{Provisioning, STATUS_SCHEMA, StageState, StageStatus, Status, Verdict};

use crate::journal::Journal;
use crate::root::Root;

/// Attempts after which a failing stage is reported as given up (the
/// systemd unit's StartLimitBurst).
pub const MAX_ATTEMPTS: u32 = 5;

/// Computes the status from the journal and the last QA report.
pub fn compute(root: &Root, journal: &Journal, done: bool) -> Status {
    let report = if done { crate::qa::last(root) } else { None };
    compute_with(root, journal, done, report.as_ref())
}

/// [`compute`] with an explicit QA report.
pub fn compute_with(
    root: &Root,
    journal: &Journal,
    done: bool,
    report: Option<&flypack_contracts::qa::Report>,
) -> Status {
    let mut out = Vec::new();
    let mut reasons = Vec::new();
    let mut failed_for_good = false;
    let progress = crate::runner::progress(root);
    for name in &crate::stages::names() {
        match journal.stage(name) {
            Some(r) => {
                if r.state == StageState::Failed {
                    let gave_up = r.attempts >= MAX_ATTEMPTS;
                    failed_for_good |= gave_up;
                    reasons.push(format!(
                        "stage {name} failed (attempt {}{}): {}",
                        r.attempts,
                        if gave_up { ", gave up" } else { ", will retry" },
                        r.detail.as_deref().unwrap_or("no detail")
                    ));
                }
                // A running stage says what it is doing or waiting for.
                let detail = match (&progress, r.state) {
                    (Some(p), StageState::Started) if p.stage == *name => Some(p.message.clone()),
                    _ => r.detail.clone(),
                };
                out.push(StageStatus {
                    name: name.to_string(),
                    state: r.state,
                    attempts: r.attempts,
                    duration_ms: r.duration_ms,
                    detail,
                });
            }
            None => out.push(StageStatus {
                name: name.to_string(),
                state: StageState::Pending,
                attempts: 0,
                duration_ms: None,
                detail: None,
            }),
        }
    }
    let provisioning = if done {
        Provisioning::Done
    } else if failed_for_good {
        Provisioning::Failed
    } else {
        Provisioning::InProgress
    };
    if !done && reasons.is_empty() {
        reasons.push("provisioning has not finished".to_string());
    }
    let mut verdict = if done && reasons.is_empty() {
        Verdict::Go
    } else {
        Verdict::NoGo
    };
    let qa = report.map(|r| {
        verdict = verdict.worst(r.verdict);
        reasons.extend(crate::qa::reasons(r));
        crate::qa::summary(r)
    });
    Status {
        schema: STATUS_SCHEMA,
        verdict,
        version: flypack_contracts::VERSION.to_string(),
        hostname: root.hostname(),
        time: crate::runner::now(),
        provisioning,
        stages: out,
        qa,
        services: crate::stages::stack::recorded(root)
            .unwrap_or_default()
            .into_iter()
            .map(|s| flypack_contracts::status::ServiceStatus {
                name: s.name,
                state: s.state,
                critical: s.critical,
            })
            .collect(),
        reasons,
    }
}

/// Writes the status file, the login banner and the verdict's metric (no
/// console line).
pub fn write(root: &Root, status: &Status) -> Result<()> {
    let json = serde_json::to_vec_pretty(status).context("serialising the status")?;
    let file = root.path(target::STATUS_FILE);
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    write_atomic(&file, &json, 0o644)?;
    let issue = root.path(target::ISSUE_FILE);
    if let Some(d) = issue.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    write_atomic(&issue, banner(status).as_bytes(), 0o644)?;
    // The metric is for the alert and the central's view; the status file
    // above is the contract, so a failure here is only logged.
    if let Err(e) = write_verdict_metric(root, status) {
        tracing::warn!("the verdict's metric is not written: {e:#}");
    }
    Ok(())
}

/// The verdict for the node exporter's textfile collector
/// (`/var/lib/flypack/metrics/verdict.prom`): `flypack_verdict` is 1 for the
/// verdict reached and 0 for the others, so the unit's rule and the
/// central's view (`flypack_verdict{verdict="NO-GO"} == 1`, by unit) need
/// no string matching on values.
pub fn write_verdict_metric(root: &Root, status: &Status) -> Result<()> {
    let dir = root.path(crate::backup::METRICS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = String::from(
        "# HELP flypack_verdict The unit's go/no-go verdict: 1 for the one it reached.\n\
         # TYPE flypack_verdict gauge\n",
    );
    for v in [Verdict::Go, Verdict::GoWithWarnings, Verdict::NoGo] {
        text.push_str(&format!(
            "flypack_verdict{{verdict=\"{}\"}} {}\n",
            v.as_str(),
            u8::from(v == status.verdict)
        ));
    }
    text.push_str(&format!(
        "# HELP flypack_verdict_reasons How many reasons the verdict gives.\n\
         # TYPE flypack_verdict_reasons gauge\n\
         flypack_verdict_reasons {}\n",
        status.reasons.len()
    ));
    write_atomic(&dir.join("verdict.prom"), text.as_bytes(), 0o644)
}

/// Prints the status line and writes the status file and the login banner.
pub fn announce(root: &Root, status: &Status) -> Result<()> {
    let line = status.to_line();
    // stdout goes to the journal; on the unit the line also goes straight to
    // the console, at the start of a line and without journald's prefix,
    // in one write so nothing interleaves with it.
    println!("{line}");
    if root.is_live()
        && let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/console")
            .and_then(|mut c| std::io::Write::write_all(&mut c, format!("\n{line}\n").as_bytes()))
    {
        tracing::warn!("cannot write the status line to /dev/console: {e}");
    }
    write(root, status)?;
    if root.is_live() {
        // Ask running gettys to redraw the banner; a box without agetty
        // (a container, a test) simply has nothing to refresh.
        if let Err(e) = flypack_contracts::cmd::Cmd::new("agetty").arg("--reload").run() {
            tracing::debug!("agetty --reload: {e}");
        }
    }
    Ok(())
}

/// The login banner fragment.
pub fn banner(status: &Status) -> String {
    let mut s = format!(
        "\n  FLYPACK {}: {}  (provisioning {}, firstboot {})\n",
        status.hostname,
        status.verdict,
        match status.provisioning {
            Provisioning::Done => "done",
            Provisioning::InProgress => "in progress",
            Provisioning::Failed => "FAILED",
        },
        status.version
    );
    for r in &status.reasons {
        s.push_str(&format!("  - {r}\n"));
    }
    s.push_str("  `firstboot status` for details\n\n");
    s
}

/// A human table of the status.
pub fn table(status: &Status) -> String {
    let mut s = format!(
        "{}: {} (provisioning {:?})\n",
        status.hostname, status.verdict, status.provisioning
    );
    for st in &status.stages {
        s.push_str(&format!(
            "  {:<10} {:<8} attempts {:<2} {:>8}  {}\n",
            st.name,
            format!("{:?}", st.state).to_lowercase(),
            st.attempts,
            st.duration_ms
                .map(|d| format!("{:.1}s", d as f64 / 1000.0))
                .unwrap_or_default(),
            st.detail.as_deref().unwrap_or("")
        ));
    }
    for r in &status.reasons {
        s.push_str(&format!("  - {r}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_follows_the_journal() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        std::fs::create_dir_all(root.path("/etc")).unwrap();
        std::fs::write(root.path("/etc/hostname"), "unit-3\n").unwrap();
        let mut j = Journal::default();
        let s = compute(&root, &j, false);
        assert_eq!((s.verdict, s.provisioning), (Verdict::NoGo, Provisioning::InProgress));
        let names: Vec<&str> = s.stages.iter().map(|st| st.name.as_str()).collect();
        assert_eq!(names, crate::stages::names(), "every stage is listed, in order");
        assert!(s.stages.iter().all(|st| st.state == StageState::Pending));
        j.stage_mut("disk").state = StageState::Done;
        let s = compute(&root, &j, true);
        assert_eq!((s.verdict, s.provisioning), (Verdict::Go, Provisioning::Done));
        assert_eq!(s.hostname, "unit-3");
        let r = j.stage_mut("disk");
        r.state = StageState::Failed;
        r.attempts = MAX_ATTEMPTS;
        r.detail = Some("growpart: no space".into());
        let s = compute(&root, &j, false);
        assert_eq!((s.verdict, s.provisioning), (Verdict::NoGo, Provisioning::Failed));
        assert_eq!(
            s.reasons,
            vec!["stage disk failed (attempt 5, gave up): growpart: no space"]
        );
    }

    #[test]
    fn announce_writes_status_and_banner() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let s = compute(&root, &Journal::default(), false);
        announce(&root, &s).unwrap();
        let written: Status = serde_json::from_slice(&std::fs::read(root.path(target::STATUS_FILE)).unwrap()).unwrap();
        assert_eq!(written, s);
        let issue = std::fs::read_to_string(root.path(target::ISSUE_FILE)).unwrap();
        assert!(issue.contains("FLYPACK unknown: NO-GO"), "{issue}");
        let metric = std::fs::read_to_string(root.path("/var/lib/flypack/metrics/verdict.prom")).unwrap();
        assert!(
            metric.contains("flypack_verdict{verdict=\"GO\"} 0\n")
                && metric.contains("flypack_verdict{verdict=\"NO-GO\"} 1\n")
                && metric.contains(&format!("flypack_verdict_reasons {}\n", s.reasons.len())),
            "{metric}"
        );
    }
}
