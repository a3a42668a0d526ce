//! The build stages, in order: rootfs, gate, images, store, tree, disk,
//! installer, outputs. Each takes the plan (and what the previous
//! stage produced) and returns what it produced.

pub mod disk;
pub mod gate;
pub mod images;
pub mod installer;
pub mod outputs;
pub mod rootfs;
pub mod store;
pub mod tree;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// Takes the cache entry at `lock_path` for this build: one build makes a
/// given entry at a time, and one that must wait says `waiting` first. The
/// turn ends when the returned file is dropped.
pub(crate) fn take_turn(lock_path: &Path, waiting: impl FnOnce()) -> Result<fs::File> {
    let lock = fs::File::create(lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        waiting();
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
    }
    Ok(lock)
}

/// Sets the modification time of `path` (a file or a folder).
pub(crate) fn set_mtime(path: &Path, time: std::time::SystemTime) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.set_modified(time))
        .with_context(|| format!("setting the time of {}", path.display()))
}

/// Marks a cache entry used now, so pruning keeps it.
pub(crate) fn touch(path: &Path) -> Result<()> {
    set_mtime(path, std::time::SystemTime::now())
}

/// Keeps the newest `count` cached archives (`*.tar`) in `dir`, `keep`
/// among them; an archive goes with its companions (the same name with
/// each of `companions` for extension). Files named `docker-*` are not
/// archives of ours and are left alone.
pub(crate) fn prune_archives(dir: &Path, keep: &Path, count: usize, companions: &[&str], what: &str) -> Result<()> {
    let mut tars: Vec<(std::time::SystemTime, std::path::PathBuf)> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar") && p != keep)
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("docker-"))
        })
        .filter_map(|p| fs::metadata(&p).and_then(|m| m.modified()).ok().map(|t| (t, p)))
        .collect();
    tars.sort();
    let excess = tars.len().saturating_sub(count.saturating_sub(1));
    for (_, p) in tars.into_iter().take(excess) {
        tracing::info!("pruning the cached {what} {}", p.display());
        flypack_contracts::atomic::remove_any(&p)?;
        for ext in companions {
            flypack_contracts::atomic::remove_any(&p.with_extension(ext))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_archives_with_their_companions() {
        let d = tempfile::tempdir().unwrap();
        let t0 = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            for ext in ["tar", "ids.json", "lock"] {
                let p = d.path().join(format!("{k}.{ext}"));
                fs::write(&p, k).unwrap();
                fs::File::open(&p)
                    .unwrap()
                    .set_modified(t0 + std::time::Duration::from_secs(i as u64 * 60))
                    .unwrap();
            }
        }
        fs::write(d.path().join("docker-x.tar"), "x").unwrap();
        // `a` is the oldest but the one in use: kept, with the newest other.
        prune_archives(d.path(), &d.path().join("a.tar"), 2, &["ids.json", "lock"], "test").unwrap();
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "a.ids.json",
                "a.lock",
                "a.tar",
                "d.ids.json",
                "d.lock",
                "d.tar",
                "docker-x.tar"
            ]
        );
    }
}
