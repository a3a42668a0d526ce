//! `net.dns`: configured DNS servers answer.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let u = ctx.unit;
    if u.dns.servers.is_empty() {
        return skip("no DNS servers configured");
    }
    let (ok, bad): (Vec<IpAddr>, Vec<IpAddr>) = u.dns.servers.iter().partition(|s| network::dns_answers(**s));
    if bad.is_empty() {
        pass(format!(
            "{} answer",
            ok.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ))
    } else {
        fail(
            format!(
                "{} do not answer",
                bad.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            "check the DNS server addresses, or remove them for an offline venue",
        )
    }
}
