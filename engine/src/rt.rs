//! The process's one tokio runtime (current-thread, made on first use).
//! builder and firstboot are synchronous programs; where a crate is async
//! (bollard for Docker, rtnetlink for the kernel's links) they block on it
//! through this runtime, never through a runtime of their own.

use std::future::Future;
use std::sync::OnceLock;

use anyhow::{Context, Result};

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    if let Some(r) = RUNTIME.get() {
        return Ok(r);
    }
    let r = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // Two threads racing here both built one; the first one set wins.
    Ok(RUNTIME.get_or_init(|| r))
}

/// Runs `f` to completion on the process's runtime. Not for use from inside
/// async code (it would block the runtime it runs on).
pub fn block_on<F: Future>(f: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(f))
}
