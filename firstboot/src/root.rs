//! The system firstboot acts on: `/` on a unit, a temp dir in tests, or an
//! image's root. Every path goes through [`Root::path`].

use std::path::{Path, PathBuf};

/// A system root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    /// A root at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root(dir.into())
    }

    /// `rel` (an absolute or relative system path) under this root.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        self.0.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    /// Whether this is the running system's own root.
    pub fn is_live(&self) -> bool {
        self.0 == Path::new("/")
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// The unit's hostname as configured under this root.
    pub fn hostname(&self) -> String {
        std::fs::read_to_string(self.path("/etc/hostname"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_root() {
        let r = Root::new("/tmp/x");
        assert_eq!(r.path("/var/lib/flypack"), PathBuf::from("/tmp/x/var/lib/flypack"));
        assert_eq!(r.path("etc/hostname"), PathBuf::from("/tmp/x/etc/hostname"));
        assert!(!r.is_live());
        assert!(Root::new("/").is_live());
    }
}
