//! `sys.disk`: free space on the root filesystem.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let u = ctx.unit;
    let root = ctx.root;
    match rustix::fs::statvfs(root.dir()) {
        Ok(st) => {
            let free = st.f_bavail * st.f_frsize / (1 << 20);
            let ev = format!("{free} MiB free on /, minimum {}", u.qa.min_free_disk_mib);
            if free >= u.qa.min_free_disk_mib {
                pass(ev)
            } else {
                fail(
                    ev,
                    "free space: old logs (journalctl --vacuum-size), container images, metrics retention",
                )
            }
        }
        Err(e) => fail(format!("statvfs: {e}"), ""),
    }
}
