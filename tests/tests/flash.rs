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

    // A file target (it must exist: flash never creates a target).
    let file = dir.path().join("target.img");
    let r = flash(&[img.path.as_os_str(), file.as_os_str()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("does not exist") && r.stderr.contains("lsblk"),
        "{}",
        r.stderr
    );
    assert!(!file.exists(), "flash created its target");
    std::fs::File::create(&file).unwrap();
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

    // The source may be a device longer than the image, holding it at its
    // start (the USB installer reads its payload partition so): with the
    // map given, only the mapped ranges are read and each is checked.
    let src = Loop::new(5 << 30);
    let r = flash(&[img.path.as_os_str(), src.dev.as_os_str()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bmap = img.path.with_extension("bmap");
    let file3 = dir.path().join("from-device.img");
    std::fs::File::create(&file3).unwrap();
    let r = flash(&[
        src.dev.as_os_str(),
        file3.as_os_str(),
        "--bmap".as_ref(),
        bmap.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    matches_map(&file3, &map);
    assert_eq!(std::fs::metadata(&file3).unwrap().len(), map.image_size);
    // A device shorter than the image is the wrong source.
    let short = Loop::new(1 << 30);
    let r = flash(&[
        short.dev.as_os_str(),
        file3.as_os_str(),
        "--bmap".as_ref(),
        bmap.as_os_str(),
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("wrong map"), "{}", r.stderr);
    drop((src, short));

    // A compressed image streams; the block map beside it is used.
    let zst = dir.path().join("copy.img.zst");
    let (ok, out) = sh(Command::new("zstd")
        .args(["-q", "-T0", "-1", "-o"])
        .arg(&zst)
        .arg(&img.path));
    assert!(ok, "{out}");
    std::fs::copy(img.path.with_extension("bmap"), dir.path().join("copy.bmap")).unwrap();
    let file2 = dir.path().join("target2.img");
    std::fs::File::create(&file2).unwrap();
    let r = flash(&[zst.as_os_str(), file2.as_os_str()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    matches_map(&file2, &map);
}

/// The first and the last MiB of a file are zero.
fn ends_are_zero(p: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(p).unwrap();
    let size = f.seek(SeekFrom::End(0)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for at in [0, size - (1 << 20)] {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut buf).unwrap();
        if buf.iter().any(|b| *b != 0) {
            return false;
        }
    }
    true
}

#[test]
fn the_read_back_verify_catches_a_corruption_and_the_target_is_cleared() {
    let img = shared_image();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let file = dir.path().join("target.img");
    std::fs::File::create(&file).unwrap();
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
    assert!(r.stderr.contains("first and last MiB were cleared"), "{}", r.stderr);
    assert!(
        ends_are_zero(&file),
        "a target that failed verification still has a partition table"
    );
}

#[test]
fn a_corrupt_image_is_reported_as_one_and_the_target_is_cleared() {
    let img = shared_image();
    let map = bmap_of(&img);
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    // A copy of the image with one byte flipped in a mapped range past the
    // first MiB (the map beside it is the good image's).
    let bad = dir.path().join("bad.img");
    let (ok, out) = sh(Command::new("cp").arg("--sparse=always").arg(&img.path).arg(&bad));
    assert!(ok, "{out}");
    std::fs::copy(img.path.with_extension("bmap"), dir.path().join("bad.bmap")).unwrap();
    let r = &map.ranges[map.ranges.len() / 2];
    let at = r.offset(map.block_size) + 123;
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&bad).unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[!b[0]]).unwrap();
    }
    // A target holding an older image first: after the failure it must not boot.
    let file = dir.path().join("target.img");
    std::fs::File::create(&file).unwrap();
    assert_eq!(flash(&[img.path.as_os_str(), file.as_os_str()]).code, 0);
    let r = flash(&[bad.as_os_str(), file.as_os_str()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("bad.img is corrupt: blocks") && r.stderr.contains("do not match its block map"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("medium"), "blamed the medium: {}", r.stderr);
    assert!(
        ends_are_zero(&file),
        "the half-written target still has a partition table"
    );
    // A device name that does not exist is refused, never created in /dev.
    let r = flash(&[img.path.as_os_str(), "/dev/sdzz-flypack".as_ref()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    assert!(!Path::new("/dev/sdzz-flypack").exists());
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
