//! `net.config-applied`: the unit's network config is applied and verified (not rolled back).

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let u = ctx.unit;
    let root = ctx.root;
    if u.interfaces.is_empty() {
        return skip("no interfaces in the unit config: the image's DHCP fallback is in charge");
    }
    match std::fs::read(root.path(NETWORK_RESULT))
        .ok()
        .and_then(|b| serde_json::from_slice::<network::Applied>(&b).ok())
    {
        None => fail(
            "the network stage has not recorded a result",
            "run `firstboot run` (or `firstboot network apply`)",
        ),
        Some(a) if a.ok() => pass(a.summary()),
        Some(a) => fail(
            a.summary(),
            "fix the unit config (addresses, gateway, VLAN ids, MACs) and apply it again with `firstboot network apply`",
        ),
    }
}
