//! `firewall` (early boot, before networkd starts, so the unit is never open
//! on a LAN): render the unit's nftables ruleset, check it, write it where
//! nftables.service loads it at boot, and load it. See `crate::firewall`.

use anyhow::Result;
use flypack_contracts::digest::KeyHasher;

use crate::runner::{Ctx, Outcome, Stage};

/// The stage.
#[derive(Debug)]
pub struct Firewall;

impl Stage for Firewall {
    fn name(&self) -> &'static str {
        "firewall"
    }
    fn early(&self) -> bool {
        true
    }
    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        let mut h = KeyHasher::new();
        h.part("unit", ctx.unit()?.digest());
        Ok(h.finish())
    }
    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        ctx.fault_point("firewall", "mid");
        if !ctx.root.is_live() {
            return Ok(Outcome::skipped("not the running system"));
        }
        Ok(Outcome::done(crate::firewall::apply(&ctx.root, ctx.unit()?)?))
    }
}
