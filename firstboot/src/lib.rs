//! Flypack's first-boot provisioning service.

pub mod cli;
pub mod config;
pub mod journal;
pub mod netfiles;
pub mod netlink;
pub mod network;
pub mod root;
pub mod runner;
pub mod stages;
pub mod status;

use std::fs::File;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flypack_contracts::layout::target;

use crate::journal::{Journal, RunRecord};
use crate::root::Root;
use crate::runner::{Ctx, RunEnd};

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: cli::Cli) -> Result<i32> {
    let root = Root::new(&cli.root);
    match cli.command {
        cli::Command::Run => provision(&root),
        cli::Command::Status(a) => status_cmd(&root, &a),
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `firstboot run`.
pub fn provision(root: &Root) -> Result<i32> {
    let state_dir = root.path(target::STATE_DIR);
    std::fs::create_dir_all(&state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    // One provisioning run at a time (systemd's and a technician's).
    let lock_path = state_dir.join("run.lock");
    let lock = File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;

    let journal_path = root.path(target::JOURNAL);
    let mut journal = Journal::load(&journal_path)?;
    journal.add_run(RunRecord { version: flypack_contracts::VERSION.to_string(), started: runner::now(), boot_id: boot_id() });
    journal.save(&journal_path)?;

    let done_marker = root.path(target::DONE_MARKER);
    if done_marker.exists() {
        let s = status::compute(root, &journal, stages::ORDER, true);
        status::announce(root, &s)?;
        return Ok(0);
    }
    let ctx = Ctx::new(root.clone());
    let all = stages::all();
    let refs: Vec<&dyn runner::Stage> = all.iter().map(|s| s.as_ref()).collect();
    let end = runner::run_stages(&refs, &ctx, &mut journal, &journal_path)?;
    match end {
        RunEnd::Done => {
            flypack_contracts::atomic::write_atomic(&done_marker, format!("{}\n", runner::now()).as_bytes(), 0o644)?;
            let s = status::compute(root, &journal, stages::ORDER, true);
            status::announce(root, &s)?;
            Ok(0)
        }
        RunEnd::Failed { stage, error } => {
            let s = status::compute(root, &journal, stages::ORDER, false);
            status::announce(root, &s)?;
            // Non-zero: systemd retries (bounded by StartLimitBurst).
            anyhow::bail!("stage {stage} failed: {error}")
        }
    }
}

fn current_status(root: &Root) -> Result<flypack_contracts::status::Status> {
    let journal = Journal::load(&root.path(target::JOURNAL))?;
    let done = root.path(target::DONE_MARKER).exists();
    Ok(status::compute(root, &journal, stages::ORDER, done))
}

fn status_cmd(root: &Root, a: &cli::StatusArgs) -> Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut s = current_status(root)?;
    while a.wait && s.provisioning == flypack_contracts::status::Provisioning::InProgress && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        s = current_status(root)?;
    }
    if a.announce {
        status::announce(root, &s)?;
    } else if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", status::table(&s));
    }
    Ok(s.verdict.exit_code())
}
