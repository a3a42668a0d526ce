//! `sys.journal`: firstboot's journal is consistent.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let stuck: Vec<String> = ctx
        .journal
        .stages
        .iter()
        .filter(|s| s.state == StageState::Started && Some(s.name.as_str()) != ctx.running_stage)
        .map(|s| s.name.clone())
        .collect();
    let failed: Vec<String> = ctx
        .journal
        .stages
        .iter()
        .filter(|s| s.state == StageState::Failed)
        .map(|s| s.name.clone())
        .collect();
    if stuck.is_empty() && failed.is_empty() {
        pass(format!(
            "{} stages recorded, {} runs",
            ctx.journal.stages.len(),
            ctx.journal.runs.len()
        ))
    } else {
        fail(
            format!("interrupted: {:?}, failed: {:?}", stuck, failed),
            "run `firstboot run` to finish provisioning; `firstboot status` shows the failing stage",
        )
    }
}
