//! Block devices: which disk holds the running system, what is mounted,
//! how big a device is. Read from /proc and /sys.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer};

/// `lsblk --json` (util-linux): the devices, parsed into types.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Lsblk {
    /// Top-level devices.
    pub blockdevices: Vec<BlockDevice>,
}

/// One device of `lsblk --json -b -o NAME,PATH,TYPE,SIZE,RM,RO,TRAN,SERIAL,WWN,MODEL,FSTYPE,PTUUID,PTTYPE`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct BlockDevice {
    /// Kernel name.
    pub name: String,
    /// Device path.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `disk`, `part`, `rom`, `loop`...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Bytes (`-b`).
    #[serde(default, deserialize_with = "number")]
    pub size: u64,
    /// Removable.
    #[serde(default, deserialize_with = "flag")]
    pub rm: bool,
    /// Read only.
    #[serde(default, deserialize_with = "flag")]
    pub ro: bool,
    /// Transport (`usb`, `sata`, `nvme`, `virtio`).
    #[serde(default)]
    pub tran: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial: Option<String>,
    /// World wide name.
    #[serde(default)]
    pub wwn: Option<String>,
    /// Model.
    #[serde(default)]
    pub model: Option<String>,
    /// Filesystem signature.
    #[serde(default)]
    pub fstype: Option<String>,
    /// Partition table id.
    #[serde(default)]
    pub ptuuid: Option<String>,
    /// Partition table type (`gpt`, `dos`).
    #[serde(default)]
    pub pttype: Option<String>,
    /// Partitions and holders.
    #[serde(default)]
    pub children: Vec<BlockDevice>,
}

/// lsblk prints flags as booleans, or as "0"/"1" in older versions.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum F {
        B(bool),
        S(String),
        N(u64),
    }
    Ok(match Option::<F>::deserialize(d)? {
        Some(F::B(b)) => b,
        Some(F::S(s)) => s.trim() == "1",
        Some(F::N(n)) => n == 1,
        None => false,
    })
}

/// lsblk prints sizes as numbers, or as strings in older versions.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        N(u64),
        S(String),
    }
    Ok(match Option::<N>::deserialize(d)? {
        Some(N::N(n)) => n,
        Some(N::S(s)) => s.trim().parse().unwrap_or(0),
        None => 0,
    })
}

impl BlockDevice {
    /// A text field, trimmed ("" when absent).
    pub fn text(v: &Option<String>) -> String {
        v.as_deref().unwrap_or_default().trim().to_string()
    }

    /// Every signature on it and its children: partition tables and
    /// filesystems (`vdb: gpt partition table`, `vdb1: ext4`).
    pub fn signatures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.kind == "disk"
            && let Some(t) = self.pttype.as_deref().filter(|t| !t.is_empty())
        {
            out.push(format!("{}: {t} partition table", self.name));
        }
        if let Some(f) = self.fstype.as_deref().filter(|f| !f.is_empty()) {
            out.push(format!("{}: {f}", self.name));
        }
        for c in &self.children {
            out.extend(c.signatures());
        }
        out
    }
}

/// `sfdisk --json`: a partition table, parsed into types.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Sfdisk {
    /// The table.
    pub partitiontable: PartitionTable,
}

/// A partition table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PartitionTable {
    /// `gpt` or `dos`.
    pub label: String,
    /// Disk identifier (GUID for GPT).
    pub id: String,
    /// Sector size (recent sfdisk).
    #[serde(default)]
    pub sectorsize: Option<u64>,
    /// Partitions.
    #[serde(default)]
    pub partitions: Vec<Partition>,
}

/// A partition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Partition {
    /// Device node.
    pub node: String,
    /// First sector.
    pub start: u64,
    /// Sectors.
    pub size: u64,
    /// Type (GUID for GPT).
    #[serde(rename = "type")]
    pub kind: String,
    /// Partition GUID.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Partition name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Reads a disk's (or image's) partition table with `sfdisk --json`.
pub fn read_table(disk: &Path) -> Result<PartitionTable> {
    let out = crate::cmd::Cmd::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .run()
        .with_context(|| format!("reading the partition table of {}", disk.display()))?;
    let t: Sfdisk = serde_json::from_slice(&out.stdout).context("parsing sfdisk --json")?;
    Ok(t.partitiontable)
}

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
