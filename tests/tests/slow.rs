#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The default image boots under SeaBIOS to GO, and a slow machine is
//! slower, never NO-GO for slowness: booted with one vCPU while both host
//! cores are busy with other work, it still reaches its verdict with every
//! service healthy. Nothing in firstboot is bounded by a clock that scales
//! with the hardware (issue 12). One boot serves both: each costs minutes
//! under emulation.
//!
//! The work that keeps the host busy is mostly the other end-to-end tests:
//! this test runs beside them (its own nextest group, `.config/nextest.toml`)
//! rather than after them behind stress-ng, whose burnt CPU time CI no
//! longer waits for (a fresh-clone run went from 3314 s to 3146 s, with more
//! checks elsewhere). Whenever the other tests leave a core to the guest,
//! stress-ng tops the load up, so the guest never has fewer than two busy
//! threads beside its vCPU, as when stress-ng alone kept both cores busy.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flypack_e2e::*;

/// Threads runnable on the host right now (`procs_running` of /proc/stat).
fn runnable() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("procs_running "))
        .and_then(|n| n.trim().parse().ok())
        .expect("procs_running in /proc/stat")
}

/// What the starver saw, for the record.
#[derive(Debug, Default)]
struct Starved {
    seconds: u32,
    topped_up: u32,
    /// Sum over the seconds of the other work's runnable threads.
    others: f64,
}

/// Keeps at least two busy threads beside the guest's vCPU: every second it
/// counts the runnable threads that are neither its own (the sampler, the
/// guest's vCPU, stress-ng's workers) and runs stress-ng's two workers while
/// fewer than two are left, stopping them (SIGSTOP to their process group)
/// while the other tests keep the cores busy.
struct Starver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Starved>>,
}

impl Starver {
    fn start(secs: u32) -> Starver {
        let mut stress = Command::new("stress-ng")
            .args(["--cpu", "2", "--cpu-method", "matrixprod", "--quiet", "--timeout"])
            .arg(format!("{secs}s"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("starting stress-ng (apt-get install stress-ng; .ci/deps does)");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let group = format!("-{}", stress.id());
            let signal = |sig: &str| {
                let _ = Command::new("kill").args([sig, "--", &group]).status();
            };
            let mut running = true;
            let mut seen = Starved::default();
            while !flag.load(Ordering::Relaxed) {
                let mut sum = 0.0;
                for _ in 0..10 {
                    std::thread::sleep(Duration::from_millis(100));
                    sum += runnable();
                }
                // Less this sampler, the guest's vCPU and stress-ng's workers.
                let others = (sum / 10.0 - 2.0 - if running { 2.0 } else { 0.0 }).max(0.0);
                seen.seconds += 1;
                seen.others += others;
                if running {
                    seen.topped_up += 1;
                }
                if running && others >= 2.0 {
                    signal("-STOP");
                    running = false;
                } else if !running && others < 1.5 {
                    signal("-CONT");
                    running = true;
                }
            }
            // stress-ng ends its workers on SIGTERM (a stopped group is
            // continued first); kill() would be SIGKILL of the parent only.
            signal("-CONT");
            let _ = Command::new("kill").arg(stress.id().to_string()).status();
            let _ = stress.wait();
            seen
        });
        Starver {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Starved {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Starver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_default_image_boots_under_bios_to_go_even_starved() {
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let starver = Starver::start(1800);
    let b = boot_within(
        &img.path,
        1800,
        &["--firmware", "bios", "--cpus", "1"],
        &dir.path().join("console.log"),
    );
    let starved = starver.finish();
    eprintln!(
        "starved boot: {} s; beside the guest, other work kept {:.1} threads runnable on average; \
         stress-ng topped up for {} s",
        starved.seconds,
        starved.others / f64::from(starved.seconds.max(1)),
        starved.topped_up
    );
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
