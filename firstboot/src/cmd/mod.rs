//! One module per subcommand: each `run(root, args, ...) -> Result<i32>`
//! returns the process exit code. The logic lives in the library modules
//! they call (stages, network, backup, firewall, install).

pub mod access;
pub mod backup;
pub mod central;
pub mod config;
pub mod firewall;
pub mod install;
pub mod network;
pub mod qa;
pub mod reflash;
pub mod run;
pub mod stack;
pub mod status;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::root::Root;

/// Runs a parsed command line; returns the exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    let root = Root::new(&cli.root);
    let seed = cli.seed.as_deref();
    match cli.command {
        Command::Run(a) => run::run(&root, a.early, seed),
        Command::Status(a) => status::run(&root, &a),
        Command::Config(a) => config::run(&root, &a, seed),
        Command::Qa(a) => qa::run(&root, &a),
        Command::Network(a) => network::run(&root, &a, seed),
        Command::Access(c) => access::run(&root, &c),
        Command::Stack(a) => stack::run(&root, &a),
        Command::Central(c) => central::run(&root, &c, seed),
        Command::Backup(a) => backup::run(&root, &a, seed),
        Command::Firewall(c) => firewall::run(&root, &c),
        Command::Install(a) => install::run(&root, &a),
        Command::Reflash(a) => reflash::run(&root, &a),
        Command::Man { out } => {
            use clap::CommandFactory;
            for p in flypack_engine::man::write_pages(Cli::command(), "8", &out)? {
                println!("{}", p.display());
            }
            Ok(0)
        }
    }
}
