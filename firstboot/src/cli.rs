//! Command-line interface (clap derive; no logic here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Provisions a freshly imaged Flypack server on its first boot and reports
/// GO / NO-GO.
///
/// `firstboot run` is started by systemd (flypack-firstboot.service) until
/// provisioning has finished once. `firstboot status` tells where things
/// stand; its exit code is the verdict: 0 GO, 1 NO-GO, 2 GO with warnings.
#[derive(Debug, Parser)]
#[command(name = "firstboot", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Act on the system under this directory instead of / (tests, images).
    #[arg(long, global = true, default_value = "/", hide = true)]
    pub root: PathBuf,

    /// Read the seed from this FAT image file instead of the boot disk's seed partition (tests).
    #[arg(long, global = true, hide = true)]
    pub seed: Option<PathBuf>,

    /// More log output.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run (or resume) provisioning, then announce the verdict.
    Run(RunArgs),
    /// Show the verdict. Exit code: 0 GO, 1 NO-GO, 2 GO with warnings.
    Status(StatusArgs),
    /// Show the unit config that applies to this unit.
    Config(ConfigArgs),
    /// Run the QA checks again (after re-cabling at a venue, say) and update the verdict.
    Qa(QaArgs),
    /// Apply, confirm or roll back network changes; --interactive to set up the network at the console.
    Network(NetworkArgs),
    /// Rotate the admins' SSH keys, kept only once a login with a new key confirms them.
    #[command(subcommand)]
    Access(AccessCommand),
    /// The container stack: bring it up (idempotent) or show its services.
    Stack(StackArgs),
    /// The central monitoring's password: hand a new one to this unit in service.
    #[command(subcommand)]
    Central(CentralCommand),
    /// Back the unit up (identity and data) into one encrypted, authenticated archive, or verify a decrypted one.
    Backup(BackupArgs),
    /// The unit's firewall (nftables, rendered from the unit config): show
    /// it, load it again, or check what the kernel has loaded.
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// USB installer (on the installer stick): choose the internal disk by the
    /// rules, write the appliance image onto it, verify, reboot into it.
    Install(InstallArgs),
    /// Write a new image over the disk this unit runs from and reboot into it
    /// (a rolling update: the laptop's `fleet/image-update.yml` drives it).
    Reflash(ReflashArgs),
    /// Write the man pages (firstboot.8 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `firstboot firewall`.
#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Print the ruleset the unit config in force gives (nothing is loaded).
    Show,
    /// Render the ruleset, check it, write /etc/nftables.conf and load it.
    Apply,
    /// What the kernel has loaded (exit 1 unless input and forward drop).
    Status,
}

/// `firstboot backup`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    /// Folder for the archive.
    #[arg(long, default_value = crate::backup::DEFAULT_DIR, value_name = "DIR")]
    pub out: PathBuf,

    /// Keep this many archives in the folder; older ones are removed once the new one verifies.
    #[arg(long, default_value_t = 7, value_name = "N")]
    pub keep: usize,

    /// Also copy the archive into DIR (a mounted USB disk), verified (repeatable).
    #[arg(long, value_name = "DIR")]
    pub copy_to: Vec<PathBuf>,

    /// Also copy the archive over SSH with scp to USER@HOST:PATH (repeatable).
    #[arg(long, value_name = "USER@HOST:PATH")]
    pub ssh: Vec<String>,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
}

/// `firstboot backup ...`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Re-check every digest of an archive; exit 0 only if all match.
    Verify {
        /// The archive.
        archive: PathBuf,
    },
    /// Remove all but the newest archives in the folder (by modification
    /// time), as a new backup does; other files are left alone.
    Prune {
        /// Folder of the archives.
        #[arg(long, default_value = crate::backup::DEFAULT_DIR, value_name = "DIR")]
        dir: PathBuf,
        /// How many newest archives to keep (1 or more).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        keep: u16,
        /// Print JSON: {"removed": [...], "keep": N}.
        #[arg(long)]
        json: bool,
    },
}

/// `firstboot install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The installer's settings, written by the builder.
    #[arg(long, default_value = crate::install::SETTINGS, value_name = "FILE")]
    pub settings: PathBuf,

    /// Only show which disk would be written and why.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not reboot when done.
    #[arg(long)]
    pub no_reboot: bool,
}

/// `firstboot stack`.
#[derive(Debug, Args)]
pub struct StackArgs {
    /// The stack config [default: /usr/share/flypack/stack.json, from the builder].
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: StackCommand,
}

/// `firstboot stack ...`.
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Load the images (checking their ids) and bring the stack up; changes only what differs.
    Up,
    /// Show each service's state. Exit 1 if a critical service is not healthy.
    Status,
    /// Restart one service's container and wait until it is up again
    /// (healthy, or running when it has no health check). Exit 1 if it is not.
    Restart {
        /// The service (as `firstboot stack status` names it).
        service: String,
    },
}

/// `firstboot run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Early boot, before systemd-networkd: only identity and network files
    /// (and roll back a network change that was never confirmed).
    #[arg(long)]
    pub early: bool,
}

/// `firstboot config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Say which source (seed, fleet, defaults) won and why.
    #[arg(long)]
    pub explain: bool,
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QaFormat {
    /// A table for humans.
    Table,
    /// The canonical JSON report.
    Json,
    /// JUnit XML.
    Junit,
}

/// `firstboot qa`.
#[derive(Debug, Args)]
pub struct QaArgs {
    /// Output format (the JSON and JUnit reports are also written to /var/lib/flypack/qa/).
    #[arg(long, value_enum, default_value = "table")]
    pub format: QaFormat,
}

/// `firstboot network`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NetworkArgs {
    /// Ask for the network settings on the console (for a technician in front
    /// of the box), apply them, and keep them only once confirmed.
    #[arg(long)]
    pub interactive: bool,

    /// Seconds to confirm an interactive change before it rolls back.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub confirm_within: u64,

    /// What to do.
    #[command(subcommand)]
    pub command: Option<NetworkCommand>,
}

/// `firstboot network ...`.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Apply a unit config's network settings (default: the config in force);
    /// verify them and roll back if they do not work.
    Apply {
        /// The unit config to apply (validated first).
        #[arg(long)]
        unit: Option<PathBuf>,
        /// Keep the change only if `firstboot network confirm` runs within SECS
        /// seconds; otherwise it rolls back by itself, even if this process is killed.
        #[arg(long, value_name = "SECS")]
        confirm_within: Option<u64>,
    },
    /// Keep the change applied with --confirm-within.
    Confirm,
    /// Undo the pending change (or the last apply).
    Rollback(RollbackArgs),
    /// Verify the network config in force, without changing anything.
    Verify,
}

/// `firstboot network rollback` and `firstboot access rollback`: what the
/// armed deadline runs (`crate::deadline`), and what an engineer may run.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Only if this change is still pending (used by the rollback timer).
    #[arg(long, value_name = "TOKEN")]
    pub if_pending: Option<String>,
    /// Wait this long first (the armed rollback where systemd does not run).
    #[arg(long, value_name = "SECS", hide = true)]
    pub after: Option<u64>,
}

impl RollbackArgs {
    /// Sleeps for `--after`, if given: the detached process that stands in
    /// for a systemd timer.
    pub fn wait(&self) {
        if let Some(secs) = self.after {
            std::thread::sleep(std::time::Duration::from_secs(secs));
        }
    }
}

/// `firstboot access ...`.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Put the `[access] ssh_authorized_keys` of this unit's config FILE in force for every admin.
    ///
    /// Only the keys are taken from FILE (the rest of the config in force
    /// stays; push it with `firstboot network apply`). The old keys files
    /// are saved and a rollback is armed: unless `firstboot access confirm`
    /// runs within SECS seconds, the old keys come back by themselves, even
    /// if this process is killed or the unit loses power. Confirm over a new
    /// SSH connection that logged in with a new key: that proves the keys
    /// work before the old ones are gone. Prints "unchanged" when these keys
    /// are in force already.
    Keys {
        /// This unit's config with the new keys (validated; its hostname must be this unit's).
        #[arg(long, value_name = "FILE")]
        unit: PathBuf,
        /// Seconds the confirm has before the old keys come back.
        #[arg(long, default_value_t = 90, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(10..=3600))]
        confirm_within: u64,
    },
    /// Keep the keys put in force with `firstboot access keys` (they go into the config in force).
    Confirm,
    /// Put the old keys back now.
    Rollback(RollbackArgs),
}

/// `firstboot central ...`.
#[derive(Debug, Subcommand)]
pub enum CentralCommand {
    /// Use the password in FILE ("-": standard input) to send metrics to the central.
    ///
    /// For a unit in service, whose seed brought the old password (or none).
    /// It is installed for vmagent-central and that service restarted
    /// (started, when the config's `[central]` was waiting for a password).
    /// It wins over the seed's password from now on, so the old one does not
    /// come back when the config stage runs again; a different password
    /// written onto the seed later wins over it. It is kept under
    /// /etc/flypack/secrets, in the backup. Prints "unchanged" when it is in
    /// use already. One line, 12 to 256 printable characters, no space.
    Password {
        /// The file with the password (a final newline is not part of it).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `firstboot status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status JSON (the same object as the FLYPACK-STATUS line).
    #[arg(long)]
    pub json: bool,

    /// Wait until provisioning has finished (or given up).
    #[arg(long)]
    pub wait: bool,

    /// With --wait: give up after SECS seconds (exit 1).
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub timeout: u64,

    /// Print the FLYPACK-STATUS line and refresh the login banner (used at boot).
    #[arg(long)]
    pub announce: bool,
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
    fn parses() {
        let c = Cli::try_parse_from(["firstboot", "status", "--json", "--wait"]).unwrap();
        let Command::Status(s) = c.command else { panic!() };
        assert!(s.json && s.wait && !s.announce);
        assert_eq!(c.root, PathBuf::from("/"));
        let c = Cli::try_parse_from(["firstboot", "--root", "/tmp/r", "run"]).unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        let c = Cli::try_parse_from([
            "firstboot",
            "network",
            "apply",
            "--unit",
            "u.toml",
            "--confirm-within",
            "60",
        ])
        .unwrap();
        let Command::Network(n) = c.command else { panic!() };
        assert!(matches!(
            n.command,
            Some(NetworkCommand::Apply {
                confirm_within: Some(60),
                ..
            })
        ));
        let c = Cli::try_parse_from(["firstboot", "network", "--interactive"]).unwrap();
        let Command::Network(n) = c.command else { panic!() };
        assert!(n.interactive && n.command.is_none());
        assert!(Cli::try_parse_from(["firstboot", "network", "--interactive", "confirm"]).is_err());
        assert!(Cli::try_parse_from(["firstboot", "frobnicate"]).is_err());
    }
}

/// `firstboot reflash`.
#[derive(Debug, Args)]
pub struct ReflashArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ReflashCommand,
}

/// `firstboot reflash ...`.
#[derive(Debug, Subcommand)]
pub enum ReflashCommand {
    /// Make room in memory for an image of BYTES (compressed): a private
    /// tmpfs at /run/flypack-reflash. The image cannot wait on the disk it
    /// is about to overwrite. Refused when memory is short.
    Stage {
        /// The size of the image file (and its block map) to be put there.
        #[arg(long, value_name = "BYTES")]
        bytes: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check IMAGE (raw or .zst, in memory) against its block map, make every
    /// filesystem read-only, write the image over this disk, read it back,
    /// and reboot into it. The image's own first boot restores the unit's
    /// backup when `builder restore --output` put one in it.
    Write {
        /// The image, in the staging folder (`reflash stage`).
        image: PathBuf,
        /// Its block map [default: beside it].
        #[arg(long)]
        bmap: Option<PathBuf>,
        /// Do not reboot when written (the running system stays read-only).
        #[arg(long)]
        no_reboot: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reboot AFTER seconds once told so on stdin (started by `write`).
    #[command(hide = true)]
    RebootWhenTold {
        /// Seconds between being told and rebooting.
        #[arg(long, default_value_t = crate::reflash::REBOOT_AFTER)]
        after: u64,
    },
}
