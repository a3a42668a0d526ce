//! Tree stage: unpack the root filesystem into a work folder, lay the
//! overlays over it, install our programs and the generated system files
//! (fstab, grub.cfg, hostname; the manifest last, [`write_manifest`]), and
//! make it clonable (no machine-id, no SSH host keys).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flypack_contracts::cmd::Cmd;
use flypack_contracts::layout::{PART_ROOT, target};
use flypack_contracts::manifest::Manifest;

use crate::overlay::{self, replace_file};
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::stages::rootfs::Rootfs;

/// The systemd units firstboot ships (file name, content).
pub const UNITS: &[(&str, &str)] = &[
    (
        "flypack-installer.service",
        include_str!("../../../firstboot/systemd/flypack-installer.service"),
    ),
    (
        "flypack-firstboot-early.service",
        include_str!("../../../firstboot/systemd/flypack-firstboot-early.service"),
    ),
    (
        "flypack-firstboot.service",
        include_str!("../../../firstboot/systemd/flypack-firstboot.service"),
    ),
    (
        "flypack-status.service",
        include_str!("../../../firstboot/systemd/flypack-status.service"),
    ),
    (
        "flypack-backup.service",
        include_str!("../../../firstboot/systemd/flypack-backup.service"),
    ),
    (
        "flypack-backup.timer",
        include_str!("../../../firstboot/systemd/flypack-backup.timer"),
    ),
    (
        "flypack-web.service",
        include_str!("../../../webapp/systemd/flypack-web.service"),
    ),
    (
        "flypack-web-privileged.socket",
        include_str!("../../../webapp/systemd/flypack-web-privileged.socket"),
    ),
    (
        "flypack-web-privileged@.service",
        include_str!("../../../webapp/systemd/flypack-web-privileged@.service"),
    ),
];

/// The web app's user (systemd-sysusers, run on the tree at build time:
/// Debian's image does not run sysusers on boot).
const WEBAPP_SYSUSERS: &str = include_str!("../../../webapp/systemd/flypack-web.sysusers");

/// Units enabled in every image.
const ENABLE: &[&str] = &[
    "flypack-firstboot-early.service",
    "flypack-firstboot.service",
    "flypack-status.service",
    "flypack-backup.timer",
    "flypack-web.service",
    "flypack-web-privileged.socket",
    "systemd-networkd.service",
    "systemd-resolved.service",
    // Loads the unit's firewall (/etc/nftables.conf, written by firstboot)
    // before any network is up.
    "nftables.service",
];

/// Units masked in every image: systemd-firstboot would prompt on the
/// console of a cloned image (empty machine-id) and wait forever.
const MASK: &[&str] = &["systemd-firstboot.service"];

/// The prepared tree.
#[derive(Debug)]
pub struct Tree {
    /// Owns the work folder; removed when dropped.
    pub dir: tempfile::TempDir,
    /// Bytes used by the files (allocated blocks).
    pub used_bytes: u64,
    /// Number of inodes.
    pub inodes: u64,
}

impl Tree {
    /// The root of the tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs the stage. `manifest` is the image's manifest (its container images
/// and build time are used here; the build writes it inside with
/// [`write_manifest`] once the security gate has reported).
pub fn run(
    plan: &Plan,
    rootfs: &Rootfs,
    store: Option<&crate::stages::store::Store>,
    manifest: &Manifest,
    rep: &Reporter,
) -> Result<Tree> {
    let stage = rep.stage("tree", "unpacking the root filesystem");
    let work = plan.cache_dir.join("work");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let dir = flypack_contracts::atomic::temp_dir_in(&work, "tree")?;
    let root = dir.path().to_path_buf();
    link_unpacked(rootfs, &work, &root, &stage)?;

    stage.progress("laying overlays");
    let ctx = template_context(plan)?;
    let mut files = 0;
    for o in &plan.overlays {
        files +=
            overlay::apply(&o.path, &root, &ctx).with_context(|| format!("applying overlay {}", o.path.display()))?;
    }

    stage.progress("installing firstboot");
    install_programs(plan, &root)?;
    stage.progress("writing system files");
    write_system_files(plan, manifest, &root)?;
    install_ssh_keys(plan, &root)?;
    if let Some(ansible) = &plan.ansible {
        stage.progress("adding the Ansible folder");
        install_ansible(ansible, &root)?;
    }
    if let (Some(stack), Some(store)) = (&plan.stack, store) {
        stage.progress("adding the container stack");
        install_stack(stack, store, manifest, &root)?;
    }
    make_clonable(&root)?;
    systemctl(&root)?;
    stage.progress("compiling AppArmor profiles");
    apparmor_cache(plan, &root)?;

    let (used_bytes, inodes) = usage(&root)?;
    stage.done(&format!(
        "{} overlay files, {} in {} inodes",
        files,
        indicatif::HumanBytes(used_bytes),
        inodes
    ));
    Ok(Tree {
        dir,
        used_bytes,
        inodes,
    })
}

/// Writes the image's manifest into the tree, once it is whole: the
/// security gate's report comes in while the tree is being laid (the build
/// reads the archive's indices beside this stage).
pub fn write_manifest(tree: &mut Tree, manifest: &Manifest) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(manifest)?;
    replace_file(&tree.path().join(target::MANIFEST), &bytes, 0o644)?;
    tree.used_bytes += (bytes.len() as u64).div_ceil(4096) * 4096;
    tree.inodes += 1;
    Ok(())
}

/// The unpacked root filesystem kept beside its archive
/// (`KEY.tree`), and what it was unpacked from (`KEY.tree.id`).
fn unpacked_paths(archive: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        archive.with_extension("tree"),
        archive.with_extension("tree.id"),
        archive.with_extension("tree.lock"),
    )
}

/// The companions of a cached root filesystem archive made here (pruned with it).
pub const UNPACKED_COMPANIONS: &[&str] = &["tree", "tree.id", "tree.lock"];

/// Fills `root` with the root filesystem as hard links to its unpacked copy
/// in the cache (unpacking the archive there first when that copy is missing
/// or was made from another archive). Unpacking 1.5 GiB took 2.2 s on every
/// build, and removing it at the end as long; links take a fraction of that.
/// Nothing in a build writes into a file of the tree: every change replaces
/// or removes the file (see `overlay::replace_file`), so the cached copy stays
/// as unpacked (`tests/tests/image.rs` checks it across a rebuild).
fn link_unpacked(rootfs: &Rootfs, work: &Path, root: &Path, stage: &crate::progress::Stage) -> Result<()> {
    let (unpacked, id_file, lock) = unpacked_paths(&rootfs.archive);
    let _turn = super::take_turn(&lock, || {
        stage.progress("waiting for another build to unpack the root filesystem")
    })?;
    let m = fs::metadata(&rootfs.archive).with_context(|| format!("inspecting {}", rootfs.archive.display()))?;
    // Not its modification time: a build that uses the archive touches it
    // (so pruning keeps it). A refreshed archive is a new file (renamed
    // into place): another inode, made at another time.
    let born = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let id = format!("size={} ino={} born={born}\n", m.len(), m.ino());
    let current = unpacked.is_dir() && fs::read_to_string(&id_file).is_ok_and(|s| s == id);
    if !current {
        stage.progress("unpacking the root filesystem (kept for the next builds)");
        flypack_contracts::atomic::remove_any(&id_file)?;
        flypack_contracts::atomic::remove_any(&unpacked)?;
        let tmp = flypack_contracts::atomic::temp_dir_in(work, "unpacked")?;
        Cmd::new("tar")
            .args([
                "--extract",
                "--numeric-owner",
                "--preserve-permissions",
                "--xattrs",
                "--xattrs-include=*",
            ])
            .arg("--file")
            .arg(&rootfs.archive)
            .arg("--directory")
            .arg(tmp.path())
            .run()
            .with_context(|| format!("unpacking {}", rootfs.archive.display()))?;
        let tmp = tmp.keep();
        fs::rename(&tmp, &unpacked)
            .with_context(|| format!("moving the unpacked root filesystem to {}", unpacked.display()))?;
        flypack_contracts::atomic::write_atomic(&id_file, id.as_bytes(), 0o644)?;
    }
    stage.progress("linking the root filesystem in");
    Cmd::new("cp")
        .args(["-a", "--link"])
        .arg(format!("{}/.", unpacked.display()))
        .arg(root)
        .run()
        .with_context(|| format!("linking {} into the build's tree", unpacked.display()))?;
    Ok(())
}

/// Values overlay templates can use.
pub fn template_context(plan: &Plan) -> Result<tera::Context> {
    let mut ctx = tera::Context::new();
    ctx.insert("name", &plan.name);
    ctx.insert("builder_version", plan.builder_version);
    ctx.insert("users", &plan.users);
    ctx.insert("suite", &plan.rootfs.suite);
    Ok(ctx)
}

fn install_programs(plan: &Plan, root: &Path) -> Result<()> {
    let bin = fs::read(&plan.firstboot.path).with_context(|| format!("reading {}", plan.firstboot.path.display()))?;
    replace_file(&root.join(target::FIRSTBOOT_BIN), &bin, 0o755)?;
    // Its man pages (the units say Documentation=man:firstboot(8)), from its
    // own clap types: the binary runs here too (same architecture and libc).
    let man = root.join("usr/share/man/man8");
    Cmd::new(&plan.firstboot.path)
        .arg("man")
        .arg("--out")
        .arg(&man)
        .run()
        .context("writing firstboot's man pages")?;
    let web = fs::read(&plan.webapp.path).with_context(|| format!("reading {}", plan.webapp.path.display()))?;
    replace_file(&root.join(target::WEBAPP_BIN), &web, 0o755)?;
    let unit_dir = root.join(target::UNIT_DIR);
    fs::create_dir_all(&unit_dir).with_context(|| format!("creating {}", unit_dir.display()))?;
    for (name, text) in UNITS {
        replace_file(&unit_dir.join(name), text.as_bytes(), 0o644)?;
    }
    let sysusers = root.join("usr/lib/sysusers.d/flypack-web.conf");
    replace_file(&sysusers, WEBAPP_SYSUSERS.as_bytes(), 0o644)?;
    Cmd::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg(&sysusers)
        .run()
        .context("creating the web app's user (systemd-sysusers)")?;
    Ok(())
}

/// Copies the Ansible folder to /usr/share/flypack/ansible, root's and
/// read-only to everyone else: the web app's root helper runs playbooks
/// only from there.
fn install_ansible(src: &Path, root: &Path) -> Result<()> {
    let dst = root.join(ANSIBLE_DIR);
    flypack_contracts::atomic::remove_any(&dst)?;
    fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
    Cmd::new("cp")
        .args(["-r", "--no-preserve=ownership,mode"])
        .arg(format!("{}/.", src.display()))
        .arg(&dst)
        .run()
        .with_context(|| format!("copying the Ansible folder {}", src.display()))?;
    Cmd::new("chown")
        .args(["-R", "root:root"])
        .arg(&dst)
        .run()
        .context("chown of the Ansible folder")?;
    Cmd::new("chmod")
        .args(["-R", "u=rwX,go=rX"])
        .arg(&dst)
        .run()
        .context("chmod of the Ansible folder")?;
    Ok(())
}

/// Where the Ansible folder goes in the image (the web app's root helper's
/// `ANSIBLE_DIR`).
const ANSIBLE_DIR: &str = "usr/share/flypack/ansible";

/// Copies the compose folder in, links the Docker store (the images) in, and
/// writes the stack config.
fn install_stack(
    stack: &crate::plan::StackPlan,
    store: &crate::stages::store::Store,
    manifest: &Manifest,
    root: &Path,
) -> Result<()> {
    use flypack_contracts::stack::{STACK_CONFIG, StackConfig};
    let dst = root.join("etc/flypack/stack").join(&stack.project);
    fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
    Cmd::new("cp")
        .args(["-r", "--no-preserve=ownership"])
        .arg(format!("{}/.", stack.compose_dir.display()))
        .arg(&dst)
        .run()
        .context("copying the compose folder")?;
    Cmd::new("chown")
        .args(["-R", "root:root"])
        .arg(&dst)
        .run()
        .context("chown of the compose folder")?;
    crate::stages::store::install(store, root)?;
    let cfg = StackConfig {
        project: stack.project.clone(),
        compose: format!("/etc/flypack/stack/{}/{}", stack.project, stack.compose_file),
        profiles: stack.profiles.clone(),
        images: manifest.container_images.clone(),
    };
    replace_file(
        &root.join(STACK_CONFIG.trim_start_matches('/')),
        &serde_json::to_vec_pretty(&cfg)?,
        0o644,
    )?;
    Ok(())
}

/// /etc/fstab for the image.
pub fn fstab(plan: &Plan) -> String {
    fstab_for(&plan.disk)
}

/// /etc/fstab for a disk layout.
pub fn fstab_for(disk: &crate::disk_plan::DiskPlan) -> String {
    let root = disk.part(PART_ROOT);
    let uuid = root.fs.as_ref().map(|f| f.uuid.as_str()).unwrap_or_default();
    format!(
        "# Generated by Flypack builder. The root filesystem by UUID; it grows to\n\
         # fill the disk on first boot. The ESP and the seed partition are not\n\
         # mounted: nothing on the running unit writes to them.\n\
         UUID={uuid}\t/\text4\terrors=remount-ro\t0\t1\n"
    )
}

/// Writes fstab and grub.cfg for a disk layout (the installer has its own).
pub fn write_boot_files(plan: &Plan, disk: &crate::disk_plan::DiskPlan, root: &Path) -> Result<()> {
    replace_file(&root.join("etc/fstab"), fstab_for(disk).as_bytes(), 0o644)?;
    let root_uuid = disk.part(PART_ROOT).uuid.to_string();
    replace_file(
        &root.join("boot/grub/grub.cfg"),
        plan.boot.config(&root_uuid).grub_cfg()?.as_bytes(),
        0o644,
    )
}

/// Enables and disables units in a tree.
pub fn systemctl_root(root: &Path, verb: &str, units: &[&str]) -> Result<()> {
    Cmd::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .arg(verb)
        .args(units)
        .run()
        .with_context(|| format!("systemctl {verb} in the image"))?;
    Ok(())
}

fn write_system_files(plan: &Plan, manifest: &Manifest, root: &Path) -> Result<()> {
    let etc = root.join("etc");
    replace_file(&etc.join("fstab"), fstab(plan).as_bytes(), 0o644)?;
    replace_file(&etc.join("hostname"), format!("{}\n", plan.name).as_bytes(), 0o644)?;
    replace_file(
        &etc.join("hosts"),
        format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
            name = plan.name
        )
        .as_bytes(),
        0o644,
    )?;
    let grub_dir = root.join("boot/grub");
    fs::create_dir_all(&grub_dir).with_context(|| format!("creating {}", grub_dir.display()))?;
    let root_uuid = plan.disk.part(PART_ROOT).uuid.to_string();
    replace_file(
        &grub_dir.join("grub.cfg"),
        plan.boot.config(&root_uuid).grub_cfg()?.as_bytes(),
        0o644,
    )?;
    // resolved's stub, whatever the package scripts left behind.
    let resolv = etc.join("resolv.conf");
    if fs::symlink_metadata(&resolv).is_ok() {
        fs::remove_file(&resolv).with_context(|| format!("removing {}", resolv.display()))?;
    }
    std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &resolv)
        .with_context(|| format!("linking {}", resolv.display()))?;
    let share = root.join("usr/share/flypack");
    fs::create_dir_all(&share).with_context(|| format!("creating {}", share.display()))?;
    replace_file(&root.join(target::PLAN), &serde_json::to_vec_pretty(plan)?, 0o644)?;
    replace_file(
        &root.join("usr/share/flypack/unit.defaults.toml"),
        plan.unit_defaults.as_bytes(),
        0o644,
    )?;
    if let Some(k) = &plan.backup_key {
        let p = root.join("etc/flypack/backup/unit-key.toml");
        let dir = p.parent().expect("has a parent");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        replace_file(&p, k.as_bytes(), 0o600)?;
    }
    if let Some(f) = &plan.fleet {
        replace_file(&root.join("usr/share/flypack/fleet.toml"), f.as_bytes(), 0o644)?;
    }
    replace_file(
        &etc.join("flypack-release"),
        format!(
            "NAME={}\nBUILDER_VERSION={}\nPLAN_DIGEST={}\nBUILT_AT={}\n",
            plan.name, plan.builder_version, plan.digest, manifest.built_at
        )
        .as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// Reads uid and gid of `user` from the tree's /etc/passwd.
fn user_ids(root: &Path, user: &str) -> Result<(u32, u32)> {
    let passwd = fs::read_to_string(root.join("etc/passwd")).context("reading the image's /etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == user {
            let uid = f[2].parse().with_context(|| format!("uid of {user} in /etc/passwd"))?;
            let gid = f[3].parse().with_context(|| format!("gid of {user} in /etc/passwd"))?;
            return Ok((uid, gid));
        }
    }
    bail!("user {user} is not in the image's /etc/passwd")
}

fn install_ssh_keys(plan: &Plan, root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for u in &plan.users {
        let name = u.name.as_str();
        let (uid, gid) = user_ids(root, name)?;
        let home = root.join("home").join(name);
        let ssh = home.join(".ssh");
        fs::create_dir_all(&ssh).with_context(|| format!("creating {}", ssh.display()))?;
        let keys: String = u.ssh_authorized_keys.iter().map(|k| format!("{k}\n")).collect();
        let file = ssh.join("authorized_keys");
        // A new file, never one written through: the tree's files are links
        // to the cached root filesystem.
        replace_file(&file, keys.as_bytes(), 0o600)?;
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))?;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600))?;
        for p in [&ssh, &file] {
            rustix::fs::chown(
                p,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .with_context(|| format!("chown of {}", p.display()))?;
        }
    }
    Ok(())
}

/// Removes what must be unique per unit, so every unit flashed from this
/// image gets its own on first boot.
fn make_clonable(root: &Path) -> Result<()> {
    // Empty machine-id: systemd makes a fresh one on first boot.
    replace_file(&root.join("etc/machine-id"), b"", 0o444)?;
    let dbus = root.join("var/lib/dbus/machine-id");
    if fs::symlink_metadata(&dbus).is_ok_and(|m| m.is_file()) {
        fs::remove_file(&dbus).with_context(|| format!("removing {}", dbus.display()))?;
    }
    let ssh = root.join("etc/ssh");
    if ssh.is_dir() {
        for e in fs::read_dir(&ssh).with_context(|| format!("listing {}", ssh.display()))? {
            let p = e?.path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ssh_host_"))
            {
                fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    for p in ["var/lib/systemd/random-seed", "var/lib/systemd/credential.secret"] {
        flypack_contracts::atomic::remove_any(&root.join(p))?;
    }
    Ok(())
}

/// The AppArmor features of the kernel a bookworm image boots (Debian 12's
/// 6.1), as `aa-features-abi -x` printed them on a booted unit.
const APPARMOR_KERNEL_FEATURES: &str = include_str!("apparmor-kernel-features-bookworm");

/// Compiles the image's AppArmor profiles into the cache folder the booting
/// kernel will look in (its name is a hash of the kernel's features), so
/// apparmor.service loads them at boot instead of compiling them: 16-17 s
/// on the first boot's critical path under emulation, every unit, every
/// time. The image's own parser does it (chroot), never loading anything
/// into the build machine's kernel; it needs a /proc to write its cache, so
/// it runs in a throwaway mount and PID namespace with its own /proc
/// (`unshare --mount-proc`): nothing stays mounted. A kernel with other
/// features (a newer kernel) looks in another folder and compiles at boot,
/// as before.
fn apparmor_cache(plan: &Plan, root: &Path) -> Result<()> {
    const PARSER: &str = "/sbin/apparmor_parser";
    const FEATURES: &str = "tmp/flypack-apparmor-kernel-features";
    if plan.rootfs.suite != "bookworm" || !root.join(PARSER.trim_start_matches('/')).exists() {
        return Ok(());
    }
    let features = root.join(FEATURES);
    replace_file(&features, APPARMOR_KERNEL_FEATURES.as_bytes(), 0o644)?;
    let compiled = Cmd::new("unshare")
        .args(["--fork", "--pid"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .arg("chroot")
        .arg(root)
        .args([
            PARSER,
            "--skip-kernel-load",
            "--write-cache",
            "--quiet",
            "--kernel-features",
            &format!("/{FEATURES}"),
            "--",
            "/etc/apparmor.d",
        ])
        .run()
        .context("compiling the image's AppArmor profiles (apparmor_parser in the image)");
    flypack_contracts::atomic::remove_any(&features)?;
    compiled?;
    // The parser exits 0 even when it could not write its cache: check that
    // every profile has its cache file.
    let cache = root.join("var/cache/apparmor");
    let dirs: Vec<PathBuf> = fs::read_dir(&cache)
        .with_context(|| format!("listing {}", cache.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    let [dir] = dirs.as_slice() else {
        bail!(
            "expected one AppArmor cache folder in {}, found {dirs:?}",
            cache.display()
        );
    };
    let profiles = root.join("etc/apparmor.d");
    for e in fs::read_dir(&profiles).with_context(|| format!("listing {}", profiles.display()))? {
        let e = e?;
        if e.file_type()?.is_file() && !dir.join(e.file_name()).is_file() {
            bail!(
                "apparmor_parser wrote no cache for {} in {}",
                e.path().display(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn systemctl(root: &Path) -> Result<()> {
    Cmd::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .arg("enable")
        .args(ENABLE)
        .run()
        .context("enabling units in the image")?;
    Cmd::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .arg("mask")
        .args(MASK)
        .run()
        .context("masking units in the image")?;
    Ok(())
}

/// Allocated bytes and inode count of a tree.
pub fn usage(root: &Path) -> Result<(u64, u64)> {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let m = e
                .path()
                .symlink_metadata()
                .with_context(|| format!("inspecting {}", e.path().display()))?;
            if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
                continue;
            }
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, inodes))
}
