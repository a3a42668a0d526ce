//! Flypack's host-side builder: profile → plan → image, and the commands
//! that boot, flash and restore images.

pub mod profile;
pub mod disk_plan;
pub mod grub;
pub mod progress;
pub mod overlay;
pub mod elfcheck;
pub mod host;
pub mod plan;
pub mod build;
pub mod interrupt;
pub mod stages;
pub mod qemu;
pub mod cli;
pub mod cmd;

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<i32> {
    let rep = progress::Reporter::new(progress::Mode::detect(cli.json));
    match &cli.command {
        cli::Command::Build(a) => cmd::build::run(a, &rep),
        cli::Command::Validate(a) => cmd::validate::run(a, &rep),
        cli::Command::Boot(a) => cmd::boot::run(a, &rep),
        cli::Command::Doctor => cmd::doctor::run(&rep),
        cli::Command::Customize(a) => cmd::customize::run(a, &rep),
    }
}
