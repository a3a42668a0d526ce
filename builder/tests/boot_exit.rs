#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `builder boot` exits with the codes its help promises: 125 when QEMU
//! cannot start (here: a qemu-system-x86_64 that cannot be executed), with
//! the reason.

use std::process::Command;

#[test]
fn qemu_that_cannot_start_is_exit_125() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(1 << 20).unwrap();
    // A PATH with qemu-img (the overlay is made first) and a QEMU that
    // cannot be executed.
    let bin = d.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let qemu_img = which("qemu-img");
    std::os::unix::fs::symlink(&qemu_img, bin.join("qemu-img")).unwrap();
    // Executable, but not a program the kernel can run (exec format error).
    let fake = bin.join("qemu-system-x86_64");
    std::fs::write(&fake, b"\x7fELF but not really").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_builder"))
        .args(["boot", "--quiet", "--expect-ready", "5", "--log"])
        .arg(d.path().join("console.log"))
        .arg(&img)
        .env("PATH", &bin)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    // The kernel refuses it (spawn fails) or a fallback shell does (exit 127):
    // either way QEMU did not start, and the user is told.
    assert!(
        err.contains("QEMU could not start") || err.contains("QEMU exited"),
        "{err}"
    );
}

fn which(p: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .unwrap_or_else(|| panic!("{p} is not installed (apt-get install qemu-utils)"))
}
