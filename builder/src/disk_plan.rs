//! The partition plan: the disk layout contract (see
//! [`flypack_contracts::layout`]) turned into offsets, sizes and identifiers,
//! and rendered as an `sfdisk` script. Data first, so the table is covered by
//! golden tests without running any tool.

use flypack_contracts::layout::{self, ALIGN, SECTOR};
use flypack_contracts::manifest::{DiskInfo, FilesystemInfo, PartitionInfo};
use serde::Serialize;
use uuid::Uuid;

use crate::profile::DiskSizes;

/// Filesystem kinds we create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext4 (root).
    Ext4,
    /// FAT (ESP: FAT32; seed: whatever mkfs.vfat picks for the size).
    Vfat,
}

/// A filesystem to create in a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsPlan {
    /// Kind.
    pub kind: FsKind,
    /// ext4 UUID or FAT volume id (`XXXX-XXXX`).
    pub uuid: String,
    /// Volume label.
    pub label: String,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionPlan {
    /// Partition number.
    pub number: u32,
    /// GPT name.
    pub name: &'static str,
    /// GPT type GUID.
    pub type_guid: &'static str,
    /// Partition GUID.
    pub uuid: Uuid,
    /// Offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Filesystem, if any.
    pub fs: Option<FsPlan>,
}

impl PartitionPlan {
    /// First sector.
    pub fn start_sector(&self) -> u64 {
        self.start / SECTOR
    }
    /// Size in sectors.
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskPlan {
    /// Image size in bytes.
    pub size: u64,
    /// GPT disk GUID.
    pub disk_guid: Uuid,
    /// Partitions in table order.
    pub partitions: Vec<PartitionPlan>,
}

/// The identifiers of one image (random per build; fixed in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// GPT disk GUID.
    pub disk: Uuid,
    /// Partition GUIDs, partitions 1..=4.
    pub parts: [Uuid; 4],
    /// ext4 UUID of root.
    pub root_fs: Uuid,
    /// FAT volume id of the ESP.
    pub esp_vol: u32,
    /// FAT volume id of the seed.
    pub seed_vol: u32,
}

impl Ids {
    /// Fresh random identifiers.
    pub fn random() -> Self {
        let vol = || {
            let b = Uuid::new_v4();
            let b = b.as_bytes();
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        Self {
            disk: Uuid::new_v4(),
            parts: [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()],
            root_fs: Uuid::new_v4(),
            esp_vol: vol(),
            seed_vol: vol(),
        }
    }
}

/// Formats a FAT volume id as blkid shows it (`ABCD-1234`).
pub fn fat_volume_id(v: u32) -> String {
    format!("{:04X}-{:04X}", v >> 16, v & 0xffff)
}

/// Lays out the partitions for `sizes`.
pub fn plan(sizes: &DiskSizes, ids: &Ids) -> DiskPlan {
    let mut start = ALIGN;
    let mut parts = Vec::new();
    let specs: [(u32, &'static str, &'static str, u64, Option<FsPlan>); 4] = [
        (
            layout::PART_BIOS,
            layout::NAME_BIOS,
            layout::TYPE_BIOS,
            sizes.bios_boot,
            None,
        ),
        (
            layout::PART_ESP,
            layout::NAME_ESP,
            layout::TYPE_ESP,
            sizes.esp,
            Some(FsPlan {
                kind: FsKind::Vfat,
                uuid: fat_volume_id(ids.esp_vol),
                label: layout::ESP_LABEL.into(),
            }),
        ),
        (
            layout::PART_SEED,
            layout::NAME_SEED,
            layout::TYPE_BASIC_DATA,
            sizes.seed,
            Some(FsPlan {
                kind: FsKind::Vfat,
                uuid: fat_volume_id(ids.seed_vol),
                label: layout::SEED_LABEL.into(),
            }),
        ),
        (
            layout::PART_ROOT,
            layout::NAME_ROOT,
            layout::TYPE_ROOT_X86_64,
            sizes.root,
            Some(FsPlan {
                kind: FsKind::Ext4,
                uuid: ids.root_fs.to_string(),
                label: layout::ROOT_LABEL.into(),
            }),
        ),
    ];
    for (i, (number, name, type_guid, size, fs)) in specs.into_iter().enumerate() {
        parts.push(PartitionPlan {
            number,
            name,
            type_guid,
            uuid: ids.parts[i],
            start,
            size,
            fs,
        });
        start += size;
    }
    DiskPlan {
        size: sizes.total,
        disk_guid: ids.disk,
        partitions: parts,
    }
}

impl DiskPlan {
    /// The installer stick's layout: this one with the payload partition
    /// ([`layout::PART_PAYLOAD`]) of `size` bytes appended after root (the
    /// image grows by as much; `size` is a whole number of MiB, as images are).
    pub fn with_payload(mut self, size: u64, uuid: Uuid) -> Self {
        let last = self.partitions.last().expect("a layout has partitions");
        let start = last.start + last.size;
        self.partitions.push(PartitionPlan {
            number: layout::PART_PAYLOAD,
            name: layout::NAME_PAYLOAD,
            type_guid: layout::TYPE_LINUX_RESERVED,
            uuid,
            start,
            size: size.div_ceil(ALIGN) * ALIGN,
            fs: None,
        });
        self.size += size.div_ceil(ALIGN) * ALIGN;
        self
    }

    /// The partition with this number.
    pub fn part(&self, number: u32) -> &PartitionPlan {
        self.partitions
            .iter()
            .find(|p| p.number == number)
            .expect("the layout has this partition")
    }

    /// The `sfdisk` script that writes this table.
    pub fn sfdisk_script(&self) -> String {
        let mut s = String::new();
        s.push_str("label: gpt\n");
        s.push_str(&format!("label-id: {}\n", self.disk_guid.to_string().to_uppercase()));
        s.push_str("unit: sectors\n");
        // 34: the first sector after the primary GPT. Partitions still start
        // 1 MiB in; a larger first-lba makes `sgdisk -v` warn about a gap.
        s.push_str("first-lba: 34\n");
        s.push_str(&format!("sector-size: {SECTOR}\n\n"));
        for p in &self.partitions {
            s.push_str(&format!(
                "start={}, size={}, type={}, uuid={}, name=\"{}\"\n",
                p.start_sector(),
                p.sectors(),
                p.type_guid,
                p.uuid.to_string().to_uppercase(),
                p.name
            ));
        }
        s
    }

    /// The manifest's view of this disk.
    pub fn info(&self) -> DiskInfo {
        DiskInfo {
            size_bytes: self.size,
            sector_size: SECTOR,
            disk_guid: self.disk_guid.to_string(),
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    number: p.number,
                    name: p.name.to_string(),
                    type_guid: p.type_guid.to_string(),
                    uuid: p.uuid.to_string(),
                    start_bytes: p.start,
                    size_bytes: p.size,
                    filesystem: p.fs.as_ref().map(|f| FilesystemInfo {
                        kind: match f.kind {
                            FsKind::Ext4 => "ext4".into(),
                            FsKind::Vfat => "vfat".into(),
                        },
                        uuid: f.uuid.clone(),
                        label: f.label.clone(),
                    }),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) fn fixed_ids() -> Ids {
    let u = |s: &str| Uuid::parse_str(s).expect("test uuid");
    Ids {
        disk: u("11111111-2222-4333-8444-555555555555"),
        parts: [
            u("00000000-0000-4000-8000-000000000001"),
            u("00000000-0000-4000-8000-000000000002"),
            u("00000000-0000-4000-8000-000000000003"),
            u("00000000-0000-4000-8000-000000000004"),
        ],
        root_fs: u("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"),
        esp_vol: 0x1234_abcd,
        seed_vol: 0x5eed_0001,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> DiskSizes {
        let mib = 1u64 << 20;
        DiskSizes {
            total: 4 << 30,
            bios_boot: mib,
            esp: 128 * mib,
            seed: 16 * mib,
            root: (4 << 30) - 147 * mib,
        }
    }

    #[test]
    fn sfdisk_script_golden() {
        let plan = plan(&sizes(), &fixed_ids());
        assert_eq!(
            plan.sfdisk_script(),
            "label: gpt
label-id: 11111111-2222-4333-8444-555555555555
unit: sectors
first-lba: 34
sector-size: 512

start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, uuid=00000000-0000-4000-8000-000000000001, name=\"bios-boot\"
start=4096, size=262144, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=00000000-0000-4000-8000-000000000002, name=\"esp\"
start=266240, size=32768, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=00000000-0000-4000-8000-000000000003, name=\"flypack-seed\"
start=299008, size=8087552, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=00000000-0000-4000-8000-000000000004, name=\"root\"
"
        );
    }

    #[test]
    fn partitions_are_aligned_contiguous_and_leave_room_for_the_backup_gpt() {
        let plan = plan(&sizes(), &fixed_ids());
        let mut end = ALIGN;
        for p in &plan.partitions {
            assert_eq!(p.start % ALIGN, 0, "partition {} misaligned", p.number);
            assert_eq!(p.start, end, "gap before partition {}", p.number);
            end = p.start + p.size;
        }
        // The backup GPT (33 sectors) fits after the last partition.
        assert_eq!(plan.size - end, ALIGN);
        let info = plan.info();
        assert_eq!(
            info.partition(3).unwrap().filesystem.as_ref().unwrap().label,
            "FLYPACKSEED"
        );
        assert_eq!(
            info.partition(2).unwrap().filesystem.as_ref().unwrap().uuid,
            "1234-ABCD"
        );
    }

    #[test]
    fn the_payload_partition_follows_root_and_keeps_the_backup_gpt_room() {
        let base = plan(&sizes(), &fixed_ids());
        let image = 4u64 << 30;
        let uuid = Uuid::parse_str("00000000-0000-4000-8000-000000000005").unwrap();
        let stick = base.clone().with_payload(image, uuid);
        assert_eq!(stick.partitions.len(), 5);
        let root = stick.part(layout::PART_ROOT);
        let p = stick.part(layout::PART_PAYLOAD);
        assert_eq!(p.start, root.start + root.size);
        assert_eq!(p.size, image, "the payload partition holds the image exactly");
        assert_eq!(stick.size, base.size + image);
        assert_eq!(stick.size - (p.start + p.size), ALIGN);
        assert!(p.fs.is_none());
        assert!(stick.sfdisk_script().ends_with(
            "start=8386560, size=8388608, type=8DA63339-0007-60C0-C436-083AC8230908, \
             uuid=00000000-0000-4000-8000-000000000005, name=\"flypack-payload\"\n"
        ));
    }
}
