//! The web app's TLS: the certificates come from `flypack_engine::pki`
//! (re-exported here); this adds the server's rustls config and the CA in
//! the forms phones install.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
pub use flypack_engine::pki::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The CA certificate for download (PEM, DER), from the TLS folder.
#[derive(Debug, Clone)]
pub struct CaDownload {
    /// PEM.
    pub pem: String,
    /// DER.
    pub der: Vec<u8>,
    /// SHA-256 fingerprint.
    pub fingerprint: String,
    /// Its subject's common name.
    pub name: String,
}

/// Reads the CA certificate under `root`.
pub fn ca_download(root: &Path) -> Result<CaDownload> {
    let path = crate::paths::under(root, crate::paths::TLS_DIR).join(CA_CRT);
    let pem = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let der = pem_to_der(&pem).with_context(|| format!("reading {}", path.display()))?;
    let name = x509_parser::parse_x509_certificate(&der)
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_string))
        })
        .unwrap_or_else(|| "Flypack CA".into());
    Ok(CaDownload {
        fingerprint: fingerprint_sha256(&pem)?,
        pem,
        der,
        name,
    })
}

/// An iOS configuration profile (.mobileconfig) that installs `ca` as a
/// trusted root (then: Settings > General > About > Certificate Trust Settings).
pub fn mobileconfig(ca: &CaDownload, hostname: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&ca.der);
    let digest = Sha256::digest(&ca.der);
    let uuid = |salt: u8| -> String {
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[0] ^= salt;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        uuid::Uuid::from_bytes(b).to_string().to_uppercase()
    };
    let id = hex::encode(&digest[..8]);
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>PayloadCertificateFileName</key>
      <string>flypack-ca.cer</string>
      <key>PayloadContent</key>
      <data>{b64}</data>
      <key>PayloadDescription</key>
      <string>Trusts the Flypack CA that signs the web app's certificate.</string>
      <key>PayloadDisplayName</key>
      <string>{name}</string>
      <key>PayloadIdentifier</key>
      <string>org.flypack.ca.{id}.cert</string>
      <key>PayloadType</key>
      <string>com.apple.security.root</string>
      <key>PayloadUUID</key>
      <string>{u1}</string>
      <key>PayloadVersion</key>
      <integer>1</integer>
    </dict>
  </array>
  <key>PayloadDescription</key>
  <string>Installs the certificate authority of the Flypack unit {host} (SHA-256 {fp}).</string>
  <key>PayloadDisplayName</key>
  <string>{name}</string>
  <key>PayloadIdentifier</key>
  <string>org.flypack.ca.{id}</string>
  <key>PayloadRemovalDisallowed</key>
  <false/>
  <key>PayloadType</key>
  <string>Configuration</string>
  <key>PayloadUUID</key>
  <string>{u2}</string>
  <key>PayloadVersion</key>
  <integer>1</integer>
</dict>
</plist>
"#,
        name = esc(&ca.name),
        host = esc(hostname),
        fp = ca.fingerprint,
        u1 = uuid(1),
        u2 = uuid(2),
    )
}

/// The rustls server config from the unit chain and key under `root`.
pub fn server_config(root: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let dir = crate::paths::under(root, crate::paths::TLS_DIR);
    let crt = dir.join(UNIT_CRT);
    let key = dir.join(UNIT_KEY);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&crt)
        .with_context(|| format!("reading {}", crt.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading the certificates in {}", crt.display()))?;
    if chain.is_empty() {
        bail!("{}: no certificate", crt.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "the key in {} does not fit {}",
                dir.join(UNIT_KEY).display(),
                crt.display()
            )
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_downloads_and_serves() {
        let dir = tempfile::tempdir().unwrap();
        let names = UnitNames {
            hostname: "fp-02".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        ensure_tls(dir.path(), &names).unwrap();
        server_config(dir.path()).unwrap();
        let ca = ca_download(dir.path()).unwrap();
        assert_eq!(ca.name, "Flypack unit CA (fp-02)");
        let mc = mobileconfig(&ca, "fp-02");
        assert!(mc.contains("<string>com.apple.security.root</string>"));
    }
}
