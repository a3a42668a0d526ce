//! The restore stage against crafted archives, on a scratch root: every one
//! is refused, and nothing is written outside the scratch root (nor, for
//! most, anywhere but the restore folder). The archives are made the way an
//! attacker holding a unit's backup key could make them: well formed,
//! listed in their manifest, tagged with the fleet's own auth key.
//! Needs root (a small tmpfs for the "larger than the disk" case).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flypack_engine::backup::{self, AuthKey, Entry, FleetKey, Kind, Manifest};
use sha2::{Digest, Sha256};

type E<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

fn manifest(entries: &[E]) -> Manifest {
    Manifest {
        schema: backup::SCHEMA,
        image: "flypack".into(),
        hostname: "fp-restored".into(),
        created: "2026-11-28T00:00:00Z".into(),
        version: "test".into(),
        volumes: Default::default(),
        entries: entries
            .iter()
            .map(|(name, kind, data, link)| Entry {
                path: name.trim_end_matches('/').to_string(),
                kind: match kind {
                    tar::EntryType::Directory => Kind::Dir,
                    tar::EntryType::Symlink => Kind::Symlink,
                    _ => Kind::File,
                },
                mode: 0o644,
                size: if *kind == tar::EntryType::Regular {
                    data.len() as u64
                } else {
                    0
                },
                sha256: (*kind == tar::EntryType::Regular).then(|| hex::encode(Sha256::digest(data))),
                target: link.map(String::from),
            })
            .collect(),
    }
}

/// The decrypted form `builder restore` leaves on a unit: tar.zst, tagged.
fn craft(path: &Path, entries: &[E], m: &Manifest, auth: &AuthKey) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.as_gnu_mut().unwrap().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    let json = serde_json::to_vec(m).unwrap();
    for (name, data) in [
        (backup::MANIFEST_NAME, json.clone()),
        (backup::TAG_NAME, auth.tag(&json).into_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    let mut z = zstd::stream::write::Encoder::new(std::fs::File::create(path).unwrap(), 3).unwrap();
    z.write_all(&b.into_inner().unwrap()).unwrap();
    z.finish().unwrap();
}

/// A scratch unit root with the fleet key's unit part in the image's place.
fn scratch(root: &Path, key: &FleetKey) {
    for d in ["etc/ssh", "usr/share/flypack", "var/lib/flypack/restore"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/hostname"), "flypack\n").unwrap();
    std::fs::write(
        root.join("usr/share/flypack/unit.defaults.toml"),
        "version = 1\nhostname = \"flypack\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("etc/flypack/backup")).unwrap();
    key.unit_part()
        .save(&root.join("etc/flypack/backup/unit-key.toml"))
        .unwrap();
}

/// Every path under `dir` (relative), sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `firstboot --root ROOT run --early` (the restore stage comes first).
fn run_early(root: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_firstboot"))
        .arg("--root")
        .arg(root)
        .args(["run", "--early"])
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

const ARCHIVE: &str = "var/lib/flypack/restore/backup.tar.zst";

/// firstboot's own records, written by every run.
fn bookkeeping(p: &str) -> bool {
    [
        "var/lib/flypack/journal.json",
        "var/lib/flypack/run.lock",
        "var/lib/flypack/status.json",
        "var/lib/flypack/metrics",
        "var/lib/flypack/metrics/verdict.prom",
        "run",
        "run/flypack",
        "run/flypack/status.issue",
    ]
    .contains(&p)
}

#[test]
fn crafted_archives_are_refused_by_the_restore_stage_and_nothing_escapes() {
    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
    let key = FleetKey::generate("2026-11-28T00:00:00Z").unwrap();
    let other = FleetKey::generate("2026-11-28T00:00:00Z").unwrap();
    let cases: &[(&str, &[E], &str)] = &[
        (
            "identity symlink chain",
            &[
                ("identity/a", D, b"", None),
                ("identity/a/b", L, b"", Some("..")),
                ("identity/a/b/b/etc/shadow", F, b"evil", None),
            ],
            "files and directories only",
        ),
        (
            "volume symlink chain",
            &[
                ("volumes/vm-data/a", D, b"", None),
                ("volumes/vm-data/a/b", L, b"", Some("..")),
                ("volumes/vm-data/a/b/a/b/x", F, b"evil", None),
            ],
            "a symlink in the same archive",
        ),
        (
            "a directory through a link",
            &[
                ("volumes/vm-data/l", L, b"", Some("d")),
                ("volumes/vm-data/l/sub/", D, b"", None),
            ],
            "passes through",
        ),
        (
            "dot-dot",
            &[("identity/../../../etc/evil", F, b"evil", None)],
            "\"..\" component",
        ),
        ("absolute", &[("/etc/evil", F, b"evil", None)], "absolute path"),
        (
            "volume name ..",
            &[("volumes/../evil", F, b"evil", None)],
            "\"..\" component",
        ),
        (
            "volume name with a slash",
            &[("volumes/vm-data/../../x", F, b"evil", None)],
            "\"..\" component",
        ),
        (
            "volume name",
            &[("volumes/.hidden/x", F, b"evil", None)],
            "not a Docker volume name",
        ),
    ];
    for (what, entries, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        scratch(&root, &key);
        craft(&root.join(ARCHIVE), entries, &manifest(entries), key.auth());
        let outside = tree(dir.path());
        let before = tree(&root);
        let (ok, out) = run_early(&root);
        assert!(!ok, "{what}: the restore went through:\n{out}");
        assert!(out.contains("refused") && out.contains(want), "{what}: {out}");
        assert!(out.contains("nothing was written"), "{what}: {out}");
        // Nothing outside the scratch root, nothing in it but the journal.
        let after: Vec<String> = tree(dir.path())
            .into_iter()
            .filter(|p| !p.starts_with("root"))
            .collect();
        let was: Vec<String> = outside.into_iter().filter(|p| !p.starts_with("root")).collect();
        assert_eq!(after, was, "{what}: something was written outside the scratch root");
        // Only firstboot's own records: its journal, and the NO-GO status it
        // announces with the reason.
        let new: Vec<String> = tree(&root)
            .into_iter()
            .filter(|p| !before.contains(p))
            .filter(|p| !bookkeeping(p))
            .collect();
        assert!(new.is_empty(), "{what}: written: {new:?}");
        let status = std::fs::read_to_string(root.join("var/lib/flypack/status.json")).unwrap();
        assert!(
            status.contains("NO-GO") && status.contains("stage restore failed"),
            "{what}: {status}"
        );
    }

    // Made with another fleet's key (or altered and re-tagged by someone
    // without this fleet's): the tag does not verify.
    let entries: &[E] = &[("identity/etc/hostname", F, b"evil\n", None)];
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    scratch(&root, &key);
    craft(&root.join(ARCHIVE), entries, &manifest(entries), other.auth());
    let (ok, out) = run_early(&root);
    assert!(
        !ok && out.contains("not authenticated by this fleet's backup key"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(root.join("etc/hostname")).unwrap(), "flypack\n");

    // A sealed archive the unit cannot open.
    let sealed = dir.path().join("sealed");
    {
        let mut w = backup::Writer::new(std::fs::File::create(&sealed).unwrap(), &key.unit_part()).unwrap();
        w.add_bytes("identity/etc/hostname", b"evil\n", 0o644).unwrap();
        w.finish(manifest(&[])).unwrap();
    }
    std::fs::copy(&sealed, root.join(ARCHIVE)).unwrap();
    let (ok, out) = run_early(&root);
    assert!(!ok && out.contains("encrypted to the fleet's backup key"), "{out}");

    // A good one goes through: identity back, volume staged.
    let data = vec![5u8; 100_000];
    let entries: &[E] = &[
        ("identity/etc/hostname", F, b"fp-restored\n", None),
        (
            "identity/etc/flypack/unit.toml",
            F,
            b"version = 1\nhostname = \"fp-restored\"\n",
            None,
        ),
        ("volumes/vm-data/part/x", F, &data, None),
    ];
    let mut m = manifest(entries);
    m.volumes.insert("vm-data".into(), "copied".into());
    craft(&root.join(ARCHIVE), entries, &m, key.auth());
    let (_, out) = run_early(&root);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "fp-restored\n",
        "{out}"
    );
    assert_eq!(
        std::fs::read(root.join("var/lib/flypack/restore/volumes/vm-data/part/x")).unwrap(),
        data
    );
    assert!(!root.join(ARCHIVE).exists(), "the archive stays after the restore");
}

/// A tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn more_data_than_the_disk_holds_is_refused_before_anything_is_written() {
    let key = FleetKey::generate("2026-11-28T00:00:00Z").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96m", "tmpfs"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mount tmpfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _t = Tmpfs(root.clone());
    scratch(&root, &key);
    // 160 MiB of zeros: the archive is tiny, its content does not fit.
    let big = vec![0u8; 160 << 20];
    let entries: &[E] = &[("volumes/vm-data/big", tar::EntryType::Regular, &big, None)];
    let mut m = manifest(entries);
    m.volumes.insert("vm-data".into(), "copied".into());
    craft(&root.join(ARCHIVE), entries, &m, key.auth());
    let before = tree(&root);
    let (ok, out) = run_early(&root);
    assert!(!ok, "{out}");
    assert!(
        out.contains("unpacks to 160 MiB") && out.contains("nothing was written"),
        "{out}"
    );
    let new: Vec<String> = tree(&root)
        .into_iter()
        .filter(|p| !before.contains(p))
        .filter(|p| !bookkeeping(p))
        .collect();
    assert!(
        new.iter().all(|p| p.starts_with("var/lib/flypack/restore")) && !new.iter().any(|p| p.ends_with("big")),
        "{new:?}"
    );
}
