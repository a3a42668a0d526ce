//! `builder restore`: a dead unit back from its backup. Decrypts and verifies
//! the whole archive with the fleet key (every digest, and the fleet's tag
//! over the manifest) and checks that it belongs to the image and fits,
//! before anything is written; then writes the image (as `builder flash`
//! does), the unit part of the key onto the seed, and the decrypted archive
//! into the root filesystem (debugfs, no mount), where firstboot's `restore`
//! stage authenticates it again and puts it back on first boot, before the
//! network comes up.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flypack_contracts::atomic::TempPath;
use flypack_contracts::bmap;
use flypack_contracts::cmd::Cmd;
use flypack_contracts::digest::sha256_file;
use flypack_contracts::layout::PART_ROOT;
use flypack_contracts::manifest::Manifest;
use flypack_engine::backup::{self, Keys};
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
    // The path goes into a debugfs script, where whitespace or a quote would
    // split or end it: only our own temp path, checked.
    let shown = archive.display().to_string();
    if !shown.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)) {
        bail!("internal: {shown:?} is not a safe path for debugfs");
    }
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

/// The block map of a restored image file, beside it as `builder build`
/// puts one (`NAME.bmap` for `NAME.img` and `NAME.img.zst`): `builder flash`
/// and `firstboot reflash` write by it and check every range.
pub fn bmap_beside(output: &Path) -> PathBuf {
    let s = output.display().to_string();
    PathBuf::from(format!("{}.bmap", s.trim_end_matches(".zst").trim_end_matches(".img")))
}

/// Puts a restored image file in place with its block map; an output
/// named `*.zst` is compressed (what a rolling update sends to a unit).
fn finish_file(raw: TempPath, output: &Path, rep: &Reporter) -> Result<()> {
    let st = rep.stage("map", "mapping the restored image (its block map)");
    let (map, _) = bmap::map_file(raw.path(), |_, _| {})?;
    let bmap_path = bmap_beside(output);
    let bmap_tmp = TempPath::sibling(&bmap_path)?;
    std::fs::write(bmap_tmp.path(), map.to_xml()).with_context(|| format!("writing {}", bmap_tmp.path().display()))?;
    st.done(&format!("{} of data", indicatif::HumanBytes(map.mapped_bytes())));
    if output.extension().is_some_and(|e| e == "zst") {
        let st = rep.stage("compress", &format!("compressing into {}", output.display()));
        // Not `sibling(output)`: that is the raw image's own temporary name.
        let name = output.file_name().context("the output has no file name")?;
        let z = TempPath::sibling(&output.with_file_name(format!("{}.z", name.to_string_lossy())))?;
        let mut enc = zstd::stream::write::Encoder::new(
            std::fs::File::create_new(z.path()).with_context(|| format!("creating {}", z.path().display()))?,
            3,
        )?;
        // Two workers: the holes are zeros and cost little.
        enc.multithread(2)?;
        let mut src = std::fs::File::open(raw.path())?;
        std::io::copy(&mut src, &mut enc).with_context(|| format!("compressing into {}", z.path().display()))?;
        enc.finish()?.sync_all()?;
        z.persist(output)?;
        st.done(&indicatif::HumanBytes(std::fs::metadata(output)?.len()).to_string());
    } else {
        raw.persist(output)?;
    }
    bmap_tmp.persist(&bmap_path)?;
    Ok(())
}

/// Runs `builder restore`.
pub fn run(a: &RestoreArgs, rep: &Reporter) -> Result<i32> {
    // 1. The archive, all of it, before anything is written.
    let st = rep.stage(
        "verify",
        &format!("decrypting {} and checking every digest", a.backup.display()),
    );
    let keys = crate::cmd::backup_key::load_keys(&a.keys)?;
    let nothing = || format!("{} cannot be restored; nothing was written", a.backup.display());
    let (backup, _) = backup::verify(&a.backup, &Keys::fleet(&keys)).with_context(nothing)?;
    // The key that made it: its unit part goes on the seed, so the unit can
    // authenticate the archive itself on first boot.
    let key = keys
        .iter()
        .find(|k| backup::verify(&a.backup, &Keys::fleet(std::slice::from_ref(*k))).is_ok())
        .context("no single key verifies the archive")?;
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
    // The unit reads the decrypted copy (it holds no key that decrypts),
    // still tagged by the fleet key. Made here, checked as the unit will.
    let work = tempfile::Builder::new().prefix("flypack-restore-").tempdir()?;
    let plain = work.path().join("backup.tar.zst");
    {
        let mut f = std::fs::File::create(&plain).with_context(|| format!("creating {}", plain.display()))?;
        backup::decrypt_to(&a.backup, &Keys::fleet(std::slice::from_ref(key)), &mut f)?;
        f.sync_all()?;
    }
    backup::verify(&plain, &Keys::unit(&key.unit_part())).context("the decrypted copy")?;
    // On first boot the unit keeps the archive and unpacks its data beside it.
    let free = fs_free(&image, root.start_bytes)?;
    let size = std::fs::metadata(&plain)?.len();
    let need = size + backup.data_bytes() + (64 << 20);
    if need > free {
        bail!(
            "the backup ({} archive, {} unpacked) does not fit in the image's root filesystem ({} free): \
             build the image with a larger [disk] root; nothing was written",
            indicatif::HumanBytes(size),
            indicatif::HumanBytes(backup.data_bytes()),
            indicatif::HumanBytes(free)
        );
    }

    // 2. The image, then the archive into it.
    let (target, tmp) = match (&a.device, &a.output) {
        (Some(d), None) => (d.clone(), None),
        (None, Some(f)) => {
            let t = TempPath::sibling(f)?;
            std::fs::File::create_new(t.path()).with_context(|| format!("creating {}", t.path().display()))?;
            (t.path().to_path_buf(), Some((t, f.clone())))
        }
        _ => bail!("give exactly one of --device DEVICE and --output FILE"),
    };
    let o = Options {
        image: image.clone(),
        bmap: None,
        target: target.clone(),
        allow_large: a.allow_large,
        running_system: false,
        seed: vec![(
            flypack_contracts::seed::BACKUP_KEY_FILE,
            key.unit_part().to_toml().into_bytes(),
        )],
    };
    // The backup goes in while the target is still held; if that fails,
    // the target is cleared like a failed write.
    let put = |t: &Path| -> Result<()> {
        let st = rep.stage("backup", "putting the backup into the root filesystem");
        put_archive(t, root.start_bytes, &plain, work.path())
            .with_context(|| format!("{} holds the image but not the backup", t.display()))?;
        st.done("written and read back");
        Ok(())
    };
    flash::flash(&o, rep, Some(&put))?;
    let dest = match tmp {
        Some((t, f)) => {
            finish_file(t, &f, rep)?;
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
            json!({
                "target": dest, "hostname": backup.hostname, "created": backup.created, "image": m.name,
                "bmap": a.output.as_deref().map(bmap_beside),
            }),
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

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    #[test]
    fn a_restored_image_goes_out_compressed_with_its_block_map_and_reads_back_whole() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("fp-01.img.zst");
        // As `run` names it: the output's own temporary sibling.
        let raw = TempPath::sibling(&out).unwrap();
        let mut f = std::fs::File::create(raw.path()).unwrap();
        f.write_all(&vec![1u8; 3 << 20]).unwrap();
        f.seek(SeekFrom::Start(100 << 20)).unwrap();
        f.write_all(&(0..(5u32 << 20)).map(|i| (i % 251) as u8).collect::<Vec<_>>())
            .unwrap();
        f.set_len(256 << 20).unwrap();
        drop(f);
        let plain = std::fs::read(raw.path()).unwrap();
        finish_file(raw, &out, &Reporter::new(Mode::Quiet)).unwrap();
        assert_eq!(bmap_beside(&out), d.path().join("fp-01.bmap"));
        let map = flypack_engine::flash::check_source(&out, None).unwrap();
        assert_eq!(map.image_size, 256 << 20);
        let back = zstd::decode_all(std::fs::File::open(&out).unwrap()).unwrap();
        assert!(back == plain, "the compressed image is not the image");
        // Only the image and its map are left.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }
}
