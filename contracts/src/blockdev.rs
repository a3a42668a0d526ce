//! Block devices: which disk holds the running system, what is mounted,
//! how big a device is. Read from /proc and /sys.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The device mounted at `/`, from mountinfo.
pub fn root_source(mountinfo: &str) -> Result<PathBuf> {
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[4] != "/" {
            continue;
        }
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .context("malformed mountinfo line")?;
        let source = fields.get(sep + 2).context("malformed mountinfo line")?;
        return Ok(PathBuf::from(source));
    }
    bail!("no filesystem is mounted at /")
}

/// The whole disk and the partition number of a partition device, from sysfs.
pub fn disk_and_partition(sys_block: &Path, dev: &Path) -> Result<(PathBuf, u32)> {
    let dev = std::fs::canonicalize(dev).unwrap_or_else(|_| dev.to_path_buf());
    let name = dev
        .file_name()
        .context("device has no name")?
        .to_string_lossy()
        .into_owned();
    let part_dir = sys_block.join(&name);
    let n: u32 = std::fs::read_to_string(part_dir.join("partition"))
        .with_context(|| {
            format!(
                "{} is not a partition (no {}/partition)",
                dev.display(),
                part_dir.display()
            )
        })?
        .trim()
        .parse()
        .context("parsing the partition number")?;
    let parent = std::fs::canonicalize(part_dir.join("..")).context("finding the partition's disk")?;
    let disk = parent
        .file_name()
        .context("disk has no name")?
        .to_string_lossy()
        .into_owned();
    Ok((PathBuf::from("/dev").join(disk), n))
}

/// `major:minor` of a device and of its partitions (from /sys/class/block).
pub fn device_numbers(name: &str) -> Vec<String> {
    let base = Path::new("/sys/class/block").join(name);
    let mut out = Vec::new();
    if let Ok(d) = std::fs::read_to_string(base.join("dev")) {
        out.push(d.trim().to_string());
    }
    if let Ok(rd) = std::fs::read_dir(&base) {
        for e in rd.flatten() {
            if e.path().join("partition").exists()
                && let Ok(d) = std::fs::read_to_string(e.path().join("dev"))
            {
                out.push(d.trim().to_string());
            }
        }
    }
    out
}

/// Where any of `numbers` (major:minor) is mounted, from mountinfo.
pub fn mounts_of(mountinfo: &str, numbers: &[String]) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 4 && numbers.iter().any(|n| n == f[2])).then(|| f[4].to_string())
        })
        .collect()
}

/// Size of a block device in bytes, from sysfs.
pub fn size_bytes(name: &str) -> Option<u64> {
    std::fs::read_to_string(Path::new("/sys/class/block").join(name).join("size"))
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "22 1 254:4 / / rw,relatime shared:1 - ext4 /dev/vda4 rw\n\
                      30 22 7:0 / /mnt/stick rw,relatime - vfat /dev/loop0 rw\n\
                      23 22 0:21 / /proc rw,nosuid - proc proc rw\n";

    #[test]
    fn root_and_mounts() {
        assert_eq!(root_source(MI).unwrap(), PathBuf::from("/dev/vda4"));
        assert_eq!(mounts_of(MI, &["7:0".into()]), vec!["/mnt/stick".to_string()]);
        assert!(mounts_of(MI, &["8:16".into()]).is_empty());
    }
}
