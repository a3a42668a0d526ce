//! Flypack's host-side builder: profile → plan → image, and the commands
//! that boot, flash and restore images.

pub mod build;
pub mod cli;
pub mod cmd;
pub mod disk_plan;
pub mod elfcheck;
pub mod flash;
pub mod grub;
pub mod host;
pub mod interrupt;
pub mod overlay;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod qemu;
pub mod stages;

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<i32> {
    let rep = progress::Reporter::new(progress::Mode::detect(cli.json));
    match &cli.command {
        cli::Command::Build(a) => cmd::build::run(a, &rep),
        cli::Command::Validate(a) => cmd::validate::run(a, &rep),
        cli::Command::Inventory(a) => cmd::inventory::run(a, &rep),
        cli::Command::Boot(a) => cmd::boot::run(a, &rep),
        cli::Command::Doctor => cmd::doctor::run(&rep),
        cli::Command::Customize(a) => cmd::customize::run(a, &rep),
        cli::Command::BackupKey(c) => cmd::backup_key::run(c, &rep),
        cli::Command::FleetCa(c) => cmd::fleet_ca::run(c, &rep),
        cli::Command::SecurityCheck(a) => cmd::security_check::run(a, &rep),
        cli::Command::Man { out } => {
            use clap::CommandFactory;
            for p in flypack_engine::man::write_pages(cli::Cli::command(), "1", out)? {
                println!("{}", p.display());
            }
            Ok(0)
        }
        cli::Command::Images(a) => cmd::images::run(a, &rep),
        cli::Command::Flash(a) => cmd::flash::run(a, &rep),
        cli::Command::Restore(a) => cmd::restore::run(a, &rep),
    }
}
