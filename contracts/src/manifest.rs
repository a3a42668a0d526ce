//! The build manifest (`<image>.manifest.json`, and inside the image at
//! [`crate::layout::target::MANIFEST`]): what an image is made of, so later
//! tools (verify, flash, restore) and people know what they hold.

use serde::{Deserialize, Serialize};

/// Version of the manifest JSON.
pub const MANIFEST_SCHEMA: u32 = 1;

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_SCHEMA`].
    pub schema: u32,
    /// Image name (from the profile).
    pub name: String,
    /// Version of the builder that made it.
    pub builder_version: String,
    /// When it was built (RFC 3339, UTC).
    pub built_at: String,
    /// The profile it was built from.
    pub profile: ProfileRef,
    /// Digest of the build plan (all inputs).
    pub plan_digest: String,
    /// The root filesystem stage.
    pub rootfs: RootfsInfo,
    /// Installed Debian packages.
    pub packages: Vec<Package>,
    /// The firstboot binary inside.
    pub firstboot: BinaryInfo,
    /// The web app's binary inside (images before it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webapp: Option<BinaryInfo>,
    /// The disk layout.
    pub disk: DiskInfo,
    /// Container images inside the image.
    #[serde(default)]
    pub container_images: Vec<ContainerImage>,
    /// The Docker daemon that wrote the image's container store
    /// (`dockerd --version`), when the images were put there at build time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_store: Option<String>,
    /// The security gate's result (absent when the profile turned it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityReport>,
    /// Output files and their checksums (empty in the copy inside the image,
    /// which cannot know the checksum of the image holding it).
    #[serde(default)]
    pub outputs: Vec<OutputFile>,
}

/// The profile an image was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRef {
    /// Path as given to the builder.
    pub path: String,
    /// SHA-256 of the profile file.
    pub digest: String,
}

/// The root filesystem stage's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsInfo {
    /// Cache key: digest of every input of the stage.
    pub digest: String,
    /// Debian suite.
    pub suite: String,
    /// Archive mirror.
    pub mirror: String,
    /// snapshot.debian.org timestamp, when pinned.
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// One installed Debian package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Package name (with `:arch` for foreign architectures).
    pub name: String,
    /// Installed version.
    pub version: String,
}

/// A binary of ours in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryInfo {
    /// SHA-256 of the file.
    pub sha256: String,
    /// Highest glibc symbol version it needs ("" if static).
    pub glibc_required: String,
}

/// The disk layout of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    /// Image size in bytes.
    pub size_bytes: u64,
    /// Logical sector size.
    pub sector_size: u64,
    /// GPT disk GUID.
    pub disk_guid: String,
    /// Partitions in table order.
    pub partitions: Vec<PartitionInfo>,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionInfo {
    /// Partition number (1-based).
    pub number: u32,
    /// GPT partition name (PARTLABEL).
    pub name: String,
    /// GPT type GUID.
    pub type_guid: String,
    /// GPT partition GUID (PARTUUID).
    pub uuid: String,
    /// Offset in bytes.
    pub start_bytes: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// The filesystem in it, if any.
    #[serde(default)]
    pub filesystem: Option<FilesystemInfo>,
}

/// A filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemInfo {
    /// `ext4` or `vfat`.
    pub kind: String,
    /// Filesystem UUID (ext4) or volume id (FAT, `XXXX-XXXX`).
    pub uuid: String,
    /// Volume label.
    pub label: String,
}

/// A container image carried inside the disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerImage {
    /// Reference (`name:tag`).
    pub reference: String,
    /// Image id (config digest, `sha256:...`).
    pub id: String,
    /// The archive holding it, when the image is loaded from one (a path
    /// on the unit, or in `builder images`' output). None: the image is
    /// already in Docker's store (put there at build time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// SHA-256 of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
}

/// What the security gate found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityReport {
    /// When (RFC 3339, UTC).
    pub checked: String,
    /// The indices read (signature and digests checked).
    pub indices: Vec<SecurityIndex>,
    /// Packages with a newer version in an index (all waived, or the build failed).
    #[serde(default)]
    pub newer: Vec<Lagging>,
}

/// One index the gate read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityIndex {
    /// Its InRelease.
    pub url: String,
    /// Its `Date:`.
    pub date: String,
}

/// A package behind its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lagging {
    /// Package.
    pub package: String,
    /// Version in the image.
    pub installed: String,
    /// Newer version available.
    pub available: String,
    /// The index (`bookworm-security`).
    pub index: String,
    /// The waiver that lets it through (reason, until).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waived: Option<String>,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFile {
    /// File name in the output folder.
    pub name: String,
    /// Apparent size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the content.
    pub sha256: String,
}

impl DiskInfo {
    /// The partition with this number.
    pub fn partition(&self, number: u32) -> Option<&PartitionInfo> {
        self.partitions.iter().find(|p| p.number == number)
    }
}
