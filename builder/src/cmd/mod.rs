//! One module per subcommand; each has `run(args, reporter) -> Result<i32>`
//! (the process exit code).

pub mod backup_key;
pub mod boot;
pub mod build;
pub mod customize;
pub mod doctor;
pub mod flash;
pub mod fleet_ca;
pub mod images;
pub mod inventory;
pub mod restore;
pub mod security_check;
pub mod seed_files;
pub mod validate;

use std::path::PathBuf;

/// The default cache folder.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("flypack");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/flypack")
}

/// The firstboot binary next to the running builder.
pub fn sibling_firstboot() -> PathBuf {
    sibling("firstboot")
}

/// A binary next to the running builder.
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}
