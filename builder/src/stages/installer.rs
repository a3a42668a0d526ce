//! Installer stage: `NAME-installer.img`, a USB stick that images a
//! server's internal disk. It is the appliance's own system (the tree the
//! appliance image was made from, reused: no second root filesystem) with
//! the appliance image inside as its payload, the firstboot units swapped for
//! the installer unit, and its own disk identifiers.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use flypack_contracts::atomic::remove_any;
use flypack_contracts::cmd::Cmd;
use serde_json::json;

use crate::disk_plan::{self, Ids};
use crate::overlay::replace_file;
use crate::plan::Plan;
use crate::profile::DiskSizes;
use crate::progress::Reporter;
use crate::stages::disk::Disk;
use crate::stages::tree::{self, Tree};

/// Where the payload goes on the stick.
pub const PAYLOAD_DIR: &str = "var/lib/flypack/installer";

/// Turns the appliance tree into the installer's and assembles the stick image.
pub fn run(plan: &Plan, tree: &mut Tree, appliance: &Disk, rep: &Reporter) -> Result<Option<Disk>> {
    let Some((image_out, _)) = &plan.outputs.installer else {
        return Ok(None);
    };
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

    stage.progress("adding the appliance image as the payload");
    let dir = root.join(PAYLOAD_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let payload = dir.join("payload.img");
    share_payload(appliance.image.path(), &payload)?;
    let (map, sha) = appliance.map(|d, t| stage.bytes(d, t))?;
    replace_file(&dir.join("payload.bmap"), map.to_xml().as_bytes(), 0o644)?;
    let settings = json!({
        "name": plan.name,
        "payload": format!("/{PAYLOAD_DIR}/payload.img"),
        "bmap": format!("/{PAYLOAD_DIR}/payload.bmap"),
        "payload_sha256": sha,
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
    let layout = disk_plan::plan(&sizes, &Ids::random());
    tree::write_boot_files(plan, &layout, &root)?;
    stage.done(&format!(
        "payload {} of data",
        indicatif::HumanBytes(map.mapped_bytes())
    ));
    let disk = crate::stages::disk::build(plan, &layout, image_out, tree, rep)?;
    Ok(Some(disk))
}

/// Puts the appliance image into the installer's tree without copying its
/// GiBs when the filesystem allows: a hard link (the image is not written
/// again once made; mkfs only reads the tree), else a reflink, else a sparse
/// copy.
fn share_payload(image: &Path, payload: &Path) -> Result<()> {
    remove_any(payload)?;
    match fs::hard_link(image, payload) {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::debug!("payload not hard-linked ({e}): copying it");
            Cmd::new("cp")
                .args(["--reflink=auto", "--sparse=always"])
                .arg(image)
                .arg(payload)
                .run()
                .context("copying the payload")?;
            Ok(())
        }
    }
}
