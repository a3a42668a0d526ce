//! Outputs stage: checksums, extra formats, the manifest and SHA256SUMS,
//! all written under temporary names and renamed into place at the very
//! end, manifest and SHA256SUMS last, so a complete set or nothing new is
//! found under the final names.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flypack_contracts::atomic::{TempPath, remove_any};
use flypack_contracts::cmd::Cmd;
use flypack_contracts::manifest::{Manifest, OutputFile};
use sha2::{Digest, Sha256};

use crate::plan::Plan;
use crate::progress::{Reporter, Stage};
use crate::stages::disk::Disk;

/// What a build wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// The raw image.
    pub image: PathBuf,
    /// The manifest.
    pub manifest: PathBuf,
    /// SHA256SUMS.
    pub sums: PathBuf,
    /// Other files.
    pub extra: Vec<PathBuf>,
    /// Bytes of data in the image (allocated, not holes).
    pub image_data_bytes: u64,
    /// Apparent image size.
    pub image_size: u64,
    /// The manifest content.
    pub manifest_content: Manifest,
}

/// Runs the stage.
pub fn run(
    plan: &Plan,
    disk: Disk,
    installer: Option<Disk>,
    mut manifest: Manifest,
    rep: &Reporter,
) -> Result<Written> {
    let stage = rep.stage("outputs", "computing checksums");
    let image_size = fs::metadata(disk.image.path())?.len();
    let image_data_bytes = fs::metadata(disk.image.path())?.blocks() * 512;
    let mut files: Vec<(TempPath, PathBuf, OutputFile)> = Vec::new();
    // One pass: the whole image's digest and its block map.
    let (map, sha) = disk.map(|done, total| stage.bytes(done, total))?;
    crate::interrupt::check()?;
    manifest.outputs.push(OutputFile {
        name: file_name(&plan.outputs.image),
        size_bytes: image_size,
        sha256: sha.clone(),
    });
    let bmap_tmp = TempPath::sibling(&plan.outputs.bmap)?;
    fs::write(bmap_tmp.path(), map.to_xml()).with_context(|| format!("writing {}", bmap_tmp.path().display()))?;
    files.push(output(bmap_tmp, &plan.outputs.bmap, &stage)?);
    if let (Some(inst), Some((img, bmap))) = (installer, &plan.outputs.installer) {
        // Mapped by the installer stage already, as a rule (a stick made
        // otherwise is mapped here).
        let size = fs::metadata(inst.image.path())?.len();
        let (map, sha) = inst.map(|done, total| stage.bytes(done, total))?.clone();
        crate::interrupt::check()?;
        let bmap_tmp = TempPath::sibling(bmap)?;
        fs::write(bmap_tmp.path(), map.to_xml()).with_context(|| format!("writing {}", bmap_tmp.path().display()))?;
        files.push((
            inst.image,
            img.clone(),
            OutputFile {
                name: file_name(img),
                size_bytes: size,
                sha256: sha,
            },
        ));
        files.push(output(bmap_tmp, bmap, &stage)?);
    }

    if let Some(zst) = &plan.outputs.zst {
        stage.progress("compressing (zstd)");
        let tmp = TempPath::sibling(zst)?;
        Cmd::new("zstd")
            .args(["-q", "-T0", "-3", "-f", "-o"])
            .arg(tmp.path())
            .arg(disk.image.path())
            .run()
            .context("compressing the image")?;
        files.push(output(tmp, zst, &stage)?);
    }
    if let Some(q) = &plan.outputs.qcow2 {
        stage.progress("converting to qcow2");
        let tmp = TempPath::sibling(q)?;
        Cmd::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(disk.image.path())
            .arg(tmp.path())
            .run()
            .context("converting the image to qcow2")?;
        files.push(output(tmp, q, &stage)?);
    }
    for (_, _, o) in &files {
        manifest.outputs.push(o.clone());
    }

    let manifest_tmp = TempPath::sibling(&plan.outputs.manifest)?;
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    fs::write(manifest_tmp.path(), &manifest_bytes)
        .with_context(|| format!("writing {}", manifest_tmp.path().display()))?;
    let mut sums = String::new();
    for o in &manifest.outputs {
        sums.push_str(&format!("{}  {}\n", o.sha256, o.name));
    }
    sums.push_str(&format!(
        "{}  {}\n",
        flypack_contracts::digest::sha256_hex(&manifest_bytes),
        file_name(&plan.outputs.manifest)
    ));
    let sums_tmp = TempPath::sibling(&plan.outputs.sums)?;
    fs::write(sums_tmp.path(), sums).with_context(|| format!("writing {}", sums_tmp.path().display()))?;

    // Old manifest and sums go first: they must never describe a new image.
    remove_any(&plan.outputs.sums)?;
    remove_any(&plan.outputs.manifest)?;
    remove_any(&plan.outputs.bmap)?;
    if plan.outputs.installer.is_none() {
        // A stick from an earlier build must not pass for this one's.
        for suffix in ["-installer.img", "-installer.bmap"] {
            remove_any(&plan.out_dir.join(format!("{}{suffix}", plan.name)))?;
        }
    }
    disk.image.persist(&plan.outputs.image)?;
    let mut extra = Vec::new();
    for (tmp, dst, _) in files {
        tmp.persist(&dst)?;
        extra.push(dst);
    }
    manifest_tmp.persist(&plan.outputs.manifest)?;
    sums_tmp.persist(&plan.outputs.sums)?;
    stage.done(&format!(
        "{} ({} of data in a {} image)",
        plan.outputs.image.display(),
        indicatif::HumanBytes(image_data_bytes),
        indicatif::HumanBytes(image_size)
    ));
    Ok(Written {
        image: plan.outputs.image.clone(),
        manifest: plan.outputs.manifest.clone(),
        sums: plan.outputs.sums.clone(),
        extra,
        image_data_bytes,
        image_size,
        manifest_content: manifest,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn output(tmp: TempPath, dst: &Path, stage: &Stage) -> Result<(TempPath, PathBuf, OutputFile)> {
    let size = fs::metadata(tmp.path())?.len();
    let sha = hash_file(tmp.path(), stage)?;
    Ok((
        tmp,
        dst.to_path_buf(),
        OutputFile {
            name: file_name(dst),
            size_bytes: size,
            sha256: sha,
        },
    ))
}

/// SHA-256 of a file, with byte progress.
pub fn hash_file(path: &Path, stage: &Stage) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let total = f.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        crate::interrupt::check()?;
        stage.bytes(done, total);
    }
    Ok(hex::encode(h.finalize()))
}
