//! `firstboot backup`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::backup;
use crate::cli::{BackupArgs, BackupCommand};
use crate::root::Root;

/// Makes a backup, verifies a decrypted one, or prunes old ones.
pub fn run(root: &Root, a: &BackupArgs, seed: Option<&Path>) -> Result<i32> {
    if let Some(BackupCommand::Prune { dir, keep, json }) = &a.command {
        let dir = root.path(dir);
        // No folder yet: no backup was ever made, so nothing to remove.
        let removed = if dir.exists() {
            backup::prune(&dir, usize::from(*keep))
                .with_context(|| format!("pruning the backups in {}", dir.display()))?
        } else {
            Vec::new()
        };
        if *json {
            println!("{}", serde_json::json!({ "removed": removed, "keep": keep }));
        } else if removed.is_empty() {
            println!("{}: nothing to remove (at most {keep} archives)", dir.display());
        } else {
            for p in &removed {
                println!("removed {}", p.display());
            }
        }
        return Ok(0);
    }
    if let Some(BackupCommand::Verify { archive }) = &a.command {
        // A unit holds no key that decrypts: it verifies the decrypted copy
        // `builder restore` leaves, and says where a sealed one is verified.
        let (key, _) =
            backup::unit_key(root, seed)?.context("this unit has no backup key to authenticate an archive with")?;
        let (m, _) = flypack_engine::backup::verify(archive, &flypack_engine::backup::Keys::unit(&key))?;
        println!(
            "{}: OK: backup of {} ({} image) from {}, {} entries, {} bytes of data",
            archive.display(),
            m.hostname,
            m.image,
            m.created,
            m.entries.len(),
            m.data_bytes()
        );
        for (v, how) in &m.volumes {
            println!("  volume {v}: {how}");
        }
        return Ok(0);
    }
    let o = backup::Options {
        out: a.out.clone(),
        keep: a.keep,
        copy_to: a.copy_to.clone(),
        ssh: a.ssh.clone(),
    };
    let (path, m) = backup::create(root, &o, seed)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "archive": path, "hostname": m.hostname, "entries": m.entries.len(), "bytes": m.data_bytes(), "volumes": m.volumes })
        );
    } else {
        println!(
            "{}: {} entries, {} bytes of data, encrypted to the fleet's backup key, read back",
            path.display(),
            m.entries.len(),
            m.data_bytes()
        );
        for (v, how) in &m.volumes {
            println!("  volume {v}: {how}");
        }
    }
    Ok(0)
}
