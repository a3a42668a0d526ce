//! `firstboot network`: apply, confirm, roll back, verify, and the
//! interactive setup for a technician at the console.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flypack_contracts::unit::parse_unit;

use crate::cli::{NetworkArgs, NetworkCommand};
use crate::network::{self, Applied, Options};
use crate::root::Root;

fn report(a: &Applied) -> i32 {
    println!("{}", a.summary());
    if let Applied::Applied { verification, .. } | Applied::Unchanged { verification } = a {
        for w in &verification.warnings {
            println!("warning: {w}");
        }
    }
    if a.ok() { 0 } else { 1 }
}

/// Runs `firstboot network ...`.
pub fn run(root: &Root, a: &NetworkArgs, seed: Option<&Path>) -> Result<i32> {
    if a.interactive {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut out = std::io::stdout();
        return interactive(root, seed, a.confirm_within, &mut input, &mut out);
    }
    let Some(cmd) = &a.command else {
        bail!("say what to do: firstboot network apply|confirm|rollback|verify, or --interactive");
    };
    match cmd {
        NetworkCommand::Apply { unit, confirm_within } => {
            let u = match unit {
                Some(p) => {
                    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                    parse_unit(p, &text)?
                }
                None => crate::config::in_force_required(root)?,
            };
            match confirm_within {
                Some(secs) => {
                    let exe = std::env::current_exe().context("finding firstboot's own path")?;
                    let (applied, pend) = network::apply_with_confirm(root, &u, *secs, &exe)?;
                    let code = report(&applied);
                    if applied.ok() {
                        println!(
                            "change {} is in force: run `firstboot network confirm` within {secs} s to keep it, \
                             or it rolls back by itself",
                            pend.token
                        );
                    }
                    Ok(code)
                }
                None => {
                    let applied = network::apply(
                        root,
                        &u,
                        &Options {
                            write_only: false,
                            verify_unchanged: true,
                            rollback: true,
                        },
                    )?;
                    if !applied.ok() {
                        return Ok(report(&applied));
                    }
                    let persisted = crate::config::persist_local(root, &u)?;
                    let code = report(&applied);
                    super::central::follow_config(root, persisted);
                    Ok(code)
                }
            }
        }
        NetworkCommand::Confirm => {
            let (token, persisted) = network::confirm(root)?;
            println!("change {token} confirmed: it stays");
            super::central::follow_config(root, persisted);
            Ok(0)
        }
        NetworkCommand::Rollback(args) => {
            args.wait();
            match network::rollback(root, args.if_pending.as_deref())? {
                Some(a) => Ok(report(&a).max(0)),
                None => {
                    println!("nothing to roll back");
                    Ok(0)
                }
            }
        }
        NetworkCommand::Verify => {
            let u = crate::config::in_force_required(root)?;
            let v = network::verify(&u, Duration::from_secs(u.qa.settle_seconds as u64))?;
            println!("{}", v.summary());
            for w in &v.warnings {
                println!("warning: {w}");
            }
            Ok(if v.ok() { 0 } else { 1 })
        }
    }
}

fn ask(input: &mut dyn BufRead, out: &mut dyn Write, q: &str, default: &str) -> Result<String> {
    write!(out, "{q} [{default}]: ")?;
    out.flush()?;
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        bail!("input ended: nothing changed");
    }
    let v = line.trim();
    Ok(if v.is_empty() {
        default.to_string()
    } else {
        v.to_string()
    })
}

/// The console setup: prompts with the current values as defaults, builds a
/// unit config, validates it, applies it with a confirmation deadline.
pub fn interactive(
    root: &Root,
    seed: Option<&Path>,
    secs: u64,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<i32> {
    let current =
        crate::config::in_force_required(root).or_else(|_| crate::config::resolve_here(root, seed).map(|r| r.unit))?;
    let snap = crate::netlink::snapshot()?;
    // Physical NICs (with a device in sysfs); where there are none (a
    // container), every non-loopback link that is not a VLAN.
    let physical = |l: &&crate::netlink::Link| root.path(format!("/sys/class/net/{}/device", l.name)).exists();
    let mut nics: Vec<&crate::netlink::Link> = snap.links.iter().filter(physical).collect();
    if nics.is_empty() {
        nics = snap
            .links
            .iter()
            .filter(|l| l.name != "lo" && l.vlan_id.is_none() && l.mac.is_some())
            .collect();
    }
    writeln!(out, "Flypack network setup. Enter keeps the value in brackets.")?;
    writeln!(out, "Interfaces on this unit:")?;
    for l in &nics {
        writeln!(
            out,
            "  {:<12} {}  {}",
            l.name,
            l.mac.as_deref().unwrap_or(""),
            if l.carrier { "cable in" } else { "no cable" }
        )?;
    }
    let hostname = ask(input, out, "Hostname", current.hostname.as_str())?;
    let mut toml = format!("version = 1\nhostname = {hostname:?}\n");
    let labels = ["mgmt", "media"];
    for (n, label) in labels.iter().enumerate() {
        let cur = current
            .links()
            .into_iter()
            .filter(|l| current.interface(&l.label).is_some())
            .nth(n);
        let cur = cur.as_ref();
        let cur_name = cur
            .and_then(|l| network::find_link(&snap, l))
            .map(|l| l.name.clone())
            .or_else(|| nics.get(n).map(|l| l.name.clone()))
            .unwrap_or_default();
        let name = ask(input, out, &format!("{label} interface (- for none)"), &cur_name)?;
        if name == "-" || name.is_empty() {
            continue;
        }
        let Some(link) = snap.link(&name) else {
            bail!("there is no interface {name:?} on this unit")
        };
        let cur_addr = cur
            .map(|i| {
                if i.dhcp {
                    "dhcp".to_string()
                } else {
                    i.statics.first().map(|a| a.to_string()).unwrap_or_default()
                }
            })
            .unwrap_or_else(|| "dhcp".into());
        let addr = ask(
            input,
            out,
            &format!("{label} address: dhcp or ADDRESS/PREFIX"),
            &cur_addr,
        )?;
        toml.push_str(&format!(
            "[[interfaces]]\nlabel = {label:?}\nmatch = {{ mac = {:?} }}\n",
            link.mac.clone().unwrap_or_default()
        ));
        if addr == "dhcp" {
            toml.push_str("dhcp = true\n");
        } else {
            toml.push_str(&format!("addresses = [{addr:?}]\n"));
            let cur_gw = cur
                .and_then(|i| i.gateways.iter().find(|g| g.is_ipv4()).copied())
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into());
            let gw = ask(input, out, &format!("{label} gateway (- for none)"), &cur_gw)?;
            if gw != "-" {
                toml.push_str(&format!("gateway = {gw:?}\n"));
            }
        }
    }
    let cur_dns = if current.dns.servers.is_empty() {
        "-".to_string()
    } else {
        current
            .dns
            .servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dns = ask(input, out, "DNS servers, space-separated (- for none)", &cur_dns)?;
    if dns != "-" {
        let list: Vec<String> = dns.split_whitespace().map(|s| format!("{s:?}")).collect();
        toml.push_str(&format!("[dns]\nservers = [{}]\n", list.join(", ")));
    }
    // Keep what the console does not ask about.
    let mut unit = match parse_unit(Path::new("console input"), &toml) {
        Ok(u) => u,
        Err(e) => {
            writeln!(out, "not applied: {e}")?;
            return Ok(1);
        }
    };
    let mut raw: flypack_contracts::unit::RawUnit = (*unit).clone();
    raw.time = current.time.clone();
    raw.qa = current.qa.clone();
    raw.access = current.access.clone();
    raw.multicast
        .groups
        .retain(|g| raw.interfaces.iter().any(|i| i.label.as_str() == g.interface));
    unit = flypack_contracts::unit::validate(Path::new("console input"), "", raw)?;
    writeln!(out, "\nNew config:\n{}", unit.to_toml())?;
    let go = ask(input, out, "Apply it?", "no")?;
    if !matches!(go.as_str(), "y" | "yes") {
        writeln!(out, "nothing changed")?;
        return Ok(1);
    }
    let exe = std::env::current_exe().context("finding firstboot's own path")?;
    let (applied, _) = network::apply_with_confirm(root, &unit, secs, &exe)?;
    writeln!(out, "{}", applied.summary())?;
    if !applied.ok() {
        return Ok(1);
    }
    let keep = ask(
        input,
        out,
        &format!("Working? Type yes within {secs} s to keep it (anything else rolls back now)"),
        "no",
    )?;
    if keep == "yes" {
        let (_, persisted) = network::confirm(root)?;
        writeln!(out, "kept")?;
        super::central::follow_config(root, persisted);
        Ok(0)
    } else {
        let r = network::rollback(root, None)?;
        writeln!(out, "rolled back: {}", r.map(|a| a.summary()).unwrap_or_default())?;
        Ok(1)
    }
}
