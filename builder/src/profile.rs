//! Image profiles (`images/*.toml`): parsing and validation.
//!
//! [`RawProfile`] is what serde reads (every field a validating newtype, so
//! a bad value is reported with its key path); [`Profile::load`] adds the
//! checks that span several keys or touch other files and returns a
//! [`Profile`], the only type the build accepts.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flypack_contracts::config::{ConfigError, ConfigErrors, parse_toml};
use flypack_contracts::digest::sha256_hex;
use serde::{Deserialize, Serialize};

/// The profile schema this builder reads.
pub const PROFILE_SCHEMA: u32 = 1;
/// The profile `builder build` uses when given none.
pub const DEFAULT_PROFILE: &str = "images/flypack.toml";

/// Packages firstboot and the boot chain rely on; a profile must list them.
pub const REQUIRED_PACKAGES: &[(&str, &str)] = &[
    ("systemd-sysv", "systemd is the init system firstboot runs under"),
    ("systemd-resolved", "firstboot configures DNS through systemd-resolved"),
    ("udev", "disks and NICs are found through udev"),
    ("initramfs-tools", "the kernel boots through an initramfs"),
    ("cloud-guest-utils", "firstboot grows the root partition with growpart"),
    ("fdisk", "growpart edits the partition table with sfdisk"),
    ("e2fsprogs", "firstboot grows the root filesystem with resize2fs"),
    ("openssh-server", "units are managed over SSH"),
];

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s)?;
                Ok(Self(s))
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// An image name: lower-case letters, digits and `-`, used in file names.
    ImageName,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok { Ok(()) } else {
            Err(format!("{s:?} is not an image name: expected 1-63 lower-case letters, digits or '-', starting with a letter or digit"))
        }
    }
);

string_newtype!(
    /// A Debian package to install: `name`, `name=version` or `name/release`.
    PackageName,
    |s| {
        let name = s.split(['=', '/']).next().unwrap_or("");
        let name = name.split(':').next().unwrap_or("");
        let ok = name.len() >= 2
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
            && !s.contains(char::is_whitespace);
        if ok { Ok(()) } else {
            Err(format!("{s:?} is not a Debian package name: expected lower-case letters, digits and + - . (e.g. \"openssh-server\"), optionally with =VERSION or /RELEASE"))
        }
    }
);

string_newtype!(
    /// An archive mirror URL.
    MirrorUrl,
    |s| {
        let ok = (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file:/"))
            && !s.contains(char::is_whitespace);
        if ok { Ok(()) } else {
            Err(format!("{s:?} is not a mirror URL: expected http://, https:// or file:/ (e.g. \"http://deb.debian.org/debian\")"))
        }
    }
);

string_newtype!(
    /// A snapshot.debian.org timestamp, `YYYYMMDDTHHMMSSZ`.
    Snapshot,
    |s| {
        let b = s.as_bytes();
        let ok = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
        if ok { Ok(()) } else {
            Err(format!("{s:?} is not a snapshot timestamp: expected YYYYMMDDTHHMMSSZ (e.g. \"20250520T000000Z\")"))
        }
    }
);

string_newtype!(
    /// A Unix user or group name.
    UnixName,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok { Ok(()) } else {
            Err(format!("{s:?} is not a user or group name: expected up to 32 lower-case letters, digits, '_' or '-', starting with a letter or '_'"))
        }
    }
);

string_newtype!(
    /// An OpenSSH public key line.
    SshPublicKey,
    |s| {
        const TYPES: &[&str] = &[
            "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
        ];
        let mut parts = s.split_whitespace();
        let kind = parts.next().unwrap_or("");
        let blob = parts.next().unwrap_or("");
        let ok = TYPES.contains(&kind)
            && blob.len() >= 16
            && blob.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
            && !s.contains('\n');
        if ok { Ok(()) } else {
            Err(format!("not an SSH public key: expected one line \"TYPE BASE64 [comment]\" with TYPE one of {}", TYPES.join(", ")))
        }
    }
);

/// A size in bytes, written with a binary unit: `"4GiB"`, `"512MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size(pub u64);

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_size(&s).ok_or_else(|| {
            format!(
                "{s:?} is not a size: expected a whole number with KiB, MiB, GiB or TiB (e.g. \"4GiB\", \"512MiB\")"
            )
        })
    }
}

impl From<Size> for String {
    fn from(v: Size) -> String {
        v.to_string()
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (u, m) in units {
            if self.0 >= m && self.0.is_multiple_of(m) {
                return write!(f, "{}{u}", self.0 / m);
            }
        }
        write!(f, "{}B", self.0)
    }
}

fn parse_size(s: &str) -> Option<Size> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "KiB" => 1u64 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult).map(Size)
}

/// Output formats besides the raw image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The raw, sparse disk image (`NAME.img`); always written.
    Raw,
    /// zstd-compressed raw image (`NAME.img.zst`), for carrying around.
    Zst,
    /// qcow2 image (`NAME.qcow2`), for virtual machines.
    Qcow2,
}

/// The profile as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    /// Schema version, [`PROFILE_SCHEMA`].
    pub version: u32,
    /// Image name, used for output file names.
    pub name: ImageName,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The Debian root filesystem.
    pub debian: RawDebian,
    /// Overlay directories, relative to the profile file.
    #[serde(default)]
    pub overlays: Vec<String>,
    /// The unit config units use when nothing more specific applies
    /// (relative to the profile); default: just the hostname `name`.
    #[serde(default)]
    pub unit_defaults: Option<String>,
    /// A fleet inventory baked into the image (relative to the profile).
    #[serde(default)]
    pub fleet: Option<String>,
    /// The Ansible folder (ansible.cfg, playbooks/, roles/) the unit's web
    /// app runs its jobs from, installed at /usr/share/flypack/ansible
    /// (relative to the profile). Needs ansible-core and
    /// python3-ansible-runner among the packages.
    #[serde(default)]
    pub ansible: Option<String>,
    /// Users to create.
    #[serde(default)]
    pub users: Vec<User>,
    /// Disk layout.
    pub disk: RawDisk,
    /// Boot loader settings.
    #[serde(default)]
    pub boot: Boot,
    /// Outputs.
    #[serde(default)]
    pub outputs: Outputs,
    /// The container stack firstboot brings up.
    #[serde(default)]
    pub stack: Option<RawStack>,
    /// The USB installer image.
    #[serde(default)]
    pub installer: Installer,
    /// Backups.
    #[serde(default)]
    pub backup: Option<RawBackup>,
    /// The security gate.
    #[serde(default)]
    pub security: Security,
}

/// `[security]`: the build fails when a package in the image has a newer
/// version in the suite's security (or updates) index, unless waived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Check (default on).
    #[serde(default = "yes")]
    pub gate: bool,
    /// Where the security index is read [default: debian.security_mirror].
    #[serde(default)]
    pub mirror: Option<MirrorUrl>,
    /// Also check SUITE-updates on debian.mirror [default: debian.updates].
    #[serde(default)]
    pub check_updates: Option<bool>,
    /// The OpenPGP keyring the indices must be signed by.
    #[serde(default = "debian_keyring")]
    pub keyring: String,
    /// Packages allowed to lag, each with a reason and an expiry date.
    #[serde(default)]
    pub waivers: Vec<SecurityWaiver>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            gate: true,
            mirror: None,
            check_updates: None,
            keyring: debian_keyring(),
            waivers: vec![],
        }
    }
}

fn debian_keyring() -> String {
    "/usr/share/keyrings/debian-archive-keyring.gpg".into()
}

/// A package the gate lets through until a date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityWaiver {
    /// Binary package name.
    pub package: PackageName,
    /// Why it may lag (shown in the manifest).
    pub reason: String,
    /// Last day the waiver counts (YYYY-MM-DD).
    pub expires: flypack_contracts::unit::Date,
}

/// `[backup]`: the fleet's backup key, unit part (`builder backup-key new`
/// writes `NAME.key` and `NAME.unit.toml`; the image gets the unit part).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    /// The unit part of the fleet's backup key (relative to the profile).
    pub key: String,
}

/// `[installer]`: `NAME-installer.img`, a USB stick that images a server's
/// internal disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installer {
    /// Build it.
    #[serde(default)]
    pub enabled: bool,
    /// Which disk, when the unit config names none: `only`, `smallest`, `largest`.
    #[serde(default = "only")]
    pub choose: String,
    /// USB disks may be targets too.
    #[serde(default)]
    pub allow_usb: bool,
    /// A disk holding a filesystem may be overwritten.
    #[serde(default)]
    pub allow_wipe: bool,
    /// Seconds to cancel at the console before writing.
    #[serde(default = "ten")]
    pub cancel_seconds: u32,
}

impl Default for Installer {
    fn default() -> Self {
        Installer {
            enabled: false,
            choose: only(),
            allow_usb: false,
            allow_wipe: false,
            cancel_seconds: ten(),
        }
    }
}

fn only() -> String {
    "only".into()
}
fn ten() -> u32 {
    10
}

/// `[stack]`: a compose file and where its images come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStack {
    /// The compose file (relative to the profile); its folder is copied into the image.
    pub compose: String,
    /// Compose profiles to enable (e.g. `["grafana"]`).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Debian packages of the base layer every built image shares.
    #[serde(default = "base_packages")]
    pub base_packages: Vec<PackageName>,
    /// The images.
    pub images: Vec<RawStackImage>,
}

fn base_packages() -> Vec<PackageName> {
    ["busybox", "ca-certificates"]
        .iter()
        .map(|p| PackageName::try_from(p.to_string()).expect("valid"))
        .collect()
}

/// `[[stack.images]]`: exactly one of packages/binaries, archive, from_docker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStackImage {
    /// The reference the compose file uses (`name:tag`).
    pub reference: String,
    /// Built from these Debian packages on the shared base.
    #[serde(default)]
    pub packages: Vec<PackageName>,
    /// Built from these binaries of ours (`flypack-exporter`), found next to the builder.
    #[serde(default)]
    pub binaries: Vec<String>,
    /// Taken from this `docker save` archive (relative to the profile).
    #[serde(default)]
    pub archive: Option<String>,
    /// Exported from the local Docker daemon at build time.
    #[serde(default)]
    pub from_docker: bool,
}

/// A validated stack.
#[derive(Debug, Clone, Serialize)]
pub struct Stack {
    /// The compose file (absolute).
    pub compose: PathBuf,
    /// Its content.
    pub compose_text: String,
    /// Compose project (folder name).
    pub project: String,
    /// Enabled compose profiles.
    pub profiles: Vec<String>,
    /// Base layer packages.
    pub base_packages: Vec<String>,
    /// Images.
    pub images: Vec<StackImage>,
}

/// Where one image comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum StackImage {
    /// Debian packages on the shared base.
    Debian {
        /// Reference.
        reference: String,
        /// Packages.
        packages: Vec<String>,
    },
    /// Our binaries on the shared base.
    Binaries {
        /// Reference.
        reference: String,
        /// Binary names.
        binaries: Vec<String>,
    },
    /// An archive file.
    Archive {
        /// Reference.
        reference: String,
        /// Path.
        path: PathBuf,
    },
    /// The local Docker daemon.
    Docker {
        /// Reference.
        reference: String,
    },
}

impl StackImage {
    /// The image reference.
    pub fn reference(&self) -> &str {
        match self {
            StackImage::Debian { reference, .. }
            | StackImage::Binaries { reference, .. }
            | StackImage::Archive { reference, .. }
            | StackImage::Docker { reference } => reference,
        }
    }
}

/// `[debian]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDebian {
    /// Debian suite; only `bookworm`.
    pub suite: String,
    /// Architecture; only `amd64`.
    pub architecture: String,
    /// Archive mirror.
    pub mirror: MirrorUrl,
    /// Security archive mirror; omit to leave security updates out.
    #[serde(default)]
    pub security_mirror: Option<MirrorUrl>,
    /// Include `SUITE-updates`.
    #[serde(default = "yes")]
    pub updates: bool,
    /// Archive components.
    pub components: Vec<String>,
    /// Pin the archive to snapshot.debian.org at this time.
    #[serde(default)]
    pub snapshot: Option<Snapshot>,
    /// debconf preseed file (debconf-set-selections syntax), relative to the profile.
    #[serde(default)]
    pub preseed: Option<String>,
    /// Packages to install on top of the minbase variant.
    pub packages: Vec<PackageName>,
    /// Packages marked installed without their files: a stub package
    /// (`flypack-provided`) provides them, so what depends on them installs
    /// without them. For a dependency nothing uses, such as the `ansible`
    /// collections that Debian's python3-ansible-runner pulls in.
    #[serde(default)]
    pub provided: Vec<PackageName>,
}

fn yes() -> bool {
    true
}

/// `[[users]]`: a login user. There are no passwords: SSH keys only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: UnixName,
    /// Supplementary groups (must exist once packages are installed).
    #[serde(default)]
    pub groups: Vec<UnixName>,
    /// Passwordless sudo (there is no password to type).
    #[serde(default)]
    pub sudo: bool,
    /// Login shell.
    #[serde(default = "default_shell")]
    pub shell: String,
    /// SSH public keys allowed to log in.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<SshPublicKey>,
}

fn default_shell() -> String {
    "/bin/bash".into()
}

/// `[disk]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    /// Whole image size; root gets what the other partitions leave.
    pub size: Size,
    /// BIOS boot partition (GRUB core image).
    #[serde(default = "one_mib")]
    pub bios_boot: Size,
    /// EFI system partition.
    pub esp: Size,
    /// Seed partition (per-unit config).
    pub seed: Size,
}

fn one_mib() -> Size {
    Size(1 << 20)
}

/// `[boot]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// GRUB menu timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    /// Serial console (`ttyS0,115200n8`); the kernel also logs to the VGA console.
    #[serde(default = "default_serial")]
    pub serial_console: String,
    /// Extra kernel command line arguments.
    #[serde(default)]
    pub cmdline: Vec<String>,
}

impl Default for Boot {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            serial_console: default_serial(),
            cmdline: Vec::new(),
        }
    }
}

fn default_timeout() -> u32 {
    2
}
fn default_serial() -> String {
    "ttyS0,115200n8".into()
}

/// `[outputs]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Formats to write; `raw` is always written.
    #[serde(default = "default_formats")]
    pub formats: Vec<Format>,
}

impl Default for Outputs {
    fn default() -> Self {
        Self {
            formats: default_formats(),
        }
    }
}

fn default_formats() -> Vec<Format> {
    vec![Format::Raw]
}

/// A validated profile: the only thing a build accepts.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// The profile file.
    pub path: PathBuf,
    /// SHA-256 of the profile file.
    pub digest: String,
    /// Image name.
    pub name: ImageName,
    /// Description.
    pub description: String,
    /// Debian settings.
    pub debian: Debian,
    /// Overlay directories (absolute).
    pub overlays: Vec<PathBuf>,
    /// The default unit config (TOML text, validated).
    pub unit_defaults: String,
    /// The baked-in fleet inventory (TOML text, validated).
    pub fleet: Option<String>,
    /// The unit part of the fleet's backup key (TOML text, validated).
    pub backup_key: Option<String>,
    /// The Ansible folder for the web app's jobs (absolute).
    pub ansible: Option<PathBuf>,
    /// Users.
    pub users: Vec<User>,
    /// Disk sizes, root computed.
    pub disk: DiskSizes,
    /// Boot settings.
    pub boot: Boot,
    /// Output formats.
    pub outputs: Outputs,
    /// The container stack.
    pub stack: Option<Stack>,
    /// The USB installer.
    pub installer: Installer,
    /// The security gate.
    pub security: Security,
}

/// Validated `[debian]`.
#[derive(Debug, Clone, Serialize)]
pub struct Debian {
    /// Suite.
    pub suite: String,
    /// Architecture.
    pub architecture: String,
    /// Mirror.
    pub mirror: MirrorUrl,
    /// Security mirror.
    pub security_mirror: Option<MirrorUrl>,
    /// Include SUITE-updates.
    pub updates: bool,
    /// Components.
    pub components: Vec<String>,
    /// Snapshot pin.
    pub snapshot: Option<Snapshot>,
    /// Preseed file and its content.
    pub preseed: Option<Preseed>,
    /// Packages, sorted and unique.
    pub packages: Vec<PackageName>,
    /// Packages the stub provides instead, sorted and unique.
    pub provided: Vec<PackageName>,
}

/// A checked preseed file.
#[derive(Debug, Clone, Serialize)]
pub struct Preseed {
    /// Path (absolute).
    pub path: PathBuf,
    /// Content.
    pub text: String,
}

/// Disk sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskSizes {
    /// Whole image.
    pub total: u64,
    /// BIOS boot partition.
    pub bios_boot: u64,
    /// ESP.
    pub esp: u64,
    /// Seed partition.
    pub seed: u64,
    /// Root partition (what is left).
    pub root: u64,
}

impl Debian {
    /// The sources mmdebstrap gets, one `deb URL SUITE COMPONENTS` line each.
    pub fn sources(&self) -> Vec<String> {
        let comps = self.components.join(" ");
        let (main, security) = match &self.snapshot {
            Some(ts) => (
                format!("http://snapshot.debian.org/archive/debian/{ts}/"),
                self.security_mirror
                    .as_ref()
                    .map(|_| format!("http://snapshot.debian.org/archive/debian-security/{ts}/")),
            ),
            None => (
                self.mirror.as_str().to_string(),
                self.security_mirror.as_ref().map(|m| m.as_str().to_string()),
            ),
        };
        let mut out = vec![format!("deb {main} {} {comps}", self.suite)];
        if self.updates {
            out.push(format!("deb {main} {}-updates {comps}", self.suite));
        }
        if let Some(sec) = security {
            out.push(format!("deb {sec} {}-security {comps}", self.suite));
        }
        out
    }

    /// The main archive URL actually used (the snapshot one when pinned).
    pub fn effective_mirror(&self) -> String {
        match &self.snapshot {
            Some(ts) => format!("http://snapshot.debian.org/archive/debian/{ts}/"),
            None => self.mirror.as_str().to_string(),
        }
    }
}

impl Profile {
    /// Reads, parses and validates a profile file.
    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading profile {}: check the path (the default profile is {DEFAULT_PROFILE})",
                path.display()
            )
        })?;
        let raw: RawProfile = parse_toml(path, &text)?;
        let profile = validate(path, &text, raw)?;
        Ok(profile)
    }
}

/// Checks that span several keys or other files. Collects every problem.
pub fn validate(path: &Path, text: &str, raw: RawProfile) -> Result<Profile, ConfigErrors> {
    let mut errs = Vec::new();
    let mut err = |key: &str, msg: String| errs.push(ConfigError::new(path, key, msg));
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };

    if raw.version != PROFILE_SCHEMA {
        err(
            "version",
            format!(
                "expected {PROFILE_SCHEMA} (the profile schema this builder reads), found {}",
                raw.version
            ),
        );
    }
    let d = &raw.debian;
    if d.suite != "bookworm" {
        err(
            "debian.suite",
            format!(
                "expected \"bookworm\" (Flypack images are Debian 12), found {:?}",
                d.suite
            ),
        );
    }
    if d.architecture != "amd64" {
        err(
            "debian.architecture",
            format!(
                "expected \"amd64\" (the only architecture Flypack builds), found {:?}",
                d.architecture
            ),
        );
    }
    const COMPONENTS: &[&str] = &["main", "contrib", "non-free", "non-free-firmware"];
    for (i, c) in d.components.iter().enumerate() {
        if !COMPONENTS.contains(&c.as_str()) {
            err(
                &format!("debian.components[{i}]"),
                format!(
                    "{c:?} is not a Debian component: expected one of {}",
                    COMPONENTS.join(", ")
                ),
            );
        }
    }
    if !d.components.iter().any(|c| c == "main") {
        err("debian.components", "must include \"main\"".into());
    }
    let mut packages = d.packages.clone();
    packages.sort();
    for w in packages.windows(2) {
        if w[0] == w[1] {
            err("debian.packages", format!("{:?} is listed twice", w[0].as_str()));
        }
    }
    packages.dedup();
    let bare: Vec<&str> = packages
        .iter()
        .map(|p| p.as_str().split(['=', '/', ':']).next().unwrap_or(""))
        .collect();
    if !bare.iter().any(|p| p.starts_with("linux-image-")) {
        err(
            "debian.packages",
            "no kernel: add a linux-image package (e.g. \"linux-image-amd64\")".into(),
        );
    }
    for (pkg, why) in REQUIRED_PACKAGES {
        if !bare.contains(pkg) {
            err("debian.packages", format!("missing {pkg:?}: {why}; add it"));
        }
    }
    let mut provided = d.provided.clone();
    provided.sort();
    provided.dedup();
    for (i, p) in d.provided.iter().enumerate() {
        let name = p.as_str();
        let key = format!("debian.provided[{i}]");
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        {
            err(
                &key,
                format!("{name:?}: expected a bare package name (no version, suite or architecture)"),
            );
        } else if bare.contains(&name) {
            err(
                &key,
                format!("{name:?} is also in debian.packages: a package is installed or provided, not both"),
            );
        } else if REQUIRED_PACKAGES.iter().any(|(r, _)| *r == name) || name.starts_with("linux-image-") {
            err(&key, format!("{name:?} is needed on every unit: it cannot be left out"));
        }
    }
    let preseed = match &d.preseed {
        None => None,
        Some(rel) => {
            let p = base.join(rel);
            match std::fs::read_to_string(&p) {
                Err(e) => {
                    err(
                        "debian.preseed",
                        format!("cannot read {}: {e}; the path is relative to the profile", p.display()),
                    );
                    None
                }
                Ok(text) => {
                    for (n, line) in text.lines().enumerate() {
                        if let Err(m) = check_preseed_line(line) {
                            err("debian.preseed", format!("{}:{}: {m}", p.display(), n + 1));
                        }
                    }
                    Some(Preseed { path: p, text })
                }
            }
        }
    };

    let mut overlays = Vec::new();
    for (i, rel) in raw.overlays.iter().enumerate() {
        let p = base.join(rel);
        if p.is_dir() {
            overlays.push(p);
        } else {
            err(
                &format!("overlays[{i}]"),
                format!(
                    "{} is not a directory; overlay paths are relative to the profile",
                    p.display()
                ),
            );
        }
    }

    let mut read_checked = |key: &str, rel: &str, fleet: bool| -> Option<String> {
        let p = base.join(rel);
        match std::fs::read_to_string(&p) {
            Err(e) => {
                err(
                    key,
                    format!("cannot read {}: {e}; the path is relative to the profile", p.display()),
                );
                None
            }
            Ok(text) => {
                let res = if fleet {
                    flypack_contracts::unit::parse_fleet(&p, &text).map(|_| ())
                } else {
                    flypack_contracts::unit::parse_unit(&p, &text).map(|_| ())
                };
                match res {
                    Ok(()) => Some(text),
                    Err(es) => {
                        for e in es.0 {
                            err(key, e.to_string());
                        }
                        None
                    }
                }
            }
        }
    };
    let unit_defaults = match &raw.unit_defaults {
        Some(rel) => read_checked("unit_defaults", rel, false).unwrap_or_default(),
        None => format!(
            "# Defaults for units with no unit.toml on their seed and no fleet entry:\n\
             # DHCP on every wired NIC (the image's fallback network config).\n\
             version = 1\nhostname = \"{}\"\n",
            raw.name
        ),
    };
    let fleet = raw.fleet.as_ref().and_then(|rel| read_checked("fleet", rel, true));
    let ansible = raw.ansible.as_ref().and_then(|rel| {
        let p = base.join(rel);
        if !p.join("playbooks").is_dir() {
            err(
                "ansible",
                format!(
                    "{} is not an Ansible folder (no playbooks/ in it); the path is relative to the profile",
                    p.display()
                ),
            );
            return None;
        }
        let missing: Vec<&str> = ["ansible-core", "python3-ansible-runner"]
            .into_iter()
            .filter(|m| {
                !d.packages
                    .iter()
                    .any(|p| p.as_str().split(['=', '/', ':']).next() == Some(*m))
            })
            .collect();
        if !missing.is_empty() {
            err(
                "ansible",
                format!(
                    "the unit runs the playbooks with ansible-runner: add {} to debian.packages",
                    missing.join(" and ")
                ),
            );
        }
        Some(p)
    });
    let backup_key = raw.backup.as_ref().and_then(|b| {
        let p = base.join(&b.key);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                err(
                    "backup.key",
                    format!("cannot read {}: {e}; the path is relative to the profile", p.display()),
                );
                return None;
            }
        };
        if flypack_engine::backup::FleetKey::load(&p).is_ok() {
            err(
                "backup.key",
                format!(
                    "{} is the fleet key itself (it decrypts every backup) and must never go into an image: \
                     give its unit part (NAME.unit.toml, `builder backup-key unit`)",
                    p.display()
                ),
            );
            return None;
        }
        match flypack_engine::backup::UnitKey::parse(&text) {
            Ok(k) => Some(k.to_toml()),
            Err(e) => {
                err("backup.key", format!("{}: {e:#}", p.display()));
                None
            }
        }
    });

    let mut names: Vec<&str> = Vec::new();
    for (i, u) in raw.users.iter().enumerate() {
        if u.name.as_str() == "root" {
            err(
                &format!("users[{i}].name"),
                "\"root\" cannot be a profile user: root has no login; give a named user sudo = true".into(),
            );
        }
        if names.contains(&u.name.as_str()) {
            err(
                &format!("users[{i}].name"),
                format!("{:?} is listed twice", u.name.as_str()),
            );
        }
        names.push(u.name.as_str());
        if !u.shell.starts_with('/') {
            err(
                &format!("users[{i}].shell"),
                format!("{:?} is not an absolute path (e.g. \"/bin/bash\")", u.shell),
            );
        }
    }

    let mib = 1u64 << 20;
    let k = &raw.disk;
    for (key, s) in [
        ("disk.size", k.size),
        ("disk.bios_boot", k.bios_boot),
        ("disk.esp", k.esp),
        ("disk.seed", k.seed),
    ] {
        if s.0 % mib != 0 {
            err(
                key,
                format!("{s} is not a whole number of MiB (partitions are MiB-aligned)"),
            );
        }
    }
    if k.bios_boot.0 < mib {
        err(
            "disk.bios_boot",
            "expected at least 1MiB (GRUB's core image lives there)".into(),
        );
    }
    if k.esp.0 < 64 * mib {
        err(
            "disk.esp",
            format!(
                "{} is too small: expected at least 64MiB (FAT32, as firmware expects of an ESP)",
                k.esp
            ),
        );
    }
    if !(4 * mib..=256 * mib).contains(&k.seed.0) {
        err(
            "disk.seed",
            format!(
                "{}: expected 4MiB to 256MiB (it holds unit.toml and what a restore needs)",
                k.seed
            ),
        );
    }
    // 1 MiB before the first partition, 1 MiB at the end for the backup GPT.
    let fixed = 2 * mib + k.bios_boot.0 + k.esp.0 + k.seed.0;
    let root = k.size.0.saturating_sub(fixed);
    if root < (1 << 30) {
        err(
            "disk.size",
            format!(
                "{} leaves {} for the root filesystem: expected at least 1GiB; raise disk.size",
                k.size,
                Size(root)
            ),
        );
    }
    if !matches!(raw.installer.choose.as_str(), "only" | "smallest" | "largest") {
        err(
            "installer.choose",
            format!(
                "{:?}: expected \"only\", \"smallest\" or \"largest\"",
                raw.installer.choose
            ),
        );
    }
    if raw.installer.cancel_seconds > 300 {
        err(
            "installer.cancel_seconds",
            format!("{}: expected at most 300", raw.installer.cancel_seconds),
        );
    }
    if raw.boot.timeout > 60 {
        err(
            "boot.timeout",
            format!(
                "{} seconds: expected at most 60 (the unit must boot unattended)",
                raw.boot.timeout
            ),
        );
    }
    for (i, a) in raw.boot.cmdline.iter().enumerate() {
        if a.is_empty() || a.contains(char::is_whitespace) || a.starts_with("root=") || a.starts_with("console=") {
            err(
                &format!("boot.cmdline[{i}]"),
                format!("{a:?}: expected one argument without spaces; root= and console= are set by the builder"),
            );
        }
    }

    let stack = raw.stack.as_ref().and_then(|s| {
        let mut ok = true;
        let mut e = |key: String, msg: String| {
            ok = false;
            errs.push(ConfigError::new(path, key, msg));
        };
        let file = base.join(&s.compose);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(x) => {
                e("stack.compose".into(), format!("cannot read {}: {x}; the path is relative to the profile", file.display()));
                return None;
            }
        };
        let parsed = match flypack_engine::compose::parse(&file, &text, &s.profiles) {
            Ok(p) => Some(p),
            Err(es) => {
                for x in es.0 {
                    e("stack.compose".into(), x.to_string());
                }
                None
            }
        };
        let mut images = Vec::new();
        let mut refs = std::collections::BTreeSet::new();
        for (i, img) in s.images.iter().enumerate() {
            let k = format!("stack.images[{i}]");
            if !refs.insert(img.reference.clone()) {
                e(format!("{k}.reference"), format!("{:?} is listed twice", img.reference));
            }
            let built = !img.packages.is_empty() || !img.binaries.is_empty();
            let sources = [built, img.archive.is_some(), img.from_docker].iter().filter(|x| **x).count();
            if sources != 1 {
                e(k.clone(), "give exactly one source: packages and/or binaries, archive, or from_docker = true".into());
                continue;
            }
            if let Some(a) = &img.archive {
                let p = base.join(a);
                if !p.is_file() {
                    e(format!("{k}.archive"), format!("{} not found; make it with `docker save {} -o FILE`", p.display(), img.reference));
                }
                images.push(StackImage::Archive { reference: img.reference.clone(), path: p });
            } else if img.from_docker {
                images.push(StackImage::Docker { reference: img.reference.clone() });
            } else if !img.binaries.is_empty() {
                if !img.packages.is_empty() {
                    e(k.clone(), "binaries and packages cannot be combined in one image".into());
                }
                for (j, b) in img.binaries.iter().enumerate() {
                    if b != "flypack-exporter" {
                        e(format!("{k}.binaries[{j}]"), format!("{b:?}: the builder ships only flypack-exporter"));
                    }
                }
                images.push(StackImage::Binaries { reference: img.reference.clone(), binaries: img.binaries.clone() });
            } else {
                images.push(StackImage::Debian { reference: img.reference.clone(), packages: img.packages.iter().map(ToString::to_string).collect() });
            }
        }
        let parsed = parsed?;
        for need in parsed.images() {
            if !refs.contains(&need) {
                e("stack.images".into(), format!("the compose file uses {need:?} and no [[stack.images]] provides it: add it (packages, archive or from_docker)"));
            }
        }
        ok.then(|| Stack {
            compose: file,
            compose_text: text,
            project: parsed.project.clone(),
            profiles: s.profiles.clone(),
            base_packages: s.base_packages.iter().map(ToString::to_string).collect(),
            images,
        })
    });

    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    Ok(Profile {
        path: path.to_path_buf(),
        digest: sha256_hex(text.as_bytes()),
        name: raw.name,
        description: raw.description,
        debian: Debian {
            suite: d.suite.clone(),
            architecture: d.architecture.clone(),
            mirror: d.mirror.clone(),
            security_mirror: d.security_mirror.clone(),
            updates: d.updates,
            components: d.components.clone(),
            snapshot: d.snapshot.clone(),
            preseed,
            packages,
            provided,
        },
        overlays,
        unit_defaults,
        fleet,
        backup_key,
        ansible,
        users: raw.users,
        disk: DiskSizes {
            total: k.size.0,
            bios_boot: k.bios_boot.0,
            esp: k.esp.0,
            seed: k.seed.0,
            root,
        },
        boot: raw.boot,
        outputs: raw.outputs,
        stack,
        installer: raw.installer,
        security: raw.security,
    })
}

/// Checks one line of a debconf-set-selections file.
fn check_preseed_line(line: &str) -> Result<(), String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(());
    }
    const TYPES: &[&str] = &[
        "string",
        "boolean",
        "select",
        "multiselect",
        "note",
        "text",
        "password",
        "title",
        "error",
        "seen",
    ];
    let mut f = t.split_whitespace();
    let (owner, question, kind) = (f.next(), f.next(), f.next());
    match (owner, question, kind) {
        (Some(_), Some(q), Some(k)) if q.contains('/') && TYPES.contains(&k) => {
            if k == "password" {
                return Err("password questions are not allowed: Flypack images have no passwords".into());
            }
            if k == "boolean" {
                let v: Vec<&str> = f.collect();
                if v != ["true"] && v != ["false"] {
                    return Err(format!("boolean value must be true or false, found {:?}", v.join(" ")));
                }
            }
            Ok(())
        }
        _ => Err(format!(
            "expected \"OWNER QUESTION TYPE VALUE\" with TYPE one of {}, found {t:?}",
            TYPES.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests;
