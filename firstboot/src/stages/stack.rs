//! `stack`: load the container images that came inside the disk image and
//! bring the monitoring stack up, waiting until it is healthy. Records each
//! service's state for QA and the status.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::digest::KeyHasher;

use crate::docker::{self, ServiceState};
use crate::root::Root;
use crate::runner::{Ctx, Outcome, Stage};

/// Where the stage records the services' states.
pub const RESULT: &str = "/var/lib/flypack/stack/result.json";

/// How long the stack may take to become healthy (software-emulated units
/// are slow; real servers take seconds).
pub const TIMEOUT: Duration = Duration::from_secs(900);

/// The stage.
#[derive(Debug)]
pub struct StackStage;

/// Loads images and brings the stack up; returns the services' states.
pub fn bring_up(
    root: &Root,
    cfg: &flypack_contracts::compose::StackConfig,
    stack: &flypack_contracts::compose::Stack,
) -> Result<(Vec<String>, Vec<ServiceState>)> {
    docker::block_on(async {
        let d = docker::connect(Duration::from_secs(180)).await?;
        let mut notes = docker::load_images(&d, root, &cfg.images).await?;
        // A restored unit: volumes get their data back before any container starts.
        for v in &stack.volumes {
            if root.path(crate::backup::RESTORE_VOLUMES).join(v).is_dir() {
                let at = docker::ensure_volume(&d, stack, v).await?;
                if crate::backup::fill_volume(root, v, &at)? {
                    notes.push(format!("volume {v} restored from the backup"));
                }
            }
        }
        let ids: HashMap<String, String> = cfg.images.iter().map(|i| (i.reference.clone(), i.id.clone())).collect();
        let states = docker::up(&d, stack, &ids, TIMEOUT).await?;
        Ok((notes, states))
    })
}

/// Writes the recorded states.
pub fn record(root: &Root, states: &[ServiceState]) -> Result<()> {
    let p = root.path(RESULT);
    std::fs::create_dir_all(p.parent().expect("parent"))?;
    write_atomic(&p, serde_json::to_vec_pretty(states)?.as_slice(), 0o644)
}

/// The recorded states, if the stage ran.
pub fn recorded(root: &Root) -> Option<Vec<ServiceState>> {
    serde_json::from_slice(&std::fs::read(root.path(RESULT)).ok()?).ok()
}

impl Stage for StackStage {
    fn name(&self) -> &'static str {
        "stack"
    }

    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        let mut h = KeyHasher::new();
        if let Ok(b) = std::fs::read(ctx.root.path(flypack_contracts::compose::STACK_CONFIG)) {
            h.part("config", b);
        }
        if let Some((cfg, _)) = docker::load_stack(&ctx.root)? {
            h.part(
                "compose",
                std::fs::read(ctx.root.path(&cfg.compose)).unwrap_or_default(),
            );
        }
        Ok(h.finish())
    }

    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        let Some((cfg, stack)) = docker::load_stack(&ctx.root)? else {
            return Ok(Outcome::skipped("no container stack in this image"));
        };
        if !ctx.root.is_live() {
            return Ok(Outcome::skipped("not the running system"));
        }
        ctx.fault_point("stack", "mid");
        let (notes, states) = bring_up(&ctx.root, &cfg, &stack)?;
        record(&ctx.root, &states)?;
        let healthy = states
            .iter()
            .filter(|s| s.state == "healthy" || s.state == "running")
            .count();
        let list: Vec<String> = states
            .iter()
            .map(|s| format!("{} {} ({})", s.name, s.state, s.action))
            .collect();
        Ok(Outcome::done(format!(
            "{healthy}/{} services up{}: {}",
            states.len(),
            if notes.is_empty() {
                String::new()
            } else {
                format!(", {}", notes.join(", "))
            },
            list.join(", ")
        )))
    }
}
