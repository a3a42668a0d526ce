//! Command-line interface (clap derive; no logic here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::qemu::{Accel, Firmware, Forward};

/// Builds, boots, flashes and restores Flypack appliance images.
///
/// A profile (images/*.toml) becomes a bootable Debian 12 disk image with our
/// overlay, the firstboot service and a seed partition for per-unit config.
/// Run `builder doctor` first on a new machine.
#[derive(Debug, Parser)]
#[command(name = "builder", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Print progress as JSON lines on stdout (for machines).
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v: every external command; -vv: everything).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a profile.
    ///
    /// Writes NAME.img (raw, sparse), NAME.manifest.json and SHA256SUMS into
    /// the output folder, under temporary names renamed at the very end: an
    /// interrupted or failed build leaves nothing under the final names. The
    /// root filesystem is cached by a digest of its inputs, so rebuilding
    /// after an overlay change takes seconds, not minutes.
    Build(BuildArgs),
    /// Check profiles, unit configs and fleet inventories without building.
    ///
    /// The kind of each file is told by its content: [debian] makes a
    /// profile, [[units]] a fleet inventory, hostname a unit config.
    Validate(ValidateArgs),
    /// Boot an image in QEMU, on a copy-on-write overlay (the image is never
    /// changed), with two NICs like a flypack server: management (QEMU user
    /// networking, where --forward maps ports) and media (isolated).
    ///
    /// The serial console is shown and logged. With --expect-ready, exits
    /// when firstboot prints its FLYPACK-STATUS line, with firstboot's exit
    /// codes: 0 GO, 1 NO-GO, 2 GO with warnings; 124 if the line did not
    /// appear in time, 125 if QEMU failed.
    Boot(BootArgs),
    /// List missing host tools and the apt-get command that installs them.
    Doctor,
    /// Write an image to a USB stick, a disk or a file: only the blocks that
    /// hold data (the block map built beside the image), first MiB last, then
    /// read everything back and check it. Compressed (.zst) images stream.
    ///
    /// Refuses a mounted or busy device, the disk holding this system, and a
    /// device far larger than a USB stick (unless --allow-large).
    Flash(FlashArgs),
    /// Bring a dead unit back from its backup (`firstboot backup`): checks the
    /// whole archive first, then writes the image and the backup to a disk or
    /// file; on first boot the unit gets its identity and data back.
    Restore(RestoreArgs),
    /// Build only the stack's container images (docker-loadable archives) and
    /// a stack config pointing at them, e.g. to bring the stack up on this
    /// machine with `firstboot stack up --config DIR/stack.json`.
    Images(ImagesArgs),
    /// Write a unit's config (unit.toml, fleet.toml) into an image's seed
    /// partition, without root or mounting. The files are validated first.
    Customize(CustomizeArgs),
    /// Make and manage the fleet's backup key: backups are encrypted to it
    /// (only its holder can read them) and authenticated by it (an archive
    /// made or altered without it is refused by every restore).
    #[command(subcommand)]
    BackupKey(BackupKeyCommand),
    /// Make the fleet's CA for the units' web apps: a phone installs its
    /// certificate once and then trusts every unit it signed (`customize` or
    /// `flash` with --fleet-ca). Its key never goes on a unit.
    #[command(subcommand)]
    FleetCa(FleetCaCommand),
    /// Check a profile's packages against the suite's security (and updates)
    /// index, as `builder build` does before it builds: lists every package
    /// with a newer version there, and the waivers that let one through.
    /// Exits 1 when the build would be refused.
    SecurityCheck(SecurityCheckArgs),
    /// Write the fleet's Ansible inventory from fleet inventories (one file
    /// per flypack): every unit under its hostname, reached at its management
    /// address, in the groups flypack_NAME, role_ROLE and segment_NET (its
    /// management subnet, or segment_dhcp). The outer playbooks of `ansible/`
    /// run against it; regenerate it when a fleet file changes, never edit it.
    Inventory(InventoryArgs),
    /// Write the man pages (builder.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `builder security-check`.
#[derive(Debug, Args)]
pub struct SecurityCheckArgs {
    /// The image profile.
    #[arg(default_value = crate::profile::DEFAULT_PROFILE)]
    pub profile: PathBuf,

    /// Cache folder [default: as for build].
    #[arg(long, env = "FLYPACK_CACHE")]
    pub cache_dir: Option<PathBuf>,
}

/// `builder fleet-ca`.
#[derive(Debug, Subcommand)]
pub enum FleetCaCommand {
    /// Make a new fleet CA: FILE (its certificate and key; secret, mode
    /// 0600) and FILE with the extension .crt (the certificate phones install).
    New {
        /// The fleet's name, in the CA's name ("Flypack fleet CA (NAME)").
        #[arg(long)]
        name: String,
        /// Where to write it.
        #[arg(long, default_value = "fleet-ca.pem")]
        out: PathBuf,
    },
    /// Sign a server certificate for a machine the units talk to (the
    /// central monitoring's vmauth): units flashed with this fleet CA trust
    /// it. Writes DIR/tls.crt (the chain) and DIR/tls.key (secret, 0600);
    /// running it again renews them.
    Server {
        /// The fleet CA file (`builder fleet-ca new`).
        #[arg(long, default_value = "fleet-ca.pem")]
        ca: PathBuf,
        /// A DNS name the units use for it (repeatable), as in their unit
        /// config's [central] url.
        #[arg(long = "name", value_name = "DNS_NAME")]
        names: Vec<String>,
        /// An IP address the units use for it (repeatable).
        #[arg(long = "address", value_name = "IP")]
        addresses: Vec<std::net::IpAddr>,
        /// The folder to write tls.crt and tls.key into (for the central:
        /// compose/central/vmauth/tls).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a fleet CA's SHA-256 fingerprint (what a phone shows before it trusts it).
    Show {
        /// The fleet CA file.
        #[arg(default_value = "fleet-ca.pem")]
        ca: PathBuf,
    },
}

/// `builder backup-key`.
#[derive(Debug, Subcommand)]
pub enum BackupKeyCommand {
    /// Make a new fleet backup key: KEY (secret: it decrypts every backup;
    /// keep it on the engineer's laptop and a copy offline) and
    /// KEY.unit.toml, its unit part (recipient and authentication key) for
    /// the profile's [backup] key or a unit's seed (--backup-key).
    New {
        /// Where to write the key (mode 0600); the unit part goes beside it.
        #[arg(long, default_value = "fleet-backup.key")]
        out: PathBuf,
    },
    /// Write the unit part of one or more keys (rotation: units encrypt to
    /// every recipient and accept every key's tag; the first key tags new
    /// backups).
    Unit {
        /// Fleet keys (or unit parts), the newest first.
        #[arg(required = true)]
        keys: Vec<PathBuf>,
        /// Where to write the unit part (mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Decrypt and check a backup archive (every digest and the fleet's tag),
    /// writing nothing.
    Verify {
        /// The archive (HOST-TIME.flypack-backup.age).
        archive: PathBuf,
        /// The fleet key (repeatable: old keys after a rotation).
        #[arg(long = "key", env = "FLYPACK_BACKUP_KEY", required = true, value_delimiter = ':')]
        keys: Vec<PathBuf>,
    },
}

/// `builder flash`.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// The image (NAME.img, or NAME.img.zst).
    pub image: PathBuf,

    /// The target: a block device (/dev/sdX) or a file.
    pub target: PathBuf,

    /// The block map [default: NAME.bmap beside the image; mapped on the fly for a raw image without one].
    #[arg(long)]
    pub bmap: Option<PathBuf>,

    /// Allow a target larger than 256 GiB (not a USB stick).
    #[arg(long)]
    pub allow_large: bool,

    /// Also write this unit config into the seed partition.
    #[arg(long)]
    pub unit: Option<PathBuf>,

    /// Also write this fleet inventory into the seed partition.
    #[arg(long)]
    pub fleet: Option<PathBuf>,

    /// Also write the unit part of this fleet backup key into the seed partition.
    #[arg(long, value_name = "KEY")]
    pub backup_key: Option<PathBuf>,

    /// Also sign a web app certificate for the --unit config's names with this
    /// fleet CA (`builder fleet-ca new`) and write it into the seed partition.
    #[arg(long, value_name = "CA", requires = "unit")]
    pub fleet_ca: Option<PathBuf>,

    /// Also write the password the unit logs in to the central monitoring
    /// with (the file's one line; the user is the unit config's [central]
    /// flypack) as central-password.
    #[arg(long, value_name = "FILE")]
    pub central_password: Option<PathBuf>,
}

/// `builder restore`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["device", "output"])))]
pub struct RestoreArgs {
    /// The backup archive (HOST-TIME.flypack-backup.age, from `firstboot backup`).
    #[arg(long, value_name = "ARCHIVE")]
    pub backup: PathBuf,

    /// The fleet backup key that decrypts it (repeatable, or colon-separated
    /// in FLYPACK_BACKUP_KEY: old keys after a rotation).
    #[arg(long = "key", env = "FLYPACK_BACKUP_KEY", required = true, value_delimiter = ':')]
    pub keys: Vec<PathBuf>,

    /// The image to restore onto [default: out/IMAGE.img, IMAGE named in the backup].
    #[arg(long)]
    pub image: Option<PathBuf>,

    /// Write to this block device (the unit's disk, or a USB stick).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<PathBuf>,

    /// Write to this image file instead (renamed into place only when
    /// complete), with its block map beside it (NAME.bmap); FILE.zst is
    /// written compressed (what `firstboot reflash` takes).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Allow a device larger than 256 GiB (a server's disk rather than a stick).
    #[arg(long)]
    pub allow_large: bool,
}

/// `builder images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// The image profile.
    #[arg(default_value = crate::profile::DEFAULT_PROFILE)]
    pub profile: PathBuf,

    /// Output folder.
    #[arg(long, short)]
    pub out: PathBuf,

    /// Cache folder [default: as for build].
    #[arg(long, env = "FLYPACK_CACHE")]
    pub cache_dir: Option<PathBuf>,

    /// The firstboot binary [default: next to this builder].
    #[arg(long, env = "FLYPACK_FIRSTBOOT")]
    pub firstboot: Option<PathBuf>,

    /// The flypack-exporter binary [default: next to this builder].
    #[arg(long, env = "FLYPACK_EXPORTER")]
    pub exporter: Option<PathBuf>,

    /// The flypack-web binary (the unit's web app) [default: next to this builder].
    #[arg(long, env = "FLYPACK_WEB")]
    pub webapp: Option<PathBuf>,
}

/// `builder customize`.
#[derive(Debug, Args)]
pub struct CustomizeArgs {
    /// The image (raw) or disk to customise.
    pub image: PathBuf,

    /// The unit config to write as unit.toml.
    #[arg(long)]
    pub unit: Option<PathBuf>,

    /// The fleet inventory to write as fleet.toml.
    #[arg(long)]
    pub fleet: Option<PathBuf>,

    /// The fleet's backup key (its unit part is written as backup-key.toml;
    /// a fleet key's secret half never goes on the seed).
    #[arg(long, value_name = "KEY")]
    pub backup_key: Option<PathBuf>,

    /// Sign a web app certificate for the --unit config's names with this
    /// fleet CA (`builder fleet-ca new`) and write it, with the CA's
    /// certificate, as tls-ca.crt, tls-unit.crt and tls-unit.key (the CA's
    /// key never goes on the seed).
    #[arg(long, value_name = "CA", requires = "unit")]
    pub fleet_ca: Option<PathBuf>,

    /// Write the password the unit logs in to the central monitoring with
    /// (the file's one line; the user is the unit config's [central]
    /// flypack) as central-password.
    #[arg(long, value_name = "FILE")]
    pub central_password: Option<PathBuf>,

    /// Remove unit.toml, fleet.toml, backup-key.toml, central-password and the TLS files from the seed (before writing new ones).
    #[arg(long)]
    pub clear: bool,
}

/// `builder build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The image profile.
    #[arg(default_value = crate::profile::DEFAULT_PROFILE)]
    pub profile: PathBuf,

    /// Output folder.
    #[arg(long, short, default_value = "out")]
    pub out: PathBuf,

    /// Cache folder for packages and root filesystems
    /// [default: $FLYPACK_CACHE, else $XDG_CACHE_HOME/flypack, else ~/.cache/flypack].
    #[arg(long, env = "FLYPACK_CACHE")]
    pub cache_dir: Option<PathBuf>,

    /// The firstboot binary to install [default: next to this builder].
    #[arg(long, env = "FLYPACK_FIRSTBOOT")]
    pub firstboot: Option<PathBuf>,

    /// The flypack-exporter binary for the stack [default: next to this builder].
    #[arg(long, env = "FLYPACK_EXPORTER")]
    pub exporter: Option<PathBuf>,

    /// The flypack-web binary to install (the unit's web app) [default: next to this builder].
    #[arg(long, env = "FLYPACK_WEB")]
    pub webapp: Option<PathBuf>,

    /// Print the build plan as JSON and stop.
    #[arg(long)]
    pub dry_run: bool,

    /// Rebuild the root filesystem even if a cached one matches.
    #[arg(long)]
    pub refresh_rootfs: bool,

    /// Boot the image in QEMU once built (like `builder boot IMAGE --expect-ready 600`).
    #[arg(long)]
    pub boot: bool,
}

/// `builder inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Fleet inventories (fleet.toml), one per flypack.
    #[arg(required = true)]
    pub fleets: Vec<PathBuf>,

    /// Write it here (YAML, replaced only once complete) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// The user Ansible logs in as (the image's sudo user).
    #[arg(long, default_value = "flypack")]
    pub user: String,

    /// Also write each unit's config into DIR as HOSTNAME.toml, for the
    /// config push playbook (playbooks/fleet/config-push.yml).
    #[arg(long, value_name = "DIR")]
    pub unit_configs: Option<PathBuf>,
}

/// `builder validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `builder boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// The image (raw or qcow2).
    pub image: PathBuf,

    /// Firmware to boot with.
    #[arg(long, value_enum, default_value_t = Firmware::Bios)]
    pub firmware: Firmware,

    /// Exit once the FLYPACK-STATUS line appears; fail after SECS seconds without it.
    #[arg(long, value_name = "SECS")]
    pub expect_ready: Option<u64>,

    /// After the status line, keep the VM running until Ctrl-C.
    #[arg(long, requires = "expect_ready")]
    pub keep_running: bool,

    /// Forward 127.0.0.1:HOST to the guest's management NIC port GUEST (repeatable), e.g. 2222:22.
    #[arg(long, value_name = "HOST:GUEST")]
    pub forward: Vec<Forward>,

    /// Let the guest reach port HOST on this machine's 127.0.0.1 at
    /// 10.0.2.100:GUEST (repeatable), e.g. 8427:18427 for a central
    /// monitoring stack run on the laptop. Each connection runs `socat`
    /// (Debian's socat package). The guest reaches nothing else.
    #[arg(long, value_name = "GUEST:HOST", conflicts_with = "mgmt_tap")]
    pub guest_forward: Vec<crate::qemu::GuestForward>,

    /// Accelerator. TCG (software) works everywhere; use kvm where /dev/kvm works.
    #[arg(long, value_enum, env = "FLYPACK_ACCEL", default_value = "tcg")]
    pub accel: Accel,

    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,

    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,

    /// Virtual disk size in GiB (the root filesystem grows into it).
    #[arg(long, default_value_t = 8)]
    pub disk_gib: u64,

    /// Keep the guest's disk in this qcow2 file (reused when it exists: a
    /// second boot continues where the first stopped).
    #[arg(long)]
    pub overlay: Option<PathBuf>,

    /// Console log file [default: IMAGE.FIRMWARE.console.log].
    #[arg(long)]
    pub log: Option<PathBuf>,

    /// Do not copy the console to the terminal (it is still logged).
    #[arg(long, short)]
    pub quiet: bool,

    /// Attach a raw disk image as a USB stick (repeatable).
    #[arg(long, value_name = "IMAGE")]
    pub usb: Vec<PathBuf>,

    /// IMAGE is a USB installer (NAME-installer.img): attach it as a USB stick.
    /// Under UEFI it boots after the internal disks, as on a server set to
    /// boot its disks first (the stick while they are blank, the installed
    /// disk after the reboot); SeaBIOS only tries one hard disk, so under BIOS
    /// the stick boots first. Without --disk, one blank disk of --disk-gib.
    #[arg(long)]
    pub installer: bool,

    /// An internal disk: a raw file (created empty, --disk-gib large, when
    /// missing), optionally with the serial number the guest sees (repeatable).
    #[arg(long, value_name = "FILE[:SERIAL]")]
    pub disk: Vec<crate::qemu::ExtraDisk>,

    /// Exit 0 as soon as a console line contains TEXT (before any status line).
    #[arg(long, value_name = "TEXT", requires = "expect_ready")]
    pub until: Option<String>,

    /// Link the media NIC to another VM's: this one listens on 127.0.0.1:PORT.
    #[arg(long, value_name = "PORT", conflicts_with_all = ["media_connect", "media_tap"])]
    pub media_listen: Option<u16>,

    /// Plug the media NIC into a tap device of this name (QEMU makes it in
    /// the current network namespace; run builder boot inside one of yours).
    #[arg(long, value_name = "IFNAME", conflicts_with = "media_connect")]
    pub media_tap: Option<String>,

    /// Plug the management NIC into a tap device of this name instead of
    /// QEMU's user networking (no forwards: reach the guest from the
    /// namespace the tap is in).
    #[arg(long, value_name = "IFNAME", conflicts_with_all = ["forward", "nat"])]
    pub mgmt_tap: Option<String>,

    /// Link the media NIC to another VM's that listens on 127.0.0.1:PORT.
    #[arg(long, value_name = "PORT")]
    pub media_connect: Option<u16>,

    /// Let the guest reach the network beyond the VM through QEMU's NAT (DNS,
    /// NTP, gateways). Off by default: the guest reaches nothing but the
    /// forwards, as a unit at a venue with no internet.
    #[arg(long)]
    pub nat: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn build_defaults() {
        let cli = Cli::try_parse_from(["builder", "build"]).unwrap();
        let Command::Build(b) = cli.command else { panic!() };
        assert_eq!(b.profile, PathBuf::from("images/flypack.toml"));
        assert_eq!(b.out, PathBuf::from("out"));
        assert!(!b.dry_run && !b.boot);
    }

    #[test]
    fn boot_args() {
        let cli = Cli::try_parse_from([
            "builder",
            "boot",
            "out/flypack.img",
            "--firmware",
            "uefi",
            "--expect-ready",
            "300",
            "--forward",
            "2222:22",
            "--forward",
            "8080:80",
        ])
        .unwrap();
        let Command::Boot(b) = cli.command else { panic!() };
        assert_eq!(b.firmware, Firmware::Uefi);
        assert_eq!(b.expect_ready, Some(300));
        assert_eq!(b.forward.len(), 2);
        assert!(Cli::try_parse_from(["builder", "boot", "x.img", "--forward", "22"]).is_err());
        assert!(Cli::try_parse_from(["builder", "boot", "x.img", "--keep-running"]).is_err());
    }

    #[test]
    fn validate_needs_a_file() {
        assert!(Cli::try_parse_from(["builder", "validate"]).is_err());
    }
}
