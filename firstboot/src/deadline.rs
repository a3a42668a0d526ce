//! Confirm-or-rollback deadlines: a change applied over SSH arms its own
//! rollback before anything changes, independently of the process that
//! applied it (a systemd timer, or a detached process where systemd does not
//! run), and is disarmed when it is confirmed.
//!
//! Used by `firstboot network apply --confirm-within` and `firstboot access
//! keys`: each has a subcommand `WHAT rollback --if-pending TOKEN [--after
//! SECS]` that the deadline runs.

use std::path::Path;

use anyhow::{Context, Result};

use crate::root::Root;
use flypack_contracts::cmd::Cmd;

/// One kind of change with a deadline.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// firstboot's subcommand (`network`, `access`).
    pub subcommand: &'static str,
    /// The transient systemd unit's name before the token.
    pub unit_prefix: &'static str,
    /// The transient unit's description.
    pub description: &'static str,
}

/// Whether systemd is the init system here.
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// A token for a change (the time and this process).
pub fn token() -> String {
    format!("{:x}", now_secs() ^ ((std::process::id() as u64) << 20))
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Arms `firstboot WHAT rollback --if-pending TOKEN` to run in `secs`.
pub fn arm(root: &Root, kind: Kind, token: &str, secs: u64, self_exe: &Path) -> Result<()> {
    let root_arg = root.dir().display().to_string();
    if root.is_live() && systemd_running() {
        Cmd::new("systemd-run")
            .arg(format!("--unit={}{token}", kind.unit_prefix))
            .arg(format!("--on-active={secs}"))
            .arg(format!("--description={}", kind.description))
            .arg(self_exe)
            .args(["--root", &root_arg, kind.subcommand, "rollback", "--if-pending", token])
            .run()
            .context("arming the rollback timer (systemd-run)")?;
        return Ok(());
    }
    // No systemd: a detached process in its own session (setsid --fork),
    // immune to the caller being killed or its terminal hanging up; its
    // output goes nowhere, so nothing waits for it.
    Cmd::new("setsid")
        .arg("--fork")
        .arg(self_exe)
        .args([
            "--root",
            &root_arg,
            kind.subcommand,
            "rollback",
            "--if-pending",
            token,
            "--after",
        ])
        .arg(secs.to_string())
        .run_detached()
        .context("arming the rollback (setsid)")?;
    Ok(())
}

/// Stops the armed rollback's timer (best effort: it may have fired).
pub fn disarm(root: &Root, kind: Kind, token: &str) {
    if root.is_live()
        && systemd_running()
        && let Err(e) = Cmd::new("systemctl")
            .args(["stop", &format!("{}{token}.timer", kind.unit_prefix)])
            .run()
    {
        tracing::debug!("stopping the rollback timer: {e}");
    }
}
