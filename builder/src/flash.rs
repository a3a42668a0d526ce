//! `builder flash`'s engine lives in [`flypack_engine::flash`] (the USB
//! installer uses it too); this wraps it with progress bars and Ctrl-C.

use anyhow::Result;
pub use flypack_engine::flash::{DeviceFacts, Options, Report, find_bmap, refusal};
use flypack_engine::flash::{Hooks, Phase};

use crate::progress::Reporter;

/// Flashes with progress; `finish` runs while the target is still held
/// (see [`flypack_engine::flash::Hooks::finish`]).
pub fn flash(o: &Options, rep: &Reporter, finish: Option<flypack_engine::flash::Finish<'_>>) -> Result<Report> {
    let write = std::sync::Mutex::new(Some(rep.stage(
        "flash",
        &format!("writing {} to {}", o.image.display(), o.target.display()),
    )));
    let verify = std::sync::Mutex::new(None);
    let progress = |phase: Phase, done: u64, total: u64| match phase {
        Phase::Write => {
            if let Some(s) = write.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                s.bytes(done, total);
            }
        }
        Phase::Verify => {
            if let Some(s) = write.lock().unwrap_or_else(|e| e.into_inner()).take() {
                s.done("written and synced");
            }
            let mut v = verify.lock().unwrap_or_else(|e| e.into_inner());
            v.get_or_insert_with(|| rep.stage("verify", "reading back every written range"))
                .bytes(done, total);
        }
    };
    let cancelled = || crate::interrupt::interrupted();
    let r = flypack_engine::flash::flash(
        o,
        &Hooks {
            progress: &progress,
            cancelled: &cancelled,
            finish,
        },
    )?;
    if let Some(s) = write.lock().unwrap_or_else(|e| e.into_inner()).take() {
        s.done("written and synced");
    }
    if let Some(s) = verify.lock().unwrap_or_else(|e| e.into_inner()).take() {
        s.done(&format!("{} ranges match", r.ranges));
    }
    Ok(r)
}
