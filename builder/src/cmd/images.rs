//! `builder images`: the stack's container images on their own.

use anyhow::{Context, Result, bail};
use flypack_contracts::manifest::ContainerImage;
use flypack_contracts::stack::StackConfig;
use serde_json::json;

use crate::cli::ImagesArgs;
use crate::plan::Options;
use crate::progress::{Mode, Reporter};

/// Builds the images into `--out` with a stack config using host paths.
pub fn run(args: &ImagesArgs, rep: &Reporter) -> Result<i32> {
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
        refresh_rootfs: false,
        ids: None,
    };
    let plan = crate::build::plan(&opts)?;
    let Some(stack) = &plan.stack else {
        bail!("{} has no [stack]", plan.profile.path)
    };
    crate::build::preflight(&plan)?;
    let images = crate::stages::images::run(&plan, &plan.cache_dir, rep)?.context("no images")?;
    let out = std::fs::canonicalize(&args.out).with_context(|| format!("{}", args.out.display()))?;
    for (src, name) in &images.archives {
        let dst = out.join(name);
        let tmp = flypack_contracts::atomic::TempPath::sibling(&dst)?;
        std::fs::copy(src, tmp.path()).with_context(|| format!("copying {}", src.display()))?;
        tmp.persist(&dst)?;
    }
    let compose = std::fs::canonicalize(stack.compose_dir.join(&stack.compose_file)).context("the compose file")?;
    let cfg = StackConfig {
        project: stack.project.clone(),
        compose: compose.display().to_string(),
        profiles: stack.profiles.clone(),
        images: images
            .images
            .iter()
            .map(|i| ContainerImage {
                archive: i.archive.as_ref().map(|a| out.join(a).display().to_string()),
                ..i.clone()
            })
            .collect(),
    };
    let cfg_path = out.join("stack.json");
    flypack_contracts::atomic::write_atomic(&cfg_path, &serde_json::to_vec_pretty(&cfg)?, 0o644)?;
    if rep.mode() == Mode::Json {
        rep.event("result", json!({ "config": cfg_path, "images": cfg.images }));
    } else {
        for i in &cfg.images {
            eprintln!("{} {} in {}", i.reference, i.id, i.archive.as_deref().unwrap_or("?"));
        }
        eprintln!("stack config: {}", cfg_path.display());
    }
    Ok(0)
}
