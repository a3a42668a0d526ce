//! Installer stage: `NAME-installer.img`, a USB stick that images a
//! server's internal disk. It is the appliance's own system (the tree the
//! appliance image is made from, copied as hard links: no second root
//! filesystem is unpacked) with the firstboot units swapped for the
//! installer unit, its own disk identifiers, and the appliance image as its
//! payload in a fifth partition.
//!
//! The stick's tree is made before the appliance image, so that the two
//! disk images are made side by side ([`prepare`], [`disk`]). What depends
//! on the appliance image (its block map, and the settings that carry the
//! map's digest) is added to the stick's root filesystem afterwards, with
//! debugfs, and the payload copied in ([`finish`]).

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use anyhow::{Context, Result, ensure};
use flypack_contracts::atomic::remove_any;
use flypack_contracts::bmap::{self, Bmap};
use flypack_contracts::cmd::Cmd;
use flypack_contracts::layout::{PART_PAYLOAD, PART_ROOT};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::disk_plan::{self, DiskPlan, Ids};
use crate::overlay::replace_file;
use crate::plan::Plan;
use crate::profile::DiskSizes;
use crate::progress::Reporter;
use crate::stages::disk::{self, Disk};
use crate::stages::tree::{self, Tree};

/// Where the payload's block map goes on the stick.
pub const PAYLOAD_DIR: &str = "var/lib/flypack/installer";

/// The stick's tree and layout, made from the appliance's tree.
#[derive(Debug)]
pub struct Stick {
    tree: Tree,
    layout: DiskPlan,
}

/// Copies the appliance tree (hard links: nothing here writes into a file
/// of the copy, every change replaces or removes one) and turns it into the
/// installer's, laid out for a payload of the appliance image's planned size.
pub fn prepare(plan: &Plan, appliance: &Tree, rep: &Reporter) -> Result<Stick> {
    plan.outputs
        .installer
        .as_ref()
        .context("the profile makes no USB installer")?;
    let stage = rep.stage("installer", "copying the appliance's tree (hard links)");
    let work = plan.cache_dir.join("work");
    let dir = flypack_contracts::atomic::temp_dir_in(&work, "stick")?;
    let root = dir.path().to_path_buf();
    Cmd::new("cp")
        .args(["-a", "--link"])
        .arg(format!("{}/.", appliance.path().display()))
        .arg(&root)
        .run()
        .context("copying the appliance's tree for the USB installer")?;
    let mut tree = Tree {
        dir,
        used_bytes: 0,
        inodes: 0,
    };
    stage.progress("swapping the first-boot units for the installer's");
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
    // a partition of its own after root, copied in once the stick's
    // filesystems are made ([`finish`]). The block map in this folder says
    // which ranges hold data and checks each one.
    let payload_dir = root.join(PAYLOAD_DIR);
    fs::create_dir_all(&payload_dir).with_context(|| format!("creating {}", payload_dir.display()))?;
    replace_file(
        &root.join("etc/hostname"),
        format!("{}-installer\n", plan.name).as_bytes(),
        0o644,
    )?;

    // Its own layout and identifiers, sized to what it holds (the block map
    // and settings added later are KiBs, well inside the margin).
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
    let layout = disk_plan::plan(&sizes, &Ids::random()).with_payload(plan.disk.size, uuid::Uuid::new_v4());
    tree::write_boot_files(plan, &layout, &root)?;
    stage.done(&format!("its tree, {}", indicatif::HumanBytes(used)));
    Ok(Stick { tree, layout })
}

/// The stick's disk image with its filesystems, the payload partition still
/// empty (made while the appliance image is).
pub fn disk(plan: &Plan, stick: &Stick, rep: &Reporter) -> Result<Disk> {
    let (image_out, _) = plan
        .outputs
        .installer
        .as_ref()
        .context("the profile makes no USB installer")?;
    let stage = rep.stage(
        "installer",
        &format!("writing the partition table of {}", image_out.display()),
    );
    disk::build(plan, &stick.layout, image_out, &stick.tree, stage)
}

/// Adds the payload to the stick made by [`disk`]: the appliance image's
/// block map and the installer's settings into its root, the image's data
/// into its payload partition; then the block maps and digests of both
/// images. The trees (the appliance's `tree` and the stick's) are used up:
/// they are removed while the stick is hashed (removed later, while the
/// outputs were written, the build took as long or longer).
pub fn finish(plan: &Plan, stick: Stick, disk: Disk, appliance: &Disk, tree: Tree, rep: &Reporter) -> Result<Disk> {
    let stage = rep.stage("installer", "mapping the appliance image (the payload)");
    let Stick {
        tree: stick_tree,
        layout,
    } = stick;
    let image = appliance.image.path().to_path_buf();
    std::thread::scope(|scope| -> Result<Disk> {
        // The whole image's digest (for the outputs) on the other core while
        // this one maps the ranges and fills the stick.
        let whole = scope.spawn(|| flypack_contracts::digest::sha256_file(&image));
        let map = bmap::map_ranges(&image, |d, t| stage.bytes(d, t))?;
        let payload = layout.part(PART_PAYLOAD);
        ensure!(
            map.image_size <= payload.size,
            "the appliance image is {} bytes, more than the {} planned for the stick's payload partition",
            map.image_size,
            payload.size
        );
        stage.progress("writing the payload's block map into the stick");
        let xml = map.to_xml();
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
        let settings = serde_json::to_vec_pretty(&settings)?;
        disk::add_files_to_ext4(
            disk.image.path(),
            layout.part(PART_ROOT),
            &[
                (PAYLOAD_DIR, "payload.bmap", xml.as_bytes()),
                ("etc/flypack", "installer.json", &settings),
            ],
        )?;
        // Side by side now: the payload is copied in and the stick's data
        // sent to the disk; the trees are removed; and the stick's block map
        // and digest are made here. They need not wait for the copy: the
        // payload's ranges are the image's, taken from its map and read from
        // it (the digest never reads the stick's payload partition).
        stage.progress("copying the payload in, hashing the stick");
        let stick_path = disk.image.path().to_path_buf();
        let (from, map_ref, at) = (&image, &map, payload.start);
        let (mapped, copied, removed) = std::thread::scope(|inner| {
            let copying = inner.spawn(move || -> Result<()> {
                copy_ranges(from, map_ref, &stick_path, at)
                    .context("copying the appliance image into the stick's payload partition")?;
                File::open(&stick_path)
                    .and_then(|f| f.sync_data())
                    .with_context(|| format!("syncing {}", stick_path.display()))
            });
            let removal = inner.spawn(move || drop((tree, stick_tree)));
            let splice = bmap::Splice {
                at: payload.start,
                source: &image,
                map: &map,
            };
            let mapped =
                bmap::map_file_spliced(disk.image.path(), splice, |_, _| {}).context("mapping the USB installer");
            let copied = copying
                .join()
                .map_err(|_| anyhow::anyhow!("the payload's copy thread panicked"))
                .and_then(|r| r);
            (mapped, copied, removal.join())
        });
        if removed.is_err() {
            tracing::warn!("removing the build's work trees failed; the next build sweeps them");
        }
        copied?;
        let (smap, ssha) = mapped?;
        stage.done(&format!(
            "payload {} of data",
            indicatif::HumanBytes(map.mapped_bytes())
        ));
        disk.set_map(smap, ssha);
        let sha = whole
            .join()
            .map_err(|_| anyhow::anyhow!("the appliance image's digest thread panicked"))??;
        appliance.set_map(map, sha);
        Ok(disk)
    })
}

/// Copies the mapped ranges of `image` into `out` at byte `at`; holes stay
/// holes. The writes go straight to the disk (O_DIRECT), not through the
/// page cache: nothing here reads the payload back (the stick's digest
/// reads those bytes from the image), and on the machines measured (virtual
/// machines whose free memory goes back to their host) filling 1.5 GiB of
/// fresh page cache cost 3-4 s, more than the disk write. Where direct I/O
/// is refused (tmpfs) or the ranges are not aligned for it, the kernel
/// copies (copy_file_range).
fn copy_ranges(image: &Path, map: &Bmap, out: &Path, at: u64) -> Result<()> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::FileExt;
    const ALIGN: u64 = 4096;
    const CHUNK: usize = 8 << 20;
    let aligned = at.is_multiple_of(ALIGN)
        && map.ranges.iter().all(|r| {
            let start = r.offset(map.block_size);
            let end = (start + r.len(map.block_size)).min(map.image_size);
            start.is_multiple_of(ALIGN) && end.is_multiple_of(ALIGN)
        });
    let direct = if aligned {
        rustix::fs::open(out, OFlags::WRONLY | OFlags::DIRECT | OFlags::CLOEXEC, Mode::empty()).ok()
    } else {
        None
    };
    let Some(dst) = direct else {
        return copy_ranges_in_kernel(image, map, out, at);
    };
    let src = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut raw = vec![0u8; CHUNK + ALIGN as usize];
    let skew = raw.as_ptr().align_offset(ALIGN as usize);
    let buf = &mut raw[skew..skew + CHUNK];
    for r in &map.ranges {
        let start = r.offset(map.block_size);
        let end = (start + r.len(map.block_size)).min(map.image_size);
        let mut from = start;
        while from < end {
            let n = usize::try_from(end - from).unwrap_or(CHUNK).min(CHUNK);
            src.read_exact_at(&mut buf[..n], from).with_context(|| {
                format!(
                    "reading bytes {from}.. of {}: its block map says it has {end} (was it changed during the build?)",
                    image.display()
                )
            })?;
            let mut done = 0;
            while done < n {
                let w = rustix::io::pwrite(&dst, &buf[done..n], at + from + done as u64)
                    .with_context(|| format!("writing into {} at byte {}", out.display(), at + from + done as u64))?;
                anyhow::ensure!(w > 0, "{} took no more bytes at {}", out.display(), at + from);
                done += w;
            }
            from += n as u64;
        }
    }
    // Synced with the rest when the outputs stage renames it into place.
    Ok(())
}

/// [`copy_ranges`] in the kernel (copy_file_range: no round trip through
/// this process, a reflink where the filesystem has them).
fn copy_ranges_in_kernel(image: &Path, map: &Bmap, out: &Path, at: u64) -> Result<()> {
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
