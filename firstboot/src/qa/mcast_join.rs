//! `mcast.join`: configured multicast groups can be joined and show in /proc/net/igmp.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, s: &Snapshot) -> Check {
    let u = ctx.unit;
    let root = ctx.root;
    let ifs = super::ifaces(u, s);
    if u.multicast.groups.is_empty() {
        return skip("no multicast groups configured");
    }
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    for g in &u.multicast.groups {
        let link = ifs.iter().find(|i| i.label == g.interface).and_then(|i| i.link);
        let Some(l) = link else {
            bad.push(format!("{}: interface {} not found", g.group, g.interface));
            continue;
        };
        let Some(local) = s.addrs_of(l.index).find_map(|a| match a.addr {
            IpAddr::V4(v) => Some(v),
            _ => None,
        }) else {
            bad.push(format!("{}: {} has no IPv4 address to join from", g.group, l.name));
            continue;
        };
        let joined = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).and_then(|sock| {
            sock.join_multicast_v4(&g.group, &local)?;
            let igmp = std::fs::read_to_string(root.path("/proc/net/igmp"))?;
            let seen = igmp_groups(&igmp, &l.name).contains(&g.group);
            sock.leave_multicast_v4(&g.group, &local)?;
            Ok(seen)
        });
        match joined {
            Ok(true) => ok.push(format!("{} on {}", g.group, l.name)),
            Ok(false) => bad.push(format!("{} joined on {} but not in /proc/net/igmp", g.group, l.name)),
            Err(e) => bad.push(format!("{} on {}: {e}", g.group, l.name)),
        }
    }
    if bad.is_empty() {
        pass(format!("joined {}", ok.join(", ")))
    } else {
        fail(
            bad.join("; "),
            "check the interface of each group; raise net.ipv4.igmp_max_memberships if many groups are joined",
        )
    }
}
