//! Unit backups: a tar archive compressed with zstd and encrypted with age
//! to the fleet's recipients (see [`key`]), holding the unit's identity
//! (`identity/<path on the unit>`) and its data (`volumes/<volume>/...`).
//! The last two entries are `MANIFEST.json` (what the backup is for: image
//! name, hostname, time; every entry's kind, size, mode and SHA-256) and
//! `MANIFEST.hmac`, the fleet's authentication tag over the manifest. A
//! copy decrypted by `builder restore` for the unit is the same stream
//! without the age layer, and is still authenticated by the tag.
//!
//! Reading is strict, because a restore writes what it reads onto a unit as
//! root; every archive is read in full and checked before anything is
//! written. Refused: an archive not encrypted to the key at hand (or
//! altered), a manifest whose tag does not verify, a manifest over
//! [`MANIFEST_MAX`], a truncated or corrupted stream, a digest or size that
//! does not match, an entry the manifest does not list (or one it lists
//! that is missing), an entry twice, a path that is absolute, has `.`/`..`
//! components, lies outside `identity/` and `volumes/<name>/`, or passes
//! through a symlink the archive itself defines, a volume name Docker would
//! not accept, a symlink whose target is absolute or leaves its tree, hard
//! links and device files. Extraction then opens every path beneath the
//! destination without following any link ([`crate::beneath`]) and puts a
//! file in place only once its digest matched.

pub mod key;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::beneath::Beneath;
pub use key::{AuthKey, FleetKey, UnitKey};

/// Version of the manifest (2: encrypted and authenticated).
pub const SCHEMA: u32 = 2;
/// The manifest's name in the archive.
pub const MANIFEST_NAME: &str = "MANIFEST.json";
/// The authentication tag's name in the archive (the last entry).
pub const TAG_NAME: &str = "MANIFEST.hmac";
/// The largest manifest a reader accepts.
pub const MANIFEST_MAX: u64 = 16 << 20;
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
        (Some(VOLUMES), Some(v)) => check_volume_name(v),
        (Some(VOLUMES), None) => Ok(()),
        _ => Err(format!("{p:?} is outside {IDENTITY}/ and {VOLUMES}/<name>/")),
    }
}

/// Checks a volume name as Docker does (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at
/// most 64 characters here).
pub fn check_volume_name(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "volume name {v:?} is not a Docker volume name (letters, digits, '_', '.', '-'; a letter or digit first)"
        ))
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
    if tree_of(path) == IDENTITY {
        return Err(format!(
            "{path:?} is a symlink: {IDENTITY}/ holds files and directories only"
        ));
    }
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

/// Where the compressed stream goes: age encryption, or the output itself
/// (the decrypted form, for benchmarks and tests).
enum Sink<W: Write> {
    Sealed(age::stream::StreamWriter<W>),
    Plain(W),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Sealed(s) => s.write(buf),
            Sink::Plain(p) => p.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Sealed(s) => s.flush(),
            Sink::Plain(p) => p.flush(),
        }
    }
}

/// Writes a backup archive, encrypted to a unit key's recipients.
pub struct Writer<W: Write> {
    tar: tar::Builder<zstd::stream::write::Encoder<'static, Sink<W>>>,
    auth: AuthKey,
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
    /// Starts an archive on `w`, encrypted to `key`'s recipients and
    /// authenticated with its first auth key.
    pub fn new(w: W, key: &UnitKey) -> Result<Self> {
        let auth = key.auth.first().context("the backup key has no auth key")?.clone();
        let enc = age::Encryptor::with_recipients(key.recipients.iter().map(|r| r as &dyn age::Recipient))
            .context("the backup key has no recipient")?;
        let sealed = enc.wrap_output(w).context("starting the encryption")?;
        Self::with_sink(Sink::Sealed(sealed), auth)
    }

    /// Starts an archive in the decrypted form (what `builder restore`
    /// leaves on a unit), tagged with `auth`: for benchmarks and tests.
    pub fn new_decrypted(w: W, auth: &AuthKey) -> Result<Self> {
        Self::with_sink(Sink::Plain(w), auth.clone())
    }

    fn with_sink(sink: Sink<W>, auth: AuthKey) -> Result<Self> {
        let mut z = zstd::stream::write::Encoder::new(sink, 3)?;
        z.include_checksum(true)?;
        Ok(Writer {
            tar: tar::Builder::new(z),
            auth,
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

    /// Appends the manifest and its tag and finishes the stream.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<(W, Manifest)> {
        manifest.schema = SCHEMA;
        manifest.entries = std::mem::take(&mut self.entries);
        let json = serde_json::to_vec_pretty(&manifest)?;
        let mut h = header(tar::EntryType::Regular, 0o644, json.len() as u64, 0);
        self.tar.append_data(&mut h, MANIFEST_NAME, json.as_slice())?;
        let tag = self.auth.tag(&json);
        let mut h = header(tar::EntryType::Regular, 0o644, tag.len() as u64, 0);
        self.tar.append_data(&mut h, TAG_NAME, tag.as_bytes())?;
        let z = self.tar.into_inner()?;
        let w = match z.finish()? {
            Sink::Sealed(s) => s.finish()?,
            Sink::Plain(p) => p,
        };
        Ok((w, manifest))
    }
}

/// What a reader may use: identities to decrypt (the fleet key; none on a
/// unit) and auth keys to authenticate.
#[derive(Clone, Default)]
pub struct Keys {
    /// Age identities (fleet keys).
    pub identities: Vec<age::x25519::Identity>,
    /// Authentication keys.
    pub auth: Vec<AuthKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keys({} identities, {} auth keys)",
            self.identities.len(),
            self.auth.len()
        )
    }
}

impl Keys {
    /// What a fleet key opens.
    pub fn fleet(keys: &[FleetKey]) -> Self {
        Keys {
            identities: keys.iter().map(|k| k.identity().clone()).collect(),
            auth: keys.iter().map(|k| k.auth().clone()).collect(),
        }
    }

    /// What a unit can check: authenticity of a decrypted copy.
    pub fn unit(key: &UnitKey) -> Self {
        Keys {
            identities: vec![],
            auth: key.auth.clone(),
        }
    }
}

/// How an archive was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// Encrypted with age (as every unit writes them).
    Encrypted,
    /// The decrypted copy `builder restore` leaves on a restored unit.
    Decrypted,
}

const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Opens an archive's inner zstd stream (decrypting it when it is sealed).
pub fn open_stream(archive: &Path, keys: &Keys) -> Result<(Box<dyn Read>, Sealing)> {
    let mut f = io::BufReader::new(File::open(archive).with_context(|| format!("opening {}", archive.display()))?);
    let head = io::BufRead::fill_buf(&mut f)
        .with_context(|| format!("reading {}", archive.display()))?
        .to_vec();
    if head.starts_with(AGE_MAGIC) {
        if keys.identities.is_empty() {
            bail!(
                "{} is encrypted to the fleet's backup key, which this machine does not hold: \
                 verify or restore it on the engineer's laptop (builder backup-key verify, builder restore --key)",
                archive.display()
            );
        }
        let d = age::Decryptor::new_buffered(f)
            .with_context(|| format!("{} is damaged: its age header does not parse", archive.display()))?;
        let r = d
            .decrypt(keys.identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => anyhow::anyhow!(
                    "refused: {} is not encrypted to this fleet's backup key (another fleet's, or a forgery)",
                    archive.display()
                ),
                e => anyhow::anyhow!("refused: {} does not decrypt: {e}", archive.display()),
            })?;
        Ok((Box::new(r), Sealing::Encrypted))
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok((Box::new(f), Sealing::Decrypted))
    } else {
        bail!(
            "{} is not a Flypack backup (neither an age-encrypted archive nor a decrypted copy)",
            archive.display()
        )
    }
}

/// Reads the whole archive, checking every entry (see the module docs);
/// `sink` gets every good entry with its data reader (files) before the next
/// one is read. Returns the authenticated manifest.
fn walk(
    archive: &Path,
    keys: &Keys,
    mut sink: impl FnMut(&Entry, &mut dyn Read) -> Result<()>,
) -> Result<(Manifest, Sealing)> {
    if keys.auth.is_empty() {
        bail!("no backup key to authenticate {} with", archive.display());
    }
    let (stream, sealing) = open_stream(archive, keys)?;
    let dec = zstd::stream::read::Decoder::new(stream)
        .with_context(|| format!("{} is not a zstd stream", archive.display()))?;
    let mut tar = tar::Archive::new(dec);
    let mut seen: Vec<Entry> = Vec::new();
    let mut paths: std::collections::HashSet<String> = Default::default();
    let mut links: std::collections::HashSet<String> = Default::default();
    let mut manifest: Option<(Vec<u8>, Manifest)> = None;
    let mut tag: Option<String> = None;
    let entries = tar.entries().context("reading the archive")?;
    for e in entries {
        let mut e = e.context("the archive is damaged or truncated")?;
        let raw = String::from_utf8(e.path_bytes().into_owned()).context("an entry name is not UTF-8")?;
        if tag.is_some() {
            bail!("refused: {raw:?} follows {TAG_NAME}, which must be the last entry");
        }
        let kind = e.header().entry_type();
        let size = e.header().size().context("an entry has no size")?;
        if raw == TAG_NAME {
            if manifest.is_none() || size > 256 {
                bail!("refused: {TAG_NAME} must follow {MANIFEST_NAME} and hold one tag");
            }
            let mut t = String::new();
            e.read_to_string(&mut t)
                .context("the archive is damaged or truncated")?;
            tag = Some(t);
            continue;
        }
        if manifest.is_some() {
            bail!("refused: {raw:?} follows {MANIFEST_NAME}; only {TAG_NAME} may");
        }
        if raw == MANIFEST_NAME {
            if size > MANIFEST_MAX {
                bail!(
                    "refused: {MANIFEST_NAME} is {size} bytes, more than the {} MiB a backup's manifest may be",
                    MANIFEST_MAX >> 20
                );
            }
            let mut buf = Vec::new();
            (&mut e)
                .take(MANIFEST_MAX)
                .read_to_end(&mut buf)
                .context("the archive is damaged or truncated")?;
            let m = serde_json::from_slice(&buf).context("MANIFEST.json does not parse")?;
            manifest = Some((buf, m));
            continue;
        }
        let path = raw.trim_end_matches('/').to_string();
        check_path(&raw).map_err(|m| anyhow::anyhow!("refused: {m}"))?;
        if !paths.insert(path.clone()) {
            bail!("refused: {path:?} is in the archive twice");
        }
        // Nothing may be reached through a link the archive itself made.
        let mut prefix = String::new();
        for c in path.split('/') {
            if !prefix.is_empty() && links.contains(&prefix) {
                bail!("refused: {path:?} passes through {prefix:?}, a symlink in the same archive");
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
        }
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        let entry = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut r = Hashing {
                    inner: &mut e,
                    hash: Sha256::new(),
                    n: 0,
                };
                let ent = Entry {
                    path: path.clone(),
                    kind: Kind::File,
                    mode,
                    size,
                    sha256: None,
                    target: None,
                };
                sink(&ent, &mut r)?;
                io::copy(&mut r, &mut io::sink()).context("the archive is damaged or truncated")?;
                Entry {
                    path,
                    kind: Kind::File,
                    mode,
                    size: r.n,
                    sha256: Some(hex::encode(r.hash.finalize())),
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
                links.insert(path.clone());
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
    let (json, m) = manifest.with_context(|| {
        format!(
            "{} has no {MANIFEST_NAME}: truncated, or not a Flypack backup",
            archive.display()
        )
    })?;
    let tag = tag.with_context(|| {
        format!(
            "refused: {} has no {TAG_NAME}: truncated, or not made with a fleet backup key",
            archive.display()
        )
    })?;
    if !keys.auth.iter().any(|k| k.verifies(&json, &tag)) {
        bail!(
            "refused: {}'s manifest is not authenticated by this fleet's backup key: it was made with another key, or altered",
            archive.display()
        );
    }
    if m.schema != SCHEMA {
        bail!(
            "backup schema {} is not {SCHEMA}: made by another firstboot version?",
            m.schema
        );
    }
    for v in m.volumes.keys() {
        check_volume_name(v).map_err(|e| anyhow::anyhow!("refused: {e}"))?;
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
    Ok((m, sealing))
}

/// Reads the whole archive and checks everything; returns its manifest and
/// how it was sealed.
pub fn verify(archive: &Path, keys: &Keys) -> Result<(Manifest, Sealing)> {
    walk(archive, keys, |_, _| Ok(()))
}

/// Writes the decrypted stream of a verified archive to `out` (the copy a
/// restored unit reads, with the fleet key's tag still inside).
pub fn decrypt_to(archive: &Path, keys: &Keys, out: &mut dyn Write) -> Result<u64> {
    let (mut r, _) = open_stream(archive, keys)?;
    io::copy(&mut r, out).context("the archive is damaged or truncated")
}

/// Bytes of file data under `prefix` in a manifest.
pub fn bytes_under(m: &Manifest, prefix: &str) -> u64 {
    let pre = format!("{}/", prefix.trim_end_matches('/'));
    m.entries
        .iter()
        .filter(|e| e.path.starts_with(&pre))
        .map(|e| e.size)
        .sum()
}

/// Verifies the archive, checks that its data under `prefix` (`identity`,
/// `volumes/<name>`) fits in `dest`'s free space, then extracts it beneath
/// `dest` with `prefix` taken off: no link followed, each file put in place
/// only once its digest matched the authenticated manifest.
pub fn extract(archive: &Path, keys: &Keys, prefix: &str, dest: &Beneath) -> Result<Manifest> {
    let (m, _) = verify(archive, keys)?;
    let need = bytes_under(&m, prefix);
    let free = dest.free_bytes()?;
    // Leave a margin for the filesystem's own use.
    if need.saturating_add(64 << 20) > free {
        bail!(
            "refused: restoring {prefix} needs {} MiB, and only {} MiB are free; nothing was written",
            need >> 20,
            free >> 20
        );
    }
    let want: BTreeMap<&str, &Entry> = m.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let pre = format!("{}/", prefix.trim_end_matches('/'));
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    walk(archive, keys, |e, data| {
        let Some(rel) = e.path.strip_prefix(&pre) else {
            return Ok(());
        };
        let rel = Path::new(rel);
        let listed = want
            .get(e.path.as_str())
            .context("an entry outside the verified manifest")?;
        if let Some(p) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            dest.create_dir_all(p, 0o755)?;
        }
        match e.kind {
            Kind::Dir => {
                dest.create_dir_all(rel, 0o700)?;
                dirs.push((rel.to_path_buf(), e.mode));
            }
            Kind::File => {
                dest.write_file(rel, e.mode, data, listed.sha256.as_deref())?;
            }
            Kind::Symlink => dest.symlink(rel, e.target.as_deref().unwrap_or_default())?,
        }
        Ok(())
    })?;
    // Directory modes last, deepest first (a read-only directory must not
    // stop its own children from being written).
    for (d, mode) in dirs.iter().rev() {
        dest.create_dir_all(d, *mode)?;
    }
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

    fn fleet() -> FleetKey {
        FleetKey::generate("2026-11-28T00:00:00Z").unwrap()
    }

    fn sample(dir: &Path, k: &FleetKey) -> PathBuf {
        let src = dir.join("src");
        fs::create_dir_all(src.join("vol/sub")).unwrap();
        fs::write(src.join("vol/sub/a.bin"), vec![7u8; 100_000]).unwrap();
        fs::write(src.join("vol/b.txt"), "bee").unwrap();
        std::os::unix::fs::symlink("sub/a.bin", src.join("vol/link")).unwrap();
        let out = dir.join("b.tar.zst.age");
        let mut w = Writer::new(File::create(&out).unwrap(), &k.unit_part()).unwrap();
        w.add_bytes("identity/etc/hostname", b"fp-01\n", 0o644).unwrap();
        w.add_path(&src.join("vol"), "volumes/vm-data", false).unwrap();
        w.finish(meta()).unwrap();
        out
    }

    /// An archive written entry by entry with raw names (what an attacker
    /// holding a unit part could make): decrypted form, tagged with `auth`.
    pub(crate) fn raw_archive(
        path: &Path,
        entries: &[(&str, tar::EntryType, &[u8], Option<&str>)],
        manifest: &Manifest,
        auth: &AuthKey,
    ) {
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
        let tag = auth.tag(&json);
        let mut h = header(tar::EntryType::Regular, 0o644, tag.len() as u64, 0);
        b.append_data(&mut h, TAG_NAME, tag.as_bytes()).unwrap();
        enc.write_all(&b.into_inner().unwrap()).unwrap();
        enc.finish().unwrap();
    }

    /// The manifest a raw archive's entries need to pass the digest checks.
    fn listing(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Manifest {
        let mut m = meta();
        for (name, kind, data, link) in entries {
            m.entries.push(Entry {
                path: name.trim_end_matches('/').to_string(),
                kind: match kind {
                    tar::EntryType::Directory => Kind::Dir,
                    tar::EntryType::Symlink => Kind::Symlink,
                    _ => Kind::File,
                },
                mode: 0o644,
                size: if *kind == tar::EntryType::Regular {
                    data.len() as u64
                } else {
                    0
                },
                sha256: (*kind == tar::EntryType::Regular).then(|| hex::encode(Sha256::digest(data))),
                target: link.map(String::from),
            });
        }
        m
    }

    #[test]
    fn round_trip_extracts_what_was_written_and_reveals_nothing_without_the_key() {
        let d = tempfile::tempdir().unwrap();
        let k = fleet();
        let a = sample(d.path(), &k);
        // The sealed file shows neither names nor content.
        let raw = fs::read(&a).unwrap();
        assert!(raw.starts_with(AGE_MAGIC));
        for needle in [&b"fp-01"[..], b"hostname", b"MANIFEST", b"vm-data"] {
            assert!(!raw.windows(needle.len()).any(|w| w == needle), "{needle:?} readable");
        }
        let keys = Keys::fleet(std::slice::from_ref(&k));
        let (m, sealing) = verify(&a, &keys).unwrap();
        assert_eq!(sealing, Sealing::Encrypted);
        assert_eq!(m.hostname, "fp-01");
        assert!(
            m.entries
                .iter()
                .any(|e| e.path == "volumes/vm-data/sub/a.bin" && e.size == 100_000)
        );
        let out = d.path().join("out");
        fs::create_dir_all(&out).unwrap();
        extract(&a, &keys, "volumes/vm-data", &Beneath::open(&out).unwrap()).unwrap();
        assert_eq!(fs::read(out.join("sub/a.bin")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("sub/a.bin"));
        // The decrypted copy a restored unit reads: verified with the unit part alone.
        let plain = d.path().join("plain.tar.zst");
        decrypt_to(&a, &keys, &mut File::create(&plain).unwrap()).unwrap();
        let unit = Keys::unit(&k.unit_part());
        assert_eq!(verify(&plain, &unit).unwrap().1, Sealing::Decrypted);
        let id = d.path().join("id");
        fs::create_dir_all(&id).unwrap();
        extract(&plain, &unit, "identity", &Beneath::open(&id).unwrap()).unwrap();
        assert_eq!(fs::read_to_string(id.join("etc/hostname")).unwrap(), "fp-01\n");
        assert!(!id.join("sub").exists(), "volume data leaked into the identity tree");
        // A unit cannot open the sealed archive itself.
        let e = format!("{:#}", verify(&a, &unit).unwrap_err());
        assert!(e.contains("encrypted to the fleet's backup key"), "{e}");
    }

    #[test]
    fn other_keys_and_edits_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let (k, other) = (fleet(), fleet());
        let a = sample(d.path(), &k);
        let e = format!(
            "{:#}",
            verify(&a, &Keys::fleet(std::slice::from_ref(&other))).unwrap_err()
        );
        assert!(e.contains("not encrypted to this fleet's backup key"), "{e}");
        // Re-encrypted to our recipient after an edit, by someone without the auth key.
        let keys = Keys::fleet(std::slice::from_ref(&k));
        let plain = d.path().join("plain");
        decrypt_to(&a, &keys, &mut File::create(&plain).unwrap()).unwrap();
        let entries: &[(&str, tar::EntryType, &[u8], Option<&str>)] =
            &[("identity/etc/hostname", tar::EntryType::Regular, b"evil\n", None)];
        let forged = d.path().join("forged");
        raw_archive(&forged, entries, &listing(entries), other.auth());
        let sealed = d.path().join("forged.age");
        {
            let enc = age::Encryptor::with_recipients(std::iter::once(&k.recipient() as &dyn age::Recipient)).unwrap();
            let mut w = enc.wrap_output(File::create(&sealed).unwrap()).unwrap();
            io::copy(&mut File::open(&forged).unwrap(), &mut w).unwrap();
            w.finish().unwrap();
        }
        let e = format!("{:#}", verify(&sealed, &keys).unwrap_err());
        assert!(e.contains("not authenticated by this fleet's backup key"), "{e}");
        let e = format!("{:#}", verify(&forged, &Keys::unit(&k.unit_part())).unwrap_err());
        assert!(e.contains("not authenticated"), "{e}");
    }

    #[test]
    fn truncated_and_flipped_archives_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let k = fleet();
        let keys = Keys::fleet(std::slice::from_ref(&k));
        let a = sample(d.path(), &k);
        let bytes = fs::read(&a).unwrap();
        let t = d.path().join("t");
        fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
        assert!(verify(&t, &keys).is_err());
        for at in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 10] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            fs::write(&t, &flipped).unwrap();
            assert!(verify(&t, &keys).is_err(), "a flipped byte at {at} passed");
        }
    }

    #[test]
    fn entries_that_do_not_match_the_manifest_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let k = fleet();
        let keys = Keys::unit(&k.unit_part());
        let a = d.path().join("a.tar.zst");
        let good: &[(&str, tar::EntryType, &[u8], Option<&str>)] =
            &[("identity/etc/hostname", tar::EntryType::Regular, b"fp-01\n", None)];
        let m = listing(good);
        raw_archive(
            &a,
            &[("identity/etc/hostname", tar::EntryType::Regular, b"fp-02\n", None)],
            &m,
            k.auth(),
        );
        let e = format!("{:#}", verify(&a, &keys).unwrap_err());
        assert!(e.contains("identity/etc/hostname") && e.contains("SHA-256"), "{e}");
        raw_archive(
            &a,
            &[
                ("identity/etc/hostname", tar::EntryType::Regular, b"fp-01\n", None),
                ("identity/etc/extra", tar::EntryType::Regular, b"x", None),
            ],
            &m,
            k.auth(),
        );
        let e = format!("{:#}", verify(&a, &keys).unwrap_err());
        assert!(e.contains("not in its manifest"), "{e}");
        raw_archive(&a, &[], &m, k.auth());
        let e = format!("{:#}", verify(&a, &keys).unwrap_err());
        assert!(e.contains("lacks"), "{e}");
        raw_archive(&a, good, &m, k.auth());
        verify(&a, &keys).unwrap();
    }

    /// Crafted archives, each correctly listed and tagged with the fleet's
    /// own auth key (an attacker who holds a unit part): every one refused,
    /// nothing written anywhere.
    #[test]
    fn crafted_archives_are_refused_and_nothing_is_written() {
        type E<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);
        use tar::EntryType::{Block, Directory as D, Link, Regular as F, Symlink as L};
        let d = tempfile::tempdir().unwrap();
        let k = fleet();
        let keys = Keys::unit(&k.unit_part());
        let cases: &[(&str, &[E], &str)] = &[
            (
                "dot-dot",
                &[("identity/../../etc/shadow", F, b"x", None)],
                "\"..\" component",
            ),
            ("absolute", &[("/etc/shadow", F, b"x", None)], "absolute path"),
            ("outside", &[("etc/shadow", F, b"x", None)], "outside identity/"),
            ("dot", &[("volumes/vm/./x", F, b"x", None)], "\".\" component"),
            ("abs-link", &[("volumes/vm/l", L, b"", Some("/etc/shadow"))], "absolute"),
            (
                "leaving-link",
                &[("volumes/vm/l", L, b"", Some("../../identity/etc"))],
                "outside its tree",
            ),
            (
                "hard-link",
                &[("volumes/vm/h", Link, b"", Some("volumes/vm/x"))],
                "hard link",
            ),
            ("device", &[("volumes/vm/dev", Block, b"", None)], "Block"),
            (
                "link-chain",
                &[
                    ("volumes/vm/a", D, b"", None),
                    ("volumes/vm/a/b", L, b"", Some("..")),
                    ("volumes/vm/a/b/a/b/x", F, b"evil", None),
                ],
                "passes through \"volumes/vm/a/b\", a symlink in the same archive",
            ),
            (
                "dir-through-link",
                &[("volumes/vm/l", L, b"", Some("d")), ("volumes/vm/l/sub/", D, b"", None)],
                "passes through \"volumes/vm/l\"",
            ),
            (
                "link-then-file-over-it",
                &[("volumes/vm/l", L, b"", Some("d")), ("volumes/vm/l", F, b"x", None)],
                "twice",
            ),
            (
                "identity-link",
                &[("identity/etc/shadow", L, b"", Some("passwd"))],
                "files and directories only",
            ),
            ("volume-dot-dot", &[("volumes/../x", F, b"x", None)], "\"..\" component"),
            (
                "volume-name",
                &[("volumes/-bad/x", F, b"x", None)],
                "not a Docker volume name",
            ),
        ];
        let root = d.path().join("scratch");
        fs::create_dir_all(&root).unwrap();
        for (name, entries, want) in cases {
            let a = d.path().join(format!("{name}.tar.zst"));
            raw_archive(&a, entries, &listing(entries), k.auth());
            let e = format!("{:#}", verify(&a, &keys).unwrap_err());
            assert!(e.contains("refused") && e.contains(want), "{name}: {e}");
            for prefix in ["identity", "volumes/vm"] {
                assert!(
                    extract(&a, &keys, prefix, &Beneath::open(&root).unwrap()).is_err(),
                    "{name}"
                );
            }
            assert_eq!(
                fs::read_dir(&root).unwrap().count(),
                0,
                "{name}: something was extracted"
            );
        }
        // A manifest of many MiB.
        let a = d.path().join("big-manifest.tar.zst");
        let mut m = meta();
        m.image = "x".repeat((MANIFEST_MAX + 1) as usize);
        raw_archive(&a, &[], &m, k.auth());
        let e = format!("{:#}", verify(&a, &keys).unwrap_err());
        assert!(e.contains("more than the 16 MiB"), "{e}");
        // A volume name in the manifest Docker would not take.
        let a = d.path().join("vol-name.tar.zst");
        let mut m = meta();
        m.volumes.insert("../etc".into(), "copied".into());
        raw_archive(&a, &[], &m, k.auth());
        let e = format!("{:#}", verify(&a, &keys).unwrap_err());
        assert!(e.contains("not a Docker volume name"), "{e}");
        // A link that stays inside its tree is fine.
        assert!(check_link("volumes/vm/a/l", "../b").is_ok());
        assert!(check_link("volumes/vm/l", "../vm2/x").is_err());
    }

    #[test]
    fn more_data_than_free_space_is_refused_before_writing() {
        let d = tempfile::tempdir().unwrap();
        let k = fleet();
        let keys = Keys::unit(&k.unit_part());
        let root = d.path().join("scratch");
        fs::create_dir_all(&root).unwrap();
        let b = Beneath::open(&root).unwrap();
        let free = b.free_bytes().unwrap();
        // Listed (and tagged) as larger than the disk: refused from the manifest alone.
        let entries: &[(&str, tar::EntryType, &[u8], Option<&str>)] =
            &[("identity/big", tar::EntryType::Regular, b"small", None)];
        let mut m = listing(entries);
        m.entries[0].size = free + 1;
        let a = d.path().join("big.tar.zst");
        raw_archive(&a, entries, &m, k.auth());
        assert!(verify(&a, &keys).is_err(), "a size that does not match passed");
        let cap = bytes_under(&m, "identity");
        assert!(cap > free);
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    }
}
