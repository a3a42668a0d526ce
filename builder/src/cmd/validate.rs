//! `builder validate`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::ValidateArgs;
use crate::profile::Profile;
use crate::progress::{Mode, Reporter};

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image profile.
    Profile,
    /// A unit config.
    Unit,
    /// A fleet inventory.
    Fleet,
}

/// Tells a file's kind from its top-level keys (falls back to the unit
/// config, whose errors then say what is missing).
pub fn kind_of(text: &str) -> Kind {
    match text.parse::<toml::Table>() {
        Ok(t) if t.contains_key("debian") => Kind::Profile,
        Ok(t) if t.contains_key("units") => Kind::Fleet,
        _ => Kind::Unit,
    }
}

/// Checks one file; returns its kind, a one-line summary and, for a unit
/// config, its hostname (what a config push checks against its target).
pub fn check(path: &Path) -> Result<(Kind, String, Option<String>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match kind_of(&text) {
        Kind::Profile => {
            let p = Profile::load(path)?;
            Ok((
                Kind::Profile,
                format!(
                    "profile {:?}, {} packages, {} image",
                    p.name.as_str(),
                    p.debian.packages.len(),
                    crate::profile::Size(p.disk.total)
                ),
                None,
            ))
        }
        Kind::Unit => {
            let u = flypack_contracts::unit::parse_unit(path, &text)?;
            Ok((
                Kind::Unit,
                format!(
                    "unit config for {:?}, {} interfaces, {} VLANs",
                    u.hostname.as_str(),
                    u.interfaces.len(),
                    u.vlans.len()
                ),
                Some(u.hostname.as_str().to_string()),
            ))
        }
        Kind::Fleet => {
            let f = flypack_contracts::unit::parse_fleet(path, &text)?;
            Ok((Kind::Fleet, format!("fleet inventory, {} units", f.units.len()), None))
        }
    }
}

/// Checks each file; prints every problem; exit 1 if any file is bad.
pub fn run(args: &ValidateArgs, rep: &Reporter) -> Result<i32> {
    let mut bad = 0;
    for f in &args.files {
        match check(f) {
            Ok((kind, summary, hostname)) => {
                if rep.mode() == Mode::Json {
                    let mut e = json!({ "file": f, "kind": format!("{kind:?}").to_lowercase(), "summary": summary });
                    if let Some(h) = hostname {
                        e["hostname"] = json!(h);
                    }
                    rep.event("valid", e);
                } else {
                    println!("{}: ok ({summary})", f.display());
                }
            }
            Err(e) => {
                bad += 1;
                if rep.mode() == Mode::Json {
                    rep.event("invalid", json!({ "file": f, "error": format!("{e:#}") }));
                } else {
                    eprintln!("{e:#}");
                }
            }
        }
    }
    Ok(if bad == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of("version = 1\n[debian]\nsuite = \"bookworm\""), Kind::Profile);
        assert_eq!(kind_of("version = 1\n[[units]]\nserial = \"x\""), Kind::Fleet);
        assert_eq!(kind_of("version = 1\nhostname = \"a\""), Kind::Unit);
        assert_eq!(kind_of("not toml ["), Kind::Unit);
    }

    #[test]
    fn examples_check() {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        for (f, k) in [
            ("flypack.toml", Kind::Profile),
            ("unit.example.toml", Kind::Unit),
            ("fleet.example.toml", Kind::Fleet),
        ] {
            let (kind, _, hostname) = check(&images.join(f)).unwrap();
            assert_eq!(kind, k, "{f}");
            // A unit config names its unit (a config push checks it).
            assert_eq!(hostname.as_deref(), (k == Kind::Unit).then_some("fp-demo-01"), "{f}");
        }
    }
}
