//! Golden files for tests: generated text compared with a reviewed file.
//! `UPDATE_GOLDEN=1` rewrites the files that differ and still fails the
//! test, so an update is always a reviewed diff and never a silent pass; a
//! missing golden file is a failure, not an empty expectation.

use std::path::Path;

/// Compares `got` with the file at `path`; returns a failure message.
pub fn check(path: &Path, got: &str) -> Option<String> {
    let want = match std::fs::read_to_string(path) {
        Ok(w) => Some(w),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    if want.as_deref() == Some(got) {
        return None;
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        if let Err(e) = std::fs::write(path, got) {
            return Some(format!("{}: {e}", path.display()));
        }
        return Some(format!(
            "{}: rewritten (UPDATE_GOLDEN); review the diff and run again without it",
            path.display()
        ));
    }
    Some(match want {
        None => format!(
            "{}: missing; make it with UPDATE_GOLDEN=1 and review it\n--- got\n{got}",
            path.display()
        ),
        Some(w) => format!("{}:\n--- want\n{w}\n--- got\n{got}", path.display()),
    })
}
