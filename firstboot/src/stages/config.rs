//! `config` (in the early unit, after `restore`): resolve the unit config
//! (a restored backup's, the seed's unit.toml, a fleet entry matched by DMI
//! serial or MAC, the image's defaults), validate all of it, and persist the
//! one in force. Later stages read it from the context.

use std::path::Path;

use anyhow::{Context, Result, bail};
use flypack_contracts::digest::KeyHasher;
use flypack_contracts::unit::Unit;
use flypack_engine::pki;

use crate::config;
use crate::root::Root;
use crate::runner::{Ctx, Outcome, Stage};

/// Installs the web app's fleet-signed TLS files from the seed (`builder
/// customize --fleet-ca`) where it reads them, after checking them against
/// the unit config in force: the certificate must chain to the CA beside it,
/// name this unit, and fit the key. A per-unit CA's key goes (the fleet CA
/// signs this unit now). Returns what was done, None without such files.
pub fn install_seed_tls(root: &Root, seed: Option<&Path>, unit: &Unit) -> Result<Option<String>> {
    let loc = config::locate_seed(root, seed)?;
    let Some(tls) = config::read_seed(&loc)?.and_then(|f| f.tls) else {
        return Ok(None);
    };
    let fix = "sign the unit again with `builder customize IMAGE --unit UNIT.toml --fleet-ca CA`, \
               or remove tls-ca.crt, tls-unit.crt and tls-unit.key from the seed (the unit then makes its own CA)";
    let names = pki::unit_names(unit);
    let problem = pki::unit_cert_problem(&tls.cert, &tls.ca, &names)
        .with_context(|| format!("the seed's TLS files are not certificates: {fix}"))?;
    if let Some(why) = problem {
        bail!(
            "the seed's unit certificate does not fit this unit ({}): {why}; {fix}",
            unit.hostname
        );
    }
    if !pki::key_fits(&tls.cert, &tls.key).with_context(|| format!("the seed's tls-unit.key: {fix}"))? {
        bail!("the seed's tls-unit.key is not the key of tls-unit.crt: {fix}");
    }
    let dir = root.path(pki::TLS_DIR);
    let have = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let fp = pki::fingerprint_sha256(&tls.ca)?;
    if have(pki::CA_CRT).as_deref() == Some(tls.ca.as_str())
        && have(pki::UNIT_CRT).as_deref() == Some(tls.cert.as_str())
        && have(pki::UNIT_KEY).as_deref() == Some(tls.key.as_str())
        && have(pki::CA_KEY).is_none()
    {
        return Ok(Some(format!("fleet CA {fp} (unchanged)")));
    }
    let leaf = pki::CertKey {
        cert_pem: tls.cert,
        key_pem: tls.key,
    };
    pki::write_tls(root.dir(), &tls.ca, &leaf, None)?;
    flypack_contracts::atomic::remove_any(&dir.join(pki::CA_KEY))?;
    Ok(Some(format!("fleet CA {fp}")))
}

/// The stage.
#[derive(Debug)]
pub struct Config;

impl Stage for Config {
    fn name(&self) -> &'static str {
        "config"
    }
    fn early(&self) -> bool {
        true
    }
    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        // What resolution reads: the result digests it all (seed, fleets,
        // defaults, a restored config, the hardware it matched).
        let r = config::resolve_here(&ctx.root, ctx.seed.as_deref()).context("invalid unit config, nothing applied")?;
        let mut h = KeyHasher::new();
        h.part("unit", r.unit.digest());
        h.part("source", &r.source);
        // A new central password or fleet CA on the seed is installed too
        // (only this stage's combined digest is kept, never the secret). A
        // password handed over since (`firstboot central password`) is
        // installed by that command, and again by this stage when it runs.
        if let Ok(Some(files)) = config::locate_seed(&ctx.root, ctx.seed.as_deref()).and_then(|l| config::read_seed(&l))
        {
            if let Some(p) = &files.central_password {
                h.part("central-password", &p.0);
            }
            if let Some(tls) = &files.tls {
                h.part("fleet-ca", &tls.ca);
            }
        }
        Ok(h.finish())
    }
    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        let r = config::resolve_here(&ctx.root, ctx.seed.as_deref()).context("invalid unit config, nothing applied")?;
        ctx.fault_point("config", "mid");
        // The central's password and CA first: persist() turns federation
        // on only when the password is there.
        let central = match config::stack_compose(&ctx.root) {
            Some(compose) => {
                let loc = config::locate_seed(&ctx.root, ctx.seed.as_deref())?;
                // An unreadable seed was dealt with by resolution: a handed
                // password still goes in.
                let files = config::read_seed(&loc).ok().flatten();
                config::install_central(&ctx.root, files.as_ref(), &compose)?
            }
            None => None,
        };
        config::persist(&ctx.root, &r)?;
        let mut what = format!("{} ({}): hostname {}", r.source, r.reason, r.unit.hostname);
        if let Some(c) = central {
            what.push_str(&format!("; from the seed: {c}"));
        }
        if let Some(tls) = install_seed_tls(&ctx.root, ctx.seed.as_deref(), &r.unit)? {
            what.push_str(&format!("; web app TLS from the seed, {tls}"));
        }
        ctx.set_unit(r.unit);
        Ok(Outcome::done(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flypack_contracts::seed;

    fn unit(hostname: &str) -> Unit {
        flypack_contracts::unit::parse_unit(
            Path::new("unit.toml"),
            &format!(
                "version = 1\nhostname = \"{hostname}\"\n[[interfaces]]\nlabel = \"mgmt\"\nmatch = {{ name = \"eth0\" }}\naddresses = [\"10.1.0.2/24\"]\n"
            ),
        )
        .unwrap()
    }

    /// A seed (FAT made by mkfs.vfat) holding `files`.
    fn seed_with(dir: &Path, files: &[(&str, &[u8])]) -> std::path::PathBuf {
        let p = dir.join("seed.img");
        std::fs::File::create(&p).unwrap().set_len(16 << 20).unwrap();
        let o = std::process::Command::new("mkfs.vfat")
            .args(["-n", "FLYPACKSEED"])
            .arg(&p)
            .output()
            .expect("mkfs.vfat (dosfstools)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        seed::write(&p, 0, 16 << 20, files, &[]).unwrap();
        p
    }

    fn bundle(ca: &pki::CertKey, leaf: &pki::CertKey) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (seed::TLS_CA_FILE, ca.cert_pem.clone().into_bytes()),
            (seed::TLS_CERT_FILE, leaf.cert_pem.clone().into_bytes()),
            (seed::TLS_KEY_FILE, leaf.key_pem.clone().into_bytes()),
        ]
    }

    fn refs<'a>(v: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
        v.iter().map(|(n, d)| (*n, d.as_slice())).collect()
    }

    #[test]
    fn a_fleet_signed_bundle_that_names_the_unit_is_installed_and_replaces_a_unit_ca() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path().join("root"));
        let u = unit("fp-07");
        // The unit had made its own CA before.
        pki::ensure_unit_tls(root.dir(), &u).unwrap();
        assert!(root.path("/etc/flypack/tls/ca.key").is_file());
        let ca = pki::make_fleet_ca("rig").unwrap();
        let leaf = pki::issue_unit_cert(&ca, &pki::unit_names(&u)).unwrap();
        let files = bundle(&ca, &leaf);
        let s = seed_with(d.path(), &refs(&files));
        let done = install_seed_tls(&root, Some(&s), &u).unwrap().unwrap();
        let fp = pki::fingerprint_sha256(&ca.cert_pem).unwrap();
        assert_eq!(done, format!("fleet CA {fp}"));
        assert_eq!(
            std::fs::read_to_string(root.path("/etc/flypack/tls/ca.crt")).unwrap(),
            ca.cert_pem
        );
        assert_eq!(
            std::fs::read_to_string(root.path("/etc/flypack/tls/unit.key")).unwrap(),
            leaf.key_pem
        );
        assert!(
            !root.path("/etc/flypack/tls/ca.key").exists(),
            "the unit's own CA key stays"
        );
        assert_eq!(
            install_seed_tls(&root, Some(&s), &u).unwrap().unwrap(),
            format!("fleet CA {fp} (unchanged)")
        );
        // The web app's own check then keeps it.
        let out = pki::ensure_unit_tls(root.dir(), &u).unwrap();
        assert_eq!(
            (out.ca, out.action.as_str()),
            (pki::CaKind::Fleet, "kept the unit certificate")
        );
        // No TLS files on the seed: nothing to do.
        let d2 = tempfile::tempdir().unwrap();
        let empty = seed_with(d2.path(), &[]);
        assert_eq!(install_seed_tls(&root, Some(&empty), &u).unwrap(), None);
    }

    #[test]
    fn a_hostile_or_mismatched_bundle_is_refused_and_nothing_is_written() {
        let ca = pki::make_fleet_ca("rig").unwrap();
        let u = unit("fp-07");
        let other = pki::issue_unit_cert(&ca, &pki::unit_names(&unit("fp-08"))).unwrap();
        let leaf = pki::issue_unit_cert(&ca, &pki::unit_names(&u)).unwrap();
        let stranger_ca = pki::make_fleet_ca("elsewhere").unwrap();
        let swapped_key = pki::CertKey {
            cert_pem: leaf.cert_pem.clone(),
            key_pem: other.key_pem.clone(),
        };
        let garbage = pki::CertKey {
            cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key_pem: "x".into(),
        };
        let cases: [(&pki::CertKey, &pki::CertKey, &str); 4] = [
            (&ca, &other, "does not name fp-07"),
            (&stranger_ca, &leaf, "not signed by ca.crt"),
            (&ca, &swapped_key, "is not the key of tls-unit.crt"),
            (&ca, &garbage, "not certificates"),
        ];
        for (ca, leaf, want) in cases {
            let d = tempfile::tempdir().unwrap();
            let root = Root::new(d.path().join("root"));
            let files = bundle(ca, leaf);
            let s = seed_with(d.path(), &refs(&files));
            let e = format!("{:#}", install_seed_tls(&root, Some(&s), &u).unwrap_err());
            assert!(e.contains(want) && e.contains("builder customize"), "{want}: {e}");
            assert!(!root.path("/etc/flypack/tls").exists(), "{want}: written anyway");
        }
    }
}
