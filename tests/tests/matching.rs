#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One matching rule: firstboot (netlink's view) and the exporter (/sys's
//! view) pick the same NIC for every kind of match, including a config that
//! sets both name and MAC (both must hold).

use std::path::Path;

use firstboot::netlink::{Link, Snapshot};

/// A /sys/class/net with the given (name, mac, devtype) entries.
fn sys_net(dir: &Path, links: &[(&str, &str, &str)]) {
    for (name, mac, devtype) in links {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        std::fs::write(d.join("uevent"), format!("INTERFACE={name}\nDEVTYPE={devtype}\n")).unwrap();
    }
}

fn snapshot(links: &[(&str, &str, &str)]) -> Snapshot {
    Snapshot {
        links: links
            .iter()
            .enumerate()
            .map(|(i, (name, mac, devtype))| Link {
                index: i as u32 + 2,
                name: name.to_string(),
                mac: Some(mac.to_string()),
                mtu: Some(1500),
                admin_up: true,
                oper_up: true,
                carrier: true,
                kind: (!devtype.is_empty()).then(|| devtype.to_string()),
                vlan_id: (*devtype == "vlan").then_some(100),
                parent: None,
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn firstboot_and_the_exporter_pick_the_same_nic() {
    let hw = [
        ("eth0", "52:54:00:00:00:0a", ""),
        ("eth1", "52:54:00:00:00:0b", ""),
        ("eth1.100", "52:54:00:00:00:0b", "vlan"),
    ];
    let dir = tempfile::tempdir().unwrap();
    sys_net(dir.path(), &hw);
    let snap = snapshot(&hw);
    let cases: &[(&str, Option<&str>)] = &[
        ("match = { name = \"eth1\" }", Some("eth1")),
        ("match = { mac = \"52:54:00:00:00:0B\" }", Some("eth1")),
        ("match = { name = \"eth1\", mac = \"52:54:00:00:00:0b\" }", Some("eth1")),
        // Both set and disagreeing: neither NIC is it.
        ("match = { name = \"eth0\", mac = \"52:54:00:00:00:0b\" }", None),
        ("match = { name = \"eth9\" }", None),
    ];
    for (m, want) in cases {
        let text = format!(
            "version = 1\nhostname = \"u\"\n[[interfaces]]\nlabel = \"media\"\n{m}\naddresses = [\"10.1.0.5/24\"]\n"
        );
        let unit = flypack_contracts::unit::parse_unit(Path::new("u"), &text).unwrap();
        let link = unit.link("media").unwrap();
        let by_firstboot = firstboot::network::find_link(&snap, &link).map(|l| l.name.clone());
        let by_exporter = flypack_exporter::mcast::resolve_ifname(dir.path(), Some(&unit), "media");
        assert_eq!(by_firstboot.as_deref(), *want, "firstboot, {m}");
        assert_eq!(
            by_exporter, by_firstboot,
            "the exporter disagrees with firstboot for {m}"
        );
    }
}
