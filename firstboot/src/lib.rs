//! Flypack's first-boot provisioning service.
//!
//! `cli` (clap types) → `cmd/<subcommand>` → the engine: `runner` runs
//! `stages` (one list, one order), `qa` checks; one module per boundary to
//! the outside (`netlink`, `docker`, external commands through the contracts'
//! command helper).

pub mod access;
pub mod backup;
pub mod central;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod deadline;
pub mod docker;
pub mod firewall;
#[cfg(test)]
mod golden;
pub mod install;
pub mod journal;
pub mod netfiles;
pub mod netlink;
pub mod network;
pub mod qa;
pub mod reflash;
pub mod root;
pub mod runner;
pub mod stages;
pub mod status;

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<i32> {
    cmd::dispatch(cli)
}
