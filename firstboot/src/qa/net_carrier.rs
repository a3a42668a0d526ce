//! `net.carrier`: carrier on every required interface.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, s: &Snapshot) -> Check {
    let ifs = super::ifaces(ctx.unit, s);
    let req: Vec<&Iface> = ifs.iter().filter(|i| i.required).collect();
    if req.is_empty() {
        return skip("no required interfaces");
    }
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    for i in req {
        match i.link {
            None => bad.push(format!("{}: not found", i.label)),
            Some(l) if !l.carrier => bad.push(format!("{} ({}): no carrier", i.label, l.name)),
            Some(l) => ok.push(format!("{} ({})", i.label, l.name)),
        }
    }
    if bad.is_empty() {
        pass(format!("carrier on {}", ok.join(", ")))
    } else {
        fail(
            bad.join("; "),
            "check the cable and the switch port (and that the switch port is up)",
        )
    }
}
