//! `builder restore`: a dead unit back from its backup. Verifies the whole
//! archive and checks it belongs to the image before anything is written,
//! then writes the image (as `builder flash` does) and puts the archive into
//! the root filesystem (debugfs, no mount), where firstboot's `restore`
//! stage finds it on first boot, before the network comes up.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flypack_contracts::atomic::TempPath;
use flypack_contracts::cmd::Cmd;
use flypack_contracts::digest::sha256_file;
use flypack_contracts::layout::PART_ROOT;
use flypack_contracts::manifest::Manifest;
use serde_json::json;

use crate::cli::RestoreArgs;
use crate::flash::{self, Options};
use crate::progress::{Mode, Reporter};

/// Where the archive goes in the restored root filesystem (firstboot's
/// `backup::RESTORE_ARCHIVE`).
pub const ARCHIVE_IN_IMAGE: &str = "/var/lib/flypack/restore/backup.tar.zst";

fn image_manifest(image: &Path) -> Result<Manifest> {
    let s = image.display().to_string();
    let base = s.trim_end_matches(".zst").trim_end_matches(".img");
    let p = PathBuf::from(format!("{base}.manifest.json"));
    let bytes = std::fs::read(&p).with_context(|| {
        format!(
            "reading {}: the image's manifest must be beside it (builder build writes both)",
            p.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))
}

/// Free bytes of the ext4 at `offset` of `image` (dumpe2fs, no mount).
fn fs_free(image: &Path, offset: u64) -> Result<u64> {
    let out = Cmd::new("dumpe2fs")
        .arg("-h")
        .arg(format!("{}?offset={offset}", image.display()))
        .run()
        .with_context(|| format!("reading the root filesystem of {}", image.display()))?
        .stdout_str();
    let field = |k: &str| -> Option<u64> {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
    };
    match (field("Free blocks:"), field("Block size:")) {
        (Some(n), Some(b)) => Ok(n * b),
        _ => bail!("dumpe2fs did not report the free space of {}", image.display()),
    }
}

/// Writes `archive` into the ext4 at `offset` of `target` and reads it back.
fn put_archive(target: &Path, offset: u64, archive: &Path, work: &Path) -> Result<()> {
    let fs = format!("{}?offset={offset}", target.display());
    let mut script = String::new();
    let mut dir = String::new();
    let parent = Path::new(ARCHIVE_IN_IMAGE).parent().expect("parent");
    for c in parent.iter().skip(1) {
        dir.push('/');
        dir.push_str(&c.to_string_lossy());
        script.push_str(&format!("mkdir {dir}\n"));
    }
    script.push_str(&format!("rm {ARCHIVE_IN_IMAGE}\n"));
    script.push_str(&format!("write {} {ARCHIVE_IN_IMAGE}\n", archive.display()));
    script.push_str(&format!("set_inode_field {ARCHIVE_IN_IMAGE} mode 0100600\n"));
    script.push_str(&format!(
        "set_inode_field {ARCHIVE_IN_IMAGE} uid 0\nset_inode_field {ARCHIVE_IN_IMAGE} gid 0\n"
    ));
    let cmds = work.join("debugfs.cmds");
    std::fs::write(&cmds, script)?;
    // debugfs exits 0 even when a command fails ("mkdir: exists" is expected):
    // what counts is reading the archive back below.
    Cmd::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&fs)
        .run()
        .context("writing the backup into the image (debugfs)")?;
    let back = work.join("readback");
    Cmd::new("debugfs")
        .arg("-R")
        .arg(format!("dump {ARCHIVE_IN_IMAGE} {}", back.display()))
        .arg(&fs)
        .run()?;
    if !back.exists() || sha256_file(&back)? != sha256_file(archive)? {
        bail!("the backup did not read back intact from the image's root filesystem (full?)");
    }
    let o = Cmd::new("e2fsck").args(["-fn"]).arg(&fs).run();
    if let Err(e) = o {
        bail!("the root filesystem is not clean after adding the backup: {e}");
    }
    Ok(())
}

/// Runs `builder restore`.
pub fn run(a: &RestoreArgs, rep: &Reporter) -> Result<i32> {
    // 1. The archive, all of it, before anything is written.
    let st = rep.stage("verify", &format!("checking every digest of {}", a.backup.display()));
    let backup = flypack_contracts::backup::verify(&a.backup)
        .with_context(|| format!("{} cannot be restored; nothing was written", a.backup.display()))?;
    st.done(&format!(
        "backup of {} ({} image) from {}: {} entries, {} of data",
        backup.hostname,
        backup.image,
        backup.created,
        backup.entries.len(),
        indicatif::HumanBytes(backup.data_bytes())
    ));
    let image = a
        .image
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("out/{}.img", backup.image)));
    let m = image_manifest(&image)?;
    if m.name != backup.image {
        bail!(
            "{} is a backup of a unit running the {:?} image, and {} is {:?}: give --image with a {:?} image; nothing was written",
            a.backup.display(),
            backup.image,
            image.display(),
            m.name,
            backup.image
        );
    }
    let root = m
        .disk
        .partition(PART_ROOT)
        .context("the image's manifest has no root partition")?;
    let free = fs_free(&image, root.start_bytes)?;
    let size = std::fs::metadata(&a.backup)?.len();
    if size + (64 << 20) > free {
        bail!(
            "the backup ({}) does not fit in the image's root filesystem ({} free): build the image with a larger [disk] root; nothing was written",
            indicatif::HumanBytes(size),
            indicatif::HumanBytes(free)
        );
    }
    let work = tempfile::Builder::new().prefix("flypack-restore-").tempdir()?;

    // 2. The image, then the archive into it.
    let (target, tmp) = match (&a.device, &a.output) {
        (Some(d), None) => (d.clone(), None),
        (None, Some(f)) => {
            let t = TempPath::sibling(f)?;
            (t.path().to_path_buf(), Some((t, f.clone())))
        }
        _ => bail!("give exactly one of --device DEVICE and --output FILE"),
    };
    let o = Options {
        image: image.clone(),
        bmap: None,
        target: target.clone(),
        allow_large: a.allow_large,
        unit: None,
        fleet: None,
    };
    flash::flash(&o, rep)?;
    let st = rep.stage("backup", "putting the backup into the root filesystem");
    put_archive(&target, root.start_bytes, &a.backup, work.path())
        .with_context(|| format!("{} holds the image but not the backup", target.display()))?;
    st.done("written and read back");
    let dest = match tmp {
        Some((t, f)) => {
            t.persist(&f)?;
            f
        }
        None => {
            Cmd::new("sync").run().ok();
            target
        }
    };
    if rep.mode() == Mode::Json {
        rep.event(
            "result",
            json!({ "target": dest, "hostname": backup.hostname, "created": backup.created, "image": m.name }),
        );
    } else {
        eprintln!(
            "{}: {} restored (backup from {}). On first boot firstboot puts its identity and data back before the network comes up.",
            dest.display(),
            backup.hostname,
            backup.created
        );
    }
    Ok(0)
}
