//! Installer stage: `NAME-installer.img`, a USB stick that images a
//! server's internal disk. It is the appliance's own system (the tree the
//! appliance image was made from, reused: no second root filesystem) with
//! the firstboot units swapped for the installer unit, its own disk
//! identifiers, and the appliance image as its payload in a fifth partition.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use anyhow::{Context, Result};
use flypack_contracts::atomic::remove_any;
use flypack_contracts::bmap::{self, Bmap};
use flypack_contracts::layout::PART_PAYLOAD;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::disk_plan::{self, Ids};
use crate::overlay::replace_file;
use crate::plan::Plan;
use crate::profile::DiskSizes;
use crate::progress::Reporter;
use crate::stages::disk::Disk;
use crate::stages::tree::{self, Tree};

/// Where the payload goes on the stick.
pub const PAYLOAD_DIR: &str = "var/lib/flypack/installer";

/// Turns the appliance tree into the installer's and assembles the stick
/// image. The tree is used up: it is removed while the stick is hashed.
pub fn run(plan: &Plan, mut tree: Tree, appliance: &Disk, rep: &Reporter) -> Result<Disk> {
    let (image_out, _) = plan
        .outputs
        .installer
        .as_ref()
        .context("the profile makes no USB installer")?;
    let stage = rep.stage("installer", "making the USB installer");
    let root = tree.path().to_path_buf();
    tree::systemctl_root(
        &root,
        "disable",
        &[
            "flypack-firstboot-early.service",
            "flypack-firstboot.service",
            "flypack-status.service",
            "flypack-web.service",
            "flypack-web-privileged.socket",
        ],
    )?;
    tree::systemctl_root(&root, "enable", &["flypack-installer.service"])?;
    // The stick runs no stack: its images are inside the payload.
    remove_any(&root.join(crate::stages::store::STORE_DIR))?;
    remove_any(&root.join("usr/share/flypack/stack.json"))?;

    // The payload is not a file in the stick's root (mkfs.ext4 -d copies a
    // file's GiBs at about 100 MiB/s of CPU): it is the image itself, raw, in
    // a partition of its own after root, copied in by the kernel
    // (copy_file_range) once the stick's filesystems are made. The block map
    // in the root says which ranges hold data and checks each one.
    let image = appliance.image.path().to_path_buf();
    std::thread::scope(|scope| -> Result<Disk> {
        // The whole image's digest (for the outputs) on the other core while
        // this one maps the ranges and makes the stick.
        let whole = scope.spawn(|| flypack_contracts::digest::sha256_file(&image));
        stage.progress("mapping the appliance image (the payload)");
        let map = bmap::map_ranges(&image, |d, t| stage.bytes(d, t))?;
        let (disk, layout) = stick(plan, &mut tree, &map, &image, image_out, rep, stage)?;
        // Side by side now: the tree's GiBs are removed; the stick's data
        // goes to the disk (the rename into place then has little left to
        // write); and the stick's block map and digest are made here (the
        // payload's ranges are the image's: taken from its map and read from
        // it, not scanned and hashed per range again).
        let removal = scope.spawn(move || drop(tree));
        let stick_path = disk.image.path().to_path_buf();
        let syncing = scope.spawn(move || File::open(&stick_path).and_then(|f| f.sync_data()));
        let splice = bmap::Splice {
            at: layout.part(PART_PAYLOAD).start,
            source: &image,
            map: &map,
        };
        let (smap, ssha) =
            bmap::map_file_spliced(disk.image.path(), splice, |_, _| {}).context("mapping the USB installer")?;
        if removal.join().is_err() {
            tracing::warn!("removing the build's work tree failed; the next build sweeps it");
        }
        let _ = syncing.join();
        disk.set_map(smap, ssha);
        let sha = whole
            .join()
            .map_err(|_| anyhow::anyhow!("the appliance image's digest thread panicked"))??;
        appliance.set_map(map, sha);
        Ok(disk)
    })
}

/// The stick's tree (its block map and settings included) and its disk
/// image, the payload in its partition.
fn stick(
    plan: &Plan,
    tree: &mut Tree,
    map: &Bmap,
    payload: &Path,
    image_out: &Path,
    rep: &Reporter,
    stage: crate::progress::Stage,
) -> Result<(Disk, disk_plan::DiskPlan)> {
    let root = tree.path().to_path_buf();
    let dir = root.join(PAYLOAD_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let xml = map.to_xml();
    replace_file(&dir.join("payload.bmap"), xml.as_bytes(), 0o644)?;
    let settings = json!({
        "name": plan.name,
        "payload_partition": PART_PAYLOAD,
        "bmap": format!("/{PAYLOAD_DIR}/payload.bmap"),
        "payload_bmap_sha256": hex::encode(Sha256::digest(xml.as_bytes())),
        "choose": plan.installer.choose,
        "allow_usb": plan.installer.allow_usb,
        "allow_wipe": plan.installer.allow_wipe,
        "cancel_seconds": plan.installer.cancel_seconds,
    });
    replace_file(
        &root.join("etc/flypack/installer.json"),
        serde_json::to_vec_pretty(&settings)?.as_slice(),
        0o644,
    )?;
    replace_file(
        &root.join("etc/hostname"),
        format!("{}-installer\n", plan.name).as_bytes(),
        0o644,
    )?;

    // Its own layout and identifiers, sized to what it holds.
    let (used, inodes) = tree::usage(&root)?;
    tree.used_bytes = used;
    tree.inodes = inodes;
    let mib = 1u64 << 20;
    let rootfs = ((used + used / 8 + (384 << 20)).div_ceil(256 * mib)) * 256 * mib;
    let d = &plan.disk.partitions;
    let sizes = DiskSizes {
        bios_boot: d[0].size,
        esp: d[1].size,
        seed: d[2].size,
        root: rootfs,
        total: 2 * mib + d[0].size + d[1].size + d[2].size + rootfs,
    };
    let layout = disk_plan::plan(&sizes, &Ids::random()).with_payload(map.image_size, uuid::Uuid::new_v4());
    tree::write_boot_files(plan, &layout, &root)?;
    stage.done(&format!(
        "payload {} of data",
        indicatif::HumanBytes(map.mapped_bytes())
    ));
    let disk = crate::stages::disk::build(plan, &layout, image_out, tree, rep)?;
    // The payload goes in once the filesystems are made (side by side, both
    // writing the one file, each went at half its speed).
    copy_ranges(payload, map, disk.image.path(), layout.part(PART_PAYLOAD).start)
        .context("copying the appliance image into the stick's payload partition")?;
    Ok((disk, layout))
}

/// Copies the mapped ranges of `image` into `out` at byte `at`, in the
/// kernel (copy_file_range: no round trip through this process, a reflink
/// where the filesystem has them). Holes stay holes.
fn copy_ranges(image: &Path, map: &Bmap, out: &Path, at: u64) -> Result<()> {
    let src = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let dst = OpenOptions::new()
        .write(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    for r in &map.ranges {
        let start = r.offset(map.block_size);
        let end = (start + r.len(map.block_size)).min(map.image_size);
        let (mut from, mut to) = (start, at + start);
        while from < end {
            let want = usize::try_from(end - from).unwrap_or(usize::MAX).min(1 << 30);
            let n = rustix::fs::copy_file_range(&src, Some(&mut from), &dst, Some(&mut to), want)
                .with_context(|| format!("copying bytes {from}.. of {} into {}", image.display(), out.display()))?;
            anyhow::ensure!(
                n > 0,
                "{} ended at byte {from}, its block map says {end}: was it changed during the build?",
                image.display()
            );
        }
    }
    // Synced with the rest when the outputs stage renames it into place.
    Ok(())
}
