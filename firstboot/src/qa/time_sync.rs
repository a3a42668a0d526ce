//! `time.sync`: clock synchronised by chrony (NTP) or PTP.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let u = ctx.unit;
    let sev = if u.time.required {
        Severity::Critical
    } else {
        Severity::Major
    };
    let mut c = time_sync(u);
    c.severity = Some(sev);
    c
}

fn time_sync(u: &Unit) -> Check {
    if let Some(p) = &u.time.ptp {
        let out = Cmd::new("pmc")
            .args(["-u", "-b", "0", "-d", &p.domain.to_string(), "GET PORT_DATA_SET"])
            .run();
        return match out {
            Ok(o) if o.stdout_str().contains("SLAVE") => pass(format!("PTP: port state SLAVE (domain {})", p.domain)),
            Ok(o) => fail(
                format!(
                    "PTP: not locked: {}",
                    o.stdout_str()
                        .lines()
                        .find(|l| l.contains("portState"))
                        .unwrap_or("no port state")
                        .trim()
                ),
                "check the grandmaster, the PTP domain and that ptp4l runs on the media interface",
            ),
            Err(e) => fail(format!("PTP: {e}"), "start ptp4l on the PTP interface (linuxptp)"),
        };
    }
    match Cmd::new("chronyc").args(["-n", "tracking"]).run() {
        Ok(o) => {
            let t = o.stdout_str();
            let leap = t
                .lines()
                .find(|l| l.starts_with("Leap status"))
                .unwrap_or("")
                .trim()
                .to_string();
            let src = t
                .lines()
                .find(|l| l.starts_with("Reference ID"))
                .unwrap_or("")
                .trim()
                .to_string();
            if leap.ends_with("Normal") {
                pass(format!("chrony: {src}; {leap}"))
            } else {
                fail(
                    format!("chrony: {leap}"),
                    "no NTP source reachable: configure time.ntp in the unit config (the venue's NTP), or PTP",
                )
            }
        }
        Err(e) => fail(format!("chrony: {e}"), "is chrony running? (systemctl status chrony)"),
    }
}
