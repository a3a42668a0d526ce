//! `builder security-check`: the build's security gate on its own.

use anyhow::Result;
use serde_json::json;

use crate::cli::SecurityCheckArgs;
use crate::plan::Options;
use crate::progress::{Mode, Reporter};

/// Builds (or reuses) the root filesystem and runs the gate on it.
pub fn run(a: &SecurityCheckArgs, rep: &Reporter) -> Result<i32> {
    let opts = Options {
        profile: a.profile.clone(),
        out_dir: std::env::temp_dir(),
        cache_dir: a.cache_dir.clone().unwrap_or_else(super::default_cache_dir),
        firstboot: super::sibling_firstboot(),
        exporter: super::sibling("flypack-exporter"),
        webapp: super::sibling("flypack-web"),
        refresh_rootfs: false,
        ids: None,
    };
    let plan = crate::build::plan(&opts)?;
    if !plan.gate.enabled {
        eprintln!(
            "{}: the security gate is off ([security] gate = false)",
            a.profile.display()
        );
        return Ok(0);
    }
    let rootfs = crate::stages::rootfs::run(
        &plan.rootfs,
        &plan.cache_dir,
        std::path::Path::new(&plan.profile.path),
        rep,
    )?;
    let report = crate::stages::gate::run(&plan.gate, &rootfs.packages, &plan.cache_dir, rep)?;
    if rep.mode() == Mode::Json {
        rep.event("result", json!({ "security": report }));
    } else if let Some(r) = &report {
        for i in &r.indices {
            eprintln!("index {} ({})", i.url, i.date);
        }
        for l in &r.newer {
            eprintln!(
                "  {} {} (available {} in {}): waived: {}",
                l.package,
                l.installed,
                l.available,
                l.index,
                l.waived.as_deref().unwrap_or("no")
            );
        }
        eprintln!("{} packages checked: the image may be built", rootfs.packages.len());
    }
    Ok(0)
}
