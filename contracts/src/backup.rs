//! Unit backups: one tar archive compressed with zstd, holding the unit's
//! identity (`identity/<path on the unit>`) and its data
//! (`volumes/<volume>/...`), with `MANIFEST.json` as the last entry: what the
//! backup is for (image name, hostname, time) and every entry's kind, size,
//! mode and SHA-256.
//!
//! Reading is strict, because a restore writes what it reads onto a unit:
//! every entry is checked before anything is extracted. Refused: a truncated
//! or corrupted stream, a digest or size that does not match, an entry the
//! manifest does not list (or one it lists that is missing), a path that is
//! absolute or has `.`/`..` components or lies outside `identity/` and
//! `volumes/`, a symlink whose target is absolute or leaves its tree, hard
//! links and device files.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the manifest.
pub const SCHEMA: u32 = 1;
/// The manifest's name in the archive (the last entry).
pub const MANIFEST_NAME: &str = "MANIFEST.json";
/// Identity files, by their path on the unit.
pub const IDENTITY: &str = "identity";
/// Container volumes, by volume name.
pub const VOLUMES: &str = "volumes";

/// Kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (relative, inside its tree).
    Symlink,
}

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Path in the archive.
    pub path: String,
    /// Kind.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes (files).
    #[serde(default)]
    pub size: u64,
    /// SHA-256 (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Link target (symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a backup is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Name of the image the unit runs (a restore needs the same image).
    pub image: String,
    /// The unit's hostname.
    pub hostname: String,
    /// When the backup was made (RFC 3339, UTC).
    pub created: String,
    /// firstboot's version.
    pub version: String,
    /// Volumes included, and how each was copied.
    #[serde(default)]
    pub volumes: BTreeMap<String, String>,
    /// Every entry except the manifest, in archive order.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Bytes of file data.
    pub fn data_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// Checks an archive path: relative, normal components, inside `identity/`
/// or `volumes/<name>/`.
pub fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.contains('\0') {
        return Err(format!("{p:?}: an empty or NUL-bearing path"));
    }
    if p.starts_with('/') {
        return Err(format!("{p:?} is an absolute path"));
    }
    let p = p.trim_end_matches('/');
    for c in p.split('/') {
        match c {
            "" => return Err(format!("{p:?} has an empty component")),
            "." | ".." => return Err(format!("{p:?} has a {c:?} component")),
            _ => {}
        }
    }
    let mut parts = p.split('/');
    match (parts.next(), parts.next()) {
        (Some(IDENTITY), _) => Ok(()),
        (Some(VOLUMES), _) => Ok(()),
        _ => Err(format!("{p:?} is outside {IDENTITY}/ and {VOLUMES}/<name>/")),
    }
}

/// The tree a path belongs to: `identity` or `volumes/<name>`.
fn tree_of(p: &str) -> String {
    let mut parts = p.split('/');
    match (parts.next(), parts.next()) {
        (Some(VOLUMES), Some(v)) => format!("{VOLUMES}/{v}"),
        (Some(first), _) => first.to_string(),
        _ => String::new(),
    }
}

/// Checks a symlink target: relative, and resolving inside the link's tree.
pub fn check_link(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() || target.starts_with('/') {
        return Err(format!(
            "{path:?} links to {target:?}: absolute or empty link targets are refused"
        ));
    }
    let tree = tree_of(path);
    let mut stack: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    stack.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            c => stack.push(c),
        }
    }
    let resolved = stack.join("/");
    if resolved != tree && !resolved.starts_with(&format!("{tree}/")) {
        return Err(format!("{path:?} links to {target:?}, outside its tree {tree}/"));
    }
    Ok(())
}

/// Writes a backup archive.
pub struct Writer<W: Write> {
    tar: tar::Builder<zstd::stream::write::Encoder<'static, W>>,
    entries: Vec<Entry>,
    seen: std::collections::HashSet<String>,
}

struct Hashing<R> {
    inner: R,
    hash: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl<W: Write> Writer<W> {
    /// Starts an archive on `w`.
    pub fn new(w: W) -> Result<Self> {
        let mut enc = zstd::stream::write::Encoder::new(w, 3)?;
        enc.include_checksum(true)?;
        Ok(Writer {
            tar: tar::Builder::new(enc),
            entries: Vec::new(),
            seen: Default::default(),
        })
    }

    fn note(&mut self, e: Entry) -> Result<()> {
        check_path(&e.path).map_err(anyhow::Error::msg)?;
        if !self.seen.insert(e.path.clone()) {
            bail!("{} is in the backup twice", e.path);
        }
        self.entries.push(e);
        Ok(())
    }

    /// Adds bytes as a file.
    pub fn add_bytes(&mut self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64, 0);
        self.tar
            .append_data(&mut h, path, data)
            .with_context(|| format!("adding {path}"))?;
        self.note(Entry {
            path: path.into(),
            kind: Kind::File,
            mode,
            size: data.len() as u64,
            sha256: Some(hex::encode(Sha256::digest(data))),
            target: None,
        })
    }

    /// Adds the directories above `path` that are not in yet.
    fn add_parents(&mut self, path: &str) -> Result<()> {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            let dir = parts[..i].join("/");
            if self.seen.contains(&dir) {
                continue;
            }
            let mut h = header(tar::EntryType::Directory, 0o755, 0, 0);
            self.tar.append_data(&mut h, format!("{dir}/"), io::empty())?;
            self.note(Entry {
                path: dir,
                kind: Kind::Dir,
                mode: 0o755,
                size: 0,
                sha256: None,
                target: None,
            })?;
        }
        Ok(())
    }

    /// Adds one file, directory or symlink from disk as `path`
    /// (`follow`: store what a symlink points to instead).
    pub fn add_path(&mut self, src: &Path, path: &str, follow: bool) -> Result<()> {
        self.add_parents(path)?;
        let meta = if follow {
            fs::metadata(src)
        } else {
            fs::symlink_metadata(src)
        }
        .with_context(|| format!("reading {}", src.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        let mtime = meta.mtime().max(0) as u64;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(src)?.to_string_lossy().into_owned();
            check_link(path, &target).map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
            self.tar.append_link(&mut h, path, &target)?;
            self.note(Entry {
                path: path.into(),
                kind: Kind::Symlink,
                mode: 0o777,
                size: 0,
                sha256: None,
                target: Some(target),
            })
        } else if ft.is_dir() {
            if !self.seen.contains(path) {
                let mut h = header(tar::EntryType::Directory, mode, 0, mtime);
                self.tar.append_data(&mut h, format!("{path}/"), io::empty())?;
                self.note(Entry {
                    path: path.into(),
                    kind: Kind::Dir,
                    mode,
                    size: 0,
                    sha256: None,
                    target: None,
                })?;
            }
            let mut children: Vec<_> = fs::read_dir(src)
                .with_context(|| format!("listing {}", src.display()))?
                .collect::<Result<Vec<_>, _>>()?;
            children.sort_by_key(|e| e.file_name());
            for c in children {
                let name = c.file_name().to_string_lossy().into_owned();
                self.add_path(&c.path(), &format!("{path}/{name}"), follow)?;
            }
            Ok(())
        } else if ft.is_file() {
            let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
            let mut r = Hashing {
                inner: f.take(meta.len()),
                hash: Sha256::new(),
                n: 0,
            };
            let mut h = header(tar::EntryType::Regular, mode, meta.len(), mtime);
            self.tar
                .append_data(&mut h, path, &mut r)
                .with_context(|| format!("adding {}", src.display()))?;
            if r.n != meta.len() {
                bail!("{} changed size while it was read", src.display());
            }
            self.note(Entry {
                path: path.into(),
                kind: Kind::File,
                mode,
                size: r.n,
                sha256: Some(hex::encode(r.hash.finalize())),
                target: None,
            })
        } else {
            tracing::warn!(
                "{}: not a file, directory or symlink; left out of the backup",
                src.display()
            );
            Ok(())
        }
    }

    /// Appends the manifest and finishes the stream.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<(W, Manifest)> {
        manifest.schema = SCHEMA;
        manifest.entries = std::mem::take(&mut self.entries);
        let json = serde_json::to_vec_pretty(&manifest)?;
        let mut h = header(tar::EntryType::Regular, 0o644, json.len() as u64, 0);
        self.tar.append_data(&mut h, MANIFEST_NAME, json.as_slice())?;
        let enc = self.tar.into_inner()?;
        Ok((enc.finish()?, manifest))
    }
}

/// Reads entries, checking each; `sink` gets every good entry with its data
/// reader (files) before the next is read.
fn walk(archive: &Path, mut sink: impl FnMut(&Entry, &mut dyn Read) -> Result<()>) -> Result<Manifest> {
    let f = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let dec =
        zstd::stream::read::Decoder::new(f).with_context(|| format!("{} is not a zstd stream", archive.display()))?;
    let mut tar = tar::Archive::new(dec);
    let mut seen: Vec<Entry> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    let entries = tar.entries().context("reading the archive")?;
    for e in entries {
        let mut e = e.context("the archive is damaged or truncated")?;
        let raw = String::from_utf8(e.path_bytes().into_owned()).context("an entry name is not UTF-8")?;
        if manifest.is_some() {
            bail!("{raw:?} follows {MANIFEST_NAME}, which must be the last entry");
        }
        let kind = e.header().entry_type();
        if raw == MANIFEST_NAME {
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).context("the archive is damaged or truncated")?;
            manifest = Some(serde_json::from_slice(&buf).context("MANIFEST.json does not parse")?);
            continue;
        }
        let path = raw.trim_end_matches('/').to_string();
        check_path(&raw).map_err(|m| anyhow::anyhow!("refused: {m}"))?;
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        let entry = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut r = Hashing {
                    inner: &mut e,
                    hash: Sha256::new(),
                    n: 0,
                };
                let (size, sha) = {
                    let ent = Entry {
                        path: path.clone(),
                        kind: Kind::File,
                        mode,
                        size: 0,
                        sha256: None,
                        target: None,
                    };
                    sink(&ent, &mut r)?;
                    io::copy(&mut r, &mut io::sink()).context("the archive is damaged or truncated")?;
                    (r.n, hex::encode(r.hash.finalize()))
                };
                Entry {
                    path,
                    kind: Kind::File,
                    mode,
                    size,
                    sha256: Some(sha),
                    target: None,
                }
            }
            tar::EntryType::Directory => {
                let ent = Entry {
                    path,
                    kind: Kind::Dir,
                    mode,
                    size: 0,
                    sha256: None,
                    target: None,
                };
                sink(&ent, &mut io::empty())?;
                ent
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .context("a symlink without a target")?;
                check_link(&path, &target).map_err(|m| anyhow::anyhow!("refused: {m}"))?;
                let ent = Entry {
                    path,
                    kind: Kind::Symlink,
                    mode: 0o777,
                    size: 0,
                    sha256: None,
                    target: Some(target),
                };
                sink(&ent, &mut io::empty())?;
                ent
            }
            tar::EntryType::Link => bail!("refused: {raw:?} is a hard link"),
            other => bail!("refused: {raw:?} is a {other:?} entry (only files, directories and symlinks)"),
        };
        seen.push(entry);
    }
    let m = manifest.with_context(|| {
        format!(
            "{} has no {MANIFEST_NAME}: truncated, or not a Flypack backup",
            archive.display()
        )
    })?;
    if m.schema != SCHEMA {
        bail!("backup schema {} is not {SCHEMA}: made by a newer firstboot?", m.schema);
    }
    // The manifest's mode for symlinks is nominal; compare what matters.
    let key = |e: &Entry| (e.path.clone(), e.kind, e.size, e.sha256.clone(), e.target.clone());
    let listed: BTreeMap<String, &Entry> = m.entries.iter().map(|e| (e.path.clone(), e)).collect();
    if listed.len() != m.entries.len() {
        bail!("refused: the manifest lists a path twice");
    }
    for s in &seen {
        match listed.get(&s.path) {
            None => bail!("refused: {} is in the archive but not in its manifest", s.path),
            Some(l) if key(l) != key(s) => bail!(
                "refused: {} does not match its manifest ({}): corrupted or tampered with",
                s.path,
                if l.sha256 != s.sha256 {
                    "SHA-256 differs"
                } else {
                    "kind, size or link differs"
                }
            ),
            Some(_) => {}
        }
    }
    if seen.len() != m.entries.len() {
        let have: std::collections::HashSet<&str> = seen.iter().map(|e| e.path.as_str()).collect();
        let missing: Vec<&str> = m
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .filter(|p| !have.contains(p))
            .take(3)
            .collect();
        bail!(
            "refused: the manifest lists entries the archive lacks ({})",
            missing.join(", ")
        );
    }
    Ok(m)
}

/// Re-checks every digest of an archive; returns its manifest.
pub fn verify(archive: &Path) -> Result<Manifest> {
    walk(archive, |_, _| Ok(()))
}

/// Verifies, then extracts entries under `prefix` (`identity`,
/// `volumes/<name>`) into `dest`, with `prefix` taken off. Files are written
/// under temporary names and renamed.
pub fn extract(archive: &Path, prefix: &str, dest: &Path) -> Result<Manifest> {
    let m = verify(archive)?;
    let pre = format!("{}/", prefix.trim_end_matches('/'));
    walk(archive, |e, data| {
        let Some(rel) = e.path.strip_prefix(&pre) else {
            return Ok(());
        };
        let to: PathBuf = dest.join(rel);
        // check_path made rel normal; keep it that way.
        if !Path::new(rel).components().all(|c| matches!(c, Component::Normal(_))) {
            bail!("refused: {}", e.path);
        }
        if let Some(p) = to.parent() {
            fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        match e.kind {
            Kind::Dir => {
                fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
                fs::set_permissions(&to, fs::Permissions::from_mode(e.mode))?;
            }
            Kind::File => {
                let tmp = crate::atomic::TempPath::sibling(&to)?;
                let mut f = File::create(tmp.path()).with_context(|| format!("creating {}", tmp.path().display()))?;
                io::copy(data, &mut f).context("the archive is damaged or truncated")?;
                f.set_permissions(fs::Permissions::from_mode(e.mode))?;
                f.sync_all()?;
                tmp.persist(&to)?;
            }
            Kind::Symlink => {
                let _ = fs::remove_file(&to);
                std::os::unix::fs::symlink(e.target.as_deref().unwrap_or_default(), &to)
                    .with_context(|| format!("linking {}", to.display()))?;
            }
        }
        Ok(())
    })?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Manifest {
        Manifest {
            schema: SCHEMA,
            image: "flypack".into(),
            hostname: "fp-01".into(),
            created: "2026-11-27T00:00:00Z".into(),
            version: "0".into(),
            volumes: Default::default(),
            entries: vec![],
        }
    }

    fn sample(dir: &Path) -> PathBuf {
        let src = dir.join("src");
        fs::create_dir_all(src.join("vol/sub")).unwrap();
        fs::write(src.join("vol/sub/a.bin"), vec![7u8; 100_000]).unwrap();
        fs::write(src.join("vol/b.txt"), "bee").unwrap();
        std::os::unix::fs::symlink("sub/a.bin", src.join("vol/link")).unwrap();
        let out = dir.join("b.tar.zst");
        let mut w = Writer::new(File::create(&out).unwrap()).unwrap();
        w.add_bytes("identity/etc/hostname", b"fp-01\n", 0o644).unwrap();
        w.add_path(&src.join("vol"), "volumes/vm-data", false).unwrap();
        w.finish(meta()).unwrap();
        out
    }

    /// An archive written entry by entry with raw names (what an attacker could make).
    fn raw_archive(path: &Path, entries: &[(&str, tar::EntryType, &[u8], Option<&str>)], manifest: &Manifest) {
        let mut enc = zstd::stream::write::Encoder::new(File::create(path).unwrap(), 3).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.as_gnu_mut().unwrap().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        let json = serde_json::to_vec(manifest).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, json.len() as u64, 0);
        b.append_data(&mut h, MANIFEST_NAME, json.as_slice()).unwrap();
        enc.write_all(&b.into_inner().unwrap()).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn round_trip_extracts_what_was_written() {
        let d = tempfile::tempdir().unwrap();
        let a = sample(d.path());
        let m = verify(&a).unwrap();
        assert_eq!(m.hostname, "fp-01");
        assert!(
            m.entries
                .iter()
                .any(|e| e.path == "volumes/vm-data/sub/a.bin" && e.size == 100_000)
        );
        let out = d.path().join("out");
        extract(&a, "volumes/vm-data", &out).unwrap();
        assert_eq!(fs::read(out.join("sub/a.bin")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("sub/a.bin"));
        let id = d.path().join("id");
        extract(&a, "identity", &id).unwrap();
        assert_eq!(fs::read_to_string(id.join("etc/hostname")).unwrap(), "fp-01\n");
        assert!(!id.join("sub").exists(), "volume data leaked into the identity tree");
    }

    #[test]
    fn truncated_and_flipped_archives_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = sample(d.path());
        let bytes = fs::read(&a).unwrap();
        let t = d.path().join("t.tar.zst");
        fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
        let e = format!("{:#}", verify(&t).unwrap_err());
        assert!(e.contains("damaged or truncated") || e.contains("no MANIFEST"), "{e}");
        for at in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 10] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            fs::write(&t, &flipped).unwrap();
            assert!(verify(&t).is_err(), "a flipped byte at {at} passed");
        }
    }

    #[test]
    fn entries_that_do_not_match_the_manifest_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.tar.zst");
        let mut m = meta();
        m.entries = vec![Entry {
            path: "identity/etc/hostname".into(),
            kind: Kind::File,
            mode: 0o644,
            size: 6,
            sha256: Some(hex::encode(Sha256::digest(b"fp-01\n"))),
            target: None,
        }];
        raw_archive(
            &a,
            &[("identity/etc/hostname", tar::EntryType::Regular, b"fp-02\n", None)],
            &m,
        );
        let e = format!("{:#}", verify(&a).unwrap_err());
        assert!(e.contains("identity/etc/hostname") && e.contains("SHA-256"), "{e}");
        raw_archive(
            &a,
            &[
                ("identity/etc/hostname", tar::EntryType::Regular, b"fp-01\n", None),
                ("identity/etc/extra", tar::EntryType::Regular, b"x", None),
            ],
            &m,
        );
        let e = format!("{:#}", verify(&a).unwrap_err());
        assert!(e.contains("not in its manifest"), "{e}");
        raw_archive(&a, &[], &m);
        let e = format!("{:#}", verify(&a).unwrap_err());
        assert!(e.contains("lacks"), "{e}");
    }

    #[test]
    fn escaping_paths_links_and_devices_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.tar.zst");
        let cases: &[(&str, tar::EntryType, Option<&str>, &str)] = &[
            (
                "identity/../../etc/shadow",
                tar::EntryType::Regular,
                None,
                "\"..\" component",
            ),
            ("/etc/shadow", tar::EntryType::Regular, None, "absolute path"),
            ("etc/shadow", tar::EntryType::Regular, None, "outside identity/"),
            ("volumes/vm/./x", tar::EntryType::Regular, None, "\".\" component"),
            ("volumes/vm/l", tar::EntryType::Symlink, Some("/etc/shadow"), "absolute"),
            (
                "volumes/vm/l",
                tar::EntryType::Symlink,
                Some("../../identity/etc"),
                "outside its tree",
            ),
            ("volumes/vm/h", tar::EntryType::Link, Some("volumes/vm/x"), "hard link"),
            ("volumes/vm/dev", tar::EntryType::Block, None, "Block"),
        ];
        for (name, kind, link, want) in cases {
            raw_archive(&a, &[(name, *kind, b"", *link)], &meta());
            let e = format!("{:#}", verify(&a).unwrap_err());
            assert!(e.contains("refused") && e.contains(want), "{name}: {e}");
            let out = d.path().join("out");
            assert!(extract(&a, "volumes/vm", &out).is_err());
            assert!(!out.exists(), "{name}: something was extracted");
        }
        // A link that stays inside its tree is fine.
        assert!(check_link("volumes/vm/a/l", "../b").is_ok());
        assert!(check_link("volumes/vm/l", "../vm2/x").is_err());
    }
}
