//! Where the unit's files are (absolute paths on the unit; joined under
//! `--root`).

use std::path::{Path, PathBuf};

/// The status contract, written by firstboot.
pub const STATUS: &str = "/var/lib/flypack/status.json";
/// The last QA report, written by firstboot.
pub const QA_REPORT: &str = "/var/lib/flypack/qa/report.json";
/// The unit config in force.
pub const UNIT: &str = "/etc/flypack/unit.toml";
/// The web app's config.
pub const CONFIG: &str = "/etc/flypack/webapp.toml";
/// The hostname, when there is no unit config.
pub const HOSTNAME: &str = "/etc/hostname";
/// The web app's state: users, sessions, audit log, jobs.
pub const STATE_DIR: &str = "/var/lib/flypack/webapp";
/// Users (in the unit's backup).
pub const USERS: &str = "/var/lib/flypack/webapp/users.json";
/// Sessions.
pub const SESSIONS: &str = "/var/lib/flypack/webapp/sessions.json";
/// The audit log (JSON lines).
pub const AUDIT: &str = "/var/lib/flypack/webapp/audit.jsonl";
/// The pending enrolment code (hashed) and its expiry.
pub const ENROL: &str = "/var/lib/flypack/webapp/enrol.json";
/// One folder per job (actions and Ansible runs).
pub const JOBS: &str = "/var/lib/flypack/webapp/jobs";
/// Unit configs submitted for `firstboot network apply`.
pub const NETWORK: &str = "/var/lib/flypack/webapp/network";
/// TLS material (in the unit's backup).
pub const TLS_DIR: &str = "/etc/flypack/tls";

/// `abs` (an absolute path on the unit) under `root`.
pub fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_under_the_root() {
        assert_eq!(
            under(Path::new("/tmp/r"), USERS),
            PathBuf::from("/tmp/r/var/lib/flypack/webapp/users.json")
        );
        assert_eq!(under(Path::new("/"), UNIT), PathBuf::from("/etc/flypack/unit.toml"));
    }
}
