//! `builder customize`: write a unit's config into an image's seed partition.

use std::path::Path;

use anyhow::{Result, bail};
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
    if args.unit.is_none()
        && args.fleet.is_none()
        && args.backup_key.is_none()
        && args.central_password.is_none()
        && !args.clear
    {
        bail!("nothing to do: give --unit FILE, --fleet FILE, --backup-key KEY, --central-password FILE, or --clear");
    }
    let (files, summary) = super::seed_files::collect(&super::seed_files::Wanted {
        unit: args.unit.as_deref(),
        fleet: args.fleet.as_deref(),
        backup_key: args.backup_key.as_deref(),
        fleet_ca: args.fleet_ca.as_deref(),
        central_password: args.central_password.as_deref(),
    })?;
    let (offset, len) = seed_partition(&args.image)?;
    let mut remove = Vec::new();
    if args.clear {
        remove.extend([
            seed::UNIT_FILE,
            seed::FLEET_FILE,
            seed::BACKUP_KEY_FILE,
            seed::CENTRAL_PASSWORD_FILE,
        ]);
        remove.extend(seed::TLS_FILES);
    } else if args.unit.is_some() && args.fleet_ca.is_none() {
        // A certificate signed for another unit config's names must not
        // stay beside this one.
        remove.extend(seed::TLS_FILES);
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
