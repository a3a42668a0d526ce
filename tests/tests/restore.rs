//! Backups and `builder restore`: bad archives are refused before anything is
//! written; a provisioned unit with changed identity and metrics, backed up
//! and restored onto a blank disk, comes back as it was (checked in QEMU).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flypack_contracts::backup::{self, Manifest, Writer};
use flypack_e2e::*;

fn manifest(image: &str) -> Manifest {
    Manifest {
        schema: backup::SCHEMA,
        image: image.into(),
        hostname: "fp-test".into(),
        created: "2026-11-27T00:00:00Z".into(),
        version: "test".into(),
        volumes: Default::default(),
        entries: vec![],
    }
}

/// A small well-formed backup for `image`.
fn good_archive(dir: &Path, image: &str) -> PathBuf {
    let p = dir.join(format!("{image}.flypack-backup.tar.zst"));
    let mut w = Writer::new(File::create(&p).unwrap()).unwrap();
    w.add_bytes("identity/etc/hostname", b"fp-test\n", 0o644).unwrap();
    w.add_bytes("volumes/vm-data/data/x", &vec![3u8; 300_000], 0o644)
        .unwrap();
    w.finish(manifest(image)).unwrap();
    p
}

/// A zstd-compressed tar with one raw entry plus a manifest listing nothing.
fn evil_archive(dir: &Path, name: &str, kind: tar::EntryType, link: Option<&str>) -> PathBuf {
    let p = dir.join("evil.tar.zst");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(if kind == tar::EntryType::Regular { 4 } else { 0 });
    h.set_mode(0o644);
    if let Some(l) = link {
        h.as_gnu_mut().unwrap().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    let data: &[u8] = if kind == tar::EntryType::Regular { b"evil" } else { b"" };
    b.append(&h, data).unwrap();
    let json = serde_json::to_vec(&manifest("flypack")).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, backup::MANIFEST_NAME, json.as_slice()).unwrap();
    let mut enc = zstd::stream::write::Encoder::new(File::create(&p).unwrap(), 3).unwrap();
    enc.write_all(&b.into_inner().unwrap()).unwrap();
    enc.finish().unwrap();
    p
}

fn restore_to_file(archive: &Path, image: &Path, out: &Path) -> Run {
    run(builder()
        .args(["restore", "--backup"])
        .arg(archive)
        .arg("--image")
        .arg(image)
        .arg("--output")
        .arg(out))
}

#[test]
fn bad_archives_are_refused_with_a_reason_and_nothing_is_written() {
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("restored.img");
    let good = good_archive(dir.path(), "flypack");
    let bytes = std::fs::read(&good).unwrap();
    let mut cases: Vec<(String, PathBuf, &str)> = Vec::new();
    let truncated = dir.path().join("truncated.tar.zst");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    cases.push(("truncated".into(), truncated, "truncated"));
    let flipped = dir.path().join("flipped.tar.zst");
    let mut f = bytes.clone();
    let at = f.len() / 2;
    f[at] ^= 0x01;
    std::fs::write(&flipped, &f).unwrap();
    cases.push(("a flipped byte".into(), flipped, "nothing was written"));
    for (name, kind, link, want) in [
        (
            "identity/../../etc/shadow",
            tar::EntryType::Regular,
            None,
            "\"..\" component",
        ),
        ("/etc/shadow", tar::EntryType::Regular, None, "absolute path"),
        (
            "volumes/vm-data/l",
            tar::EntryType::Symlink,
            Some("../../../etc/shadow"),
            "outside its tree",
        ),
        (
            "volumes/vm-data/l",
            tar::EntryType::Symlink,
            Some("/etc/shadow"),
            "absolute",
        ),
    ] {
        let p = dir.path().join(format!("evil-{}.tar.zst", cases.len()));
        std::fs::rename(evil_archive(dir.path(), name, kind, link), &p).unwrap();
        cases.push((format!("entry {name} -> {link:?}"), p, want));
    }
    let other = good_archive(dir.path(), "other-image");
    cases.push(("made for another image".into(), other, "\"other-image\" image"));
    for (what, archive, want) in &cases {
        let r = restore_to_file(archive, &img.path, &out);
        assert_ne!(r.code, 0, "{what}: restore succeeded");
        assert!(
            r.stderr.contains(want),
            "{what}: the error does not say {want:?}:\n{}",
            r.stderr
        );
        assert!(r.stderr.contains("nothing was written"), "{what}: {}", r.stderr);
        assert_eq!(
            names(dir.path()).iter().filter(|n| n.contains("restored")).count(),
            0,
            "{what}: something was written"
        );
        // firstboot backup verify refuses the damaged and unsafe ones too
        // (another image's backup is a sound archive: only restore refuses it).
        if !what.contains("another image") {
            let o = firstboot().arg("backup").arg("verify").arg(archive).output().unwrap();
            assert!(!o.status.success(), "{what}: firstboot backup verify passed it");
        }
    }
    // The good one restores: the archive is inside the root filesystem, intact.
    let r = restore_to_file(&good, &img.path, &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let inside = dir.path().join("inside.tar.zst");
    let start = img.part(4).start_bytes;
    let (ok, msg) = sh(Command::new("debugfs")
        .arg("-R")
        .arg(format!(
            "dump /var/lib/flypack/restore/backup.tar.zst {}",
            inside.display()
        ))
        .arg(format!("{}?offset={start}", out.display())));
    assert!(ok, "{msg}");
    assert_eq!(std::fs::read(&inside).unwrap(), bytes);
    let (ok, msg) = sh(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={start}", out.display())));
    assert!(ok, "e2fsck after restore: {msg}");
}

#[test]
fn a_unit_backed_up_and_restored_onto_a_blank_disk_comes_back_with_identity_and_data() {
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let copy = seeded_copy(&img.path, dir.path(), &example_unit_with_key(&public));
    let before = {
        let s = Session::start(&copy, &key, &dir.path().join("console-1.log"), &[]);
        assert_eq!(s.status.verdict.as_str(), "GO", "{:?}", s.status);
        // A changed hostname and address, applied the way an engineer would.
        let changed = example_unit_with_key(&public)
            .replace("hostname = \"fp-demo-01\"", "hostname = \"fp-renamed-07\"")
            .replace("\"192.168.50.10/24\"", "\"192.168.50.77/24\"");
        let u = dir.path().join("changed.toml");
        std::fs::write(&u, &changed).unwrap();
        s.put(&u, "/tmp/changed.toml");
        let (code, out) = s.ssh(
            "sudo firstboot network apply --unit /tmp/changed.toml && sudo hostnamectl set-hostname fp-renamed-07",
        );
        assert_eq!(code, 0, "{out}");
        // Metrics: a probe series, flushed to disk.
        let (code, out) = s.ssh(
            "curl -fsS --data-binary 'flypack_restore_probe{unit=\"x\"} 42' http://127.0.0.1:8428/api/v1/import/prometheus \
             && sleep 2 && curl -fsS http://127.0.0.1:8428/internal/force_flush",
        );
        assert_eq!(code, 0, "{out}");
        let (code, out) = s.ssh("sudo firstboot backup --json");
        assert_eq!(code, 0, "{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("{out}"));
        let made: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            made["volumes"]["vm-data"].as_str().unwrap().contains("snapshot"),
            "{made}"
        );
        let remote = made["archive"].as_str().unwrap().to_string();
        let (code, out) = s.ssh(&format!(
            "sudo chmod 644 {remote} && sudo firstboot backup verify {remote}"
        ));
        assert_eq!(code, 0, "{out}");
        s.get(&remote, &dir.path().join("unit.flypack-backup.tar.zst"));
        s.ssh("cat /etc/machine-id; sudo cat /etc/ssh/ssh_host_ed25519_key.pub")
            .1
    };
    std::fs::remove_file(&copy).unwrap();

    // A blank disk, restored.
    let restored = dir.path().join("restored.img");
    let r = restore_to_file(&dir.path().join("unit.flypack-backup.tar.zst"), &img.path, &restored);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = Session::start(&restored, &key, &dir.path().join("console-2.log"), &[]);
    assert_eq!(
        s.status.verdict.as_str(),
        "GO",
        "{:?}\n{}",
        s.status,
        console_tail(&s.log, 40)
    );
    assert_eq!(s.status.hostname, "fp-renamed-07");
    let restore_stage = s
        .status
        .stages
        .iter()
        .find(|st| st.name == "restore")
        .expect("a restore stage");
    assert_eq!(
        restore_stage.state,
        flypack_contracts::status::StageState::Done,
        "{restore_stage:?}"
    );
    let (_, facts) = s.ssh("cat /etc/machine-id; sudo cat /etc/ssh/ssh_host_ed25519_key.pub");
    assert_eq!(facts, before, "machine-id or SSH host key differ after the restore");
    let (_, addrs) = s.ssh("ip -br addr show dev enp0s4");
    assert!(addrs.contains("192.168.50.77/24"), "{addrs}");
    let (code, out) =
        s.ssh("curl -fsSg 'http://127.0.0.1:8428/api/v1/query?query=last_over_time(flypack_restore_probe[1h])'");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"42\""), "the probe series did not come back: {out}");
}
