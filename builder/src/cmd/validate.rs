//! `builder validate`.

use anyhow::Result;
use serde_json::json;

use crate::cli::ValidateArgs;
use crate::profile::Profile;
use crate::progress::{Mode, Reporter};

/// Checks each file; prints every problem; exit 1 if any file is bad.
pub fn run(args: &ValidateArgs, rep: &Reporter) -> Result<i32> {
    let mut bad = 0;
    for f in &args.files {
        match Profile::load(f) {
            Ok(p) => {
                if rep.mode() == Mode::Json {
                    rep.event("valid", json!({ "file": f, "kind": "profile", "name": p.name.as_str() }));
                } else {
                    println!("{}: ok (profile {:?}, {} packages, {} image)", f.display(), p.name.as_str(), p.debian.packages.len(), crate::profile::Size(p.disk.total));
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
