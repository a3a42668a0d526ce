//! `builder customize`: write a unit's config into an image's seed partition.

use std::path::Path;

use anyhow::{Context, Result, bail};
use flypack_contracts::seed;
use serde_json::json;

use crate::cli::CustomizeArgs;
use crate::progress::{Mode, Reporter};

/// Finds the seed partition (offset, length) of a Flypack image or disk.
pub fn seed_partition(image: &Path) -> Result<(u64, u64)> {
    seed::seed_partition(image)
}

/// Validates the files, then writes them into the seed.
pub fn run(args: &CustomizeArgs, rep: &Reporter) -> Result<i32> {
    if args.unit.is_none() && args.fleet.is_none() && args.backup_key.is_none() && !args.clear {
        bail!("nothing to do: give --unit FILE, --fleet FILE, --backup-key KEY, or --clear");
    }
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut summary = Vec::new();
    if let Some(u) = &args.unit {
        let text = std::fs::read_to_string(u).with_context(|| format!("reading {}", u.display()))?;
        let unit = flypack_contracts::unit::parse_unit(u, &text)?;
        summary.push(format!("unit.toml (hostname {})", unit.hostname));
        files.push((seed::UNIT_FILE, text.into_bytes()));
    }
    if let Some(f) = &args.fleet {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let fleet = flypack_contracts::unit::parse_fleet(f, &text)?;
        summary.push(format!("fleet.toml ({} units)", fleet.units.len()));
        files.push((seed::FLEET_FILE, text.into_bytes()));
    }
    if let Some(k) = &args.backup_key {
        let unit = flypack_engine::backup::UnitKey::load(k)?;
        summary.push(format!("backup-key.toml ({} recipient(s))", unit.recipients.len()));
        files.push((seed::BACKUP_KEY_FILE, unit.to_toml().into_bytes()));
    }
    let (offset, len) = seed_partition(&args.image)?;
    let mut remove = Vec::new();
    if args.clear {
        remove.extend([seed::UNIT_FILE, seed::FLEET_FILE, seed::BACKUP_KEY_FILE]);
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    seed::write(&args.image, offset, len, &refs, &remove)?;
    let now = seed::read(&args.image, offset, len)?;
    if rep.mode() == Mode::Json {
        rep.event("customized", json!({ "image": args.image, "seed_files": now.names }));
    } else {
        let what = if summary.is_empty() {
            "cleared the seed".to_string()
        } else {
            summary.join(", ")
        };
        eprintln!(
            "{}: wrote {what}; the seed now holds {}",
            args.image.display(),
            now.names.join(", ")
        );
    }
    Ok(0)
}
