//! `builder fleet-ca`: the fleet's CA for the units' web apps. A phone
//! trusts it once; every unit certificate `builder customize --fleet-ca`
//! or `builder flash --fleet-ca` signs is then trusted. Its key stays on
//! the engineer's laptop: no unit ever holds it.

use anyhow::{Context, Result, bail};
use flypack_engine::pki;
use serde_json::json;

use crate::cli::FleetCaCommand;
use crate::cmd::seed_files::{cert_path, load_fleet_ca};
use crate::progress::{Mode, Reporter};

/// Runs a `builder fleet-ca` subcommand.
pub fn run(c: &FleetCaCommand, rep: &Reporter) -> Result<i32> {
    match c {
        FleetCaCommand::New { name, out } => {
            let crt = cert_path(out);
            for p in [out, &crt] {
                if p.exists() {
                    bail!(
                        "{} exists: a new CA there would leave every phone that trusts the old one refusing \
                         the units it signs; choose another --out",
                        p.display()
                    );
                }
            }
            let ca = pki::make_fleet_ca(name)?;
            let both = format!("{}{}", ca.cert_pem, ca.key_pem);
            flypack_contracts::atomic::write_atomic(out, both.as_bytes(), 0o600)?;
            flypack_contracts::atomic::write_atomic(&crt, ca.cert_pem.as_bytes(), 0o644)?;
            let fp = pki::fingerprint_sha256(&ca.cert_pem)?;
            if rep.mode() == Mode::Json {
                rep.event("result", json!({ "ca": out, "certificate": crt, "sha256": fp }));
            } else {
                eprintln!(
                    "fleet CA:    {} (SECRET: it signs certificates every phone of the fleet trusts; keep it on this laptop and a copy offline)\n\
                     certificate: {} (install it on the phones once; or from any unit at http://UNIT/trust)\n\
                     SHA-256:     {fp}\n\
                     sign a unit: builder customize IMAGE --unit UNIT.toml --fleet-ca {}",
                    out.display(),
                    crt.display(),
                    out.display()
                );
            }
            Ok(0)
        }
        FleetCaCommand::Server {
            ca,
            names,
            addresses,
            out,
        } => {
            if names.is_empty() && addresses.is_empty() {
                bail!("name the server: --name DNS_NAME and/or --address IP, as the units reach it");
            }
            if let Some(n) = names.iter().find(|n| !flypack_contracts::unit::is_dns_name(n)) {
                bail!("--name {n:?} is not a DNS name: letters, digits, '-' and '.' (e.g. central.example.org)");
            }
            let ca = load_fleet_ca(ca)?;
            let leaf = pki::issue_server_cert(&ca, names, addresses)?;
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let (crt, key) = (out.join("tls.crt"), out.join("tls.key"));
            flypack_contracts::atomic::write_atomic(&key, leaf.key_pem.as_bytes(), 0o600)?;
            flypack_contracts::atomic::write_atomic(&crt, leaf.cert_pem.as_bytes(), 0o644)?;
            let all: Vec<String> = names
                .iter()
                .cloned()
                .chain(addresses.iter().map(|a| a.to_string()))
                .collect();
            if rep.mode() == Mode::Json {
                rep.event("result", json!({ "certificate": crt, "key": key, "names": all }));
            } else {
                eprintln!(
                    "certificate: {} (for {}, signed by the fleet CA {}; valid {} days)\nkey:         {} (secret)",
                    crt.display(),
                    all.join(", "),
                    pki::fingerprint_sha256(&ca.cert_pem)?,
                    pki::UNIT_CERT_DAYS,
                    key.display()
                );
            }
            Ok(0)
        }
        FleetCaCommand::Show { ca } => {
            let ca = load_fleet_ca(ca)?;
            println!("{}", pki::fingerprint_sha256(&ca.cert_pem)?);
            Ok(0)
        }
    }
}
