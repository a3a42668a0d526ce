//! `net.gateway`: gateways answer ping.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, s: &Snapshot) -> Check {
    let ifs = super::ifaces(ctx.unit, s);
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    for i in &ifs {
        let Some(l) = i.link else { continue };
        for g in &i.gateways {
            if network::ping(*g, &l.name, 3) {
                ok.push(format!("{g} via {}", l.name))
            } else {
                bad.push(format!("{g} via {} does not answer", l.name))
            }
        }
    }
    if ok.is_empty() && bad.is_empty() {
        skip("no gateways configured")
    } else if bad.is_empty() {
        pass(ok.join(", "))
    } else {
        fail(
            bad.join("; "),
            "check the gateway address, the VLAN and the cabling; ask the venue whether ICMP is blocked",
        )
    }
}
