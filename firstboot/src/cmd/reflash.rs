//! `firstboot reflash` (a rolling update, driven from the laptop).

use anyhow::Result;

use crate::cli::{ReflashArgs, ReflashCommand};
use crate::root::Root;

/// Stages, writes, or (the helper) reboots when told.
pub fn run(root: &Root, a: &ReflashArgs) -> Result<i32> {
    match &a.command {
        ReflashCommand::Stage { bytes, json } => crate::reflash::stage(root, *bytes, *json),
        ReflashCommand::Write {
            image,
            bmap,
            no_reboot,
            json,
        } => crate::reflash::write(root, image, bmap.as_deref(), *no_reboot, *json),
        ReflashCommand::RebootWhenTold { after } => crate::reflash::reboot_when_told(*after),
    }
}
