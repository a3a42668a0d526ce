//! `net.routes`: default routes via the configured gateways.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, s: &Snapshot) -> Check {
    let ifs = super::ifaces(ctx.unit, s);
    let mut bad = Vec::new();
    let mut n = 0;
    for i in &ifs {
        let Some(l) = i.link else { continue };
        for g in &i.gateways {
            n += 1;
            if !s
                .default_routes()
                .any(|r| r.gateway == Some(*g) && r.oif == Some(l.index))
            {
                bad.push(format!("no default route via {g} on {}", l.name));
            }
        }
    }
    if n == 0 {
        skip("no gateways configured")
    } else if bad.is_empty() {
        pass(format!("{n} default route(s) in place"))
    } else {
        fail(bad.join("; "), "check the gateway's subnet in the unit config")
    }
}
