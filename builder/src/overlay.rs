//! Overlays: directory trees laid over the root filesystem. Files ending in
//! `.tera` are rendered with tera (suffix dropped); everything else is copied
//! as is. Modes come from the source files; an optional `.flypack-modes.toml`
//! at the overlay root sets modes the source control system cannot keep
//! (`"etc/sudoers.d/flypack" = "0440"`). Everything is owned by root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flypack_contracts::digest::KeyHasher;
use serde::Serialize;

/// File at an overlay's root that sets modes.
pub const MODES_FILE: &str = ".flypack-modes.toml";
const TERA_SUFFIX: &str = ".tera";

/// One entry of an overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir { rel: PathBuf, mode: u32 },
    /// A file copied as is.
    File { rel: PathBuf, src: PathBuf, mode: u32 },
    /// A template rendered to `rel` (suffix dropped).
    Template { rel: PathBuf, src: PathBuf, mode: u32 },
    /// A symlink.
    Symlink { rel: PathBuf, target: PathBuf },
}

impl Entry {
    /// Path inside the image.
    pub fn rel(&self) -> &Path {
        match self {
            Entry::Dir { rel, .. }
            | Entry::File { rel, .. }
            | Entry::Template { rel, .. }
            | Entry::Symlink { rel, .. } => rel,
        }
    }
}

/// An overlay in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct OverlayPlan {
    /// The directory.
    pub path: PathBuf,
    /// Digest of every entry's path, mode and content.
    pub digest: String,
    /// Number of files and templates.
    pub files: usize,
}

/// Lists an overlay, sorted by path, with modes applied.
pub fn walk(root: &Path) -> Result<Vec<Entry>> {
    let modes = read_modes(root)?;
    let mut out = Vec::new();
    walk_dir(root, root, &modes, &mut out)?;
    out.sort_by(|a, b| a.rel().cmp(b.rel()));
    for rel in modes.keys() {
        if !out.iter().any(|e| e.rel() == Path::new(rel)) {
            bail!(
                "{}: {rel:?} is not in the overlay; fix the path or remove the line",
                root.join(MODES_FILE).display()
            );
        }
    }
    Ok(out)
}

fn read_modes(root: &Path) -> Result<BTreeMap<String, u32>> {
    let p = root.join(MODES_FILE);
    if !p.exists() {
        return Ok(BTreeMap::new());
    }
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let raw: BTreeMap<String, String> = flypack_contracts::config::parse_toml(&p, &text)?;
    raw.into_iter()
        .map(|(k, v)| {
            let mode = u32::from_str_radix(v.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .with_context(|| format!("{}: {k}: {v:?} is not an octal mode like \"0440\"", p.display()))?;
            Ok((k, mode))
        })
        .collect()
}

fn walk_dir(root: &Path, dir: &Path, modes: &BTreeMap<String, u32>, out: &mut Vec<Entry>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading overlay directory {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading overlay directory {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let rel = src.strip_prefix(root).expect("walk stays under root").to_path_buf();
        if dir == root && rel.as_os_str() == MODES_FILE {
            continue;
        }
        let meta = fs::symlink_metadata(&src).with_context(|| format!("inspecting {}", src.display()))?;
        let ft = meta.file_type();
        let mode_of = |rel: &Path| {
            modes
                .get(&rel.to_string_lossy().into_owned())
                .copied()
                .unwrap_or(meta.mode() & 0o7777)
        };
        if ft.is_symlink() {
            let target = fs::read_link(&src).with_context(|| format!("reading link {}", src.display()))?;
            out.push(Entry::Symlink { rel, target });
        } else if ft.is_dir() {
            out.push(Entry::Dir {
                mode: mode_of(&rel),
                rel: rel.clone(),
            });
            walk_dir(root, &src, modes, out)?;
        } else if ft.is_file() {
            let name = rel.to_string_lossy();
            if let Some(stripped) = name.strip_suffix(TERA_SUFFIX) {
                let out_rel = PathBuf::from(stripped);
                // A mode for a template may be given under either name.
                let mode = modes.get(stripped).copied().unwrap_or_else(|| mode_of(&rel));
                out.push(Entry::Template {
                    rel: out_rel,
                    src,
                    mode,
                });
            } else {
                out.push(Entry::File {
                    mode: mode_of(&rel),
                    rel,
                    src,
                });
            }
        } else {
            bail!(
                "{}: only files, directories and symlinks can be in an overlay",
                src.display()
            );
        }
    }
    Ok(())
}

/// Digest of an overlay (paths, modes, contents, link targets).
pub fn plan(root: &Path) -> Result<OverlayPlan> {
    let entries = walk(root)?;
    let mut h = KeyHasher::new();
    let mut files = 0;
    for e in &entries {
        match e {
            Entry::Dir { rel, mode } => {
                h.part("dir", rel.as_os_str().as_encoded_bytes())
                    .part("mode", mode.to_le_bytes());
            }
            Entry::File { rel, src, mode } | Entry::Template { rel, src, mode } => {
                files += 1;
                let kind = if matches!(e, Entry::File { .. }) {
                    "file"
                } else {
                    "template"
                };
                let data = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                h.part(kind, rel.as_os_str().as_encoded_bytes())
                    .part("mode", mode.to_le_bytes())
                    .part("data", &data);
            }
            Entry::Symlink { rel, target } => {
                h.part("link", rel.as_os_str().as_encoded_bytes())
                    .part("target", target.as_os_str().as_encoded_bytes());
            }
        }
    }
    Ok(OverlayPlan {
        path: root.to_path_buf(),
        digest: h.finish(),
        files,
    })
}

/// Renders one template.
pub fn render(src: &Path, text: &str, ctx: &tera::Context) -> Result<String> {
    let mut t = tera::Tera::new();
    t.autoescape_on(Vec::<&str>::new());
    let name = src.display().to_string();
    t.add_raw_template(&name, text)
        .with_context(|| format!("parsing template {name}"))?;
    t.render(&name, ctx)
        .with_context(|| format!("rendering template {name}"))
}

/// Lays `overlay` over the tree at `root`. Existing files are replaced (never
/// written through: the old file is unlinked first, so hard links and
/// symlinks in the tree are not followed).
pub fn apply(overlay: &Path, root: &Path, ctx: &tera::Context) -> Result<usize> {
    let mut n = 0;
    for e in walk(overlay)? {
        let dst = root.join(e.rel());
        match &e {
            Entry::Dir { mode, .. } => {
                match fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => bail!(
                        "overlay {} has a directory where the image has a file or link: {}",
                        overlay.display(),
                        e.rel().display()
                    ),
                    Err(_) => fs::create_dir(&dst).with_context(|| format!("creating {}", dst.display()))?,
                }
                set_owner_mode(&dst, *mode)?;
            }
            Entry::File { src, mode, .. } => {
                let data = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                replace_file(&dst, &data, *mode)?;
                n += 1;
            }
            Entry::Template { src, mode, .. } => {
                let text = fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
                let data = render(src, &text, ctx)?;
                replace_file(&dst, data.as_bytes(), *mode)?;
                n += 1;
            }
            Entry::Symlink { target, .. } => {
                remove_non_dir(&dst)?;
                std::os::unix::fs::symlink(target, &dst).with_context(|| format!("creating link {}", dst.display()))?;
                rustix::fs::chownat(
                    rustix::fs::CWD,
                    &dst,
                    Some(rustix::fs::Uid::ROOT),
                    Some(rustix::fs::Gid::ROOT),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .with_context(|| format!("chown of {}", dst.display()))?;
            }
        }
    }
    Ok(n)
}

fn remove_non_dir(dst: &Path) -> Result<()> {
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => bail!(
            "{} is a directory in the image; an overlay cannot replace it with a file",
            dst.display()
        ),
        Ok(_) => fs::remove_file(dst).with_context(|| format!("removing {}", dst.display())),
        Err(_) => Ok(()),
    }
}

/// Writes a new file at `dst` (unlinking what was there), owned by root.
pub fn replace_file(dst: &Path, data: &[u8], mode: u32) -> Result<()> {
    remove_non_dir(dst)?;
    if let Some(parent) = dst.parent()
        && !parent.is_dir()
    {
        bail!(
            "{} does not exist in the image: add the directory to the overlay",
            parent.display()
        );
    }
    fs::write(dst, data).with_context(|| format!("writing {}", dst.display()))?;
    set_owner_mode(dst, mode)
}

fn set_owner_mode(p: &Path, mode: u32) -> Result<()> {
    rustix::fs::chown(p, Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT))
        .with_context(|| format!("chown root:root {}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {mode:o} {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_overlay() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc/sudoers.d")).unwrap();
        fs::write(r.join("etc/sudoers.d/team"), "x ALL=(ALL) NOPASSWD: ALL\n").unwrap();
        fs::write(r.join("etc/motd.tera"), "Welcome to {{ name }}\n").unwrap();
        std::os::unix::fs::symlink("/dev/null", r.join("etc/masked")).unwrap();
        fs::write(r.join(MODES_FILE), "\"etc/sudoers.d/team\" = \"0440\"\n").unwrap();
        d
    }

    #[test]
    fn walk_lists_sorted_entries_with_modes() {
        let d = make_overlay();
        let entries = walk(d.path()).unwrap();
        let rels: Vec<_> = entries.iter().map(|e| e.rel().display().to_string()).collect();
        assert_eq!(
            rels,
            ["etc", "etc/masked", "etc/motd", "etc/sudoers.d", "etc/sudoers.d/team"]
        );
        assert!(matches!(&entries[4], Entry::File { mode: 0o440, .. }));
        assert!(matches!(&entries[2], Entry::Template { .. }));
    }

    #[test]
    fn apply_renders_replaces_and_does_not_write_through_links() {
        let d = make_overlay();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        // A hard link in the tree must not see the overlay's content.
        fs::write(root.path().join("etc/motd"), "old").unwrap();
        fs::hard_link(root.path().join("etc/motd"), root.path().join("cached-copy")).unwrap();
        let mut ctx = tera::Context::new();
        ctx.insert("name", "unit-7");
        let n = apply(d.path(), root.path(), &ctx).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            fs::read_to_string(root.path().join("etc/motd")).unwrap(),
            "Welcome to unit-7\n"
        );
        assert_eq!(fs::read_to_string(root.path().join("cached-copy")).unwrap(), "old");
        let m = fs::metadata(root.path().join("etc/sudoers.d/team")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o440);
        assert_eq!(
            fs::read_link(root.path().join("etc/masked")).unwrap(),
            Path::new("/dev/null")
        );
    }

    #[test]
    fn digest_changes_with_content_and_mode() {
        let d = make_overlay();
        let a = plan(d.path()).unwrap();
        fs::write(d.path().join("etc/motd.tera"), "changed\n").unwrap();
        let b = plan(d.path()).unwrap();
        assert_ne!(a.digest, b.digest);
        fs::set_permissions(d.path().join("etc/motd.tera"), fs::Permissions::from_mode(0o600)).unwrap();
        let c = plan(d.path()).unwrap();
        assert_ne!(b.digest, c.digest);
        assert_eq!(c.files, 2);
    }

    #[test]
    fn bad_template_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("bad.tera"), "{{ nope(").unwrap();
        let root = tempfile::tempdir().unwrap();
        let err = apply(d.path(), root.path(), &tera::Context::new()).unwrap_err();
        assert!(format!("{err:#}").contains("bad.tera"), "{err:#}");
    }
}
