//! `firstboot config`.

use std::path::Path;

use anyhow::Result;

use crate::cli::ConfigArgs;
use crate::config;
use crate::root::Root;

/// Prints the unit config that applies (and, with --explain, why).
pub fn run(root: &Root, a: &ConfigArgs, seed: Option<&Path>) -> Result<i32> {
    let r = config::resolve_here(root, seed)?;
    if a.explain {
        for l in &r.explain {
            println!("{l}");
        }
        println!();
    }
    print!("{}", r.unit.to_toml());
    Ok(0)
}
