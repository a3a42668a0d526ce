//! Disk stage: assemble the disk image from files, without mounts or loop
//! devices: the GPT written by sfdisk from the partition plan, FAT
//! filesystems made in place with mkfs.vfat --offset and filled with mtools,
//! the ext4 root made in place from the tree with mkfs.ext4 -d -E offset,
//! and GRUB for BIOS and UEFI.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use flypack_contracts::atomic::TempPath;
use flypack_contracts::bmap::Bmap;
use flypack_contracts::cmd::Cmd;
use flypack_contracts::layout::{PART_BIOS, PART_ESP, PART_ROOT, PART_SEED, SECTOR};

use crate::disk_plan::{DiskPlan, PartitionPlan};
use crate::grub::{self, Platform};
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::stages::tree::Tree;

/// Where GRUB's platform folders are on the host.
pub const GRUB_LIB: &str = "/usr/lib/grub";

/// The seed partition's README (the seed is edited on laptops).
pub const SEED_README: &str = include_str!("seed-README.txt");

/// What the stage produced: the image under its temporary name.
#[derive(Debug)]
pub struct Disk {
    /// The image, renamed into place by the outputs stage.
    pub image: TempPath,
    /// Its block map and SHA-256, computed once (the installer's payload and
    /// the outputs stage both need them, and a whole-file digest reads GiBs).
    map: std::cell::OnceCell<(Bmap, String)>,
}

impl Disk {
    /// The image's block map and whole-file SHA-256 (read once, then kept).
    pub fn map(&self, progress: impl FnMut(u64, u64)) -> Result<&(Bmap, String)> {
        if let Some(m) = self.map.get() {
            return Ok(m);
        }
        let m = flypack_contracts::bmap::map_file(self.image.path(), progress)?;
        Ok(self.map.get_or_init(|| m))
    }

    /// Keeps a block map and whole-file SHA-256 made elsewhere (the
    /// installer stage makes them on two threads while it works).
    pub fn set_map(&self, map: Bmap, sha256: String) {
        let _ = self.map.set((map, sha256));
    }
}

/// Runs the stage: the appliance image.
pub fn run(plan: &Plan, tree: &Tree, rep: &Reporter) -> Result<Disk> {
    let stage = rep.stage(
        "disk",
        &format!("writing the partition table of {}", plan.outputs.image.display()),
    );
    build(plan, &plan.disk, &plan.outputs.image, tree, stage)
}

/// Assembles a disk image laid out as `disk` from `tree`, under a temporary
/// name beside `final_name`, reporting as `stage`.
pub fn build(
    plan: &Plan,
    disk: &DiskPlan,
    final_name: &Path,
    tree: &Tree,
    stage: crate::progress::Stage,
) -> Result<Disk> {
    check_root_fits(plan, disk, tree)?;
    let image = TempPath::sibling(final_name)?;
    {
        let f = File::create(image.path()).with_context(|| format!("creating {}", image.path().display()))?;
        f.set_len(disk.size)
            .with_context(|| format!("sizing {}", image.path().display()))?;
    }
    let img = image.path();
    write_table(disk, img)?;

    let work = flypack_contracts::atomic::temp_dir_in(&plan.cache_dir.join("work"), "grub")?;
    let grub_lib = Path::new(GRUB_LIB);

    stage.progress("making the ESP (GRUB for UEFI)");
    let esp = disk.part(PART_ESP);
    mkfs_vfat(img, esp, 32)?;
    let efi = work.path().join("BOOTX64.EFI");
    grub::mkimage(Platform::Efi, grub_lib, &efi)
        .run()
        .context("making GRUB's UEFI image")?;
    mtools(img, esp, &["mmd", "::EFI", "::EFI/BOOT"], &[])?;
    mtools(img, esp, &["mcopy"], &[(&efi, "::EFI/BOOT/BOOTX64.EFI")])?;

    crate::interrupt::check()?;
    stage.progress("making the seed partition");
    let seed = disk.part(PART_SEED);
    mkfs_vfat(img, seed, 16)?;
    let readme = work.path().join("README.TXT");
    fs::write(&readme, SEED_README.replace('\n', "\r\n")).context("writing the seed README")?;
    mtools(img, seed, &["mcopy"], &[(&readme, "::README.TXT")])?;

    stage.progress(&format!(
        "making the root filesystem ({})",
        indicatif::HumanBytes(tree.used_bytes)
    ));
    mkfs_ext4(plan, disk, img, tree)?;

    crate::interrupt::check()?;
    stage.progress("installing GRUB for legacy BIOS");
    let core = work.path().join("core.img");
    grub::mkimage(Platform::Bios, grub_lib, &core)
        .run()
        .context("making GRUB's BIOS core image")?;
    install_bios(img, disk, &grub_lib.join("i386-pc/boot.img"), &core)?;

    stage.done(&format!(
        "{} image, root {}",
        indicatif::HumanBytes(disk.size),
        indicatif::HumanBytes(disk.part(PART_ROOT).size)
    ));
    Ok(Disk {
        image,
        map: std::cell::OnceCell::new(),
    })
}

fn check_root_fits(plan: &Plan, disk: &DiskPlan, tree: &Tree) -> Result<()> {
    let root = disk.part(PART_ROOT).size;
    // ext4 overhead: inode tables (256 B per 16 KiB), journal, group
    // descriptors; plus headroom for first boot's logs and keys.
    let overhead = root / 64 + (128 << 20);
    let need = tree.used_bytes + tree.used_bytes / 20 + overhead;
    let inodes = root / 16384;
    if need > root || tree.inodes > inodes {
        let suggest = (disk.size - root + need).div_ceil(1 << 30);
        bail!(
            "{}: disk.size: the root filesystem needs about {} ({} of files, {} inodes) but the disk size leaves {} for it: \
             raise disk.size (e.g. to \"{}GiB\")",
            plan.profile.path,
            indicatif::HumanBytes(need),
            indicatif::HumanBytes(tree.used_bytes),
            tree.inodes,
            indicatif::HumanBytes(root),
            suggest
        );
    }
    Ok(())
}

/// Writes the GPT with sfdisk and reads it back: a table that is not exactly
/// the plan is an error (partitioning tools have exited 0 without writing).
pub fn write_table(disk: &DiskPlan, img: &Path) -> Result<()> {
    Cmd::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "--quiet", "--wipe", "always"])
        .arg(img)
        .stdin_bytes(disk.sfdisk_script())
        .run()
        .context("writing the partition table")?;
    verify_table(disk, img)
}

/// Reads the table back with `sfdisk --json` and compares it with the plan.
pub fn verify_table(disk: &DiskPlan, img: &Path) -> Result<()> {
    let t = flypack_contracts::blockdev::read_table(img)?;
    ensure!(t.label == "gpt", "partition table is {:?}, expected gpt", t.label);
    ensure!(
        t.sectorsize.unwrap_or(SECTOR) == SECTOR,
        "sector size {:?}, expected {SECTOR}",
        t.sectorsize
    );
    ensure!(
        t.id.eq_ignore_ascii_case(&disk.disk_guid.to_string()),
        "disk GUID {} is not the planned {}",
        t.id,
        disk.disk_guid
    );
    ensure!(
        t.partitions.len() == disk.partitions.len(),
        "{} partitions written, {} planned",
        t.partitions.len(),
        disk.partitions.len()
    );
    for (got, want) in t.partitions.iter().zip(&disk.partitions) {
        let same = got.start == want.start_sector()
            && got.size == want.sectors()
            && got.kind.eq_ignore_ascii_case(want.type_guid)
            && got
                .uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(&want.uuid.to_string()))
            && got.name.as_deref().unwrap_or_default() == want.name;
        ensure!(
            same,
            "partition {} was written as {got:?}, planned {want:?}",
            want.number
        );
    }
    Ok(())
}

fn mkfs_vfat(img: &Path, part: &PartitionPlan, fat: u32) -> Result<()> {
    let fs = part.fs.as_ref().context("partition has no filesystem")?;
    let mut cmd = Cmd::new("mkfs.vfat").arg("-F").arg(fat.to_string());
    if fat == 32 {
        // One sector per cluster keeps a small ESP above FAT32's cluster minimum.
        cmd = cmd.args(["-s", "1"]);
    }
    cmd.arg("-n")
        .arg(&fs.label)
        .arg("-i")
        .arg(fs.uuid.replace('-', ""))
        .arg(format!("--offset={}", part.start_sector()))
        .arg(img)
        .arg((part.size / 1024).to_string())
        .run()
        .with_context(|| format!("making the FAT filesystem of partition {} ({})", part.number, part.name))?;
    Ok(())
}

/// Runs an mtools command on a FAT partition inside an image.
pub fn mtools(img: &Path, part: &PartitionPlan, cmd: &[&str], copies: &[(&Path, &str)]) -> Result<()> {
    let target = format!("{}@@{}", img.display(), part.start);
    let mut c = Cmd::new(cmd[0]).env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(&target);
    if cmd[0] == "mcopy" {
        c = c.arg("-o");
    }
    c = c.args(&cmd[1..]);
    for (src, dst) in copies {
        c = c.arg(src).arg(dst);
    }
    c.run()
        .with_context(|| format!("writing into partition {} ({})", part.number, part.name))?;
    Ok(())
}

fn mkfs_ext4(plan: &Plan, disk: &DiskPlan, img: &Path, tree: &Tree) -> Result<()> {
    let part = disk.part(PART_ROOT);
    let fs = part.fs.as_ref().context("root has no filesystem")?;
    let r = Cmd::new("mkfs.ext4")
        .args(["-F", "-q", "-L"])
        .arg(&fs.label)
        .arg("-U")
        .arg(&fs.uuid)
        .arg("-E")
        .arg(format!("offset={},root_owner=0:0", part.start))
        .arg("-d")
        .arg(tree.path())
        .arg(img)
        .arg(format!("{}k", part.size / 1024))
        .run();
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.stderr().contains("Could not allocate block") || e.stderr().contains("No space left") => bail!(
            "{}: disk.size: the root filesystem ran out of space while copying {} of files: raise disk.size\n({e})",
            plan.profile.path,
            indicatif::HumanBytes(tree.used_bytes)
        ),
        Err(e) => Err(e).context("making the root filesystem"),
    }
}

/// Adds files to the ext4 filesystem of partition `part` of the image `img`
/// once it is made (debugfs, without mounting): each `(folder, name, bytes)`
/// becomes `/folder/name`, root's, mode 644. The folders must exist and the
/// names must not. Every file is read back: debugfs exits 0 even when one
/// of its commands failed.
pub fn add_files_to_ext4(img: &Path, part: &PartitionPlan, files: &[(&str, &str, &[u8])]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // debugfs takes the filesystem's offset after a `?` in the image's name
    // and splits its commands on spaces: it is given a name of ours (a link
    // to the image) and files of ours, relative to its working folder.
    let work = tempfile::tempdir().context("creating a temporary folder for debugfs")?;
    let img = std::path::absolute(img).with_context(|| format!("resolving {}", img.display()))?;
    std::os::unix::fs::symlink(&img, work.path().join("fs.img")).context("linking the image for debugfs")?;
    let target = format!("fs.img?offset={}", part.start);
    let mut script = String::new();
    for (i, (dir, name, data)) in files.iter().enumerate() {
        ensure!(
            [*dir, *name]
                .iter()
                .all(|s| !s.is_empty() && !s.contains(char::is_whitespace)),
            "cannot add {dir:?}/{name:?} with debugfs: a name with spaces"
        );
        let src = work.path().join(format!("f{i}"));
        fs::write(&src, data).with_context(|| format!("writing {}", src.display()))?;
        fs::set_permissions(&src, fs::Permissions::from_mode(0o644))?;
        script.push_str(&format!("write f{i} /{}/{name}\n", dir.trim_start_matches('/')));
    }
    let debugfs = |args: &[&str]| Cmd::new("debugfs").args(args).arg(&target).current_dir(work.path());
    debugfs(&["-w", "-f", "-"])
        .stdin_bytes(script)
        .run()
        .with_context(|| format!("adding files to partition {} ({}) with debugfs", part.number, part.name))?;
    for (dir, name, data) in files {
        let path = format!("/{}/{name}", dir.trim_start_matches('/'));
        let back = debugfs(&["-R", &format!("cat {path}")])
            .run()
            .with_context(|| format!("reading {path} back from partition {} with debugfs", part.number))?;
        ensure!(
            back.stdout == *data,
            "debugfs did not write {path} into partition {} ({}): it reads back as {} bytes, not {}",
            part.number,
            part.name,
            back.stdout.len(),
            data.len()
        );
    }
    Ok(())
}

fn install_bios(img: &Path, disk: &DiskPlan, boot_img: &Path, core_img: &Path) -> Result<()> {
    let boot = fs::read(boot_img).with_context(|| format!("reading {}", boot_img.display()))?;
    let core = fs::read(core_img).with_context(|| format!("reading {}", core_img.display()))?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .with_context(|| format!("opening {}", img.display()))?;
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr).context("reading the protective MBR")?;
    let part = disk.part(PART_BIOS);
    let (first, core) = grub::install_bios(&mbr, &boot, &core, part.start_sector(), part.sectors())?;
    f.seek(SeekFrom::Start(part.start))?;
    f.write_all(&core).context("writing GRUB's core image")?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&first).context("writing the boot sector")?;
    f.sync_all().context("syncing the image")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ext4 filesystem at 1 MiB into a file, made from a tree with
    /// `/var/lib/flypack/installer` and `/etc/flypack`, as the stick's is.
    fn ext4_at_offset(dir: &Path) -> (std::path::PathBuf, PartitionPlan) {
        let tree = dir.join("tree");
        for d in ["var/lib/flypack/installer", "etc/flypack"] {
            fs::create_dir_all(tree.join(d)).unwrap();
        }
        fs::write(tree.join("etc/flypack/kept"), b"kept\n").unwrap();
        let img = dir.join("with ? and space.img");
        File::create(&img).unwrap().set_len(40 << 20).unwrap();
        let part = PartitionPlan {
            number: 4,
            name: "root",
            type_guid: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            uuid: uuid::Uuid::new_v4(),
            start: 1 << 20,
            size: 32 << 20,
            fs: None,
        };
        Cmd::new("mkfs.ext4")
            .args(["-F", "-q", "-E", "offset=1048576,root_owner=0:0", "-d"])
            .arg(&tree)
            .arg(&img)
            .arg("32768k")
            .run()
            .unwrap();
        (img, part)
    }

    fn debugfs(img: &Path, req: &str) -> String {
        // The test's own copy of the partition: debugfs reads it without an offset.
        let out = Cmd::new("debugfs").args(["-R", req]).arg(img).run().unwrap();
        out.stdout_str()
    }

    fn partition_copy(img: &Path, part: &PartitionPlan) -> std::path::PathBuf {
        let bytes = fs::read(img).unwrap();
        let start = usize::try_from(part.start).unwrap();
        let end = start + usize::try_from(part.size).unwrap();
        let copy = img.with_file_name("part.ext4");
        fs::write(&copy, &bytes[start..end]).unwrap();
        copy
    }

    #[test]
    fn files_added_to_an_ext4_partition_are_there_with_their_mode_and_the_filesystem_is_clean() {
        let d = tempfile::tempdir().unwrap();
        let (img, part) = ext4_at_offset(d.path());
        let bmap = b"<?xml version=\"1.0\"?>\n<bmap version=\"2.0\"></bmap>\n".repeat(200);
        add_files_to_ext4(
            &img,
            &part,
            &[
                ("var/lib/flypack/installer", "payload.bmap", &bmap),
                ("/etc/flypack", "installer.json", b"{}\n"),
            ],
        )
        .unwrap();
        let copy = partition_copy(&img, &part);
        let fsck = Cmd::new("e2fsck").args(["-f", "-n"]).arg(&copy).run();
        assert!(fsck.is_ok(), "e2fsck after the additions: {fsck:?}");
        assert_eq!(
            debugfs(&copy, "cat /var/lib/flypack/installer/payload.bmap").as_bytes(),
            bmap.as_slice()
        );
        assert_eq!(debugfs(&copy, "cat /etc/flypack/installer.json"), "{}\n");
        assert_eq!(
            debugfs(&copy, "cat /etc/flypack/kept"),
            "kept\n",
            "a file that was there"
        );
        let stat = debugfs(&copy, "stat /etc/flypack/installer.json");
        assert!(stat.contains("Mode:  0644"), "{stat}");
        // The writer's: root's in a build (builder build runs as root only).
        let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
        assert!(stat.contains(&format!("User: {uid:>5}   Group: {gid:>5}")), "{stat}");
        // Nothing outside the partition was touched.
        let bytes = fs::read(&img).unwrap();
        assert!(bytes[..1 << 20].iter().all(|b| *b == 0));
        assert!(bytes[(33 << 20)..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_file_debugfs_could_not_add_is_an_error_that_names_it() {
        let d = tempfile::tempdir().unwrap();
        let (img, part) = ext4_at_offset(d.path());
        // A folder that is not there, and a name that is: debugfs says so
        // on its output and exits 0.
        for (dir, name) in [("var/lib/missing", "payload.bmap"), ("etc/flypack", "kept")] {
            let e = add_files_to_ext4(&img, &part, &[(dir, name, b"new\n")]).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains(&format!("/{dir}/{name}")), "{msg}");
            assert!(msg.contains("debugfs did not write"), "{msg}");
        }
        assert_eq!(debugfs(&partition_copy(&img, &part), "cat /etc/flypack/kept"), "kept\n");
        let e = add_files_to_ext4(&img, &part, &[("etc", "two words", b"x")]).unwrap_err();
        assert!(format!("{e:#}").contains("spaces"), "{e:#}");
    }
}
