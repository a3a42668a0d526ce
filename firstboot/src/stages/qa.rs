//! `qa`: run the checks, write the reports. The verdict is QA's; the stage
//! itself only fails if QA could not run at all.

use anyhow::Result;
use flypack_contracts::layout::target;

use crate::journal::Journal;
use crate::qa;
use crate::runner::{Ctx, Outcome, Stage};

/// The stage.
#[derive(Debug)]
pub struct Qa;

impl Stage for Qa {
    fn name(&self) -> &'static str {
        "qa"
    }
    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        Ok(ctx.unit()?.digest())
    }
    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        ctx.fault_point("qa", "mid");
        let journal = Journal::load(&ctx.root.path(target::JOURNAL))?;
        let report = run_qa(ctx, &journal, Some("qa"))?;
        let s = qa::summary(&report);
        Ok(Outcome::done(format!(
            "{}: {} passed, {} failed, {} waived",
            report.verdict, s.passed, s.failed, s.waived
        )))
    }
}

/// Runs QA and writes its reports.
pub fn run_qa(ctx: &Ctx, journal: &Journal, running: Option<&str>) -> Result<flypack_contracts::qa::Report> {
    let today = time::OffsetDateTime::now_utc().date();
    let q = qa::Ctx {
        root: &ctx.root,
        unit: ctx.unit()?,
        today,
        journal,
        running_stage: running,
        stack_enabled: ctx.root.path(flypack_contracts::stack::STACK_CONFIG).exists(),
    };
    let report = qa::run(&q)?;
    qa::write(&ctx.root, &report)?;
    Ok(report)
}
