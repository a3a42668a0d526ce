//! `stack`: check the container images that came inside the disk image (in
//! Docker's store since the build) and bring the monitoring stack up,
//! waiting until it is healthy. Records each service's state for QA and the
//! status. No wait is bounded by a fixed clock: see `docker::Waiter`.

use std::collections::HashMap;

use anyhow::{Context, Result};
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::digest::KeyHasher;

use crate::docker::{self, ServiceState};
use crate::root::Root;
use crate::runner::{Ctx, Outcome, Stage};

/// Where the stage records the services' states.
pub const RESULT: &str = "/var/lib/flypack/stack/result.json";

/// Where changes of the stack take turns (a runtime lock: gone at reboot).
pub const LOCK: &str = "/run/flypack/stack.lock";

/// The stage.
#[derive(Debug)]
pub struct StackStage;

/// Holds the stack for one change at a time: provisioning's stack stage,
/// `firstboot stack up` and `stack restart`, federation following a kept
/// config, a new central password. Two at once would race on the same
/// containers (one recreating what the other waits on). Says so when it
/// waits; the turn ends when the returned lock is dropped.
pub fn exclusive(root: &Root, progress: &mut dyn FnMut(&str)) -> Result<std::fs::File> {
    let p = root.path(LOCK);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    if f.try_lock().is_err() {
        progress("another change of the stack is under way; waiting for it to end");
        f.lock().with_context(|| format!("locking {}", p.display()))?;
    }
    Ok(f)
}

/// Checks (or loads) the images and brings the stack up; returns the
/// services' states. `progress` hears what is being waited for.
pub fn bring_up(
    root: &Root,
    cfg: &flypack_contracts::stack::StackConfig,
    stack: &flypack_engine::compose::Stack,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(Vec<String>, Vec<ServiceState>)> {
    // vmalert's notifier file, from the config in force (none: no
    // Alertmanager; vmalert refuses to start without the file).
    let alerting = crate::config::in_force(root)
        .map(|u| u.alerting.clone())
        .unwrap_or_default();
    let _turn = exclusive(root, progress)?;
    crate::config::write_notifier(&alerting, &root.path(&cfg.compose)).context("writing vmalert's notifier file")?;
    docker::block_on(async {
        progress("waiting for the Docker daemon");
        let t0 = std::time::Instant::now();
        let d = docker::connect().await?;
        // Where a slow stack stage spends its time, in the journal.
        tracing::info!("stack: Docker answered after {:.1} s", t0.elapsed().as_secs_f64());
        let mut notes = docker::load_images(&d, root, &cfg.images, progress).await?;
        // A restored unit: volumes get their data back before any container starts.
        for v in &stack.volumes {
            if root.path(crate::backup::RESTORE_VOLUMES).join(v).is_dir() {
                let at = docker::ensure_volume(&d, stack, v).await?;
                // The uid:gid of a service that mounts it (numeric `user:`).
                let owner = stack
                    .services
                    .iter()
                    .filter(|s| {
                        s.mounts
                            .iter()
                            .any(|m| matches!(&m.source, flypack_engine::compose::Source::Volume { name } if name == v))
                    })
                    .find_map(|s| {
                        let (u, g) = s.user.as_deref()?.split_once(':')?;
                        Some((u.parse().ok()?, g.parse().ok()?))
                    });
                if crate::backup::fill_volume(root, v, &at, owner)? {
                    notes.push(format!("volume {v} restored from the backup"));
                }
            }
        }
        let ids: HashMap<String, String> = cfg.images.iter().map(|i| (i.reference.clone(), i.id.clone())).collect();
        let states = docker::up(&d, stack, &ids, progress).await?;
        tracing::info!("stack: services settled after {:.1} s", t0.elapsed().as_secs_f64());
        Ok((notes, states))
    })
}

/// Brings the stack up ([`bring_up`]) and records how its services were
/// left. When the change fails halfway, the record is what Docker says of
/// them now, so the status page never shows the stack as it was before a
/// change that went wrong; the change's error is returned all the same.
pub fn converge(
    root: &Root,
    cfg: &flypack_contracts::stack::StackConfig,
    stack: &flypack_engine::compose::Stack,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(Vec<String>, Vec<ServiceState>)> {
    let r = bring_up(root, cfg, stack, progress);
    recorded_after(root, r, || live(stack))
}

/// The services' states as Docker has them now.
pub fn live(stack: &flypack_engine::compose::Stack) -> Result<Vec<ServiceState>> {
    docker::block_on(async {
        let d = docker::connect_running().await?;
        docker::states(&d, stack).await
    })
}

/// Records the live states after a change of one service (a restart),
/// so the record is not left behind; a failure to read or write them is
/// said, not fatal: the change itself is done.
pub fn refresh_record(root: &Root, stack: &flypack_engine::compose::Stack) {
    if let Err(e) = live(stack).and_then(|states| record(root, &states)) {
        eprintln!("warning: the stack's record (what the status page shows) was not updated: {e:#}");
    }
}

/// Records the states a change returned, or, when it failed, the ones
/// `live` reads; returns the change's result.
fn recorded_after<T>(
    root: &Root,
    r: Result<(T, Vec<ServiceState>)>,
    live: impl FnOnce() -> Result<Vec<ServiceState>>,
) -> Result<(T, Vec<ServiceState>)> {
    match r {
        Ok((t, states)) => {
            record(root, &states)?;
            Ok((t, states))
        }
        Err(e) => {
            match live().and_then(|states| record(root, &states)) {
                Ok(()) => {}
                Err(l) => tracing::warn!("the stack's record was not updated after a failed change: {l:#}"),
            }
            Err(e)
        }
    }
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
        if let Ok(b) = std::fs::read(ctx.root.path(flypack_contracts::stack::STACK_CONFIG)) {
            h.part("config", b);
        }
        if let Some((cfg, stack)) = docker::load_stack(&ctx.root)? {
            h.part(
                "compose",
                std::fs::read(ctx.root.path(&cfg.compose)).unwrap_or_default(),
            );
            // The stack as resolved: the profiles the .env turns on and the
            // env files' settings ([central]) count too.
            h.part("stack", serde_json::to_vec(&stack).context("serialising the stack")?);
        }
        Ok(h.finish())
    }

    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        ctx.fault_point("stack", "mid");
        let Some((cfg, stack)) = docker::load_stack(&ctx.root)? else {
            return Ok(Outcome::skipped("no container stack in this image"));
        };
        if !ctx.root.is_live() {
            return Ok(Outcome::skipped("not the running system"));
        }
        let mut rep = ctx.reporter("stack");
        let (notes, states) = converge(&ctx.root, &cfg, &stack, &mut |m| rep.report(m))?;
        let up = |s: &ServiceState| {
            let has_health = stack.service(&s.name).is_some_and(|svc| svc.health.is_some());
            s.state.is_up(has_health)
        };
        let healthy = states.iter().filter(|s| up(s)).count();
        let list: Vec<String> = states
            .iter()
            .map(|s| match &s.gave_up {
                Some(why) => format!("{} {} ({}; gave up: {why})", s.name, s.state, s.action),
                None => format!("{} {} ({})", s.name, s.state, s.action),
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::State;

    fn service(name: &str, state: State) -> ServiceState {
        ServiceState {
            name: name.into(),
            state,
            critical: true,
            container: "0123456789ab".into(),
            action: String::new(),
            gave_up: None,
        }
    }

    /// A change that ends records the states it returned; one that fails
    /// halfway records what Docker says now, not what was before it, and
    /// its error comes back; when Docker cannot be asked either, the error
    /// is still the change's.
    #[test]
    fn a_failed_change_leaves_the_live_states_on_record() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let done = recorded_after(
            &root,
            Ok(((), vec![service("victoriametrics", State::Healthy)])),
            || panic!("a change that ended reads nothing"),
        )
        .unwrap();
        assert_eq!(done.1, recorded(&root).unwrap());
        let failed: Result<((), Vec<ServiceState>)> = Err(anyhow::anyhow!("vmalert did not become healthy"));
        let e = recorded_after(&root, failed, || Ok(vec![service("victoriametrics", State::Exited)])).unwrap_err();
        assert_eq!(format!("{e:#}"), "vmalert did not become healthy");
        assert_eq!(recorded(&root).unwrap(), [service("victoriametrics", State::Exited)]);
        let failed: Result<((), Vec<ServiceState>)> = Err(anyhow::anyhow!("Docker did not answer"));
        let e = recorded_after(&root, failed, || Err(anyhow::anyhow!("no daemon"))).unwrap_err();
        assert_eq!(format!("{e:#}"), "Docker did not answer");
    }

    /// A second change of the stack waits for the first to end, and says so.
    #[test]
    fn changes_of_the_stack_take_turns() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let first = exclusive(&root, &mut |m| panic!("the first waited: {m}")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let r2 = Root::new(d.path());
        let second = std::thread::spawn(move || {
            let mut heard = Vec::new();
            let turn = exclusive(&r2, &mut |m| heard.push(m.to_string())).unwrap();
            tx.send(()).unwrap();
            drop(turn);
            heard
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(),
            "the second change began while the first held the stack"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second change began once the first ended");
        let heard = second.join().unwrap();
        assert_eq!(
            heard,
            ["another change of the stack is under way; waiting for it to end"]
        );
        // Free again: no wait.
        exclusive(&root, &mut |m| panic!("waited on a free stack: {m}")).unwrap();
    }
}
