//! Writing under a directory that holds untrusted names (a backup's entries)
//! without ever following a link: every path is opened beneath the directory
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`,
//! so neither `..` nor a symlink (one the archive made, or one already
//! there) can lead a write outside it or through a link inside it.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use sha2::{Digest, Sha256};

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// A directory that everything is written beneath.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
    shown: String,
}

/// Splits a relative path into its normal components, refusing anything else.
fn parts(rel: &Path) -> Result<Vec<&std::ffi::OsStr>> {
    let mut v = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => v.push(n),
            _ => bail!("refused: {} is not a plain relative path", rel.display()),
        }
    }
    if v.is_empty() {
        bail!("refused: an empty path");
    }
    Ok(v)
}

fn kernel_hint(e: rustix::io::Errno, what: &str) -> anyhow::Error {
    match e {
        rustix::io::Errno::LOOP => anyhow::anyhow!("refused: {what} goes through a symbolic link"),
        rustix::io::Errno::NOTDIR => {
            anyhow::anyhow!("refused: {what} is not a directory (a file or a symbolic link is in the way)")
        }
        rustix::io::Errno::XDEV => anyhow::anyhow!("refused: {what} leads outside the restore folder"),
        rustix::io::Errno::NOSYS => {
            anyhow::anyhow!("{what}: this kernel has no openat2 (Linux 5.6 or later is needed to restore safely)")
        }
        e => anyhow::anyhow!("{what}: {e}"),
    }
}

impl Beneath {
    /// Opens `dir` (which must exist and is trusted).
    pub fn open(dir: &Path) -> Result<Self> {
        let root = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .with_context(|| format!("opening {}", dir.display()))?;
        Ok(Beneath {
            root,
            shown: dir.display().to_string(),
        })
    }

    fn dir(&self, rel: &[&std::ffi::OsStr]) -> Result<OwnedFd> {
        if rel.is_empty() {
            return rustix::fs::openat2(
                &self.root,
                ".",
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
            .map_err(|e| kernel_hint(e, &self.shown));
        }
        let p: std::path::PathBuf = rel.iter().collect();
        rustix::fs::openat2(
            &self.root,
            &p,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(|e| kernel_hint(e, &p.display().to_string()))
    }

    /// Makes the directory `rel` and its parents (mode `mode` for new ones,
    /// and for `rel` itself); an existing symlink anywhere on the way is an error.
    pub fn create_dir_all(&self, rel: &Path, mode: u32) -> Result<()> {
        let parts = parts(rel)?;
        for i in 0..parts.len() {
            let parent = self.dir(&parts[..i])?;
            match rustix::fs::mkdirat(&parent, parts[i], Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(kernel_hint(e, &rel.display().to_string())),
            }
            // Opening it proves it is a directory and not a link.
            let d = self.dir(&parts[..=i])?;
            if i + 1 == parts.len() {
                rustix::fs::fchmod(&d, Mode::from_raw_mode(mode & 0o7777))
                    .with_context(|| format!("setting the mode of {}", rel.display()))?;
            }
        }
        Ok(())
    }

    /// Writes a file at `rel` from `data` under a temporary name, checks its
    /// SHA-256 against `sha256` (when given), and only then renames it in
    /// place. Parents must exist.
    pub fn write_file(&self, rel: &Path, mode: u32, data: &mut dyn Read, sha256: Option<&str>) -> Result<u64> {
        let parts = parts(rel)?;
        let (name, parent) = parts.split_last().expect("parts is not empty");
        let dir = self.dir(parent)?;
        let tmp = format!(".{}.flypack-tmp", name.to_string_lossy());
        // A leftover of an interrupted restore.
        match rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(kernel_hint(e, &rel.display().to_string())),
        }
        let fd = rustix::fs::openat2(
            &dir,
            tmp.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
            RESOLVE,
        )
        .map_err(|e| kernel_hint(e, &rel.display().to_string()))?;
        let mut f = std::fs::File::from(fd);
        let mut hash = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        let res = (|| -> Result<()> {
            loop {
                let k = data.read(&mut buf).context("the archive is damaged or truncated")?;
                if k == 0 {
                    break;
                }
                hash.update(&buf[..k]);
                f.write_all(&buf[..k])
                    .with_context(|| format!("writing {}", rel.display()))?;
                n += k as u64;
            }
            if let Some(want) = sha256 {
                let got = hex::encode(hash.finalize_reset());
                if got != want {
                    bail!(
                        "refused: {} has SHA-256 {got}, the manifest says {want}: the archive changed while it was read",
                        rel.display()
                    );
                }
            }
            rustix::fs::fchmod(f.as_fd(), Mode::from_raw_mode(mode & 0o7777))?;
            f.sync_all()?;
            Ok(())
        })();
        if let Err(e) = res {
            // The temporary file is ours; the error above is what matters.
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
        drop(f);
        // renameat replaces a link at `name` itself, never its target.
        rustix::fs::renameat(&dir, tmp.as_str(), &dir, *name)
            .map_err(|e| kernel_hint(e, &rel.display().to_string()))?;
        Ok(n)
    }

    /// Makes a symlink at `rel` pointing to `target` (replacing a file or
    /// link there). The target is stored, never followed.
    pub fn symlink(&self, rel: &Path, target: &str) -> Result<()> {
        let parts = parts(rel)?;
        let (name, parent) = parts.split_last().expect("parts is not empty");
        let dir = self.dir(parent)?;
        match rustix::fs::unlinkat(&dir, *name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(kernel_hint(e, &rel.display().to_string())),
        }
        rustix::fs::symlinkat(target, &dir, *name).map_err(|e| kernel_hint(e, &rel.display().to_string()))
    }

    /// Free bytes on the filesystem holding the directory.
    pub fn free_bytes(&self) -> Result<u64> {
        let s = rustix::fs::fstatvfs(&self.root).with_context(|| format!("statvfs of {}", self.shown))?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }
}

/// Copies the tree at `src` (trusted: written by a restore) into `dest`
/// beneath-only: files, directories and symlinks, modes kept.
pub fn copy_tree(src: &Path, dest: &Beneath, under: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let e = e?;
        let p = e.path();
        let rel = under.join(e.file_name());
        let m = std::fs::symlink_metadata(&p)?;
        let mode = m.permissions().mode();
        if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p)?;
            dest.symlink(&rel, &t.to_string_lossy())?;
        } else if m.is_dir() {
            dest.create_dir_all(&rel, mode)?;
            copy_tree(&p, dest, &rel)?;
        } else if m.is_file() {
            let mut f = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
            dest.write_file(&rel, mode, &mut f, None)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_written_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // Links already in the restore folder, as an earlier entry could make them.
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("real", root.join("inside")).unwrap();
        let b = Beneath::open(&root).unwrap();
        for p in ["abs/x", "up/x", "inside/x", "abs/a/b/x"] {
            let e = b
                .write_file(Path::new(p), 0o644, &mut &b"evil"[..], None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("refused"), "{p}: {e}");
            let e = b.create_dir_all(Path::new(p), 0o755).unwrap_err().to_string();
            assert!(e.contains("refused"), "{p}: {e}");
        }
        for p in ["../x", "/etc/x", "a/../../x"] {
            assert!(
                b.write_file(Path::new(p), 0o644, &mut &b"evil"[..], None).is_err(),
                "{p}"
            );
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something escaped");
        assert!(!d.path().join("x").exists());
        assert_eq!(std::fs::read_dir(root.join("real")).unwrap().count(), 0);
        // A file in place of a link replaces the link, not its target.
        b.write_file(Path::new("abs"), 0o600, &mut &b"plain"[..], None).unwrap();
        assert!(std::fs::symlink_metadata(root.join("abs")).unwrap().is_file());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn a_file_lands_only_when_its_digest_matches() {
        let d = tempfile::tempdir().unwrap();
        let b = Beneath::open(d.path()).unwrap();
        b.create_dir_all(Path::new("a/b"), 0o750).unwrap();
        let good = hex::encode(Sha256::digest(b"data"));
        b.write_file(Path::new("a/b/f"), 0o640, &mut &b"data"[..], Some(&good))
            .unwrap();
        assert_eq!(std::fs::read(d.path().join("a/b/f")).unwrap(), b"data");
        let e = b
            .write_file(Path::new("a/b/g"), 0o640, &mut &b"dat4"[..], Some(&good))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHA-256"), "{e}");
        assert_eq!(
            std::fs::read_dir(d.path().join("a/b")).unwrap().count(),
            1,
            "a refused file or its temp was left"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(d.path().join("a/b")).unwrap().permissions().mode() & 0o777,
            0o750
        );
    }
}
