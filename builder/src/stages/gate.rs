//! Security gate: the packages in the root filesystem (cached or fresh)
//! against the suite's security index and, where the profile takes them,
//! its updates index, read from the archive with their signatures checked
//! (`gpgv` against the profile's keyring; every index file checked against
//! the SHA-256 the signed `InRelease` lists). A package with a newer version
//! there fails the build, unless a profile waiver with a reason and an
//! unexpired date covers it. The result goes into the manifest.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flypack_contracts::cmd::Cmd;
use flypack_contracts::manifest::{Lagging, Package, SecurityIndex, SecurityReport};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::progress::Reporter;

/// What the gate checks (from the profile).
#[derive(Debug, Clone, Serialize)]
pub struct GatePlan {
    /// Run it.
    pub enabled: bool,
    /// (base URL, distribution) of each index, e.g.
    /// (`http://deb.debian.org/debian-security`, `bookworm-security`).
    pub indices: Vec<(String, String)>,
    /// Components read.
    pub components: Vec<String>,
    /// Architecture.
    pub architecture: String,
    /// The keyring the indices must be signed by.
    pub keyring: String,
    /// Waivers: package → (reason, last day).
    pub waivers: BTreeMap<String, (String, String)>,
}

fn fetch(url: &str) -> Result<Vec<u8>> {
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::read(path).with_context(|| format!("reading {url}"));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        // An index is a few MiB: a minute at modem speed is still plenty.
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .with_context(|| format!("reading {url}"))
}

/// Verifies a clearsigned `InRelease` with `gpgv`; returns the signed text.
fn verified_release(data: &[u8], keyring: &Path, work: &Path, url: &str) -> Result<String> {
    let inrelease = work.join("InRelease");
    std::fs::write(&inrelease, data)?;
    let out = work.join("InRelease.txt");
    Cmd::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .arg("--output")
        .arg(&out)
        .arg(&inrelease)
        .run()
        .with_context(|| {
            format!(
                "{url} is not signed by a key in {}: refusing to trust its index",
                keyring.display()
            )
        })?;
    std::fs::read_to_string(&out).context("reading the verified InRelease")
}

/// The SHA-256 and size the release lists for `path`.
fn listed(release: &str, path: &str) -> Option<(String, u64)> {
    let mut in_sha = false;
    for l in release.lines() {
        if !l.starts_with(' ') {
            in_sha = l.trim_end() == "SHA256:";
            continue;
        }
        if in_sha {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 3 && f[2] == path {
                return Some((f[0].to_string(), f[1].parse().ok()?));
            }
        }
    }
    None
}

fn field<'a>(release: &'a str, key: &str) -> Option<&'a str> {
    release
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// (package, version) of every stanza of a Packages file.
fn parse_packages(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        for l in stanza.lines() {
            if let Some(v) = l.strip_prefix("Package:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("Version:") {
                version = Some(v.trim().to_string());
            }
        }
        if let (Some(n), Some(v)) = (name, version) {
            out.push((n, v));
        }
    }
    out
}

/// Whether Debian version `a` is newer than `b` (dpkg's own comparison).
fn newer(a: &str, b: &str) -> Result<bool> {
    match Cmd::new("dpkg").args(["--compare-versions", a, "gt", b]).run() {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(1) => Ok(false),
        Err(e) => Err(e).context("comparing package versions (dpkg --compare-versions)"),
    }
}

/// Reads one index (signature and digests checked): package → version.
fn read_index(
    base: &str,
    dist: &str,
    plan: &GatePlan,
    work: &Path,
) -> Result<(SecurityIndex, BTreeMap<String, String>)> {
    let base = base.trim_end_matches('/');
    let url = format!("{base}/dists/{dist}/InRelease");
    let release = verified_release(&fetch(&url)?, Path::new(&plan.keyring), work, &url)?;
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    for comp in &plan.components {
        let rel = format!("{comp}/binary-{}/Packages.xz", plan.architecture);
        let Some((sha, size)) = listed(&release, &rel) else {
            // A component the index does not carry (e.g. non-free-firmware
            // in an older suite) has nothing to lag behind.
            continue;
        };
        let data = fetch(&format!("{base}/dists/{dist}/{rel}"))?;
        let got = hex::encode(Sha256::digest(&data));
        if got != sha || data.len() as u64 != size {
            bail!("{base}/dists/{dist}/{rel} does not match its signed InRelease (SHA-256 {got}, listed {sha})");
        }
        let text = Cmd::new("xz")
            .args(["-dc"])
            .stdin_bytes(data)
            .run()
            .with_context(|| format!("decompressing {rel}"))?
            .stdout_str();
        for (n, v) in parse_packages(&text) {
            match versions.get(n.as_str()) {
                Some(old) if !newer(&v, old)? => {}
                _ => {
                    versions.insert(n, v);
                }
            }
        }
    }
    Ok((
        SecurityIndex {
            url,
            date: field(&release, "Date").unwrap_or("").to_string(),
        },
        versions,
    ))
}

/// Runs the gate over `packages` and fails the build when a package lags
/// an index without a valid waiver.
pub fn run(plan: &GatePlan, packages: &[Package], cache: &Path, rep: &Reporter) -> Result<Option<SecurityReport>> {
    let report = check(plan, packages, cache, rep)?;
    if let Some(r) = &report {
        enforce(r)?;
    }
    Ok(report)
}

/// The packages of `report` that lag an index with no valid waiver.
pub fn open(report: &SecurityReport) -> Vec<&Lagging> {
    report.newer.iter().filter(|l| l.waived.is_none()).collect()
}

/// Reads the indices and compares `packages` with them; `None` when the
/// profile turned the gate off. Lagging packages are in the report, not an
/// error: [`enforce`] decides.
pub fn check(plan: &GatePlan, packages: &[Package], cache: &Path, rep: &Reporter) -> Result<Option<SecurityReport>> {
    if !plan.enabled {
        return Ok(None);
    }
    let stage = rep.stage("gate", "checking the packages against the security index");
    std::fs::create_dir_all(cache.join("work"))?;
    let work = flypack_contracts::atomic::temp_dir_in(&cache.join("work"), "gate")?;
    let today = time::OffsetDateTime::now_utc().date();
    let mut report = SecurityReport {
        checked: time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)?
            .format(&time::format_description::well_known::Rfc3339)?,
        indices: vec![],
        newer: vec![],
    };
    let installed: BTreeMap<&str, &str> = packages
        .iter()
        .map(|p| (p.name.split(':').next().unwrap_or(&p.name), p.version.as_str()))
        .collect();
    for (base, dist) in &plan.indices {
        stage.progress(&format!("{dist} index"));
        let (idx, versions) = read_index(base, dist, plan, work.path())
            .with_context(|| format!("checking security updates in {base} {dist} (set [security] gate = false to build without, e.g. offline)"))?;
        report.indices.push(idx);
        for (name, have) in &installed {
            let Some(avail) = versions.get(*name) else { continue };
            if newer(avail, have)? {
                let waived = plan.waivers.get(*name).and_then(|(reason, until)| {
                    let until =
                        time::Date::parse(until, &time::macros::format_description!("[year]-[month]-[day]")).ok()?;
                    (until >= today).then(|| format!("{reason} (until {until})"))
                });
                report.newer.push(Lagging {
                    package: name.to_string(),
                    installed: have.to_string(),
                    available: avail.clone(),
                    index: dist.clone(),
                    waived,
                });
            }
        }
    }
    let lagging = open(&report).len();
    stage.done(&format!(
        "{} packages against {} index(es): {} lagging, {} waived",
        installed.len(),
        report.indices.len(),
        lagging,
        report.newer.len() - lagging
    ));
    Ok(Some(report))
}

/// Fails when a package of `report` lags an index with no valid waiver,
/// naming each one and the two ways out.
pub fn enforce(report: &SecurityReport) -> Result<()> {
    let open = open(report);
    if !open.is_empty() {
        bail!(
            "the image would ship packages with newer versions in the security or updates index:\n{}\n\
             rebuild the root filesystem (builder build --refresh-rootfs) to take them, or waive each in the \
             profile ([[security.waivers]] package, reason, expires)",
            open.iter()
                .map(|l| format!(
                    "  {} {} (available: {} in {})",
                    l.package, l.installed, l.available, l.index
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_listing_and_packages_parse() {
        let rel = "Origin: Debian\nDate: Sat, 28 Nov 2026 10:00:00 UTC\nMD5Sum:\n 00 1 main/binary-amd64/Packages.xz\nSHA256:\n abc 12 main/binary-amd64/Packages\n def 34 main/binary-amd64/Packages.xz\n";
        assert_eq!(listed(rel, "main/binary-amd64/Packages.xz"), Some(("def".into(), 34)));
        assert_eq!(listed(rel, "contrib/binary-amd64/Packages.xz"), None);
        assert_eq!(field(rel, "Date"), Some("Sat, 28 Nov 2026 10:00:00 UTC"));
        let p = "Package: a\nVersion: 1.0\nArchitecture: amd64\n\nPackage: b\nSource: x\nVersion: 2:3-1\n";
        assert_eq!(
            parse_packages(p),
            vec![("a".into(), "1.0".into()), ("b".into(), "2:3-1".into())]
        );
    }

    #[test]
    fn versions_compare_as_dpkg_does() {
        assert!(newer("1.2-1+deb12u1", "1.2-1").unwrap());
        assert!(!newer("1.2-1", "1.2-1+deb12u1").unwrap());
        assert!(newer("1:0.9", "2.0").unwrap());
        assert!(!newer("2.0", "2.0").unwrap());
    }
}
