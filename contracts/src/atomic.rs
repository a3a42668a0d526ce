//! Atomic file writes: temp file in the same directory, fsync, rename, fsync
//! of the directory. A reader sees the old file or the new one, never a mix,
//! and a power cut leaves one of the two.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Prefix of every temporary file we create, so stale ones are recognisable.
pub const TEMP_PREFIX: &str = ".flypack-tmp-";

/// Writes `contents` to `path` atomically, with `mode` permission bits.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = AtomicFile::create(path, mode)?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", file.temp_path().display()))?;
    file.commit()
}

/// Fsyncs a directory so that a rename inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).with_context(|| format!("opening directory {}", dir.display()))?;
    d.sync_all()
        .with_context(|| format!("fsync of directory {}", dir.display()))
}

/// A file being written under a temporary name next to its final path.
///
/// `commit` makes it durable and renames it into place; dropping it without
/// committing removes the temporary file, so nothing half-written is ever
/// found under the final name.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file for `target` with permission bits `mode`.
    pub fn create(target: &Path, mode: u32) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = parent_dir(target);
        let name = target
            .file_name()
            .with_context(|| format!("{} has no file name", target.display()))?;
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        // The umask may have narrowed `mode`; the caller asked for exactly it.
        fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .with_context(|| format!("setting mode {mode:o} on {}", temp.display()))?;
        Ok(Self {
            file: Some(file),
            temp,
            target: target.to_path_buf(),
        })
    }

    /// Where the data is being written until `commit`.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is present until commit")
    }

    /// Fsyncs the file, renames it over the target and fsyncs the directory.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file is present until commit");
        file.sync_all()
            .with_context(|| format!("fsync of {}", self.temp.display()))?;
        drop(file);
        fs::rename(&self.temp, &self.target)
            .with_context(|| format!("renaming {} to {}", self.temp.display(), self.target.display()))?;
        fsync_dir(parent_dir(&self.target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not committed: the temporary file must not survive. A failure
            // here leaves a `.flypack-tmp-*` file that the next run removes.
            if let Err(e) = fs::remove_file(&self.temp) {
                tracing::warn!("could not remove {}: {e}", self.temp.display());
            }
        }
    }
}

/// A path that is removed (file or whole tree) when dropped, unless kept.
/// Used for temporary outputs that are renamed into place at the very end.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    /// A temporary sibling of `target` (same directory, hence same filesystem).
    pub fn sibling(target: &Path) -> Result<Self> {
        let name = target
            .file_name()
            .with_context(|| format!("{} has no file name", target.display()))?;
        let path = parent_dir(target).join(format!(
            "{TEMP_PREFIX}{}.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        remove_any(&path)?;
        Ok(Self { path, keep: false })
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temporary path onto `target` (fsyncing data and the
    /// directory first) and stops tracking it.
    pub fn persist(mut self, target: &Path) -> Result<()> {
        if self.path.is_file() {
            File::open(&self.path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("fsync of {}", self.path.display()))?;
        }
        fs::rename(&self.path, target)
            .with_context(|| format!("renaming {} to {}", self.path.display(), target.display()))?;
        self.keep = true;
        fsync_dir(parent_dir(target))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = remove_any(&self.path)
        {
            tracing::warn!("could not remove {}: {e:#}", self.path.display());
        }
    }
}

/// Removes a file or a directory tree; a missing path is not an error.
pub fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display())),
        Ok(_) => fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
}

/// The process that made a temporary name: `.flypack-tmp-NAME.PID` or
/// `.flypack-tmp-KIND-PID-RANDOM`.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    if let Some((_, last)) = rest.rsplit_once('.')
        && let Ok(pid) = last.parse()
    {
        return Some(pid);
    }
    rest.split('-').find_map(|t| t.parse().ok())
}

/// Whether the process that made a temporary name is gone.
fn is_stale(name: &str) -> bool {
    match owner_pid(name) {
        Some(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        None => true,
    }
}

/// A temporary directory in `dir` named for this process, so concurrent
/// runs sharing `dir` never sweep it away.
pub fn temp_dir_in(dir: &Path, kind: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{kind}-{}-", std::process::id()))
        .tempdir_in(dir)
        .with_context(|| format!("creating a work folder in {}", dir.display()))
}

/// Removes leftovers of interrupted runs (`.flypack-tmp-*` whose process is
/// gone) from `dir`. Returns how many were removed.
pub fn sweep_stale_temps(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) && is_stale(&name) {
            remove_any(&entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_sets_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn dropped_atomic_file_leaves_nothing_and_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.img");
        fs::write(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&p, 0o644).unwrap();
            f.write_all(b"half-writ").unwrap();
        }
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_path_is_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("final");
        let t = TempPath::sibling(&target).unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        drop(t);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let t = TempPath::sibling(&target).unwrap();
        fs::write(t.path(), b"x").unwrap();
        t.persist(&target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"x");
    }

    #[test]
    fn sweep_removes_only_temps_of_dead_processes() {
        let dir = tempfile::tempdir().unwrap();
        // PIDs above the kernel's limit are never alive.
        fs::write(dir.path().join(".flypack-tmp-x.img.99999999"), b"").unwrap();
        fs::create_dir(dir.path().join(".flypack-tmp-tree-99999998-abc")).unwrap();
        fs::create_dir(dir.path().join(".flypack-tmp-nopid")).unwrap();
        // Ours (a running process) stays.
        let live = temp_dir_in(dir.path(), "tree").unwrap();
        fs::write(dir.path().join(format!(".flypack-tmp-y.{}", std::process::id())), b"").unwrap();
        fs::write(dir.path().join("keep"), b"").unwrap();
        assert_eq!(sweep_stale_temps(dir.path()).unwrap(), 3);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
        assert!(live.path().exists());
        assert_eq!(owner_pid(".flypack-tmp-flypack.img.1234"), Some(1234));
        assert_eq!(owner_pid(".flypack-tmp-tree-42-Xy7"), Some(42));
        assert_eq!(owner_pid("other"), None);
    }
}
