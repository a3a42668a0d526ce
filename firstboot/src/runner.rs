//! The stage runner: validate → apply → record. Every stage is recorded in
//! the journal before and after it runs, so an interruption anywhere (power
//! cut, crash, kill) resumes at the interrupted stage, and a finished stage
//! whose inputs did not change is never applied again.
//!
//! Fault injection for tests (builds with the `fault-injection` feature
//! only): `FLYPACK_FAULT=STAGE:POINT` aborts the process
//! at that point (`before-start`, `after-start`, `mid`, `after-run`,
//! `after-done`); `mid` is called by every stage at the start of its `run`,
//! before anything that could skip it, so every point can fire in tests.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use flypack_contracts::status::StageState;

use crate::journal::Journal;
use crate::root::Root;

/// What a stage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One line for the status.
    pub detail: String,
    /// The stage does not apply here.
    pub skipped: bool,
}

impl Outcome {
    /// A stage that did its work.
    pub fn done(detail: impl Into<String>) -> Self {
        Outcome {
            detail: detail.into(),
            skipped: false,
        }
    }
    /// A stage that does not apply.
    pub fn skipped(why: impl Into<String>) -> Self {
        Outcome {
            detail: why.into(),
            skipped: true,
        }
    }
}

/// What the running stage is doing, as written to the progress file and
/// read by the status (`firstboot status`, the web page, the login banner).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// The stage.
    pub stage: String,
    /// What it is doing or waiting for, and for how long.
    pub message: String,
    /// When this was written (RFC 3339).
    pub time: String,
}

/// Reports a running stage's progress without flooding: the progress file
/// at most every 2 s, the log (console) at most every 15 s.
#[derive(Debug)]
pub struct Reporter {
    root: Root,
    stage: String,
    last_file: Option<Instant>,
    last_log: Option<Instant>,
}

impl Reporter {
    /// A reporter for `stage`.
    pub fn new(root: &Root, stage: &str) -> Self {
        Reporter {
            root: root.clone(),
            stage: stage.to_string(),
            last_file: None,
            last_log: None,
        }
    }

    /// Notes what the stage is doing now.
    pub fn report(&mut self, message: &str) {
        let due = |t: Option<Instant>, every: u64| t.is_none_or(|t| t.elapsed().as_secs() >= every);
        if due(self.last_log, 15) {
            self.last_log = Some(Instant::now());
            tracing::info!("stage {}: {message}", self.stage);
        }
        if due(self.last_file, 2) {
            self.last_file = Some(Instant::now());
            let p = Progress {
                stage: self.stage.clone(),
                message: message.to_string(),
                time: now(),
            };
            let path = self.root.path(flypack_contracts::layout::target::PROGRESS_FILE);
            // Progress is advisory: a full disk must not fail the stage here.
            if let Err(e) = serde_json::to_vec(&p)
                .map_err(anyhow::Error::from)
                .and_then(|b| flypack_contracts::atomic::write_atomic(&path, &b, 0o644))
            {
                tracing::debug!("writing {}: {e:#}", path.display());
            }
        }
    }
}

/// The progress file's content, if any.
pub fn progress(root: &Root) -> Option<Progress> {
    serde_json::from_slice(&std::fs::read(root.path(flypack_contracts::layout::target::PROGRESS_FILE)).ok()?).ok()
}

/// A provisioning stage. `run` must converge: compare the desired state with
/// the actual one and change only the difference, so running it again after
/// an interruption is safe.
pub trait Stage {
    /// Name in the journal and the status.
    fn name(&self) -> &'static str;
    /// Whether the early unit runs it too (before systemd-networkd starts).
    fn early(&self) -> bool {
        false
    }
    /// Digest of the inputs that decide what the stage does.
    fn input_digest(&self, ctx: &Ctx) -> Result<String>;
    /// Brings the system to the desired state.
    fn run(&self, ctx: &Ctx) -> Result<Outcome>;
}

/// What stages get.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The system root.
    pub root: Root,
    /// Injected fault, for tests.
    pub fault: Option<Fault>,
    /// A seed image to read instead of the boot disk's seed partition (tests).
    pub seed: Option<std::path::PathBuf>,
    /// The unit config in force, once the config stage resolved it (or read
    /// from where it persisted it).
    unit: std::cell::OnceCell<flypack_contracts::unit::Unit>,
}

impl Ctx {
    /// A context for `root`, with the fault from the environment.
    pub fn new(root: Root, seed: Option<&Path>) -> Self {
        Ctx {
            root,
            fault: Fault::from_env(),
            seed: seed.map(Path::to_path_buf),
            unit: std::cell::OnceCell::new(),
        }
    }

    /// A context whose unit config is known already.
    pub fn with_unit(root: Root, unit: flypack_contracts::unit::Unit) -> Self {
        let c = Ctx::new(root, None);
        // A fresh cell: set cannot fail.
        let _ = c.unit.set(unit);
        c
    }

    /// The unit config in force: as the config stage resolved it in this
    /// run, else as it persisted it in an earlier one.
    pub fn unit(&self) -> Result<&flypack_contracts::unit::Unit> {
        if let Some(u) = self.unit.get() {
            return Ok(u);
        }
        let path = crate::config::RESOLVED;
        let text = std::fs::read_to_string(self.root.path(path))
            .with_context(|| format!("no unit config in force ({path}): the config stage has not run"))?;
        let u = flypack_contracts::unit::parse_unit(Path::new(path), &text)?;
        Ok(self.unit.get_or_init(|| u))
    }

    /// Records the unit config the config stage resolved.
    pub fn set_unit(&self, unit: flypack_contracts::unit::Unit) {
        if self.unit.set(unit).is_err() {
            tracing::debug!("the unit config was known already in this run");
        }
    }

    /// A progress reporter for `stage`.
    pub fn reporter(&self, stage: &str) -> Reporter {
        Reporter::new(&self.root, stage)
    }

    /// Aborts here if a test asked for it.
    pub fn fault_point(&self, stage: &str, point: &str) {
        if let Some(f) = &self.fault {
            f.hit(stage, point);
        }
    }
}

/// Aborts here if `FLYPACK_FAULT` names this point (for code outside stages).
pub fn fault_here(stage: &str, point: &str) {
    if let Some(f) = Fault::from_env() {
        f.hit(stage, point);
    }
}

/// An injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    stage: String,
    point: String,
}

impl Fault {
    /// From `FLYPACK_FAULT=STAGE:POINT`, in builds with the
    /// `fault-injection` feature (the tests'); never in a build that ships.
    pub fn from_env() -> Option<Fault> {
        if !cfg!(feature = "fault-injection") {
            return None;
        }
        let v = std::env::var("FLYPACK_FAULT").ok()?;
        let (stage, point) = v.split_once(':')?;
        Some(Fault {
            stage: stage.to_string(),
            point: point.to_string(),
        })
    }

    fn hit(&self, stage: &str, point: &str) {
        if self.stage == stage && self.point == point {
            eprintln!("firstboot: injected fault at {stage}:{point}");
            std::process::abort();
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every stage is done.
    Done,
    /// A stage failed.
    Failed {
        /// The stage.
        stage: String,
        /// The error, with its causes.
        error: String,
    },
}

/// Current time, RFC 3339 UTC.
pub fn now() -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Runs `stages` in order against the journal at `journal_path`.
pub fn run_stages(stages: &[&dyn Stage], ctx: &Ctx, journal: &mut Journal, journal_path: &Path) -> Result<RunEnd> {
    for stage in stages {
        let name = stage.name();
        let digest = match stage.input_digest(ctx) {
            Ok(d) => d,
            Err(e) => {
                let rec = journal.stage_mut(name);
                rec.state = StageState::Failed;
                rec.detail = Some(format!("invalid input: {e:#}"));
                journal.save(journal_path)?;
                return Ok(RunEnd::Failed {
                    stage: name.to_string(),
                    error: format!("{e:#}"),
                });
            }
        };
        if let Some(rec) = journal.stage(name) {
            let finished = matches!(rec.state, StageState::Done | StageState::Skipped);
            if finished && rec.input_digest == digest {
                tracing::info!("stage {name}: already done");
                continue;
            }
        }
        ctx.fault_point(name, "before-start");
        {
            let rec = journal.stage_mut(name);
            rec.state = StageState::Started;
            rec.attempts += 1;
            rec.input_digest = digest;
            rec.started = Some(now());
            rec.finished = None;
        }
        journal.save(journal_path)?;
        ctx.fault_point(name, "after-start");
        tracing::info!("stage {name}: running");
        let t0 = Instant::now();
        let result = stage.run(ctx);
        ctx.fault_point(name, "after-run");
        let rec = journal.stage_mut(name);
        rec.finished = Some(now());
        rec.duration_ms = Some(t0.elapsed().as_millis() as u64);
        match result {
            Ok(out) => {
                rec.state = if out.skipped {
                    StageState::Skipped
                } else {
                    StageState::Done
                };
                rec.detail = Some(out.detail);
                journal.save(journal_path)?;
                ctx.fault_point(name, "after-done");
            }
            Err(e) => {
                let error = format!("{e:#}");
                rec.state = StageState::Failed;
                rec.detail = Some(error.clone());
                journal.save(journal_path)?;
                return Ok(RunEnd::Failed {
                    stage: name.to_string(),
                    error,
                });
            }
        }
    }
    Ok(RunEnd::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Fake {
        name: &'static str,
        input: &'static str,
        calls: RefCell<u32>,
        fail: bool,
    }

    impl Stage for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn input_digest(&self, _: &Ctx) -> Result<String> {
            Ok(self.input.to_string())
        }
        fn run(&self, _: &Ctx) -> Result<Outcome> {
            *self.calls.borrow_mut() += 1;
            if self.fail {
                anyhow::bail!("{} broke", self.name);
            }
            Ok(Outcome::done(format!("{} ok", self.name)))
        }
    }

    fn fake(name: &'static str, input: &'static str, fail: bool) -> Fake {
        Fake {
            name,
            input,
            calls: RefCell::new(0),
            fail,
        }
    }

    fn ctx(d: &std::path::Path) -> Ctx {
        let unit =
            flypack_contracts::unit::parse_unit(std::path::Path::new("u"), "version = 1\nhostname = \"t\"\n").unwrap();
        let mut c = Ctx::with_unit(Root::new(d), unit);
        c.fault = None;
        c
    }

    #[test]
    fn done_stages_are_not_rerun_unless_inputs_change() {
        let d = tempfile::tempdir().unwrap();
        let jp = d.path().join("journal.json");
        let ctx = ctx(d.path());
        let (a, b) = (fake("a", "1", false), fake("b", "1", false));
        let mut j = Journal::default();
        assert_eq!(run_stages(&[&a, &b], &ctx, &mut j, &jp).unwrap(), RunEnd::Done);
        assert_eq!(run_stages(&[&a, &b], &ctx, &mut j, &jp).unwrap(), RunEnd::Done);
        assert_eq!((*a.calls.borrow(), *b.calls.borrow()), (1, 1));
        let b2 = fake("b", "2", false);
        assert_eq!(run_stages(&[&a, &b2], &ctx, &mut j, &jp).unwrap(), RunEnd::Done);
        assert_eq!((*a.calls.borrow(), *b2.calls.borrow()), (1, 1));
        assert_eq!(Journal::load(&jp).unwrap().stage("b").unwrap().attempts, 2);
    }

    #[test]
    fn a_failed_stage_stops_the_run_and_is_recorded() {
        let d = tempfile::tempdir().unwrap();
        let jp = d.path().join("journal.json");
        let ctx = ctx(d.path());
        let (a, b, c) = (fake("a", "1", false), fake("b", "1", true), fake("c", "1", false));
        let mut j = Journal::default();
        let end = run_stages(&[&a, &b, &c], &ctx, &mut j, &jp).unwrap();
        assert_eq!(
            end,
            RunEnd::Failed {
                stage: "b".into(),
                error: "b broke".into()
            }
        );
        assert_eq!(*c.calls.borrow(), 0);
        let saved = Journal::load(&jp).unwrap();
        assert_eq!(saved.stage("b").unwrap().state, StageState::Failed);
        assert_eq!(saved.stage("b").unwrap().detail.as_deref(), Some("b broke"));
        assert!(saved.stage("c").is_none());
    }

    #[test]
    fn a_started_stage_runs_again() {
        let d = tempfile::tempdir().unwrap();
        let jp = d.path().join("journal.json");
        let ctx = ctx(d.path());
        let mut j = Journal::default();
        {
            let r = j.stage_mut("a");
            r.state = StageState::Started;
            r.attempts = 1;
            r.input_digest = "1".into();
        }
        let a = fake("a", "1", false);
        run_stages(&[&a], &ctx, &mut j, &jp).unwrap();
        assert_eq!(*a.calls.borrow(), 1);
        assert_eq!(j.stage("a").unwrap().attempts, 2);
        assert_eq!(j.stage("a").unwrap().state, StageState::Done);
    }
}
