//! `net.firewall`: the unit's firewall is loaded, dropping what is not allowed (input and forward).

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let root = ctx.root;
    if !root.is_live() {
        return skip("not the running system");
    }
    match crate::firewall::loaded_policies() {
        Ok(l) if l.input_drop && l.forward_drop => pass(format!(
            "table inet {}: input and forward drop by default, {} rules",
            crate::firewall::TABLE,
            l.rules
        )),
        Ok(l) => fail(
            format!(
                "table inet {} loaded but input drops by default: {}, forward: {}",
                crate::firewall::TABLE,
                l.input_drop,
                l.forward_drop
            ),
            "sudo firstboot firewall apply",
        ),
        Err(e) => fail(
            format!("{e:#}"),
            "sudo firstboot firewall apply; systemctl status nftables",
        ),
    }
}
