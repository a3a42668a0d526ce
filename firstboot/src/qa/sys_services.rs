//! `sys.services`: key services are running.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let root = ctx.root;
    if !root.is_live() {
        return skip("not the running system");
    }
    let mut units = vec![
        "ssh.service",
        "systemd-networkd.service",
        "systemd-resolved.service",
        "chrony.service",
    ];
    if ctx.stack_enabled {
        units.push("docker.service");
    }
    let bad: Vec<&str> = units
        .iter()
        .copied()
        .filter(|s| Cmd::new("systemctl").args(["is-active", "--quiet", s]).run().is_err())
        .collect();
    if bad.is_empty() {
        pass(format!("active: {}", units.join(", ")))
    } else {
        fail(
            format!("not active: {}", bad.join(", ")),
            format!("journalctl -u {} says why", bad[0]),
        )
    }
}
