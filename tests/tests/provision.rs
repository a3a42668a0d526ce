//! End to end in QEMU: a unit's config on the seed partition provisions the
//! unit (addresses on the second NIC and a VLAN, checked inside the guest) to
//! GO; an unreachable gateway gives NO-GO on a unit that stays reachable; a
//! VLAN id change recreates the VLAN; a power cut during provisioning
//! converges to GO on the next boot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::{Command, Stdio};

use flypack_contracts::status::{StageState, Verdict};
use flypack_e2e::*;
use serde_json::Value;

fn ip_json(s: &Session, args: &str) -> Value {
    let (code, out) = s.ssh(&format!("ip -j {args}"));
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args}: {e}: {out}"))
}

fn addrs(v: &Value) -> Vec<String> {
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
fn a_seeded_unit_provisions_to_go_and_a_vlan_id_change_recreates_the_vlan() {
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let copy = seeded_copy(&img.path, dir.path(), &example_unit_with_key(&public));
    let s = Session::start(&copy, &key, &dir.path().join("console.log"), &[]);
    assert_eq!(
        s.status.verdict,
        Verdict::Go,
        "{:?}\n{}",
        s.status,
        console_tail(&s.log, 40)
    );
    assert_eq!(s.status.hostname, "fp-demo-01");
    let qa = s.status.qa.as_ref().expect("QA summary in the status");
    assert_eq!((qa.failed, qa.waived), (0, 1), "{qa:?}");
    for st in &s.status.stages {
        assert!(matches!(st.state, StageState::Done | StageState::Skipped), "{st:?}");
    }

    // Inside the guest: identity and addresses as configured.
    assert_eq!(s.ssh("hostname").1.trim(), "fp-demo-01");
    let media = ip_json(&s, "addr show dev enp0s4");
    assert_eq!(addrs(&media), ["192.168.50.10/24", "fd50::10/64"]);
    assert_eq!(media[0]["address"], "52:54:00:f1:00:02");
    let vlan = ip_json(&s, "-d addr show dev media.100");
    assert_eq!(vlan[0]["linkinfo"]["info_data"]["id"], 100);
    assert_eq!(addrs(&vlan), ["10.100.0.10/24"]);
    let (code, out) = s.ssh("sudo firstboot status");
    assert_eq!(code, 0, "{out}");
    let (_, out) = s.ssh("sudo firstboot config --explain");
    assert!(out.contains("=> using seed:unit.toml"), "{out}");
    let (code, out) = s.ssh("sudo firstboot qa --format junit");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("<testsuites name=\"flypack-qa\""));
    // The monitoring stack came up offline, from the images in the disk image.
    assert_eq!(s.status.services.len(), 4, "{:?}", s.status.services);
    for svc in &s.status.services {
        assert_eq!(svc.state.as_str(), "healthy", "{svc:?}");
    }
    let (code, out) = s.ssh("sudo docker ps --format '{{.Names}} {{.Status}}'");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("(healthy)")).count(), 4, "{out}");
    // VictoriaMetrics holds what vmagent scraped: node exporter and our
    // exporter, which joined the unit's multicast group on the VLAN.
    let query = |q: &str| {
        let (_, out) = s.ssh(&format!(
            "curl -s -G http://127.0.0.1:8428/api/v1/query --data-urlencode 'query={q}'"
        ));
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    };
    let t0 = std::time::Instant::now();
    loop {
        let node = query("up{job=\"node\"} == 1");
        let joined = query("flypack_mcast_joined{group=\"239.100.0.1\",interface=\"media.100\"} == 1");
        if !node.is_empty() && !joined.is_empty() {
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 180,
            "series missing in VictoriaMetrics: node {node:?}, multicast {joined:?}"
        );
        std::thread::sleep(std::time::Duration::from_secs(5));
    }
    // SSH host keys were made on the unit, not shipped in the image.
    let (_, out) = s.ssh("sudo ls /etc/ssh");
    assert!(out.contains("ssh_host_ed25519_key"), "{out}");
    // Only the types the image's sshd config names: no RSA key (15 s to make
    // under emulation) unless a profile asks for one.
    assert!(
        out.contains("ssh_host_ecdsa_key") && !out.contains("ssh_host_rsa_key"),
        "{out}"
    );

    // The VLAN id changes: networkd (systemd 252) would keep the old one;
    // firstboot deletes it over netlink so it is recreated.
    let changed = example_unit_with_key(&public).replace("id = 100", "id = 101");
    let f = dir.path().join("changed.toml");
    std::fs::write(&f, &changed).unwrap();
    s.put(&f, "/tmp/changed.toml");
    let (code, out) = s.ssh("sudo firstboot network apply --unit /tmp/changed.toml");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied; verified"), "{out}");
    let vlan = ip_json(&s, "-d addr show dev media.100");
    assert_eq!(vlan[0]["linkinfo"]["info_data"]["id"], 101, "{vlan}");
    assert_eq!(addrs(&vlan), ["10.100.0.10/24"]);

    // NIC tuning for a NIC matched by its predictable name only: the .link
    // file must match the NIC udev names enp0s4 (its kernel name is eth1).
    let gro = || {
        let (code, out) = s.ssh("sudo ethtool -k enp0s4");
        assert_eq!(code, 0, "{out}");
        out.lines()
            .find_map(|l| l.strip_prefix("generic-receive-offload: "))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no GRO line in ethtool -k: {out}"))
    };
    assert_eq!(gro(), "on", "virtio-net starts with GRO on");
    let tuned = changed.replace(
        "match = { mac = \"52:54:00:f1:00:02\" }",
        "match = { name = \"enp0s4\" }\ntuning = { gro = false }",
    );
    assert_ne!(tuned, changed, "the example unit's media NIC is matched by MAC");
    std::fs::write(&f, tuned).unwrap();
    s.put(&f, "/tmp/tuned.toml");
    let (code, out) = s.ssh("sudo firstboot network apply --unit /tmp/tuned.toml");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied; verified"), "{out}");
    let (_, out) = s.ssh("sudo udevadm info --query=property /sys/class/net/enp0s4");
    assert!(
        out.contains("ID_NET_LINK_FILE=/etc/systemd/network/10-flypack-media.link"),
        "udev did not use our .link file for enp0s4:\n{out}"
    );
    assert_eq!(gro(), "off", "the .link file's GenericReceiveOffload=false");
    assert_eq!(
        addrs(&ip_json(&s, "addr show dev enp0s4")),
        ["192.168.50.10/24", "fd50::10/64"]
    );
}

#[test]
fn an_unreachable_gateway_is_no_go_and_the_unit_stays_reachable() {
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let unit = example_unit_with_key(&public).replace(
        "addresses = [\"192.168.50.10/24\", \"fd50::10/64\"]",
        "addresses = [\"192.168.50.10/24\", \"fd50::10/64\"]\ngateway = \"192.168.50.1\"",
    );
    let copy = seeded_copy(&img.path, dir.path(), &unit);
    let s = Session::start(&copy, &key, &dir.path().join("console.log"), &[]);
    assert_eq!(s.status.verdict, Verdict::NoGo, "{:?}", s.status);
    assert!(
        s.status.reasons.iter().any(|r| r.contains("net.config-applied")
            && r.contains("gateway 192.168.50.1 does not answer")
            && r.contains("rolled back")),
        "{:?}",
        s.status.reasons
    );
    // Still reachable on its management address, and says why.
    let (code, out) = s.ssh("sudo firstboot status");
    assert_eq!(code, 1, "NO-GO exit code: {out}");
    assert!(out.contains("NO-GO net.config-applied"), "{out}");
    let (_, issue) = s.ssh("cat /run/flypack/status.issue");
    assert!(issue.contains("NO-GO"), "{issue}");
    // The rollback left the image's fallback: the media NIC has no static address.
    let media = ip_json(&s, "addr show dev enp0s4");
    assert!(!addrs(&media).contains(&"192.168.50.10/24".to_string()), "{media}");
}

#[test]
fn a_power_cut_during_provisioning_converges_to_go() {
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let copy = seeded_copy(&img.path, dir.path(), &example_unit_with_key(&public));
    let overlay = dir.path().join("disk.qcow2");
    let log1 = dir.path().join("console1.log");
    // First boot: pull the plug once firstboot is into its stages.
    let mut child = builder()
        .args(["boot", "--quiet", "--log"])
        .arg(&log1)
        .arg("--overlay")
        .arg(&overlay)
        .arg(&copy)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(&log1).unwrap_or_default()).into_owned();
        if text.contains("stage disk: running") {
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 600,
            "firstboot never started:\n{}",
            console_tail(&log1, 40)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child.kill().unwrap(); // QEMU dies with it: a power cut
    child.wait().unwrap();
    let (ok, _) = sh(Command::new("pgrep").args(["-f", &format!("file={}", overlay.display())]));
    assert!(!ok, "QEMU survived");

    // Second boot of the same disk.
    let s = Session::start(
        &copy,
        &key,
        &dir.path().join("console2.log"),
        &["--overlay", overlay.to_str().unwrap()],
    );
    assert_eq!(s.status.verdict, Verdict::Go, "{:?}", s.status);
    let disk = s.status.stages.iter().find(|st| st.name == "disk").unwrap();
    assert_eq!(disk.attempts, 2, "the interrupted stage ran again: {disk:?}");
    let identity = s.status.stages.iter().find(|st| st.name == "identity").unwrap();
    assert_eq!(
        identity.attempts, 1,
        "a finished stage must not run again: {identity:?}"
    );
    let (_, out) = s.ssh("sudo cat /var/lib/flypack/journal.json");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert!(j["runs"].as_array().unwrap().len() >= 2, "{j}");
    // The first boot's console shows where it was cut.
    let first = String::from_utf8_lossy(&std::fs::read(&log1).unwrap()).into_owned();
    assert!(
        !first.lines().any(|l| l.starts_with("FLYPACK-STATUS")),
        "the first boot finished before the cut"
    );
    let _ = std::io::BufReader::new(&b""[..]).lines();
}
