//! `firstboot install` (on the installer stick).

use anyhow::Result;

use crate::cli::InstallArgs;
use crate::root::Root;

/// Chooses the disk, writes the image, verifies, reboots into it.
pub fn run(root: &Root, a: &InstallArgs) -> Result<i32> {
    crate::install::run(root, &a.settings, a.dry_run, a.no_reboot)
}
