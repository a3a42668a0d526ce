//! `builder build`.

use anyhow::Result;
use serde_json::json;

use crate::cli::{BootArgs, BuildArgs};
use crate::plan::Options;
use crate::progress::{Mode, Reporter};
use crate::qemu::{Accel, Firmware};

/// Builds (and optionally boots) an image.
pub fn run(args: &BuildArgs, rep: &Reporter) -> Result<i32> {
    let opts = Options {
        profile: args.profile.clone(),
        out_dir: args.out.clone(),
        cache_dir: args.cache_dir.clone().unwrap_or_else(super::default_cache_dir),
        firstboot: args.firstboot.clone().unwrap_or_else(super::sibling_firstboot),
        exporter: args
            .exporter
            .clone()
            .unwrap_or_else(|| super::sibling("flypack-exporter")),
        webapp: args.webapp.clone().unwrap_or_else(|| super::sibling("flypack-web")),
        refresh_rootfs: args.refresh_rootfs,
        ids: None,
    };
    let plan = crate::build::plan(&opts)?;
    if args.dry_run {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(0);
    }
    rep.info(&format!(
        "building {} from {} (root filesystem {})",
        plan.name,
        plan.profile.path,
        if plan.rootfs.cached && !plan.rootfs.refresh {
            "cached"
        } else {
            "to build: a few minutes"
        }
    ));
    let report = crate::build::run(&plan, rep)?;
    let written = &report.written;
    if rep.mode() == Mode::Json {
        let stages: serde_json::Map<String, serde_json::Value> = report
            .stage_seconds
            .iter()
            .map(|(n, s)| (n.to_string(), json!((s * 10.0).round() / 10.0)))
            .collect();
        rep.event(
            "result",
            json!({
                "image": written.image, "manifest": written.manifest, "sums": written.sums, "extra": written.extra,
                "data_bytes": written.image_data_bytes, "size_bytes": written.image_size,
                "rootfs_cached": report.rootfs_cached, "plan_digest": plan.digest, "stage_seconds": stages,
            }),
        );
    } else {
        eprintln!("\nbuilt {}", written.image.display());
        eprintln!("  manifest  {}", written.manifest.display());
        eprintln!("  checksums {}", written.sums.display());
        for e in &written.extra {
            eprintln!("  also      {}", e.display());
        }
        eprintln!(
            "try it:    builder boot {} --expect-ready 600 --forward 2222:22",
            written.image.display()
        );
    }
    if args.boot {
        let boot = BootArgs {
            image: written.image.clone(),
            firmware: Firmware::Bios,
            expect_ready: Some(600),
            keep_running: false,
            forward: vec![],
            guest_forward: vec![],
            accel: Accel::Tcg,
            memory: 2048,
            cpus: 2,
            disk_gib: 8,
            overlay: None,
            log: None,
            quiet: false,
            usb: vec![],
            installer: false,
            disk: vec![],
            until: None,
            media_listen: None,
            media_connect: None,
            media_tap: None,
            mgmt_tap: None,
            nat: false,
        };
        return super::boot::run(&boot, rep);
    }
    Ok(0)
}
