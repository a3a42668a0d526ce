//! A unit's life in QEMU, and `builder restore`'s refusals.
//!
//! A unit whose power is cut while it provisions converges to GO on the next
//! boot with its seeded config applied (addresses on the second NIC and a
//! VLAN, checked inside the guest; the stack and its metrics); a VLAN id
//! change recreates the VLAN; a NIC matched by name gets its tuning; with
//! changed identity and metrics, backed up (encrypted) and restored onto a
//! blank disk, it comes back as it was; a rolling update to a bad image stops
//! at it (NO-GO), and one to a good image brings it back. These checks share boots: each costs
//! minutes under emulation. Archives that are damaged, made with another
//! key, altered, crafted to escape, or too large are refused before anything
//! is written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flypack_contracts::status::{StageState, Verdict};
use flypack_e2e::*;
use flypack_engine::backup::{self, AuthKey, Entry, FleetKey, Kind, Manifest, Writer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

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

/// A fleet key made with `builder backup-key new` (its path).
fn new_key(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let r = run(builder().args(["backup-key", "new", "--out"]).arg(&p));
    assert_eq!(r.code, 0, "{}", r.stderr);
    p
}

/// A small well-formed backup for `image`, sealed to `key`.
fn good_archive(dir: &Path, image: &str, key: &FleetKey) -> PathBuf {
    let p = dir.join(format!("{image}.flypack-backup.age"));
    let mut w = Writer::new(File::create(&p).unwrap(), &key.unit_part()).unwrap();
    w.add_bytes("identity/etc/hostname", b"fp-test\n", 0o644).unwrap();
    w.add_bytes("volumes/vm-data/data/x", &vec![3u8; 300_000], 0o644)
        .unwrap();
    let mut m = manifest(image);
    m.volumes.insert("vm-data".into(), "copied".into());
    w.finish(m).unwrap();
    p
}

type E<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

/// An archive with raw entries, each listed in its manifest, tagged with
/// `auth` and sealed to `to`: what someone holding a unit part could make.
fn crafted(path: &Path, entries: &[E], image: &str, auth: &AuthKey, to: &FleetKey) {
    let mut m = manifest(image);
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
        m.entries.push(Entry {
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
        });
    }
    let json = serde_json::to_vec(&m).unwrap();
    for (name, data) in [
        (backup::MANIFEST_NAME, json.clone()),
        (backup::TAG_NAME, auth.tag(&json).into_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    z.write_all(&b.into_inner().unwrap()).unwrap();
    let plain = z.finish().unwrap();
    let enc = age::Encryptor::with_recipients(std::iter::once(&to.recipient() as &dyn age::Recipient)).unwrap();
    let mut w = enc.wrap_output(File::create(path).unwrap()).unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
}

fn restore_to_file(archive: &Path, key: &Path, image: &Path, out: &Path) -> Run {
    run(builder()
        .args(["restore", "--backup"])
        .arg(archive)
        .arg("--key")
        .arg(key)
        .arg("--image")
        .arg(image)
        .arg("--output")
        .arg(out))
}

/// Free bytes of the image's root filesystem.
fn root_free(img: &Image) -> u64 {
    let (ok, out) = sh(Command::new("dumpe2fs").arg("-h").arg(img.root_fs()));
    assert!(ok, "{out}");
    let field = |k: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    field("Free blocks:") * field("Block size:")
}

#[test]
fn bad_archives_are_refused_with_a_reason_and_nothing_is_written() {
    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let key_path = new_key(dir.path(), "fleet.key");
    let key = FleetKey::load(&key_path).unwrap();
    let other = FleetKey::generate("2026-11-28T00:00:00Z").unwrap();
    let out = dir.path().join("restored.img");
    let good = good_archive(dir.path(), "flypack", &key);
    let bytes = std::fs::read(&good).unwrap();
    let mut cases: Vec<(String, PathBuf, &str)> = Vec::new();
    let truncated = dir.path().join("truncated.age");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    cases.push(("truncated".into(), truncated, "nothing was written"));
    let flipped = dir.path().join("flipped.age");
    let mut f = bytes.clone();
    let at = f.len() / 2;
    f[at] ^= 0x01;
    std::fs::write(&flipped, &f).unwrap();
    cases.push(("a flipped byte".into(), flipped, "nothing was written"));
    cases.push((
        "encrypted to another fleet's key".into(),
        good_archive(&dir.path().join("o").tap_mkdir(), "flypack", &other),
        "not encrypted to this fleet's backup key",
    ));
    // Edited, tagged without the fleet's auth key, re-encrypted to its recipient.
    let edited = dir.path().join("edited.age");
    crafted(
        &edited,
        &[("identity/etc/hostname", F, b"evil\n", None)],
        "flypack",
        other.auth(),
        &key,
    );
    cases.push((
        "edited and re-encrypted".into(),
        edited,
        "not authenticated by this fleet's backup key",
    ));
    let evil: &[(&str, &[E], &str)] = &[
        (
            "a symlink chain",
            &[
                ("volumes/vm-data/a", D, b"", None),
                ("volumes/vm-data/a/b", L, b"", Some("..")),
                ("volumes/vm-data/a/b/a/b/x", F, b"evil", None),
            ],
            "a symlink in the same archive",
        ),
        (
            "a directory reached through a link",
            &[
                ("volumes/vm-data/l", L, b"", Some("d")),
                ("volumes/vm-data/l/d2/", D, b"", None),
            ],
            "passes through",
        ),
        (
            "an identity symlink",
            &[("identity/etc/shadow", L, b"", Some("passwd"))],
            "files and directories only",
        ),
        (
            "a .. path",
            &[("identity/../../etc/shadow", F, b"evil", None)],
            "\"..\" component",
        ),
        (
            "an absolute path",
            &[("/etc/shadow", F, b"evil", None)],
            "absolute path",
        ),
        (
            "volume name ..",
            &[("volumes/../x", F, b"evil", None)],
            "\"..\" component",
        ),
        (
            "volume name -x",
            &[("volumes/-x/y", F, b"evil", None)],
            "not a Docker volume name",
        ),
        (
            "a link out of its tree",
            &[("volumes/vm-data/l", L, b"", Some("../../../etc/shadow"))],
            "outside its tree",
        ),
    ];
    for (what, entries, want) in evil {
        let p = dir.path().join(format!("evil-{}.age", cases.len()));
        crafted(&p, entries, "flypack", key.auth(), &key);
        cases.push((what.to_string(), p, want));
    }
    // A manifest of many MiB.
    let big_manifest = dir.path().join("big-manifest.age");
    {
        let mut w = Writer::new(File::create(&big_manifest).unwrap(), &key.unit_part()).unwrap();
        w.add_bytes("identity/etc/hostname", b"x\n", 0o644).unwrap();
        let mut m = manifest("flypack");
        m.hostname = "h".repeat(17 << 20);
        w.finish(m).unwrap();
    }
    cases.push(("a manifest of 17 MiB".into(), big_manifest, "more than the 16 MiB"));
    // More data than the image's root filesystem holds (zeros: a small archive).
    let too_big = dir.path().join("too-big.age");
    {
        let free = root_free(&img);
        let zeros = dir.path().join("zeros");
        File::create(&zeros).unwrap().set_len(free + (256 << 20)).unwrap();
        let mut w = Writer::new(File::create(&too_big).unwrap(), &key.unit_part()).unwrap();
        w.add_path(&zeros, "volumes/vm-data/zeros", false).unwrap();
        let mut m = manifest("flypack");
        m.volumes.insert("vm-data".into(), "copied".into());
        w.finish(m).unwrap();
        std::fs::remove_file(&zeros).unwrap();
    }
    cases.push(("more data than the disk holds".into(), too_big, "does not fit"));
    let other_image = good_archive(&dir.path().join("i").tap_mkdir(), "other-image", &key);
    cases.push(("made for another image".into(), other_image, "\"other-image\" image"));
    for (what, archive, want) in &cases {
        let r = restore_to_file(archive, &key_path, &img.path, &out);
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
        // `builder backup-key verify` refuses them too (another image's backup
        // is sound: only restore refuses it; so is an oversized one).
        if !what.contains("another image") && !what.contains("disk holds") {
            let r = run(builder()
                .args(["backup-key", "verify"])
                .arg(archive)
                .arg("--key")
                .arg(&key_path));
            assert_ne!(r.code, 0, "{what}: backup-key verify passed it");
        }
    }
    // The good one restores: the decrypted archive is inside the root
    // filesystem, intact and still authenticated; the key's unit part is on
    // the seed; the archive holds nothing readable without the key.
    for needle in ["fp-test", "MANIFEST", "vm-data"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} readable in the archive"
        );
    }
    let r = restore_to_file(&good, &key_path, &img.path, &out);
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
    let (m, sealing) = backup::verify(&inside, &backup::Keys::unit(&key.unit_part())).unwrap();
    assert_eq!((m.hostname.as_str(), sealing), ("fp-test", backup::Sealing::Decrypted));
    let seed = flypack_contracts::seed::seed_partition(&out).unwrap();
    let on_seed = flypack_contracts::seed::read(&out, seed.0, seed.1).unwrap();
    let unit_part =
        backup::UnitKey::parse(on_seed.backup_key.as_deref().expect("backup-key.toml on the seed")).unwrap();
    assert_eq!(unit_part.auth, vec![key.auth().clone()]);
    let (ok, msg) = sh(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={start}", out.display())));
    assert!(ok, "e2fsck after restore: {msg}");
    // The same, compressed with its block map beside it (what a rolling
    // update sends a unit): every range checks, and it is the same image.
    let zst = dir.path().join("restored-z.img.zst");
    let r = restore_to_file(&good, &key_path, &img.path, &zst);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let map = flypack_engine::flash::check_source(&zst, None).unwrap();
    assert_eq!(map.image_size, std::fs::metadata(&out).unwrap().len());
    let raw = dir.path().join("restored-z.img");
    let (ok, msg) = sh(Command::new("zstd")
        .args(["-dqf", "--sparse"])
        .arg(&zst)
        .arg("-o")
        .arg(&raw));
    assert!(ok, "{msg}");
    // The seed and the root were written anew (file times differ): the
    // table and the boot partitions are the same bytes, and the archive
    // inside is the unit's, authenticated.
    let (ok, msg) = sh(Command::new("cmp")
        .arg("-n")
        .arg(img.part(3).start_bytes.to_string())
        .arg(&out)
        .arg(&raw));
    assert!(ok, "the compressed image's boot partitions differ: {msg}");
    let inside_z = dir.path().join("inside-z.tar.zst");
    let (ok, msg) = sh(Command::new("debugfs")
        .arg("-R")
        .arg(format!(
            "dump /var/lib/flypack/restore/backup.tar.zst {}",
            inside_z.display()
        ))
        .arg(format!("{}?offset={start}", raw.display())));
    assert!(ok, "{msg}");
    let (m, _) = backup::verify(&inside_z, &backup::Keys::unit(&key.unit_part())).unwrap();
    assert_eq!(m.hostname, "fp-test");
    // Every range of the map, read from the decompressed image, matches.
    assert_eq!(flypack_engine::flash::check_source(&raw, None).unwrap(), map);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// What the status says the web app stage did.
fn webapp_detail(status: &flypack_contracts::status::Status) -> String {
    let webapp = status
        .stages
        .iter()
        .find(|st| st.name == "webapp")
        .expect("a webapp stage");
    webapp.detail.clone().unwrap_or_default()
}

/// What must survive a restore: the machine-id, an SSH host key, the web
/// app's TLS material.
const FACTS: &str = "cat /etc/machine-id && sudo cat /etc/ssh/ssh_host_ed25519_key.pub && \
                     sudo sha256sum /etc/flypack/tls/ca.crt /etc/flypack/tls/unit.crt /etc/flypack/tls/unit.key";

/// One unit's life, on as few boots as its checks allow (a boot under
/// software emulation costs minutes): the power is cut while it provisions;
/// the next boot converges to GO with its seeded config applied (addresses,
/// VLAN, stack, metrics); an engineer changes the VLAN id, tunes a NIC,
/// renames the unit and moves its address; its encrypted backup, restored
/// onto a blank disk, comes back with identity and data. Then the rolling
/// update from the laptop: to a bad image first (the unit comes back NO-GO
/// and the rollout stops before the next unit), then to a good one, which
/// brings it back GO with the same identity and data.
#[test]
fn a_unit_cut_off_while_provisioning_reaches_go_and_comes_back_from_its_backup() {
    let img = shared_image();
    // The two images the rolling updates at the end need, built while the
    // unit boots below (nothing there is timed tightly; built after, they
    // added a minute to CI's serial chain).
    let updates = std::thread::spawn(|| (broken_image(), updated_image()));
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let copy = seeded_copy(&img.path, dir.path(), &example_unit_with_key(&public));
    let fleet_key = new_key(dir.path(), "fleet.key");
    // The fleet's CA signs the unit's web app certificate onto the seed.
    let fleet_ca = dir.path().join("fleet-ca.pem");
    let r = run(builder()
        .args(["--json", "fleet-ca", "new", "--name", "e2e", "--out"])
        .arg(&fleet_ca));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fleet_fp = r.event("result").expect("a result")["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let r = run(builder()
        .arg("customize")
        .arg(&copy)
        .arg("--unit")
        .arg(dir.path().join("unit.toml"))
        .arg("--fleet-ca")
        .arg(&fleet_ca)
        .arg("--backup-key")
        .arg(&fleet_key));
    assert_eq!(r.code, 0, "{}", r.stderr);

    // First boot: pull the plug once firstboot is into its stages.
    let overlay = dir.path().join("disk.qcow2");
    let log1 = dir.path().join("console-1.log");
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
            t0.elapsed().as_secs() < 900,
            "firstboot never started:\n{}",
            console_tail(&log1, 40)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child.kill().unwrap(); // QEMU dies with it: a power cut
    child.wait().unwrap();
    let (ok, _) = sh(Command::new("pgrep").args(["-f", &format!("file={}", overlay.display())]));
    assert!(!ok, "QEMU survived");
    // A QEMU that is exiting has left pgrep's sight (its command line goes
    // first) but may still hold its lock on the disk: the next boot failed
    // with "Failed to get \"write\" lock" once, on a loaded machine.
    // qemu-img's shared lock is refused for as long as it holds it.
    let t0 = std::time::Instant::now();
    loop {
        let (free, out) = sh(Command::new("qemu-img").arg("info").arg(&overlay));
        if free {
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 60,
            "the cut QEMU still holds the disk after 60 s: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let first = String::from_utf8_lossy(&std::fs::read(&log1).unwrap()).into_owned();
    assert!(
        !first.lines().any(|l| l.starts_with("FLYPACK-STATUS")),
        "the first boot finished before the cut"
    );

    let (s, before) = {
        // Second boot of the same disk, with the memory a rolling update
        // stages its image in.
        let s = Session::start(
            &copy,
            &key,
            &dir.path().join("console-2.log"),
            &["--overlay", overlay.to_str().unwrap(), "--memory", "4096"],
        );
        assert_eq!(
            s.status.verdict,
            Verdict::Go,
            "{:?}\n{}",
            s.status,
            console_tail(&s.log, 40)
        );
        // The interrupted stage ran again; a finished one did not.
        let stage = |name: &str| s.status.stages.iter().find(|st| st.name == name).unwrap().clone();
        assert_eq!(stage("disk").attempts, 2, "{:?}", stage("disk"));
        assert_eq!(stage("identity").attempts, 1, "{:?}", stage("identity"));
        let (_, out) = s.ssh("sudo cat /var/lib/flypack/journal.json");
        let j: Value = serde_json::from_str(&out).unwrap();
        assert!(j["runs"].as_array().unwrap().len() >= 2, "{j}");
        for st in &s.status.stages {
            assert!(matches!(st.state, StageState::Done | StageState::Skipped), "{st:?}");
        }
        assert_eq!(s.status.hostname, "fp-demo-01");
        let qa = s.status.qa.as_ref().expect("QA summary in the status");
        assert_eq!((qa.failed, qa.waived), (0, 1), "{qa:?}");

        // Inside the guest: identity and addresses as configured.
        assert_eq!(s.ssh("hostname").1.trim(), "fp-demo-01");
        let media = s.ip_json("addr show dev enp0s4");
        assert_eq!(global_addrs(&media), ["192.168.50.10/24", "fd50::10/64"]);
        assert_eq!(media[0]["address"], "52:54:00:f1:00:02");
        let vlan = s.ip_json("-d addr show dev media.100");
        assert_eq!(vlan[0]["linkinfo"]["info_data"]["id"], 100);
        assert_eq!(global_addrs(&vlan), ["10.100.0.10/24"]);
        let (code, out) = s.ssh("sudo firstboot status");
        assert_eq!(code, 0, "{out}");
        // The web app serves the fleet-signed certificate from the seed,
        // for the unit's names; the fleet CA's key never reached the unit.
        let detail = webapp_detail(&s.status);
        assert!(
            detail.contains("the fleet CA") && detail.contains(&fleet_fp) && !detail.contains("does not name"),
            "{detail}"
        );
        let (code, out) = s.ssh(
            "sudo ls /etc/flypack/tls && sudo curl -fsS --cacert /etc/flypack/tls/ca.crt \
             --resolve fp-demo-01.local:443:127.0.0.1 https://fp-demo-01.local/healthz && sudo cat /etc/flypack/tls/ca.crt",
        );
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("ca.key"), "{out}");
        assert!(
            out.ends_with(&std::fs::read_to_string(dir.path().join("fleet-ca.crt")).unwrap()),
            "{out}"
        );
        let (_, out) = s.ssh("sudo firstboot config --explain");
        assert!(out.contains("=> using seed:unit.toml"), "{out}");
        let (code, out) = s.ssh("sudo firstboot qa --format junit");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("<testsuites name=\"flypack-qa\""));
        // The monitoring stack came up offline, from the images in the disk image.
        assert_eq!(s.status.services.len(), 5, "{:?}", s.status.services);
        for svc in &s.status.services {
            assert_eq!(svc.state.as_str(), "healthy", "{svc:?}");
        }
        // Docker agrees once its own first probe has run: firstboot probes
        // the services itself, so the verdict can come before Docker's first
        // probe (30 s after a container starts), while `docker ps` still
        // says "health: starting". No service may be unhealthy meanwhile.
        let t0 = std::time::Instant::now();
        loop {
            let (code, out) = s.ssh("sudo docker ps --format '{{.Names}} {{.Status}}'");
            assert_eq!(code, 0, "{out}");
            assert_eq!(out.lines().count(), 5, "{out}");
            assert!(!out.contains("unhealthy"), "{out}");
            if out.lines().all(|l| l.contains("(healthy)")) {
                break;
            }
            assert!(
                out.lines()
                    .all(|l| l.contains("(healthy)") || l.contains("(health: starting)")),
                "{out}"
            );
            assert!(
                t0.elapsed().as_secs() < 240,
                "Docker never called all five healthy:\n{out}"
            );
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
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
                t0.elapsed().as_secs() < 300,
                "series missing in VictoriaMetrics: node {node:?}, multicast {joined:?}"
            );
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        // SSH host keys were made on the unit, not shipped in the image, and
        // only the types the image's sshd config names: no RSA key (15 s to
        // make under emulation) unless a profile asks for one.
        let (_, out) = s.ssh("sudo ls /etc/ssh");
        assert!(
            out.contains("ssh_host_ed25519_key")
                && out.contains("ssh_host_ecdsa_key")
                && !out.contains("ssh_host_rsa_key"),
            "{out}"
        );

        // The VLAN id changes: networkd (systemd 252) would keep the old one;
        // firstboot deletes it over netlink so it is recreated.
        let changed = example_unit_with_key(&public).replace("id = 100", "id = 101");
        // `firstboot network apply` of a unit config written here.
        let apply = |name: &str, unit: &str| {
            let f = dir.path().join(format!("{name}.toml"));
            std::fs::write(&f, unit).unwrap();
            s.put(&f, &format!("/tmp/{name}.toml"));
            s.ssh(&format!("sudo firstboot network apply --unit /tmp/{name}.toml"))
        };
        let (code, out) = apply("changed", &changed);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("applied; verified"), "{out}");
        let vlan = s.ip_json("-d addr show dev media.100");
        assert_eq!(vlan[0]["linkinfo"]["info_data"]["id"], 101, "{vlan}");
        assert_eq!(global_addrs(&vlan), ["10.100.0.10/24"]);

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
        let (code, out) = apply("tuned", &tuned);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("applied; verified"), "{out}");
        let (_, out) = s.ssh("sudo udevadm info --query=property /sys/class/net/enp0s4");
        assert!(
            out.contains("ID_NET_LINK_FILE=/etc/systemd/network/10-flypack-media.link"),
            "udev did not use our .link file for enp0s4:\n{out}"
        );
        assert_eq!(gro(), "off", "the .link file's GenericReceiveOffload=false");
        assert_eq!(
            global_addrs(&s.ip_json("addr show dev enp0s4")),
            ["192.168.50.10/24", "fd50::10/64"]
        );

        // A change of the VLAN's Id and of its parent's match in one apply,
        // which fails (the gateway it adds does not answer): the rollback,
        // which changes both back, verifies, and the VLAN has its old Id.
        // (networkd 252 recreated a deleted VLAN from its old definition:
        // both this apply and its rollback once failed to verify.)
        let example = example_unit_with_key(&public);
        let bad = example
            .replace("id = 100", "id = 102")
            .replace("mtu = 1500", "mtu = 1500\ngateway = \"192.168.50.1\"");
        assert!(bad.contains("id = 102") && bad.contains("gateway = \"192.168.50.1\""));
        let (code, out) = apply("bad", &bad);
        assert_ne!(code, 0, "{out}");
        assert!(
            out.contains("gateway 192.168.50.1 does not answer")
                && out.contains("rolled back to the previous config, which verified"),
            "{out}"
        );
        let vlan = s.ip_json("-d link show dev media.100");
        assert_eq!(vlan[0]["linkinfo"]["info_data"]["id"], 101, "{vlan}");

        // A changed hostname and address, applied the way an engineer would,
        // together with going back from VLAN 101 on the NIC matched by name
        // (tuned) to VLAN 100 on the NIC matched by MAC.
        let renamed = example
            .replace("hostname = \"fp-demo-01\"", "hostname = \"fp-renamed-07\"")
            .replace("\"192.168.50.10/24\"", "\"192.168.50.77/24\"");
        assert!(renamed.contains("fp-renamed-07") && renamed.contains("192.168.50.77/24"));
        let (code, out) = apply("renamed", &renamed);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("applied; verified"), "{out}");
        let (code, out) = s.ssh("sudo hostnamectl set-hostname fp-renamed-07");
        assert_eq!(code, 0, "{out}");
        let vlan = s.ip_json("-d addr show dev media.100");
        assert_eq!(vlan[0]["linkinfo"]["info_data"]["id"], 100, "{vlan}");
        assert_eq!(global_addrs(&vlan), ["10.100.0.10/24"]);
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
        let made: Value = serde_json::from_str(line).unwrap();
        assert!(
            made["volumes"]["vm-data"].as_str().unwrap().contains("snapshot"),
            "{made}"
        );
        let remote = made["archive"].as_str().unwrap().to_string();
        // The backup's time, for the alert on its age: the node exporter
        // serves what firstboot wrote for its textfile collector, and the
        // unit's vmalert holds the rules.
        let (code, out) =
            s.ssh("curl -fsS http://127.0.0.1:9100/metrics | grep '^flypack_backup_last_success_timestamp_seconds '");
        assert_eq!(code, 0, "{out}");
        // And the verdict, for the alert and the central's view: 1 for the
        // one this unit reached, 0 for the others.
        let (code, out) = s.ssh("curl -fsS http://127.0.0.1:9100/metrics | grep '^flypack_verdict{'");
        assert_eq!(code, 0, "{out}");
        let (_, status) = s.ssh("cat /var/lib/flypack/status.json");
        let now: Value = serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
        for v in ["GO", "GO-WITH-WARNINGS", "NO-GO"] {
            let want = u8::from(now["verdict"] == v);
            assert!(
                out.contains(&format!("flypack_verdict{{verdict=\"{v}\"}} {want}\n")),
                "{v}: {out}"
            );
        }
        let (code, out) = s.ssh("curl -fsS http://127.0.0.1:8880/api/v1/rules");
        assert!(
            code == 0 && out.contains("\"BackupTooOld\"") && out.contains("\"UnitNoGo\""),
            "{out}"
        );
        // Private on the unit: the folder 0700, the archive 0600, root's.
        let (code, out) = s.ssh(&format!("sudo stat -c '%a %U' /var/backups/flypack {remote}"));
        assert_eq!((code, out.trim()), (0, "700 root\n600 root"), "{out}");
        // A unit holds no key that decrypts: it sends the engineer to the laptop.
        let (code, out) = s.ssh(&format!("sudo firstboot backup verify {remote}"));
        assert_ne!(code, 0, "{out}");
        assert!(out.contains("encrypted to the fleet's backup key"), "{out}");
        let (code, out) = s.ssh(&format!("sudo install -m 644 -o flypack {remote} /tmp/unit.age"));
        assert_eq!(code, 0, "{out}");
        s.get("/tmp/unit.age", &dir.path().join("unit.flypack-backup.age"));
        let (code, facts) = s.ssh(FACTS);
        assert_eq!(code, 0, "{facts}");
        assert!(facts.contains("ssh-ed25519 ") && facts.contains("unit.key"), "{facts}");
        (s, facts)
    };

    // The archive reveals no secret without the key; the key verifies it.
    let archive = dir.path().join("unit.flypack-backup.age");
    let sealed = std::fs::read(&archive).unwrap();
    for needle in ["PRIVATE KEY", "fp-renamed-07", "vm-data"] {
        assert!(
            !sealed.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} readable"
        );
    }
    let r = run(builder()
        .args(["backup-key", "verify"])
        .arg(&archive)
        .arg("--key")
        .arg(&fleet_key));
    assert_eq!(r.code, 0, "{}", r.stderr);

    // The rolling update: the fleet playbook takes and pulls the unit's
    // backup, restores it into a newer image on this laptop, sends that to
    // the unit, which writes it over its own disk and reboots into it (the
    // same QEMU: a real unit's reboot); its first boot restores the backup.
    let reach = json!({
        "ansible_host": "127.0.0.1", "ansible_port": s.port, "ansible_user": "flypack",
        "ansible_ssh_private_key_file": key,
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                                    -o ServerAliveInterval=5 -o ServerAliveCountMax=3"});
    let inv = dir.path().join("inventory.json");
    std::fs::write(&inv, json!({"all": {"hosts": {"fp-renamed-07": reach}}}).to_string()).unwrap();
    let work = dir.path().join("image-update");
    let update = |image: &Path, inv: &Path, what: &str| {
        let t = std::time::Instant::now();
        let o = Command::new("timeout")
            .args(["1800", "ansible-playbook", "playbooks/fleet/image-update.yml", "-i"])
            .env("ANSIBLE_TIMEOUT", UNIT_TIMEOUT)
            .arg(inv)
            .arg("-e")
            .arg(format!(
                "image_update_image={} image_update_key={} image_update_work_dir={} image_update_builder={}",
                image.display(),
                fleet_key.display(),
                work.display(),
                bins().builder.display()
            ))
            .current_dir(repo().join("ansible"))
            .output()
            .expect("ansible-playbook");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        println!(
            "restore: image-update.yml ({what}) took {:.1} s",
            t.elapsed().as_secs_f64()
        );
        (o.status.success(), out)
    };

    // First a bad update, to an image whose time service does not start,
    // across this unit and the next one in the inventory (a scratch unit
    // on this laptop that runs the old image: reached, it would be backed
    // up). The unit comes back NO-GO with its backup restored, and the
    // rollout stops there.
    let (bad, new) = updates.join().expect("building the images of the updates");
    assert_ne!(bad.manifest.plan_digest, img.manifest.plan_digest);
    assert_ne!(new.manifest.plan_digest, img.manifest.plan_digest);
    let next_manifest = dir.path().join("fp-next.manifest.json");
    std::fs::write(
        &next_manifest,
        json!({"name": img.manifest.name, "plan_digest": img.manifest.plan_digest,
               "built_at": img.manifest.built_at})
        .to_string(),
    )
    .unwrap();
    let next = json!({"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                      "image_update_unit_manifest": next_manifest});
    // Written by hand: the order of the hosts is the rollout's (a JSON
    // object built here would sort them by name).
    let two = dir.path().join("two-units.json");
    std::fs::write(
        &two,
        format!(r#"{{"all": {{"hosts": {{"fp-renamed-07": {reach}, "fp-next": {next}}}}}}}"#),
    )
    .unwrap();
    let (ok, out) = update(&bad.path, &two, "to a bad image, stopped at NO-GO");
    assert!(!ok, "{out}");
    assert!(
        out.contains("fp-renamed-07 came back NO-GO on the new image")
            && out.contains("chrony.service")
            && out.contains("The rollout stops here"),
        "{out}\n{}",
        console_tail(&s.log, 40)
    );
    if let Some(said) = out.lines().find(|l| l.contains("fp-renamed-07 came back NO-GO")) {
        println!("restore: the playbook said: {said}");
    }
    assert!(
        recap(&out, "fp-renamed-07").is_some_and(|r| r.contains("failed=1")),
        "{out}"
    );
    assert!(
        recap(&out, "fp-next").is_none(),
        "the rollout went on after a NO-GO unit: {out}"
    );
    assert!(!work.join("fp-next").exists(), "{out}");
    let (code, text) = s.ssh("cat /var/lib/flypack/status.json /usr/share/flypack/manifest.json");
    assert_eq!(code, 0, "{text}");
    let mut docs = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    let (now, runs) = (
        docs.next().unwrap().unwrap_or_else(|e| panic!("{e}: {text}")),
        docs.next().unwrap().unwrap_or_else(|e| panic!("{e}: {text}")),
    );
    assert_eq!(
        (
            now["verdict"].as_str(),
            now["hostname"].as_str(),
            runs["plan_digest"].as_str()
        ),
        (
            Some("NO-GO"),
            Some("fp-renamed-07"),
            Some(bad.manifest.plan_digest.as_str())
        ),
        "{text}"
    );

    // Then the good one, which also brings the NO-GO unit back.
    let (ok, out) = update(&new.path, &inv, "the update");
    assert!(ok, "{out}\n{}", console_tail(&s.log, 60));
    assert!(out.contains("fp-renamed-07: GO on the image built"), "{out}");
    // The laptop keeps the verified backup, not the image holding its secrets.
    let names: Vec<String> = names(&work.join("fp-renamed-07"));
    assert!(
        names.iter().any(|n| n.ends_with(".flypack-backup.age")) && !names.iter().any(|n| n.ends_with(".zst")),
        "{names:?}"
    );
    // A second run finds the unit on the new image and changes nothing.
    let (ok, again) = update(&new.path, &inv, "again");
    assert!(
        ok && again.contains("changed=0") && again.contains("skipped"),
        "{again}"
    );

    let (code, status) = s.ssh("cat /var/lib/flypack/status.json");
    assert_eq!(code, 0, "{status}");
    let status: flypack_contracts::status::Status =
        serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(
        status.verdict.as_str(),
        "GO",
        "{status:?}\n{}",
        console_tail(&s.log, 40)
    );
    assert_eq!(status.hostname, "fp-renamed-07");
    let restore_stage = status
        .stages
        .iter()
        .find(|st| st.name == "restore")
        .expect("a restore stage");
    assert_eq!(restore_stage.state, StageState::Done, "{restore_stage:?}");
    // It runs the new image.
    let (code, out) = s.ssh("cat /etc/sysctl.d/60-flypack-video.conf");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("net.core.rmem_max = 33554432"), "{out}");
    let (code, facts) = s.ssh(FACTS);
    assert_eq!(code, 0, "{facts}");
    assert_eq!(
        facts, before,
        "machine-id, SSH host key or web app TLS differ after the update"
    );
    // The restored unit serves its fleet certificate, which names it by its
    // old name: the stage says so, with the fix.
    let detail = webapp_detail(&status);
    assert!(
        detail.contains(&fleet_fp) && detail.contains("does not name fp-renamed-07") && detail.contains("--fleet-ca"),
        "{detail}"
    );
    let (code, addrs) = s.ssh("ip -br addr show dev enp0s4");
    assert_eq!(code, 0, "{addrs}");
    assert!(addrs.contains("192.168.50.77/24"), "{addrs}");
    let (code, out) =
        s.ssh("curl -fsSg 'http://127.0.0.1:8428/api/v1/query?query=last_over_time(flypack_restore_probe[1h])'");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"42\""), "the probe series did not come back: {out}");
    drop(s);
    std::fs::remove_file(&copy).unwrap();
    std::fs::remove_file(&overlay).unwrap();
}
