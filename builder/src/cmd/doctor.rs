//! `builder doctor`.

use anyhow::Result;
use serde_json::json;

use crate::host::{self, REQUIREMENTS};
use crate::progress::{Mode, Reporter};

/// Prints every requirement and whether it is met; exit 1 if any is missing.
pub fn run(rep: &Reporter) -> Result<i32> {
    let missing = host::missing(&[
        host::Need::Build,
        host::Need::Boot,
        host::Need::GuestForward,
        host::Need::Extra,
    ]);
    if rep.mode() == Mode::Json {
        let items: Vec<_> = REQUIREMENTS
            .iter()
            .map(|r| json!({ "what": r.what, "package": r.package, "why": r.why, "for": r.need, "present": host::present(r.what) }))
            .collect();
        rep.event("doctor", json!({ "requirements": items, "install": if missing.is_empty() { None } else { Some(host::apt_command(&missing)) } }));
    } else {
        for r in REQUIREMENTS {
            let mark = if host::present(r.what) { "ok     " } else { "MISSING" };
            println!("{mark} {:<40} {:<20} {}", r.what, r.package, r.why);
        }
        if !rustix::process::geteuid().is_root() {
            println!(
                "note    builder build needs root (it unpacks a root filesystem with its owners; it never mounts anything)"
            );
        }
        if missing.is_empty() {
            println!("\neverything builder needs is installed");
        } else {
            println!(
                "\ninstall what is missing with:\n  sudo {}",
                host::apt_command(&missing)
            );
        }
    }
    Ok(if missing.is_empty() { 0 } else { 1 })
}
