#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The default image boots under SeaBIOS to GO, and a slow machine is
//! slower, never NO-GO for slowness: booted with one vCPU while stress-ng
//! keeps both host cores busy, it still reaches its verdict with every
//! service healthy. Nothing in firstboot is bounded by a clock that scales
//! with the hardware (issue 12). One boot serves both: each costs minutes
//! under emulation.

use std::process::{Child, Command, Stdio};

use flypack_e2e::*;

/// stress-ng on every host core, stopped (by pid) when dropped.
struct Stress(Child);

impl Stress {
    fn start(secs: u32) -> Stress {
        let child = Command::new("stress-ng")
            .args(["--cpu", "2", "--cpu-method", "matrixprod", "--quiet", "--timeout"])
            .arg(format!("{secs}s"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting stress-ng (apt-get install stress-ng; .ci/deps does)");
        Stress(child)
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        // stress-ng ends its workers when it gets SIGTERM; kill() is SIGKILL
        // of the parent only, so send SIGTERM to it first.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_default_image_boots_under_bios_to_go_even_starved() {
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let stress = Stress::start(1800);
    let b = boot_within(
        &img.path,
        1800,
        &["--firmware", "bios", "--cpus", "1"],
        &dir.path().join("console.log"),
    );
    drop(stress);
    assert_default_go(&b, "BIOS, one vCPU, host cores busy");
    // GRUB ran, and not through UEFI firmware (OVMF announces what it boots).
    assert!(b.console.contains("GNU GRUB"), "no GRUB banner on the BIOS console");
    assert!(!b.console.contains("BdsDxe: starting"), "booted through UEFI?");
    // Booting never changes the image (QEMU ran on a copy-on-write overlay).
    let sums = &img
        .manifest
        .outputs
        .iter()
        .find(|o| o.name == "flypack.img")
        .unwrap()
        .sha256;
    let (ok, out) = sh(Command::new("sha256sum").arg(&img.path));
    assert!(
        ok && out.starts_with(sums.as_str()),
        "the image changed while booting: {out} vs {sums}"
    );
    let status = b.status.as_ref().unwrap();
    let stack = status.stages.iter().find(|s| s.name == "stack").unwrap();
    eprintln!(
        "starved boot: verdict after {:.1} s; stack stage {:.1} s ({} attempt(s))",
        b.seconds.unwrap_or(0.0),
        stack.duration_ms.unwrap_or(0) as f64 / 1000.0,
        stack.attempts
    );
    // Why an earlier attempt failed, from firstboot's errors on the console.
    let failures: Vec<&str> = b
        .console
        .lines()
        .filter(|l| l.contains("failed") || l.contains("giving up"))
        .collect();
    // The stack came up on its first attempt: no stage failed for slowness.
    assert_eq!(
        stack.attempts,
        1,
        "{stack:?}\nconsole lines that say why:\n{}",
        failures.join("\n")
    );
    // (config is resolved again by every run, the early one and the main one.)
    assert!(
        status
            .stages
            .iter()
            .filter(|s| s.name != "config")
            .all(|s| s.attempts <= 1),
        "{:?}\nconsole lines that say why:\n{}",
        status.stages,
        failures.join("\n")
    );
}
