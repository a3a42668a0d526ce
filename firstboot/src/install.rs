//! `firstboot install`: the USB installer. Runs on the installer stick,
//! chooses the server's internal disk by rules, writes the appliance image
//! carried on the stick onto it (verified), gives the copy fresh partition and
//! filesystem identifiers, carries the stick's seed over, and reboots into it.
//!
//! Console contract: `FLYPACK-INSTALL {json}` lines (`event`: `disk`,
//! `progress`, `written`, `cancelled`, `failed`); on failure also a
//! `FLYPACK-STATUS` line with verdict NO-GO, so whoever watches the console
//! (a technician, `builder boot --expect-ready`) knows it ended.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flypack_contracts::cmd::Cmd;
use flypack_contracts::layout::{PART_ESP, PART_PAYLOAD, PART_ROOT, PART_SEED};
use flypack_contracts::status::{Provisioning, STATUS_SCHEMA, StageState, StageStatus, Status, Verdict};
use flypack_contracts::unit::DiskRule;
use flypack_engine::flash::{self, Hooks, Phase};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{self, SeedLocation};
use crate::root::Root;

/// Written by the builder into the stick.
pub const SETTINGS: &str = "/etc/flypack/installer.json";
/// Written into the installed system: what was installed, from where, when.
pub const RECORD: &str = "etc/flypack/install.json";
/// On the stick's seed partition: the disks this stick has imaged.
pub const STICK_LOG: &str = "installed.txt";

/// The installer's settings (from the profile's `[installer]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    /// Image name.
    pub name: String,
    /// The stick's partition holding the appliance image, raw
    /// ([`flypack_contracts::layout::PART_PAYLOAD`]).
    pub payload_partition: u32,
    /// Its block map (in the stick's root): the image's size, which ranges
    /// hold data, and each range's SHA-256.
    pub bmap: PathBuf,
    /// SHA-256 of the payload's block map, which is the build's `NAME.bmap`
    /// byte for byte (its per-range digests decide every byte written): the
    /// install record names the image by it, checkable against SHA256SUMS.
    pub payload_bmap_sha256: String,
    /// `only`, `smallest` or `largest`.
    pub choose: String,
    /// USB disks may be targets.
    pub allow_usb: bool,
    /// Disks holding a filesystem may be overwritten.
    pub allow_wipe: bool,
    /// Seconds to cancel.
    pub cancel_seconds: u32,
}

/// A disk as lsblk reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskInfo {
    /// `/dev/sda`.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Removable media.
    pub removable: bool,
    /// Transport (`usb`, `sata`, `nvme`, ...).
    pub tran: String,
    /// Serial number.
    pub serial: String,
    /// World wide name.
    pub wwn: String,
    /// Model.
    pub model: String,
    /// Read-only.
    pub read_only: bool,
    /// Filesystems on it or its partitions (`sda1: ext4`).
    pub filesystems: Vec<String>,
    /// Partition table UUID (to recognise a disk this stick imaged).
    pub ptuuid: String,
}

impl DiskInfo {
    fn describe(&self) -> String {
        let mut s = format!(
            "{} ({:.1} GiB",
            self.path.display(),
            self.size as f64 / (1u64 << 30) as f64
        );
        for (k, v) in [
            ("model", &self.model),
            ("serial", &self.serial),
            ("wwn", &self.wwn),
            ("bus", &self.tran),
        ] {
            if !v.is_empty() {
                s.push_str(&format!(", {k} {v}"));
            }
        }
        s.push(')');
        s
    }

    fn is_usb(&self) -> bool {
        self.removable || self.tran == "usb"
    }
}

/// The disks of `lsblk -J -b -o NAME,PATH,TYPE,SIZE,RM,RO,TRAN,SERIAL,WWN,MODEL,FSTYPE,PTUUID,PTTYPE`.
pub fn parse_lsblk(json: &str) -> Result<Vec<DiskInfo>> {
    use flypack_contracts::blockdev::{BlockDevice, Lsblk};
    let l: Lsblk = serde_json::from_str(json).context("parsing lsblk's JSON")?;
    let t = BlockDevice::text;
    Ok(l.blockdevices
        .iter()
        .filter(|d| d.kind == "disk" && !d.name.starts_with("zram") && !d.name.starts_with("ram"))
        .map(|d| DiskInfo {
            path: d.path.clone().unwrap_or_else(|| PathBuf::from("/dev").join(&d.name)),
            size: d.size,
            removable: d.rm,
            tran: t(&d.tran),
            serial: t(&d.serial),
            wwn: t(&d.wwn),
            model: t(&d.model),
            read_only: d.ro,
            filesystems: d.signatures(),
            ptuuid: t(&d.ptuuid),
        })
        .collect())
}

/// The disk to write and why, or why none may be written.
pub fn choose(
    disks: &[DiskInfo],
    stick: &Path,
    rule: &DiskRule,
    s: &Settings,
    need: u64,
) -> std::result::Result<(DiskInfo, String), String> {
    let seen = || {
        let list: Vec<String> = disks.iter().map(DiskInfo::describe).collect();
        if list.is_empty() {
            "no disks at all".to_string()
        } else {
            list.join("; ")
        }
    };
    let mut candidates: Vec<&DiskInfo> = disks
        .iter()
        .filter(|d| d.path != stick && !d.read_only && d.size > 0)
        .collect();
    let named = [("serial", &rule.serial), ("wwn", &rule.wwn), ("model", &rule.model)]
        .into_iter()
        .find_map(|(k, v)| v.as_ref().map(|v| (k, v.trim().to_string())));
    let (disk, reason) = if let Some((key, want)) = named {
        let value = |d: &DiskInfo| match key {
            "serial" => d.serial.clone(),
            "wwn" => d.wwn.clone(),
            _ => d.model.clone(),
        };
        let hits: Vec<&DiskInfo> = candidates
            .iter()
            .copied()
            .filter(|d| value(d).eq_ignore_ascii_case(&want))
            .collect();
        match hits.as_slice() {
            [] => {
                return Err(format!(
                    "the unit config names the disk with {key} {want:?} and there is none (disks seen: {}); fix [install] disk in unit.toml or fleet.toml",
                    seen()
                ));
            }
            [one] => {
                if one.is_usb() && !s.allow_usb {
                    return Err(format!(
                        "the disk with {key} {want:?} is a USB or removable disk ({}) and the profile does not allow USB targets ([installer] allow_usb)",
                        one.describe()
                    ));
                }
                ((*one).clone(), format!("the unit config names it by {key} {want:?}"))
            }
            many => {
                return Err(format!(
                    "{} disks match {key} {want:?} ({}): name it by serial or wwn instead",
                    many.len(),
                    many.iter().map(|d| d.describe()).collect::<Vec<_>>().join("; ")
                ));
            }
        }
    } else {
        if !s.allow_usb {
            candidates.retain(|d| !d.is_usb());
        }
        let kind = if s.allow_usb { "disk" } else { "non-removable disk" };
        match (s.choose.as_str(), candidates.len()) {
            (_, 0) => {
                return Err(format!(
                    "no {kind} to install on besides the stick (disks seen: {})",
                    seen()
                ));
            }
            ("only", 1) => (candidates[0].clone(), format!("it is the only {kind}")),
            ("only", n) => {
                return Err(format!(
                    "{n} candidate disks and the profile says to choose only when there is one: {}. Name the disk in the unit config ([install] disk.serial = \"...\") or set [installer] choose = \"smallest\" or \"largest\"",
                    candidates.iter().map(|d| d.describe()).collect::<Vec<_>>().join("; ")
                ));
            }
            ("smallest", n) => {
                let d = candidates
                    .iter()
                    .min_by_key(|d| (d.size, d.path.clone()))
                    .expect("non-empty");
                ((*d).clone(), format!("the smallest of {n} {kind}s"))
            }
            (_, n) => {
                let d = candidates
                    .iter()
                    .max_by_key(|d| (d.size, std::cmp::Reverse(d.path.clone())))
                    .expect("non-empty");
                ((*d).clone(), format!("the largest of {n} {kind}s"))
            }
        }
    };
    if disk.size < need {
        return Err(format!(
            "{} is too small: the image needs {need} bytes",
            disk.describe()
        ));
    }
    if !disk.filesystems.is_empty() && !s.allow_wipe {
        return Err(format!(
            "{} holds data ({}) and wiping is not allowed (the profile's [installer] allow_wipe, or the unit config's [install] allow_wipe): wipe it first (wipefs -a) if it really is the target",
            disk.describe(),
            disk.filesystems.join(", ")
        ));
    }
    Ok((disk, reason))
}

/// Signatures on a disk (`wipefs --no-act --json`): "TYPE at OFFSET".
fn signatures(disk: &Path) -> Result<Vec<String>> {
    let out = Cmd::new("wipefs")
        .args(["--no-act", "--json"])
        .arg(disk)
        .run()
        .with_context(|| format!("probing {} for signatures (wipefs)", disk.display()))?
        .stdout_str();
    parse_wipefs(&out)
}

/// Parses `wipefs --json` (empty output: no signature).
pub fn parse_wipefs(json: &str) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Sig {
        #[serde(default)]
        offset: String,
        #[serde(rename = "type", default)]
        kind: String,
    }
    #[derive(serde::Deserialize)]
    struct Out {
        #[serde(default)]
        signatures: Vec<Sig>,
    }
    if json.trim().is_empty() {
        return Ok(vec![]);
    }
    let o: Out = serde_json::from_str(json).context("parsing wipefs's JSON")?;
    Ok(o.signatures
        .into_iter()
        .map(|s| format!("{} at {}", s.kind, s.offset))
        .collect())
}

fn say(event: &str, fields: serde_json::Value) {
    let mut obj = json!({ "event": event });
    if let (Some(o), serde_json::Value::Object(f)) = (obj.as_object_mut(), fields) {
        o.extend(f);
    }
    println!("FLYPACK-INSTALL {obj}");
    let _ = std::io::stdout().flush();
}

fn fail_status(reason: &str) -> Status {
    Status {
        schema: STATUS_SCHEMA,
        verdict: Verdict::NoGo,
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: std::fs::read_to_string("/etc/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
        time: crate::runner::now(),
        provisioning: Provisioning::Failed,
        stages: vec![StageStatus {
            name: "install".into(),
            state: StageState::Failed,
            attempts: 1,
            duration_ms: None,
            detail: Some(reason.to_string()),
        }],
        qa: None,
        services: Vec::new(),
        reasons: vec![format!("install: {reason}")],
    }
}

/// `firstboot install`.
pub fn run(root: &Root, settings: &Path, dry_run: bool, no_reboot: bool) -> Result<i32> {
    match install(root, settings, dry_run, no_reboot) {
        Ok(code) => Ok(code),
        Err(e) => {
            let reason = format!("{e:#}");
            say("failed", json!({ "reason": reason }));
            eprintln!(
                "\nflypack installer: NOT INSTALLED: {reason}\nNothing was written unless it says so above. Fix the cause, then reboot from the stick to try again.\n"
            );
            println!("{}", fail_status(&reason).to_line());
            Ok(1)
        }
    }
}

fn part(disk: &Path, n: u32) -> PathBuf {
    let s = disk.display().to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// Waits up to `secs` for Enter on the console; true when cancelled.
fn countdown(secs: u32, what: &str) -> bool {
    if secs == 0 {
        return false;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        // EOF (no console input at all) is not a cancel.
        if let Ok(n) = std::io::stdin().lock().read_line(&mut line)
            && n > 0
        {
            let _ = tx.send(());
        }
    });
    for left in (1..=secs).rev() {
        println!("flypack installer: writing {what} in {left} s. Press Enter to cancel.");
        let _ = std::io::stdout().flush();
        if rx.recv_timeout(Duration::from_secs(1)).is_ok() {
            return true;
        }
    }
    false
}

fn read_seed_files(loc: &SeedLocation) -> Vec<(&'static str, Vec<u8>)> {
    use flypack_contracts::seed::{
        BACKUP_KEY_FILE, CENTRAL_PASSWORD_FILE, FLEET_FILE, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE, UNIT_FILE,
    };
    let mut out = Vec::new();
    if let Ok(Some(files)) = config::read_seed(loc) {
        let tls = files.tls.clone().unwrap_or_default();
        let has_tls = files.tls.is_some();
        for (name, text) in [
            (UNIT_FILE, files.unit),
            (FLEET_FILE, files.fleet),
            (BACKUP_KEY_FILE, files.backup_key),
            (CENTRAL_PASSWORD_FILE, files.central_password.map(|p| p.0)),
            (TLS_CA_FILE, has_tls.then_some(tls.ca)),
            (TLS_CERT_FILE, has_tls.then_some(tls.cert)),
            (TLS_KEY_FILE, has_tls.then_some(tls.key)),
        ] {
            if let Some(t) = text {
                out.push((name, t.into_bytes()));
            }
        }
    }
    out
}

fn install(root: &Root, settings_path: &Path, dry_run: bool, no_reboot: bool) -> Result<i32> {
    let t0 = Instant::now();
    let text = std::fs::read_to_string(root.path(settings_path))
        .with_context(|| format!("reading {}: is this the installer stick?", settings_path.display()))?;
    let s: Settings = serde_json::from_str(&text).with_context(|| format!("parsing {}", settings_path.display()))?;
    if s.payload_partition <= PART_ROOT {
        bail!(
            "{}: payload_partition {} is one of the stick's own partitions (the payload is partition {PART_PAYLOAD}): \
             this stick was not made by builder; build and flash it again",
            settings_path.display(),
            s.payload_partition
        );
    }
    let stick = PathBuf::from("/dev").join(config::root_disk().context("finding the stick this runs from")?);
    let payload = part(&stick, s.payload_partition);
    let bmap_path = root.path(&s.bmap);
    let need = flash::find_bmap(&payload, Some(&bmap_path))?
        .with_context(|| format!("the payload's block map {}", bmap_path.display()))?
        .image_size;

    // The unit config decides the disk where it names one: the stick's seed
    // (unit.toml or fleet.toml), else the fleet baked into the image.
    let resolved = config::resolve_here(root, None).context("reading the unit config on the stick")?;
    let rule = resolved.unit.install.disk.clone();
    // The unit config may allow wiping its own disk too.
    let mut s = s;
    s.allow_wipe |= resolved.unit.install.allow_wipe;
    let seed_loc = config::seed_location(root);

    // Disks are judged only once udev knows them all.
    Cmd::new("udevadm")
        .args(["settle", "--timeout=60"])
        .run()
        .context("udev did not settle: not every disk may be known yet, so none is chosen; nothing was written")?;
    let out = Cmd::new("lsblk")
        .args([
            "-J",
            "-b",
            "-o",
            "NAME,PATH,TYPE,SIZE,RM,RO,TRAN,SERIAL,WWN,MODEL,FSTYPE,PTUUID,PTTYPE",
        ])
        .run()
        .map(|o| o.stdout_str())
        .context("listing disks (lsblk)")?;
    let disks = parse_lsblk(&out)?;
    let (disk, reason) = choose(&disks, &stick, &rule, &s, need).map_err(anyhow::Error::msg)?;
    // Every signature libblkid knows (RAID, LVM, partition tables, ...), not
    // only what lsblk names.
    if !s.allow_wipe {
        let sigs = signatures(&disk.path)?;
        if !sigs.is_empty() {
            anyhow::bail!(
                "{} holds data ({}) and wiping is not allowed (the profile's [installer] allow_wipe, or the unit \
                 config's [install] allow_wipe): wipe it first (wipefs -a) if it really is the target; nothing was written",
                disk.describe(),
                sigs.join(", ")
            );
        }
    }

    let already = match &seed_loc {
        SeedLocation::At(p, off, len) => flypack_contracts::seed::read_file(p, *off, *len, STICK_LOG)
            .ok()
            .flatten(),
        SeedLocation::Missing(_) => None,
    };
    if !disk.ptuuid.is_empty()
        && let Some(log) = &already
        && log
            .lines()
            .any(|l| l.split_whitespace().next() == Some(disk.ptuuid.as_str()))
    {
        say("already-installed", json!({ "disk": disk.path, "ptuuid": disk.ptuuid }));
        println!(
            "flypack installer: {} was imaged by this stick already and has not changed since. \
             Remove the stick and reboot to start it; to image it again, wipe it first (wipefs -a {}).",
            disk.describe(),
            disk.path.display()
        );
        return Ok(0);
    }

    say(
        "disk",
        json!({
            "disk": disk.path, "size": disk.size, "serial": disk.serial, "wwn": disk.wwn, "model": disk.model,
            "reason": reason, "config": resolved.source, "hostname": resolved.unit.hostname,
            "candidates": disks.iter().map(DiskInfo::describe).collect::<Vec<_>>(),
        }),
    );
    println!(
        "\nflypack installer: image {} onto {}\n  because {reason}\n  unit config: {} ({})\n",
        s.name,
        disk.describe(),
        resolved.source,
        resolved.reason
    );
    if dry_run {
        return Ok(0);
    }
    if countdown(s.cancel_seconds, &disk.path.display().to_string()) {
        say("cancelled", json!({ "disk": disk.path }));
        println!("flypack installer: cancelled, nothing written. Remove the stick and reboot.");
        return Ok(0);
    }

    // The stick's seed goes onto the disk in the same pass.
    let run_dir = root.path("/run/flypack-install");
    std::fs::create_dir_all(&run_dir)?;
    let seed_files = read_seed_files(&seed_loc);
    let opts = flash::Options {
        image: payload.clone(),
        bmap: Some(bmap_path),
        target: disk.path.clone(),
        allow_large: true,
        running_system: false,
        seed: seed_files,
    };
    let steps = flash::Steps::new(10, |phase: Phase, pct, done, total| {
        say(
            "progress",
            json!({ "phase": phase.verb(), "percent": pct, "done": done, "total": total }),
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
    .with_context(|| format!("writing {}", disk.path.display()))?;
    say(
        "written",
        json!({ "disk": disk.path, "bytes": report.written, "write_seconds": report.write_seconds, "verify_seconds": report.verify_seconds }),
    );

    let ids = fresh_ids(&disk.path, &run_dir).context("giving the copy fresh identifiers")?;
    let record = json!({
        "image": s.name, "payload_bmap_sha256": s.payload_bmap_sha256, "disk": disk.path, "serial": disk.serial,
        "reason": reason, "config": resolved.source, "installer_version": env!("CARGO_PKG_VERSION"),
        "time": crate::runner::now(), "ids": ids,
    });
    finish_root(&disk.path, &run_dir, &ids, &record)?;
    if let SeedLocation::At(p, off, len) = &seed_loc {
        let mut log = already.unwrap_or_default();
        log.push_str(&format!(
            "{} {} {} {}\n",
            ids.disk.as_str(),
            crate::runner::now(),
            disk.serial,
            disk.path.display()
        ));
        if let Err(e) = flypack_contracts::seed::write(p, *off, *len, &[(STICK_LOG, log.as_bytes())], &[]) {
            tracing::warn!("could not note the install on the stick: {e:#}");
        }
    }
    Cmd::new("sync").run().ok();
    say(
        "done",
        json!({ "disk": disk.path, "seconds": t0.elapsed().as_secs_f64(), "ids": ids }),
    );
    println!(
        "\nflypack installer: {} is imaged. Rebooting into it; remove the stick to image the next server.\n",
        disk.path.display()
    );
    if !no_reboot {
        Cmd::new("systemctl")
            .args(["reboot", "--no-block"])
            .run()
            .context("rebooting")?;
    }
    Ok(0)
}

/// The identifiers an installed copy gets (recorded in its install.json and
/// the `done` event).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FreshIds {
    /// Disk GUID.
    pub disk: String,
    /// Partition GUIDs, in order.
    pub partitions: Vec<String>,
    /// Root filesystem UUID.
    pub root_fs: String,
    /// The image's root filesystem UUID it replaced.
    pub old_root_fs: String,
    /// ESP serial.
    pub esp_serial: String,
    /// Seed serial.
    pub seed_serial: String,
}

/// New disk and partition UUIDs, a new root filesystem UUID and FAT serials.
fn fresh_ids(disk: &Path, _run: &Path) -> Result<FreshIds> {
    let new = || uuid::Uuid::new_v4().to_string();
    let d = disk.display().to_string();
    let disk_id = new();
    Cmd::new("sfdisk").args(["--disk-id", &d, &disk_id]).run()?;
    let mut parts = Vec::new();
    for n in 1..=4u32 {
        let u = new();
        Cmd::new("sfdisk").args(["--part-uuid", &d, &n.to_string(), &u]).run()?;
        parts.push(u);
    }
    // Partition devices for what flash wrote.
    if Cmd::new("partx").args(["-u", &d]).run().is_err() {
        Cmd::new("blockdev").args(["--rereadpt", &d]).run()?;
    }
    Cmd::new("udevadm").args(["settle", "--timeout=30"]).run().ok();
    let rootp = part(disk, PART_ROOT).display().to_string();
    let old_fs = Cmd::new("blkid")
        .args(["-p", "-s", "UUID", "-o", "value", &rootp])
        .run()
        .map(|o| o.stdout_str())?
        .trim()
        .to_string();
    // tune2fs -U wants a freshly checked filesystem.
    Cmd::new("e2fsck").args(["-fy", &rootp]).run()?;
    let root_fs = new();
    Cmd::new("tune2fs").args(["-U", &root_fs, &rootp]).run()?;
    let mut serials = Vec::new();
    for n in [PART_ESP, PART_SEED] {
        let b = uuid::Uuid::new_v4();
        let id = hex::encode(&b.as_bytes()[..4]);
        Cmd::new("fatlabel").arg("-i").arg(part(disk, n)).arg(&id).run()?;
        serials.push(id);
    }
    Ok(FreshIds {
        disk: disk_id,
        partitions: parts,
        root_fs,
        old_root_fs: old_fs,
        esp_serial: serials[0].clone(),
        seed_serial: serials[1].clone(),
    })
}

/// Points the copy's boot config and fstab at its new identifiers and records the install.
fn finish_root(disk: &Path, run: &Path, ids: &FreshIds, record: &serde_json::Value) -> Result<()> {
    let mnt = run.join("root");
    std::fs::create_dir_all(&mnt)?;
    let rootp = part(disk, PART_ROOT);
    Cmd::new("mount")
        .arg(&rootp)
        .arg(&mnt)
        .run()
        .with_context(|| format!("mounting {}", rootp.display()))?;
    let res = (|| -> Result<()> {
        let new_part = ids
            .partitions
            .get((PART_ROOT - 1) as usize)
            .context("no root partition GUID")?
            .as_str();
        let new_fs = ids.root_fs.as_str();
        let old_fs = ids.old_root_fs.as_str();
        let grub = mnt.join("boot/grub/grub.cfg");
        let cfg = std::fs::read_to_string(&grub).with_context(|| format!("reading {}", grub.display()))?;
        let re_old = cfg
            .split("root=PARTUUID=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .context("grub.cfg has no root=PARTUUID=")?
            .to_string();
        flypack_contracts::atomic::write_atomic(&grub, cfg.replace(&re_old, new_part).as_bytes(), 0o644)?;
        let fstab = mnt.join("etc/fstab");
        let tab = std::fs::read_to_string(&fstab)?;
        if old_fs.is_empty() || !tab.contains(old_fs) {
            bail!("etc/fstab does not mention the root filesystem's UUID {old_fs}");
        }
        flypack_contracts::atomic::write_atomic(&fstab, tab.replace(old_fs, new_fs).as_bytes(), 0o644)?;
        flypack_contracts::atomic::write_atomic(
            &mnt.join(RECORD),
            serde_json::to_vec_pretty(record)?.as_slice(),
            0o644,
        )?;
        Ok(())
    })();
    let um = Cmd::new("umount").arg(&mnt).run();
    res?;
    um?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(choose: &str) -> Settings {
        Settings {
            name: "flypack".into(),
            payload_partition: 5,
            bmap: "/p.bmap".into(),
            payload_bmap_sha256: String::new(),
            choose: choose.into(),
            allow_usb: false,
            allow_wipe: false,
            cancel_seconds: 0,
        }
    }

    const LSBLK: &str = r#"{"blockdevices": [
      {"name":"sda","path":"/dev/sda","type":"disk","size":8589934592,"rm":true,"ro":false,"tran":"usb","serial":"STICK1","wwn":null,"model":"QEMU HARDDISK","fstype":null,"ptuuid":"aaaa",
        "children":[{"name":"sda4","path":"/dev/sda4","type":"part","size":4000,"rm":true,"ro":false,"tran":null,"serial":null,"wwn":null,"model":null,"fstype":"ext4","ptuuid":"aaaa"}]},
      {"name":"vda","path":"/dev/vda","type":"disk","size":21474836480,"rm":false,"ro":false,"tran":"virtio","serial":"SMALL-1","wwn":null,"model":null,"fstype":null,"ptuuid":null},
      {"name":"vdb","path":"/dev/vdb","type":"disk","size":32212254720,"rm":false,"ro":false,"tran":"virtio","serial":"BIG-2","wwn":"0x5000c500a1b2c3d4","model":"Big Disk","fstype":null,"ptuuid":null},
      {"name":"sr0","path":"/dev/sr0","type":"rom","size":1024,"rm":true,"ro":false,"tran":"sata","serial":null,"wwn":null,"model":null,"fstype":null,"ptuuid":null},
      {"name":"zram0","path":"/dev/zram0","type":"disk","size":1024,"rm":false,"ro":false,"tran":null,"serial":null,"wwn":null,"model":null,"fstype":"swap","ptuuid":null}
    ]}"#;

    #[test]
    fn lsblk_is_parsed_with_filesystems_of_partitions() {
        let d = parse_lsblk(LSBLK).unwrap();
        assert_eq!(d.len(), 3, "rom and zram are not disks to install on: {d:?}");
        assert_eq!(d[0].filesystems, ["sda4: ext4"]);
        assert!(d[0].is_usb() && !d[1].is_usb());
        assert_eq!(d[2].wwn, "0x5000c500a1b2c3d4");
    }

    #[test]
    fn rules_choose_the_disk_and_say_why() {
        let d = parse_lsblk(LSBLK).unwrap();
        let stick = Path::new("/dev/sda");
        let none = DiskRule::default();
        let need = 4 << 30;
        // Two internal disks: "only" refuses to guess and names them.
        let e = choose(&d, stick, &none, &settings("only"), need).unwrap_err();
        assert!(
            e.contains("2 candidate disks") && e.contains("/dev/vda") && e.contains("/dev/vdb"),
            "{e}"
        );
        assert_eq!(
            choose(&d, stick, &none, &settings("smallest"), need).unwrap().0.path,
            Path::new("/dev/vda")
        );
        assert_eq!(
            choose(&d, stick, &none, &settings("largest"), need).unwrap().0.path,
            Path::new("/dev/vdb")
        );
        // By serial (case-insensitive), WWN and model.
        let by = |serial: Option<&str>, wwn: Option<&str>, model: Option<&str>| DiskRule {
            serial: serial.map(String::from),
            wwn: wwn.map(String::from),
            model: model.map(String::from),
        };
        let (disk, why) = choose(&d, stick, &by(Some("big-2"), None, None), &settings("only"), need).unwrap();
        assert_eq!(disk.path, Path::new("/dev/vdb"));
        assert!(why.contains("serial"), "{why}");
        assert_eq!(
            choose(
                &d,
                stick,
                &by(None, Some("0x5000c500a1b2c3d4"), None),
                &settings("only"),
                need
            )
            .unwrap()
            .0
            .path,
            Path::new("/dev/vdb")
        );
        assert_eq!(
            choose(&d, stick, &by(None, None, Some("Big Disk")), &settings("only"), need)
                .unwrap()
                .0
                .path,
            Path::new("/dev/vdb")
        );
        let e = choose(&d, stick, &by(Some("NOPE"), None, None), &settings("largest"), need).unwrap_err();
        assert!(e.contains("NOPE") && e.contains("SMALL-1"), "{e}");
        // Never the stick, even when a rule names it; no USB disk unless allowed.
        let e = choose(&d, stick, &by(Some("STICK1"), None, None), &settings("only"), need).unwrap_err();
        assert!(e.contains("there is none"), "{e}");
        let usb_only: Vec<DiskInfo> = d
            .iter()
            .filter(|x| x.path != Path::new("/dev/vda") && x.path != Path::new("/dev/vdb"))
            .cloned()
            .chain([DiskInfo {
                path: "/dev/sdb".into(),
                size: 64 << 30,
                removable: true,
                tran: "usb".into(),
                ..Default::default()
            }])
            .collect();
        let e = choose(&usb_only, stick, &none, &settings("only"), need).unwrap_err();
        assert!(e.contains("no non-removable disk"), "{e}");
        let mut allow = settings("only");
        allow.allow_usb = true;
        assert_eq!(
            choose(&usb_only, stick, &none, &allow, need).unwrap().0.path,
            Path::new("/dev/sdb")
        );
        // Too small; holds a filesystem.
        let e = choose(&d, stick, &none, &settings("smallest"), 25 << 30).unwrap_err();
        assert!(e.contains("too small"), "{e}");
        let mut used = d.clone();
        used[1].filesystems = vec!["vda1: xfs".into()];
        let e = choose(&used, stick, &none, &settings("smallest"), need).unwrap_err();
        assert!(e.contains("vda1: xfs") && e.contains("allow_wipe"), "{e}");
        let mut wipe = settings("smallest");
        wipe.allow_wipe = true;
        assert_eq!(
            choose(&used, stick, &none, &wipe, need).unwrap().0.path,
            Path::new("/dev/vda")
        );
    }

    #[test]
    fn a_partition_table_alone_is_data() {
        let json = r#"{"blockdevices":[
          {"name":"vdb","path":"/dev/vdb","type":"disk","size":21474836480,"rm":false,"ro":false,"tran":"virtio","serial":"X","wwn":null,"model":null,"fstype":null,"ptuuid":"1234","pttype":"gpt"}]}"#;
        let d = parse_lsblk(json).unwrap();
        assert_eq!(d[0].filesystems, vec!["vdb: gpt partition table".to_string()]);
        assert_eq!(
            parse_wipefs(r#"{"signatures": [{"device":"vdb","offset":"0x200","type":"gpt","uuid":"x","label":null},{"device":"vdb","offset":"0x1fe","type":"PMBR","uuid":null,"label":null}]}"#).unwrap(),
            vec!["gpt at 0x200".to_string(), "PMBR at 0x1fe".to_string()]
        );
        assert!(parse_wipefs("").unwrap().is_empty());
    }

    #[test]
    fn partition_names() {
        assert_eq!(part(Path::new("/dev/sda"), 4), Path::new("/dev/sda4"));
        assert_eq!(part(Path::new("/dev/nvme0n1"), 4), Path::new("/dev/nvme0n1p4"));
        assert_eq!(part(Path::new("/dev/vdb"), 2), Path::new("/dev/vdb2"));
    }
}
