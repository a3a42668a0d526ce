//! `builder flash`.

use anyhow::Result;
use serde_json::json;

use crate::cli::FlashArgs;
use crate::flash::{self, Options};
use crate::progress::{Mode, Reporter};

/// Flashes and reports.
pub fn run(a: &FlashArgs, rep: &Reporter) -> Result<i32> {
    // Every seed file is checked before the target is touched.
    let (seed, _) = super::seed_files::collect(&super::seed_files::Wanted {
        unit: a.unit.as_deref(),
        fleet: a.fleet.as_deref(),
        backup_key: a.backup_key.as_deref(),
        fleet_ca: a.fleet_ca.as_deref(),
        central_password: a.central_password.as_deref(),
    })?;
    let o = Options {
        image: a.image.clone(),
        bmap: a.bmap.clone(),
        target: a.target.clone(),
        allow_large: a.allow_large,
        running_system: false,
        seed,
    };
    let r = flash::flash(&o, rep, None)?;
    if rep.mode() == Mode::Json {
        rep.event("result", json!(r));
    } else {
        eprintln!(
            "{}: {} written and verified in {:.1} s + {:.1} s; it can be removed",
            a.target.display(),
            indicatif::HumanBytes(r.written),
            r.write_seconds,
            r.verify_seconds
        );
    }
    Ok(0)
}
