//! `net.mtu`: the path to the gateway carries the configured MTU (don't-fragment ping).

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, s: &Snapshot) -> Check {
    let ifs = super::ifaces(ctx.unit, s);
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    for i in &ifs {
        let (Some(l), Some(g)) = (i.link, i.gateways.iter().find(|g| g.is_ipv4())) else {
            continue;
        };
        if !network::ping(*g, &l.name, 1) {
            // net.gateway reports that; an MTU verdict needs an answering gateway.
            continue;
        }
        let mtu = i.mtu.or(l.mtu).unwrap_or(1500);
        let size = mtu.saturating_sub(28);
        let r = Cmd::new("ping")
            .args([
                "-4",
                "-n",
                "-q",
                "-c",
                "2",
                "-W",
                "1",
                "-M",
                "do",
                "-s",
                &size.to_string(),
                "-I",
                &l.name,
            ])
            .arg(g.to_string())
            .run();
        if r.is_ok() {
            ok.push(format!("{mtu} bytes to {g} on {}", l.name))
        } else {
            bad.push(format!(
                "{mtu}-byte packets with don't-fragment do not reach {g} on {}",
                l.name
            ))
        }
    }
    if ok.is_empty() && bad.is_empty() {
        skip("no answering gateway to test the path MTU against")
    } else if bad.is_empty() {
        pass(ok.join(", "))
    } else {
        fail(
            bad.join("; "),
            "the switch path does not carry this MTU: lower the MTU in the unit config or enable jumbo frames on the switches",
        )
    }
}
