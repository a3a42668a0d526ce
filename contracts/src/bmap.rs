//! Block maps in bmaptool's format (version 2.0): which blocks of a sparse
//! image hold data, with a SHA-256 per range, so flashing writes only those
//! blocks and can verify each range after writing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Block size of our maps.
pub const BLOCK: u64 = 4096;

/// A run of mapped blocks, inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First block.
    pub first: u64,
    /// Last block (inclusive).
    pub last: u64,
    /// SHA-256 of the range's bytes.
    pub sha256: String,
}

impl Range {
    /// Byte offset.
    pub fn offset(&self, block: u64) -> u64 {
        self.first * block
    }
    /// Byte length (the last range may pass the image end; callers clamp).
    pub fn len(&self, block: u64) -> u64 {
        (self.last - self.first + 1) * block
    }
    /// Whether the range is empty (never: a range holds at least one block).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// Image size in bytes.
    pub image_size: u64,
    /// Block size.
    pub block_size: u64,
    /// Mapped ranges, in order.
    pub ranges: Vec<Range>,
}

impl Bmap {
    /// Blocks in the image.
    pub fn blocks(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }
    /// Mapped blocks.
    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }
    /// Bytes of data the map says to write.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| r.len(self.block_size).min(self.image_size - r.offset(self.block_size)))
            .sum()
    }

    /// The map as bmaptool's XML.
    pub fn to_xml(&self) -> String {
        let zero = "0".repeat(64);
        let body = |checksum: &str| {
            let mut s = String::new();
            s.push_str("<?xml version=\"1.0\" ?>\n");
            s.push_str("<!-- Flypack block map (bmaptool format 2.0): the blocks of the image that hold data.\n");
            s.push_str("     Write it with `builder flash IMAGE TARGET` or `bmaptool copy IMAGE TARGET`. -->\n");
            s.push_str("<bmap version=\"2.0\">\n");
            s.push_str(&format!("    <ImageSize> {} </ImageSize>\n", self.image_size));
            s.push_str(&format!("    <BlockSize> {} </BlockSize>\n", self.block_size));
            s.push_str(&format!("    <BlocksCount> {} </BlocksCount>\n", self.blocks()));
            s.push_str(&format!(
                "    <MappedBlocksCount> {} </MappedBlocksCount>\n",
                self.mapped_blocks()
            ));
            s.push_str("    <ChecksumType> sha256 </ChecksumType>\n");
            s.push_str(&format!("    <BmapFileChecksum> {checksum} </BmapFileChecksum>\n"));
            s.push_str("    <BlockMap>\n");
            for r in &self.ranges {
                let span = if r.first == r.last {
                    r.first.to_string()
                } else {
                    format!("{}-{}", r.first, r.last)
                };
                s.push_str(&format!("        <Range chksum=\"{}\"> {span} </Range>\n", r.sha256));
            }
            s.push_str("    </BlockMap>\n</bmap>\n");
            s
        };
        // The file's own checksum is taken with the field zeroed.
        let sum = hex::encode(Sha256::digest(body(&zero).as_bytes()));
        body(&sum)
    }

    /// Parses bmaptool's XML (versions 1.x with sha1 are refused).
    pub fn parse(text: &str) -> Result<Bmap> {
        let doc = roxmltree::Document::parse(text).context("the block map is not XML")?;
        let root = doc.root_element();
        if root.tag_name().name() != "bmap" {
            bail!("not a block map (root element <{}>)", root.tag_name().name());
        }
        let version = root.attribute("version").unwrap_or("");
        if !version.starts_with("2.") {
            bail!("block map version {version:?}: only 2.x (sha256) is supported");
        }
        let field = |name: &str| -> Result<String> {
            root.children()
                .find(|n| n.has_tag_name(name))
                .and_then(|n| n.text())
                .map(|t| t.trim().to_string())
                .with_context(|| format!("the block map has no <{name}>"))
        };
        let image_size: u64 = field("ImageSize")?.parse().context("ImageSize")?;
        let block_size: u64 = field("BlockSize")?.parse().context("BlockSize")?;
        if field("ChecksumType")? != "sha256" {
            bail!(
                "block map checksum type {:?}: only sha256 is supported",
                field("ChecksumType")?
            );
        }
        let declared = field("BmapFileChecksum")?;
        let zeroed = text.replacen(&declared, &"0".repeat(declared.len()), 1);
        let actual = hex::encode(Sha256::digest(zeroed.as_bytes()));
        if actual != declared {
            bail!("the block map is corrupt: its checksum is {declared}, its content hashes to {actual}");
        }
        let map = root
            .children()
            .find(|n| n.has_tag_name("BlockMap"))
            .context("the block map has no <BlockMap>")?;
        let mut ranges = Vec::new();
        for r in map.children().filter(|n| n.has_tag_name("Range")) {
            let span = r.text().unwrap_or("").trim();
            let (a, b) = span.split_once('-').unwrap_or((span, span));
            let first: u64 = a.trim().parse().with_context(|| format!("range {span:?}"))?;
            let last: u64 = b.trim().parse().with_context(|| format!("range {span:?}"))?;
            if last < first || first * block_size >= image_size {
                bail!("range {span:?} is outside the image");
            }
            ranges.push(Range {
                first,
                last,
                sha256: r.attribute("chksum").unwrap_or("").to_string(),
            });
        }
        Ok(Bmap {
            image_size,
            block_size,
            ranges,
        })
    }
}

/// Maps a sparse file: its data ranges (by SEEK_DATA/SEEK_HOLE), in blocks,
/// with each range's SHA-256. Also returns the SHA-256 of the whole file.
pub fn map_file(path: &Path, progress: impl FnMut(u64, u64)) -> Result<(Bmap, String)> {
    let (map, whole) = map_inner(path, None, progress, true)?;
    Ok((map, whole.unwrap_or_default()))
}

/// [`map_file`] without the whole file's digest (which hashes the holes as
/// zeros too: for a 4 GiB image with 1.5 GiB of data, most of the work).
pub fn map_ranges(path: &Path, progress: impl FnMut(u64, u64)) -> Result<Bmap> {
    Ok(map_inner(path, None, progress, false)?.0)
}

/// A region of a file that holds another, already mapped file byte for byte
/// (the USB installer's payload partition holds the appliance image).
#[derive(Debug, Clone, Copy)]
pub struct Splice<'a> {
    /// Where the region starts in the file: a multiple of [`BLOCK`].
    pub at: u64,
    /// The file the region holds.
    pub source: &'a Path,
    /// The source's map: its ranges (shifted) and their digests are reused.
    pub map: &'a Bmap,
}

/// [`map_file`] of a file whose region `splice.at..+splice.map.image_size`
/// holds `splice.source`: that region's ranges are the source's (shifted,
/// never merged with their neighbours), and the whole file's digest reads
/// them from the source. So the region is neither scanned nor hashed per
/// range in the file; the caller promises it holds exactly the source's
/// mapped ranges and zeros.
pub fn map_file_spliced(path: &Path, splice: Splice, progress: impl FnMut(u64, u64)) -> Result<(Bmap, String)> {
    let m = splice.map;
    if !splice.at.is_multiple_of(BLOCK) || m.block_size != BLOCK || !m.image_size.is_multiple_of(BLOCK) {
        bail!(
            "cannot splice {} into {} at byte {}: the offset, its block size ({}) and its size ({}) must be \
             multiples of {BLOCK}",
            splice.source.display(),
            path.display(),
            splice.at,
            m.block_size,
            m.image_size
        );
    }
    let (map, whole) = map_inner(path, Some(splice), progress, true)?;
    Ok((map, whole.unwrap_or_default()))
}

/// A run of blocks to map: read and hashed in the file, or taken from the
/// splice's source (block numbers in the file, the source's digest).
enum Span {
    Own(u64, u64),
    Spliced(u64, u64, String),
}

/// The file's data runs in blocks between bytes `from` and `to`, merged
/// where they touch.
fn data_spans(f: &File, path: &Path, from: u64, to: u64, spans: &mut Vec<Span>) -> Result<()> {
    let fd = rustix::fd::AsFd::as_fd(f);
    let mut pos = from;
    while pos < to {
        let data = match rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) if d < to => d,
            Ok(_) | Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e).with_context(|| format!("SEEK_DATA in {}", path.display())),
        };
        let hole = rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(data))
            .with_context(|| format!("SEEK_HOLE in {}", path.display()))?
            .min(to);
        let first = data / BLOCK;
        let last = (hole - 1) / BLOCK;
        match spans.last_mut() {
            Some(Span::Own(_, l)) if *l + 1 >= first => *l = (*l).max(last),
            _ => spans.push(Span::Own(first, last)),
        }
        pos = hole;
    }
    Ok(())
}

fn map_inner(
    path: &Path,
    splice: Option<Splice>,
    mut progress: impl FnMut(u64, u64),
    want_whole: bool,
) -> Result<(Bmap, Option<String>)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = f.metadata()?.len();
    let mut spans: Vec<Span> = Vec::new();
    let mut source = None;
    match splice {
        None => data_spans(&f, path, 0, size, &mut spans)?,
        Some(s) => {
            let end = s.at + s.map.image_size;
            if end > size {
                bail!(
                    "{} ({} bytes) cannot hold {} at byte {}",
                    path.display(),
                    size,
                    s.source.display(),
                    s.at
                );
            }
            data_spans(&f, path, 0, s.at, &mut spans)?;
            let shift = s.at / BLOCK;
            for r in &s.map.ranges {
                spans.push(Span::Spliced(r.first + shift, r.last + shift, r.sha256.clone()));
            }
            data_spans(&f, path, end, size, &mut spans)?;
            source = Some((
                File::open(s.source).with_context(|| format!("opening {}", s.source.display()))?,
                s.at,
            ));
        }
    }
    // Two digests of the same bytes on two cores: the whole file's (holes
    // as zeros) on a thread of its own, each range's here. Each chunk is
    // read once and shared.
    enum Part {
        Data(std::sync::Arc<Vec<u8>>),
        Zeros(u64),
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Part>(8);
    std::thread::scope(|scope| -> Result<(Bmap, Option<String>)> {
        let whole = scope.spawn(move || {
            let mut whole = Sha256::new();
            let zeros = vec![0u8; 1 << 20];
            for part in rx {
                match part {
                    Part::Data(b) => whole.update(b.as_slice()),
                    Part::Zeros(mut n) => {
                        while n > 0 {
                            let k = n.min(zeros.len() as u64) as usize;
                            whole.update(&zeros[..k]);
                            n -= k as u64;
                        }
                    }
                }
            }
            hex::encode(whole.finalize())
        });
        let mut ranges = Vec::new();
        let mut at = 0u64;
        let sent = |p: Part| {
            if !want_whole {
                return Ok(());
            }
            tx.send(p)
                .map_err(|_| anyhow::anyhow!("the whole-file digest thread stopped"))
        };
        for span in spans {
            let (first, last, reused) = match span {
                Span::Own(a, b) => (a, b, None),
                Span::Spliced(a, b, sha) => (a, b, Some(sha)),
            };
            let start = first * BLOCK;
            let end = ((last + 1) * BLOCK).min(size);
            if at < start {
                sent(Part::Zeros(start - at))?;
            }
            // A spliced range is read from the source only for the whole
            // digest (not at all without one); its own digest is the source's.
            let (file, from, name) = match (&reused, &mut source) {
                (Some(_), Some((src, shift))) => (src, start - *shift, splice.map(|s| s.source).unwrap_or(path)),
                _ => (&mut f, start, path),
            };
            let mut h = Sha256::new();
            if reused.is_none() || want_whole {
                file.seek(SeekFrom::Start(from))?;
                let mut left = end - start;
                while left > 0 {
                    let n = left.min(1 << 20) as usize;
                    let mut buf = vec![0u8; n];
                    file.read_exact(&mut buf)
                        .with_context(|| format!("reading {}", name.display()))?;
                    if reused.is_none() {
                        h.update(&buf);
                    }
                    sent(Part::Data(std::sync::Arc::new(buf)))?;
                    left -= n as u64;
                }
            }
            at = end;
            progress(at, size);
            ranges.push(Range {
                first,
                last,
                sha256: reused.unwrap_or_else(|| hex::encode(h.finalize())),
            });
        }
        if at < size {
            sent(Part::Zeros(size - at))?;
        }
        drop(tx);
        let whole = whole
            .join()
            .map_err(|_| anyhow::anyhow!("the whole-file digest thread panicked"))?;
        let whole = want_whole.then_some(whole);
        progress(size, size);
        Ok((
            Bmap {
                image_size: size,
                block_size: BLOCK,
                ranges,
            },
            whole,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_a_sparse_file_and_round_trips_through_xml() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        let mut f = File::create(&p).unwrap();
        f.set_len(10 * BLOCK * 16).unwrap();
        f.write_all(b"boot").unwrap();
        f.seek(SeekFrom::Start(64 * BLOCK + 10)).unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        drop(f);
        let (map, whole) = map_file(&p, |_, _| {}).unwrap();
        assert_eq!(
            map_ranges(&p, |_, _| {}).unwrap(),
            map,
            "the same map without the whole digest"
        );
        assert_eq!(whole, crate::digest::sha256_file(&p).unwrap());
        assert_eq!(map.image_size, 160 * BLOCK);
        // Where the filesystem allocates depends on it; the data blocks must be covered.
        assert!(map.ranges.iter().any(|r| r.first == 0));
        assert!(map.ranges.iter().any(|r| r.first <= 64 && r.last >= 65));
        assert!(map.mapped_blocks() < 160, "holes are not mapped");
        let xml = map.to_xml();
        assert_eq!(Bmap::parse(&xml).unwrap(), map);
        let tampered = xml.replacen("<Range chksum=\"", "<Range chksum=\"f", 1);
        assert!(
            Bmap::parse(&tampered)
                .unwrap_err()
                .to_string()
                .contains("the block map is corrupt")
        );
    }

    /// The bytes of `blocks` in `p`, hashed.
    fn digest_of(p: &Path, r: &Range, size: u64) -> String {
        let mut f = File::open(p).unwrap();
        let start = r.first * BLOCK;
        let mut buf = vec![0u8; (((r.last + 1) * BLOCK).min(size) - start) as usize];
        f.seek(SeekFrom::Start(start)).unwrap();
        f.read_exact(&mut buf).unwrap();
        hex::encode(Sha256::digest(&buf))
    }

    #[test]
    fn a_spliced_region_reuses_the_sources_map_and_the_whole_digest_is_the_files() {
        let d = tempfile::tempdir().unwrap();
        let write_at = |f: &mut File, at: u64, b: &[u8]| {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(b).unwrap();
        };
        // The source: data at its start, in its middle and in its last block.
        let src = d.path().join("src");
        let mut s = File::create(&src).unwrap();
        s.set_len(48 * BLOCK).unwrap();
        write_at(&mut s, 0, b"source head");
        write_at(&mut s, 20 * BLOCK + 7, &[3u8; 9000]);
        write_at(&mut s, 47 * BLOCK + 100, b"source tail");
        drop(s);
        let src_map = map_ranges(&src, |_, _| {}).unwrap();
        // The file: its own data just before and after the region, which
        // holds the source from block 32.
        let p = d.path().join("img");
        let mut f = File::create(&p).unwrap();
        f.set_len(100 * BLOCK + 512).unwrap();
        write_at(&mut f, 0, b"own head");
        write_at(&mut f, 31 * BLOCK, &[5u8; BLOCK as usize]);
        write_at(&mut f, 80 * BLOCK, &[6u8; 10]);
        write_at(&mut f, 100 * BLOCK, &[7u8; 512]);
        let mut copy = vec![0u8; (48 * BLOCK) as usize];
        File::open(&src).unwrap().read_exact(&mut copy).unwrap();
        for r in &src_map.ranges {
            let (a, b) = (r.offset(BLOCK) as usize, (r.offset(BLOCK) + r.len(BLOCK)) as usize);
            write_at(&mut f, 32 * BLOCK + a as u64, &copy[a..b]);
        }
        drop(f);
        let splice = Splice {
            at: 32 * BLOCK,
            source: &src,
            map: &src_map,
        };
        let (map, whole) = map_file_spliced(&p, splice, |_, _| {}).unwrap();
        assert_eq!(whole, crate::digest::sha256_file(&p).unwrap());
        let size = 100 * BLOCK + 512;
        assert_eq!(map.image_size, size);
        for r in &map.ranges {
            assert_eq!(r.sha256, digest_of(&p, r, size), "range {}-{}", r.first, r.last);
        }
        // The region's ranges are the source's, shifted and kept apart from
        // the file's own block 31 that touches them.
        for r in &src_map.ranges {
            assert!(
                map.ranges
                    .iter()
                    .any(|m| m.first == r.first + 32 && m.last == r.last + 32 && m.sha256 == r.sha256)
            );
        }
        assert!(map.ranges.iter().any(|m| m.last == 31));
        // Every block that holds data is mapped, as a scan of the file says.
        let (scanned, scanned_whole) = map_file(&p, |_, _| {}).unwrap();
        assert_eq!(scanned_whole, whole);
        let mapped = |m: &Bmap, b: u64| m.ranges.iter().any(|r| r.first <= b && b <= r.last);
        for r in &scanned.ranges {
            for b in r.first..=r.last {
                let mut one = vec![0u8; BLOCK as usize];
                let mut f = File::open(&p).unwrap();
                f.seek(SeekFrom::Start(b * BLOCK)).unwrap();
                let n = f.read(&mut one).unwrap();
                if one[..n].iter().any(|x| *x != 0) {
                    assert!(mapped(&map, b), "block {b} holds data and is not mapped");
                }
            }
        }
        // The map still reads back from its XML.
        assert_eq!(Bmap::parse(&map.to_xml()).unwrap(), map);
        // A region that does not start on a block, or does not fit, is refused.
        let bad = Splice {
            at: 32 * BLOCK + 1,
            ..splice
        };
        let e = map_file_spliced(&p, bad, |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("must be multiples of 4096"), "{e}");
        let bad = Splice {
            at: 60 * BLOCK,
            ..splice
        };
        let e = map_file_spliced(&p, bad, |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("cannot hold"), "{e}");
    }
}
