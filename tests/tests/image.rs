#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End to end: the default profile builds into an image whose filesystems
//! and partition table check clean; a changed overlay reuses the cached root
//! filesystem, and the rebuilt image boots to its verdict (NO-GO for an
//! unreachable gateway, the unit still reachable); bad input fails clearly
//! and leaves nothing behind. The default image's boots under SeaBIOS and
//! OVMF are in slow.rs (starved, BIOS) and installer.rs (the installed
//! disk, UEFI): each boot costs minutes under emulation, so each serves
//! several checks.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use flypack_contracts::status::Verdict;
use flypack_e2e::*;

#[test]
fn outputs_are_consistent_and_filesystems_clean() {
    let img = shared_image();
    let out = img.path.parent().unwrap();
    // Exactly the promised outputs, nothing temporary.
    assert_eq!(
        names(out),
        [
            "SHA256SUMS",
            "flypack-installer.bmap",
            "flypack-installer.img",
            "flypack.bmap",
            "flypack.img",
            "flypack.manifest.json"
        ]
    );
    let (ok, msg) = sh(Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(out));
    assert!(ok, "SHA256SUMS does not match: {msg}");

    // Partition table: sgdisk finds nothing wrong; sfdisk reads back what the manifest says.
    let (ok, msg) = sh(Command::new("sgdisk").arg("-v").arg(&img.path));
    assert!(ok && msg.contains("No problems found"), "sgdisk -v: {msg}");
    assert!(!msg.to_lowercase().contains("warning"), "sgdisk -v warns: {msg}");
    let o = Command::new("sfdisk").arg("--json").arg(&img.path).output().unwrap();
    let table: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    for (i, p) in parts.iter().enumerate() {
        let m = img.part(i as u32 + 1);
        assert_eq!(p["start"].as_u64().unwrap() * 512, m.start_bytes);
        assert_eq!(p["size"].as_u64().unwrap() * 512, m.size_bytes);
        assert!(
            p["uuid"].as_str().unwrap().eq_ignore_ascii_case(&m.uuid),
            "{p} vs {m:?}"
        );
        assert!(p["type"].as_str().unwrap().eq_ignore_ascii_case(&m.type_guid));
        assert_eq!(p["name"].as_str().unwrap(), m.name);
    }
    assert_eq!(
        parts.iter().map(|p| p["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["bios-boot", "esp", "flypack-seed", "root"]
    );

    // Filesystems: fsck finds nothing wrong.
    let (ok, msg) = sh(Command::new("e2fsck").arg("-fn").arg(img.root_fs()));
    assert!(ok, "e2fsck -fn: {msg}");
    let dir = tempfile::tempdir().unwrap();
    for (n, label) in [(2, "FLYPACK-ESP"), (3, "FLYPACKSEED")] {
        let f = dir.path().join(format!("p{n}"));
        img.extract_partition(n, &f);
        let (ok, msg) = sh(Command::new("fsck.vfat").arg("-n").arg(&f));
        assert!(ok, "fsck.vfat -n partition {n}: {msg}");
        let (ok, msg) = sh(Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&f)
            .arg("::"));
        assert!(
            ok && msg.contains(&format!("Volume in drive : is {label}")),
            "partition {n}: {msg}"
        );
        let fs = img.part(n).filesystem.as_ref().unwrap();
        assert!(
            msg.contains(&format!("Volume Serial Number is {}", fs.uuid)),
            "{msg} vs {fs:?}"
        );
    }
    let (ok, msg) = sh(Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(dir.path().join("p2"))
        .arg("::EFI/BOOT"));
    assert!(
        ok && msg.contains("BOOTX64  EFI"),
        "no removable-media boot loader on the ESP: {msg}"
    );

    // Root filesystem: UUID and label as recorded.
    let (ok, msg) = sh(Command::new("dumpe2fs").arg("-h").arg(img.root_fs()));
    assert!(ok, "{msg}");
    let fs = img.part(4).filesystem.as_ref().unwrap();
    assert!(msg.contains(&format!("Filesystem UUID:          {}", fs.uuid)), "{msg}");
    assert!(msg.contains("Filesystem volume name:   flypack-root"));

    // Inside: the manifest, boot config and a clonable system.
    let inside: flypack_contracts::manifest::Manifest =
        serde_json::from_str(&img.read_root_file("/usr/share/flypack/manifest.json")).unwrap();
    let mut outside = img.manifest.clone();
    outside.outputs.clear();
    assert_eq!(
        inside, outside,
        "the manifest inside the image differs from the one beside it"
    );
    let grub = img.read_root_file("/boot/grub/grub.cfg");
    assert!(grub.contains(&format!("root=PARTUUID={} ", img.part(4).uuid)), "{grub}");
    assert!(
        grub.contains(" quiet\n"),
        "the default profile's cmdline is not in grub.cfg: {grub}"
    );
    assert!(grub.contains("console=ttyS0,115200n8"));
    let fstab = img.read_root_file("/etc/fstab");
    assert!(fstab.contains(&format!("UUID={}\t/\text4", fs.uuid)), "{fstab}");
    assert_eq!(
        img.read_root_file("/etc/machine-id"),
        "",
        "the image must not carry a machine-id"
    );
    let (ok, ls) = sh(Command::new("debugfs")
        .arg("-R")
        .arg("ls -l /etc/ssh")
        .arg(img.root_fs()));
    assert!(
        ok && ls.contains("sshd_config") && !ls.contains("ssh_host_"),
        "host keys in the image: {ls}"
    );
    let shadow = img.read_root_file("/etc/shadow");
    for line in shadow.lines() {
        let pw = line.split(':').nth(1).unwrap_or("");
        assert!(
            pw.starts_with('!') || pw == "*" || pw.starts_with("!*"),
            "an account has a usable password: {line}"
        );
    }
    let sshd = img.read_root_file("/etc/ssh/sshd_config.d/60-flypack.conf");
    assert!(sshd.contains("PasswordAuthentication no"));
    // The stack's images are inside, with their ids.
    let refs: Vec<&str> = img
        .manifest
        .container_images
        .iter()
        .map(|i| i.reference.as_str())
        .collect();
    assert_eq!(
        refs,
        [
            "flypack/victoria-metrics:bookworm",
            "flypack/node-exporter:bookworm",
            "flypack/video-exporter:latest"
        ]
    );
    // They are in Docker's store, put there by the build: no archive
    // travels, and each image's config is in the store under its id.
    assert!(
        img.manifest
            .docker_store
            .as_deref()
            .is_some_and(|v| v.contains("Docker version"))
    );
    for i in &img.manifest.container_images {
        assert!(i.id.starts_with("sha256:") && i.id.len() == 71, "{i:?}");
        assert_eq!((&i.archive, &i.archive_sha256), (&None, &None), "{i:?}");
        let config = img.read_root_file(&format!(
            "/var/lib/docker/image/overlay2/imagedb/content/sha256/{}",
            &i.id["sha256:".len()..]
        ));
        assert_eq!(
            format!("sha256:{}", flypack_contracts::digest::sha256_hex(config.as_bytes())),
            i.id,
            "{} in the image's Docker store",
            i.reference
        );
    }
    let repos = img.read_root_file("/var/lib/docker/image/overlay2/repositories.json");
    for r in &refs {
        assert!(repos.contains(r), "{r} not tagged in the store: {repos}");
    }
    assert!(
        !img.read_root_file("/var/lib/flypack/images/stack-images.tar")
            .contains("manifest.json"),
        "the archive still travels in the image"
    );
    let stack: flypack_contracts::stack::StackConfig =
        serde_json::from_str(&img.read_root_file("/usr/share/flypack/stack.json")).unwrap();
    assert_eq!(stack.images, img.manifest.container_images);
    assert!(
        img.read_root_file("/etc/flypack/stack/monitoring/docker-compose.yml")
            .contains("victoriametrics")
    );
    let names: Vec<&str> = img.manifest.packages.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "linux-image-amd64",
        "systemd-resolved",
        "openssh-server",
        "chrony",
        "linuxptp",
        "docker.io",
        "firmware-bnx2x",
        "intel-microcode",
    ] {
        assert!(names.contains(&want), "{want} missing from the manifest's packages");
    }
    // firstboot and its unit are in and enabled.
    let (ok, ls) = sh(Command::new("debugfs")
        .arg("-R")
        .arg("ls /etc/systemd/system/multi-user.target.wants")
        .arg(img.root_fs()));
    assert!(ok && ls.contains("flypack-firstboot.service"), "{ls}");
    // So is the web app, with its own user (made at build time).
    assert!(ls.contains("flypack-web.service"), "{ls}");
    let (ok, passwd) = sh(Command::new("debugfs")
        .arg("-R")
        .arg("cat /etc/passwd")
        .arg(img.root_fs()));
    assert!(
        ok && passwd.contains("flypack-web:x:") && passwd.contains(":/usr/sbin/nologin"),
        "{passwd}"
    );
    // And the socket of its privileged helper.
    let (ok, ls) = sh(Command::new("debugfs")
        .arg("-R")
        .arg("ls /etc/systemd/system/sockets.target.wants")
        .arg(img.root_fs()));
    assert!(ok && ls.contains("flypack-web-privileged.socket"), "{ls}");
    let (ok, ls) = sh(Command::new("debugfs")
        .arg("-R")
        .arg("stat /etc/systemd/system/systemd-firstboot.service")
        .arg(img.root_fs()));
    assert!(
        ok && ls.contains("Fast link dest: \"/dev/null\""),
        "systemd-firstboot not masked: {ls}"
    );
}

/// Copies the default profile into `dir` with absolute paths and the given
/// overlays, applying `edit` to its text.
fn variant_profile(dir: &Path, overlays: &[&Path], edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let p = dir.join("variant.toml");
    std::fs::write(&p, edit(default_profile_text(Some(overlays)))).unwrap();
    p
}

/// The unpacked root filesystem the builder keeps beside the archive that
/// `profile` builds on (`KEY.tree`).
fn unpacked_rootfs(profile: &Path, out: &Path) -> std::path::PathBuf {
    let plan = dry_run(profile, out);
    let archive = Path::new(plan["rootfs"]["archive"].as_str().expect("rootfs archive"));
    let tree = archive.with_extension("tree");
    assert!(tree.is_dir(), "no unpacked root filesystem at {}", tree.display());
    tree
}

/// Every entry of a tree: its type and mode, owner, size, modification time,
/// and its content's digest (a file) or target (a link).
fn snapshot(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = p.symlink_metadata().unwrap();
            let what = if m.is_file() {
                flypack_contracts::digest::sha256_file(&p).unwrap()
            } else if m.is_symlink() {
                std::fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            if m.is_dir() {
                stack.push(p.clone());
            }
            let key = p.strip_prefix(root).unwrap().to_path_buf();
            out.insert(
                key,
                format!(
                    "{:o} {}:{} {} {} {what}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.size(),
                    m.mtime()
                ),
            );
        }
    }
    out
}

fn copy_tree(src: &Path, dst: &Path) {
    let (ok, msg) = sh(Command::new("cp").arg("-a").arg(src).arg(dst));
    assert!(ok, "{msg}");
}

#[test]
fn a_changed_overlay_reuses_the_cached_rootfs_and_an_unreachable_gateway_is_no_go() {
    let base = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("base");
    copy_tree(&repo().join("overlays/base"), &overlay);
    let sysctl = overlay.join("etc/sysctl.d/60-flypack-video.conf");
    let text = std::fs::read_to_string(&sysctl)
        .unwrap()
        .replace("net.core.rmem_max = 67108864", "net.core.rmem_max = 33554432");
    std::fs::write(&sysctl, text).unwrap();
    let profile = variant_profile(dir.path(), &[&overlay], |t| t);
    let out = dir.path().join("out");
    // The build's tree is hard links to the unpacked root filesystem kept in
    // the cache: a build that wrote into one of its files would change every
    // later image. It must come out of a rebuild as it went in.
    let unpacked = unpacked_rootfs(&profile, &out);
    let before = snapshot(&unpacked);
    assert!(
        before.len() > 10_000,
        "{} holds {} entries",
        unpacked.display(),
        before.len()
    );

    let r = build(&profile, &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let result = r.event("result").expect("result event");
    assert_eq!(
        result["rootfs_cached"], true,
        "the root filesystem was rebuilt for an overlay change"
    );
    let after = snapshot(&unpacked);
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k)
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .take(10)
        .collect();
    assert!(
        changed.is_empty(),
        "the build changed the cached root filesystem {}: {changed:?}",
        unpacked.display()
    );
    let img = Image::load(&out, "flypack");
    assert_eq!(img.manifest.rootfs.digest, base.manifest.rootfs.digest);
    assert_eq!(img.manifest.packages, base.manifest.packages);
    assert_ne!(
        img.manifest.outputs[0].sha256, base.manifest.outputs[0].sha256,
        "same image after an overlay change"
    );
    assert!(
        img.read_root_file("/etc/sysctl.d/60-flypack-video.conf")
            .contains("net.core.rmem_max = 33554432")
    );
    eprintln!("warm rebuild stages: {}", result["stage_seconds"]);

    // The rebuilt image's first boot, seeded with a unit config whose
    // gateway does not answer (one boot serves both checks: each costs
    // minutes under emulation). Every service still comes up; the verdict
    // is NO-GO because the config could not be applied (the addresses it
    // names are then missing too), the network change is rolled back, and
    // the unit stays reachable and says why.
    let (key, public) = keygen(dir.path());
    let unit = example_unit_with_key(&public).replace(
        "addresses = [\"192.168.50.10/24\", \"fd50::10/64\"]",
        "addresses = [\"192.168.50.10/24\", \"fd50::10/64\"]\ngateway = \"192.168.50.1\"",
    );
    let copy = seeded_copy(&img.path, dir.path(), &unit);
    let s = Session::start(&copy, &key, &dir.path().join("console.log"), &[]);
    assert_eq!(s.status.verdict, Verdict::NoGo, "{:?}", s.status);
    let qa = s.status.qa.as_ref().expect("QA ran");
    assert!(qa.critical.iter().any(|c| c == "net.config-applied"), "{:?}", s.status);
    assert!(
        s.status.reasons.iter().any(|r| r.contains("net.config-applied")
            && r.contains("gateway 192.168.50.1 does not answer")
            && r.contains("rolled back")),
        "{:?}",
        s.status.reasons
    );
    assert_eq!(s.status.services.len(), 5, "{:?}", s.status.services);
    assert!(
        s.status.services.iter().all(|svc| svc.state.as_str() == "healthy"),
        "{:?}",
        s.status.services
    );
    let (code, out) = s.ssh("cat /etc/sysctl.d/60-flypack-video.conf");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("net.core.rmem_max = 33554432"), "{out}");
    // Still reachable on its management address, and says why.
    let (code, out) = s.ssh("sudo firstboot status");
    assert_eq!(code, 1, "NO-GO exit code: {out}");
    assert!(out.contains("NO-GO net.config-applied"), "{out}");
    let (_, issue) = s.ssh("cat /run/flypack/status.issue");
    assert!(issue.contains("NO-GO"), "{issue}");
    // The rollback left the image's fallback: the media NIC has no static address.
    let media = s.ip_json("addr show dev enp0s4");
    assert!(
        !global_addrs(&media).contains(&"192.168.50.10/24".to_string()),
        "{media}"
    );
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    // The cached root filesystem makes the "too small" case quick.
    let _ = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let base = repo().join("overlays/base");
    type Case<'a> = (&'a str, Box<dyn Fn(String) -> String>, Option<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "unknown key",
            Box::new(|t: String| t.replacen("version = 1", "version = 1\ncolour = \"red\"", 1)),
            None,
            "colour: unknown field `colour`",
        ),
        (
            "unreachable mirror",
            Box::new(|t: String| {
                t.replace(
                    "mirror = \"http://deb.debian.org/debian\"",
                    "mirror = \"http://127.0.0.1:9/debian\"",
                )
            }),
            None,
            "debian.mirror: cannot reach http://127.0.0.1:9/debian",
        ),
        (
            "package that does not exist",
            Box::new(|t: String| t.replacen("\"jq\", ", "\"jq\", \"flypack-no-such-package\", ", 1)),
            None,
            "debian.packages: package \"flypack-no-such-package\" does not exist in bookworm",
        ),
        (
            "unwritable output folder",
            Box::new(|t| t),
            Some("/proc/flypack-out"),
            "cannot create the output folder /proc/flypack-out",
        ),
        (
            "root too small",
            Box::new(|t: String| t.replace("size = \"4GiB\"", "size = \"1536MiB\"")),
            None,
            "disk.size: the root filesystem needs about",
        ),
    ];
    for (what, edit, out_override, words) in cases {
        let case_dir = dir.path().join(what.replace(' ', "-"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let profile = variant_profile(&case_dir, &[&base], edit);
        let out = out_override
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| case_dir.join("out"));
        let r = build(&profile, &out);
        assert_ne!(r.code, 0, "{what}: build succeeded");
        assert!(
            r.stderr.contains(words),
            "{what}: error does not say {words:?}:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.starts_with("error: ") || r.stderr.contains("\nerror: "),
            "{what}: {}",
            r.stderr
        );
        assert_eq!(
            names(&out),
            Vec::<String>::new(),
            "{what}: files left in the output folder"
        );
        eprintln!(
            "{what}: {}",
            r.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or("")
        );
    }
}

#[test]
fn interrupted_build_leaves_nothing_under_the_final_names() {
    let _ = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let profile = variant_profile(dir.path(), &[&repo().join("overlays/base")], |t| t);
    let out = dir.path().join("out");
    for signal in ["TERM", "KILL"] {
        let mut child = builder()
            .args(["--json", "build"])
            .arg(&profile)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // Interrupt while the disk image is being written.
            if line.contains("\"stage-start\"") && line.contains("\"disk\"") {
                std::thread::sleep(std::time::Duration::from_secs(2));
                let (ok, msg) = sh(Command::new("kill")
                    .arg(format!("-{signal}"))
                    .arg(child.id().to_string()));
                assert!(ok, "{msg}");
                break;
            }
        }
        let st = child.wait().unwrap();
        assert!(!st.success(), "{signal}: build was not interrupted");
        let left = names(&out);
        for final_name in ["flypack.img", "flypack.bmap", "flypack.manifest.json", "SHA256SUMS"] {
            assert!(
                !left.contains(&final_name.to_string()),
                "{signal}: {final_name} exists after an interrupted build"
            );
        }
        if signal == "TERM" {
            // A clean interrupt also removes its temporary files.
            assert_eq!(left, Vec::<String>::new(), "SIGTERM left files behind");
        }
    }
    // The next build sweeps what SIGKILL left and completes.
    let r = build(&profile, &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        names(&out),
        ["SHA256SUMS", "flypack.bmap", "flypack.img", "flypack.manifest.json"]
    );
}
