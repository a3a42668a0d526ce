//! Container images for the stack, inside the disk image, with no registry
//! and no Docker daemon needed to build them.
//!
//! Images built from Debian packages share one base layer (Debian's
//! `essential` variant plus a few tools); each image adds one layer: the
//! difference between the base and a root filesystem with its packages (or
//! with our binaries). All of them go into one `docker save`-format archive,
//! so the base layer is carried once. An image archive the profile points to,
//! or an image exported from a local Docker daemon, is carried beside it.
//!
//! Every image's id (the digest of its config) is in the manifest; firstboot
//! checks them after loading.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flypack_contracts::cmd::Cmd;
use flypack_contracts::digest::sha256_file;
use flypack_contracts::manifest::ContainerImage;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plan::{Plan, RootfsPlan, StackImagePlan, StackPlan};
use crate::progress::Reporter;

/// The archive of the images built from Debian packages.
pub const STACK_ARCHIVE: &str = "stack-images.tar";

/// The way the archive is made (part of its cache key): raise it when the
/// layers, the image configs or the archive's layout change.
pub const ARCHIVE_FORMAT: &str = "2 (image configs by oci-spec)";

/// Archives of stack images kept in the cache (each about 230 MiB; a new
/// build of our binaries makes a new one).
const KEEP_CACHED: usize = 3;

/// What the stage produced.
#[derive(Debug, Clone)]
pub struct Images {
    /// (archive file in the cache or source, its name in `builder images`' output).
    pub archives: Vec<(PathBuf, String)>,
    /// The images, each with the name of its archive.
    pub images: Vec<ContainerImage>,
}

impl Images {
    /// The manifest's entries for an image whose Docker store holds them
    /// (no archive travels).
    pub fn in_store(&self) -> Vec<ContainerImage> {
        self.images
            .iter()
            .map(|i| ContainerImage {
                archive: None,
                archive_sha256: None,
                ..i.clone()
            })
            .collect()
    }
}

/// Paths that never go into a layer (the runtime provides them).
fn skipped(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    [
        "dev/",
        "proc/",
        "sys/",
        "run/",
        "tmp/",
        "var/cache/apt/",
        "var/lib/apt/lists/",
        "usr/share/doc/",
        "usr/share/man/",
        "usr/share/info/",
        "usr/share/locale/",
    ]
    .iter()
    .any(|p| s.starts_with(p))
}

/// Metadata that decides whether a path changed between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    link: Option<PathBuf>,
}

fn scan(root: &Path) -> Result<BTreeMap<PathBuf, Meta>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            let m = fs::symlink_metadata(&p).with_context(|| format!("inspecting {}", p.display()))?;
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            let link = if m.file_type().is_symlink() {
                Some(fs::read_link(&p)?)
            } else {
                None
            };
            out.insert(
                rel,
                Meta {
                    kind: m.mode() & 0o170000,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    size: m.size(),
                    mtime: m.mtime(),
                    link,
                },
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(out)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    Ok(sha256_file(a)? == sha256_file(b)?)
}

/// Paths of `upper` to put in a layer over `lower`, and paths of `lower`
/// that `upper` removed (whiteouts).
fn diff(lower: &Path, upper: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let lo = scan(lower)?;
    let up = scan(upper)?;
    let mut add = Vec::new();
    for (rel, m) in &up {
        let changed = match lo.get(rel) {
            None => true,
            // Same metadata is not proof of the same content (a maintainer
            // script can rewrite a file within the same second): regular
            // files of equal size are compared by content.
            Some(l) if l == m && l.kind != 0o100000 => false,
            Some(l)
                if l.kind == 0o100000
                    && m.kind == 0o100000
                    && l.size == m.size
                    && (l.mode, l.uid, l.gid) == (m.mode, m.uid, m.gid) =>
            {
                !same_content(&lower.join(rel), &upper.join(rel))?
            }
            Some(l) if l.kind == 0o040000 && m.kind == 0o040000 => (l.mode, l.uid, l.gid) != (m.mode, m.uid, m.gid),
            Some(_) => true,
        };
        if changed {
            add.push(rel.clone());
        }
    }
    let removed: Vec<PathBuf> = lo
        .keys()
        .filter(|p| !up.contains_key(*p))
        .filter(|p| {
            !p.parent()
                .is_some_and(|d| !up.contains_key(d) && lo.contains_key(d) && d != Path::new(""))
        })
        .cloned()
        .collect();
    Ok((add, removed))
}

/// Writes bytes and hashes them.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A layer written to a file: its digest (the diff id) and size.
#[derive(Debug, Clone)]
struct Layer {
    file: PathBuf,
    digest: String,
}

/// Writes a layer tar holding `paths` of `root` (parents first) and
/// whiteouts for `removed`.
fn write_layer(root: &Path, paths: &[PathBuf], removed: &[PathBuf], out: &Path) -> Result<Layer> {
    let f = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = HashingWriter {
        inner: io::BufWriter::new(f),
        hash: Sha256::new(),
        len: 0,
    };
    {
        let mut tb = tar::Builder::new(&mut w);
        tb.mode(tar::HeaderMode::Complete);
        tb.follow_symlinks(false);
        // Every parent directory must be in the layer before its children.
        let mut all: BTreeSet<PathBuf> = BTreeSet::new();
        for p in paths.iter().filter(|p| !skipped(p)) {
            let mut cur = p.parent();
            while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty()) {
                all.insert(d.to_path_buf());
                cur = d.parent();
            }
            all.insert(p.clone());
        }
        let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
        for rel in &all {
            let full = root.join(rel);
            let m = fs::symlink_metadata(&full).with_context(|| format!("inspecting {}", full.display()))?;
            let ft = m.file_type();
            if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket() {
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
            if ft.is_symlink() {
                let target = fs::read_link(&full)?;
                tb.append_link(&mut h, rel, &target)
                    .with_context(|| format!("adding {}", rel.display()))?;
            } else if ft.is_dir() {
                h.set_size(0);
                tb.append_data(&mut h, rel, io::empty())
                    .with_context(|| format!("adding {}", rel.display()))?;
            } else {
                if m.nlink() > 1 {
                    if let Some(first) = inodes.get(&(m.dev(), m.ino())) {
                        h.set_entry_type(tar::EntryType::Link);
                        h.set_size(0);
                        tb.append_link(&mut h, rel, first)
                            .with_context(|| format!("adding {}", rel.display()))?;
                        continue;
                    }
                    inodes.insert((m.dev(), m.ino()), rel.clone());
                }
                let file = File::open(&full).with_context(|| format!("opening {}", full.display()))?;
                tb.append_data(&mut h, rel, BufReader::new(file))
                    .with_context(|| format!("adding {}", rel.display()))?;
            }
        }
        for rel in removed.iter().filter(|p| !skipped(p)) {
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let wh = rel.with_file_name(format!(".wh.{name}"));
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            tb.append_data(&mut h, &wh, io::empty())
                .with_context(|| format!("adding whiteout {}", wh.display()))?;
        }
        tb.finish().context("finishing the layer")?;
    }
    w.flush()?;
    Ok(Layer {
        file: out.to_path_buf(),
        digest: hex::encode(w.hash.finalize()),
    })
}

fn unpack(archive: &Path, into: &Path) -> Result<()> {
    fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    Cmd::new("tar")
        .args(["--extract", "--numeric-owner", "--preserve-permissions", "--file"])
        .arg(archive)
        .arg("--directory")
        .arg(into)
        .run()
        .with_context(|| format!("unpacking {}", archive.display()))?;
    Ok(())
}

/// An image config (the OCI image configuration, which Docker reads) for a
/// list of layers, each with its history line.
fn image_config(layers: &[String], history: &[String]) -> Vec<u8> {
    use oci_spec::image::{Arch, ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, Os, RootFsBuilder};
    // A fixed date: the same inputs give the same image id.
    const EPOCH: &str = "1970-01-01T00:00:00Z";
    let config = ConfigBuilder::default()
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ])
        .labels(HashMap::from([(
            "org.flypack.builder".to_string(),
            flypack_contracts::VERSION.to_string(),
        )]))
        .build()
        .expect("every field of the container config is set");
    let rootfs = RootFsBuilder::default()
        .diff_ids(layers.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>())
        .build()
        .expect("the rootfs has its layers");
    let history = history
        .iter()
        .map(|h| HistoryBuilder::default().created(EPOCH).created_by(h.as_str()).build())
        .collect::<Result<Vec<_>, _>>()
        .expect("every history line is set");
    ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .created(EPOCH)
        .config(config)
        .rootfs(rootfs)
        .history(history)
        .build()
        .expect("every field of the image config is set")
        .to_string()
        .expect("an image config serialises")
        .into_bytes()
}

#[derive(Serialize)]
struct ArchiveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Builds the images made from Debian packages and our binaries into one
/// archive; returns it with each image's (reference, id).
fn build_debian_images(
    plan: &StackPlan,
    cache: &Path,
    profile: &Path,
    rep: &Reporter,
) -> Result<(PathBuf, Vec<(String, String)>)> {
    let key = &plan.archive_key;
    let dir = cache.join("images");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let archive = dir.join(format!("{key}.tar"));
    let ids_file = dir.join(format!("{key}.ids.json"));
    // One build makes a given archive at a time; others wait for it and
    // reuse it (two writers of one key could leave an archive beside the
    // other's ids).
    let _turn = super::take_turn(&dir.join(format!("{key}.lock")), || {
        rep.info("another build is making the same stack images; waiting for it");
    })?;
    if archive.is_file() && ids_file.is_file() {
        let ids: Vec<(String, String)> =
            serde_json::from_slice(&fs::read(&ids_file)?).context("reading cached image ids")?;
        super::touch(&archive)?;
        return Ok((archive, ids));
    }
    let base =
        crate::stages::rootfs::run_with(&plan.base, cache, crate::stages::rootfs::APT_CACHE_IMAGES, profile, rep)?;
    let work = flypack_contracts::atomic::temp_dir_in(&cache.join("work"), "images")?;
    let stage = rep.stage("images", "making the shared base layer");
    let base_tree = work.path().join("base");
    unpack(&base.archive, &base_tree)?;
    let base_paths: Vec<PathBuf> = scan(&base_tree)?.into_keys().collect();
    let base_layer = write_layer(&base_tree, &base_paths, &[], &work.path().join("base.layer.tar"))?;
    let mut layers: Vec<Layer> = vec![base_layer.clone()];
    let mut entries = Vec::new();
    let mut configs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut ids = Vec::new();
    for (i, img) in plan.images.iter().enumerate() {
        let layer = match img {
            StackImagePlan::Debian { reference, rootfs } => {
                stage.progress(&format!("{reference}: packages"));
                crate::interrupt::check()?;
                let built = crate::stages::rootfs::run_with(
                    rootfs,
                    cache,
                    crate::stages::rootfs::APT_CACHE_IMAGES,
                    profile,
                    rep,
                )?;
                let tree = work.path().join(format!("img{i}"));
                unpack(&built.archive, &tree)?;
                let (add, removed) = diff(&base_tree, &tree)?;
                let l = write_layer(&tree, &add, &removed, &work.path().join(format!("img{i}.layer.tar")))?;
                fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
                Some((
                    reference,
                    l,
                    format!("flypack builder: Debian packages {}", rootfs.packages.join(" ")),
                ))
            }
            StackImagePlan::Binaries { reference, binaries } => {
                stage.progress(&format!("{reference}: our binaries"));
                let tree = work.path().join(format!("img{i}"));
                let l = binaries_layer(
                    &base_tree,
                    binaries,
                    &tree,
                    &work.path().join(format!("img{i}.layer.tar")),
                )?;
                Some((reference, l, "flypack builder: binaries".to_string()))
            }
            StackImagePlan::Archive { .. } | StackImagePlan::Docker { .. } => None,
        };
        let Some((reference, layer, history)) = layer else {
            continue;
        };
        let cfg = image_config(
            &[base_layer.digest.clone(), layer.digest.clone()],
            &["flypack builder: base".to_string(), history],
        );
        let id = hex::encode(Sha256::digest(&cfg));
        entries.push(ArchiveEntry {
            config: format!("{id}.json"),
            repo_tags: vec![reference.clone()],
            layers: vec![
                format!("{}/layer.tar", base_layer.digest),
                format!("{}/layer.tar", layer.digest),
            ],
        });
        configs.push((id.clone(), cfg));
        ids.push((reference.clone(), format!("sha256:{id}")));
        layers.push(layer);
    }
    stage.progress("writing the archive");
    let tmp = flypack_contracts::atomic::TempPath::sibling(&archive)?;
    {
        let f = File::create(tmp.path()).with_context(|| format!("creating {}", tmp.path().display()))?;
        let mut tb = tar::Builder::new(io::BufWriter::new(f));
        let mut add = |name: &str, data: &[u8]| -> Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            tb.append_data(&mut h, name, data)
                .with_context(|| format!("adding {name}"))
        };
        add("manifest.json", &serde_json::to_vec(&entries)?)?;
        for (id, cfg) in &configs {
            add(&format!("{id}.json"), cfg)?;
        }
        let mut seen = BTreeSet::new();
        for l in &layers {
            if !seen.insert(l.digest.clone()) {
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(fs::metadata(&l.file)?.len());
            h.set_mode(0o644);
            h.set_mtime(0);
            tb.append_data(&mut h, format!("{}/layer.tar", l.digest), File::open(&l.file)?)
                .context("adding a layer")?;
        }
        tb.into_inner().context("finishing the archive")?.flush()?;
    }
    tmp.persist(&archive)?;
    flypack_contracts::atomic::write_atomic(&ids_file, &serde_json::to_vec(&ids)?, 0o644)?;
    super::prune_archives(&dir, &archive, KEEP_CACHED, &["ids.json", "lock"], "stack images")?;
    let size = fs::metadata(&archive)?.len();
    stage.done(&format!(
        "{} images, {} layers, {}",
        ids.len(),
        seen_len(&layers),
        indicatif::HumanBytes(size)
    ));
    Ok((archive, ids))
}

/// The layer of an image made of our binaries (in `/usr/bin`), written from
/// `tree` into `out`. Its directories are the base's, so it does not shadow
/// them, and every time in it is the base's: the same binaries give the same
/// layer, so the same image id, whenever they are built.
fn binaries_layer(base_tree: &Path, binaries: &[PathBuf], tree: &Path, out: &Path) -> Result<Layer> {
    use super::set_mtime;
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(tree.join("usr/bin"))?;
    let base_time = fs::metadata(base_tree.join("usr/bin"))?.modified()?;
    let mut paths = Vec::new();
    for b in binaries {
        let name = b.file_name().context("binary name")?;
        let dst = tree.join("usr/bin").join(name);
        fs::copy(b, &dst).with_context(|| format!("copying {}", b.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))?;
        rustix::fs::chown(&dst, Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT))?;
        set_mtime(&dst, base_time)?;
        paths.push(PathBuf::from("usr/bin").join(name));
    }
    for d in ["usr/bin", "usr"] {
        let m = fs::metadata(base_tree.join(d))?;
        fs::set_permissions(tree.join(d), fs::Permissions::from_mode(m.mode() & 0o7777))?;
        set_mtime(&tree.join(d), m.modified()?)?;
    }
    write_layer(tree, &paths, &[], out)
}

fn seen_len(layers: &[Layer]) -> usize {
    layers.iter().map(|l| &l.digest).collect::<BTreeSet<_>>().len()
}

/// Reads a `docker save` archive's manifest: (reference, image id) pairs.
pub fn archive_images(archive: &Path) -> Result<Vec<(String, String)>> {
    let f = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut t = tar::Archive::new(f);
    for e in t.entries().context("reading the archive")? {
        let mut e = e.context("reading the archive")?;
        if e.path()?.as_os_str() == "manifest.json" {
            let mut s = String::new();
            e.read_to_string(&mut s)?;
            let v: serde_json::Value = serde_json::from_str(&s).context("parsing manifest.json")?;
            let mut out = Vec::new();
            for img in v.as_array().context("manifest.json is not a list")? {
                let cfg = img["Config"].as_str().context("no Config")?;
                let id = cfg
                    .trim_end_matches(".json")
                    .rsplit('/')
                    .next()
                    .unwrap_or(cfg)
                    .to_string();
                for tag in img["RepoTags"].as_array().into_iter().flatten() {
                    out.push((tag.as_str().unwrap_or_default().to_string(), format!("sha256:{id}")));
                }
            }
            return Ok(out);
        }
    }
    bail!(
        "{} has no manifest.json: is it a `docker save` archive?",
        archive.display()
    )
}

/// Exports an image from the local Docker daemon into `out`.
fn export_from_docker(reference: &str, out: &Path) -> Result<()> {
    flypack_engine::rt::block_on(async {
        use futures::StreamExt;
        let docker = bollard::Docker::connect_with_local_defaults()
            .context("connecting to the local Docker daemon (DOCKER_HOST or /var/run/docker.sock)")?
            .negotiate_version()
            .await
            .context("talking to the local Docker daemon")?;
        docker
            .inspect_image(reference)
            .await
            .with_context(|| format!("the local Docker daemon has no image {reference:?}"))?;
        // Written beside and renamed into place: a build reading it (or a
        // second build exporting the same image) never sees half of one.
        let tmp = flypack_contracts::atomic::TempPath::sibling(out)?;
        let mut f = File::create(tmp.path()).with_context(|| format!("creating {}", tmp.path().display()))?;
        let mut s = docker.export_image(reference);
        while let Some(chunk) = s.next().await {
            f.write_all(&chunk.with_context(|| format!("exporting {reference}"))?)?;
        }
        f.sync_all()?;
        tmp.persist(out)?;
        anyhow::Ok(())
    })?
}

/// Runs the stage.
pub fn run(plan: &Plan, cache: &Path, rep: &Reporter) -> Result<Option<Images>> {
    let Some(stack) = &plan.stack else { return Ok(None) };
    let profile = Path::new(&plan.profile.path);
    let mut archives = Vec::new();
    let mut images = Vec::new();
    let mut ids: Vec<(String, String, String)> = Vec::new();
    if stack
        .images
        .iter()
        .any(|i| matches!(i, StackImagePlan::Debian { .. } | StackImagePlan::Binaries { .. }))
    {
        let (archive, built) = build_debian_images(stack, cache, profile, rep)?;
        for (r, id) in built {
            ids.push((r, id, STACK_ARCHIVE.to_string()));
        }
        archives.push((archive, STACK_ARCHIVE.to_string()));
    }
    for img in &stack.images {
        match img {
            StackImagePlan::Archive { reference, path } => {
                let name = format!("{}.tar", reference.replace(['/', ':'], "_"));
                let found = archive_images(path)?;
                let Some((_, id)) = found.iter().find(|(r, _)| r == reference) else {
                    bail!(
                        "{}: stack.images: {} does not hold {reference:?} (it holds {:?})",
                        plan.profile.path,
                        path.display(),
                        found.iter().map(|(r, _)| r).collect::<Vec<_>>()
                    );
                };
                ids.push((reference.clone(), id.clone(), name.clone()));
                archives.push((path.clone(), name));
            }
            StackImagePlan::Docker { reference } => {
                let stage = rep.stage("images", &format!("exporting {reference} from the local Docker daemon"));
                let name = format!("{}.tar", reference.replace(['/', ':'], "_"));
                let out = cache.join("images").join(format!("docker-{name}"));
                fs::create_dir_all(cache.join("images"))?;
                export_from_docker(reference, &out)?;
                let found = archive_images(&out)?;
                let id = found
                    .iter()
                    .find(|(r, _)| r == reference)
                    .map(|(_, i)| i.clone())
                    .context("the exported archive does not name the image")?;
                ids.push((reference.clone(), id, name.clone()));
                archives.push((out, name));
                stage.done(reference);
            }
            _ => {}
        }
    }
    let sums: BTreeMap<String, String> = archives
        .iter()
        .map(|(p, n)| Ok((n.clone(), sha256_file(p)?)))
        .collect::<Result<_>>()?;
    for (reference, id, archive) in ids {
        images.push(ContainerImage {
            reference,
            id,
            archive_sha256: sums.get(&archive).cloned(),
            archive: Some(archive),
        });
    }
    Ok(Some(Images { archives, images }))
}

#[allow(dead_code)]
fn _plan_type_check(_: &RootfsPlan) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_hold_the_difference_with_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let (lo, up) = (d.path().join("lo"), d.path().join("up"));
        for t in [&lo, &up] {
            fs::create_dir_all(t.join("etc")).unwrap();
            fs::create_dir_all(t.join("usr/bin")).unwrap();
            fs::write(t.join("etc/same"), "x").unwrap();
            fs::write(t.join("etc/changed"), if t == &lo { "aaaa" } else { "bbbb" }).unwrap();
        }
        fs::write(lo.join("etc/gone"), "x").unwrap();
        fs::write(up.join("usr/bin/new"), "#!/bin/sh\n").unwrap();
        // Same mtime and size, different content: still detected.
        let t = fs::metadata(lo.join("etc/changed")).unwrap().modified().unwrap();
        File::options()
            .write(true)
            .open(up.join("etc/changed"))
            .unwrap()
            .set_modified(t)
            .unwrap();
        fs::write(lo.join("etc/same"), "x").unwrap();
        let t = fs::metadata(lo.join("etc/same")).unwrap().modified().unwrap();
        File::options()
            .write(true)
            .open(up.join("etc/same"))
            .unwrap()
            .set_modified(t)
            .unwrap();
        let (add, removed) = diff(&lo, &up).unwrap();
        assert_eq!(add, vec![PathBuf::from("etc/changed"), PathBuf::from("usr/bin/new")]);
        assert_eq!(removed, vec![PathBuf::from("etc/gone")]);
        let layer = write_layer(&up, &add, &removed, &d.path().join("l.tar")).unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(File::open(&layer.file).unwrap()).entries().unwrap() {
            names.push(e.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            ["etc", "etc/changed", "usr", "usr/bin", "usr/bin/new", "etc/.wh.gone"]
        );
        assert_eq!(layer.digest, sha256_file(&layer.file).unwrap());
    }

    #[test]
    fn a_binaries_layer_is_the_same_whenever_it_is_built() {
        use crate::stages::set_mtime;
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base");
        fs::create_dir_all(base.join("usr/bin")).unwrap();
        let long_ago = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        set_mtime(&base.join("usr/bin"), long_ago).unwrap();
        set_mtime(&base.join("usr"), long_ago).unwrap();
        let bin = d.path().join("flypack-exporter");
        fs::write(&bin, "#!/bin/sh\n").unwrap();
        let first = binaries_layer(
            &base,
            std::slice::from_ref(&bin),
            &d.path().join("t1"),
            &d.path().join("l1.tar"),
        )
        .unwrap();
        // Built again later from a copy with another time: the same layer.
        set_mtime(&bin, long_ago + std::time::Duration::from_secs(86_400)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = binaries_layer(&base, &[bin], &d.path().join("t2"), &d.path().join("l2.tar")).unwrap();
        assert_eq!(first.digest, again.digest);
        let mut seen = Vec::new();
        for e in tar::Archive::new(File::open(&first.file).unwrap()).entries().unwrap() {
            let e = e.unwrap();
            seen.push((e.path().unwrap().display().to_string(), e.header().mtime().unwrap()));
        }
        assert_eq!(
            seen,
            [
                ("usr".to_string(), 1_600_000_000),
                ("usr/bin".to_string(), 1_600_000_000),
                ("usr/bin/flypack-exporter".to_string(), 1_600_000_000)
            ]
        );
    }

    #[test]
    fn image_configs_are_valid_oci_and_reproducible() {
        let layers = vec!["a".repeat(64), "b".repeat(64)];
        let history = vec!["base".to_string(), "packages: prometheus".to_string()];
        let bytes = image_config(&layers, &history);
        assert_eq!(bytes, image_config(&layers, &history), "same inputs, same image id");
        let parsed = oci_spec::image::ImageConfiguration::from_reader(&bytes[..]).unwrap();
        assert_eq!(
            parsed.rootfs().diff_ids(),
            &[
                format!("sha256:{}", "a".repeat(64)),
                format!("sha256:{}", "b".repeat(64))
            ]
        );
        let h: Vec<_> = parsed
            .history()
            .as_ref()
            .unwrap()
            .iter()
            .map(|h| h.created_by().clone())
            .collect();
        assert_eq!(h, [Some("base".to_string()), Some("packages: prometheus".to_string())]);
        // What Docker 20.10 reads when it loads the archive.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["architecture"], "amd64");
        assert_eq!(v["os"], "linux");
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(v["config"]["Labels"]["org.flypack.builder"], flypack_contracts::VERSION);
        assert!(v["config"]["Env"][0].as_str().unwrap().starts_with("PATH="));
    }
}
