//! Ctrl-C, SIGTERM and SIGHUP: stop the running tools, let the build unwind
//! (removing its temporary files), exit non-zero. Nothing half-written is
//! ever left under a final name.

use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once, from main).
pub fn install() -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                // Second signal: the user really wants out.
                std::process::exit(128 + sig);
            }
            eprintln!("interrupted: stopping and cleaning up (interrupt again to quit at once)");
            flypack_contracts::cmd::terminate_running();
        }
    });
    Ok(())
}

/// Stops the build's other work (a stage running on another thread) as an
/// interrupt would, without the message: one stage failed, so the rest is
/// moot. Its commands are terminated and its next [`check`] fails.
pub fn stop_the_rest() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    flypack_contracts::cmd::terminate_running();
}

/// Whether an interrupt arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails when interrupted.
pub fn check() -> anyhow::Result<()> {
    if interrupted() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}
