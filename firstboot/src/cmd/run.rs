//! `firstboot run [--early]`: provisioning. Every stage, restore and config
//! included, goes through the runner (journal, input digests, fault points),
//! in the one order `stages::all` gives.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use flypack_contracts::layout::target;

use crate::journal::{self, Journal, RunRecord};
use crate::root::Root;
use crate::runner::{self, Ctx, RunEnd};
use crate::{firewall, network, stages, status};

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Renders and loads the firewall for the unit config in force.
fn refresh_firewall(root: &Root) -> Result<()> {
    let what = firewall::apply(root, &crate::config::in_force_required(root)?)?;
    tracing::info!("firewall: {what}");
    Ok(())
}

/// Runs (or resumes) provisioning; with `early`, only the early stages.
pub fn run(root: &Root, early: bool, seed: Option<&Path>) -> Result<i32> {
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
        // So do SSH keys that were never confirmed.
        match crate::access::rollback_expired(root) {
            Ok(Some(t)) => tracing::warn!("unconfirmed SSH key change {t} rolled back: the old keys are in force"),
            Ok(None) => {}
            Err(e) => tracing::error!("rolling back an unconfirmed SSH key change: {e:#}"),
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
        } else {
            let s = status::compute(root, &journal, true);
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

    let ctx = Ctx::new(root.clone(), seed);
    let all = stages::all();
    let refs: Vec<&dyn runner::Stage> = all.iter().map(|s| s.as_ref()).filter(|s| !early || s.early()).collect();
    let end = runner::run_stages(&refs, &ctx, &mut journal, &jp)?;
    if let Some(r) = journal.runs.last_mut() {
        r.peak_rss_kib = journal::peak_rss_kib();
    }
    journal.save(&jp)?;
    match end {
        RunEnd::Done if early => Ok(0),
        RunEnd::Done => {
            flypack_contracts::atomic::write_atomic(&done_marker, format!("{}\n", runner::now()).as_bytes(), 0o644)?;
            let s = status::compute(root, &journal, true);
            status::announce(root, &s)?;
            Ok(0)
        }
        RunEnd::Failed { stage, error } => {
            let s = status::compute(root, &journal, false);
            status::announce(root, &s)?;
            // Non-zero: systemd retries (bounded by StartLimitBurst).
            anyhow::bail!("stage {stage} failed: {error}")
        }
    }
}
