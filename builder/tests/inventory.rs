#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `builder inventory`: the fleet's Ansible inventory from fleet files, as
//! Ansible itself reads it (`ansible-inventory --list`); what a fleet file
//! says stays text (a serial that is a Jinja template runs nothing on the
//! laptop); and bad input names the problem and leaves the old inventory.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn builder(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_builder")).args(args).output().unwrap()
}

fn example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/fleet.example.toml")).unwrap()
}

/// A second flypack: one unit with a static management address on a VLAN
/// and a role of its own.
const TRUCK_B: &str = r#"
version = 1
[[units]]
macs = ["52:54:00:00:0b:01"]
[units.config]
version = 1
hostname = "fp-dec-07"
role = "decoder"
[[units.config.interfaces]]
label = "uplink"
match = { mac = "52:54:00:00:0b:01" }
addresses = ["192.168.60.7/24"]
[[units.config.vlans]]
name = "mgmt.20"
parent = "uplink"
id = 20
addresses = ["172.20.5.7/22", "fd20::7/64"]
gateway = "172.20.4.1"
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn ansible_list(inv: &Path) -> Value {
    let o = Command::new("ansible-inventory")
        .arg("-i")
        .arg(inv)
        .arg("--list")
        .output()
        .expect("ansible-inventory (.ci/deps installs ansible-core)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn hosts(list: &Value, group: &str) -> Vec<String> {
    let mut v: Vec<String> = list[group]["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no group {group} in {list:#}"))
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn every_unit_is_grouped_by_flypack_role_and_segment_as_ansible_reads_it() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "fleet.toml", &example());
    let b = write(d.path(), "truck-b.toml", TRUCK_B);
    let inv = d.path().join("inventory.yml");
    let o = builder(&[
        "inventory",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        inv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = ansible_list(&inv);
    assert_eq!(hosts(&list, "flypack_truck_a"), ["fp-enc-01", "fp-mon-01"]);
    assert_eq!(hosts(&list, "flypack_truck_b"), ["fp-dec-07"]);
    assert_eq!(hosts(&list, "role_encoder"), ["fp-enc-01"]);
    assert_eq!(hosts(&list, "role_decoder"), ["fp-dec-07"]);
    assert_eq!(hosts(&list, "segment_10_10_0_0_24"), ["fp-enc-01"]);
    assert_eq!(hosts(&list, "segment_172_20_4_0_22"), ["fp-dec-07"]);
    assert_eq!(hosts(&list, "segment_dhcp"), ["fp-mon-01"]);
    let vars = &list["_meta"]["hostvars"];
    // SSH goes to the management address: the static one of the management
    // link (IPv4 first), on a VLAN too; a DHCP unit by its hostname.
    assert_eq!(vars["fp-enc-01"]["ansible_host"], "10.10.0.11", "{vars:#}");
    assert_eq!(vars["fp-dec-07"]["ansible_host"], "172.20.5.7", "{vars:#}");
    assert!(vars["fp-mon-01"].get("ansible_host").is_none(), "{vars:#}");
    // Text from the fleet file is marked unsafe (never templated).
    assert_eq!(
        vars["fp-enc-01"]["flypack_serial"]["__ansible_unsafe"], "FP-ENC-0001",
        "{vars:#}"
    );
    assert_eq!(
        vars["fp-dec-07"]["flypack_name"]["__ansible_unsafe"], "truck-b",
        "{vars:#}"
    );
    assert_eq!(
        vars["fp-dec-07"]["flypack_role"]["__ansible_unsafe"], "decoder",
        "{vars:#}"
    );
    assert_eq!(vars["fp-dec-07"]["ansible_user"], "flypack");
    // Media addresses are not where Ansible goes.
    let text = std::fs::read_to_string(&inv).unwrap();
    assert!(
        !text.contains("192.168.50.11") && !text.contains("192.168.60.7"),
        "{text}"
    );
}

#[test]
fn text_from_a_fleet_file_never_runs_as_a_template_on_the_laptop() {
    let d = tempfile::tempdir().unwrap();
    let marker = d.path().join("pwned");
    let hostile = example().replace(
        "serial = \"FP-ENC-0001\"",
        &format!("serial = \"{{{{ lookup('pipe', 'touch {}') }}}}\"", marker.display()),
    );
    assert!(hostile.contains("lookup('pipe'"));
    let a = write(d.path(), "fleet.toml", &hostile);
    let inv = d.path().join("inventory.yml");
    let o = builder(&["inventory", a.to_str().unwrap(), "--out", inv.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Ansible uses the variable: it must come out as the text it was.
    let o = Command::new("ansible")
        .arg("-i")
        .arg(&inv)
        .args([
            "fp-enc-01",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ flypack_serial }}",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("lookup('pipe'"), "{out}");
    assert!(!marker.exists(), "the serial ran as a template: {out}");
}

#[test]
fn bad_fleets_name_the_problem_and_leave_the_old_inventory() {
    let d = tempfile::tempdir().unwrap();
    let inv = d.path().join("inventory.yml");
    std::fs::write(&inv, "# the old inventory\n").unwrap();
    let unnamed = write(
        d.path(),
        "fleet.toml",
        &example().replace("flypack = \"truck-a\"\n", ""),
    );
    let again = write(d.path(), "again.toml", &example());
    let twin = write(d.path(), "truck-c.toml", &TRUCK_B.replace("fp-dec-07", "fp-enc-01"));
    let badname = write(d.path(), "x.toml", &example().replace("\"truck-a\"", "\"Truck A\""));
    let a = write(d.path(), "a.toml", &example());
    let cases: [(&[&Path], &str); 4] = [
        (
            &[&unnamed],
            "which flypack is this? Name it in the file (flypack = \"truck-a\"",
        ),
        (&[&a, &again], "both name the flypack \"truck-a\""),
        (
            &[&a, &twin],
            "the hostname \"fp-enc-01\" is in flypack \"truck-a\" and in flypack \"truck-c\"",
        ),
        (&[&badname], "flypack: \"Truck A\": expected 1 to 32 lower-case letters"),
    ];
    for (files, want) in cases {
        let mut args: Vec<&str> = vec!["inventory"];
        args.extend(files.iter().map(|p| p.to_str().unwrap()));
        args.extend(["--out", inv.to_str().unwrap()]);
        let o = builder(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{files:?}: {err}");
        assert!(err.contains(want), "{files:?}: {err}");
        assert_eq!(std::fs::read_to_string(&inv).unwrap(), "# the old inventory\n");
    }
}

/// `--unit-configs DIR`: each unit's config as HOSTNAME.toml (what the
/// config push playbook sends), each one valid and the unit's own.
#[test]
fn unit_configs_are_written_one_per_unit_and_validate() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "fleet.toml", &example());
    let b = write(d.path(), "truck-b.toml", TRUCK_B);
    let dir = d.path().join("configs");
    let o = builder(&[
        "inventory",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--unit-configs",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fp-dec-07.toml", "fp-enc-01.toml", "fp-mon-01.toml"]);
    for n in &names {
        let p = dir.join(n);
        let o = builder(&["--json", "validate", p.to_str().unwrap()]);
        assert!(o.status.success(), "{n}: {}", String::from_utf8_lossy(&o.stdout));
        let e: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(e["hostname"], n.trim_end_matches(".toml"), "{e}");
    }
    let dec = std::fs::read_to_string(dir.join("fp-dec-07.toml")).unwrap();
    assert!(
        dec.contains("172.20.5.7/22") && dec.contains("role = \"decoder\""),
        "{dec}"
    );
}
