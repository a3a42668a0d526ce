//! Certificates (rcgen) for the unit's web app: the fleet CA `builder`
//! makes on the engineer's laptop, the per-unit CA a unit makes when it has
//! none, and the unit certificates either signs. Here, not in the web app,
//! because `builder` (fleet CA, signing at `customize`), firstboot (a seed's
//! TLS files) and the web app (`flypack-web tls`) all make or check them.
//!
//! A phone trusts one CA per fleet (or per unit, when the unit was imaged
//! without a fleet CA), installed once; every unit certificate it signs
//! names the unit: its hostname, `hostname.local`, every address in its
//! unit config, and `localhost`/127.0.0.1/::1 for checks on the unit.
//!
//! On the unit, `/etc/flypack/tls/` holds:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt` | the CA certificate (PEM) phones install |
//! | `unit.crt` | the unit certificate, then the CA certificate (PEM chain) |
//! | `unit.key` | the unit key (PKCS#8 PEM, 0600) |
//! | `ca.key` | only for a per-unit CA: its key (0600), so the unit can re-issue |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// The TLS folder on a unit.
pub const TLS_DIR: &str = "/etc/flypack/tls";

/// `abs` (an absolute path on the unit) under `root`.
fn under(root: &Path, abs: &str) -> std::path::PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// The CA certificate file in the TLS folder.
pub const CA_CRT: &str = "ca.crt";
/// The per-unit CA's key (absent with a fleet CA).
pub const CA_KEY: &str = "ca.key";
/// The unit certificate chain.
pub const UNIT_CRT: &str = "unit.crt";
/// The unit key.
pub const UNIT_KEY: &str = "unit.key";

/// Days a unit certificate is valid (iOS accepts at most 825 for a user-installed root).
pub const UNIT_CERT_DAYS: i64 = 825;
/// Years a CA certificate is valid.
pub const CA_YEARS: i64 = 10;
/// A unit certificate closer than this to its end is re-issued.
pub const RENEW_DAYS: i64 = 30;

/// A certificate and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKey {
    /// The certificate (for a unit certificate: the chain, unit first, then the CA).
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// The names a unit certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitNames {
    /// The hostname (`fp-cam-03`).
    pub hostname: String,
    /// Every address of the unit config, and the loopback addresses.
    pub addresses: Vec<IpAddr>,
}

impl UnitNames {
    /// The DNS names: hostname, hostname.local, localhost.
    pub fn dns_names(&self) -> Vec<String> {
        vec![
            self.hostname.clone(),
            format!("{}.local", self.hostname),
            "localhost".into(),
        ]
    }

    /// Every name as text (DNS names, then addresses).
    pub fn all(&self) -> Vec<String> {
        let mut v = self.dns_names();
        v.extend(self.addresses.iter().map(|a| a.to_string()));
        v
    }
}

/// The names of a unit from its config.
pub fn unit_names(unit: &flypack_contracts::unit::Unit) -> UnitNames {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for l in unit.links() {
        for a in &l.statics {
            if !addresses.contains(&a.addr) {
                addresses.push(a.addr);
            }
        }
    }
    for lo in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        if !addresses.contains(&lo) {
            addresses.push(lo);
        }
    }
    UnitNames {
        hostname: unit.hostname.to_string(),
        addresses,
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Flypack");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(365 * CA_YEARS);
    p
}

fn make_ca(common_name: &str) -> Result<CertKey> {
    let key = KeyPair::generate().context("generating a CA key")?;
    let cert = ca_params(common_name)
        .self_signed(&key)
        .with_context(|| format!("signing the CA certificate {common_name:?}"))?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Makes a fleet CA (on the engineer's laptop: `builder`), named `fleet`
/// (`Flypack fleet CA (FLEET)`).
pub fn make_fleet_ca(fleet: &str) -> Result<CertKey> {
    make_ca(&format!("Flypack fleet CA ({fleet})"))
}

/// Makes a per-unit CA (on first boot, when the image carries no fleet CA).
pub fn make_unit_ca(hostname: &str) -> Result<CertKey> {
    make_ca(&format!("Flypack unit CA ({hostname})"))
}

/// Issues a unit certificate signed by `ca`, carrying `names`. Its
/// `cert_pem` is the chain: the unit certificate, then the CA's.
pub fn issue_unit_cert(ca: &CertKey, names: &UnitNames) -> Result<CertKey> {
    issue_cert(ca, &names.hostname, &names.dns_names(), &names.addresses)
}

/// Issues a server certificate signed by `ca` for a machine that is not a
/// unit (the central's vmauth): its DNS names and addresses, the first DNS
/// name (or address) as its common name. `cert_pem` is the chain.
pub fn issue_server_cert(ca: &CertKey, dns_names: &[String], addresses: &[IpAddr]) -> Result<CertKey> {
    let cn = dns_names
        .first()
        .cloned()
        .or_else(|| addresses.first().map(IpAddr::to_string))
        .context("a server certificate needs at least one name or address")?;
    issue_cert(ca, &cn, dns_names, addresses)
}

fn issue_cert(ca: &CertKey, common_name: &str, dns_names: &[String], addresses: &[IpAddr]) -> Result<CertKey> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).context("reading the CA key")?;
    let ca_first = first_pem_cert(&ca.cert_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_first, ca_key).context("reading the CA certificate")?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Flypack");
    p.distinguished_name = dn;
    for n in dns_names {
        p.subject_alt_names.push(SanType::DnsName(
            n.clone()
                .try_into()
                .with_context(|| format!("{n:?} is not a DNS name"))?,
        ));
    }
    for a in addresses {
        p.subject_alt_names.push(SanType::IpAddress(*a));
    }
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(UNIT_CERT_DAYS);
    let key = KeyPair::generate().context("generating the key")?;
    let cert = p
        .signed_by(&key, &issuer)
        .with_context(|| format!("signing the certificate of {common_name}"))?;
    Ok(CertKey {
        cert_pem: format!("{}{}", cert.pem(), ensure_newline(&ca_first)),
        key_pem: key.serialize_pem(),
    })
}

fn ensure_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

fn first_pem_cert(pem: &str) -> Result<String> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("no certificate in the PEM text")?
        .context("reading a PEM certificate")?;
    Ok(to_pem(&der))
}

/// DER of the first certificate in PEM text.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("no certificate in the PEM text")?
        .context("reading a PEM certificate")?
        .to_vec())
}

fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// The SHA-256 fingerprint of the first certificate in PEM text, as phones
/// and browsers show it (`AB:CD:...`).
pub fn fingerprint_sha256(cert_pem: &str) -> Result<String> {
    let der = pem_to_der(cert_pem)?;
    Ok(Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Which CA signed the unit certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaKind {
    /// A fleet CA (no CA key on the unit).
    Fleet,
    /// The unit's own CA (its key is on the unit).
    Unit,
}

/// What [`ensure_unit_tls`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsOutcome {
    /// The CA in force.
    pub ca: CaKind,
    /// Its SHA-256 fingerprint (what a phone shows when installing it).
    pub ca_fingerprint: String,
    /// What was done, for the stage's detail.
    pub action: String,
    /// Names the unit certificate carries.
    pub names: Vec<String>,
}

/// Writes the TLS folder under `root`: the CA certificate, the unit chain
/// and key, and the CA key when it is a per-unit CA.
pub fn write_tls(root: &Path, ca_cert_pem: &str, unit: &CertKey, ca_key_pem: Option<&str>) -> Result<()> {
    let dir = under(root, TLS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    use flypack_contracts::atomic::write_atomic;
    if let Some(k) = ca_key_pem {
        write_atomic(&dir.join(CA_KEY), k.as_bytes(), 0o600)?;
    }
    write_atomic(&dir.join(UNIT_KEY), unit.key_pem.as_bytes(), 0o600)?;
    write_atomic(&dir.join(UNIT_CRT), unit.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&dir.join(CA_CRT), ca_cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Why a unit certificate needs re-issuing, or None when it is fine.
pub fn unit_cert_problem(unit_chain_pem: &str, ca_pem: &str, names: &UnitNames) -> Result<Option<String>> {
    use x509_parser::extensions::GeneralName;
    let leaf_der = pem_to_der(unit_chain_pem)?;
    let ca_der = pem_to_der(ca_pem)?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).context("parsing the unit certificate")?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).context("parsing the CA certificate")?;
    if leaf.issuer() != ca.subject() || leaf.verify_signature(Some(ca.public_key())).is_err() {
        return Ok(Some("it is not signed by ca.crt".into()));
    }
    let left = leaf.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
    if left < RENEW_DAYS * 86400 {
        return Ok(Some(format!("it ends in {} days", left / 86400)));
    }
    let mut have: Vec<String> = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => have.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        have.push(IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        have.push(IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let missing: Vec<String> = names.all().into_iter().filter(|n| !have.contains(n)).collect();
    if !missing.is_empty() {
        return Ok(Some(format!("it does not name {}", missing.join(", "))));
    }
    Ok(None)
}

/// Whether `key_pem` is the key of the first certificate in `cert_pem`
/// (a bundle from a seed must not pair one unit's certificate with
/// another's key).
pub fn key_fits(cert_pem: &str, key_pem: &str) -> Result<bool> {
    use rcgen::PublicKeyData;
    let key = KeyPair::from_pem(key_pem).context("reading the unit key (PKCS#8 PEM)")?;
    let der = pem_to_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).context("parsing the unit certificate")?;
    Ok(cert.public_key().raw == key.subject_public_key_info().as_slice())
}

/// Makes sure the unit has TLS material that names it (firstboot's `webapp`
/// stage): keeps a good unit certificate; re-issues it with the CA key on
/// the unit (a per-unit CA) when names changed or it is close to its end;
/// makes a per-unit CA when there is no CA at all. A fleet-signed
/// certificate that no longer fits is kept (the unit cannot sign) and the
/// outcome says so: re-sign it with `builder customize`.
pub fn ensure_unit_tls(root: &Path, unit: &flypack_contracts::unit::Unit) -> Result<TlsOutcome> {
    ensure_tls(root, &unit_names(unit))
}

/// [`ensure_unit_tls`] for explicit names (a unit with no unit config yet).
pub fn ensure_tls(root: &Path, names: &UnitNames) -> Result<TlsOutcome> {
    let names = names.clone();
    let dir = under(root, TLS_DIR);
    let ca_crt = read_opt(&dir.join(CA_CRT))?;
    let ca_key = read_opt(&dir.join(CA_KEY))?;
    let unit_crt = read_opt(&dir.join(UNIT_CRT))?;
    let unit_key = read_opt(&dir.join(UNIT_KEY))?;
    let outcome = |ca: CaKind, ca_pem: &str, action: String| -> Result<TlsOutcome> {
        Ok(TlsOutcome {
            ca,
            ca_fingerprint: fingerprint_sha256(ca_pem)?,
            action,
            names: names.all(),
        })
    };
    match (ca_crt, ca_key) {
        (Some(ca_pem), key) => {
            let kind = if key.is_some() { CaKind::Unit } else { CaKind::Fleet };
            let problem = match (&unit_crt, &unit_key) {
                (Some(c), Some(_)) => unit_cert_problem(c, &ca_pem, &names)?,
                _ => Some("there is no unit certificate".into()),
            };
            match (problem, key) {
                (None, _) => outcome(kind, &ca_pem, "kept the unit certificate".into()),
                (Some(why), Some(k)) => {
                    let ca = CertKey {
                        cert_pem: ca_pem.clone(),
                        key_pem: k.clone(),
                    };
                    let leaf = issue_unit_cert(&ca, &names)?;
                    write_tls(root, &ca_pem, &leaf, Some(&k))?;
                    outcome(kind, &ca_pem, format!("re-issued the unit certificate ({why})"))
                }
                (Some(why), None) if unit_crt.is_some() && unit_key.is_some() => outcome(
                    kind,
                    &ca_pem,
                    format!(
                        "kept the fleet-signed unit certificate although {why}: re-sign it with `builder customize`"
                    ),
                ),
                (Some(why), None) => bail!(
                    "{}: the fleet CA certificate is there but {why}, and the unit cannot sign without the fleet CA key: \
                     re-sign the unit with `builder customize`, or remove ca.crt to use a per-unit CA",
                    dir.display()
                ),
            }
        }
        (None, _) => {
            let ca = make_unit_ca(&names.hostname)?;
            let leaf = issue_unit_cert(&ca, &names)?;
            write_tls(root, &ca.cert_pem, &leaf, Some(&ca.key_pem))?;
            outcome(
                CaKind::Unit,
                &ca.cert_pem,
                "made a per-unit CA and a unit certificate".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> UnitNames {
        UnitNames {
            hostname: "fp-01".into(),
            addresses: vec!["10.0.0.5".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        }
    }

    #[test]
    fn a_unit_certificate_chains_to_its_ca_and_names_the_unit() {
        let ca = make_fleet_ca("test").unwrap();
        let leaf = issue_unit_cert(&ca, &names()).unwrap();
        assert_eq!(leaf.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(unit_cert_problem(&leaf.cert_pem, &ca.cert_pem, &names()).unwrap(), None);
        let other = make_fleet_ca("other").unwrap();
        assert_eq!(
            unit_cert_problem(&leaf.cert_pem, &other.cert_pem, &names())
                .unwrap()
                .as_deref(),
            Some("it is not signed by ca.crt")
        );
        let mut more = names();
        more.addresses.push("10.0.0.6".parse().unwrap());
        assert_eq!(
            unit_cert_problem(&leaf.cert_pem, &ca.cert_pem, &more)
                .unwrap()
                .as_deref(),
            Some("it does not name 10.0.0.6")
        );
        let fp = fingerprint_sha256(&ca.cert_pem).unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(key_fits(&leaf.cert_pem, &leaf.key_pem).unwrap());
        let stranger = issue_unit_cert(&ca, &names()).unwrap();
        assert!(!key_fits(&leaf.cert_pem, &stranger.key_pem).unwrap());
        assert!(key_fits(&leaf.cert_pem, "not a key").is_err());
    }

    #[test]
    fn ensure_makes_a_unit_ca_then_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let unit = flypack_contracts::unit::parse_unit(
            Path::new("unit.toml"),
            "version = 1\nhostname = \"fp-02\"\n[[interfaces]]\nlabel = \"mgmt\"\nmatch = { name = \"eth0\" }\naddresses = [\"10.1.0.2/24\"]\n",
        )
        .unwrap();
        let a = ensure_unit_tls(dir.path(), &unit).unwrap();
        assert_eq!(a.ca, CaKind::Unit);
        assert_eq!(a.action, "made a per-unit CA and a unit certificate");
        assert_eq!(
            a.names,
            ["fp-02", "fp-02.local", "localhost", "10.1.0.2", "127.0.0.1", "::1"]
        );
        let b = ensure_unit_tls(dir.path(), &unit).unwrap();
        assert_eq!(b.action, "kept the unit certificate");
        assert_eq!(a.ca_fingerprint, b.ca_fingerprint);
    }
}
