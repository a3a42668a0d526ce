//! Host requirements: which tools and files each command needs, which
//! Debian package provides them, and the exact command to install what is
//! missing.

use std::path::Path;

use serde::Serialize;

/// What a requirement is needed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// `builder build`.
    Build,
    /// `builder boot`.
    Boot,
    /// `builder boot --guest-forward`.
    GuestForward,
    /// Optional output formats and checks.
    Extra,
}

/// One host requirement.
#[derive(Debug, Clone, Serialize)]
pub struct Requirement {
    /// A program on PATH, or an absolute file path.
    pub what: &'static str,
    /// Debian package that provides it.
    pub package: &'static str,
    /// Why we need it.
    pub why: &'static str,
    /// Which command needs it.
    pub need: Need,
}

/// Everything builder may use.
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        what: "mmdebstrap",
        package: "mmdebstrap",
        why: "builds the root filesystem from Debian's archive",
        need: Need::Build,
    },
    Requirement {
        what: "dockerd",
        package: "docker.io",
        why: "puts the stack's container images into the image's Docker store (a private daemon, no network)",
        need: Need::Build,
    },
    Requirement {
        what: "tar",
        package: "tar",
        why: "unpacks the cached root filesystem",
        need: Need::Build,
    },
    Requirement {
        what: "sfdisk",
        package: "fdisk",
        why: "writes the GPT partition table",
        need: Need::Build,
    },
    Requirement {
        what: "mkfs.ext4",
        package: "e2fsprogs",
        why: "makes the root filesystem from a directory",
        need: Need::Build,
    },
    Requirement {
        what: "debugfs",
        package: "e2fsprogs",
        why: "writes the payload's block map into the USB installer's root filesystem",
        need: Need::Build,
    },
    Requirement {
        what: "mkfs.vfat",
        package: "dosfstools",
        why: "makes the ESP and seed filesystems",
        need: Need::Build,
    },
    Requirement {
        what: "mcopy",
        package: "mtools",
        why: "copies files into FAT without mounting",
        need: Need::Build,
    },
    Requirement {
        what: "mmd",
        package: "mtools",
        why: "makes directories in FAT without mounting",
        need: Need::Build,
    },
    Requirement {
        what: "grub-mkimage",
        package: "grub-common",
        why: "makes GRUB's core images",
        need: Need::Build,
    },
    Requirement {
        what: "/usr/lib/grub/i386-pc/boot.img",
        package: "grub-pc-bin",
        why: "GRUB for legacy BIOS",
        need: Need::Build,
    },
    Requirement {
        what: "/usr/lib/grub/x86_64-efi/linux.mod",
        package: "grub-efi-amd64-bin",
        why: "GRUB for UEFI",
        need: Need::Build,
    },
    Requirement {
        what: "systemctl",
        package: "systemd",
        why: "enables units in the image (systemctl --root)",
        need: Need::Build,
    },
    Requirement {
        what: "systemd-sysusers",
        package: "systemd",
        why: "creates the web app's user in the image (systemd-sysusers --root)",
        need: Need::Build,
    },
    Requirement {
        what: "qemu-system-x86_64",
        package: "qemu-system-x86",
        why: "boots images (builder boot)",
        need: Need::Boot,
    },
    Requirement {
        what: "qemu-img",
        package: "qemu-utils",
        why: "copy-on-write overlays so booting never changes the image",
        need: Need::Boot,
    },
    Requirement {
        what: "/usr/share/OVMF/OVMF_CODE_4M.fd",
        package: "ovmf",
        why: "UEFI firmware for builder boot --firmware uefi",
        need: Need::Boot,
    },
    Requirement {
        what: "socat",
        package: "socat",
        why: "relays each connection of builder boot --guest-forward to this machine",
        need: Need::GuestForward,
    },
    Requirement {
        what: "zstd",
        package: "zstd",
        why: "the zst output format",
        need: Need::Extra,
    },
    Requirement {
        what: "sgdisk",
        package: "gdisk",
        why: "verifies partition tables (tests)",
        need: Need::Extra,
    },
    Requirement {
        what: "fsck.vfat",
        package: "dosfstools",
        why: "verifies FAT filesystems (tests)",
        need: Need::Extra,
    },
];

/// Whether a requirement is met on this host.
pub fn present(what: &str) -> bool {
    if what.starts_with('/') {
        return Path::new(what).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    // sbin directories hold mkfs.*; they are not always on a user's PATH.
    let extra = ["/usr/sbin", "/sbin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(std::path::PathBuf::from))
        .any(|d| is_executable(&d.join(what)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Requirements for `needs` that are missing.
pub fn missing(needs: &[Need]) -> Vec<&'static Requirement> {
    REQUIREMENTS
        .iter()
        .filter(|r| needs.contains(&r.need) && !present(r.what))
        .collect()
}

/// The apt-get command that installs `reqs`.
pub fn apt_command(reqs: &[&Requirement]) -> String {
    let mut pkgs: Vec<&str> = reqs.iter().map(|r| r.package).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    format!("apt-get install -y {}", pkgs.join(" "))
}

/// Fails with the install command when anything for `needs` is missing.
pub fn require(needs: &[Need]) -> anyhow::Result<()> {
    let miss = missing(needs);
    if miss.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = miss
        .iter()
        .map(|r| format!("  {} ({}: {})", r.what, r.package, r.why))
        .collect();
    anyhow::bail!(
        "missing host tools:\n{}\ninstall them with:\n  sudo {}",
        list.join("\n"),
        apt_command(&miss)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_command_dedups_and_sorts() {
        let reqs: Vec<&Requirement> = REQUIREMENTS
            .iter()
            .filter(|r| r.package == "mtools" || r.package == "fdisk")
            .collect();
        assert_eq!(apt_command(&reqs), "apt-get install -y fdisk mtools");
    }

    #[test]
    fn presence() {
        assert!(present("sh"));
        assert!(present("/bin/sh"));
        assert!(!present("no-such-tool-flypack"));
        assert!(!present("/no/such/file"));
    }
}
