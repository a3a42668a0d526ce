//! The USB installer end to end in QEMU: a server with the stick and a blank
//! internal disk installs, and the disk then boots to GO (UEFI); with two
//! candidate disks the unit config's rule picks the one it names (legacy
//! BIOS, which proves the stick boots there too), and images it although it
//! holds a partition table, because the config allows wiping; without that,
//! such a disk is refused. The installed disk's boot is also the appliance's
//! UEFI boot test: each boot costs minutes under emulation.
//!
//! The installed disk is booted as its own VM: a reboot inside an emulated
//! machine that has just written 1.5 GB through a USB stick now and then
//! never comes back under TCG (seen once: the kernel never reached
//! "Restarting system"), and a test must not hang on the emulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use flypack_e2e::*;
use serde_json::Value;

/// The `FLYPACK-INSTALL` events on a console, in order.
fn install_events(console: &str) -> Vec<Value> {
    console
        .lines()
        .filter_map(|l| l.split_once("FLYPACK-INSTALL ").map(|(_, j)| j))
        .map(|j| serde_json::from_str(j.trim()).unwrap_or_else(|e| panic!("bad FLYPACK-INSTALL line {j:?}: {e}")))
        .collect()
}

fn event<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == kind)
        .unwrap_or_else(|| panic!("no {kind:?} event in {events:#?}"))
}

/// sfdisk's view of a disk file, if it has a partition table.
fn table(disk: &Path) -> Option<Value> {
    let o = Command::new("sfdisk").arg("--json").arg(disk).output().unwrap();
    o.status
        .success()
        .then(|| serde_json::from_slice::<Value>(&o.stdout).unwrap()["partitiontable"].clone())
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn a_blank_server_installs_from_the_stick_and_boots_the_disk_ready() {
    let img = shared_image();
    let stick = img.path.with_file_name("flypack-installer.img");
    let stick_time = mtime(&stick);
    // The stick carries the appliance image raw in its fifth partition,
    // exactly the image's size, after its own root.
    let st = table(&stick).expect("the stick has no partition table");
    let sp = st["partitions"].as_array().unwrap();
    assert_eq!(sp.len(), 5, "{st}");
    assert_eq!(sp[4]["name"], "flypack-payload", "{st}");
    assert_eq!(
        sp[4]["size"].as_u64().unwrap() * 512,
        img.manifest.disk.size_bytes,
        "{st}"
    );
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("internal.raw");
    let log = dir.path().join("console.log");
    // The stick's boot, up to the moment it reboots into the disk.
    let b = boot_within(
        &stick,
        900,
        &[
            "--firmware",
            "uefi",
            "--installer",
            "--disk",
            &format!("{}:INTERNAL-1", disk.display()),
            "--until",
            "is imaged. Rebooting into it",
        ],
        &log,
    );
    assert_eq!(b.code, 0, "{}\n{}", b.stderr, console_tail(&log, 60));
    let events = install_events(&b.console);
    let chosen = event(&events, "disk");
    assert_eq!(chosen["disk"], "/dev/vda");
    assert_eq!(chosen["serial"], "INTERNAL-1");
    assert!(
        chosen["reason"].as_str().unwrap().contains("only non-removable disk"),
        "{chosen}"
    );
    let written = event(&events, "written");
    assert!(written["bytes"].as_u64().unwrap() > 500 << 20, "{written}");
    let done = event(&events, "done");
    // The disk is the appliance with fresh identifiers: the stick's and the
    // image's never collide.
    let t = table(&disk).expect("the internal disk has no partition table");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    let id = t["id"].as_str().unwrap().to_ascii_lowercase();
    assert_eq!(id, done["ids"]["disk"].as_str().unwrap().to_ascii_lowercase());
    assert_ne!(
        id,
        img.manifest.disk.disk_guid.to_ascii_lowercase(),
        "the disk kept the image's disk id"
    );
    let root_uuid = parts[3]["uuid"].as_str().unwrap().to_ascii_lowercase();
    assert_ne!(
        root_uuid,
        img.part(4).uuid.to_ascii_lowercase(),
        "the root partition kept the image's PARTUUID"
    );
    let (ok, msg) = sh(Command::new("sgdisk").arg("-v").arg(&disk));
    assert!(ok && msg.contains("No problems found"), "sgdisk -v: {msg}");
    // The record of the install, inside the installed system. The VM was
    // stopped with the filesystem mounted: read it without its bitmaps (-c),
    // as the journal has not been replayed.
    let start = parts[3]["start"].as_u64().unwrap() * 512;
    let o = Command::new("debugfs")
        .args(["-c", "-R", "cat /etc/flypack/install.json"])
        .arg(format!("{}?offset={start}", disk.display()))
        .output()
        .unwrap();
    let record: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("install.json: {e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(record["image"], "flypack");
    assert_eq!(record["serial"], "INTERNAL-1");
    // The stick image itself was never written (the VM ran on an overlay).
    assert_eq!(mtime(&stick), stick_time);

    // The server then boots its disk (UEFI, no firmware boot entry: the
    // removable-media path) to the verdict of the installed system.
    let b = boot_within(
        &disk,
        600,
        &["--firmware", "uefi"],
        &dir.path().join("console-disk.log"),
    );
    // This boot is also the appliance's UEFI boot test (the disk is the
    // image with fresh identifiers): OVMF started the removable-media boot
    // loader, which is GRUB, and the unit reached GO.
    assert_default_go(&b, "the installed disk, UEFI");
    assert!(
        b.console.contains("BdsDxe: starting Boot0001 \"UEFI Misc Device\""),
        "OVMF did not boot the disk"
    );
    assert!(b.console.contains("GNU GRUB"), "no GRUB banner on the UEFI console");
}

#[test]
fn with_two_disks_the_unit_configs_rule_picks_the_named_one_and_may_wipe_it() {
    let img = shared_image();
    let stick = img.path.with_file_name("flypack-installer.img");
    let dir = tempfile::tempdir().unwrap();
    // A stick whose seed names the disk by serial; the unit config travels on
    // to the installed disk's seed.
    // It also allows wiping: the named disk was partitioned and never
    // formatted (refused without allow_wipe: the next test).
    let unit = std::fs::read_to_string(repo().join("images/unit.example.toml"))
        .unwrap()
        .replace(
            "# disk.serial = \"S4EWNX0R123456\"",
            "disk.serial = \"pick-me\"\nallow_wipe = true",
        );
    assert!(unit.contains("disk.serial = \"pick-me\""));
    let stick = seeded_copy(&stick, dir.path(), &unit);
    let other = dir.path().join("other.raw");
    let named = dir.path().join("named.raw");
    // The other disk is larger and comes first: neither "only" nor order decides.
    std::fs::File::create(&other).unwrap().set_len(10 << 30).unwrap();
    std::fs::File::create(&named).unwrap().set_len(8 << 30).unwrap();
    let (ok, out) = sh(Command::new("sgdisk").args(["-o", "-n", "1:0:+1G"]).arg(&named));
    assert!(ok, "{out}");
    let log = dir.path().join("console.log");
    let r = run(builder()
        .args([
            "--json",
            "boot",
            "--quiet",
            "--installer",
            "--expect-ready",
            "900",
            "--until",
            "\"event\":\"done\"",
        ])
        .arg("--log")
        .arg(&log)
        .arg("--disk")
        .arg(format!("{}:OTHER-1", other.display()))
        .arg("--disk")
        .arg(format!("{}:PICK-ME", named.display()))
        .arg(&stick));
    let console = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, console_tail(&log, 60));
    let events = install_events(&console);
    let chosen = event(&events, "disk");
    assert_eq!(chosen["disk"], "/dev/vdb", "{chosen}");
    assert_eq!(chosen["serial"], "PICK-ME");
    assert!(
        chosen["reason"].as_str().unwrap().contains("serial \"pick-me\""),
        "{chosen}"
    );
    assert_eq!(chosen["config"], "seed:unit.toml");
    assert!(table(&other).is_none(), "the other disk was written");
    let t = table(&named).expect("the named disk has no partition table");
    // Its old table (one partition) was wiped: it holds the appliance's four.
    assert_eq!(t["partitions"].as_array().unwrap().len(), 4, "{t}");
    // The unit config went along, on the installed disk's seed.
    let seed = &t["partitions"][2];
    let (off, len) = (
        seed["start"].as_u64().unwrap() * 512,
        seed["size"].as_u64().unwrap() * 512,
    );
    let files = flypack_contracts::seed::read(&named, off, len).unwrap();
    assert_eq!(files.unit.as_deref(), Some(unit.as_str()));
}

#[test]
fn a_disk_with_a_partition_table_and_no_filesystem_is_refused() {
    let img = shared_image();
    let stick = img.path.with_file_name("flypack-installer.img");
    let dir = tempfile::tempdir().unwrap();
    // A disk someone partitioned and never formatted: no filesystem to see.
    let disk = dir.path().join("partitioned.raw");
    std::fs::File::create(&disk).unwrap().set_len(10 << 30).unwrap();
    let (ok, out) = sh(Command::new("sgdisk").args(["-o", "-n", "1:0:+1G"]).arg(&disk));
    assert!(ok, "{out}");
    let before = std::fs::read(&disk).unwrap()[..1 << 20].to_vec();
    let boot = |stick: &Path, log: &Path, until: &str| {
        run(builder()
            .args([
                "--json",
                "boot",
                "--quiet",
                "--installer",
                "--expect-ready",
                "900",
                "--until",
                until,
            ])
            .arg("--log")
            .arg(log)
            .arg("--disk")
            .arg(format!("{}:PARTED-1", disk.display()))
            .arg(stick))
    };
    // Refused (a NO-GO status line says why), nothing written.
    let log = dir.path().join("refused.log");
    let r = boot(&stick, &log, "NOT INSTALLED");
    let console = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, console_tail(&log, 60));
    assert!(
        console.contains("gpt partition table") && console.contains("allow_wipe"),
        "{}",
        console_tail(&log, 40)
    );
    assert_eq!(
        std::fs::read(&disk).unwrap()[..1 << 20],
        before[..],
        "the refused disk was written"
    );
    // With allow_wipe in the unit config such a disk is imaged: the test
    // above (one installer boot serves both).
}
