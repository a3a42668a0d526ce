//! Which unit config applies, and why: the seed partition's unit.toml, then
//! a fleet inventory (the seed's, then the image's) matched by DMI serial or
//! MAC address, then the image's defaults. Everything is validated before
//! anything is applied; an invalid file is an error, never skipped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::layout::{NAME_SEED, PART_SEED};
use flypack_contracts::seed::{self, SeedFiles};
use flypack_contracts::unit::{Central, Fleet, FleetMatch, Hardware, Unit, parse_fleet, parse_unit};
use serde::Serialize;

use crate::root::Root;

/// The image's default unit config (written by the builder).
pub const DEFAULTS: &str = "/usr/share/flypack/unit.defaults.toml";
/// A fleet inventory baked into the image.
pub const IMAGE_FLEET: &str = "/usr/share/flypack/fleet.toml";
/// The resolved config, as applied.
pub const RESOLVED: &str = "/etc/flypack/unit.toml";
/// Where it came from.
pub const SOURCE: &str = "/etc/flypack/unit.source.json";
/// A copy of the unit config in force for the video exporter's container,
/// in a folder of its own (it mounts nothing else of /etc/flypack).
pub const EXPORTER_COPY: &str = "/etc/flypack/exporter/unit.toml";

/// vmalert's notifier file (`[alerting]`), in the stack's compose folder:
/// vmalert mounts `./vmalert` and rereads the file every 30 s.
pub const ALERT_NOTIFIER: &str = "vmalert/notifier.yml";

/// Where the seed is read from.
#[derive(Debug, Clone)]
pub enum SeedLocation {
    /// A block device or image file, at offset/length.
    At(PathBuf, u64, u64),
    /// No seed partition was found (with why).
    Missing(String),
}

/// The outcome of resolution.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// The config.
    pub unit: Unit,
    /// `seed:unit.toml`, `seed:fleet.toml`, `image:fleet.toml` or `defaults`.
    pub source: String,
    /// Why that source won.
    pub reason: String,
    /// Every source considered, in order, and what happened.
    pub explain: Vec<String>,
    /// The hardware it ran on.
    pub hardware: Hardware,
}

/// Values firmware vendors put where a serial number should be.
fn is_placeholder_serial(s: &str) -> bool {
    let l = s.trim().to_ascii_lowercase();
    l.is_empty()
        || l.chars().all(|c| c == '0' || c == ' ')
        || [
            "not specified",
            "to be filled by o.e.m.",
            "system serial number",
            "default string",
            "none",
            "n/a",
            "123456789",
        ]
        .contains(&l.as_str())
}

/// The DMI serial and physical NICs' MACs, from sysfs under `root`.
pub fn hardware(root: &Root) -> Hardware {
    let serial = std::fs::read_to_string(root.path("/sys/class/dmi/id/product_serial"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !is_placeholder_serial(s));
    let mut macs = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.path("/sys/class/net")) {
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names {
            // Physical NICs have a device link; VLANs, bridges and lo do not.
            if !p.join("device").exists() {
                continue;
            }
            if let Ok(m) = std::fs::read_to_string(p.join("address")) {
                let m = m.trim().to_ascii_lowercase();
                if !m.is_empty() && m != "00:00:00:00:00:00" {
                    macs.push(m);
                }
            }
        }
    }
    Hardware { serial, macs }
}

/// The name (`vda`, `sda`) of the disk the running root filesystem is on.
pub fn root_disk() -> Result<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let dev = crate::stages::disk::root_source(&mountinfo)?;
    let (disk, _) = crate::stages::disk::disk_and_partition(Path::new("/sys/class/block"), &dev)?;
    Ok(disk.file_name().context("disk name")?.to_string_lossy().into_owned())
}

/// Finds the seed partition on the disk the root filesystem is on.
pub fn seed_location(root: &Root) -> SeedLocation {
    if !root.is_live() {
        return SeedLocation::Missing("not the running system".into());
    }
    let find = || -> Result<SeedLocation> {
        let disk_name = root_disk()?;
        let sys = Path::new("/sys/class/block").join(&disk_name);
        for e in std::fs::read_dir(&sys).with_context(|| format!("listing {}", sys.display()))? {
            let p = e?.path();
            let Ok(n) = std::fs::read_to_string(p.join("partition")) else {
                continue;
            };
            if n.trim() != PART_SEED.to_string() {
                continue;
            }
            let uevent = std::fs::read_to_string(p.join("uevent")).unwrap_or_default();
            let name = p.file_name().context("partition name")?.to_string_lossy().into_owned();
            if !uevent.lines().any(|l| l == format!("PARTNAME={NAME_SEED}")) {
                return Ok(SeedLocation::Missing(format!(
                    "partition {PART_SEED} of {disk_name} ({name}) is not named {NAME_SEED}"
                )));
            }
            let sectors: u64 = std::fs::read_to_string(p.join("size"))?.trim().parse()?;
            return Ok(SeedLocation::At(PathBuf::from("/dev").join(name), 0, sectors * 512));
        }
        Ok(SeedLocation::Missing(format!(
            "{disk_name} has no partition {PART_SEED}"
        )))
    };
    find().unwrap_or_else(|e| SeedLocation::Missing(format!("{e:#}")))
}

fn read_optional(root: &Root, path: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(root.path(path)) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path}")),
    }
}

fn fleet_pick(fleet: &Fleet, hw: &Hardware) -> Option<(Unit, String)> {
    fleet.find(hw).map(|(u, why)| {
        let why = match why {
            FleetMatch::Serial(s) => format!("matched by DMI serial {s:?}"),
            FleetMatch::Mac(m) => format!("matched by MAC {m}"),
        };
        (u.clone(), why)
    })
}

/// Resolves the unit config from what is on the seed and in the image.
pub fn resolve(root: &Root, seed: &Result<Option<SeedFiles>>, hw: &Hardware) -> Result<Resolved> {
    let mut explain = Vec::new();
    let done = |unit: Unit, source: &str, reason: String, mut explain: Vec<String>| {
        explain.push(format!("=> using {source}: {reason}"));
        Ok(Resolved {
            unit,
            source: source.to_string(),
            reason,
            explain,
            hardware: hw.clone(),
        })
    };
    let hw_text = format!(
        "serial {}, MACs {}",
        hw.serial
            .as_deref()
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| "none".into()),
        if hw.macs.is_empty() {
            "none".to_string()
        } else {
            hw.macs.join(" ")
        }
    );
    explain.push(format!("hardware: {hw_text}"));
    if let Some(text) = read_optional(root, crate::backup::RESTORED_UNIT)? {
        let unit = parse_unit(Path::new(crate::backup::RESTORED_UNIT), &text)?;
        return done(
            unit,
            "backup:unit.toml",
            "restored from a backup (builder restore): the unit comes back as it was".into(),
            explain,
        );
    }
    match seed {
        Err(e) => explain.push(format!("seed: unreadable ({e:#}); trying the next source")),
        Ok(None) => explain.push("seed: no seed partition".to_string()),
        Ok(Some(s)) => {
            explain.push(format!(
                "seed: label {:?}, files {}",
                s.label,
                if s.names.is_empty() {
                    "none".into()
                } else {
                    s.names.join(", ")
                }
            ));
            if let Some(text) = &s.unit {
                let unit = parse_unit(Path::new("seed:unit.toml"), text)?;
                return done(
                    unit,
                    "seed:unit.toml",
                    "a unit.toml on the seed always wins".into(),
                    explain,
                );
            }
            explain.push("seed: no unit.toml".to_string());
            if let Some(text) = &s.fleet {
                let fleet = parse_fleet(Path::new("seed:fleet.toml"), text)?;
                match fleet_pick(&fleet, hw) {
                    Some((u, why)) => return done(u, "seed:fleet.toml", why, explain),
                    None => explain.push(format!(
                        "seed: fleet.toml has {} units, none matches {hw_text}",
                        fleet.units.len()
                    )),
                }
            } else {
                explain.push("seed: no fleet.toml".to_string());
            }
        }
    }
    match read_optional(root, IMAGE_FLEET)? {
        None => explain.push(format!("image: no fleet inventory ({IMAGE_FLEET})")),
        Some(text) => {
            let fleet = parse_fleet(Path::new(IMAGE_FLEET), &text)?;
            match fleet_pick(&fleet, hw) {
                Some((u, why)) => return done(u, "image:fleet.toml", why, explain),
                None => explain.push(format!(
                    "image: fleet inventory has {} units, none matches {hw_text}",
                    fleet.units.len()
                )),
            }
        }
    }
    let Some(text) = read_optional(root, DEFAULTS)? else {
        bail!(
            "no unit config: no unit.toml on the seed, no matching fleet entry, and the image has no {DEFAULTS}; put a unit.toml on the seed partition"
        );
    };
    let unit = parse_unit(Path::new(DEFAULTS), &text)?;
    done(
        unit,
        "defaults",
        "nothing more specific applies to this hardware".into(),
        explain,
    )
}

/// Reads the seed at its location.
pub fn read_seed(loc: &SeedLocation) -> Result<Option<SeedFiles>> {
    match loc {
        SeedLocation::At(p, off, len) => seed::read(p, *off, *len).map(Some),
        SeedLocation::Missing(_) => Ok(None),
    }
}

/// Where the seed is: the boot disk's seed partition, or `--seed FILE` (a
/// FAT image, for tests).
pub fn locate_seed(root: &Root, seed_override: Option<&Path>) -> Result<SeedLocation> {
    Ok(match seed_override {
        Some(p) => {
            let len = std::fs::metadata(p)
                .with_context(|| format!("seed {}", p.display()))?
                .len();
            SeedLocation::At(p.to_path_buf(), 0, len)
        }
        None => seed_location(root),
    })
}

/// Resolves from the live system (or `--seed FILE` for tests).
pub fn resolve_here(root: &Root, seed_override: Option<&Path>) -> Result<Resolved> {
    let loc = locate_seed(root, seed_override)?;
    let seed = read_seed(&loc);
    let mut r = resolve(root, &seed, &hardware(root))?;
    if let SeedLocation::Missing(why) = &loc {
        r.explain.insert(1, format!("seed: not found ({why})"));
    }
    Ok(r)
}

/// What [`persist`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// The config in force (or its copy for the exporter) changed.
    pub config: bool,
    /// Federation was turned on or off, or its settings changed: on a unit
    /// in service the stack must converge for that to count (the config
    /// stage's is followed by the stack stage).
    pub central: bool,
    /// Why federation is not as the config says (`[central]` with no
    /// password, settings that could not be written): for the person who
    /// kept the config, not only the journal.
    pub central_warning: Option<String>,
}

/// Writes the resolved config and its source to /etc/flypack (atomically,
/// only when changed). Says what changed.
pub fn persist(root: &Root, r: &Resolved) -> Result<Persisted> {
    let mut done = Persisted::default();
    let toml = format!(
        "# The unit config in force, resolved by firstboot from {} ({}).\n# Edit the source, not this file.\n{}",
        r.source,
        r.reason,
        r.unit.to_toml()
    );
    let path = root.path(RESOLVED);
    let same = |p: &str| std::fs::read_to_string(root.path(p)).ok().as_deref() == Some(toml.as_str());
    // The image's stack learns where alerts go (a unit without a stack: nothing to tell).
    if let Ok(b) = std::fs::read(root.path(flypack_contracts::stack::STACK_CONFIG)) {
        let written = serde_json::from_slice::<flypack_contracts::stack::StackConfig>(&b)
            .context("reading the stack config")
            .and_then(|c| write_notifier(&r.unit.alerting, &root.path(&c.compose)));
        if let Err(e) = written {
            tracing::warn!("vmalert's notifier file is not updated: {e:#}");
        }
        let central = serde_json::from_slice::<flypack_contracts::stack::StackConfig>(&b)
            .context("reading the stack config")
            .and_then(|c| write_central(&r.unit, &root.path(&c.compose)));
        match central {
            Err(e) => {
                let w = format!("the central's settings are not updated: {e:#}");
                tracing::warn!("{w}");
                // A half-done switch (the profile's file written, the
                // settings not) still wants the stack to follow.
                done.central = true;
                done.central_warning = Some(w);
            }
            Ok((changed, warning)) => {
                done.central = changed;
                if let Some(w) = &warning {
                    tracing::warn!("{w}");
                }
                done.central_warning = warning;
            }
        }
        // The node exporter's textfile folder (the last backup's time goes
        // there); missing, it logs an error at every scrape.
        let metrics = root.path(crate::backup::METRICS_DIR);
        if let Err(e) = std::fs::create_dir_all(&metrics) {
            tracing::warn!("creating {}: {e}", metrics.display());
        }
    }
    if same(RESOLVED) && same(EXPORTER_COPY) {
        return Ok(done);
    }
    std::fs::create_dir_all(path.parent().expect("has a parent"))
        .with_context(|| format!("creating {}", path.display()))?;
    write_atomic(&path, toml.as_bytes(), 0o644)?;
    let copy = root.path(EXPORTER_COPY);
    std::fs::create_dir_all(copy.parent().expect("has a parent"))
        .with_context(|| format!("creating {}", copy.display()))?;
    write_atomic(&copy, toml.as_bytes(), 0o644)?;
    let src = serde_json::json!({ "source": r.source, "reason": r.reason, "explain": r.explain, "digest": r.unit.digest(), "hardware": r.hardware });
    write_atomic(&root.path(SOURCE), serde_json::to_vec_pretty(&src)?.as_slice(), 0o644)?;
    done.config = true;
    Ok(done)
}

/// Writes vmalert's notifier file beside the stack's compose file (only
/// when it changes), from a unit config's `[alerting]`. Returns whether it
/// changed.
pub fn write_notifier(alerting: &flypack_contracts::unit::Alerting, compose: &Path) -> Result<bool> {
    let dir = compose.parent().context("the compose file has no folder")?;
    let n = dir.join(ALERT_NOTIFIER);
    let text = alerting.notifier_config();
    if std::fs::read_to_string(&n).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    std::fs::create_dir_all(n.parent().expect("has a parent")).with_context(|| format!("creating {}", n.display()))?;
    write_atomic(&n, text.as_bytes(), 0o644)?;
    Ok(true)
}

/// The stack's compose file on this root, when the image has a stack.
pub fn stack_compose(root: &Root) -> Option<PathBuf> {
    let b = std::fs::read(root.path(flypack_contracts::stack::STACK_CONFIG)).ok()?;
    let c: flypack_contracts::stack::StackConfig = serde_json::from_slice(&b).ok()?;
    Some(root.path(&c.compose))
}

/// The user vmagent-central runs as (the compose file's `user:`, the
/// image's `_victoria-metrics`): the password file is its alone.
pub const CENTRAL_USER: (u32, u32) = (100, 101);

/// Installs the central password beside the stack's compose file
/// (`central/password`, 0400 for vmagent-central's user): the seed's, or
/// the one handed over since ([`crate::central`]). With it, the fleet CA the
/// central's certificate chains to (`central/ca.crt`), when the seed has it.
/// Returns what was done, for the stage's line.
pub fn install_central(root: &Root, files: Option<&SeedFiles>, compose: &Path) -> Result<Option<String>> {
    let dir = compose.parent().context("the compose file has no folder")?;
    let mut did = Vec::new();
    let seed_pw = files.and_then(|f| f.central_password.as_ref());
    if let Some(why) = seed_pw.and_then(|p| seed::central_password_problem(&p.0)) {
        bail!(
            "the seed's {}: {why}; write it again with `builder customize IMAGE --central-password FILE`",
            seed::CENTRAL_PASSWORD_FILE
        );
    }
    if let Some((p, from)) = crate::central::choose(root, seed_pw)? {
        let path = dir.join(Central::PASSWORD_FILE);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .with_context(|| format!("creating {}", path.display()))?;
        if std::fs::read_to_string(&path).ok().as_deref() != Some(p.0.as_str()) {
            write_atomic(&path, p.0.as_bytes(), 0o400)?;
        }
        let (uid, gid) = CENTRAL_USER;
        rustix::fs::chown(
            &path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .with_context(|| format!("chown {}", path.display()))?;
        did.push(from);
    }
    if let Some(tls) = files.and_then(|f| f.tls.as_ref()) {
        let path = dir.join(Central::CA_FILE);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .with_context(|| format!("creating {}", path.display()))?;
        if std::fs::read_to_string(&path).ok().as_deref() != Some(tls.ca.as_str()) {
            write_atomic(&path, tls.ca.as_bytes(), 0o444)?;
        }
        did.push("the fleet CA for the central");
    }
    Ok((!did.is_empty()).then(|| did.join(" and ")))
}

/// Writes what turns federation on or off beside the stack's compose file,
/// from a unit config's `[central]`: the `.env` (COMPOSE_PROFILES=central,
/// read by firstboot's stack and by docker-compose alike) and
/// vmagent-central's settings. Federation needs the password too (the
/// seed's, or one handed over); without it the profile stays off and the reason is returned as a
/// warning. Returns (changed, warning).
pub fn write_central(unit: &Unit, compose: &Path) -> Result<(bool, Option<String>)> {
    let dir = compose.parent().context("the compose file has no folder")?;
    let head = "# Written by firstboot from the unit config's [central] table. Edit that, not this file.\n";
    let mut warning = None;
    // docker-compose wants every env file to exist, a disabled profile's
    // too: off, the settings file stays, empty.
    let off = format!("{head}# No [central]: federation is off.\n");
    let (dotenv, env) = match &unit.central {
        Some(c) if dir.join(Central::PASSWORD_FILE).exists() => (
            format!("{head}COMPOSE_PROFILES=central\n"),
            c.vmagent_env(&unit.hostname, dir.join(Central::CA_FILE).exists()),
        ),
        Some(_) => {
            warning = Some(format!(
                "[central] is set but the seed had no {}: metrics are not sent to the central; \
                 add it with `builder customize IMAGE --central-password FILE`",
                seed::CENTRAL_PASSWORD_FILE
            ));
            (head.to_string(), off)
        }
        None => (head.to_string(), off),
    };
    let mut changed = false;
    let mut put = |path: PathBuf, text: String| -> Result<()> {
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        changed = true;
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .with_context(|| format!("creating {}", path.display()))?;
        write_atomic(&path, text.as_bytes(), 0o644)
    };
    // A power cut between the two writes must not leave the profile on
    // with no settings: switching on, the settings go first; switching
    // off, the switch does.
    let on = env.contains("remoteWrite_url=");
    if on {
        put(dir.join(Central::ENV_FILE), env)?;
        put(dir.join(".env"), dotenv)?;
    } else {
        put(dir.join(".env"), dotenv)?;
        put(dir.join(Central::ENV_FILE), env)?;
    }
    Ok((changed, warning))
}

/// The config in force, if one was resolved and still reads.
pub fn in_force(root: &Root) -> Option<Unit> {
    let path = root.path(RESOLVED);
    let text = std::fs::read_to_string(&path).ok()?;
    parse_unit(&path, &text).ok()
}

/// The unit config in force (what the config stage resolved, or what was
/// applied on the unit since), or why there is none.
pub fn in_force_required(root: &Root) -> Result<Unit> {
    let text = std::fs::read_to_string(root.path(RESOLVED))
        .with_context(|| format!("no unit config in force ({RESOLVED}): provisioning has not run yet"))?;
    Ok(parse_unit(Path::new(RESOLVED), &text)?)
}

/// Records a config the operator applied by hand (`firstboot network apply`)
/// as the one in force.
pub fn persist_local(root: &Root, unit: &Unit) -> Result<Persisted> {
    persist_local_because(
        root,
        unit,
        "applied on the unit with `firstboot network apply` and confirmed",
    )
}

/// Records a config changed on the unit as the one in force, saying how.
pub fn persist_local_because(root: &Root, unit: &Unit, reason: &str) -> Result<Persisted> {
    let r = Resolved {
        unit: unit.clone(),
        source: "local".into(),
        reason: reason.into(),
        explain: vec![],
        hardware: hardware(root),
    };
    persist(root, &r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "version = 1\nhostname = \"from-seed\"\n";
    const FLEET: &str = "version = 1\n[[units]]\nmacs = [\"52:54:00:f1:00:01\"]\n[units.config]\nversion = 1\nhostname = \"from-fleet\"\n";

    fn root_with(defaults: Option<&str>, image_fleet: Option<&str>) -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let r = Root::new(d.path());
        std::fs::create_dir_all(r.path("/usr/share/flypack")).unwrap();
        if let Some(t) = defaults {
            std::fs::write(r.path(DEFAULTS), t).unwrap();
        }
        if let Some(t) = image_fleet {
            std::fs::write(r.path(IMAGE_FLEET), t).unwrap();
        }
        (d, r)
    }

    fn seed(unit: Option<&str>, fleet: Option<&str>) -> Result<Option<SeedFiles>> {
        Ok(Some(SeedFiles {
            unit: unit.map(Into::into),
            fleet: fleet.map(Into::into),
            names: vec![],
            label: "FLYPACKSEED".into(),
            ..Default::default()
        }))
    }

    fn hw(mac: &str) -> Hardware {
        Hardware {
            serial: None,
            macs: vec![mac.into()],
        }
    }

    #[test]
    fn resolution_order() {
        let (_d, r) = root_with(Some("version = 1\nhostname = \"from-defaults\"\n"), Some(FLEET));
        let got = |s, h: &Hardware| resolve(&r, &s, h).unwrap();
        let x = got(seed(Some(UNIT), Some(FLEET)), &hw("52:54:00:f1:00:01"));
        assert_eq!(
            (x.unit.hostname.as_str(), x.source.as_str()),
            ("from-seed", "seed:unit.toml")
        );
        let x = got(seed(None, Some(FLEET)), &hw("52:54:00:f1:00:01"));
        assert_eq!(
            (x.unit.hostname.as_str(), x.source.as_str()),
            ("from-fleet", "seed:fleet.toml")
        );
        assert_eq!(x.reason, "matched by MAC 52:54:00:f1:00:01");
        let x = got(Ok(None), &hw("52:54:00:f1:00:01"));
        assert_eq!(x.source, "image:fleet.toml");
        let x = got(seed(None, None), &hw("52:54:00:99:99:99"));
        assert_eq!(
            (x.unit.hostname.as_str(), x.source.as_str()),
            ("from-defaults", "defaults")
        );
        assert!(x.explain.iter().any(|l| l.contains("none matches")), "{:?}", x.explain);
        let x = got(Err(anyhow::anyhow!("I/O error")), &hw("52:54:00:99:99:99"));
        assert!(
            x.explain.iter().any(|l| l.contains("seed: unreadable")),
            "{:?}",
            x.explain
        );
    }

    #[test]
    fn invalid_seed_is_an_error_naming_the_file_and_key() {
        let (_d, r) = root_with(Some("version = 1\nhostname = \"d\"\n"), None);
        let e = resolve(
            &r,
            &seed(Some("version = 1\nhostname = \"Bad Name\"\n"), None),
            &hw("x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("seed:unit.toml:2: hostname: "), "{e}");
        let e = resolve(&r, &seed(None, Some("version = 1\n[[units]]\n")), &hw("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("seed:fleet.toml"), "{e}");
    }

    #[test]
    fn no_config_at_all_says_what_to_do() {
        let (_d, r) = root_with(None, None);
        let e = resolve(&r, &Ok(None), &hw("x")).unwrap_err().to_string();
        assert!(e.contains("put a unit.toml on the seed partition"), "{e}");
    }

    #[test]
    fn placeholder_serials_are_ignored() {
        for s in ["", "0", "Not Specified", "To Be Filled By O.E.M.", "Default string"] {
            assert!(is_placeholder_serial(s), "{s}");
        }
        assert!(!is_placeholder_serial("CZJ12345"));
    }

    #[test]
    fn persist_writes_once() {
        let (_d, r) = root_with(Some("version = 1\nhostname = \"d\"\n"), None);
        let x = resolve(&r, &Ok(None), &hw("x")).unwrap();
        assert_eq!(
            persist(&r, &x).unwrap(),
            Persisted {
                config: true,
                central: false,
                central_warning: None
            }
        );
        assert_eq!(persist(&r, &x).unwrap(), Persisted::default());
        let text = std::fs::read_to_string(r.path(RESOLVED)).unwrap();
        assert!(text.contains("hostname = \"d\""), "{text}");
        assert_eq!(parse_unit(Path::new("x"), &text).unwrap(), x.unit);
        // vmalert's notifier file, beside the image's compose file: written
        // from the config in force, rewritten when [alerting] changes.
        let on_unit = "/etc/flypack/stack/monitoring/docker-compose.yml";
        let compose = r.path(on_unit);
        let stack = serde_json::json!({"compose": on_unit, "project": "monitoring", "profiles": [], "images": []});
        let cfg = r.path(flypack_contracts::stack::STACK_CONFIG);
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::write(&cfg, stack.to_string()).unwrap();
        // The config itself is unchanged; federation's files are written
        // (off) the first time there is a stack, and only then.
        assert_eq!(
            persist(&r, &x).unwrap(),
            Persisted {
                config: false,
                central: true,
                central_warning: None
            }
        );
        assert_eq!(persist(&r, &x).unwrap(), Persisted::default());
        let notifier = compose.parent().unwrap().join(ALERT_NOTIFIER);
        let n = std::fs::read_to_string(&notifier).unwrap();
        assert!(n.contains("static_configs: []"), "{n}");
        assert!(r.path(crate::backup::METRICS_DIR).is_dir());
        let text = "version = 1\nhostname = \"d\"\n[alerting]\nalertmanager = \"http://10.1.2.3:9093\"\n";
        let y = parse_unit(Path::new("x"), text).unwrap();
        assert_eq!(
            persist_local(&r, &y).unwrap(),
            Persisted {
                config: true,
                central: false,
                central_warning: None
            },
            "[alerting] is not federation"
        );
        let n = std::fs::read_to_string(&notifier).unwrap();
        assert!(n.contains("targets: [\"10.1.2.3:9093\"]"), "{n}");
        assert!(
            !write_notifier(&y.alerting, &compose).unwrap(),
            "unchanged: not rewritten"
        );
        // [central] with no password to send with: kept, and whoever kept
        // it is told federation stays off, and why.
        let z = parse_unit(
            Path::new("x"),
            &format!("{text}[central]\nurl = \"https://central.example/api/v1/write\"\nflypack = \"north\"\n"),
        )
        .unwrap();
        let p = persist_local(&r, &z).unwrap();
        assert!(p.config && !p.central, "{p:?}");
        assert!(
            p.central_warning
                .as_deref()
                .is_some_and(|w| w.contains("metrics are not sent") && w.contains("--central-password")),
            "{p:?}"
        );
    }

    #[test]
    fn central_turns_on_with_its_password_and_off_without_leaving_settings() {
        let d = tempfile::tempdir().unwrap();
        let compose = d.path().join("monitoring/docker-compose.yml");
        std::fs::create_dir_all(compose.parent().unwrap()).unwrap();
        let dir = compose.parent().unwrap();
        let unit = |extra: &str| {
            parse_unit(
                Path::new("u.toml"),
                &format!("version = 1\nhostname = \"cam-1\"\n{extra}"),
            )
            .unwrap()
        };
        let with = unit("[central]\nurl = \"https://central.example/api/v1/write\"\nflypack = \"north\"\n");
        // Configured, but no password from the seed: off, and said why.
        let (_, warn) = write_central(&with, &compose).unwrap();
        assert!(warn.unwrap().contains("central-password"));
        assert!(
            !std::fs::read_to_string(dir.join(".env"))
                .unwrap()
                .contains("COMPOSE_PROFILES")
        );
        // The seed brings the password (and the fleet CA): on.
        let files = SeedFiles {
            central_password: Some(seed::Secret("correct-horse-battery".into())),
            tls: Some(seed::SeedTls {
                ca: "CA PEM".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = Root::new(d.path());
        let did = install_central(&r, Some(&files), &compose).unwrap().unwrap();
        assert!(did.contains("central password") && did.contains("fleet CA"), "{did}");
        let pw = dir.join(Central::PASSWORD_FILE);
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&pw).unwrap();
        assert_eq!(
            (m.mode() & 0o777, m.uid(), m.gid()),
            (0o400, CENTRAL_USER.0, CENTRAL_USER.1)
        );
        assert_eq!(write_central(&with, &compose).unwrap(), (true, None));
        let dotenv = std::fs::read_to_string(dir.join(".env")).unwrap();
        assert_eq!(
            flypack_engine::compose::dotenv_profiles(&dotenv).unwrap(),
            vec!["central"]
        );
        let env = std::fs::read_to_string(dir.join(Central::ENV_FILE)).unwrap();
        assert!(
            env.contains("remoteWrite_tlsCAFile=") && env.contains("unit=cam-1"),
            "{env}"
        );
        assert_eq!(
            write_central(&with, &compose).unwrap(),
            (false, None),
            "unchanged: nothing rewritten"
        );
        // The config drops [central]: off, and its settings go (the file
        // stays, empty: docker-compose wants it).
        assert_eq!(write_central(&unit(""), &compose).unwrap(), (true, None));
        let left =
            flypack_engine::compose::parse_env_file(&std::fs::read_to_string(dir.join(Central::ENV_FILE)).unwrap());
        assert!(left.unwrap().is_empty());
        assert!(
            flypack_engine::compose::dotenv_profiles(&std::fs::read_to_string(dir.join(".env")).unwrap())
                .unwrap()
                .is_empty()
        );
        // A hostile password on the seed is refused with the fix.
        let bad = SeedFiles {
            central_password: Some(seed::Secret("short\nline".into())),
            ..Default::default()
        };
        let e = install_central(&r, Some(&bad), &compose).unwrap_err().to_string();
        assert!(e.contains("--central-password"), "{e}");
    }
}
