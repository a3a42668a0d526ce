//! The one place firstboot talks rtnetlink: a typed snapshot of links,
//! addresses and routes (to verify what networkd applied), and deleting a
//! link (a VLAN whose id changed: systemd 252 does not recreate it).

use std::net::IpAddr;

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, State};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
use rtnetlink::{Handle, RouteMessageBuilder};

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Kernel index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC address, lower case.
    pub mac: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Administratively up.
    pub admin_up: bool,
    /// Operationally up (RFC 2863 "up").
    pub oper_up: bool,
    /// Carrier present.
    pub carrier: bool,
    /// Link kind (`vlan`, `veth`, ...), for virtual links.
    pub kind: Option<String>,
    /// VLAN id, for VLANs.
    pub vlan_id: Option<u16>,
    /// Index of the parent (lower) link.
    pub parent: Option<u32>,
}

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// Link index.
    pub index: u32,
    /// Address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// A route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination (None: default route).
    pub dst: Option<IpAddr>,
    /// Destination prefix length.
    pub dst_len: u8,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Output link index.
    pub oif: Option<u32>,
}

/// Links, addresses and main-table routes at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Links.
    pub links: Vec<Link>,
    /// Addresses.
    pub addrs: Vec<Addr>,
    /// Routes (main table, IPv4 and IPv6).
    pub routes: Vec<Route>,
}

impl Link {
    /// What the unit config's matching rule looks at.
    pub fn seen(&self) -> flypack_contracts::unit::SeenLink<'_> {
        flypack_contracts::unit::SeenLink {
            name: &self.name,
            mac: self.mac.as_deref(),
            vlan_id: self.vlan_id,
            kind: self.kind.as_deref(),
        }
    }
}

impl Snapshot {
    /// The link with this name.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The physical (non-VLAN) link with this MAC.
    pub fn link_by_mac(&self, mac: &str) -> Option<&Link> {
        let mac = mac.to_ascii_lowercase();
        self.links.iter().find(|l| {
            l.mac.as_deref() == Some(mac.as_str()) && l.vlan_id.is_none() && l.kind.as_deref() != Some("bridge")
        })
    }

    /// Addresses on a link.
    pub fn addrs_of(&self, index: u32) -> impl Iterator<Item = &Addr> {
        self.addrs.iter().filter(move |a| a.index == index)
    }

    /// Default routes.
    pub fn default_routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().filter(|r| r.dst_len == 0)
    }
}

fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

fn mac_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

async fn dump(handle: &Handle) -> Result<Snapshot, rtnetlink::Error> {
    let mut snap = Snapshot::default();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await? {
        let mut l = Link {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            admin_up: msg.header.flags.contains(LinkFlags::Up),
            oper_up: false,
            carrier: msg.header.flags.contains(LinkFlags::LowerUp),
            kind: None,
            vlan_id: None,
            parent: None,
        };
        for a in msg.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Address(b) if b.len() == 6 => l.mac = Some(mac_string(&b)),
                LinkAttribute::Mtu(m) => l.mtu = Some(m),
                LinkAttribute::OperState(s) => l.oper_up = s == State::Up,
                LinkAttribute::Carrier(c) => l.carrier = c != 0,
                LinkAttribute::Link(p) => l.parent = Some(p),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => {
                                l.kind = Some(match k {
                                    InfoKind::Vlan => "vlan".to_string(),
                                    InfoKind::Veth => "veth".to_string(),
                                    InfoKind::Bridge => "bridge".to_string(),
                                    other => format!("{other:?}").to_lowercase(),
                                })
                            }
                            LinkInfo::Data(InfoData::Vlan(v)) => {
                                for x in v {
                                    if let InfoVlan::Id(id) = x {
                                        l.vlan_id = Some(id);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        snap.links.push(l);
    }
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs.try_next().await? {
        let mut addr = None;
        for a in &msg.attributes {
            match a {
                // IPv4: Local is the address (Address is the peer on p2p links).
                AddressAttribute::Local(ip) => addr = Some(*ip),
                AddressAttribute::Address(ip) if addr.is_none() => addr = Some(*ip),
                _ => {}
            }
        }
        if let Some(ip) = addr {
            snap.addrs.push(Addr {
                index: msg.header.index,
                addr: ip,
                prefix: msg.header.prefix_len,
            });
        }
    }
    for msg in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut routes = handle.route().get(msg).execute();
        while let Some(r) = routes.try_next().await? {
            if r.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut route = Route {
                dst: None,
                dst_len: r.header.destination_prefix_length,
                gateway: None,
                oif: None,
            };
            for a in r.attributes {
                match a {
                    RouteAttribute::Destination(d) => route.dst = ip_of(d),
                    RouteAttribute::Gateway(g) => route.gateway = ip_of(g),
                    RouteAttribute::Oif(o) => route.oif = Some(o),
                    _ => {}
                }
            }
            snap.routes.push(route);
        }
    }
    Ok(snap)
}

fn ip_of(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

/// Reads links, addresses and routes.
pub fn snapshot() -> Result<Snapshot> {
    flypack_engine::rt::block_on(async {
        let h = connect()?;
        dump(&h)
            .await
            .map_err(|e| anyhow!(hint(&e, "reading links, addresses and routes")))
    })?
}

/// Deletes the link called `name`. Returns `None` if there was no such
/// link, else `Some(parent)` with the name of its lower link, if any.
pub fn delete_link(name: &str) -> Result<Option<Option<String>>> {
    flypack_engine::rt::block_on(async {
        let h = connect()?;
        let snap = dump(&h).await.map_err(|e| anyhow!(hint(&e, "reading links")))?;
        let Some(l) = snap.link(name) else { return Ok(None) };
        let parent = l
            .parent
            .and_then(|p| snap.links.iter().find(|x| x.index == p))
            .map(|x| x.name.clone());
        h.link()
            .del(l.index)
            .execute()
            .await
            .map_err(|e| anyhow!(hint(&e, &format!("deleting link {name}"))))?;
        Ok(Some(parent))
    })?
}

/// Turns a netlink error into something a field engineer can act on.
fn hint(e: &rtnetlink::Error, what: &str) -> String {
    let text = e.to_string();
    let why = if text.contains("Operation not permitted") || text.contains("EPERM") {
        ": permission denied (run as root)"
    } else if text.contains("No such device") || text.contains("ENODEV") {
        ": the interface is gone (unplugged or renamed?)"
    } else if text.contains("File exists") || text.contains("EEXIST") {
        ": it already exists"
    } else {
        ""
    };
    format!("{what}: {text}{why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_seen() {
        let s = snapshot().unwrap();
        let lo = s.link("lo").expect("every namespace has lo");
        assert!(lo.admin_up);
        assert!(
            s.addrs_of(lo.index)
                .any(|a| a.addr == IpAddr::from([127, 0, 0, 1]) && a.prefix == 8)
        );
        assert_eq!(mac_string(&[0x52, 0x54, 0, 0xf1, 0, 2]), "52:54:00:f1:00:02");
    }
}
