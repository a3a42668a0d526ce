//! `firstboot backup`: one archive of the unit's identity and data, and the
//! first-boot side of `builder restore` (the `restore` stage and the
//! volume fill the stack stage does before any container starts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flypack_contracts::atomic::TempPath;
use flypack_contracts::backup::{self, IDENTITY, Manifest, VOLUMES, Writer};
use flypack_contracts::cmd::Cmd;
use flypack_contracts::compose::Source;
use flypack_contracts::layout::target;

use crate::root::Root;

/// Default folder for backups on the unit.
pub const DEFAULT_DIR: &str = "/var/backups/flypack";
/// Where `builder restore` puts the archive in the restored image.
pub const RESTORE_ARCHIVE: &str = "/var/lib/flypack/restore/backup.tar.zst";
/// Volume data waiting for the stack stage.
pub const RESTORE_VOLUMES: &str = "/var/lib/flypack/restore/volumes";
/// Written once the restore stage has put identity back (what, from where).
pub const RESTORED: &str = "/etc/flypack/restored.json";
/// The unit config from the backup (wins over seed, fleet and defaults).
pub const RESTORED_UNIT: &str = "/etc/flypack/unit.restored.toml";
/// Compose label on a service: how its volumes are backed up
/// (`skip`, or `victoriametrics-snapshot` for a consistent copy).
pub const BACKUP_LABEL: &str = "org.flypack.backup";
/// Archive file names end with this.
pub const SUFFIX: &str = ".flypack-backup.tar.zst";

/// Identity files and folders, by path on the unit (those that exist).
pub const IDENTITY_PATHS: &[&str] = &[
    "/etc/hostname",
    "/etc/machine-id",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_rsa_key.pub",
    "/etc/flypack/unit.toml",
    "/etc/flypack/unit.source.json",
    "/etc/flypack/ssh",
    "/etc/flypack/tls",
    "/etc/flypack/secrets",
    "/var/lib/flypack/webapp/users.json",
];

/// What `firstboot backup` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Folder for the archive.
    pub out: PathBuf,
    /// Keep this many archives in `out` (oldest removed).
    pub keep: usize,
    /// Also copy it here (a mounted USB disk).
    pub copy_to: Vec<PathBuf>,
    /// Also copy it here over SSH (`user@host:path`, scp).
    pub ssh: Vec<String>,
}

fn image_name(root: &Root) -> String {
    std::fs::read(root.path(format!("/{}", target::MANIFEST)))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["name"].as_str().map(String::from))
        .unwrap_or_else(|| "flypack".into())
}

/// Takes a VictoriaMetrics snapshot through its API; returns its name.
fn vm_snapshot(port: u16) -> Result<String> {
    let url = format!("http://127.0.0.1:{port}/snapshot/create");
    let text = ureq::post(&url)
        .config()
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .send_empty()
        .with_context(|| format!("POST {url}"))?
        .body_mut()
        .read_to_string()
        .context("reading the snapshot answer")?;
    let body: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("VictoriaMetrics answered {text:?}"))?;
    match body["snapshot"].as_str() {
        Some(s) if body["status"] == "ok" && !s.contains('/') && !s.is_empty() => Ok(s.to_string()),
        _ => bail!("VictoriaMetrics did not make a snapshot: {body}"),
    }
}

fn vm_snapshot_delete(port: u16, name: &str) {
    let url = format!("http://127.0.0.1:{port}/snapshot/delete?snapshot={name}");
    if let Err(e) = ureq::post(&url).send_empty() {
        tracing::warn!("deleting snapshot {name}: {e}");
    }
}

/// The host port VictoriaMetrics's 8428 is published on, if it is.
fn published(svc: &flypack_contracts::compose::Service, container: u16) -> Option<u16> {
    svc.ports
        .iter()
        .find(|p| p.container_port == container)
        .map(|p| p.host_port)
}

/// `firstboot backup`: writes the archive; returns its path and manifest.
pub fn create(root: &Root, o: &Options) -> Result<(PathBuf, Manifest)> {
    let hostname = std::fs::read_to_string(root.path("/etc/hostname"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let stamp = time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let out_dir = root.path(&o.out);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let dest = out_dir.join(format!("{hostname}-{stamp}{SUFFIX}"));
    let tmp = TempPath::sibling(&dest)?;
    let file = std::fs::File::create(tmp.path()).with_context(|| format!("creating {}", tmp.path().display()))?;
    let mut w = Writer::new(std::io::BufWriter::new(file))?;
    for p in IDENTITY_PATHS {
        let src = root.path(p);
        if std::fs::symlink_metadata(&src).is_ok() {
            w.add_path(&src, &format!("{IDENTITY}{p}"), false)?;
        }
    }
    let mut how = std::collections::BTreeMap::new();
    let mut snapshots = Vec::new();
    if let Some((_, stack)) = crate::docker::load_stack(root)? {
        let mounts = volume_mountpoints(&stack)?;
        for svc in &stack.services {
            let label = svc.labels.get(BACKUP_LABEL).map(String::as_str).unwrap_or("copy");
            for m in &svc.mounts {
                let Source::Volume { name } = &m.source else { continue };
                if how.contains_key(name) {
                    continue;
                }
                let Some(dir) = mounts.get(name) else {
                    tracing::warn!("volume {name} does not exist yet: not in the backup");
                    continue;
                };
                let dir = root.path(dir);
                match label {
                    "skip" => {
                        how.insert(name.clone(), "skipped (label org.flypack.backup=skip)".to_string());
                    }
                    "victoriametrics-snapshot" => {
                        let port = published(svc, 8428).context("victoriametrics: port 8428 is not published")?;
                        let snap = vm_snapshot(port)?;
                        snapshots.push((port, snap.clone()));
                        // The snapshot's parts are links into the live data: store their content.
                        let src = dir.join("snapshots").join(&snap);
                        w.add_path(&src, &format!("{VOLUMES}/{name}"), true)
                            .with_context(|| format!("copying VictoriaMetrics snapshot {snap}"))?;
                        how.insert(name.clone(), format!("VictoriaMetrics snapshot {snap}"));
                    }
                    _ => {
                        w.add_path(&dir, &format!("{VOLUMES}/{name}"), false)?;
                        how.insert(name.clone(), "copied".to_string());
                    }
                }
            }
        }
    }
    let manifest = Manifest {
        schema: backup::SCHEMA,
        image: image_name(root),
        hostname: hostname.clone(),
        created: crate::runner::now(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        volumes: how,
        entries: vec![],
    };
    let res = w.finish(manifest);
    for (port, s) in &snapshots {
        vm_snapshot_delete(*port, s);
    }
    let (buf, manifest) = res?;
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    tmp.persist(&dest)?;
    // Read it back before any older one is removed.
    backup::verify(&dest).with_context(|| format!("re-reading {}", dest.display()))?;
    prune(&out_dir, o.keep)?;
    for d in &o.copy_to {
        let to = d.join(dest.file_name().expect("file name"));
        let t = TempPath::sibling(&to)?;
        std::fs::copy(&dest, t.path()).with_context(|| format!("copying to {}", d.display()))?;
        std::fs::File::open(t.path())?.sync_all()?;
        t.persist(&to)?;
        backup::verify(&to).with_context(|| format!("re-reading {}", to.display()))?;
    }
    for target in &o.ssh {
        Cmd::new("scp")
            .args(["-q", "-o", "BatchMode=yes"])
            .arg(&dest)
            .arg(target)
            .run()
            .with_context(|| format!("copying to {target} over SSH"))?;
    }
    Ok((dest, manifest))
}

/// Removes all but the `keep` newest archives in `dir`.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(SUFFIX)))
        .collect();
    all.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let n = all.len().saturating_sub(keep.max(1));
    let old: Vec<PathBuf> = all.into_iter().take(n).collect();
    for p in &old {
        std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(old)
}

/// Host paths of the stack's volumes that exist, by compose name.
fn volume_mountpoints(
    stack: &flypack_contracts::compose::Stack,
) -> Result<std::collections::BTreeMap<String, PathBuf>> {
    crate::docker::block_on(async {
        let d = crate::docker::connect_running().await?;
        let mut out = std::collections::BTreeMap::new();
        for v in &stack.volumes {
            let full = crate::docker::volume_name(stack, v);
            if let Ok(info) = d.inspect_volume(&full).await {
                out.insert(v.clone(), PathBuf::from(info.mountpoint));
            }
        }
        Ok(out)
    })
}

/// The `restore` stage's work: when `builder restore` left an archive,
/// verify it, put identity files in place (the unit config as
/// [`RESTORED_UNIT`]) and stage volume data. Returns what it did, or None
/// when there is nothing to restore.
pub fn restore_identity(root: &Root) -> Result<Option<String>> {
    let archive = root.path(RESTORE_ARCHIVE);
    if !archive.exists() {
        return Ok(None);
    }
    let m = backup::verify(&archive).context("the backup to restore")?;
    let staging = root.path("/var/lib/flypack/restore/identity");
    let _ = std::fs::remove_dir_all(&staging);
    backup::extract(&archive, IDENTITY, &staging)?;
    let mut placed = Vec::new();
    for p in IDENTITY_PATHS {
        let from = staging.join(p.trim_start_matches('/'));
        if std::fs::symlink_metadata(&from).is_err() {
            continue;
        }
        // The unit config is not put in force directly: the config step
        // picks it up, ahead of the seed and fleet.
        let to = if *p == "/etc/flypack/unit.toml" {
            root.path(RESTORED_UNIT)
        } else {
            root.path(p)
        };
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if from.is_dir() {
            let _ = std::fs::remove_dir_all(&to);
            Cmd::new("cp").arg("-a").arg(&from).arg(&to).run()?;
        } else {
            std::fs::rename(&from, &to).with_context(|| format!("putting back {p}"))?;
        }
        placed.push(*p);
    }
    let vols = root.path(RESTORE_VOLUMES);
    for name in m.volumes.keys() {
        let dest = vols.join(name);
        if dest.exists() {
            continue;
        }
        let tmp = vols.join(format!(".{name}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        backup::extract(&archive, &format!("{VOLUMES}/{name}"), &tmp)?;
        std::fs::rename(&tmp, &dest)?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    let note = serde_json::json!({
        "hostname": m.hostname, "backup_created": m.created, "image": m.image,
        "identity": placed, "volumes": m.volumes, "restored": crate::runner::now(),
    });
    flypack_contracts::atomic::write_atomic(
        &root.path(RESTORED),
        serde_json::to_vec_pretty(&note)?.as_slice(),
        0o644,
    )?;
    // Done with the archive: a later boot must not restore over new data.
    std::fs::remove_file(&archive)?;
    Ok(Some(format!(
        "restored {} (backup of {} from {}): {} identity files, volumes {}",
        m.hostname,
        m.image,
        m.created,
        placed.len(),
        m.volumes.keys().cloned().collect::<Vec<_>>().join(", ")
    )))
}

/// Before a new volume is first used: fill it from the restored backup.
pub fn fill_volume(root: &Root, name: &str, mountpoint: &Path) -> Result<bool> {
    let staged = root.path(RESTORE_VOLUMES).join(name);
    if !staged.is_dir() {
        return Ok(false);
    }
    let dest = root.path(mountpoint);
    Cmd::new("cp")
        .arg("-a")
        .arg(format!("{}/.", staged.display()))
        .arg(&dest)
        .run()
        .with_context(|| format!("filling volume {name} from the backup"))?;
    std::fs::remove_dir_all(&staged)?;
    tracing::info!("volume {name}: filled from the restored backup");
    Ok(true)
}
