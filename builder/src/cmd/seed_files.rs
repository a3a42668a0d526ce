//! The files `builder customize` and `builder flash` write into a seed,
//! each checked before anything is written.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flypack_contracts::seed;
use flypack_engine::pki;

/// What to put on the seed.
#[derive(Debug, Default)]
pub struct Wanted<'a> {
    /// A unit config (unit.toml).
    pub unit: Option<&'a Path>,
    /// A fleet inventory (fleet.toml).
    pub fleet: Option<&'a Path>,
    /// A fleet backup key, of which the unit part goes on the seed.
    pub backup_key: Option<&'a Path>,
    /// A fleet CA (`builder fleet-ca new`) that signs a certificate for the
    /// unit config's names.
    pub fleet_ca: Option<&'a Path>,
    /// A file holding the central monitoring's password for the unit.
    pub central_password: Option<&'a Path>,
}

/// Seed files: (name, content).
pub type Files = Vec<(&'static str, Vec<u8>)>;

/// The seed files and one line per file saying what it is.
pub fn collect(w: &Wanted<'_>) -> Result<(Files, Vec<String>)> {
    let mut files = Vec::new();
    let mut summary = Vec::new();
    let mut unit = None;
    if let Some(u) = w.unit {
        let text = std::fs::read_to_string(u).with_context(|| format!("reading {}", u.display()))?;
        let parsed = flypack_contracts::unit::parse_unit(u, &text)?;
        summary.push(format!("unit.toml (hostname {})", parsed.hostname));
        files.push((seed::UNIT_FILE, text.into_bytes()));
        unit = Some(parsed);
    }
    if let Some(f) = w.fleet {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let fleet = flypack_contracts::unit::parse_fleet(f, &text)?;
        summary.push(format!("fleet.toml ({} units)", fleet.units.len()));
        files.push((seed::FLEET_FILE, text.into_bytes()));
    }
    if let Some(k) = w.backup_key {
        let key = flypack_engine::backup::UnitKey::load(k)?;
        summary.push(format!("backup-key.toml ({} recipient(s))", key.recipients.len()));
        files.push((seed::BACKUP_KEY_FILE, key.to_toml().into_bytes()));
    }
    if let Some(ca_path) = w.fleet_ca {
        let Some(unit) = &unit else {
            bail!("--fleet-ca signs a certificate for the unit config's names: give that config with --unit too");
        };
        let ca = load_fleet_ca(ca_path)?;
        let names = pki::unit_names(unit);
        let leaf = pki::issue_unit_cert(&ca, &names)?;
        summary.push(format!(
            "web app certificate for {} signed by the fleet CA {}",
            names.all().join(", "),
            pki::fingerprint_sha256(&ca.cert_pem)?
        ));
        files.push((seed::TLS_CA_FILE, ca.cert_pem.into_bytes()));
        files.push((seed::TLS_CERT_FILE, leaf.cert_pem.into_bytes()));
        files.push((seed::TLS_KEY_FILE, leaf.key_pem.into_bytes()));
    }
    if let Some(p) = w.central_password {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let line = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if let Some(why) = seed::central_password_problem(line) {
            bail!("{}: {why}", p.display());
        }
        summary.push("central-password (secret)".into());
        files.push((seed::CENTRAL_PASSWORD_FILE, line.as_bytes().to_vec()));
    }
    Ok((files, summary))
}

/// `CA.pem` → `CA.crt`: the certificate alone, for phones.
pub fn cert_path(ca: &Path) -> PathBuf {
    ca.with_extension("crt")
}

/// Reads a fleet CA file (its certificate, then its key, PEM) and checks
/// that the two belong together.
pub fn load_fleet_ca(path: &Path) -> Result<pki::CertKey> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the fleet CA {} (make one with `builder fleet-ca new`)",
            path.display()
        )
    })?;
    let Some(at) = text.find("-----BEGIN PRIVATE KEY-----") else {
        bail!(
            "{} holds no private key: give the fleet CA file `builder fleet-ca new` wrote (FILE.pem), not its .crt",
            path.display()
        );
    };
    let ca = pki::CertKey {
        cert_pem: text[..at].trim_start().to_string(),
        key_pem: text[at..].to_string(),
    };
    if !pki::key_fits(&ca.cert_pem, &ca.key_pem).with_context(|| format!("reading {}", path.display()))? {
        bail!("{}: its key is not the key of its certificate", path.display());
    }
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_ca_signs_the_unit_configs_names_and_its_key_stays_off_the_seed() {
        let d = tempfile::tempdir().unwrap();
        let unit = d.path().join("unit.toml");
        std::fs::write(
            &unit,
            "version = 1\nhostname = \"fp-cam-03\"\n[[interfaces]]\nlabel = \"mgmt\"\nmatch = { name = \"eth0\" }\naddresses = [\"10.9.0.3/24\"]\n",
        )
        .unwrap();
        let ca = pki::make_fleet_ca("rig").unwrap();
        let ca_file = d.path().join("fleet-ca.pem");
        std::fs::write(&ca_file, format!("{}{}", ca.cert_pem, ca.key_pem)).unwrap();
        let (files, summary) = collect(&Wanted {
            unit: Some(&unit),
            fleet_ca: Some(&ca_file),
            ..Default::default()
        })
        .unwrap();
        let get = |n: &str| String::from_utf8(files.iter().find(|(f, _)| *f == n).unwrap().1.clone()).unwrap();
        assert_eq!(get(seed::TLS_CA_FILE), ca.cert_pem);
        let u = flypack_contracts::unit::parse_unit(&unit, &std::fs::read_to_string(&unit).unwrap()).unwrap();
        assert_eq!(
            pki::unit_cert_problem(&get(seed::TLS_CERT_FILE), &ca.cert_pem, &pki::unit_names(&u)).unwrap(),
            None
        );
        assert!(pki::key_fits(&get(seed::TLS_CERT_FILE), &get(seed::TLS_KEY_FILE)).unwrap());
        for (_, data) in &files {
            assert!(
                !String::from_utf8_lossy(data).contains(ca.key_pem.trim()),
                "the CA key went on the seed"
            );
        }
        assert!(summary.iter().any(|l| l.contains("10.9.0.3")), "{summary:?}");

        // Without the unit config there are no names to sign.
        let e = collect(&Wanted {
            fleet_ca: Some(&ca_file),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--unit"), "{e}");
        // The certificate alone is not the CA.
        let crt = d.path().join("fleet-ca.crt");
        std::fs::write(&crt, &ca.cert_pem).unwrap();
        let e = load_fleet_ca(&crt).unwrap_err().to_string();
        assert!(e.contains("holds no private key"), "{e}");
        // A key that is not the certificate's.
        let other = pki::make_fleet_ca("other").unwrap();
        std::fs::write(&crt, format!("{}{}", ca.cert_pem, other.key_pem)).unwrap();
        let e = load_fleet_ca(&crt).unwrap_err().to_string();
        assert!(e.contains("not the key of its certificate"), "{e}");
    }
}
