//! `builder inventory`: the fleet's Ansible inventory, generated from the
//! fleet inventories (one `fleet.toml` per flypack), so that no one keeps a
//! hand copy of addresses that the unit configs already hold.
//!
//! Each unit is a host named by its hostname, with `ansible_host` its first
//! static address on a management-zone link (the LAN that SSH is open on);
//! a unit whose management link uses DHCP is reached by its hostname. Groups:
//! `flypack_NAME` (the fleet file's `flypack`, else its file name),
//! `role_ROLE` (the unit config's role) and `segment_NET` (the management
//! subnet, e.g. `segment_10_10_0_0_24`, or `segment_dhcp`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use flypack_contracts::unit::{Fleet, IpCidr, Unit, Zone, parse_fleet, valid_flypack_name};
use serde::{Serialize, Serializer};
use serde_json::json;

use crate::cli::InventoryArgs;
use crate::progress::{Mode, Reporter};

/// Text from a fleet file, which Ansible must never template: tagged
/// `!unsafe`, so a role like `{{ lookup('pipe', ...) }}` stays text instead
/// of running on the laptop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsafe(pub String);

impl Serialize for Unsafe {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        yaml_serde::value::TaggedValue {
            tag: yaml_serde::value::Tag::new("unsafe"),
            value: yaml_serde::Value::String(self.0.clone()),
        }
        .serialize(s)
    }
}

/// One host's variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostVars {
    /// Where SSH reaches it (absent: its hostname).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ansible_host: Option<String>,
    /// The flypack it belongs to.
    pub flypack_name: Unsafe,
    /// Its management segment (`10.10.0.0/24`, or `dhcp`).
    pub flypack_segment: String,
    /// Its role, as the unit config says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flypack_role: Option<Unsafe>,
    /// Its DMI serial, as the fleet file says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flypack_serial: Option<Unsafe>,
}

/// A group: its hosts (variables live on the flypack group's entries).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Hosts, by name.
    pub hosts: BTreeMap<String, Option<HostVars>>,
}

/// The inventory, in Ansible's YAML inventory shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// The `all` group.
    pub all: All,
}

/// `all`: the connection variables and the groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct All {
    /// Variables every host shares.
    pub vars: BTreeMap<String, String>,
    /// The groups.
    pub children: BTreeMap<String, Group>,
}

/// A group name from free text: lower-case letters, digits and '_'.
fn group_part(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    out.trim_matches('_').to_string()
}

/// The subnet of an address, as text (`10.10.0.0/24`).
fn subnet(c: &IpCidr) -> String {
    match c.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(c.prefix)).unwrap_or(0);
            format!("{}/{}", std::net::Ipv4Addr::from(u32::from(a) & mask), c.prefix)
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(c.prefix)).unwrap_or(0);
            format!("{}/{}", std::net::Ipv6Addr::from(u128::from(a) & mask), c.prefix)
        }
    }
}

/// Where SSH reaches a unit, and its segment: the first static address of
/// its management links (IPv4 first), else DHCP (its hostname).
fn management(u: &Unit) -> (Option<String>, String) {
    let links = u.links();
    let mgmt: Vec<_> = links.iter().filter(|l| l.zone == Zone::Management).collect();
    let statics: Vec<&IpCidr> = mgmt.iter().flat_map(|l| l.statics.iter()).collect();
    let pick = statics
        .iter()
        .find(|c| c.addr.is_ipv4())
        .or_else(|| statics.first())
        .copied();
    match pick {
        Some(c) => (Some(c.addr.to_string()), subnet(c)),
        None => (None, "dhcp".into()),
    }
}

/// Builds the inventory of several flypacks: (name, fleet) pairs.
pub fn build(flypacks: &[(String, Fleet)], user: &str) -> Result<Inventory> {
    let mut children: BTreeMap<String, Group> = BTreeMap::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (name, fleet) in flypacks {
        let fgroup = format!("flypack_{}", group_part(name));
        children.entry(fgroup.clone()).or_default();
        for (serial, _, unit) in &fleet.units {
            let host = unit.hostname.as_str().to_string();
            if let Some(other) = seen.insert(host.clone(), name.clone()) {
                bail!(
                    "the hostname {host:?} is in flypack {other:?} and in flypack {name:?}: Ansible needs one name \
                     per host; rename one of the units in its fleet file"
                );
            }
            let (addr, segment) = management(unit);
            let vars = HostVars {
                ansible_host: addr,
                flypack_name: Unsafe(name.clone()),
                flypack_segment: segment.clone(),
                flypack_role: unit.role.clone().map(Unsafe),
                flypack_serial: serial.clone().map(Unsafe),
            };
            children
                .entry(fgroup.clone())
                .or_default()
                .hosts
                .insert(host.clone(), Some(vars));
            if let Some(r) = unit.role.as_deref().map(group_part).filter(|r| !r.is_empty()) {
                children
                    .entry(format!("role_{r}"))
                    .or_default()
                    .hosts
                    .insert(host.clone(), None);
            }
            children
                .entry(format!("segment_{}", group_part(&segment)))
                .or_default()
                .hosts
                .insert(host, None);
        }
    }
    let vars = BTreeMap::from([
        ("ansible_user".to_string(), user.to_string()),
        ("ansible_python_interpreter".to_string(), "/usr/bin/python3".to_string()),
    ]);
    Ok(Inventory {
        all: All { vars, children },
    })
}

/// The flypack's name: the file's `flypack`, else its file name.
fn flypack_name(path: &Path, fleet: &Fleet) -> Result<String> {
    if let Some(n) = &fleet.flypack {
        return Ok(n.clone());
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_suffix(".fleet").unwrap_or(&stem).to_string();
    if valid_flypack_name(&stem) && stem != "fleet" {
        return Ok(stem);
    }
    bail!(
        "{}: which flypack is this? Name it in the file (flypack = \"truck-a\" at the top), \
         or name the file after it (truck-a.toml)",
        path.display()
    )
}

/// Writes each unit's config as DIR/HOSTNAME.toml (a hostname is a valid
/// file name: the unit config's rules allow letters, digits and dashes).
fn write_unit_configs(flypacks: &[(String, Fleet)], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, fleet) in flypacks {
        for (_, _, u) in &fleet.units {
            let text = format!(
                "# Unit {} of flypack {name}, written by `builder inventory` from its fleet file:\n\
                 # edit the fleet file and regenerate.\n{}",
                u.hostname.as_str(),
                u.to_toml()
            );
            let path = dir.join(format!("{}.toml", u.hostname.as_str()));
            flypack_contracts::atomic::write_atomic(&path, text.as_bytes(), 0o644)?;
        }
    }
    Ok(())
}

/// Runs `builder inventory`.
pub fn run(a: &InventoryArgs, rep: &Reporter) -> Result<i32> {
    let mut flypacks: Vec<(String, Fleet)> = Vec::new();
    for (i, p) in a.fleets.iter().enumerate() {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let fleet = parse_fleet(p, &text)?;
        let name = flypack_name(p, &fleet)?;
        if let Some(j) = flypacks.iter().position(|(n, _)| *n == name) {
            bail!(
                "{} and {} both name the flypack {name:?}: one fleet file per flypack",
                a.fleets[j].display(),
                a.fleets[i].display()
            );
        }
        flypacks.push((name, fleet));
    }
    let inv = build(&flypacks, &a.user)?;
    let yaml = format!(
        "# Generated by `builder inventory` from {}: regenerate, do not edit.\n{}",
        a.fleets
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        yaml_serde::to_string(&inv).context("writing the inventory as YAML")?
    );
    let hosts: usize = flypacks.iter().map(|(_, f)| f.units.len()).sum();
    if let Some(dir) = &a.unit_configs {
        write_unit_configs(&flypacks, dir)?;
    }
    match &a.out {
        Some(out) => {
            flypack_contracts::atomic::write_atomic(out, yaml.as_bytes(), 0o644)?;
            if rep.mode() == Mode::Json {
                rep.event(
                    "result",
                    json!({ "inventory": out, "flypacks": flypacks.len(), "hosts": hosts }),
                );
            } else {
                eprintln!(
                    "inventory: {} ({} flypack(s), {hosts} unit(s)); try: ansible -i {} all -m ping",
                    out.display(),
                    flypacks.len(),
                    out.display()
                );
            }
        }
        None => print!("{yaml}"),
    }
    Ok(0)
}
