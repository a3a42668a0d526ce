//! QA: the go/no-go checks. Each has an id (the contract's catalogue), a
//! severity, evidence and a fix hint; waivers with an expiry date turn a
//! failure into "waived". Reports: JSON (canonical), JUnit XML, a table.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Instant;

use anyhow::{Context, Result};
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::cmd::Cmd;
use flypack_contracts::qa::{CATALOGUE, CheckResult, Outcome, REPORT_SCHEMA, Report, Severity};
use flypack_contracts::status::{StageState, Verdict};
use flypack_contracts::unit::Unit;

use crate::journal::Journal;
use crate::netlink::{self, Snapshot};
use crate::network;
use crate::root::Root;

/// Where reports go.
pub const REPORT_JSON: &str = "/var/lib/flypack/qa/report.json";
/// JUnit XML report.
pub const REPORT_XML: &str = "/var/lib/flypack/qa/report.xml";
/// The network stage's last outcome.
pub const NETWORK_RESULT: &str = "/var/lib/flypack/network/result.json";

/// What QA looks at.
pub struct Ctx<'a> {
    /// The system.
    pub root: &'a Root,
    /// The unit config in force.
    pub unit: &'a Unit,
    /// Today, for waiver expiry.
    pub today: time::Date,
    /// firstboot's journal.
    pub journal: &'a Journal,
    /// The stage running QA now (allowed to be "started").
    pub running_stage: Option<&'a str>,
    /// Whether the container stack is enabled in this image.
    pub stack_enabled: bool,
}

struct Check {
    outcome: Outcome,
    evidence: String,
    fix: String,
    severity: Option<Severity>,
}

fn pass(evidence: impl Into<String>) -> Check {
    Check {
        outcome: Outcome::Pass,
        evidence: evidence.into(),
        fix: String::new(),
        severity: None,
    }
}
fn fail(evidence: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        outcome: Outcome::Fail,
        evidence: evidence.into(),
        fix: fix.into(),
        severity: None,
    }
}
fn skip(evidence: impl Into<String>) -> Check {
    Check {
        outcome: Outcome::Skip,
        evidence: evidence.into(),
        fix: String::new(),
        severity: None,
    }
}

/// An interface or VLAN of the config, resolved to a kernel link.
struct Iface<'a> {
    label: String,
    link: Option<&'a netlink::Link>,
    required: bool,
    gateways: Vec<IpAddr>,
    statics: Vec<(IpAddr, u8)>,
    dhcp: bool,
    mtu: Option<u32>,
}

fn ifaces<'a>(unit: &Unit, s: &'a Snapshot) -> Vec<Iface<'a>> {
    let mut v = Vec::new();
    for i in &unit.interfaces {
        let mut gws: Vec<IpAddr> = i.gateway.map(IpAddr::V4).into_iter().collect();
        gws.extend(i.gateway6.map(IpAddr::V6));
        v.push(Iface {
            label: i.label.to_string(),
            link: network::find_link(s, i),
            required: i.required,
            gateways: gws,
            statics: i.addresses.iter().map(|a| (a.addr, a.prefix)).collect(),
            dhcp: i.dhcp,
            mtu: i.mtu,
        });
    }
    for vl in &unit.vlans {
        v.push(Iface {
            label: vl.name.to_string(),
            link: s.link(vl.name.as_str()),
            required: vl.required,
            gateways: vl.gateway.map(IpAddr::V4).into_iter().collect(),
            statics: vl.addresses.iter().map(|a| (a.addr, a.prefix)).collect(),
            dhcp: vl.dhcp,
            mtu: vl.mtu,
        });
    }
    v
}

fn read_sysctl(root: &Root, key: &str) -> Option<i64> {
    let p = root.path(format!("/proc/sys/{}", key.replace('.', "/")));
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

pub use flypack_contracts::netstat::igmp_groups;

fn check(id: &str, ctx: &Ctx, s: &Snapshot) -> Check {
    let u = ctx.unit;
    let root = ctx.root;
    let ifs = ifaces(u, s);
    match id {
        "net.config-applied" => {
            if u.interfaces.is_empty() {
                return skip("no interfaces in the unit config: the image's DHCP fallback is in charge");
            }
            match std::fs::read(root.path(NETWORK_RESULT))
                .ok()
                .and_then(|b| serde_json::from_slice::<network::Applied>(&b).ok())
            {
                None => fail(
                    "the network stage has not recorded a result",
                    "run `firstboot run` (or `firstboot network apply`)",
                ),
                Some(a) if a.ok() => pass(a.summary()),
                Some(a) => fail(
                    a.summary(),
                    "fix the unit config (addresses, gateway, VLAN ids, MACs) and apply it again with `firstboot network apply`",
                ),
            }
        }
        "net.carrier" => {
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
        "net.addresses" => {
            let mut bad = Vec::new();
            let mut ok = Vec::new();
            for i in &ifs {
                let Some(l) = i.link else {
                    bad.push(format!("{}: not found", i.label));
                    continue;
                };
                let have: Vec<(IpAddr, u8)> = s.addrs_of(l.index).map(|a| (a.addr, a.prefix)).collect();
                for (a, p) in &i.statics {
                    if have.contains(&(*a, *p)) {
                        ok.push(format!("{a}/{p}"))
                    } else {
                        bad.push(format!("{}: {a}/{p} missing", i.label))
                    }
                }
                if i.dhcp {
                    match have.iter().find(|(a, _)| a.is_ipv4()) {
                        Some((a, p)) => ok.push(format!("{a}/{p} (DHCP)")),
                        None => bad.push(format!("{} ({}): no DHCP lease", i.label, l.name)),
                    }
                }
            }
            if ifs.is_empty() {
                skip("no interfaces configured")
            } else if bad.is_empty() {
                pass(ok.join(", "))
            } else {
                fail(
                    bad.join("; "),
                    "a missing static address means networkd refused the config (journalctl -u systemd-networkd); no DHCP lease means no DHCP server answers on that LAN",
                )
            }
        }
        "net.routes" => {
            let mut bad = Vec::new();
            let mut n = 0;
            for i in &ifs {
                let Some(l) = i.link else { continue };
                for g in &i.gateways {
                    n += 1;
                    if !s
                        .default_routes()
                        .any(|r| r.gateway == Some(*g) && r.oif == Some(l.index))
                    {
                        bad.push(format!("no default route via {g} on {}", l.name));
                    }
                }
            }
            if n == 0 {
                skip("no gateways configured")
            } else if bad.is_empty() {
                pass(format!("{n} default route(s) in place"))
            } else {
                fail(bad.join("; "), "check the gateway's subnet in the unit config")
            }
        }
        "net.gateway" => {
            let mut bad = Vec::new();
            let mut ok = Vec::new();
            for i in &ifs {
                let Some(l) = i.link else { continue };
                for g in &i.gateways {
                    if network::ping(*g, &l.name, 3) {
                        ok.push(format!("{g} via {}", l.name))
                    } else {
                        bad.push(format!("{g} via {} does not answer", l.name))
                    }
                }
            }
            if ok.is_empty() && bad.is_empty() {
                skip("no gateways configured")
            } else if bad.is_empty() {
                pass(ok.join(", "))
            } else {
                fail(
                    bad.join("; "),
                    "check the gateway address, the VLAN and the cabling; ask the venue whether ICMP is blocked",
                )
            }
        }
        "net.dns" => {
            if u.dns.servers.is_empty() {
                return skip("no DNS servers configured");
            }
            let (ok, bad): (Vec<IpAddr>, Vec<IpAddr>) = u.dns.servers.iter().partition(|s| network::dns_answers(**s));
            if bad.is_empty() {
                pass(format!(
                    "{} answer",
                    ok.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ))
            } else {
                fail(
                    format!(
                        "{} do not answer",
                        bad.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    ),
                    "check the DNS server addresses, or remove them for an offline venue",
                )
            }
        }
        "net.mtu" => {
            let mut bad = Vec::new();
            let mut ok = Vec::new();
            for i in &ifs {
                let (Some(l), Some(g)) = (i.link, i.gateways.iter().find(|g| g.is_ipv4())) else {
                    continue;
                };
                if !network::ping(*g, &l.name, 1) {
                    // net.gateway reports that; an MTU verdict needs an answering gateway.
                    continue;
                }
                let mtu = i.mtu.or(l.mtu).unwrap_or(1500);
                let size = mtu.saturating_sub(28);
                let r = Cmd::new("ping")
                    .args([
                        "-4",
                        "-n",
                        "-q",
                        "-c",
                        "2",
                        "-W",
                        "1",
                        "-M",
                        "do",
                        "-s",
                        &size.to_string(),
                        "-I",
                        &l.name,
                    ])
                    .arg(g.to_string())
                    .run();
                if r.is_ok() {
                    ok.push(format!("{mtu} bytes to {g} on {}", l.name))
                } else {
                    bad.push(format!(
                        "{mtu}-byte packets with don't-fragment do not reach {g} on {}",
                        l.name
                    ))
                }
            }
            if ok.is_empty() && bad.is_empty() {
                skip("no answering gateway to test the path MTU against")
            } else if bad.is_empty() {
                pass(ok.join(", "))
            } else {
                fail(
                    bad.join("; "),
                    "the switch path does not carry this MTU: lower the MTU in the unit config or enable jumbo frames on the switches",
                )
            }
        }
        "mcast.join" => {
            if u.multicast.groups.is_empty() {
                return skip("no multicast groups configured");
            }
            let mut bad = Vec::new();
            let mut ok = Vec::new();
            for g in &u.multicast.groups {
                let link = ifs.iter().find(|i| i.label == g.interface).and_then(|i| i.link);
                let Some(l) = link else {
                    bad.push(format!("{}: interface {} not found", g.group, g.interface));
                    continue;
                };
                let Some(local) = s.addrs_of(l.index).find_map(|a| match a.addr {
                    IpAddr::V4(v) => Some(v),
                    _ => None,
                }) else {
                    bad.push(format!("{}: {} has no IPv4 address to join from", g.group, l.name));
                    continue;
                };
                let joined = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).and_then(|sock| {
                    sock.join_multicast_v4(&g.group, &local)?;
                    let igmp = std::fs::read_to_string(root.path("/proc/net/igmp"))?;
                    let seen = igmp_groups(&igmp, &l.name).contains(&g.group);
                    sock.leave_multicast_v4(&g.group, &local)?;
                    Ok(seen)
                });
                match joined {
                    Ok(true) => ok.push(format!("{} on {}", g.group, l.name)),
                    Ok(false) => bad.push(format!("{} joined on {} but not in /proc/net/igmp", g.group, l.name)),
                    Err(e) => bad.push(format!("{} on {}: {e}", g.group, l.name)),
                }
            }
            if bad.is_empty() {
                pass(format!("joined {}", ok.join(", ")))
            } else {
                fail(
                    bad.join("; "),
                    "check the interface of each group; raise net.ipv4.igmp_max_memberships if many groups are joined",
                )
            }
        }
        "mcast.rp-filter" => {
            let names: Vec<String> = u
                .multicast
                .groups
                .iter()
                .filter_map(|g| {
                    ifs.iter()
                        .find(|i| i.label == g.interface)
                        .and_then(|i| i.link)
                        .map(|l| l.name.clone())
                })
                .collect();
            if names.is_empty() {
                return skip("no multicast interfaces");
            }
            let all = read_sysctl(root, "net.ipv4.conf.all.rp_filter").unwrap_or(0);
            let mut bad = Vec::new();
            let mut ev = Vec::new();
            for n in names {
                let own = read_sysctl(root, &format!("net.ipv4.conf.{}.rp_filter", n.replace('.', "/"))).unwrap_or(0);
                let eff = all.max(own);
                ev.push(format!("{n}: {eff} (all {all}, {n} {own})"));
                if eff == 1 {
                    bad.push(n);
                }
            }
            if bad.is_empty() {
                pass(ev.join(", "))
            } else {
                fail(
                    format!("strict reverse-path filter on {}: {}", bad.join(", "), ev.join(", ")),
                    "set net.ipv4.conf.all.rp_filter and the interface's to 2 (loose) or 0: strict drops multicast from sources routed elsewhere",
                )
            }
        }
        "net.udp-buffers" => {
            let need = (u.qa.srt_bitrate_mbps * 1e6 / 8.0 * (u.qa.srt_latency_ms as f64 / 1000.0) * 2.0) as i64;
            let r = read_sysctl(root, "net.core.rmem_max").unwrap_or(0);
            let w = read_sysctl(root, "net.core.wmem_max").unwrap_or(0);
            let ev = format!(
                "rmem_max {r}, wmem_max {w}; SRT at {} Mb/s with {} ms latency needs {need} (2 x bitrate x latency)",
                u.qa.srt_bitrate_mbps, u.qa.srt_latency_ms
            );
            if r >= need && w >= need {
                pass(ev)
            } else {
                fail(
                    ev,
                    format!(
                        "raise net.core.rmem_max and net.core.wmem_max to at least {need} (/etc/sysctl.d/60-flypack-video.conf)"
                    ),
                )
            }
        }
        "time.sync" => {
            let sev = if u.time.required {
                Severity::Critical
            } else {
                Severity::Major
            };
            let mut c = time_sync(u);
            c.severity = Some(sev);
            c
        }
        "net.firewall" => {
            if !root.is_live() {
                return skip("not the running system");
            }
            match crate::firewall::loaded_policies() {
                Ok(l) if l.input_drop && l.forward_drop => pass(format!(
                    "table inet {}: input and forward drop by default, {} rules",
                    crate::firewall::TABLE,
                    l.rules
                )),
                Ok(l) => fail(
                    format!(
                        "table inet {} loaded but input drops by default: {}, forward: {}",
                        crate::firewall::TABLE,
                        l.input_drop,
                        l.forward_drop
                    ),
                    "sudo firstboot firewall apply",
                ),
                Err(e) => fail(
                    format!("{e:#}"),
                    "sudo firstboot firewall apply; systemctl status nftables",
                ),
            }
        }
        "sys.debian" => match std::fs::read_to_string(root.path("/etc/debian_version")) {
            Ok(v) if v.trim().starts_with("12.") || v.trim() == "12" => pass(format!("Debian {}", v.trim())),
            Ok(v) => fail(format!("Debian {}", v.trim()), "reflash the unit with a Flypack image"),
            Err(e) => fail(
                format!("/etc/debian_version: {e}"),
                "reflash the unit with a Flypack image",
            ),
        },
        "sys.packages" => packages(root),
        "sys.services" => {
            if !root.is_live() {
                return skip("not the running system");
            }
            let mut units = vec![
                "ssh.service",
                "systemd-networkd.service",
                "systemd-resolved.service",
                "chrony.service",
            ];
            if ctx.stack_enabled {
                units.push("docker.service");
            }
            let bad: Vec<&str> = units
                .iter()
                .copied()
                .filter(|s| Cmd::new("systemctl").args(["is-active", "--quiet", s]).run().is_err())
                .collect();
            if bad.is_empty() {
                pass(format!("active: {}", units.join(", ")))
            } else {
                fail(
                    format!("not active: {}", bad.join(", ")),
                    format!("journalctl -u {} says why", bad[0]),
                )
            }
        }
        "sys.disk" => match rustix::fs::statvfs(root.dir()) {
            Ok(st) => {
                let free = st.f_bavail * st.f_frsize / (1 << 20);
                let ev = format!("{free} MiB free on /, minimum {}", u.qa.min_free_disk_mib);
                if free >= u.qa.min_free_disk_mib {
                    pass(ev)
                } else {
                    fail(
                        ev,
                        "free space: old logs (journalctl --vacuum-size), container images, metrics retention",
                    )
                }
            }
            Err(e) => fail(format!("statvfs: {e}"), ""),
        },
        "sys.journal" => {
            let stuck: Vec<String> = ctx
                .journal
                .stages
                .iter()
                .filter(|s| s.state == StageState::Started && Some(s.name.as_str()) != ctx.running_stage)
                .map(|s| s.name.clone())
                .collect();
            let failed: Vec<String> = ctx
                .journal
                .stages
                .iter()
                .filter(|s| s.state == StageState::Failed)
                .map(|s| s.name.clone())
                .collect();
            if stuck.is_empty() && failed.is_empty() {
                pass(format!(
                    "{} stages recorded, {} runs",
                    ctx.journal.stages.len(),
                    ctx.journal.runs.len()
                ))
            } else {
                fail(
                    format!("interrupted: {:?}, failed: {:?}", stuck, failed),
                    "run `firstboot run` to finish provisioning; `firstboot status` shows the failing stage",
                )
            }
        }
        "stack.services" => {
            let Ok(Some((_, stack))) = crate::docker::load_stack(root) else {
                return skip("the container stack is not enabled in this image");
            };
            if !root.is_live() {
                return skip("not the running system");
            }
            let states = crate::docker::block_on(async {
                let d = crate::docker::connect_running().await?;
                crate::docker::states(&d, &stack).await
            });
            match states {
                Err(e) => fail(format!("{e:#}"), "journalctl -u docker; systemctl restart docker"),
                Ok(states) => {
                    let good = |s: &crate::docker::ServiceState| {
                        let has_health = stack.service(&s.name).is_some_and(|x| x.health.is_some());
                        s.state.is_up(has_health)
                    };
                    let bad: Vec<String> = states
                        .iter()
                        .filter(|s| s.critical && !good(s))
                        .map(|s| format!("{} {}", s.name, s.state))
                        .collect();
                    let all: Vec<String> = states.iter().map(|s| format!("{} {}", s.name, s.state)).collect();
                    if bad.is_empty() {
                        pass(all.join(", "))
                    } else {
                        fail(
                            format!("not healthy: {}", bad.join(", ")),
                            format!(
                                "docker logs {}_{}_1 says why",
                                stack.project,
                                bad[0].split(' ').next().unwrap_or("")
                            ),
                        )
                    }
                }
            }
        }
        "stack.docker" => {
            if !ctx.stack_enabled {
                return skip("the container stack is not enabled in this image");
            }
            match Cmd::new("systemctl")
                .args(["is-active", "--quiet", "docker.service"])
                .run()
            {
                Ok(_) => pass("docker.service active"),
                Err(_) => fail("docker.service not active", "journalctl -u docker"),
            }
        }
        other => fail(
            format!("no implementation for check {other}"),
            "this is a firstboot bug",
        ),
    }
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

fn packages(root: &Root) -> Check {
    let manifest = match std::fs::read(root.path(format!("/{}", flypack_contracts::layout::target::MANIFEST))) {
        Ok(b) => b,
        Err(e) => {
            return fail(
                format!("no image manifest: {e}"),
                "reflash the unit with a Flypack image",
            );
        }
    };
    let Ok(m) = serde_json::from_slice::<flypack_contracts::manifest::Manifest>(&manifest) else {
        return fail("the image manifest is not readable", "reflash the unit");
    };
    let key = [
        "openssh-server",
        "systemd-resolved",
        "chrony",
        "linuxptp",
        "iproute2",
        "ethtool",
        "docker.io",
    ];
    let want: Vec<&str> = key
        .iter()
        .copied()
        .filter(|k| m.packages.iter().any(|p| p.name == *k))
        .collect();
    if !root.is_live() {
        return pass(format!("{} key packages in the image manifest", want.len()));
    }
    let out = match Cmd::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Status}\n")
        .args(&want)
        .run()
    {
        Ok(o) => o.stdout_str(),
        Err(e) => e.to_string(),
    };
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|k| !out.lines().any(|l| l == format!("{k} installed")))
        .collect();
    if missing.is_empty() {
        pass(format!("installed: {}", want.join(", ")))
    } else {
        fail(
            format!("not installed: {}", missing.join(", ")),
            "reflash the unit; removed packages are not repaired in place",
        )
    }
}

/// Runs every check.
pub fn run(ctx: &Ctx) -> Result<Report> {
    let snap = netlink::snapshot()?;
    let mut checks = Vec::new();
    for def in CATALOGUE {
        let t0 = Instant::now();
        let c = check(def.id, ctx, &snap);
        let severity = c.severity.unwrap_or(def.severity);
        let mut r = CheckResult {
            id: def.id.to_string(),
            title: def.title.to_string(),
            severity,
            outcome: c.outcome,
            evidence: c.evidence,
            fix: c.fix,
            waiver: None,
            duration_ms: t0.elapsed().as_millis() as u64,
        };
        if r.outcome == Outcome::Fail {
            for w in ctx.unit.qa.waivers.iter().filter(|w| w.check == def.id) {
                if w.expires.date() >= ctx.today {
                    r.outcome = Outcome::Waived;
                    r.waiver = Some(format!("{} (until {})", w.reason, w.expires));
                } else {
                    r.evidence
                        .push_str(&format!(" (a waiver expired on {}: {})", w.expires, w.reason));
                }
            }
        }
        checks.push(r);
    }
    Ok(Report {
        schema: REPORT_SCHEMA,
        hostname: crate::status::hostname(ctx.root),
        time: crate::runner::now(),
        version: flypack_contracts::VERSION.to_string(),
        verdict: verdict(&checks),
        checks,
    })
}

/// The verdict of a set of results.
pub fn verdict(checks: &[CheckResult]) -> Verdict {
    let failed = |s: Severity| checks.iter().any(|c| c.outcome == Outcome::Fail && c.severity == s);
    if failed(Severity::Critical) {
        Verdict::NoGo
    } else if failed(Severity::Major) {
        Verdict::GoWithWarnings
    } else {
        Verdict::Go
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The report as JUnit XML (one testcase per check).
pub fn junit(r: &Report) -> String {
    let failures = r.checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let skipped = r
        .checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skip | Outcome::Waived))
        .count();
    let time: f64 = r.checks.iter().map(|c| c.duration_ms as f64 / 1000.0).sum();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"flypack-qa\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" timestamp=\"{}\" time=\"{time:.3}\">\n",
        r.checks.len(),
        xml(&r.hostname),
        r.checks.len(),
        xml(&r.time)
    );
    for c in &r.checks {
        let (area, _) = c.id.split_once('.').unwrap_or((&c.id, ""));
        s.push_str(&format!(
            "    <testcase classname=\"flypack.{}\" name=\"{}\" time=\"{:.3}\">\n",
            xml(area),
            xml(&c.id),
            c.duration_ms as f64 / 1000.0
        ));
        match c.outcome {
            Outcome::Fail => s.push_str(&format!(
                "      <failure type=\"{:?}\" message=\"{}\">{}\nfix: {}</failure>\n",
                c.severity,
                xml(&c.evidence),
                xml(&c.title),
                xml(&c.fix)
            )),
            Outcome::Skip => s.push_str(&format!("      <skipped message=\"{}\"/>\n", xml(&c.evidence))),
            Outcome::Waived => s.push_str(&format!(
                "      <skipped message=\"waived: {}\"/>\n",
                xml(c.waiver.as_deref().unwrap_or(""))
            )),
            Outcome::Pass => s.push_str(&format!("      <system-out>{}</system-out>\n", xml(&c.evidence))),
        }
        s.push_str("    </testcase>\n");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// The report as a table for humans.
pub fn table(r: &Report) -> String {
    let mut s = format!("QA on {} at {}: {}\n", r.hostname, r.time, r.verdict);
    for c in &r.checks {
        let mark = match c.outcome {
            Outcome::Pass => "ok  ",
            Outcome::Fail => "FAIL",
            Outcome::Waived => "waiv",
            Outcome::Skip => "-   ",
        };
        s.push_str(&format!(
            "  {mark} {:<18} {:<8} {}\n",
            c.id,
            format!("{:?}", c.severity).to_lowercase(),
            c.evidence
        ));
        if c.outcome == Outcome::Fail && !c.fix.is_empty() {
            s.push_str(&format!("       fix: {}\n", c.fix));
        }
        if let Some(w) = &c.waiver {
            s.push_str(&format!("       waived: {w}\n"));
        }
    }
    s
}

/// Writes the JSON and JUnit reports.
pub fn write(root: &Root, r: &Report) -> Result<()> {
    let p = root.path(REPORT_JSON);
    std::fs::create_dir_all(p.parent().expect("parent")).with_context(|| format!("creating {}", p.display()))?;
    write_atomic(&p, serde_json::to_vec_pretty(r)?.as_slice(), 0o644)?;
    write_atomic(&root.path(REPORT_XML), junit(r).as_bytes(), 0o644)
}

/// Reads the last report.
pub fn last(root: &Root) -> Option<Report> {
    serde_json::from_slice(&std::fs::read(root.path(REPORT_JSON)).ok()?).ok()
}

/// Catalogue lookups for the status summary.
pub fn summary(r: &Report) -> flypack_contracts::status::QaSummary {
    let ids = |o: Outcome, crit: bool| -> Vec<String> {
        r.checks
            .iter()
            .filter(|c| c.outcome == o && (c.severity == Severity::Critical) == crit)
            .map(|c| c.id.clone())
            .collect()
    };
    flypack_contracts::status::QaSummary {
        passed: r.checks.iter().filter(|c| c.outcome == Outcome::Pass).count() as u32,
        failed: r.checks.iter().filter(|c| c.outcome == Outcome::Fail).count() as u32,
        waived: r.checks.iter().filter(|c| c.outcome == Outcome::Waived).count() as u32,
        critical: ids(Outcome::Fail, true),
        warnings: r
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail && c.severity == Severity::Major)
            .map(|c| c.id.clone())
            .collect(),
        report: REPORT_JSON.to_string(),
    }
}

/// Lines for the status's reasons (failed critical and major checks).
pub fn reasons(r: &Report) -> Vec<String> {
    r.checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail && c.severity >= Severity::Major)
        .map(|c| {
            format!(
                "{} {}: {}",
                if c.severity == Severity::Critical {
                    "NO-GO"
                } else {
                    "warning"
                },
                c.id,
                c.evidence
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, sev: Severity, outcome: Outcome) -> CheckResult {
        CheckResult {
            id: id.into(),
            title: "t".into(),
            severity: sev,
            outcome,
            evidence: "e <&>".into(),
            fix: "f".into(),
            waiver: None,
            duration_ms: 5,
        }
    }

    #[test]
    fn verdicts() {
        use Outcome::*;
        use Severity::*;
        assert_eq!(
            verdict(&[result("a", Critical, Pass), result("b", Minor, Fail)]),
            Verdict::Go
        );
        assert_eq!(
            verdict(&[result("a", Critical, Waived), result("b", Major, Fail)]),
            Verdict::GoWithWarnings
        );
        assert_eq!(
            verdict(&[result("a", Critical, Fail), result("b", Major, Fail)]),
            Verdict::NoGo
        );
        assert_eq!(verdict(&[result("a", Critical, Skip)]), Verdict::Go);
    }

    #[test]
    fn every_check_in_the_catalogue_is_implemented() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let unit =
            flypack_contracts::unit::parse_unit(std::path::Path::new("u"), "version = 1\nhostname = \"a\"\n").unwrap();
        let journal = Journal::default();
        let ctx = Ctx {
            root: &root,
            unit: &unit,
            today: time::macros::date!(2026 - 11 - 27),
            journal: &journal,
            running_stage: None,
            stack_enabled: false,
        };
        let r = run(&ctx).unwrap();
        assert_eq!(r.checks.len(), CATALOGUE.len());
        for c in &r.checks {
            assert!(!c.evidence.contains("no implementation"), "{}", c.id);
        }
        // Nothing configured: the network checks do not apply.
        let get = |id: &str| r.checks.iter().find(|c| c.id == id).unwrap().outcome;
        assert_eq!(get("net.config-applied"), Outcome::Skip);
        assert_eq!(get("mcast.join"), Outcome::Skip);
        assert_eq!(get("sys.journal"), Outcome::Pass);
    }

    #[test]
    fn junit_golden() {
        let r = Report {
            schema: 1,
            hostname: "u1".into(),
            time: "2026-11-27T10:00:00Z".into(),
            version: "0.1.0".into(),
            verdict: Verdict::NoGo,
            checks: vec![
                result("net.gateway", Severity::Critical, Outcome::Fail),
                result("time.sync", Severity::Major, Outcome::Skip),
            ],
        };
        assert_eq!(
            junit(&r),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<testsuites name=\"flypack-qa\" tests=\"2\" failures=\"1\" skipped=\"1\" time=\"0.010\">
  <testsuite name=\"u1\" tests=\"2\" failures=\"1\" skipped=\"1\" timestamp=\"2026-11-27T10:00:00Z\" time=\"0.010\">
    <testcase classname=\"flypack.net\" name=\"net.gateway\" time=\"0.005\">
      <failure type=\"Critical\" message=\"e &lt;&amp;&gt;\">t
fix: f</failure>
    </testcase>
    <testcase classname=\"flypack.time\" name=\"time.sync\" time=\"0.005\">
      <skipped message=\"e &lt;&amp;&gt;\"/>
    </testcase>
  </testsuite>
</testsuites>
"
        );
    }
}
