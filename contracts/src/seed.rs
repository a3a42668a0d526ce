//! The seed partition: a small FAT filesystem (label FLYPACKSEED) holding
//! `unit.toml` and/or `fleet.toml`, read by firstboot and written by
//! `builder customize`, without mounting (the fatfs crate works on the bytes).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use fscommon::{BufStream, StreamSlice};

/// The unit config on the seed.
pub const UNIT_FILE: &str = "unit.toml";
/// The fleet inventory on the seed.
pub const FLEET_FILE: &str = "fleet.toml";
/// The unit part of the fleet's backup key on the seed (`builder customize
/// --backup-key`); it wins over the one in the image.
pub const BACKUP_KEY_FILE: &str = "backup-key.toml";
/// The password the unit logs in to the central with (`builder customize
/// --central-password`); the user name is the unit config's `[central]
/// flypack`.
pub const CENTRAL_PASSWORD_FILE: &str = "central-password";
/// The fleet CA certificate the unit's web app chains to (`builder
/// customize --fleet-ca`); with the two below.
pub const TLS_CA_FILE: &str = "tls-ca.crt";
/// The unit certificate the fleet CA signed for this unit's names.
pub const TLS_CERT_FILE: &str = "tls-unit.crt";
/// The unit certificate's key.
pub const TLS_KEY_FILE: &str = "tls-unit.key";
/// The TLS files, all three or none.
pub const TLS_FILES: [&str; 3] = [TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE];

/// Finds the seed partition (offset, length) of a Flypack image or disk,
/// from its partition table (`sfdisk --json`).
pub fn seed_partition(image: &Path) -> Result<(u64, u64)> {
    use crate::layout::{NAME_SEED, PART_SEED, SECTOR};
    let t = crate::blockdev::read_table(image)?;
    let Some(p) = t.partitions.get(PART_SEED as usize - 1) else {
        bail!(
            "{} is not a Flypack image: it has no partition {PART_SEED}",
            image.display()
        );
    };
    if p.name.as_deref() != Some(NAME_SEED) {
        bail!(
            "{} is not a Flypack image: partition {PART_SEED} is {:?}, expected {NAME_SEED:?}",
            image.display(),
            p.name
        );
    }
    Ok((p.start * SECTOR, p.size * SECTOR))
}

/// What a seed holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedFiles {
    /// `unit.toml`.
    pub unit: Option<String>,
    /// `fleet.toml`.
    pub fleet: Option<String>,
    /// `backup-key.toml`.
    pub backup_key: Option<String>,
    /// `central-password` (secret; not in `Debug`'s output).
    pub central_password: Option<Secret>,
    /// `tls-ca.crt`, `tls-unit.crt`, `tls-unit.key` (PEM), when all three are there.
    pub tls: Option<SeedTls>,
    /// Every file name at the top level.
    pub names: Vec<String>,
    /// Volume label.
    pub label: String,
}

/// A secret read from the seed, kept out of logs and debug output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a central password is refused, if it is: it is written to a file
/// vmagent reads whole, so one line of printable characters, 12 to 256.
pub fn central_password_problem(p: &str) -> Option<String> {
    let n = p.chars().count();
    if !(12..=256).contains(&n) {
        return Some(format!("the central password is {n} characters: use 12 to 256"));
    }
    if p.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some(
            "the central password holds a space, a line break or a control character: use printable characters only"
                .into(),
        );
    }
    None
}

/// The web app's TLS files a fleet CA signed (PEM text, unchecked here:
/// firstboot checks them against the unit config before using them).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SeedTls {
    /// The fleet CA certificate.
    pub ca: String,
    /// The unit certificate (chain).
    pub cert: String,
    /// The unit key.
    pub key: String,
}

impl std::fmt::Debug for SeedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedTls").field("ca", &self.ca).finish_non_exhaustive()
    }
}

/// A read-only file for fatfs (which wants Write in its type).
struct ReadOnly(File);

impl Read for ReadOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl Seek for ReadOnly {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}
impl Write for ReadOnly {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the seed is read only here",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn find<'a, T: fatfs::ReadWriteSeek>(
    root: &fatfs::Dir<'a, T>,
    want: &str,
) -> io::Result<Option<fatfs::DirEntry<'a, T>>> {
    for e in root.iter() {
        let e = e?;
        if e.is_file() && e.file_name().eq_ignore_ascii_case(want) {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// The largest seed file read (a unit config is a few KiB; the seed is
/// written by whoever holds the disk, so nothing is read without a bound).
pub const MAX_FILE: u64 = 1 << 20;

/// Reads at most `limit` bytes of `r`; None when there is more (input from
/// whoever holds the disk or the laptop is never read without a bound).
pub fn read_at_most(r: impl Read, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut s = Vec::new();
    r.take(limit + 1).read_to_end(&mut s)?;
    Ok((s.len() as u64 <= limit).then_some(s))
}

/// A password file's one line: an editor's (or `echo`'s) final newline,
/// `\n` or `\r\n`, is not part of it.
pub fn password_line(text: &str) -> &str {
    text.strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text)
}

fn read_text<T: fatfs::ReadWriteSeek>(e: fatfs::DirEntry<'_, T>) -> Result<String> {
    let Some(s) =
        read_at_most(e.to_file(), MAX_FILE).with_context(|| format!("reading {} on the seed", e.file_name()))?
    else {
        bail!(
            "{} on the seed is larger than {} KiB: it cannot be a Flypack file",
            e.file_name(),
            MAX_FILE >> 10
        );
    };
    String::from_utf8(s).with_context(|| format!("{} on the seed is not UTF-8 text: save it as UTF-8", e.file_name()))
}

/// Reads the seed FAT filesystem at `offset..offset+len` of `path` (a
/// partition device with offset 0, or a whole image).
pub fn read(path: &Path, offset: u64, len: u64) -> Result<SeedFiles> {
    let f = File::open(path).with_context(|| format!("opening seed {}", path.display()))?;
    let slice = StreamSlice::new(ReadOnly(f), offset, offset + len).context("seed partition bounds")?;
    let fs = fatfs::FileSystem::new(BufStream::new(slice), fatfs::FsOptions::new())
        .with_context(|| format!("{} holds no FAT filesystem at offset {offset}", path.display()))?;
    let root = fs.root_dir();
    let mut out = SeedFiles {
        label: fs.volume_label().trim().to_string(),
        ..Default::default()
    };
    for e in root.iter() {
        let e = e.context("listing the seed")?;
        out.names.push(e.file_name());
    }
    for name in &out.names {
        let l = name.to_ascii_lowercase();
        for want in [UNIT_FILE, FLEET_FILE] {
            if l != want && l.starts_with(want) && (l.ends_with(".txt") || l.ends_with(".rtf")) {
                bail!("the seed has {name:?}, not {want}: the editor added an extension; rename it to {want}");
            }
        }
    }
    if let Some(e) = find(&root, UNIT_FILE)? {
        out.unit = Some(read_text(e)?);
    }
    if let Some(e) = find(&root, FLEET_FILE)? {
        out.fleet = Some(read_text(e)?);
    }
    if let Some(e) = find(&root, BACKUP_KEY_FILE)? {
        out.backup_key = Some(read_text(e)?);
    }
    if let Some(e) = find(&root, CENTRAL_PASSWORD_FILE)? {
        out.central_password = Some(Secret(password_line(&read_text(e)?).to_string()));
    }
    let mut tls = Vec::new();
    for name in TLS_FILES {
        if let Some(e) = find(&root, name)? {
            tls.push(read_text(e)?);
        }
    }
    match tls.len() {
        0 => {}
        3 => {
            let key = tls.pop().expect("three");
            let cert = tls.pop().expect("three");
            let ca = tls.pop().expect("three");
            out.tls = Some(SeedTls { ca, cert, key });
        }
        _ => bail!(
            "the seed has only some of {}: write all three with `builder customize IMAGE --unit FILE --fleet-ca CA`, \
             or remove them",
            TLS_FILES.join(", ")
        ),
    }
    Ok(out)
}

/// Reads one top-level text file of the seed, if it is there.
pub fn read_file(path: &Path, offset: u64, len: u64, name: &str) -> Result<Option<String>> {
    let f = File::open(path).with_context(|| format!("opening seed {}", path.display()))?;
    let slice = StreamSlice::new(ReadOnly(f), offset, offset + len).context("seed partition bounds")?;
    let fs = fatfs::FileSystem::new(BufStream::new(slice), fatfs::FsOptions::new())
        .with_context(|| format!("{} holds no FAT filesystem at offset {offset}", path.display()))?;
    match find(&fs.root_dir(), name)? {
        Some(e) => read_text(e).map(Some),
        None => Ok(None),
    }
}

/// Writes files into the seed FAT filesystem at `offset..offset+len` of the
/// image (replacing files of the same name, any case) and removes `remove`.
pub fn write(image: &Path, offset: u64, len: u64, files: &[(&str, &[u8])], remove: &[&str]) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {} for writing", image.display()))?;
    {
        let slice = StreamSlice::new(&f, offset, offset + len).context("seed partition bounds")?;
        let fs = fatfs::FileSystem::new(BufStream::new(slice), fatfs::FsOptions::new())
            .with_context(|| format!("{} holds no FAT seed filesystem at offset {offset}", image.display()))?;
        {
            let root = fs.root_dir();
            for name in files.iter().map(|(n, _)| *n).chain(remove.iter().copied()) {
                while let Some(e) = find(&root, name)? {
                    root.remove(&e.file_name())
                        .with_context(|| format!("removing {} from the seed", e.file_name()))?;
                }
            }
            for (name, data) in files {
                let mut out = root
                    .create_file(name)
                    .with_context(|| format!("creating {name} on the seed"))?;
                out.truncate()?;
                out.write_all(data)
                    .with_context(|| format!("writing {name} on the seed (is the seed partition full?)"))?;
                out.flush()?;
            }
        }
        fs.unmount().context("closing the seed filesystem")?;
    }
    f.sync_all().context("syncing the image")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16 MiB FAT16 filesystem at 1 MiB into a file, made by mkfs.vfat.
    fn image() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(20 << 20).unwrap();
        let st = std::process::Command::new("mkfs.vfat")
            .args(["-F", "16", "-n", "FLYPACKSEED", "--offset=2048"])
            .arg(f.path())
            .arg("16384")
            .output()
            .expect("mkfs.vfat (dosfstools) is needed for this test");
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        f
    }

    #[test]
    fn bounded_reads_and_a_password_files_line() {
        assert_eq!(read_at_most(&b"abcd"[..], 4).unwrap(), Some(b"abcd".to_vec()));
        assert_eq!(read_at_most(&b"abcde"[..], 4).unwrap(), None);
        assert_eq!(password_line("secret-0123\n"), "secret-0123");
        assert_eq!(password_line("secret-0123\r\n"), "secret-0123");
        assert_eq!(password_line("secret-0123"), "secret-0123");
        assert_eq!(password_line("a\n\n"), "a\n", "one final newline only");
    }

    #[test]
    fn write_then_read_back() {
        let img = image();
        let (off, len) = (1 << 20, 16 << 20);
        let empty = read(img.path(), off, len).unwrap();
        assert_eq!((empty.unit, empty.label.as_str()), (None, "FLYPACKSEED"));
        write(img.path(), off, len, &[(UNIT_FILE, b"version = 1\n")], &[]).unwrap();
        write(
            img.path(),
            off,
            len,
            &[(UNIT_FILE, b"version = 1\nhostname = \"a\"\n"), (FLEET_FILE, b"f")],
            &[],
        )
        .unwrap();
        let s = read(img.path(), off, len).unwrap();
        assert_eq!(s.unit.as_deref(), Some("version = 1\nhostname = \"a\"\n"));
        assert_eq!(s.fleet.as_deref(), Some("f"));
        write(img.path(), off, len, &[], &[FLEET_FILE]).unwrap();
        assert_eq!(read(img.path(), off, len).unwrap().fleet, None);
        // What we wrote is a clean FAT filesystem for other tools too.
        let part = tempfile::NamedTempFile::new().unwrap();
        let bytes = std::fs::read(img.path()).unwrap();
        std::fs::write(part.path(), &bytes[off as usize..(off + len) as usize]).unwrap();
        let o = std::process::Command::new("fsck.vfat")
            .arg("-n")
            .arg(part.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        let o = std::process::Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(part.path())
            .arg("::unit.toml")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "version = 1\nhostname = \"a\"\n");
    }

    #[test]
    fn names_match_case_insensitively_and_txt_is_explained() {
        let img = image();
        let (off, len) = (1 << 20, 16 << 20);
        write(img.path(), off, len, &[("UNIT.TOML", b"x")], &[]).unwrap();
        assert_eq!(read(img.path(), off, len).unwrap().unit.as_deref(), Some("x"));
        write(img.path(), off, len, &[("unit.toml.txt", b"x")], &[UNIT_FILE]).unwrap();
        let e = read(img.path(), off, len).unwrap_err().to_string();
        assert!(e.contains("rename it to unit.toml"), "{e}");
    }

    #[test]
    fn tls_files_come_all_three_or_are_refused() {
        let img = image();
        let (off, len) = (1 << 20, 16 << 20);
        write(
            img.path(),
            off,
            len,
            &[(TLS_CA_FILE, b"ca"), (TLS_CERT_FILE, b"crt")],
            &[],
        )
        .unwrap();
        let e = read(img.path(), off, len).unwrap_err().to_string();
        assert!(e.contains("only some of tls-ca.crt") && e.contains("--fleet-ca"), "{e}");
        write(img.path(), off, len, &[(TLS_KEY_FILE, b"key")], &[]).unwrap();
        let t = read(img.path(), off, len).unwrap().tls.unwrap();
        assert_eq!((t.ca.as_str(), t.cert.as_str(), t.key.as_str()), ("ca", "crt", "key"));
        // The key is never printed.
        assert!(!format!("{t:?}").contains("key\""), "{t:?}");
    }

    #[test]
    fn an_oversized_file_is_refused_unread() {
        let img = image();
        let (off, len) = (1 << 20, 16 << 20);
        let big = vec![b'#'; (MAX_FILE + 1) as usize];
        write(img.path(), off, len, &[(UNIT_FILE, &big)], &[]).unwrap();
        let e = read(img.path(), off, len).unwrap_err().to_string();
        assert!(e.contains("larger than 1024 KiB"), "{e}");
    }

    #[test]
    fn not_fat_is_a_clear_error() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        let e = format!("{:#}", read(f.path(), 0, 1 << 20).unwrap_err());
        assert!(e.contains("holds no FAT filesystem"), "{e}");
    }
}
