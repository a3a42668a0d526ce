//! `netconf` (early boot, before networkd starts): write the unit's network
//! files. `network` (networkd running): make sure they are in place, verify
//! the result, roll back on failure. A rollback is recorded, not retried:
//! QA reports it (net.config-applied) and the verdict is NO-GO.

use anyhow::Result;
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::digest::KeyHasher;

use crate::netfiles;
use crate::network::{self, Applied, Options};
use crate::runner::{Ctx, Outcome, Stage};

fn files_digest(ctx: &Ctx) -> Result<String> {
    let mut h = KeyHasher::new();
    for (p, t) in netfiles::render(ctx.unit()?) {
        h.part(&p, t);
    }
    Ok(h.finish())
}

/// Early: write the files.
#[derive(Debug)]
pub struct NetConf;

impl Stage for NetConf {
    fn name(&self) -> &'static str {
        "netconf"
    }
    fn early(&self) -> bool {
        true
    }
    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        files_digest(ctx)
    }
    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        ctx.fault_point("netconf", "mid");
        let a = network::apply(
            &ctx.root,
            ctx.unit()?,
            &Options {
                write_only: true,
                verify_unchanged: false,
                rollback: false,
            },
        )?;
        Ok(Outcome::done(match a {
            Applied::Applied { verification, .. } => verification.facts.join("; "),
            other => other.summary(),
        }))
    }
}

/// Later: verify, roll back on failure.
#[derive(Debug)]
pub struct Network;

impl Stage for Network {
    fn name(&self) -> &'static str {
        "network"
    }
    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        files_digest(ctx)
    }
    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        ctx.fault_point("network", "mid");
        if !ctx.root.is_live() {
            return Ok(Outcome::skipped("not the running system"));
        }
        if ctx.unit()?.interfaces.is_empty() {
            // Remove files an earlier config left, then the fallback rules.
            network::apply(
                &ctx.root,
                ctx.unit()?,
                &Options {
                    write_only: false,
                    verify_unchanged: false,
                    rollback: false,
                },
            )?;
            return Ok(Outcome::skipped(
                "no interfaces in the unit config: DHCP on every wired NIC (image fallback)",
            ));
        }
        let a = network::apply(
            &ctx.root,
            ctx.unit()?,
            &Options {
                write_only: false,
                verify_unchanged: true,
                rollback: true,
            },
        )?;
        let p = ctx.root.path(crate::qa::NETWORK_RESULT);
        std::fs::create_dir_all(p.parent().expect("parent"))?;
        write_atomic(&p, serde_json::to_vec_pretty(&a)?.as_slice(), 0o644)?;
        Ok(Outcome::done(a.summary()))
    }
}
