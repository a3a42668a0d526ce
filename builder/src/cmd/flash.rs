//! `builder flash`.

use anyhow::Result;
use serde_json::json;

use crate::cli::FlashArgs;
use crate::flash::{self, Options};
use crate::progress::{Mode, Reporter};

/// Flashes and reports.
pub fn run(a: &FlashArgs, rep: &Reporter) -> Result<i32> {
    if let Some(u) = &a.unit {
        let text = std::fs::read_to_string(u).map_err(|e| anyhow::anyhow!("reading {}: {e}", u.display()))?;
        flypack_contracts::unit::parse_unit(u, &text)?;
    }
    let o = Options {
        image: a.image.clone(),
        bmap: a.bmap.clone(),
        target: a.target.clone(),
        allow_large: a.allow_large,
        unit: a.unit.clone(),
        fleet: a.fleet.clone(),
    };
    let r = flash::flash(&o, rep)?;
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
