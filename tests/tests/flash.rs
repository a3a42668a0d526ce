//! `builder flash` to a file and to a loop device: the written blocks are
//! exactly the image's wherever its block map says data; a compressed image
//! streams; the read-back verify catches a corruption; a mounted device and
//! an oversized one are refused; `--unit` writes the seed in the same pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use flypack_contracts::bmap::Bmap;
use flypack_e2e::*;
use sha2::{Digest, Sha256};

/// Every mapped range of `target` hashes as the map says (except those in
/// `skip`, a byte range that was written on purpose).
fn matches_map(target: &Path, map: &Bmap) {
    matches_map_except(target, map, 0..0)
}

fn matches_map_except(target: &Path, map: &Bmap, skip: std::ops::Range<u64>) {
    let mut f = std::fs::File::open(target).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for r in &map.ranges {
        let start = r.first * map.block_size;
        let end = ((r.last + 1) * map.block_size).min(map.image_size);
        if start < skip.end && skip.start < end {
            continue;
        }
        f.seek(SeekFrom::Start(start)).unwrap();
        let mut h = Sha256::new();
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n]).unwrap();
            h.update(&buf[..n]);
            left -= n as u64;
        }
        assert_eq!(
            hex::encode(h.finalize()),
            r.sha256,
            "blocks {}-{} of {}",
            r.first,
            r.last,
            target.display()
        );
    }
}

/// A loop device over a sparse file of `size`; detached when dropped.
struct Loop {
    dev: PathBuf,
    _file: tempfile::NamedTempFile,
}

impl Loop {
    fn new(size: u64) -> Loop {
        let file = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        file.as_file().set_len(size).unwrap();
        let (ok, out) = sh(Command::new("losetup").args(["--find", "--show"]).arg(file.path()));
        assert!(ok, "losetup: {out}");
        Loop {
            dev: PathBuf::from(out.trim()),
            _file: file,
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn flash(args: &[&std::ffi::OsStr]) -> Run {
    run(builder().args(["--json", "flash"]).args(args))
}

fn bmap_of(img: &Image) -> Bmap {
    Bmap::parse(&std::fs::read_to_string(img.path.with_extension("bmap")).unwrap()).unwrap()
}

#[test]
fn flashing_a_file_and_a_loop_device_writes_what_the_map_says() {
    let img = shared_image();
    let map = bmap_of(&img);
    assert_eq!(map.image_size, img.manifest.disk.size_bytes);
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();

    // A file target.
    let file = dir.path().join("target.img");
    let r = flash(&[img.path.as_os_str(), file.as_os_str()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    matches_map(&file, &map);
    let result = r.event("result").unwrap();
    assert_eq!(result["ranges"].as_u64().unwrap() as usize, map.ranges.len());

    // A block device (loop), with the seed written in the same pass.
    let lo = Loop::new(6 << 30);
    let unit = repo().join("images/unit.example.toml");
    let r = flash(&[
        img.path.as_os_str(),
        lo.dev.as_os_str(),
        "--unit".as_ref(),
        unit.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let seed = img.part(3);
    matches_map_except(&lo.dev, &map, seed.start_bytes..seed.start_bytes + seed.size_bytes);
    let files = flypack_contracts::seed::read(&lo.dev, seed.start_bytes, seed.size_bytes).unwrap();
    assert_eq!(
        files.unit.as_deref(),
        Some(std::fs::read_to_string(&unit).unwrap().as_str())
    );

    // A compressed image streams; the block map beside it is used.
    let zst = dir.path().join("copy.img.zst");
    let (ok, out) = sh(Command::new("zstd")
        .args(["-q", "-T0", "-1", "-o"])
        .arg(&zst)
        .arg(&img.path));
    assert!(ok, "{out}");
    std::fs::copy(img.path.with_extension("bmap"), dir.path().join("copy.bmap")).unwrap();
    let file2 = dir.path().join("target2.img");
    let r = flash(&[zst.as_os_str(), file2.as_os_str()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    matches_map(&file2, &map);
}

#[test]
fn the_read_back_verify_catches_a_corruption() {
    let img = shared_image();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let file = dir.path().join("target.img");
    let r = run(builder()
        .env("FLYPACK_FAULT", "flash:corrupt")
        .args(["flash"])
        .arg(&img.path)
        .arg(&file));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("verification failed: blocks") && r.stderr.contains("do not use it"),
        "{}",
        r.stderr
    );
}

#[test]
fn mounted_and_oversized_devices_are_refused() {
    let img = shared_image();
    // Mounted: a filesystem on a loop device, mounted.
    let lo = Loop::new(6 << 30);
    let (ok, out) = sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&lo.dev));
    assert!(ok, "{out}");
    let mnt = tempfile::tempdir().unwrap();
    let (ok, out) = sh(Command::new("mount").arg(&lo.dev).arg(mnt.path()));
    assert!(ok, "mount: {out}");
    let r = flash(&[img.path.as_os_str(), lo.dev.as_os_str()]);
    let _ = Command::new("umount").arg(mnt.path()).status();
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!("is mounted at {}", mnt.path().display())),
        "{}",
        r.stderr
    );
    // Nothing was written: the filesystem is intact.
    let (ok, out) = sh(Command::new("e2fsck").arg("-fn").arg(&lo.dev));
    assert!(ok, "the refused device was changed: {out}");

    // Far larger than a USB stick: refused, unless told.
    let big = Loop::new(1 << 40);
    let r = flash(&[img.path.as_os_str(), big.dev.as_os_str()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("far larger than a USB stick") && r.stderr.contains("--allow-large"),
        "{}",
        r.stderr
    );
    let r = flash(&[img.path.as_os_str(), big.dev.as_os_str(), "--allow-large".as_ref()]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // A partition instead of the disk is refused too (refusals of the system
    // disk are covered by builder's unit tests: a bug there must not write
    // over this machine's disk).
}
