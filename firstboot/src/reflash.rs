//! A rolling update of a running unit: the new image (made on the laptop by
//! `builder restore --output HOST.img.zst`, so it carries this unit's
//! backup) is put in memory, checked against its block map, and written
//! over the disk this system runs from; the unit then reboots into it and
//! its first boot restores the backup. Nothing is written until every range
//! of the image matched its map.
//!
//! Overwriting a disk whose filesystems are mounted is safe only once they
//! cannot write any more: every filesystem is made read-only with the
//! kernel's emergency remount (SysRq `u`), and every partition device is
//! marked read-only (ext4 still records an error in its superblock on a
//! read-only mount, and the old system's programs meet errors once their
//! blocks are replaced: the first run under emulation lost a range that
//! way). This process locks its pages in memory first, so none of its code
//! or data is read from the disk while the new system lands on it. The reboot is done by a helper
//! process started before any of that (it too locks itself in memory), so
//! that the caller (Ansible over SSH) gets this command's answer first.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flypack_contracts::cmd::Cmd;
use flypack_engine::flash::{self, Hooks, Options, Phase};
use serde_json::json;

use crate::root::Root;

/// Where the image waits, in memory.
pub const STAGE_DIR: &str = "/run/flypack-reflash";
/// Seconds between the answer and the reboot: time for the answer to
/// reach the laptop (the command, sudo and sshd exit) under emulation too.
pub const REBOOT_AFTER: u64 = 10;
/// Memory left to the running system beside the staged image.
const SPARE: u64 = 512 << 20;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

fn say(json_out: bool, event: &str, fields: serde_json::Value, text: &str) {
    if json_out {
        let mut v = fields;
        v["event"] = json!(event);
        println!("{v}");
    } else {
        eprintln!("{text}");
    }
}

fn need_live_root(root: &Root) -> Result<()> {
    if !root.is_live() {
        bail!("reflash acts on the running system only (no --root)");
    }
    if !rustix::process::geteuid().is_root() {
        bail!("reflash must run as root (sudo firstboot reflash ...)");
    }
    Ok(())
}

/// MemAvailable from /proc/meminfo, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|k| k * 1024)
}

/// Why `bytes` cannot be staged with `available` memory, if it cannot.
pub fn short_of_memory(bytes: u64, available: u64) -> Option<String> {
    let need = bytes + SPARE;
    (need > available).then(|| {
        format!(
            "the image needs {} in memory (and {} left to the running system), and {} is available: \
             update this unit from the installer stick instead (docs/runbooks/update-a-flypack.md)",
            human(bytes),
            human(SPARE),
            human(available)
        )
    })
}

fn human(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// `firstboot reflash stage --bytes N`: a private tmpfs for the image.
pub fn stage(root: &Root, bytes: u64, json_out: bool) -> Result<i32> {
    need_live_root(root)?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let dir = Path::new(STAGE_DIR);
    // What is staged already counts as available: a second stage replaces it.
    let staged = if is_mountpoint(dir) { used_bytes(dir) } else { 0 };
    let available = mem_available(&meminfo).context("no MemAvailable in /proc/meminfo")? + staged;
    if let Some(why) = short_of_memory(bytes, available) {
        bail!("{why}");
    }
    // Room for the block map and rounding beside the image.
    let size = (bytes + (64 << 20)).to_string();
    if is_mountpoint(dir) {
        Cmd::new("mount")
            .args(["-o", &format!("remount,size={size}"), STAGE_DIR])
            .run()
            .context("resizing the staging tmpfs")?;
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {STAGE_DIR}"))?;
        Cmd::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700,nosuid,nodev,noexec"),
                "flypack-reflash",
                STAGE_DIR,
            ])
            .run()
            .context("mounting the staging tmpfs")?;
    }
    say(
        json_out,
        "staged",
        json!({ "dir": STAGE_DIR, "bytes": bytes, "available": available }),
        &format!("{STAGE_DIR}: room for {} in memory", human(bytes)),
    );
    Ok(0)
}

fn is_mountpoint(dir: &Path) -> bool {
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(d), Some(Ok(p))) => d.dev() != p.dev(),
        _ => false,
    }
}

fn used_bytes(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir)
        .map(|s| (s.f_blocks - s.f_bfree) * s.f_frsize)
        .unwrap_or(0)
}

/// The file is in memory (tmpfs or ramfs), not on a disk this may overwrite.
fn in_memory(p: &Path) -> Result<bool> {
    let s = rustix::fs::statfs(p).with_context(|| format!("inspecting {}", p.display()))?;
    let t = s.f_type as i64;
    Ok(t == TMPFS_MAGIC || t == RAMFS_MAGIC)
}

fn sysrq(key: &str) -> Result<()> {
    std::fs::write("/proc/sysrq-trigger", key).with_context(|| format!("writing {key:?} to /proc/sysrq-trigger"))
}

/// Filesystems mounted from `disk` (a name such as `vda`) that can still
/// write, from mountinfo: (mount point, device).
pub fn writable_on(mountinfo: &str, disk: &str) -> Vec<(String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut pre = pre.split_whitespace();
            let point = pre.nth(4)?.to_string();
            let mut post = post.split_whitespace();
            let _fstype = post.next()?;
            let source = post.next()?;
            let opts = post.next()?;
            let dev = source.strip_prefix("/dev/")?;
            let on_disk = dev.strip_prefix(disk).is_some_and(|rest| {
                rest.is_empty() || rest.chars().all(|c| c.is_ascii_digit()) || rest.starts_with('p')
            });
            (on_disk && opts.split(',').any(|o| o == "rw")).then(|| (point, source.to_string()))
        })
        .collect()
}

/// The partitions of `disk` (names such as `vda4`), from sysfs.
fn partitions(disk: &str) -> Result<Vec<String>> {
    let sys = Path::new("/sys/class/block").join(disk);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&sys).with_context(|| format!("listing {}", sys.display()))? {
        let p = e?.path();
        if p.join("partition").exists() {
            out.push(p.file_name().context("partition name")?.to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// `firstboot reflash write IMAGE`.
pub fn write(root: &Root, image: &Path, bmap: Option<&Path>, no_reboot: bool, json_out: bool) -> Result<i32> {
    need_live_root(root)?;
    let t0 = Instant::now();
    let disk_name = crate::config::root_disk().context("finding the disk this system runs from")?;
    let disk = PathBuf::from("/dev").join(&disk_name);
    for p in std::iter::once(image).chain(bmap) {
        if !in_memory(p)? {
            bail!(
                "{} is on a disk, which this reflash may overwrite while reading it: \
                 put it in memory first (firstboot reflash stage --bytes N, then copy it into {STAGE_DIR})",
                p.display()
            );
        }
    }
    if flash::find_bmap(image, bmap)?.is_none() {
        bail!(
            "{} has no block map beside it (builder restore --output writes HOST.bmap beside HOST.img.zst): give --bmap",
            image.display()
        );
    }
    let bmap_path = match bmap {
        Some(b) => b.to_path_buf(),
        None => {
            let s = image.display().to_string();
            PathBuf::from(format!("{}.bmap", s.trim_end_matches(".zst").trim_end_matches(".img")))
        }
    };
    // 1. Every range of the image, before anything changes.
    say(
        json_out,
        "checking",
        json!({ "image": image }),
        &format!("checking {} against its block map", image.display()),
    );
    let map = flash::check_source(image, Some(&bmap_path)).context("the image; nothing was written")?;
    let checked = t0.elapsed().as_secs_f64();
    say(
        json_out,
        "checked",
        json!({ "image": image, "bytes": map.mapped_bytes(), "image_size": map.image_size, "seconds": checked }),
        &format!("every range matches ({} of data)", human(map.mapped_bytes())),
    );
    // 2. The helper that reboots, started while the disk is still the old
    // system's (its program is read from there). Not through `Cmd`: its
    // processes end with their handle and get no stdin, and this one must
    // outlive this process and hear from it.
    let helper = if no_reboot {
        None
    } else {
        let exe = std::env::current_exe().context("finding this program")?;
        Some(
            std::process::Command::new(exe)
                .args(["reflash", "reboot-when-told", "--after", &REBOOT_AFTER.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .context("starting the reboot helper")?,
        )
    };
    // 3. Nothing of this process is read from the disk from here on.
    rustix::mm::mlockall(rustix::mm::MlockAllFlags::CURRENT | rustix::mm::MlockAllFlags::FUTURE)
        .context("locking this program in memory")?;
    // 4. Every filesystem read-only, flushed first.
    Cmd::new("sync").run().ok();
    sysrq("s")?;
    sysrq("u")?;
    let waited = Instant::now();
    loop {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
        let left = writable_on(&mi, &disk_name);
        if left.is_empty() {
            break;
        }
        if waited.elapsed() > Duration::from_secs(60) {
            bail!(
                "the filesystems on {} did not become read-only within 60 s ({} still writable): \
                 nothing was written; reboot the unit (it comes back as it was) and try again",
                disk.display(),
                left.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Read-only filesystems still write their superblock when they meet an
    // error (ext4 records it), and the old system will meet errors: its
    // programs read blocks the new image has replaced. A partition device
    // marked read-only stops that (ext4 checks it before recording); the
    // whole disk, which this writes through, stays writable.
    let parts = partitions(&disk_name)?;
    for p in &parts {
        Cmd::new("blockdev")
            .args(["--setro", &format!("/dev/{p}")])
            .run()
            .with_context(|| format!("marking /dev/{p} read-only; nothing was written: reboot the unit"))?;
    }
    say(
        json_out,
        "read-only",
        json!({ "disk": disk, "partitions": parts, "seconds": waited.elapsed().as_secs_f64() }),
        &format!("every filesystem on {} is read-only; writing", disk.display()),
    );
    // 5. The image, read back after writing.
    let opts = Options {
        image: image.to_path_buf(),
        bmap: Some(bmap_path),
        target: disk.clone(),
        allow_large: true,
        running_system: true,
        seed: Vec::new(),
    };
    let steps = flash::Steps::new(10, |phase: Phase, pct, _, _| {
        let what = phase.verb();
        say(
            json_out,
            "progress",
            json!({ "phase": what, "percent": pct }),
            &format!("{what}: {pct} %"),
        );
    });
    let progress = |phase, done, total| steps.report(phase, done, total);
    let report = flash::flash(
        &opts,
        &Hooks {
            progress: &progress,
            cancelled: &|| false,
            finish: None,
        },
    )
    .with_context(|| {
        format!(
            "writing {}: this unit will not boot again until it is imaged (the installer stick, or \
             builder restore --device with its backup from the laptop); it keeps running read-only until then",
            disk.display()
        )
    })?;
    say(
        json_out,
        "written",
        json!({
            "disk": disk, "bytes": report.written, "ranges": report.ranges, "check_seconds": checked,
            "write_seconds": report.write_seconds, "verify_seconds": report.verify_seconds,
            "seconds": t0.elapsed().as_secs_f64(), "reboot_in": helper.is_some().then_some(REBOOT_AFTER),
        }),
        &format!(
            "{} written and read back ({} ranges); {}",
            disk.display(),
            report.ranges,
            if helper.is_some() {
                "rebooting into it in 3 s"
            } else {
                "not rebooting (--no-reboot)"
            }
        ),
    );
    std::io::stdout().flush().ok();
    if let Some(mut h) = helper {
        let mut stdin = h.stdin.take().context("the reboot helper's stdin")?;
        stdin.write_all(b"reboot\n").context("telling the reboot helper")?;
    }
    Ok(0)
}

/// The helper: waits for "reboot" on stdin, then reboots after `after`
/// seconds. Anything else (the writer failed and closed the pipe) ends it.
pub fn reboot_when_told(after: u64) -> Result<i32> {
    rustix::mm::mlockall(rustix::mm::MlockAllFlags::CURRENT | rustix::mm::MlockAllFlags::FUTURE)
        .context("locking the helper in memory")?;
    let mut told = String::new();
    std::io::stdin().read_to_string(&mut told).ok();
    if told.trim() != "reboot" {
        return Ok(1);
    }
    std::thread::sleep(Duration::from_secs(after));
    // The filesystems are read-only and the disk synced: nothing to stop.
    sysrq("b")?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_and_a_short_one_refused_with_the_way_out() {
        let mi = "MemTotal:        4026012 kB\nMemFree:          112 kB\nMemAvailable:    3000000 kB\n";
        assert_eq!(mem_available(mi), Some(3_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(short_of_memory(1 << 30, 3 << 30), None);
        let why = short_of_memory(3 << 30, 3 << 30).unwrap();
        assert!(why.contains("installer stick") && why.contains("3.0 GiB"), "{why}");
    }

    #[test]
    fn only_writable_filesystems_of_the_disk_are_listed() {
        let mi = "\
22 1 254:4 / / rw,relatime shared:1 - ext4 /dev/vda4 rw,errors=remount-ro
23 22 254:2 / /boot/efi rw,relatime shared:2 - vfat /dev/vda2 ro,fmask=0077
24 22 0:5 / /run rw,nosuid shared:3 - tmpfs tmpfs rw,size=400000k
25 22 254:17 / /data rw shared:4 - ext4 /dev/vdb1 rw
26 22 259:1 / /srv rw shared:5 - ext4 /dev/nvme0n1p2 rw
";
        assert_eq!(writable_on(mi, "vda"), vec![("/".to_string(), "/dev/vda4".to_string())]);
        assert_eq!(
            writable_on(mi, "nvme0n1"),
            vec![("/srv".to_string(), "/dev/nvme0n1p2".to_string())]
        );
        assert!(writable_on(&mi.replace("- ext4 /dev/vda4 rw,", "- ext4 /dev/vda4 ro,"), "vda").is_empty());
    }
}
