//! `net.addresses`: configured addresses present.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, s: &Snapshot) -> Check {
    let u = ctx.unit;
    let ifs = super::ifaces(u, s);
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    for i in &ifs {
        let Some(l) = i.link else {
            bad.push(format!("{}: not found", i.label));
            continue;
        };
        let have: Vec<(IpAddr, u8)> = s.addrs_of(l.index).map(|a| (a.addr, a.prefix)).collect();
        for c in &i.statics {
            if have.contains(&(c.addr, c.prefix)) {
                ok.push(c.to_string())
            } else {
                bad.push(format!("{}: {c} missing", i.label))
            }
        }
        if i.dhcp {
            match have.iter().find(|(a, _)| a.is_ipv4()) {
                Some((a, p)) => ok.push(format!("{a}/{p} (DHCP)")),
                None => bad.push(format!("{} ({}): no DHCP lease", i.label, l.name)),
            }
        }
    }
    if ifs.is_empty() {
        skip("no interfaces configured")
    } else if bad.is_empty() {
        pass(ok.join(", "))
    } else {
        fail(
            bad.join("; "),
            "a missing static address means networkd refused the config (journalctl -u systemd-networkd); no DHCP lease means no DHCP server answers on that LAN",
        )
    }
}
