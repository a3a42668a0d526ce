//! The state machine survives a crash anywhere: firstboot is killed at every
//! stage boundary and inside stages (FLYPACK_FAULT), run again, and converges
//! to the same end state, with no stage lost and none applied twice.
//! Runs against a system tree in a temp dir (`--root`), with a real FAT seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const UNIT: &str = r#"version = 1
hostname = "resume-unit"
[[interfaces]]
label = "mgmt"
match = { mac = "52:54:00:f1:00:01" }
dhcp = true
[[interfaces]]
label = "media"
match = { mac = "52:54:00:f1:00:02" }
addresses = ["192.168.50.10/24"]
[[vlans]]
name = "media.100"
parent = "media"
id = 100
addresses = ["10.100.0.10/24"]
[dns]
servers = ["192.168.50.1"]
[access]
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx6 test@rig"]
"#;

fn make_root(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    for d in ["etc/ssh", "etc/systemd/network", "usr/share/flypack", "var/lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/hostname"), "flypack\n").unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tflypack\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nsudo:x:27:flypack\n").unwrap();
    std::fs::write(root.join("etc/machine-id"), "").unwrap();
    std::fs::write(root.join("etc/debian_version"), "12.15\n").unwrap();
    std::fs::write(
        root.join("usr/share/flypack/unit.defaults.toml"),
        "version = 1\nhostname = \"flypack\"\n",
    )
    .unwrap();
    // The seed: FAT made by mkfs.vfat, unit.toml written by the contract code.
    let seed = dir.join("seed.img");
    std::fs::File::create(&seed).unwrap().set_len(16 << 20).unwrap();
    let o = Command::new("mkfs.vfat")
        .args(["-F", "16", "-n", "FLYPACKSEED"])
        .arg(&seed)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    flypack_contracts_seed_write(&seed);
    (root, seed)
}

fn flypack_contracts_seed_write(seed: &Path) {
    // The test binary links firstboot's dependencies, contracts among them.
    let len = std::fs::metadata(seed).unwrap().len();
    flypack_contracts::seed::write(seed, 0, len, &[("unit.toml", UNIT.as_bytes())], &[]).unwrap();
}

fn firstboot(root: &Path, seed: &Path, fault: Option<&str>) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_firstboot"));
    c.arg("--root").arg(root).arg("--seed").arg(seed).arg("run");
    if let Some(f) = fault {
        c.env("FLYPACK_FAULT", f);
    }
    c.output().unwrap()
}

fn journal(root: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(root.join("var/lib/flypack/journal.json")).unwrap()).unwrap()
}

/// Files whose content is the same on every run (no keys, ids, times).
fn deterministic(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for f in [
        "etc/hostname",
        "etc/hosts",
        "etc/flypack/unit.toml",
        "etc/flypack/ssh/flypack.keys",
        "etc/systemd/resolved.conf.d/60-flypack-unit.conf",
    ] {
        m.insert(
            f.to_string(),
            std::fs::read_to_string(root.join(f)).unwrap_or_else(|_| "<missing>".into()),
        );
    }
    for e in std::fs::read_dir(root.join("etc/systemd/network")).unwrap() {
        let e = e.unwrap();
        m.insert(
            format!("network/{}", e.file_name().to_string_lossy()),
            std::fs::read_to_string(e.path()).unwrap(),
        );
    }
    m
}

fn attempts(j: &Value) -> BTreeMap<String, (String, u64)> {
    j["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (
                    s["state"].as_str().unwrap().to_string(),
                    s["attempts"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn converges_after_a_crash_at_every_point() {
    let base_dir = tempfile::tempdir().unwrap();
    let (base_root, base_seed) = make_root(base_dir.path());
    let o = firstboot(&base_root, &base_seed, None);
    assert!(o.status.success(), "clean run: {}", String::from_utf8_lossy(&o.stderr));
    assert!(base_root.join("var/lib/flypack/firstboot.done").exists());
    let want = deterministic(&base_root);
    assert_eq!(want["etc/hostname"], "resume-unit\n");
    assert!(want.contains_key("network/10-flypack-media.100.netdev"));
    let base_attempts = attempts(&journal(&base_root));
    // Every stage of the one order, each run once in a clean run.
    let stages: Vec<String> = base_attempts.keys().cloned().collect();
    assert_eq!(
        stages.len(),
        10,
        "restore, config, identity, netconf, firewall, disk, network, stack, webapp, qa: {stages:?}"
    );
    for (stage, (state, n)) in &base_attempts {
        assert!(state == "done" || state == "skipped", "{stage}: {state}");
        assert_eq!(*n, 1, "{stage} ran {n} times in a clean run");
    }
    let order = [
        "restore", "config", "identity", "netconf", "firewall", "disk", "network", "stack", "webapp", "qa",
    ];
    let mut points: Vec<(String, String)> = Vec::new();
    for s in order {
        for p in ["before-start", "after-start", "mid", "after-run", "after-done"] {
            points.push((s.to_string(), p.to_string()));
        }
    }
    points.push(("files".into(), "mid".into()));
    for (stage, point) in points {
        let d = tempfile::tempdir().unwrap();
        let (root, seed) = make_root(d.path());
        let fault = format!("{stage}:{point}");
        let o = firstboot(&root, &seed, Some(&fault));
        // Every fault point is reached, in every stage.
        assert!(!o.status.success(), "{fault} never fired");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(&format!("injected fault at {fault}")),
            "{fault}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !root.join("var/lib/flypack/firstboot.done").exists(),
            "{fault}: done marker after a crash"
        );
        // What identity made before the crash must survive the re-run.
        let key_before = std::fs::read(root.join("etc/ssh/ssh_host_ed25519_key")).ok();
        let id_before = std::fs::read_to_string(root.join("etc/machine-id")).unwrap();
        let o = firstboot(&root, &seed, None);
        assert!(
            o.status.success(),
            "{fault}: re-run failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            root.join("var/lib/flypack/firstboot.done").exists(),
            "{fault}: not done after the re-run"
        );
        assert_eq!(
            deterministic(&root),
            want,
            "{fault}: end state differs from a clean run"
        );
        let j = attempts(&journal(&root));
        for (s, (state, n)) in &j {
            assert!(state == "done" || state == "skipped", "{fault}: {s} is {state}");
            // A stage interrupted after it was marked started runs again;
            // every other stage ran exactly once.
            let again = *s == stage && matches!(point.as_str(), "after-start" | "mid" | "after-run");
            let again = again || (stage == "files" && s == "netconf");
            assert_eq!(*n, if again { 2 } else { 1 }, "{fault}: stage {s} ran {n} times");
        }
        assert_eq!(
            j.len(),
            base_attempts.len(),
            "{fault}: a stage is missing from the journal"
        );
        let at = order.iter().position(|s| *s == stage);
        let identity_done_before = at.is_some_and(|i| i > 2) || (stage == "identity" && point == "after-done");
        if identity_done_before {
            assert_eq!(
                std::fs::read(root.join("etc/ssh/ssh_host_ed25519_key")).ok(),
                key_before,
                "{fault}: host key made twice"
            );
            assert_eq!(
                std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
                id_before,
                "{fault}: machine-id changed"
            );
        }
    }
}
