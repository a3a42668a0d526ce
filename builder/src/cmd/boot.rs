//! `builder boot`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::BootArgs;
use crate::progress::{Mode, Reporter};
use crate::qemu::{self, MediaNet, Outcome, Vm, VmConfig};

/// Exit code when the status line did not appear in time (like timeout(1)).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code when QEMU failed or exited before the status line.
pub const EXIT_QEMU: i32 = 125;

/// Boots an image.
pub fn run(args: &BootArgs, rep: &Reporter) -> Result<i32> {
    crate::host::require(&[crate::host::Need::Boot])?;
    if !args.guest_forward.is_empty() {
        crate::host::require(&[crate::host::Need::GuestForward])?;
    }
    let mut guest_ports: Vec<u16> = args.guest_forward.iter().map(|f| f.guest).collect();
    guest_ports.sort_unstable();
    if let Some(w) = guest_ports.windows(2).find(|w| w[0] == w[1]) {
        anyhow::bail!(
            "--guest-forward names guest port {} twice: give each service its own port on 10.0.2.100",
            w[0]
        );
    }
    let log = args.log.clone().unwrap_or_else(|| {
        let mut s = args.image.clone().into_os_string();
        s.push(format!(
            ".{}.console.log",
            match args.firmware {
                qemu::Firmware::Bios => "bios",
                qemu::Firmware::Uefi => "uefi",
            }
        ));
        PathBuf::from(s)
    });
    // Internal disks: created empty where missing; an installer with none
    // gets one blank disk that lives as long as the VM.
    let scratch = tempfile::Builder::new().prefix("flypack-disks-").tempdir()?;
    let mut disks = args.disk.clone();
    if args.installer && disks.is_empty() {
        disks.push(qemu::ExtraDisk {
            path: scratch.path().join("internal.raw"),
            serial: Some("FLYPACK-DISK-0".into()),
        });
    }
    for d in &disks {
        if !d.path.exists() {
            let f = std::fs::File::create_new(&d.path)
                .with_context(|| format!("creating the disk {}", d.path.display()))?;
            f.set_len(args.disk_gib << 30)?;
            rep.info(&format!("{}: a blank {} GiB disk", d.path.display(), args.disk_gib));
        }
    }
    let cfg = VmConfig {
        image: args.image.clone(),
        firmware: args.firmware,
        accel: args.accel,
        memory_mib: args.memory,
        cpus: args.cpus,
        // An installer stick keeps its size; a booted image gets a disk to grow into.
        disk_size: (!args.installer).then_some(args.disk_gib << 30),
        overlay: args.overlay.clone(),
        forwards: args.forward.clone(),
        guest_forwards: args.guest_forward.clone(),
        media: match (args.media_listen, args.media_connect, &args.media_tap) {
            (Some(p), _, _) => MediaNet::Listen(p),
            (None, Some(p), _) => MediaNet::Connect(p),
            (None, None, Some(t)) => MediaNet::Tap(t.clone()),
            (None, None, None) => MediaNet::Isolated,
        },
        nat: args.nat,
        mgmt_tap: args.mgmt_tap.clone(),
        console_log: log.clone(),
        usb_disks: args.usb.clone(),
        boot_usb: args.installer,
        disks,
    };
    let mut vm = match Vm::start(&cfg) {
        Ok(vm) => vm,
        // The exit code the help promises when QEMU itself fails to start.
        Err(e) if e.chain().any(|c| c.to_string() == qemu::QEMU_START_FAILED) => {
            eprintln!("error: {e:#}");
            return Ok(EXIT_QEMU);
        }
        Err(e) => return Err(e),
    };
    vm.until = args.until.clone();
    let echo_console = !args.quiet && rep.mode() != Mode::Json;
    rep.info(&format!(
        "booting {} ({:?}, {}), console log {}",
        args.image.display(),
        args.firmware,
        if vm.uses_kvm() {
            "KVM"
        } else {
            "TCG software emulation: 30-60 s to login"
        },
        log.display()
    ));
    for f in &args.forward {
        rep.info(&format!("127.0.0.1:{} -> guest port {}", f.host, f.guest));
        if f.guest == 22 {
            rep.info(&format!(
                "ssh -p {} <user>@127.0.0.1 (keys only: add yours to the profile or unit.toml)",
                f.host
            ));
        }
    }
    let mut echo = |t: &str| {
        if echo_console {
            qemu::echo_stdout(t);
        }
    };
    let timeout = args.expect_ready.map(Duration::from_secs);
    let outcome = vm.wait(timeout, &mut echo)?;
    match outcome {
        Outcome::Ready(status) => {
            let secs = vm.elapsed().as_secs_f64();
            if rep.mode() == Mode::Json {
                rep.event("ready", json!({ "seconds": secs, "status": status }));
            } else {
                eprintln!(
                    "\nFLYPACK-STATUS after {secs:.1} s: {} (firstboot {}, host {})",
                    status.verdict, status.version, status.hostname
                );
                for r in &status.reasons {
                    eprintln!("  - {r}");
                }
            }
            if args.keep_running {
                rep.info("VM running; Ctrl-C to stop it");
                match vm.wait(None, &mut echo) {
                    Ok(_) => {}
                    Err(e) if crate::interrupt::interrupted() => tracing::debug!("{e}"),
                    Err(e) => return Err(e),
                }
            }
            Ok(status.verdict.exit_code())
        }
        Outcome::Line(line) => {
            let secs = vm.elapsed().as_secs_f64();
            if rep.mode() == Mode::Json {
                rep.event("until", json!({ "seconds": secs, "line": line }));
            } else {
                eprintln!("\nafter {secs:.1} s: {line}");
            }
            Ok(0)
        }
        Outcome::Exited(code) => {
            let stderr = vm.stderr();
            eprintln!(
                "\nQEMU exited ({code}) {}\n--- last console lines ---\n{}\n--- QEMU said ---\n{}",
                if args.expect_ready.is_some() {
                    "before the FLYPACK-STATUS line"
                } else {
                    ""
                },
                vm.console_tail(40),
                stderr.trim()
            );
            Ok(if args.expect_ready.is_some() || !code.success() {
                EXIT_QEMU
            } else {
                0
            })
        }
        Outcome::Timeout => {
            eprintln!(
                "\nno FLYPACK-STATUS line after {} s; last console lines:\n{}\n(full log: {})",
                args.expect_ready.unwrap_or(0),
                vm.console_tail(40),
                log.display()
            );
            rep.event("timeout", json!({ "seconds": args.expect_ready }));
            Ok(EXIT_TIMEOUT)
        }
    }
}
