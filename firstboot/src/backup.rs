//! `firstboot backup`: one archive of the unit's identity and data,
//! encrypted to the fleet's backup key and authenticated (see
//! `flypack_engine::backup`), and the first-boot side of `builder restore`
//! (the `restore` stage and the volume fill the stack stage does before any
//! container starts).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flypack_contracts::atomic::TempPath;
use flypack_contracts::cmd::Cmd;
use flypack_contracts::layout::target;
use flypack_engine::backup::{self, IDENTITY, Keys, Manifest, UnitKey, VOLUMES, Writer};
use flypack_engine::beneath::{self, Beneath};
use flypack_engine::compose::Source;
use sha2::{Digest, Sha256};

use crate::root::Root;

/// Default folder for backups on the unit (mode 0700; archives 0600).
pub const DEFAULT_DIR: &str = "/var/backups/flypack";
/// The unit part of the fleet's backup key in the image (the profile's
/// `[backup] key`); a `backup-key.toml` on the seed wins over it.
pub const UNIT_KEY: &str = "/etc/flypack/backup/unit-key.toml";
/// Where `builder restore` puts the (decrypted, still authenticated) archive
/// in the restored image.
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
/// Archive file names end with this (a tar.zst encrypted with age).
pub const SUFFIX: &str = ".flypack-backup.age";

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
    "/var/lib/flypack/webapp/sessions.json",
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

/// The backup key in force: the seed's, else the image's. `seed` is a seed
/// image for tests (`firstboot --seed`).
pub fn unit_key(root: &Root, seed: Option<&Path>) -> Result<Option<(UnitKey, String)>> {
    let loc = crate::config::locate_seed(root, seed)?;
    if let Ok(Some(files)) = crate::config::read_seed(&loc)
        && let Some(text) = files.backup_key
    {
        let k = UnitKey::parse(&text).context("seed:backup-key.toml is not a Flypack backup key")?;
        return Ok(Some((k, "seed:backup-key.toml".into())));
    }
    let p = root.path(UNIT_KEY);
    match std::fs::read_to_string(&p) {
        Ok(text) => Ok(Some((
            UnitKey::parse(&text).with_context(|| format!("{UNIT_KEY} is not a Flypack backup key"))?,
            format!("image:{UNIT_KEY}"),
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {UNIT_KEY}")),
    }
}

fn no_key() -> anyhow::Error {
    anyhow::anyhow!(
        "this unit has no backup key, so it cannot make a backup nobody else can read: make one with \
         `builder backup-key new`, then put its unit part in the profile ([backup] key) or on the seed \
         (`builder customize IMAGE --backup-key KEY`)"
    )
}

/// A writer that hashes what passes (the ciphertext, to read it back).
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Copies `from` to `to` (mode 0600, atomically) and checks the copy's digest.
fn copy_checked(from: &Path, to: &Path, sha: &str) -> Result<()> {
    let t = TempPath::sibling(to)?;
    std::fs::copy(from, t.path()).with_context(|| format!("copying to {}", to.display()))?;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o600))?;
    std::fs::File::open(t.path())?.sync_all()?;
    if flypack_contracts::digest::sha256_file(t.path())? != sha {
        bail!("{} did not read back intact", to.display());
    }
    t.persist(to)
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
fn published(svc: &flypack_engine::compose::Service, container: u16) -> Option<u16> {
    svc.ports
        .iter()
        .find(|p| p.container_port == container)
        .map(|p| p.host_port)
}

/// `firstboot backup`: writes the archive; returns its path and manifest.
pub fn create(root: &Root, o: &Options, seed: Option<&Path>) -> Result<(PathBuf, Manifest)> {
    let (key, _) = unit_key(root, seed)?.ok_or_else(no_key)?;
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
    // Only root reads backups, even encrypted ones.
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", out_dir.display()))?;
    let dest = out_dir.join(format!("{hostname}-{stamp}{SUFFIX}"));
    let tmp = TempPath::sibling(&dest)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp.path())
        .with_context(|| format!("creating {}", tmp.path().display()))?;
    let hashing = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hash: Sha256::new(),
    };
    let mut w = Writer::new(hashing, &key)?;
    for p in IDENTITY_PATHS {
        let src = root.path(p);
        if std::fs::symlink_metadata(&src).is_ok() {
            // Identity is stored as content: a restore writes no link into /etc.
            w.add_path(&src, &format!("{IDENTITY}{p}"), true)?;
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
    let (hashing, manifest) = res?;
    let sha = hex::encode(hashing.hash.finalize());
    let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    tmp.persist(&dest)?;
    // Read it back before any older one is removed (a unit cannot decrypt
    // its own backups: the bytes on disk must be the ones written).
    if flypack_contracts::digest::sha256_file(&dest)? != sha {
        bail!("{} did not read back as written: the disk is failing?", dest.display());
    }
    prune(&out_dir, o.keep)?;
    // For the alert rule on the backup's age: a failure here is the
    // monitoring's problem, never the backup's.
    if let Err(e) = write_metrics(root, data_len(&dest)) {
        tracing::warn!("the backup is made, but its metrics are not: {e:#}");
    }
    for d in &o.copy_to {
        copy_checked(&dest, &d.join(dest.file_name().expect("file name")), &sha)?;
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

fn data_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Where the node exporter's textfile collector reads the unit's own
/// metrics (`--collector.textfile.directory`); nothing secret goes there.
pub const METRICS_DIR: &str = "/var/lib/flypack/metrics";

/// The last good backup's time and size, for the node exporter's textfile
/// collector (replaced atomically: a scrape never reads half a file).
pub fn write_metrics(root: &Root, bytes: u64) -> Result<()> {
    let dir = root.path(METRICS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let text = format!(
        "# HELP flypack_backup_last_success_timestamp_seconds When the last backup was made and read back.\n\
         # TYPE flypack_backup_last_success_timestamp_seconds gauge\n\
         flypack_backup_last_success_timestamp_seconds {now}\n\
         # HELP flypack_backup_last_size_bytes The size of the last backup's archive.\n\
         # TYPE flypack_backup_last_size_bytes gauge\n\
         flypack_backup_last_size_bytes {bytes}\n"
    );
    flypack_contracts::atomic::write_atomic(&dir.join("backup.prom"), text.as_bytes(), 0o644)
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
fn volume_mountpoints(stack: &flypack_engine::compose::Stack) -> Result<std::collections::BTreeMap<String, PathBuf>> {
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
/// verify it (every digest, and the fleet's tag over the manifest, with the
/// unit's backup key) before anything is written, put identity files in
/// place (the unit config as [`RESTORED_UNIT`]) and stage volume data. Every
/// write opens its path beneath its folder without following links.
/// Returns what it did, or None when there is nothing to restore.
pub fn restore_identity(root: &Root, seed: Option<&Path>) -> Result<Option<String>> {
    let archive = root.path(RESTORE_ARCHIVE);
    if !archive.exists() {
        return Ok(None);
    }
    let (key, source) = unit_key(root, seed)?.context(
        "a backup waits to be restored, but this unit has no backup key to authenticate it with \
         (builder restore writes one on the seed): nothing was written",
    )?;
    let keys = Keys::unit(&key);
    let (m, _) = backup::verify(&archive, &keys)
        .with_context(|| format!("the backup to restore (checked with the key from {source}); nothing was written"))?;
    let work = root.path("/var/lib/flypack/restore");
    // All of it must fit (identity and every volume) before anything is unpacked.
    let free = Beneath::open(&work)?.free_bytes()?;
    if m.data_bytes().saturating_add(64 << 20) > free {
        bail!(
            "refused: the backup unpacks to {} MiB and only {} MiB are free here; nothing was written",
            m.data_bytes() >> 20,
            free >> 20
        );
    }
    let staging = work.join("identity");
    flypack_contracts::atomic::remove_any(&staging)?;
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))?;
    backup::extract(&archive, &keys, IDENTITY, &Beneath::open(&staging)?)?;
    let sys = Beneath::open(root.dir())?;
    let mut placed = Vec::new();
    for p in IDENTITY_PATHS {
        let from = staging.join(p.trim_start_matches('/'));
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue;
        };
        // The unit config is not put in force directly: the config step
        // picks it up, ahead of the seed and fleet.
        let to = if *p == "/etc/flypack/unit.toml" {
            RESTORED_UNIT
        } else {
            p
        };
        let rel = Path::new(to.trim_start_matches('/'));
        if let Some(parent) = rel.parent() {
            sys.create_dir_all(parent, 0o755)?;
        }
        if meta.is_dir() {
            flypack_contracts::atomic::remove_any(&root.path(to))?;
            sys.create_dir_all(rel, meta.permissions().mode())?;
            beneath::copy_tree(&from, &sys, rel).with_context(|| format!("putting back {p}"))?;
        } else {
            let mut f = std::fs::File::open(&from).with_context(|| format!("opening {}", from.display()))?;
            sys.write_file(rel, meta.permissions().mode(), &mut f, None)
                .with_context(|| format!("putting back {p}"))?;
        }
        placed.push(*p);
    }
    let vols = root.path(RESTORE_VOLUMES);
    std::fs::create_dir_all(&vols).with_context(|| format!("creating {}", vols.display()))?;
    std::fs::set_permissions(&vols, std::fs::Permissions::from_mode(0o700))?;
    for name in m.volumes.keys() {
        // The reader checked the name; a staged volume is a plain directory.
        let dest = vols.join(name);
        if dest.exists() {
            continue;
        }
        let tmp = vols.join(format!(".{name}.partial"));
        flypack_contracts::atomic::remove_any(&tmp)?;
        std::fs::create_dir_all(&tmp)?;
        backup::extract(&archive, &keys, &format!("{VOLUMES}/{name}"), &Beneath::open(&tmp)?)?;
        std::fs::rename(&tmp, &dest)?;
    }
    flypack_contracts::atomic::remove_any(&staging)?;
    let note = serde_json::json!({
        "hostname": m.hostname, "backup_created": m.created, "image": m.image,
        "identity": placed, "volumes": m.volumes, "restored": crate::runner::now(), "key": source,
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

/// Before a new volume is first used: fill it from the restored backup,
/// owned by `owner` (the uid:gid its service runs as), as Docker would have
/// made a new volume for it. Every path is opened beneath the volume.
pub fn fill_volume(root: &Root, name: &str, mountpoint: &Path, owner: Option<(u32, u32)>) -> Result<bool> {
    let staged = root.path(RESTORE_VOLUMES).join(name);
    if !staged.is_dir() {
        return Ok(false);
    }
    let dest = root.path(mountpoint);
    beneath::copy_tree(&staged, &Beneath::open(&dest)?, Path::new(""))
        .with_context(|| format!("filling volume {name} from the backup"))?;
    if let Some((uid, gid)) = owner {
        chown_tree(&dest, uid, gid).with_context(|| format!("giving volume {name} to {uid}:{gid}"))?;
    }
    std::fs::remove_dir_all(&staged)?;
    tracing::info!("volume {name}: filled from the restored backup");
    Ok(true)
}

/// Changes the owner of a tree without following links.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    use rustix::fs::{AtFlags, CWD, Gid, Uid, chownat};
    let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    chownat(CWD, dir, u, g, AtFlags::SYMLINK_NOFOLLOW).with_context(|| format!("chown {}", dir.display()))?;
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        let m = std::fs::symlink_metadata(&p)?;
        if m.is_dir() {
            chown_tree(&p, uid, gid)?;
        } else {
            chownat(CWD, &p, u, g, AtFlags::SYMLINK_NOFOLLOW).with_context(|| format!("chown {}", p.display()))?;
        }
    }
    Ok(())
}
