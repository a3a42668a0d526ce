//! Applying the unit's network config safely: write the networkd files,
//! reload networkd, verify over rtnetlink and with probes, and roll back to
//! the previous files (verifying the rollback too) when verification fails.
//! Also the operator's side: apply with a confirmation deadline that rolls
//! back by itself, confirm, roll back.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::cmd::Cmd;
use flypack_contracts::unit::{Find, Link, Unit, parse_unit};
use serde::{Deserialize, Serialize};

use crate::deadline::{now_secs, systemd_running};
use crate::netfiles::{self, Files};
use crate::netlink::{self, Snapshot};
use crate::root::Root;

/// Where network state lives.
pub const STATE_DIR: &str = "/var/lib/flypack/network";
/// The files in force before the last apply (the rollback target).
pub const PREVIOUS: &str = "/var/lib/flypack/network/previous.json";
/// The last unit config that verified.
pub const GOOD: &str = "/var/lib/flypack/network/good.toml";
/// An applied change waiting for confirmation.
pub const PENDING: &str = "/var/lib/flypack/network/pending.json";

/// The managed files on disk now.
pub fn current_files(root: &Root) -> Result<Files> {
    let mut f = Files::new();
    let dir = root.path(netfiles::NETWORK_DIR);
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let abs = format!("{}/{}", netfiles::NETWORK_DIR, e.file_name().to_string_lossy());
            if netfiles::is_managed(&abs) {
                f.insert(
                    abs,
                    std::fs::read_to_string(e.path()).with_context(|| format!("reading {}", e.path().display()))?,
                );
            }
        }
    }
    for p in [netfiles::RESOLVED_FILE, netfiles::CHRONY_FILE] {
        if let Ok(t) = std::fs::read_to_string(root.path(p)) {
            f.insert(p.to_string(), t);
        }
    }
    Ok(f)
}

/// What changed between two sets of files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Written (new or different).
    pub written: Vec<String>,
    /// Removed.
    pub removed: Vec<String>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && self.removed.is_empty()
    }
    fn touches(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.written.iter().chain(&self.removed).any(|p| pred(p))
    }
}

/// Makes the managed files exactly `want`.
pub fn write_files(root: &Root, want: &Files) -> Result<Changes> {
    let have = current_files(root)?;
    let mut ch = Changes::default();
    for (path, text) in want {
        if have.get(path) != Some(text) {
            let p = root.path(path);
            if let Some(d) = p.parent()
                && !d.exists()
            {
                if path == netfiles::CHRONY_FILE && !root.path("/etc/chrony").exists() {
                    tracing::warn!("chrony is not installed: NTP servers are not configured");
                    continue;
                }
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            write_atomic(&p, text.as_bytes(), 0o644)?;
            ch.written.push(path.clone());
            // Between two files: a crash here leaves a mix of old and new.
            crate::runner::fault_here("files", "mid");
        }
    }
    for path in have.keys() {
        if !want.contains_key(path) {
            std::fs::remove_file(root.path(path)).with_context(|| format!("removing {path}"))?;
            ch.removed.push(path.clone());
        }
    }
    Ok(ch)
}

/// VLAN netdevs whose definition changed or went away: networkd (252) does
/// not update an existing netdev, so the link is deleted and recreated.
fn stale_netdevs(old: &Files, new: &Files) -> Vec<String> {
    old.iter()
        .filter(|(p, _)| p.ends_with(".netdev"))
        .filter(|(p, t)| new.get(*p) != Some(t))
        .filter_map(|(_, t)| t.lines().find_map(|l| l.strip_prefix("Name=")).map(str::to_string))
        .collect()
}

/// The network change's deadline.
const DEADLINE: crate::deadline::Kind = crate::deadline::Kind {
    subcommand: "network",
    unit_prefix: "flypack-net-rollback-",
    description: "Flypack: roll back an unconfirmed network change",
};

/// Deletes the stale VLANs that exist; returns their parents (sorted, once each).
fn delete_stale(stale: &[String], notes: &mut Vec<String>) -> Result<Vec<String>> {
    let mut parents = Vec::new();
    for name in stale {
        if let Some(parent) = netlink::delete_link(name)? {
            notes.push(format!("deleted {name} so networkd recreates it"));
            parents.extend(parent);
        }
    }
    parents.sort();
    parents.dedup();
    Ok(parents)
}

/// Makes running services pick up changed files.
pub fn reload(root: &Root, old: &Files, new: &Files, ch: &Changes) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if !root.is_live() || ch.is_empty() {
        return Ok(notes);
    }
    let stale = stale_netdevs(old, new);
    if ch.touches(|p| p.ends_with(".link")) {
        // .link files are applied by udev when a NIC appears; networkd must
        // not act on a NIC udev is still processing (systemd #30056).
        if let Err(e) = Cmd::new("udevadm")
            .args(["trigger", "--settle", "--action=add", "--subsystem-match=net"])
            .run()
        {
            notes.push(format!("NIC tuning not applied now ({e}); it applies at the next boot"));
        }
    }
    if !stale.is_empty() && systemd_running() {
        // networkd (252) never changes a netdev that exists (systemd #9627),
        // and a running networkd recreates a deleted VLAN from the definition
        // it read at its start (systemd #34907, fixed in 257), which
        // `networkctl reload` does not replace when the parent's .network
        // changed too: the VLAN came back with its old Id. So it is
        // restarted first (the new process holds only the new files), and
        // the stale VLANs are deleted. A networkd that met the old VLAN
        // before the deletion then never recreated it (a rollback in CI found
        // no VLAN at all), so it is restarted once more with them gone, and
        // creates them from the new files. Restarts, not stop and start:
        // networkd keeps its DHCP leases across a restart.
        let restart = |why: &str| {
            Cmd::new("systemctl")
                .args(["restart", "systemd-networkd.service"])
                .run()
                .with_context(|| format!("restarting systemd-networkd {why}"))
        };
        restart("to recreate a changed VLAN")?;
        let deleted = delete_stale(&stale, &mut notes);
        restart("after deleting a changed VLAN")?;
        let parents = deleted?;
        if !parents.is_empty() {
            Cmd::new("networkctl")
                .arg("reconfigure")
                .args(&parents)
                .run()
                .context("reconfiguring the VLANs' parent links")?;
        }
    } else {
        // Without systemd (the namespace rig runs networkd by hand) the
        // reload reads the files; a changed VLAN is recreated by the
        // reconfigured parent.
        let parents = delete_stale(&stale, &mut notes)?;
        if ch.touches(|p| p.starts_with(netfiles::NETWORK_DIR)) {
            Cmd::new("networkctl")
                .arg("reload")
                .run()
                .context("reloading systemd-networkd (networkctl reload)")?;
        }
        if !parents.is_empty() {
            Cmd::new("networkctl")
                .arg("reconfigure")
                .args(&parents)
                .run()
                .context("reconfiguring the VLANs' parent links")?;
        }
    }
    for (file, unit) in [
        (netfiles::RESOLVED_FILE, "systemd-resolved.service"),
        (netfiles::CHRONY_FILE, "chrony.service"),
    ] {
        if ch.touches(|p| p == file) {
            if !systemd_running() {
                notes.push(format!("{unit} not restarted: systemd is not running here"));
            } else if let Err(e) = Cmd::new("systemctl").args(["try-restart", unit]).run() {
                notes.push(format!("restarting {unit} failed: {e}"));
            }
        }
    }
    Ok(notes)
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Problems that mean the config is wrong (trigger a rollback).
    pub problems: Vec<String>,
    /// Problems of the site, not the config (no carrier, no DHCP lease, DNS down).
    pub warnings: Vec<String>,
    /// What was confirmed.
    pub facts: Vec<String>,
}

impl Verification {
    /// Whether the config verified.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
    /// One line.
    pub fn summary(&self) -> String {
        if self.ok() {
            format!("verified: {}", self.facts.join("; "))
        } else {
            self.problems.join("; ")
        }
    }
}

/// Finds a config link in a snapshot (the one matching rule,
/// [`flypack_contracts::unit::Match::matches`]).
pub fn find_link<'a>(s: &'a Snapshot, l: &Link) -> Option<&'a netlink::Link> {
    s.links.iter().find(|k| l.matches(&k.seen()))
}

/// Checks the kernel's state against the config once: (problems, facts,
/// pending) where pending lists what may still settle.
fn check_state(s: &Snapshot, exps: &[Link]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut problems, mut facts, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    for e in exps {
        let Some(l) = find_link(s, e) else {
            problems.push(format!("{}: no interface {} on this hardware", e.label, e.describe()));
            continue;
        };
        if let Find::Vlan { parent, id, .. } = &e.find
            && l.vlan_id != Some(*id)
        {
            problems.push(format!(
                "{}: is VLAN {:?}, expected VLAN {id} on {parent}",
                e.label, l.vlan_id
            ));
        }
        let have: BTreeSet<(IpAddr, u8)> = s.addrs_of(l.index).map(|a| (a.addr, a.prefix)).collect();
        for c in &e.statics {
            if !have.contains(&(c.addr, c.prefix)) {
                problems.push(format!("{}: address {c} missing on {}", e.label, l.name));
            }
        }
        if e.dhcp && !have.iter().any(|(a, _)| a.is_ipv4() && !a.is_loopback()) {
            pending.push(format!("{}: no DHCP lease on {} yet", e.label, l.name));
        }
        if let Some(m) = e.mtu
            && l.mtu != Some(m)
        {
            problems.push(format!("{}: MTU {:?} on {}, expected {m}", e.label, l.mtu, l.name));
        }
        for g in &e.gateways {
            let ok = s
                .default_routes()
                .any(|r| r.gateway == Some(*g) && r.oif == Some(l.index));
            if !ok {
                problems.push(format!("{}: no default route via {g} on {}", e.label, l.name));
            }
        }
        if !e.statics.is_empty() {
            facts.push(format!(
                "{} ({}): {}",
                e.label,
                l.name,
                e.statics.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
            ));
        }
    }
    (problems, facts, pending)
}

/// Pings `ip` from `iface`: whether it answered.
pub fn ping(ip: IpAddr, iface: &str, count: u32) -> bool {
    let v = if ip.is_ipv6() { "-6" } else { "-4" };
    Cmd::new("ping")
        .args([v, "-n", "-q", "-c", &count.to_string(), "-W", "1", "-I", iface])
        .arg(ip.to_string())
        .run()
        .is_ok()
}

/// Asks a DNS server anything: whether it answered (even "no such name").
pub fn dns_answers(server: IpAddr) -> bool {
    Cmd::new("dig")
        .args(["+time=2", "+tries=2", "+short"])
        .arg(format!("@{server}"))
        .args([".", "SOA"])
        .run()
        .is_ok()
}

/// Verifies `unit` against the kernel's state, waiting up to `timeout` for
/// it to settle, then probes gateways and DNS servers.
pub fn verify(unit: &Unit, timeout: Duration) -> Result<Verification> {
    let exps = unit.links();
    let deadline = Instant::now() + timeout;
    let (mut problems, mut facts, mut pending);
    let mut snap;
    loop {
        snap = netlink::snapshot()?;
        (problems, facts, pending) = check_state(&snap, &exps);
        if (problems.is_empty() && pending.is_empty()) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut v = Verification {
        problems,
        warnings: pending,
        facts,
    };
    if !v.ok() {
        return Ok(v);
    }
    for e in &exps {
        let Some(l) = find_link(&snap, e) else { continue };
        for g in &e.gateways {
            if !l.carrier {
                v.warnings.push(format!(
                    "{}: no carrier on {}: gateway {g} not tested (plug the cable, then run `firstboot qa`)",
                    e.label, l.name
                ));
            } else if ping(*g, &l.name, 3) {
                v.facts.push(format!("gateway {g} answers on {}", l.name));
            } else {
                v.problems.push(format!(
                    "{}: gateway {g} does not answer on {} (wrong address, VLAN or cabling)",
                    e.label, l.name
                ));
            }
        }
    }
    for s in &unit.dns.servers {
        if dns_answers(*s) {
            v.facts.push(format!("DNS {s} answers"));
        } else {
            v.warnings.push(format!("DNS server {s} does not answer"));
        }
    }
    Ok(v)
}

/// Verifies the image's fallback (no unit-specific files): some physical
/// link gets an address, so the unit is reachable.
pub fn verify_fallback(timeout: Duration) -> Result<Verification> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = netlink::snapshot()?;
        let up: Vec<String> = s
            .links
            .iter()
            .filter(|l| l.kind.is_none() && l.name != "lo")
            .filter(|l| s.addrs_of(l.index).any(|a| a.addr.is_ipv4()))
            .map(|l| l.name.clone())
            .collect();
        if !up.is_empty() {
            return Ok(Verification {
                facts: vec![format!("fallback config: {} has an IPv4 address", up.join(", "))],
                ..Default::default()
            });
        }
        if Instant::now() >= deadline {
            return Ok(Verification {
                problems: vec!["fallback config: no interface got an IPv4 address".into()],
                ..Default::default()
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How an apply ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Applied {
    /// Files unchanged; the running state verified (or not).
    Unchanged {
        /// Verification of the running state.
        verification: Verification,
    },
    /// New files in force and verified.
    Applied {
        /// Verification.
        verification: Verification,
        /// Notes from reloading.
        notes: Vec<String>,
    },
    /// Verification failed; the previous files are back.
    RolledBack {
        /// Why the new config was refused.
        failure: Verification,
        /// Verification of the restored config.
        rollback: Verification,
    },
}

impl Applied {
    /// Whether the unit's config is in force and verified.
    pub fn ok(&self) -> bool {
        match self {
            Applied::Unchanged { verification } | Applied::Applied { verification, .. } => verification.ok(),
            Applied::RolledBack { .. } => false,
        }
    }

    /// One line.
    pub fn summary(&self) -> String {
        match self {
            Applied::Unchanged { verification } => format!("unchanged; {}", verification.summary()),
            Applied::Applied { verification, .. } => format!("applied; {}", verification.summary()),
            Applied::RolledBack { failure, rollback } => format!(
                "verification failed ({}); rolled back to the previous config, which {}",
                failure.summary(),
                if rollback.ok() {
                    format!("verified ({})", rollback.facts.join("; "))
                } else {
                    format!("did NOT verify either: {}", rollback.summary())
                }
            ),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Previous {
    files: Files,
    unit: Option<String>,
}

fn good_unit(root: &Root) -> Option<Unit> {
    let text = std::fs::read_to_string(root.path(GOOD)).ok()?;
    parse_unit(Path::new(GOOD), &text).ok()
}

/// Options for [`apply`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Only write the files (networkd is not running yet: early boot).
    pub write_only: bool,
    /// Re-verify even when nothing changed.
    pub verify_unchanged: bool,
    /// Roll back on failed verification.
    pub rollback: bool,
}

/// Applies `unit`: write, reload, verify, and roll back on failure.
pub fn apply(root: &Root, unit: &Unit, opts: &Options) -> Result<Applied> {
    let want = netfiles::render(unit);
    let old = current_files(root)?;
    let timeout = Duration::from_secs(unit.qa.settle_seconds as u64);
    if want == old {
        if opts.write_only || !opts.verify_unchanged {
            return Ok(Applied::Unchanged {
                verification: Verification {
                    facts: vec!["files already in place".into()],
                    ..Default::default()
                },
            });
        }
        let verification = verify(unit, timeout)?;
        if verification.ok() {
            write_atomic(&root.path(GOOD), unit.to_toml().as_bytes(), 0o644)?;
        } else if opts.rollback {
            // Files in place since an earlier run but not working: roll back
            // to what was there before them.
            if let Ok(bytes) = std::fs::read(root.path(PREVIOUS)) {
                let prev: Previous = serde_json::from_slice(&bytes).context("reading the previous network config")?;
                if prev.files != want {
                    return rollback_to(root, &want, prev, verification);
                }
            }
        }
        return Ok(Applied::Unchanged { verification });
    }
    std::fs::create_dir_all(root.path(STATE_DIR)).with_context(|| format!("creating {STATE_DIR}"))?;
    let prev = Previous {
        files: old.clone(),
        unit: good_unit(root).map(|u| u.to_toml()),
    };
    write_atomic(
        &root.path(PREVIOUS),
        serde_json::to_vec_pretty(&prev)?.as_slice(),
        0o600,
    )?;
    let ch = write_files(root, &want)?;
    crate::runner::fault_here("netapply", "after-write");
    if opts.write_only {
        return Ok(Applied::Applied {
            verification: Verification {
                facts: vec![format!("{} files written", ch.written.len())],
                ..Default::default()
            },
            notes: vec![],
        });
    }
    let notes = reload(root, &old, &want, &ch)?;
    let verification = verify(unit, timeout)?;
    if verification.ok() || !opts.rollback {
        if verification.ok() {
            write_atomic(&root.path(GOOD), unit.to_toml().as_bytes(), 0o644)?;
        }
        return Ok(Applied::Applied { verification, notes });
    }
    rollback_to(root, &want, prev, verification)
}

fn rollback_to(root: &Root, current: &Files, prev: Previous, failure: Verification) -> Result<Applied> {
    tracing::warn!("network verification failed: {}; rolling back", failure.summary());
    let ch = write_files(root, &prev.files)?;
    reload(root, current, &prev.files, &ch)?;
    let unit = prev.unit.as_deref().and_then(|t| parse_unit(Path::new(GOOD), t).ok());
    let rollback = match unit {
        Some(u) if netfiles::render(&u) == prev.files => verify(&u, Duration::from_secs(u.qa.settle_seconds as u64))?,
        _ => verify_fallback(Duration::from_secs(30))?,
    };
    Ok(Applied::RolledBack { failure, rollback })
}

/// A change applied over SSH, waiting for `firstboot network confirm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// Identifies this change.
    pub token: String,
    /// Seconds since the epoch after which it rolls back.
    pub deadline: u64,
    /// The files before the change.
    pub previous: Files,
    /// The unit config before the change, if it had verified.
    pub previous_unit: Option<String>,
    /// The new unit config.
    pub unit: String,
}

/// Reads the pending change, if any.
pub fn pending(root: &Root) -> Result<Option<Pending>> {
    match std::fs::read(root.path(PENDING)) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).context("reading the pending network change")?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("reading the pending network change"),
    }
}

/// Applies `unit` and arms a rollback that fires unless confirmed within
/// `secs`, independently of this process (a systemd timer, or a detached
/// process where systemd is not running).
pub fn apply_with_confirm(root: &Root, unit: &Unit, secs: u64, self_exe: &Path) -> Result<(Applied, Pending)> {
    if let Some(p) = pending(root)? {
        bail!(
            "a network change ({}) is already waiting for confirmation: run `firstboot network confirm` or `firstboot network rollback` first",
            p.token
        );
    }
    let token = crate::deadline::token();
    let pend = Pending {
        token: token.clone(),
        deadline: now_secs() + secs,
        previous: current_files(root)?,
        previous_unit: good_unit(root).map(|u| u.to_toml()),
        unit: unit.to_toml(),
    };
    std::fs::create_dir_all(root.path(STATE_DIR)).with_context(|| format!("creating {STATE_DIR}"))?;
    // Armed before anything changes: a crash from here on still rolls back.
    write_atomic(&root.path(PENDING), serde_json::to_vec_pretty(&pend)?.as_slice(), 0o600)?;
    crate::deadline::arm(root, DEADLINE, &token, secs, self_exe)?;
    let applied = apply(
        root,
        unit,
        &Options {
            write_only: false,
            verify_unchanged: true,
            rollback: true,
        },
    )?;
    if !applied.ok() {
        // Already rolled back (or never changed): nothing left to confirm.
        disarm(root, &token)?;
    }
    Ok((applied, pend))
}

fn disarm(root: &Root, token: &str) -> Result<()> {
    flypack_contracts::atomic::remove_any(&root.path(PENDING))?;
    crate::deadline::disarm(root, DEADLINE, token);
    Ok(())
}

/// Confirms the pending change: its token, and what keeping it changed.
pub fn confirm(root: &Root) -> Result<(String, crate::config::Persisted)> {
    let Some(p) = pending(root)? else {
        bail!("no network change is waiting for confirmation")
    };
    let unit = parse_unit(Path::new("pending"), &p.unit)?;
    write_atomic(&root.path(GOOD), p.unit.as_bytes(), 0o644)?;
    let persisted = crate::config::persist_local(root, &unit)?;
    disarm(root, &p.token)?;
    Ok((p.token, persisted))
}

/// Rolls the pending change back (or, with no pending change and
/// `if_pending` unset, restores the files saved before the last apply).
pub fn rollback(root: &Root, if_pending: Option<&str>) -> Result<Option<Applied>> {
    let current = current_files(root)?;
    match (pending(root)?, if_pending) {
        (Some(p), Some(t)) if p.token != t => Ok(None),
        (None, Some(_)) => Ok(None),
        (Some(p), _) => {
            let failure = Verification {
                problems: vec![format!("change {} was not confirmed in time", p.token)],
                ..Default::default()
            };
            let r = rollback_to(
                root,
                &current,
                Previous {
                    files: p.previous,
                    unit: p.previous_unit,
                },
                failure,
            )?;
            flypack_contracts::atomic::remove_any(&root.path(PENDING))?;
            Ok(Some(r))
        }
        (None, None) => {
            let bytes = std::fs::read(root.path(PREVIOUS)).context("no earlier network config to roll back to")?;
            let prev: Previous = serde_json::from_slice(&bytes).context("reading the previous network config")?;
            let failure = Verification {
                problems: vec!["rolled back on request".into()],
                ..Default::default()
            };
            Ok(Some(rollback_to(root, &current, prev, failure)?))
        }
    }
}

/// At boot: a change still pending after its deadline (power cut before
/// confirmation) is rolled back.
pub fn rollback_expired(root: &Root) -> Result<Option<Applied>> {
    match pending(root)? {
        Some(p) if now_secs() >= p.deadline => rollback(root, Some(&p.token)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Unit {
        parse_unit(Path::new("u"), text).unwrap()
    }

    #[test]
    fn write_files_converges_and_removes_stale() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        std::fs::create_dir_all(root.path(netfiles::NETWORK_DIR)).unwrap();
        std::fs::write(root.path("/etc/systemd/network/99-flypack-fallback.network"), "keep").unwrap();
        let a = unit(
            "version = 1\nhostname = \"a\"\n[[interfaces]]\nlabel = \"m\"\nmatch = { name = \"eth0\" }\ndhcp = true\n[[vlans]]\nname = \"m.5\"\nparent = \"m\"\nid = 5\ndhcp = true\n",
        );
        let fa = netfiles::render(&a);
        let ch = write_files(&root, &fa).unwrap();
        assert_eq!(ch.written.len(), 3);
        assert!(
            write_files(&root, &fa).unwrap().is_empty(),
            "second write must change nothing"
        );
        assert_eq!(current_files(&root).unwrap(), fa);
        let b = unit(
            "version = 1\nhostname = \"a\"\n[[interfaces]]\nlabel = \"m\"\nmatch = { name = \"eth0\" }\ndhcp = true\n[[vlans]]\nname = \"m.5\"\nparent = \"m\"\nid = 6\ndhcp = true\n",
        );
        let fb = netfiles::render(&b);
        let ch = write_files(&root, &fb).unwrap();
        // The id is in both the netdev and (as a comment) the network file.
        assert_eq!(
            ch.written,
            vec![
                "/etc/systemd/network/10-flypack-m.5.netdev".to_string(),
                "/etc/systemd/network/10-flypack-m.5.network".to_string()
            ]
        );
        assert_eq!(stale_netdevs(&fa, &fb), vec!["m.5".to_string()]);
        let ch = write_files(&root, &Files::new()).unwrap();
        assert_eq!(ch.removed.len(), 3);
        assert_eq!(
            std::fs::read_to_string(root.path("/etc/systemd/network/99-flypack-fallback.network")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn state_checks_name_the_problem() {
        let u = unit(
            "version = 1\nhostname = \"a\"\n[[interfaces]]\nlabel = \"media\"\nmatch = { mac = \"52:54:00:00:00:02\" }\naddresses = [\"10.1.0.5/24\"]\ngateway = \"10.1.0.1\"\nmtu = 9000\n",
        );
        let exps = u.links();
        let mut s = Snapshot::default();
        let (p, _, _) = check_state(&s, &exps);
        assert_eq!(p, vec!["media: no interface MAC 52:54:00:00:00:02 on this hardware"]);
        s.links.push(netlink::Link {
            index: 3,
            name: "enp0s3".into(),
            mac: Some("52:54:00:00:00:02".into()),
            mtu: Some(1500),
            admin_up: true,
            oper_up: true,
            carrier: true,
            kind: None,
            vlan_id: None,
            parent: None,
        });
        let (p, _, _) = check_state(&s, &exps);
        assert_eq!(
            p,
            vec![
                "media: address 10.1.0.5/24 missing on enp0s3",
                "media: MTU Some(1500) on enp0s3, expected 9000",
                "media: no default route via 10.1.0.1 on enp0s3",
            ]
        );
        s.links[0].mtu = Some(9000);
        s.addrs.push(netlink::Addr {
            index: 3,
            addr: "10.1.0.5".parse().unwrap(),
            prefix: 24,
        });
        s.routes.push(netlink::Route {
            dst: None,
            dst_len: 0,
            gateway: Some("10.1.0.1".parse().unwrap()),
            oif: Some(3),
        });
        let (p, f, pend) = check_state(&s, &exps);
        assert!(p.is_empty() && pend.is_empty(), "{p:?}");
        assert_eq!(f, vec!["media (enp0s3): 10.1.0.5/24"]);
    }
}
