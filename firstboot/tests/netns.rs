//! The network stage against real netlink and the real systemd-networkd, in
//! network namespaces (see common/mod.rs), and QA checks against crafted
//! state. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

#[test]
fn static_addresses_routes_and_mtu_are_applied_and_read_back() {
    let rig = Rig::new();
    let u = rig.unit_file("u.toml", &unit("10.9.0.5/24", "10.9.0.1", ""));
    let (code, out) = rig.firstboot(&["network", "apply", "--unit", u.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("applied; verified"), "{out}");
    assert!(out.contains("gateway 10.9.0.1 answers on mgmt0"), "{out}");
    assert_eq!(
        rig.network_files(),
        ["10-flypack-media.network", "10-flypack-mgmt.network"]
    );
    // Read back independently of firstboot.
    assert_eq!(rig.addresses("mgmt0"), ["10.9.0.5/24"]);
    assert_eq!(rig.addresses("media0"), ["10.8.0.5/24", "fd08::5/64"]);
    let routes = rig.ip_json(&["-4", "route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.9.0.1");
    assert_eq!(routes[0]["dev"], "mgmt0");
    let link = rig.ip_json(&["link", "show", "media0"]);
    assert_eq!(link[0]["mtu"], 1400);
    // The config in force is recorded; applying it again changes nothing.
    let in_force = std::fs::read_to_string(rig.host_path("/etc/flypack/unit.toml")).unwrap();
    assert!(in_force.contains("10.9.0.5/24"), "{in_force}");
    let (code, out) = rig.firstboot(&["network", "apply", "--unit", u.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("unchanged; verified"), "{out}");
    // Changing an address moves it.
    let u2 = rig.unit_file("u2.toml", &unit("10.9.0.6/24", "10.9.0.1", ""));
    let (code, out) = rig.firstboot(&["network", "apply", "--unit", u2.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(rig.addresses("mgmt0"), ["10.9.0.6/24"]);
}

#[test]
fn a_wrong_gateway_rolls_back_and_the_rollback_is_verified() {
    let rig = Rig::new();
    let good = rig.unit_file("good.toml", &unit("10.9.0.5/24", "10.9.0.1", ""));
    let (code, out) = rig.firstboot(&["network", "apply", "--unit", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let files_before: Vec<String> = rig
        .network_files()
        .iter()
        .map(|f| std::fs::read_to_string(rig.host_path(&format!("/etc/systemd/network/{f}"))).unwrap())
        .collect();

    // Nobody answers at 10.9.0.254, though the link has carrier.
    let bad = rig.unit_file("bad.toml", &unit("10.9.0.7/24", "10.9.0.254", ""));
    let (code, out) = rig.firstboot(&["network", "apply", "--unit", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("gateway 10.9.0.254 does not answer on mgmt0"), "{out}");
    assert!(
        out.contains("rolled back to the previous config, which verified"),
        "{out}"
    );
    assert!(
        out.contains("gateway 10.9.0.1 answers on mgmt0"),
        "the rollback's own verification is reported: {out}"
    );
    let files_after: Vec<String> = rig
        .network_files()
        .iter()
        .map(|f| std::fs::read_to_string(rig.host_path(&format!("/etc/systemd/network/{f}"))).unwrap())
        .collect();
    assert_eq!(files_after, files_before, "the previous files are back");
    assert_eq!(rig.addresses("mgmt0"), ["10.9.0.5/24"]);
    let routes = rig.ip_json(&["-4", "route", "show", "default"]);
    assert_eq!(routes.as_array().unwrap().len(), 1);
    assert_eq!(routes[0]["gateway"], "10.9.0.1");
    // The config in force is still the good one.
    let in_force = std::fs::read_to_string(rig.host_path("/etc/flypack/unit.toml")).unwrap();
    assert!(
        in_force.contains("10.9.0.5/24") && !in_force.contains("10.9.0.7"),
        "{in_force}"
    );
}

#[test]
fn a_first_config_that_fails_rolls_back_to_the_fallback() {
    let rig = Rig::new();
    // An unknown MAC: the interface does not exist on this hardware.
    let text = unit("10.9.0.5/24", "10.9.0.1", "").replace(MEDIA_MAC, "02:fb:00:00:00:99");
    let u = rig.unit_file("u.toml", &text);
    // The fallback has nothing here, so give mgmt a fallback-like address first.
    rig.dut_sh("ip addr add 10.9.0.50/24 dev mgmt0; ip link set mgmt0 up");
    let (code, out) = rig.firstboot(&["network", "apply", "--unit", u.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("media: no interface MAC 02:fb:00:00:00:99 on this hardware"),
        "{out}"
    );
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(
        rig.network_files(),
        Vec::<String>::new(),
        "no managed files after rolling back to the fallback"
    );
}

#[test]
fn an_unconfirmed_change_rolls_back_by_itself_even_if_firstboot_is_killed() {
    let rig = Rig::new();
    let a = rig.unit_file("a.toml", &unit("10.9.0.5/24", "10.9.0.1", ""));
    assert_eq!(rig.firstboot(&["network", "apply", "--unit", a.to_str().unwrap()]).0, 0);
    let b = rig.unit_file("b.toml", &unit("10.9.0.8/24", "10.9.0.1", ""));

    // Killed right after writing the new files, before verifying them.
    let mut cmd = rig.dut(&[
        env!("CARGO_BIN_EXE_firstboot"),
        "network",
        "apply",
        "--unit",
        b.to_str().unwrap(),
        "--confirm-within",
        "4",
    ]);
    let o = cmd.env("FLYPACK_FAULT", "netapply:after-write").output().unwrap();
    assert!(!o.status.success(), "the fault did not fire");
    let mgmt = std::fs::read_to_string(rig.host_path("/etc/systemd/network/10-flypack-mgmt.network")).unwrap();
    assert!(
        mgmt.contains("10.9.0.8/24"),
        "the new files were written before the kill"
    );
    // The armed rollback fires on its own.
    std::thread::sleep(std::time::Duration::from_secs(10));
    let mgmt = std::fs::read_to_string(rig.host_path("/etc/systemd/network/10-flypack-mgmt.network")).unwrap();
    assert!(mgmt.contains("10.9.0.5/24"), "not rolled back: {mgmt}");
    assert_eq!(rig.addresses("mgmt0"), ["10.9.0.5/24"]);
    assert!(!rig.host_path("/var/lib/flypack/network/pending.json").exists());

    // Confirmed in time, it stays.
    let (code, out) = rig.firstboot(&[
        "network",
        "apply",
        "--unit",
        b.to_str().unwrap(),
        "--confirm-within",
        "4",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("firstboot network confirm"), "{out}");
    let (code, out) = rig.firstboot(&["network", "confirm"]);
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(std::time::Duration::from_secs(7));
    assert_eq!(rig.addresses("mgmt0"), ["10.9.0.8/24"]);
    let in_force = std::fs::read_to_string(rig.host_path("/etc/flypack/unit.toml")).unwrap();
    assert!(in_force.contains("10.9.0.8/24"), "{in_force}");
}

#[test]
fn interactive_setup_at_the_console() {
    let rig = Rig::new();
    let a = rig.unit_file("a.toml", &unit("10.9.0.5/24", "10.9.0.1", ""));
    assert_eq!(rig.firstboot(&["network", "apply", "--unit", a.to_str().unwrap()]).0, 0);
    // Hostname, mgmt interface, its address and gateway, no media, no DNS,
    // apply, keep.
    let answers = "console-unit\nmgmt0\n10.9.0.9/24\n10.9.0.1\n-\n-\nyes\nyes\n";
    let mut child = rig
        .dut(&[
            env!("CARGO_BIN_EXE_firstboot"),
            "network",
            "--interactive",
            "--confirm-within",
            "60",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(answers.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("Hostname [rig-unit]:"),
        "the current config is the default: {out}"
    );
    assert!(
        out.contains("mgmt address: dhcp or ADDRESS/PREFIX [10.9.0.5/24]:"),
        "{out}"
    );
    assert!(out.contains("kept"), "{out}");
    assert_eq!(rig.addresses("mgmt0"), ["10.9.0.9/24"]);
    assert!(!rig.host_path("/var/lib/flypack/network/pending.json").exists());
    let in_force = std::fs::read_to_string(rig.host_path("/etc/flypack/unit.toml")).unwrap();
    assert!(
        in_force.contains("hostname = \"console-unit\"") && in_force.contains("10.9.0.9/24"),
        "{in_force}"
    );

    // Bad input changes nothing.
    let mut child = rig
        .dut(&[env!("CARGO_BIN_EXE_firstboot"), "network", "--interactive"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"console-unit\nmgmt0\n10.9.0.300/24\n-\n-\n-\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert!(
        out.contains("not applied: console input:")
            && out.contains("interfaces[0].addresses[0]: \"10.9.0.300/24\" is not an address"),
        "{out}"
    );
    assert_eq!(rig.addresses("mgmt0"), ["10.9.0.9/24"]);
}

fn qa(rig: &Rig) -> Value {
    let (_, out) = rig.firstboot(&["qa", "--format", "json"]);
    let start = out.find('{').unwrap_or_else(|| panic!("no JSON: {out}"));
    let end = out.rfind('}').unwrap();
    serde_json::from_str(&out[start..=end]).unwrap()
}

fn outcome(report: &Value, id: &str) -> String {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id}"));
    format!(
        "{}: {}",
        c["outcome"].as_str().unwrap(),
        c["evidence"].as_str().unwrap()
    )
}

#[test]
fn qa_checks_pass_and_fail_on_crafted_state() {
    let mut rig = Rig::new();
    // A DNS server in the gateway: answers every query with REFUSED.
    rig.gw_spawn(&[
        "python3",
        "-c",
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.9.0.1',53))\nwhile True:\n d,a=s.recvfrom(512)\n s.sendto(d[:2]+bytes([0x81,0x85])+d[4:],a)",
    ]);
    let extra = "[dns]\nservers = [\"10.9.0.1\"]\n[multicast]\ngroups = [{ group = \"239.1.2.3\", interface = \"media\", port = 5000 }]\n\
                 [time]\nntp = [\"10.9.0.1\"]";
    let text = unit("10.9.0.5/24", "10.9.0.1", extra).replace("mtu = 1400", "mtu = 1500")
        + "waivers = [{ check = \"time.sync\", reason = \"no NTP in the rig\", expires = \"2099-12-31\" }]\n";
    let u = rig.unit_file("u.toml", &text);
    let (code, out) = rig.firstboot(&["network", "apply", "--unit", u.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    rig.dut_sh("sysctl -qw net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.media0.rp_filter=2");
    std::fs::create_dir_all(rig.host_path("/var/lib/flypack/network")).unwrap();
    std::fs::write(
        rig.host_path("/var/lib/flypack/network/result.json"),
        r#"{"result":"applied","verification":{"problems":[],"warnings":[],"facts":["ok"]},"notes":[]}"#,
    )
    .unwrap();

    let r = qa(&rig);
    for id in [
        "net.config-applied",
        "net.carrier",
        "net.addresses",
        "net.routes",
        "net.gateway",
        "net.dns",
        "net.mtu",
        "mcast.join",
        "mcast.rp-filter",
        "sys.debian",
        "sys.journal",
    ] {
        assert!(outcome(&r, id).starts_with("pass"), "{id}: {}", outcome(&r, id));
    }
    assert!(
        outcome(&r, "mcast.join").contains("239.1.2.3 on media0"),
        "{}",
        outcome(&r, "mcast.join")
    );
    // chrony is not running in the rig: time.sync fails, and the waiver covers it.
    assert!(
        outcome(&r, "time.sync").starts_with("waived"),
        "{}",
        outcome(&r, "time.sync")
    );

    // Now break things, one per check.
    rig.gw_sh("ip link set gw1 down"); // media loses carrier
    rig.gw_sh("ip link set gw0 mtu 1300"); // the path to the gateway no longer carries 1500
    rig.dut_sh("sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.media0.rp_filter=1"); // strict
    let r = qa(&rig);
    assert!(
        outcome(&r, "net.carrier").starts_with("fail: media (media0): no carrier"),
        "{}",
        outcome(&r, "net.carrier")
    );
    assert!(
        outcome(&r, "net.mtu").starts_with("fail: 1500-byte packets"),
        "{}",
        outcome(&r, "net.mtu")
    );
    assert!(
        outcome(&r, "mcast.rp-filter").starts_with("fail: strict reverse-path filter on media0"),
        "{}",
        outcome(&r, "mcast.rp-filter")
    );
    assert_eq!(r["verdict"], "NO-GO");

    rig.gw_sh("ip addr del 10.9.0.1/24 dev gw0"); // the gateway (and DNS) go away
    let r = qa(&rig);
    assert!(
        outcome(&r, "net.gateway").starts_with("fail: 10.9.0.1 via mgmt0 does not answer"),
        "{}",
        outcome(&r, "net.gateway")
    );
    assert!(
        outcome(&r, "net.dns").starts_with("fail: 10.9.0.1 do not answer"),
        "{}",
        outcome(&r, "net.dns")
    );

    // Thresholds from the unit config: SRT needs more buffer than rmem_max
    // allows; more free disk than there is. Expired waivers stop counting.
    let text2 = text
        .replace(
            "settle_seconds = 10",
            "settle_seconds = 10\nsrt_bitrate_mbps = 10000.0\nsrt_latency_ms = 8000\nmin_free_disk_mib = 999999999",
        )
        .replace("2099-12-31", "2020-01-01");
    std::fs::write(rig.host_path("/etc/flypack/unit.toml"), &text2).unwrap();
    let r = qa(&rig);
    assert!(
        outcome(&r, "net.udp-buffers").starts_with("fail: rmem_max"),
        "{}",
        outcome(&r, "net.udp-buffers")
    );
    assert!(
        outcome(&r, "sys.disk").starts_with("fail: "),
        "{}",
        outcome(&r, "sys.disk")
    );
    let ts = outcome(&r, "time.sync");
    assert!(
        ts.starts_with("fail: ") && ts.contains("a waiver expired on 2020-01-01"),
        "{ts}"
    );

    // The reports are written: JSON and JUnit.
    let xml = std::fs::read_to_string(rig.host_path("/var/lib/flypack/qa/report.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("net.gateway"))
        .unwrap_or_else(|| panic!("no net.gateway testcase in {xml}"));
    assert_eq!(case.attribute("classname"), Some("flypack.net"), "{xml}");
    assert!(case.children().any(|c| c.has_tag_name("failure")), "{xml}");
    assert!(rig.host_path("/var/lib/flypack/qa/report.json").exists());
}

/// The firewall, in the DUT's own network namespace (nftables is per
/// namespace): management gets SSH and the web app, media gets nothing of
/// them, the exporters are reachable from no LAN; with the table deleted the
/// same probes get through, so the test can fail.
#[test]
fn the_firewall_lets_in_only_what_each_lan_should_get() {
    let mut rig = Rig::new();
    let text = unit("10.9.0.5/24", "10.9.0.1", "");
    let u = rig.unit_file("u.toml", &text);
    let (code, out) = rig.firstboot(&["network", "apply", "--unit", u.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // Listeners on every interface of the DUT: SSH, HTTPS, node exporter.
    rig.dut_spawn(&[
        "python3",
        "-c",
        "import socket,threading,time\nfor p in (22,443,9100):\n s=socket.socket()\n s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n s.bind(('0.0.0.0',p))\n s.listen(8)\n threading.Thread(target=lambda s=s:[s.accept() for _ in iter(int,1)],daemon=True).start()\ntime.sleep(600)",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let probes = [
        ("10.9.0.5", 22),
        ("10.9.0.5", 443),
        ("10.9.0.5", 9100),
        ("10.8.0.5", 22),
        ("10.8.0.5", 9100),
    ];
    let open =
        |rig: &Rig| -> Vec<(&str, u16)> { probes.iter().copied().filter(|(a, p)| rig.gw_connects(a, *p)).collect() };
    assert_eq!(
        open(&rig).len(),
        probes.len(),
        "the listeners are not all reachable before the firewall"
    );
    let (code, out) = rig.firstboot(&["firewall", "apply"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(open(&rig), vec![("10.9.0.5", 22), ("10.9.0.5", 443)]);
    let (code, out) = rig.firstboot(&["firewall", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("input drop, forward drop"), "{out}");
    let written = std::fs::read_to_string(rig.host_path("/etc/flypack/firewall/flypack.nft")).unwrap();
    assert!(
        written.contains("iifname \"mgmt0\" tcp dport { 22, 80, 443 } accept"),
        "{written}"
    );
    // Without the table everything answers again: the probes can fail.
    rig.dut_sh("nft delete table inet flypack");
    assert_eq!(open(&rig).len(), probes.len());
    let (code, out) = rig.firstboot(&["firewall", "status"]);
    assert_ne!(code, 0, "{out}");
}
