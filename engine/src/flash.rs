//! Writing an image to a USB stick, a disk or a file: only the blocks the
//! block map says hold data, each range checked against the map's SHA-256
//! as it is read from the image (a corrupt image is reported as one), the
//! first MiB last (a partial write never boots), then sync, drop the cache,
//! read every written range back and check its SHA-256. When anything fails
//! after writing began, the target's first and last MiB (the partition
//! table and the backup GPT header) are cleared, so it cannot boot a
//! half-written system. A block device is held exclusively (O_EXCL) from
//! the first write until the caller's finishing writes (seed, restore) are
//! done. Refuses a target that does not exist, a mounted or busy device,
//! the disk that holds the running system, and a device far larger than a
//! USB stick unless told.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use flypack_contracts::blockdev;
use flypack_contracts::bmap::{self, Bmap};

/// Devices larger than this are "far larger than a USB stick".
pub const LARGE: u64 = 256 << 30;
/// Written last, so an interrupted write leaves nothing bootable.
const HEAD: u64 = 1 << 20;

/// What to flash.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image (raw, or zstd-compressed).
    pub image: PathBuf,
    /// Its block map (default: beside the image).
    pub bmap: Option<PathBuf>,
    /// Block device or file.
    pub target: PathBuf,
    /// Allow a device larger than [`LARGE`].
    pub allow_large: bool,
    /// The target is the disk this system runs from, on purpose (`firstboot
    /// reflash`): the caller made its filesystems read-only first and
    /// reboots when done. Any other disk is then refused, and the disk is
    /// opened without O_EXCL (its read-only filesystems still hold it).
    pub running_system: bool,
    /// Files to write into the seed partition too, by name on the seed
    /// (`unit.toml`, `fleet.toml`, `backup-key.toml`), validated by the caller.
    pub seed: Vec<(&'static str, Vec<u8>)>,
}

/// What a flash did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Bytes written.
    pub written: u64,
    /// Ranges written and verified.
    pub ranges: usize,
    /// Seconds writing (incl. sync).
    pub write_seconds: f64,
    /// Seconds verifying.
    pub verify_seconds: f64,
}

fn is_zstd(path: &Path) -> Result<bool> {
    let mut m = [0u8; 4];
    let n = File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .read(&mut m)?;
    Ok(n == 4 && m == [0x28, 0xb5, 0x2f, 0xfd])
}

/// The block map for an image: given, beside it, or computed (raw only).
pub fn find_bmap(image: &Path, given: Option<&Path>) -> Result<Option<Bmap>> {
    let candidates: Vec<PathBuf> = match given {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let s = image.display().to_string();
            let base = s.trim_end_matches(".zst").trim_end_matches(".img");
            vec![
                PathBuf::from(format!("{base}.bmap")),
                PathBuf::from(format!("{s}.bmap")),
            ]
        }
    };
    for c in &candidates {
        if c.is_file() {
            let text = std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?;
            return Ok(Some(
                Bmap::parse(&text).with_context(|| format!("block map {}", c.display()))?,
            ));
        }
    }
    if let Some(p) = given {
        bail!("block map {} not found", p.display());
    }
    Ok(None)
}

/// Checks a target and opens it for writing.
fn open_target(target: &Path, need: u64, allow_large: bool, running_system: bool) -> Result<(File, bool)> {
    let meta = match std::fs::metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!(
                "{} does not exist: check the device name (lsblk lists the disks and sticks); \
                 to write into an image file, create it first (truncate -s SIZE FILE)",
                target.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", target.display())),
    };
    let is_dev = meta.file_type().is_block_device();
    if !is_dev {
        if !meta.is_file() {
            bail!("{} is neither a block device nor a regular file", target.display());
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(target)
            .with_context(|| format!("opening {}", target.display()))?;
        f.set_len(need)
            .with_context(|| format!("sizing {}", target.display()))?;
        return Ok((f, false));
    }
    let canon = std::fs::canonicalize(target)?;
    let name = canon.file_name().context("device name")?.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let system = blockdev::root_source(&mountinfo).ok().map(|root| {
        let disk = blockdev::disk_and_partition(Path::new("/sys/class/block"), &root)
            .map(|(d, _)| d)
            .unwrap_or(root.clone());
        (std::fs::canonicalize(&disk).unwrap_or(disk), root)
    });
    let facts = DeviceFacts {
        target: canon.clone(),
        is_partition: Path::new("/sys/class/block").join(&name).join("partition").exists(),
        system_disk: system.clone().map(|(d, _)| d),
        root_source: system.map(|(_, r)| r),
        mounted_at: blockdev::mounts_of(&mountinfo, &blockdev::device_numbers(&name)),
        swap: std::fs::read_to_string("/proc/swaps")
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|d| d.starts_with(&canon.display().to_string()))
            }),
        size: blockdev::size_bytes(&name).context("reading the device size")?,
    };
    if running_system {
        if facts.system_disk.as_deref() != Some(canon.as_path()) {
            bail!(
                "{} is not the disk this system runs from ({}): a reflash writes only its own disk",
                target.display(),
                facts.system_disk.as_deref().unwrap_or(Path::new("?")).display()
            );
        }
        let own = DeviceFacts {
            system_disk: None,
            mounted_at: Vec::new(),
            ..facts
        };
        if let Some(why) = refusal(&own, need, true) {
            bail!("{}: {why}", target.display());
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(target)
            .with_context(|| format!("opening {}", target.display()))?;
        return Ok((f, true));
    }
    if let Some(why) = refusal(&facts, need, allow_large) {
        bail!("{}: {why}", target.display());
    }
    // O_EXCL on a block device: the kernel refuses it while anything holds it.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
        .open(target)
        .map_err(|e| {
            if e.raw_os_error() == Some(16) {
                anyhow::anyhow!(
                    "{} is busy (in use by the kernel or a program): close what uses it",
                    target.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("opening {}", target.display()))
            }
        })?;
    Ok((f, true))
}

fn human(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// What decides whether a block device may be written.
#[derive(Debug, Clone, Default)]
pub struct DeviceFacts {
    /// The device (canonical path).
    pub target: PathBuf,
    /// It is a partition, not a whole disk.
    pub is_partition: bool,
    /// The disk holding `/`.
    pub system_disk: Option<PathBuf>,
    /// The device mounted at `/`.
    pub root_source: Option<PathBuf>,
    /// Where it or its partitions are mounted.
    pub mounted_at: Vec<String>,
    /// It (or a partition) is swap.
    pub swap: bool,
    /// Its size.
    pub size: u64,
}

/// Why a block device must not be written, if it must not.
pub fn refusal(f: &DeviceFacts, need: u64, allow_large: bool) -> Option<String> {
    if f.is_partition {
        return Some("is a partition: give the whole device (e.g. /dev/sdb, not /dev/sdb1)".into());
    }
    if f.system_disk.as_deref() == Some(f.target.as_path()) {
        return Some(format!(
            "holds the running system (/ is on {}): refusing to overwrite it",
            f.root_source.as_deref().unwrap_or(Path::new("?")).display()
        ));
    }
    if !f.mounted_at.is_empty() {
        return Some(format!(
            "is mounted at {}: unmount it first (umount {})",
            f.mounted_at.join(", "),
            f.mounted_at.join(" ")
        ));
    }
    if f.swap {
        return Some("is used for swap: swapoff it first".into());
    }
    if f.size < need {
        return Some(format!("is {} but the image needs {}", human(f.size), human(need)));
    }
    if f.size > LARGE && !allow_large {
        return Some(format!(
            "is {}, far larger than a USB stick: if it really is the target, pass --allow-large",
            human(f.size)
        ));
    }
    None
}

/// Reads image bytes at offsets in increasing order, from a raw file or a
/// zstd stream.
enum Source {
    // Both variants are Send: the reader thread owns the source.
    Raw(File),
    Zstd {
        dec: zstd::stream::read::Decoder<'static, io::BufReader<File>>,
        pos: u64,
    },
}

impl Source {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            Source::Raw(f) => {
                f.seek(SeekFrom::Start(offset))?;
                f.read_exact(buf).context("reading the image")?;
            }
            Source::Zstd { dec, pos } => {
                if offset < *pos {
                    bail!("internal: compressed image read out of order");
                }
                io::copy(&mut dec.by_ref().take(offset - *pos), &mut io::sink()).context("decompressing the image")?;
                dec.read_exact(buf).context("decompressing the image")?;
                *pos = offset + buf.len() as u64;
            }
        }
        Ok(())
    }
}

/// What the progress callback is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing (bytes done, bytes to write).
    Write,
    /// Reading back (bytes checked, bytes to check).
    Verify,
}

impl Phase {
    /// The phase as a progress line says it.
    pub fn verb(self) -> &'static str {
        match self {
            Phase::Write => "writing",
            Phase::Verify => "verifying",
        }
    }
}

/// The flash's progress in steps, for a log or a console that must not get
/// a line per block: `report` calls `f(phase, percent, done, total)` when the
/// phase changes, when the percentage has grown by `step`, and at a phase's end.
pub struct Steps<F> {
    last: std::sync::Mutex<(Phase, u64)>,
    step: u64,
    f: F,
}

impl<F: Fn(Phase, u64, u64, u64) + Sync> Steps<F> {
    /// Steps of `step` percent.
    pub fn new(step: u64, f: F) -> Steps<F> {
        Steps {
            last: std::sync::Mutex::new((Phase::Write, 0)),
            step,
            f,
        }
    }

    /// The flash engine's progress callback.
    pub fn report(&self, phase: Phase, done: u64, total: u64) {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        let mut l = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if l.0 != phase || pct >= l.1 + self.step || done == total {
            *l = (phase, pct);
            (self.f)(phase, pct, done, total);
        }
    }
}

/// The caller's finishing writes on the flashed target.
pub type Finish<'a> = &'a (dyn Fn(&Path) -> Result<()> + Sync);

/// Callbacks of a flash: progress, whether to stop, and the caller's
/// finishing writes.
pub struct Hooks<'a> {
    /// Progress.
    pub progress: &'a (dyn Fn(Phase, u64, u64) + Sync),
    /// Returns true to abandon the write (interrupted).
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
    /// Run after the image and the seed files are written and verified,
    /// while the target is still held exclusively; its failure clears the
    /// target like a failed write.
    pub finish: Option<Finish<'a>>,
}

/// Zeroes the first and last MiB of `target` (the partition table, the
/// boot code and the backup GPT header) and syncs.
pub fn clear_ends(target: &Path) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(target)
        .with_context(|| format!("opening {} to clear it", target.display()))?;
    let size = f.seek(SeekFrom::End(0))?;
    let zero = vec![0u8; HEAD as usize];
    for at in [0, size.saturating_sub(HEAD)] {
        let n = (size - at).min(HEAD) as usize;
        f.seek(SeekFrom::Start(at))?;
        f.write_all(&zero[..n])?;
    }
    f.sync_all()?;
    Ok(())
}

/// Flashes. On a failure after the target was opened, its ends are cleared
/// (see [`clear_ends`]) and the error says so.
pub fn flash(o: &Options, hooks: &Hooks) -> Result<Report> {
    let mut opened = false;
    let r = flash_inner(o, hooks, &mut opened);
    match r {
        Ok(r) => Ok(r),
        Err(e) if opened => match clear_ends(&o.target) {
            Ok(()) => Err(e.context(format!(
                "{}'s first and last MiB were cleared: it does not boot a half-written system; flash it again",
                o.target.display()
            ))),
            Err(c) => Err(e.context(format!(
                "and clearing {} failed too ({c:#}): do not boot from it",
                o.target.display()
            ))),
        },
        Err(e) => Err(e),
    }
}

/// A mapped range: start and end byte, its digest, first and last block.
type Span = (u64, u64, String, u64, u64);

fn spans(map: &Bmap) -> Vec<Span> {
    map.ranges
        .iter()
        .map(|r| {
            let s = r.offset(map.block_size);
            (
                s,
                (s + r.len(map.block_size)).min(map.image_size),
                r.sha256.clone(),
                r.first,
                r.last,
            )
        })
        .collect()
}

/// Reads the mapped ranges from the image in order and hands each chunk
/// to `sink` (which returns false to stop). A range's last chunk is not
/// handed on until the range matched the map: a corrupt image never
/// completes a range. Stops at the first error, after handing it on.
fn read_checked(
    src: &mut Source,
    spans: Vec<Span>,
    image_shown: &str,
    mut sink: impl FnMut(Result<(u64, Vec<u8>)>) -> bool,
) {
    for (start, end, sha, first, last) in spans {
        let mut at = start;
        let mut h = Sha256::new();
        while at < end {
            let n = (end - at).min(8 << 20) as usize;
            let mut buf = vec![0u8; n];
            let mut r = src.read_at(at, &mut buf).map(|_| (at, buf));
            if let Ok((_, b)) = &r {
                h.update(b);
            }
            at += n as u64;
            if at >= end && r.is_ok() && !sha.is_empty() {
                let got = hex::encode(std::mem::take(&mut h).finalize());
                if got != sha {
                    r = Err(anyhow::anyhow!(
                        "{image_shown} is corrupt: blocks {first}-{last} do not match its block map \
                         (SHA-256 {got}, the map says {sha}); rebuild or copy the image again"
                    ));
                }
            }
            let failed = r.is_err();
            if !sink(r) || failed {
                return;
            }
        }
    }
}

fn open_source(image: &Path, zst: bool) -> Result<Source> {
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    Ok(if zst {
        Source::Zstd {
            dec: zstd::stream::read::Decoder::new(f)?,
            pos: 0,
        }
    } else {
        Source::Raw(f)
    })
}

/// Reads the whole image (raw or zstd) and checks every mapped range
/// against its block map, writing nothing: what `firstboot reflash` does
/// before it touches the disk it runs from. Returns the map.
pub fn check_source(image: &Path, bmap: Option<&Path>) -> Result<Bmap> {
    let zst = is_zstd(image)?;
    let map = find_bmap(image, bmap)?
        .with_context(|| format!("{} has no block map beside it: give its .bmap", image.display()))?;
    let mut src = open_source(image, zst)?;
    let mut failed = None;
    read_checked(&mut src, spans(&map), &image.display().to_string(), |r| match r {
        Ok(_) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(map),
    }
}

fn flash_inner(o: &Options, hooks: &Hooks, opened: &mut bool) -> Result<Report> {
    let zst = is_zstd(&o.image)?;
    let map = match find_bmap(&o.image, o.bmap.as_deref())? {
        Some(m) => m,
        None if zst => bail!(
            "{} is compressed and has no block map beside it: give --bmap",
            o.image.display()
        ),
        None => {
            tracing::info!("no block map beside the image: mapping it now");
            bmap::map_file(&o.image, |_, _| {})?.0
        }
    };
    if !zst {
        // A file is the image; a partition (the installer's payload) holds
        // it at its start and may be longer.
        let meta = std::fs::metadata(&o.image).with_context(|| format!("inspecting {}", o.image.display()))?;
        let is_dev = meta.file_type().is_block_device();
        let len = if is_dev {
            File::open(&o.image)
                .and_then(|mut f| f.seek(SeekFrom::End(0)))
                .with_context(|| format!("reading the size of {}", o.image.display()))?
        } else {
            meta.len()
        };
        if len != map.image_size && !(is_dev && len > map.image_size) {
            bail!(
                "the block map is for a {} image, {} is {}: wrong map?",
                map.image_size,
                o.image.display(),
                len
            );
        }
    }
    let (mut target, is_dev) = open_target(&o.target, map.image_size, o.allow_large, o.running_system)?;
    *opened = true;
    let mut src = open_source(&o.image, zst)?;
    let total = map.mapped_bytes();
    let t0 = Instant::now();
    let mut head: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut done = 0u64;
    // A reader thread decompresses/reads ahead while this one writes.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, Vec<u8>)>>(4);
    let spans = spans(&map);
    let image_shown = o.image.display().to_string();
    let reader = std::thread::spawn(move || read_checked(&mut src, spans, &image_shown, |r| tx.send(r).is_ok()));
    for chunk in rx {
        let (at, buf) = chunk?;
        let n = buf.len();
        if at < HEAD {
            // Keep the part in the first MiB for the very end.
            let cut = (HEAD - at).min(n as u64) as usize;
            head.push((at, buf[..cut].to_vec()));
            if cut < n {
                target.seek(SeekFrom::Start(at + cut as u64))?;
                target
                    .write_all(&buf[cut..n])
                    .with_context(|| format!("writing {}", o.target.display()))?;
            }
        } else {
            target.seek(SeekFrom::Start(at))?;
            target
                .write_all(&buf)
                .with_context(|| format!("writing {}", o.target.display()))?;
        }
        done += n as u64;
        (hooks.progress)(Phase::Write, done, total);
        if (hooks.cancelled)() {
            bail!(
                "interrupted: {} holds a partial image (its first MiB was not written, so it does not boot)",
                o.target.display()
            );
        }
    }
    // The reader only ends by finishing or failing (its error came through the channel).
    let _ = reader.join();
    target
        .sync_data()
        .with_context(|| format!("syncing {}", o.target.display()))?;
    for (at, bytes) in &head {
        target.seek(SeekFrom::Start(*at))?;
        target
            .write_all(bytes)
            .with_context(|| format!("writing {}", o.target.display()))?;
    }
    target
        .sync_all()
        .with_context(|| format!("syncing {}", o.target.display()))?;
    let write_seconds = t0.elapsed().as_secs_f64();
    // Test hook (only in builds with the `fault-injection` feature, which
    // the end-to-end tests turn on): damage one written byte behind our back.
    #[cfg(feature = "fault-injection")]
    if let Some(f) = std::env::var("FLYPACK_FAULT").ok().filter(|f| f == "flash:corrupt") {
        let r = &map.ranges[map.ranges.len() / 2];
        let at = r.offset(map.block_size) + 7;
        let mut b = [0u8; 1];
        target.seek(SeekFrom::Start(at))?;
        target.read_exact(&mut b)?;
        target.seek(SeekFrom::Start(at))?;
        target.write_all(&[!b[0]])?;
        target.sync_all()?;
        tracing::warn!("{f}: corrupted byte {at}");
    }

    // Read back what is on the medium, not what is in the page cache.
    let t1 = Instant::now();
    rustix::fs::fadvise(&target, 0, None, rustix::fs::Advice::DontNeed).context("dropping cached pages")?;
    // `target` stays open (O_EXCL on a device) until the finishing writes are done.
    // Two readers, each with its own descriptor (O_DIRECT on a device, so
    // nothing comes from a cache), split the ranges by bytes.
    let workers = 2usize;
    let mut shares: Vec<Vec<(usize, &bmap::Range)>> = vec![Vec::new(); workers];
    let mut loads = vec![0u64; workers];
    for (i, r) in map.ranges.iter().enumerate() {
        let w = (0..workers).min_by_key(|w| loads[*w]).unwrap_or(0);
        loads[w] += r.len(map.block_size);
        shares[w].push((i, r));
    }
    let checked = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .map(|share| {
                let checked = &checked;
                let map = &map;
                s.spawn(move || -> Result<()> {
                    let mut f = if is_dev {
                        OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32).open(&o.target).or_else(|_| File::open(&o.target))?
                    } else {
                        File::open(&o.target)?
                    };
                    let mut vbuf = AlignedBuf::new(4 << 20);
                    for (i, r) in share {
                        let start = r.offset(map.block_size);
                        let end = (start + r.len(map.block_size)).min(map.image_size);
                        let mut h = Sha256::new();
                        let mut at = start;
                        while at < end {
                            let n = (end - at).min(vbuf.len() as u64) as usize;
                            let want = n.div_ceil(4096) * 4096;
                            f.seek(SeekFrom::Start(at))?;
                            let b = vbuf.slice(want);
                            let mut got = 0;
                            while got < n {
                                let k = f.read(&mut b[got..]).with_context(|| format!("reading back {}", o.target.display()))?;
                                if k == 0 {
                                    break;
                                }
                                got += k;
                            }
                            if got < n {
                                bail!("{} ended at byte {} while verifying: was it removed?", o.target.display(), at + got as u64);
                            }
                            h.update(&b[..n]);
                            at += n as u64;
                            let c = checked.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed) + n as u64;
                            (hooks.progress)(Phase::Verify, c, total);
                        }
                        let sum = hex::encode(h.finalize());
                        if !r.sha256.is_empty() && sum != r.sha256 {
                            bail!(
                                "verification failed: blocks {}-{} (range {} of {}) read back differently than written: the medium is faulty or was removed; do not use it",
                                r.first,
                                r.last,
                                i + 1,
                                map.ranges.len()
                            );
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a verify thread panicked")))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    let verify_seconds = t1.elapsed().as_secs_f64();

    if !o.seed.is_empty() {
        let (off, len) = flypack_contracts::seed::seed_partition(&o.target)?;
        let refs: Vec<(&str, &[u8])> = o.seed.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        flypack_contracts::seed::write(&o.target, off, len, &refs, &[])?;
    }
    if let Some(f) = hooks.finish {
        f(&o.target)?;
    }
    drop(target);
    Ok(Report {
        written: done,
        ranges: map.ranges.len(),
        write_seconds,
        verify_seconds,
    })
}

/// A page-aligned buffer (O_DIRECT reads need one).
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let raw = vec![0u8; len + 4096];
        let start = raw.as_ptr().align_offset(4096);
        AlignedBuf { raw, start, len }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn slice(&mut self, n: usize) -> &mut [u8] {
        &mut self.raw[self.start..self.start + n.min(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_steps_every_ten_percent_each_phase_and_its_end() {
        let seen = std::sync::Mutex::new(Vec::new());
        let steps = Steps::new(10, |p: Phase, pct, _, _| seen.lock().unwrap().push((p.verb(), pct)));
        for done in (0..=1000).step_by(7).chain([1000]) {
            steps.report(Phase::Write, done, 1000);
        }
        steps.report(Phase::Verify, 0, 0);
        let seen = seen.into_inner().unwrap();
        let writes: Vec<u64> = seen.iter().filter(|(v, _)| *v == "writing").map(|s| s.1).collect();
        assert_eq!(writes, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(
            seen.last(),
            Some(&("verifying", 100)),
            "a new phase, and an empty one is done"
        );
    }

    fn stick() -> DeviceFacts {
        DeviceFacts {
            target: "/dev/sdb".into(),
            system_disk: Some("/dev/nvme0n1".into()),
            root_source: Some("/dev/nvme0n1p2".into()),
            size: 32 << 30,
            ..Default::default()
        }
    }

    #[test]
    fn refusals() {
        let need = 4 << 30;
        assert_eq!(refusal(&stick(), need, false), None);
        let cases: Vec<(DeviceFacts, bool, &str)> = vec![
            (
                DeviceFacts {
                    target: "/dev/nvme0n1".into(),
                    ..stick()
                },
                true,
                "holds the running system (/ is on /dev/nvme0n1p2)",
            ),
            (
                DeviceFacts {
                    is_partition: true,
                    ..stick()
                },
                false,
                "is a partition",
            ),
            (
                DeviceFacts {
                    mounted_at: vec!["/media/stick".into()],
                    ..stick()
                },
                false,
                "is mounted at /media/stick",
            ),
            (DeviceFacts { swap: true, ..stick() }, false, "swap"),
            (
                DeviceFacts {
                    size: 2 << 30,
                    ..stick()
                },
                false,
                "the image needs",
            ),
            (
                DeviceFacts {
                    size: 1 << 40,
                    ..stick()
                },
                false,
                "far larger than a USB stick",
            ),
        ];
        for (f, allow, words) in cases {
            let why = refusal(&f, need, allow).unwrap_or_else(|| panic!("{f:?} accepted"));
            assert!(!why.is_empty());
            assert!(why.contains(words), "{why}");
        }
        assert_eq!(
            refusal(
                &DeviceFacts {
                    size: 1 << 40,
                    ..stick()
                },
                need,
                true
            ),
            None
        );
    }

    #[test]
    fn finds_the_bmap_beside_the_image() {
        // (in contracts: the same as for builder)
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x.img"), b"").unwrap();
        assert!(find_bmap(&d.path().join("x.img"), None).unwrap().is_none());
        let map = bmap::Bmap {
            image_size: 8192,
            block_size: 4096,
            ranges: vec![bmap::Range {
                first: 0,
                last: 0,
                sha256: "ab".into(),
            }],
        };
        std::fs::write(d.path().join("x.bmap"), map.to_xml()).unwrap();
        assert_eq!(find_bmap(&d.path().join("x.img.zst"), None).unwrap(), Some(map.clone()));
        assert_eq!(find_bmap(&d.path().join("x.img"), None).unwrap(), Some(map));
        assert!(find_bmap(&d.path().join("x.img"), Some(&d.path().join("no.bmap"))).is_err());
    }
    #[test]
    fn check_source_reads_every_range_raw_or_compressed_and_names_a_corrupt_one() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("x.img");
        // Data, a hole, data.
        let mut f = File::create(&img).unwrap();
        f.write_all(&vec![7u8; 8192]).unwrap();
        f.seek(SeekFrom::Start(64 << 10)).unwrap();
        f.write_all(&vec![9u8; 4096]).unwrap();
        f.set_len(128 << 10).unwrap();
        drop(f);
        let (map, _) = bmap::map_file(&img, |_, _| {}).unwrap();
        std::fs::write(d.path().join("x.bmap"), map.to_xml()).unwrap();
        assert_eq!(check_source(&img, None).unwrap(), map);
        let zst = d.path().join("x.img.zst");
        let raw = std::fs::read(&img).unwrap();
        std::fs::write(&zst, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
        assert_eq!(check_source(&zst, None).unwrap(), map);
        // One byte of the second range flipped.
        let mut bad = raw.clone();
        bad[(64 << 10) + 100] ^= 1;
        std::fs::write(&zst, zstd::encode_all(&bad[..], 3).unwrap()).unwrap();
        let e = format!("{:#}", check_source(&zst, None).unwrap_err());
        assert!(e.contains("is corrupt: blocks 16-16"), "{e}");
        // No map: said, not guessed.
        std::fs::remove_file(d.path().join("x.bmap")).unwrap();
        let e = format!("{:#}", check_source(&zst, None).unwrap_err());
        assert!(e.contains("has no block map"), "{e}");
    }
}
