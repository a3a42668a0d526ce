//! Store stage: the stack's images put into Docker's own image store
//! (`/var/lib/docker`) at build time, so that the unit's first boot loads
//! nothing. Loading a 214 MiB archive took most of the 170 s stack stage
//! under software emulation, and it scales with the hardware.
//!
//! The store is written by a private dockerd (Debian's, the same Engine the
//! image runs) on a data root in the build cache: `docker load` of each
//! archive, every image id checked against the manifest, the daemon
//! stopped, and everything but the image store (`image/`, `overlay2/`)
//! removed. The result is cached by a digest of the archives and the
//! daemon's version, and hard-linked into the tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flypack_contracts::cmd::Cmd;
use flypack_contracts::digest::KeyHasher;
use flypack_engine::docker;

use crate::progress::Reporter;
use crate::stages::images::Images;

/// Where Docker keeps its store inside the image.
pub const STORE_DIR: &str = "var/lib/docker";
/// Version of the way the store is made (part of the cache key).
const FORMAT: &str = "1";
/// Cached stores kept (each is the size of the images, unpacked).
const KEEP: usize = 2;
/// What of a data root is the image store; the rest is the daemon's runtime
/// state, made afresh on the unit.
const KEEP_DIRS: &[&str] = &["image", "overlay2"];

/// What the stage produced.
#[derive(Debug, Clone)]
pub struct Store {
    /// The cached data root (`image/`, `overlay2/`).
    pub dir: PathBuf,
    /// The dockerd version that wrote it.
    pub dockerd: String,
    /// Whether it came from the cache.
    pub cached: bool,
}

fn dockerd_version() -> Result<String> {
    let out = Cmd::new("dockerd")
        .arg("--version")
        .run()
        .context("the Docker daemon fills the image's container store at build time")?;
    Ok(out.stdout_str().trim().to_string())
}

/// Runs the stage: the cached store for these archives, made if missing.
pub fn run(images: &Images, cache: &Path, rep: &Reporter) -> Result<Store> {
    let dockerd = dockerd_version()?;
    let mut h = KeyHasher::new();
    h.part("format", FORMAT);
    h.part("dockerd", &dockerd);
    for (src, name) in &images.archives {
        h.part("archive", name);
        h.part("sha256", flypack_contracts::digest::sha256_file(src)?);
    }
    for i in &images.images {
        h.part("image", format!("{} {}", i.reference, i.id));
    }
    let key = h.finish();
    let root = cache.join("docker-store");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let dir = root.join(&key[..16]);
    let lock_path = root.join(format!("{}.lock", &key[..16]));
    let _turn = super::take_turn(&lock_path, || {
        rep.info("another build is making the same Docker store; waiting for it");
    })?;
    if dir.join("image").is_dir() {
        let stage = rep.stage("store", "reusing the cached Docker store");
        super::touch(&dir)?;
        stage.done(&format!("cached {}", &key[..16]));
        return Ok(Store {
            dir,
            dockerd,
            cached: true,
        });
    }
    let stage = rep.stage("store", "loading the images into a Docker store");
    let work = flypack_contracts::atomic::temp_dir_in(&cache.join("work"), "store")?;
    let data = work.path().join("data");
    let daemon = docker::Daemon::start(&data, Duration::from_secs(120))?;
    let res = flypack_engine::rt::block_on(async {
        let d = docker::connect(Some(daemon.socket()), Duration::from_secs(30)).await?;
        for (src, name) in &images.archives {
            stage.progress(&format!("docker load {name}"));
            docker::load_archive(&d, src, docker::STALL, &mut |p| stage.bytes(p.sent, p.total))
                .await
                .with_context(|| format!("loading {name} into the image's Docker store"))?;
        }
        for i in &images.images {
            let id = docker::image_id(&d, &i.reference).await?;
            if id.as_deref() != Some(i.id.as_str()) {
                bail!(
                    "after loading, {} has id {:?} in the Docker store, the manifest says {}",
                    i.reference,
                    id,
                    i.id
                );
            }
        }
        anyhow::Ok(())
    })
    .and_then(|r| r);
    if let Err(e) = res {
        let tail = daemon.log_tail(15);
        // The load failed: the daemon's state is thrown away with the work dir.
        daemon.stop().ok();
        return Err(e).with_context(|| format!("the private dockerd said:\n{tail}"));
    }
    daemon.stop()?;
    for e in fs::read_dir(&data).with_context(|| format!("listing {}", data.display()))? {
        let e = e?;
        if !KEEP_DIRS.iter().any(|k| e.file_name() == *k) {
            flypack_contracts::atomic::remove_any(&e.path())?;
        }
    }
    fs::rename(&data, &dir).with_context(|| format!("moving the store to {}", dir.display()))?;
    flypack_contracts::atomic::fsync_dir(&root)?;
    prune(&root, &dir)?;
    stage.done(&format!("{} images", images.images.len()));
    Ok(Store {
        dir,
        dockerd,
        cached: false,
    })
}

/// Keeps the [`KEEP`] most recently used stores.
fn prune(root: &Path, current: &Path) -> Result<()> {
    let mut stores: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for e in fs::read_dir(root)? {
        let e = e?;
        let p = e.path();
        if p.is_dir() && p != current {
            stores.push((e.metadata()?.modified()?, p));
        }
    }
    stores.sort();
    let excess = (stores.len() + 1).saturating_sub(KEEP);
    for (_, p) in stores.into_iter().take(excess) {
        tracing::info!("pruning the cached Docker store {}", p.display());
        flypack_contracts::atomic::remove_any(&p)?;
        flypack_contracts::atomic::remove_any(&p.with_extension("lock")).ok();
    }
    Ok(())
}

/// Puts the store into the tree at [`STORE_DIR`] as hard links to the cache
/// (nothing writes to it before the disk stage copies it out).
pub fn install(store: &Store, tree: &Path) -> Result<()> {
    let dst = tree.join(STORE_DIR);
    flypack_contracts::atomic::remove_any(&dst)?;
    fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
    fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(0o710))
        .with_context(|| format!("setting the mode of {}", dst.display()))?;
    for d in KEEP_DIRS {
        Cmd::new("cp")
            .args(["-a", "--link"])
            .arg(store.dir.join(d))
            .arg(&dst)
            .run()
            .with_context(|| format!("linking the Docker store's {d} into the tree"))?;
    }
    Ok(())
}
