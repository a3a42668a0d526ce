//! The disk layout contract: what every Flypack image and installed disk
//! looks like, and where things live on the target.
//!
//! GPT, in this order (root last so it can grow to fill the disk):
//!
//! | # | name            | type                    | content                       |
//! |---|-----------------|-------------------------|-------------------------------|
//! | 1 | `bios-boot`     | BIOS boot               | GRUB core image (legacy BIOS) |
//! | 2 | `esp`           | EFI system partition    | FAT, `EFI/BOOT/BOOTX64.EFI`   |
//! | 3 | `flypack-seed`  | Microsoft basic data    | FAT labelled [`SEED_LABEL`]   |
//! | 4 | `root`          | Linux root (x86-64)     | ext4, grown on first boot     |
//!
//! The seed uses the "basic data" type so that any laptop mounts it and an
//! engineer can edit `unit.toml` on it after flashing.
//!
//! The USB installer's stick has a fifth partition, `flypack-payload`
//! ([`PART_PAYLOAD`]): the appliance image, raw, byte for byte at the
//! partition's start (its mapped blocks; the `.bmap` in the stick's root says
//! which and checks each range). Its type is "Linux reserved", which nothing
//! mounts or grows into.

/// Partition number of the BIOS boot partition.
pub const PART_BIOS: u32 = 1;
/// Partition number of the EFI system partition.
pub const PART_ESP: u32 = 2;
/// Partition number of the seed partition.
pub const PART_SEED: u32 = 3;
/// Partition number of the root partition.
pub const PART_ROOT: u32 = 4;
/// Partition number of the installer stick's payload (the appliance image).
pub const PART_PAYLOAD: u32 = 5;

/// GPT partition names (PARTLABEL).
pub const NAME_BIOS: &str = "bios-boot";
/// GPT name of the ESP.
pub const NAME_ESP: &str = "esp";
/// GPT name of the seed partition.
pub const NAME_SEED: &str = "flypack-seed";
/// GPT name of the root partition.
pub const NAME_ROOT: &str = "root";
/// GPT name of the installer stick's payload partition.
pub const NAME_PAYLOAD: &str = "flypack-payload";

/// GPT type GUID of a BIOS boot partition.
pub const TYPE_BIOS: &str = "21686148-6449-6E6F-744E-656564454649";
/// GPT type GUID of an EFI system partition.
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type GUID "Microsoft basic data" (FAT any OS will mount).
pub const TYPE_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
/// GPT type GUID of a Linux x86-64 root partition (Discoverable Partitions).
pub const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// GPT type GUID "Linux reserved": a partition nothing mounts (the payload).
pub const TYPE_LINUX_RESERVED: &str = "8DA63339-0007-60C0-C436-083AC8230908";

/// FAT volume label of the seed partition (FAT labels hold 11 characters).
pub const SEED_LABEL: &str = "FLYPACKSEED";
/// FAT volume label of the ESP.
pub const ESP_LABEL: &str = "FLYPACK-ESP";
/// ext4 label of the root filesystem.
pub const ROOT_LABEL: &str = "flypack-root";

/// Sector size we build images with.
pub const SECTOR: u64 = 512;
/// Partition alignment (1 MiB).
pub const ALIGN: u64 = 1 << 20;

/// Where things live inside the image / on the target.
pub mod target {
    /// The build manifest inside the image.
    pub const MANIFEST: &str = "usr/share/flypack/manifest.json";
    /// The build plan inside the image.
    pub const PLAN: &str = "usr/share/flypack/plan.json";
    /// firstboot's state directory.
    pub const STATE_DIR: &str = "var/lib/flypack";
    /// firstboot's journal.
    pub const JOURNAL: &str = "var/lib/flypack/journal.json";
    /// The done marker that gates firstboot.
    pub const DONE_MARKER: &str = "var/lib/flypack/firstboot.done";
    /// The status file the login banner and the web app read.
    pub const STATUS_FILE: &str = "var/lib/flypack/status.json";
    /// What the running stage is doing or waiting for (replaced as it goes).
    pub const PROGRESS_FILE: &str = "var/lib/flypack/progress.json";
    /// The login banner fragment agetty shows (issue.d).
    pub const ISSUE_FILE: &str = "run/flypack/status.issue";
    /// The firstboot binary.
    pub const FIRSTBOOT_BIN: &str = "usr/bin/firstboot";
    /// The web app's binary.
    pub const WEBAPP_BIN: &str = "usr/bin/flypack-web";
    /// Where systemd units we ship are installed.
    pub const UNIT_DIR: &str = "usr/lib/systemd/system";
}
