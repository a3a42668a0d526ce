//! `restore` (first, in the early unit): when `builder restore` left a
//! backup in the root filesystem, authenticate it and put the unit's
//! identity back, staging volume data for the stack stage. See
//! `crate::backup::restore_identity`.

use anyhow::Result;
use flypack_contracts::digest::KeyHasher;

use crate::backup;
use crate::runner::{Ctx, Outcome, Stage};

/// The stage.
#[derive(Debug)]
pub struct Restore;

impl Stage for Restore {
    fn name(&self) -> &'static str {
        "restore"
    }
    fn early(&self) -> bool {
        true
    }
    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        // The archive waiting (by size and time: hashing gigabytes to decide
        // whether to look at them would cost what the restore costs).
        let mut h = KeyHasher::new();
        match std::fs::metadata(ctx.root.path(backup::RESTORE_ARCHIVE)) {
            Ok(m) => {
                h.part("size", m.len().to_string());
                h.part("mtime", format!("{:?}", m.modified().ok()));
            }
            Err(_) => {
                h.part("archive", "none");
            }
        }
        Ok(h.finish())
    }
    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        ctx.fault_point("restore", "mid");
        match backup::restore_identity(&ctx.root, ctx.seed.as_deref())? {
            Some(what) => Ok(Outcome::done(what)),
            // The archive is deleted last: an earlier run that finished its
            // work before a power cut left the record of it.
            None if ctx.root.path(backup::RESTORED).exists() => {
                Ok(Outcome::done(format!("restored earlier (see {})", backup::RESTORED)))
            }
            None => Ok(Outcome::skipped("no backup to restore")),
        }
    }
}
