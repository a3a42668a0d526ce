//! Flypack's first-boot provisioning service.

pub mod backup;
pub mod cli;
pub mod config;
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
pub mod root;
pub mod runner;
pub mod stages;
pub mod status;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flypack_contracts::layout::target;
use flypack_contracts::status::StageState;

use crate::journal::{Journal, RunRecord};
use crate::root::Root;
use crate::runner::{Ctx, RunEnd};

/// The full stage order, with the configuration step first.
pub const ORDER: &[&str] = &[
    "restore", "config", "identity", "netconf", "firewall", "disk", "network", "stack", "qa",
];

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: cli::Cli) -> Result<i32> {
    let root = Root::new(&cli.root);
    let seed = cli.seed.as_deref();
    match cli.command {
        cli::Command::Run(a) => provision(&root, a.early, seed),
        cli::Command::Status(a) => status_cmd(&root, &a),
        cli::Command::Config(a) => config_cmd(&root, &a, seed),
        cli::Command::Qa(a) => qa_cmd(&root, &a),
        cli::Command::Network(a) => cmd_network::run(&root, &a, seed),
        cli::Command::Stack(a) => stack_cmd(&root, &a),
        cli::Command::Backup(a) => backup_cmd(&root, &a, seed),
        cli::Command::Firewall(c) => firewall_cmd(&root, &c),
        cli::Command::Install(a) => install::run(&root, &a.settings, a.dry_run, a.no_reboot),
    }
}

mod cmd_network;

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Resolves the unit config and records the step in the journal.
fn configure(
    root: &Root,
    journal: &mut Journal,
    jp: &Path,
    seed: Option<&Path>,
) -> Result<Result<flypack_contracts::unit::Unit, String>> {
    {
        let r = journal.stage_mut("config");
        r.state = StageState::Started;
        r.attempts += 1;
        r.started = Some(runner::now());
    }
    journal.save(jp)?;
    let t0 = Instant::now();
    let res = config::resolve_here(root, seed).and_then(|r| {
        config::persist(root, &r)?;
        Ok(r)
    });
    let rec = journal.stage_mut("config");
    rec.finished = Some(runner::now());
    rec.duration_ms = Some(t0.elapsed().as_millis() as u64);
    let out = match res {
        Ok(r) => {
            rec.state = StageState::Done;
            rec.input_digest = r.unit.digest();
            rec.detail = Some(format!("{} ({}): hostname {}", r.source, r.reason, r.unit.hostname));
            Ok(r.unit)
        }
        Err(e) => {
            rec.state = StageState::Failed;
            let msg = format!("{e:#}");
            rec.detail = Some(format!("invalid unit config, nothing applied: {msg}"));
            Err(msg)
        }
    };
    journal.save(jp)?;
    Ok(out)
}

/// Puts a backup left by `builder restore` back (identity now, volume data
/// staged for the stack stage), recorded in the journal as `restore`.
fn restore_step(journal: &mut Journal, jp: &Path, root: &Root, seed: Option<&Path>) -> Result<()> {
    let pending = root.path(backup::RESTORE_ARCHIVE).exists();
    if !pending && journal.stage_mut("restore").state != StageState::Started {
        if journal.stage_mut("restore").state == StageState::Pending {
            let r = journal.stage_mut("restore");
            r.state = StageState::Skipped;
            r.detail = Some("no backup to restore".into());
            journal.save(jp)?;
        }
        return Ok(());
    }
    {
        let r = journal.stage_mut("restore");
        r.state = StageState::Started;
        r.attempts += 1;
        r.started = Some(runner::now());
    }
    journal.save(jp)?;
    let t0 = Instant::now();
    let res = backup::restore_identity(root, seed);
    let rec = journal.stage_mut("restore");
    rec.finished = Some(runner::now());
    rec.duration_ms = Some(t0.elapsed().as_millis() as u64);
    let out = match res {
        Ok(Some(what)) => {
            rec.state = StageState::Done;
            rec.detail = Some(what);
            Ok(())
        }
        // Started before, archive gone: the previous attempt finished its work.
        Ok(None) => {
            rec.state = StageState::Done;
            Ok(())
        }
        Err(e) => {
            rec.state = StageState::Failed;
            rec.detail = Some(format!("{e:#}"));
            Err(e)
        }
    };
    journal.save(jp)?;
    out.context("restoring the backup")
}

/// `firstboot backup`.
fn backup_cmd(root: &Root, a: &cli::BackupArgs, seed: Option<&Path>) -> Result<i32> {
    if let Some(cli::BackupCommand::Verify { archive }) = &a.command {
        // A unit holds no key that decrypts: it verifies the decrypted copy
        // `builder restore` leaves, and says where a sealed one is verified.
        let (key, _) =
            backup::unit_key(root, seed)?.context("this unit has no backup key to authenticate an archive with")?;
        let (m, _) = flypack_engine::backup::verify(archive, &flypack_engine::backup::Keys::unit(&key))?;
        println!(
            "{}: OK: backup of {} ({} image) from {}, {} entries, {} bytes of data",
            archive.display(),
            m.hostname,
            m.image,
            m.created,
            m.entries.len(),
            m.data_bytes()
        );
        for (v, how) in &m.volumes {
            println!("  volume {v}: {how}");
        }
        return Ok(0);
    }
    let o = backup::Options {
        out: a.out.clone(),
        keep: a.keep,
        copy_to: a.copy_to.clone(),
        ssh: a.ssh.clone(),
    };
    let (path, m) = backup::create(root, &o, seed)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "archive": path, "hostname": m.hostname, "entries": m.entries.len(), "bytes": m.data_bytes(), "volumes": m.volumes })
        );
    } else {
        println!(
            "{}: {} entries, {} bytes of data, encrypted to the fleet's backup key, read back",
            path.display(),
            m.entries.len(),
            m.data_bytes()
        );
        for (v, how) in &m.volumes {
            println!("  volume {v}: {how}");
        }
    }
    Ok(0)
}

/// `firstboot run [--early]`.
pub fn provision(root: &Root, early: bool, seed: Option<&Path>) -> Result<i32> {
    let state_dir = root.path(target::STATE_DIR);
    std::fs::create_dir_all(&state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    // One provisioning run at a time (systemd's and a technician's).
    let lock_path = state_dir.join("run.lock");
    let lock = File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    if early {
        // A network change that was never confirmed (power cut, lost SSH
        // session) rolls back before networkd starts with it.
        match network::rollback_expired(root) {
            Ok(Some(a)) => tracing::warn!("unconfirmed network change rolled back: {}", a.summary()),
            Ok(None) => {}
            Err(e) => tracing::error!("rolling back an unconfirmed network change: {e:#}"),
        }
    }
    let done_marker = root.path(target::DONE_MARKER);
    let jp = root.path(target::JOURNAL);
    let mut journal = Journal::load(&jp)?;
    if done_marker.exists() {
        if early {
            // Every boot: interfaces matched by MAC may have other names now.
            if let Err(e) = refresh_firewall(root) {
                tracing::error!("refreshing the firewall: {e:#}");
            }
        }
        if !early {
            let s = status::compute(root, &journal, ORDER, true);
            status::announce(root, &s)?;
        }
        return Ok(0);
    }
    journal.add_run(RunRecord {
        version: flypack_contracts::VERSION.to_string(),
        started: runner::now(),
        boot_id: boot_id(),
        peak_rss_kib: None,
    });
    journal.save(&jp)?;

    restore_step(&mut journal, &jp, root, seed)?;
    let unit = match configure(root, &mut journal, &jp, seed)? {
        Ok(u) => u,
        Err(msg) => {
            let s = status::compute(root, &journal, ORDER, false);
            status::announce(root, &s)?;
            anyhow::bail!("unit config: {msg}");
        }
    };
    let ctx = Ctx::new(root.clone(), unit);
    let all = stages::all();
    let refs: Vec<&dyn runner::Stage> = all
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| !early || stages::EARLY.contains(&s.name()))
        .collect();
    let end = runner::run_stages(&refs, &ctx, &mut journal, &jp)?;
    if let Some(r) = journal.runs.last_mut() {
        r.peak_rss_kib = journal::peak_rss_kib();
    }
    journal.save(&jp)?;
    match end {
        RunEnd::Done if early => Ok(0),
        RunEnd::Done => {
            flypack_contracts::atomic::write_atomic(&done_marker, format!("{}\n", runner::now()).as_bytes(), 0o644)?;
            let s = status::compute(root, &journal, ORDER, true);
            status::announce(root, &s)?;
            Ok(0)
        }
        RunEnd::Failed { stage, error } => {
            let s = status::compute(root, &journal, ORDER, false);
            status::announce(root, &s)?;
            // Non-zero: systemd retries (bounded by StartLimitBurst).
            anyhow::bail!("stage {stage} failed: {error}")
        }
    }
}

/// The unit config in force.
fn unit_in_force(root: &Root) -> Result<flypack_contracts::unit::Unit> {
    let text = std::fs::read_to_string(root.path(config::RESOLVED)).with_context(|| {
        format!(
            "no unit config in force ({}): provisioning has not run yet",
            config::RESOLVED
        )
    })?;
    Ok(flypack_contracts::unit::parse_unit(Path::new(config::RESOLVED), &text)?)
}

/// Renders and loads the firewall for the unit config in force.
fn refresh_firewall(root: &Root) -> Result<()> {
    let what = firewall::apply(root, &unit_in_force(root)?)?;
    tracing::info!("firewall: {what}");
    Ok(())
}

/// `firstboot firewall`.
fn firewall_cmd(root: &Root, c: &cli::FirewallCommand) -> Result<i32> {
    match c {
        cli::FirewallCommand::Show => {
            let unit = unit_in_force(root)?;
            print!("{}", firewall::render(&unit, &firewall::resolve(&unit)?)?);
            Ok(0)
        }
        cli::FirewallCommand::Apply => {
            println!("{}", firewall::apply(root, &unit_in_force(root)?)?);
            Ok(0)
        }
        cli::FirewallCommand::Status => {
            let l = firewall::loaded_policies()?;
            println!(
                "table inet {}: input {}, forward {}, {} rules",
                firewall::TABLE,
                if l.input_drop { "drop" } else { "ACCEPT" },
                if l.forward_drop { "drop" } else { "ACCEPT" },
                l.rules
            );
            Ok(if l.input_drop && l.forward_drop { 0 } else { 1 })
        }
    }
}

fn current_status(root: &Root) -> Result<flypack_contracts::status::Status> {
    let journal = Journal::load(&root.path(target::JOURNAL))?;
    let done = root.path(target::DONE_MARKER).exists();
    Ok(status::compute(root, &journal, ORDER, done))
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

fn config_cmd(root: &Root, a: &cli::ConfigArgs, seed: Option<&Path>) -> Result<i32> {
    let r = config::resolve_here(root, seed)?;
    if a.explain {
        for l in &r.explain {
            println!("{l}");
        }
        println!();
    }
    print!("{}", r.unit.to_toml());
    Ok(0)
}

fn qa_cmd(root: &Root, a: &cli::QaArgs) -> Result<i32> {
    let text = std::fs::read_to_string(root.path(config::RESOLVED)).with_context(|| {
        format!(
            "no unit config in force ({}): provisioning has not run yet",
            config::RESOLVED
        )
    })?;
    let unit = flypack_contracts::unit::parse_unit(Path::new(config::RESOLVED), &text)?;
    let ctx = Ctx::new(root.clone(), unit);
    let journal = Journal::load(&root.path(target::JOURNAL))?;
    let report = stages::qa::run_qa(&ctx, &journal, None)?;
    match a.format {
        cli::QaFormat::Table => print!("{}", qa::table(&report)),
        cli::QaFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        cli::QaFormat::Junit => print!("{}", qa::junit(&report)),
    }
    let done = root.path(target::DONE_MARKER).exists();
    let s = status::compute_with(root, &journal, ORDER, done, Some(&report));
    status::write(root, &s)?;
    Ok(report.verdict.exit_code())
}

fn stack_cmd(root: &Root, a: &cli::StackArgs) -> Result<i32> {
    let path = a
        .config
        .clone()
        .unwrap_or_else(|| root.path(flypack_contracts::compose::STACK_CONFIG));
    let Some((cfg, stack)) = docker::load_stack_from(root, &path)? else {
        anyhow::bail!(
            "no stack config at {}: this image has no container stack",
            path.display()
        );
    };
    let states = match a.command {
        cli::StackCommand::Up => {
            let mut last = String::new();
            let (notes, states) = stages::stack::bring_up(root, &cfg, &stack, &mut |m| {
                if m != last {
                    eprintln!("{m}");
                    last = m.to_string();
                }
            })?;
            for n in notes {
                eprintln!("{n}");
            }
            if a.config.is_none() {
                stages::stack::record(root, &states)?;
            }
            states
        }
        cli::StackCommand::Status => docker::block_on(async {
            let d = docker::connect_running().await?;
            docker::states(&d, &stack).await
        })?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&states)?);
    } else {
        for s in &states {
            println!(
                "{:<18} {:<10} {}{}",
                s.name,
                s.state,
                s.action,
                if s.critical { " (critical)" } else { "" }
            );
        }
    }
    let ok = states.iter().all(|s| {
        !s.critical
            || s.state
                .is_up(stack.service(&s.name).is_some_and(|v| v.health.is_some()))
    });
    Ok(if ok { 0 } else { 1 })
}
