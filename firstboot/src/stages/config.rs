//! `config` (in the early unit, after `restore`): resolve the unit config
//! (a restored backup's, the seed's unit.toml, a fleet entry matched by DMI
//! serial or MAC, the image's defaults), validate all of it, and persist the
//! one in force. Later stages read it from the context.

use anyhow::{Context, Result};
use flypack_contracts::digest::KeyHasher;

use crate::config;
use crate::runner::{Ctx, Outcome, Stage};

/// The stage.
#[derive(Debug)]
pub struct Config;

impl Stage for Config {
    fn name(&self) -> &'static str {
        "config"
    }
    fn early(&self) -> bool {
        true
    }
    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        // What resolution reads: the result digests it all (seed, fleets,
        // defaults, a restored config, the hardware it matched).
        let r = config::resolve_here(&ctx.root, ctx.seed.as_deref()).context("invalid unit config, nothing applied")?;
        let mut h = KeyHasher::new();
        h.part("unit", r.unit.digest());
        h.part("source", &r.source);
        Ok(h.finish())
    }
    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        let r = config::resolve_here(&ctx.root, ctx.seed.as_deref()).context("invalid unit config, nothing applied")?;
        ctx.fault_point("config", "mid");
        config::persist(&ctx.root, &r)?;
        let what = format!("{} ({}): hostname {}", r.source, r.reason, r.unit.hostname);
        ctx.set_unit(r.unit);
        Ok(Outcome::done(what))
    }
}
