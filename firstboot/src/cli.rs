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
    Run,
    /// Show the verdict. Exit code: 0 GO, 1 NO-GO, 2 GO with warnings.
    Status(StatusArgs),
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
        assert!(Cli::try_parse_from(["firstboot", "frobnicate"]).is_err());
    }
}
