//! `builder build`: validate → plan → rootfs (+ images, store) → tree (+ security gate) → disk → outputs.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use flypack_contracts::manifest::{BinaryInfo, MANIFEST_SCHEMA, Manifest, RootfsInfo};
use time::format_description::well_known::Rfc3339;

use crate::host::{self, Need};
use crate::plan::{self, Options, Plan, RootfsPlan};
use crate::profile::Profile;
use crate::progress::Reporter;
use crate::stages::{self, outputs::Written, rootfs::Rootfs};

/// Loads the profile and makes the plan (what `--dry-run` prints).
pub fn plan(opts: &Options) -> Result<Plan> {
    let profile = Profile::load(&opts.profile)?;
    plan::make(&profile, opts)
}

/// Checks the output and cache folders before any long work.
pub fn preflight(plan: &Plan) -> Result<()> {
    for (what, dir) in [("output folder", &plan.out_dir), ("cache folder", &plan.cache_dir)] {
        fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the {what} {}: choose another with --out/--cache-dir, or fix its permissions",
                dir.display()
            )
        })?;
        let probe = dir.join(format!(
            "{}probe.{}",
            flypack_contracts::atomic::TEMP_PREFIX,
            std::process::id()
        ));
        fs::write(&probe, b"").with_context(|| {
            format!(
                "the {what} {} is not writable: choose another with --out/--cache-dir, or fix its permissions",
                dir.display()
            )
        })?;
        fs::remove_file(&probe).with_context(|| format!("removing {}", probe.display()))?;
        let n = flypack_contracts::atomic::sweep_stale_temps(dir)?;
        if n > 0 {
            tracing::info!("removed {n} leftovers of interrupted builds from {}", dir.display());
        }
    }
    let work = plan.cache_dir.join("work");
    flypack_contracts::atomic::sweep_stale_temps(&work)?;
    host::require(&[Need::Build])?;
    if !rustix::process::geteuid().is_root() {
        anyhow::bail!(
            "builder build must run as root: it unpacks the root filesystem with its owners and \
             runs mmdebstrap in root mode (it never mounts anything or uses loop devices); run it with sudo"
        );
    }
    Ok(())
}

/// The manifest, without outputs.
pub fn manifest(plan: &Plan, rootfs: &Rootfs) -> Result<Manifest> {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0)?;
    Ok(Manifest {
        schema: MANIFEST_SCHEMA,
        name: plan.name.clone(),
        builder_version: plan.builder_version.to_string(),
        built_at: now.format(&Rfc3339)?,
        profile: plan.profile.clone(),
        plan_digest: plan.digest.clone(),
        rootfs: RootfsInfo {
            digest: plan.rootfs.key.clone(),
            suite: plan.rootfs.suite.clone(),
            mirror: plan.rootfs.mirror.clone(),
            snapshot: plan.rootfs.snapshot.clone(),
        },
        packages: rootfs.packages.clone(),
        firstboot: BinaryInfo {
            sha256: plan.firstboot.sha256.clone(),
            glibc_required: plan.firstboot.glibc_required.clone(),
        },
        webapp: Some(BinaryInfo {
            sha256: plan.webapp.sha256.clone(),
            glibc_required: plan.webapp.glibc_required.clone(),
        }),
        disk: plan.disk.info(),
        container_images: Vec::new(),
        docker_store: None,
        security: None,
        outputs: Vec::new(),
    })
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The files written.
    pub written: Written,
    /// Whether the root filesystem came from the cache.
    pub rootfs_cached: bool,
    /// Seconds per stage, in order.
    pub stage_seconds: Vec<(&'static str, f64)>,
}

/// Runs every stage of `plan`.
pub fn run(plan: &Plan, rep: &Reporter) -> Result<Report> {
    let mut secs = Vec::new();
    let mut t = std::time::Instant::now();
    let mut lap = |name: &'static str, secs: &mut Vec<(&'static str, f64)>| {
        secs.push((name, t.elapsed().as_secs_f64()));
        t = std::time::Instant::now();
    };
    preflight(plan)?;
    // The container images (their own mmdebstraps and package cache) and
    // the Docker store they are loaded into are made on another thread while
    // the appliance's root filesystem is: dpkg keeps about one core busy, and
    // a cold build used to wait for each in turn.
    let (appliance, containers) = std::thread::scope(|scope| {
        let containers = scope.spawn(|| {
            let mut laps = Vec::new();
            let t = std::time::Instant::now();
            let images = stages::images::run(plan, &plan.cache_dir, rep)?;
            laps.push(("images", t.elapsed().as_secs_f64()));
            let t = std::time::Instant::now();
            let store = match &images {
                Some(i) => {
                    crate::interrupt::check()?;
                    let s = stages::store::run(i, &plan.cache_dir, rep)?;
                    laps.push(("store", t.elapsed().as_secs_f64()));
                    Some(s)
                }
                None => None,
            };
            anyhow::Ok((images, store, laps))
        });
        let rootfs = appliance_rootfs(&plan.rootfs, plan, rep);
        if rootfs.is_err() {
            // Moot now: stop it rather than wait for it.
            crate::interrupt::stop_the_rest();
        }
        (rootfs, containers.join())
    });
    let (mut rootfs, rootfs_secs) = appliance?;
    let (images, store, container_laps) =
        containers.map_err(|_| anyhow::anyhow!("the container images' thread panicked"))??;
    secs.push(("rootfs", rootfs_secs));
    secs.extend(container_laps);
    // Restart the clock for the stages below (those above timed themselves).
    lap("", &mut Vec::new());
    crate::interrupt::check()?;
    let in_store = |mut m: Manifest| {
        if let (Some(i), Some(s)) = (&images, &store) {
            m.container_images = i.in_store();
            m.docker_store = Some(s.dockerd.clone());
        }
        m
    };
    let mut manifest = in_store(manifest(plan, &rootfs)?);
    // The security gate reads the archive's indices (the network, then gpgv
    // and xz) while the tree is laid: only its verdict, and the report in
    // the manifest, wait for it.
    let (security, tree) = std::thread::scope(|scope| {
        let gate = scope.spawn(|| {
            let t = std::time::Instant::now();
            let r = stages::gate::check(&plan.gate, &rootfs.packages, &plan.cache_dir, rep);
            r.map(|r| (r, t.elapsed().as_secs_f64()))
        });
        let tree = stages::tree::run(plan, &rootfs, store.as_ref(), &manifest, rep);
        let security = gate
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the security gate's thread panicked")));
        (security, tree)
    });
    let (mut security, gate_secs) = security?;
    let mut tree = tree?;
    secs.push(("gate", gate_secs));
    lap("tree", &mut secs);
    // A cache must never give what a fresh build would not: when the cached
    // root filesystem lags a security or updates index (Debian published a
    // fix since it was made) and no snapshot pins the archive, build it again
    // from the archive, which has the fix, check again, and lay the tree again.
    let stale = security.as_ref().is_some_and(|r| fresh_build_would_take(plan, r));
    if stale && rootfs.cached && plan.rootfs.snapshot.is_none() {
        drop(tree);
        rep.info("the cached root filesystem lags the security index: building it again from the archive");
        let fresh = RootfsPlan {
            refresh: true,
            ..plan.rootfs.clone()
        };
        let (again, rootfs_secs) = appliance_rootfs(&fresh, plan, rep)?;
        rootfs = again;
        secs.push(("rootfs (refreshed)", rootfs_secs));
        lap("", &mut Vec::new());
        security = stages::gate::check(&plan.gate, &rootfs.packages, &plan.cache_dir, rep)?;
        lap("gate (again)", &mut secs);
        manifest = in_store(self::manifest(plan, &rootfs)?);
        tree = stages::tree::run(plan, &rootfs, store.as_ref(), &manifest, rep)?;
        lap("tree (again)", &mut secs);
    }
    if let Some(r) = &security {
        stages::gate::enforce(r)?;
    }
    manifest.security = security;
    stages::tree::write_manifest(&mut tree, &manifest)?;
    crate::interrupt::check()?;
    // With an installer, its tree is copied from the appliance's (while the
    // appliance image is made from it: both only read it) and the two disk
    // images are made side by side (mkfs.ext4 -d keeps about one core busy);
    // the installer then takes the appliance image in, and the trees (removed
    // while it hashes the stick). Without one, the tree's GiBs are removed
    // while the outputs are hashed.
    let (disk, installer, tree) = if plan.outputs.installer.is_some() {
        let (disk, stick) = std::thread::scope(|scope| {
            let appliance = scope.spawn(|| stages::disk::run(plan, &tree, rep));
            let stick = stages::installer::prepare(plan, &tree, rep).and_then(|stick| {
                let made = stages::installer::disk(plan, &stick, rep)?;
                Ok((stick, made))
            });
            let disk = appliance
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the appliance image's thread panicked")));
            (disk, stick)
        });
        let (disk, (stick, stick_disk)) = (disk?, stick?);
        lap("disk", &mut secs);
        crate::interrupt::check()?;
        let installer = stages::installer::finish(plan, stick, stick_disk, &disk, tree, rep)?;
        lap("installer", &mut secs);
        (disk, Some(installer), None)
    } else {
        let disk = stages::disk::run(plan, &tree, rep)?;
        lap("disk", &mut secs);
        (disk, None, Some(tree))
    };
    // While the outputs are hashed, the images' data goes to the disk (the
    // renames into place fsync them again, with little left to write). The
    // build ends once both are done.
    let images: Vec<std::path::PathBuf> = [Some(&disk), installer.as_ref()]
        .into_iter()
        .flatten()
        .map(|d| d.image.path().to_path_buf())
        .collect();
    let removal = std::thread::spawn(move || drop(tree));
    let syncing = std::thread::spawn(move || {
        for p in images {
            let _ = fs::File::open(&p).and_then(|f| f.sync_data());
        }
    });
    let written = crate::interrupt::check().and_then(|()| stages::outputs::run(plan, disk, installer, manifest, rep));
    let _ = syncing.join();
    if removal.join().is_err() {
        tracing::warn!("removing the build's work tree failed; the next build sweeps it");
    }
    let written = written?;
    lap("outputs", &mut secs);
    Ok(Report {
        written,
        rootfs_cached: rootfs.cached,
        stage_seconds: secs,
    })
}

/// The appliance's root filesystem as `rootfs` plans it (from the cache or
/// the archive), with the seconds it took; its libc6 checked against
/// firstboot's needs.
fn appliance_rootfs(rootfs: &RootfsPlan, plan: &Plan, rep: &Reporter) -> Result<(Rootfs, f64)> {
    let t = std::time::Instant::now();
    let made = stages::rootfs::run(rootfs, &plan.cache_dir, Path::new(&plan.profile.path), rep)?;
    let secs = t.elapsed().as_secs_f64();
    check_glibc(plan, &made)?;
    Ok((made, secs))
}

/// The root filesystem's libc6 must be at least what firstboot needs.
/// Whether a lagging package of `report` comes from an index that the root
/// filesystem's own apt sources include, so that building it again from the
/// archive would take the newer version.
fn fresh_build_would_take(plan: &Plan, report: &flypack_contracts::manifest::SecurityReport) -> bool {
    stages::gate::open(report).iter().any(|l| {
        plan.gate.indices.iter().any(|(base, dist)| {
            *dist == l.index
                && plan.rootfs.sources.iter().any(|line| {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    words
                        .iter()
                        .any(|w| w.trim_end_matches('/') == base.trim_end_matches('/'))
                        && words.contains(&dist.as_str())
                })
        })
    })
}

fn check_glibc(plan: &Plan, rootfs: &Rootfs) -> Result<()> {
    let libc = rootfs
        .packages
        .iter()
        .find(|p| p.name == "libc6" || p.name == "libc6:amd64");
    if let (Some(libc), Some(need)) = (libc, plan.firstboot.glibc_required.split_once('.')) {
        let have = crate::elfcheck::debian_glibc(&libc.version).context("parsing libc6's version")?;
        let need: (u32, u32) = (need.0.parse()?, need.1.parse()?);
        if need > have {
            anyhow::bail!(
                "firstboot needs glibc {}.{} but the image has libc6 {}: build firstboot on Debian 12 or for musl",
                need.0,
                need.1,
                libc.version
            );
        }
    }
    Ok(())
}
