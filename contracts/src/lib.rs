//! Flypack's shared contracts.
//!
//! Everything in this crate is either a versioned contract between the
//! host-side `builder` and the target-side `firstboot` (disk layout, status
//! line, manifest, unit config) or a helper both sides must do the same way
//! (atomic writes, running external commands, digests).

pub mod atomic;
pub mod blockdev;
pub mod bmap;
pub mod cmd;
pub mod config;
pub mod digest;
pub mod layout;
pub mod manifest;
pub mod netstat;
pub mod status;
pub mod unit;

/// Version of this workspace, recorded in manifests and status lines.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub mod qa;
pub mod seed;
pub mod stack;
