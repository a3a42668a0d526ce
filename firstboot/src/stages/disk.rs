//! `disk`: grow the root partition and filesystem to fill the disk the image
//! was written to (the image is small; the server's disk is not). Converges:
//! growpart says NOCHANGE and resize2fs does nothing when already grown.

use std::path::Path;

use anyhow::{Context, Result};
use flypack_contracts::cmd::Cmd;

use crate::runner::{Ctx, Outcome, Stage};

/// The stage.
#[derive(Debug)]
pub struct Disk;

impl Stage for Disk {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn input_digest(&self, _ctx: &Ctx) -> Result<String> {
        // Always the same inputs: the disk it runs on.
        Ok("grow-root-v1".to_string())
    }

    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        ctx.fault_point("disk", "mid");
        if !ctx.root.is_live() {
            return Ok(Outcome::skipped("not the running system"));
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        let dev = root_source(&mountinfo).context("finding the root filesystem's device")?;
        let (disk, part) = disk_and_partition(Path::new("/sys/class/block"), &dev)?;
        let grown = match Cmd::new("growpart").arg(&disk).arg(part.to_string()).run() {
            Ok(_) => true,
            // growpart: 0 grown, 1 NOCHANGE (already fills the disk), 2 error.
            Err(e) if e.code() == Some(1) => false,
            Err(e) => return Err(e).context(format!("growing partition {part} of {}", disk.display())),
        };
        Cmd::new("resize2fs")
            .arg(&dev)
            .run()
            .with_context(|| format!("growing the filesystem on {}", dev.display()))?;
        let size = std::fs::read_to_string(format!(
            "/sys/class/block/{}/size",
            dev.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|sectors| sectors * 512);
        let size = size
            .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
            .unwrap_or_else(|| "?".into());
        Ok(Outcome::done(if grown {
            format!("root grown to {size} on {}", disk.display())
        } else {
            format!("root already fills {} ({size})", disk.display())
        }))
    }
}

pub use flypack_contracts::blockdev::{disk_and_partition, root_source};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn root_source_from_mountinfo() {
        let mi = "22 1 254:4 / / rw,relatime shared:1 - ext4 /dev/vda4 rw,errors=remount-ro\n\
                  23 22 0:21 / /proc rw,nosuid - proc proc rw\n";
        assert_eq!(root_source(mi).unwrap(), PathBuf::from("/dev/vda4"));
        assert!(root_source("23 22 0:21 / /proc rw - proc proc rw\n").is_err());
    }

    #[test]
    fn disk_and_partition_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        // /sys/class/block/nvme0n1p4 -> ../../devices/.../nvme0n1/nvme0n1p4
        let devices = d.path().join("devices/pci/nvme0n1");
        std::fs::create_dir_all(devices.join("nvme0n1p4")).unwrap();
        std::fs::write(devices.join("nvme0n1p4/partition"), "4\n").unwrap();
        let class = d.path().join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(devices.join("nvme0n1p4"), class.join("nvme0n1p4")).unwrap();
        let (disk, n) = disk_and_partition(&class, Path::new("/dev/nvme0n1p4")).unwrap();
        assert_eq!((disk, n), (PathBuf::from("/dev/nvme0n1"), 4));
    }
}
