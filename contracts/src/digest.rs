//! SHA-256 helpers. Digests are lower-case hex strings everywhere.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// SHA-256 of a byte string, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of a file's content, as hex. The holes of a sparse file are
/// hashed as the zeros they read as, without reading them: reading a hole
/// fills the page cache with zeros (2.5 GiB for a default image), which on
/// the machines measured cost more than the hashing.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let regular = f.metadata().is_ok_and(|m| m.is_file());
    let mut pos = 0u64;
    if regular {
        let size = f
            .metadata()
            .with_context(|| format!("inspecting {}", path.display()))?
            .len();
        let zeros = vec![0u8; 1 << 20];
        while pos < size {
            let fd = rustix::fd::AsFd::as_fd(&f);
            let data = match rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(pos)) {
                Ok(d) => d.min(size),
                Err(rustix::io::Errno::NXIO) => size,
                // No SEEK_DATA here: read it all from where we are.
                Err(_) => break,
            };
            let mut hole = data.saturating_sub(pos);
            while hole > 0 {
                let k = hole.min(zeros.len() as u64) as usize;
                h.update(&zeros[..k]);
                hole -= k as u64;
            }
            pos = data;
            if pos >= size {
                break;
            }
            let end = rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(pos))
                .with_context(|| format!("SEEK_HOLE in {}", path.display()))?
                .min(size);
            while pos < end {
                let want = usize::try_from(end - pos).unwrap_or(buf.len()).min(buf.len());
                let n = std::os::unix::fs::FileExt::read_at(&f, &mut buf[..want], pos)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    anyhow::bail!("{} ended at byte {pos} while it was hashed", path.display());
                }
                h.update(&buf[..n]);
                pos += n as u64;
            }
        }
        if pos >= size {
            return Ok(hex::encode(h.finalize()));
        }
    }
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(pos))
        .with_context(|| format!("seeking in {}", path.display()))?;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// An incremental digest over several labelled parts, for cache keys and
/// input digests: each part is length-prefixed so ("ab","c") != ("a","bc").
#[derive(Debug, Clone, Default)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one labelled part.
    pub fn part(&mut self, label: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let value = value.as_ref();
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    /// The hex digest.
    pub fn finish(&self) -> String {
        hex::encode(self.0.clone().finalize())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sparse_file_hashes_as_its_bytes() {
        use std::io::{Seek, SeekFrom, Write};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sparse.img");
        let mut f = File::create(&p).unwrap();
        // Data at the start, in the middle (not block aligned), and at the
        // very end; holes of several MiB between; a size that is no
        // multiple of a block.
        let size = (9 << 20) + 1234;
        f.set_len(size).unwrap();
        for (at, byte) in [(0u64, 1u8), ((3 << 20) + 17, 2), (size - 100, 3)] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&vec![byte; 5000.min((size - at) as usize)]).unwrap();
        }
        drop(f);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(&bytes));
        // All hole, and empty.
        let q = d.path().join("holes.img");
        File::create(&q).unwrap().set_len(3 << 20).unwrap();
        assert_eq!(sha256_file(&q).unwrap(), sha256_hex(&vec![0u8; 3 << 20]));
        let e = d.path().join("empty");
        File::create(&e).unwrap();
        assert_eq!(sha256_file(&e).unwrap(), sha256_hex(b""));
    }

    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"abc"));
    }

    #[test]
    fn key_parts_are_unambiguous() {
        let a = KeyHasher::new().part("x", "ab").part("y", "c").finish();
        let b = KeyHasher::new().part("x", "a").part("y", "bc").finish();
        assert_ne!(a, b);
        let c = KeyHasher::new().part("x", "ab").part("y", "c").finish();
        assert_eq!(a, c);
    }
}
