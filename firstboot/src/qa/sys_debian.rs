//! `sys.debian`: Debian 12.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let root = ctx.root;
    match std::fs::read_to_string(root.path("/etc/debian_version")) {
        Ok(v) if v.trim().starts_with("12.") || v.trim() == "12" => pass(format!("Debian {}", v.trim())),
        Ok(v) => fail(format!("Debian {}", v.trim()), "reflash the unit with a Flypack image"),
        Err(e) => fail(
            format!("/etc/debian_version: {e}"),
            "reflash the unit with a Flypack image",
        ),
    }
}
