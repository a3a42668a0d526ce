//! `builder flash`.

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::FlashArgs;
use crate::flash::{self, Options};
use crate::progress::{Mode, Reporter};

/// Flashes and reports.
pub fn run(a: &FlashArgs, rep: &Reporter) -> Result<i32> {
    // Every seed file is checked before the target is touched.
    let mut seed = Vec::new();
    if let Some(u) = &a.unit {
        let text = std::fs::read_to_string(u).with_context(|| format!("reading {}", u.display()))?;
        flypack_contracts::unit::parse_unit(u, &text)?;
        seed.push((flypack_contracts::seed::UNIT_FILE, text.into_bytes()));
    }
    if let Some(f) = &a.fleet {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        flypack_contracts::unit::parse_fleet(f, &text)?;
        seed.push((flypack_contracts::seed::FLEET_FILE, text.into_bytes()));
    }
    if let Some(k) = &a.backup_key {
        let unit = flypack_engine::backup::UnitKey::load(k)?;
        seed.push((flypack_contracts::seed::BACKUP_KEY_FILE, unit.to_toml().into_bytes()));
    }
    let o = Options {
        image: a.image.clone(),
        bmap: a.bmap.clone(),
        target: a.target.clone(),
        allow_large: a.allow_large,
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
