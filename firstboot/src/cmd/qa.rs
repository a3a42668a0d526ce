//! `firstboot qa`: run the checks again and update the verdict.

use anyhow::Result;
use flypack_contracts::layout::target;

use crate::cli::{QaArgs, QaFormat};
use crate::journal::Journal;
use crate::root::Root;
use crate::runner::Ctx;
use crate::{qa, stages, status};

/// Runs QA, prints the report, writes it and the status.
pub fn run(root: &Root, a: &QaArgs) -> Result<i32> {
    let ctx = Ctx::with_unit(root.clone(), crate::config::in_force_required(root)?);
    let journal = Journal::load(&root.path(target::JOURNAL))?;
    let report = stages::qa::run_qa(&ctx, &journal, None)?;
    match a.format {
        QaFormat::Table => print!("{}", qa::table(&report)),
        QaFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        QaFormat::Junit => print!("{}", qa::junit(&report)),
    }
    let done = root.path(target::DONE_MARKER).exists();
    let s = status::compute_with(root, &journal, done, Some(&report));
    status::write(root, &s)?;
    Ok(report.verdict.exit_code())
}
