//! `mcast.rp-filter`: reverse-path filter is not strict on multicast interfaces.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, s: &Snapshot) -> Check {
    let u = ctx.unit;
    let root = ctx.root;
    let ifs = super::ifaces(u, s);
    let names: Vec<String> = u
        .multicast
        .groups
        .iter()
        .filter_map(|g| {
            ifs.iter()
                .find(|i| i.label == g.interface)
                .and_then(|i| i.link)
                .map(|l| l.name.clone())
        })
        .collect();
    if names.is_empty() {
        return skip("no multicast interfaces");
    }
    let all = read_sysctl(root, "net.ipv4.conf.all.rp_filter").unwrap_or(0);
    let mut bad = Vec::new();
    let mut ev = Vec::new();
    for n in names {
        let own = read_sysctl(root, &format!("net.ipv4.conf.{}.rp_filter", n.replace('.', "/"))).unwrap_or(0);
        let eff = all.max(own);
        ev.push(format!("{n}: {eff} (all {all}, {n} {own})"));
        if eff == 1 {
            bad.push(n);
        }
    }
    if bad.is_empty() {
        pass(ev.join(", "))
    } else {
        fail(
            format!("strict reverse-path filter on {}: {}", bad.join(", "), ev.join(", ")),
            "set net.ipv4.conf.all.rp_filter and the interface's to 2 (loose) or 0: strict drops multicast from sources routed elsewhere",
        )
    }
}
