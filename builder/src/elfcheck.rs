//! Checks that a binary we put into the image will run there: x86-64 ELF,
//! and no glibc symbol version newer than the image's glibc.

use std::path::Path;

use anyhow::{Context, Result, bail};
use goblin::elf::Elf;

/// What we learnt about a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// Statically linked (no interpreter, no glibc needs).
    pub is_static: bool,
    /// The highest `GLIBC_x.y` it needs, as (x, y).
    pub glibc: Option<(u32, u32)>,
}

/// Reads an ELF file's glibc needs.
pub fn inspect(bytes: &[u8]) -> Result<ElfInfo> {
    let elf = Elf::parse(bytes).context("not an ELF executable")?;
    if elf.header.e_machine != goblin::elf::header::EM_X86_64 {
        bail!(
            "built for another architecture (ELF machine {}), expected x86-64",
            elf.header.e_machine
        );
    }
    let mut glibc: Option<(u32, u32)> = None;
    if let Some(verneed) = &elf.verneed {
        for need in verneed.iter() {
            for aux in need.iter() {
                let Some(name) = elf.dynstrtab.get_at(aux.vna_name) else {
                    continue;
                };
                if let Some(v) = parse_glibc_version(name) {
                    glibc = Some(glibc.map_or(v, |g| g.max(v)));
                }
            }
        }
    }
    Ok(ElfInfo {
        is_static: elf.interpreter.is_none(),
        glibc,
    })
}

fn parse_glibc_version(s: &str) -> Option<(u32, u32)> {
    let v = s.strip_prefix("GLIBC_")?;
    let mut it = v.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

/// The glibc (major, minor) of a Debian libc6 version like `2.36-9+deb12u14`.
pub fn debian_glibc(version: &str) -> Option<(u32, u32)> {
    let upstream = version.split('-').next()?;
    let upstream = upstream.split(':').next_back()?;
    parse_glibc_version(&format!("GLIBC_{upstream}"))
}

/// glibc of a Debian suite, for checks before the root filesystem exists.
pub fn suite_glibc(suite: &str) -> Option<(u32, u32)> {
    match suite {
        "bookworm" => Some((2, 36)),
        _ => None,
    }
}

/// Fails with a clear message when `path` would not run on `target` glibc.
pub fn check_runs_on(path: &Path, target: (u32, u32), what: &str) -> Result<ElfInfo> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {what} binary {}", path.display()))?;
    let info = inspect(&bytes).with_context(|| format!("{what} binary {}", path.display()))?;
    if let Some(need) = info.glibc
        && need > target
    {
        bail!(
            "{what} binary {} needs glibc {}.{} but the image has glibc {}.{}, so it would not start on the unit: \
                 build it on Debian 12 (or older), or for the x86_64-unknown-linux-musl target",
            path.display(),
            need.0,
            need.1,
            target.0,
            target.1
        );
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_glibc_version("GLIBC_2.34"), Some((2, 34)));
        assert_eq!(parse_glibc_version("GLIBC_2.2.5"), Some((2, 2)));
        assert_eq!(parse_glibc_version("GLIBC_PRIVATE"), None);
        assert_eq!(debian_glibc("2.36-9+deb12u14"), Some((2, 36)));
        assert_eq!(debian_glibc("2.41-6"), Some((2, 41)));
    }

    #[test]
    fn a_host_binary_is_inspected() {
        // The test binary itself: dynamically linked against the host glibc.
        let exe = std::env::current_exe().unwrap();
        let info = check_runs_on(&exe, (2, 36), "test").unwrap();
        assert!(!info.is_static);
        let (maj, min) = info.glibc.expect("links glibc");
        assert_eq!(maj, 2);
        assert!(min >= 2);
        // An impossibly old target glibc is refused with the fix in the message.
        let err = check_runs_on(&exe, (2, 0), "firstboot").unwrap_err().to_string();
        assert!(err.contains("needs glibc 2."), "{err}");
        assert!(err.contains("x86_64-unknown-linux-musl"), "{err}");
    }

    #[test]
    fn a_non_elf_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("script");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        let err = format!("{:#}", check_runs_on(&p, (2, 36), "firstboot").unwrap_err());
        assert!(err.contains("not an ELF executable"), "{err}");
    }
}
