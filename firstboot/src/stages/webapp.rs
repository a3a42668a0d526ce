//! `webapp`: the unit's web app is serving. systemd starts it on every boot
//! (`flypack-web.service`, on its own, so that a unit whose provisioning
//! stopped short still explains itself on a phone); this stage starts it if
//! it is not running yet, then waits until `/healthz` answers over HTTPS on
//! loopback with a certificate that chains to the unit's CA and names the
//! unit (curl checks both), and prints where the app is and the CA's
//! fingerprint on the console. The wait is bounded by the stall period, as
//! every wait of a first boot: it gives up early only when systemd says the
//! service failed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flypack_contracts::cmd::{Cmd, tail};
use flypack_contracts::digest::KeyHasher;

use crate::root::Root;
use crate::runner::{Ctx, Outcome, Stage};

/// The web app's systemd unit.
pub const SERVICE: &str = "flypack-web.service";
/// Where the image installs it.
const UNIT_FILE: &str = "/usr/lib/systemd/system/flypack-web.service";
/// The CA certificate phones install (made by `flypack-web tls`).
pub const CA_CRT: &str = "/etc/flypack/tls/ca.crt";
/// A per-unit CA's key (absent with a fleet CA).
const CA_KEY: &str = "/etc/flypack/tls/ca.key";
/// The web app's config, where the HTTPS listener may be moved.
const CONFIG: &str = "/etc/flypack/webapp.toml";
/// The web app's users (made by its first enrolment, or from the config's
/// `initial_admin` when it starts).
const USERS: &str = "/var/lib/flypack/webapp/users.json";
/// The web app's binary.
const BIN: &str = "/usr/bin/flypack-web";

/// The stage.
#[derive(Debug)]
pub struct WebApp;

/// The HTTPS port the web app listens on (its config's `listen.https`, else 443).
fn https_port(root: &Root) -> Result<u16> {
    let path = root.path(CONFIG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(443),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let v: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some(listen) = v.get("listen").and_then(|l| l.get("https")) else {
        return Ok(443);
    };
    let addr: std::net::SocketAddr = listen
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{}: listen.https is not an address:port", path.display()))?;
    Ok(addr.port())
}

/// The SHA-256 fingerprint of a PEM certificate, as phones show it
/// (`AB:CD:...`).
pub fn fingerprint(pem_path: &std::path::Path) -> Result<String> {
    let out = Cmd::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem_path)
        .run()
        .with_context(|| format!("reading the fingerprint of {}", pem_path.display()))?;
    let text = out.stdout_str();
    text.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_string())
        .with_context(|| format!("openssl printed no fingerprint: {text}"))
}

fn service_state(unit: &str) -> String {
    Cmd::new("systemctl")
        .args(["show", "--property=ActiveState,SubState", "--value", unit])
        .run()
        .map(|o| o.stdout_str().split_whitespace().collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// What the service's log says: its last error lines (a restart loop buries
/// them under systemd's own), then its last lines.
fn journal_tail(unit: &str) -> String {
    let log = Cmd::new("journalctl")
        .args(["--no-pager", "--output=cat", "-n", "300", "-u", unit])
        .run()
        .map(|o| o.stdout_str())
        .unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let mut errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.to_ascii_lowercase().contains("error") && !l.contains("Failed with result"))
        .collect();
    errors.dedup();
    let errors = errors.split_off(errors.len().saturating_sub(3));
    let last = &lines[lines.len().saturating_sub(3)..];
    errors.iter().chain(last.iter()).copied().collect::<Vec<_>>().join("\n")
}

impl Stage for WebApp {
    fn name(&self) -> &'static str {
        "webapp"
    }

    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        // The certificate names the unit: a renamed or readdressed unit
        // waits for the re-issued one.
        let mut h = KeyHasher::new();
        h.part("unit", ctx.unit()?.digest());
        if let Ok(b) = std::fs::read(ctx.root.path(CONFIG)) {
            h.part("config", b);
        }
        Ok(h.finish())
    }

    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        ctx.fault_point("webapp", "mid");
        if !ctx.root.path(UNIT_FILE).is_file() {
            return Ok(Outcome::skipped("no web app in this image"));
        }
        if !ctx.root.is_live() {
            return Ok(Outcome::skipped("not the running system"));
        }
        let host = ctx.unit()?.hostname.to_string();
        let port = https_port(&ctx.root)?;
        let mut rep = ctx.reporter("webapp");
        rep.report("starting flypack-web");
        // Returns once its ExecStartPre (the TLS material) is done and the
        // server process runs (at once when systemd has started it already).
        if let Err(e) = Cmd::new("systemctl").args(["start", SERVICE]).run() {
            bail!(
                "{SERVICE} did not start ({e}); its log:\n{}\nfix what it says and run `systemctl restart {SERVICE}`",
                journal_tail(SERVICE)
            );
        }
        // Every unit certificate names localhost: this checks the app and its
        // chain; whether it names the unit is checked (and told) after.
        let url = format!("https://localhost:{port}/healthz");
        let resolve = format!("localhost:{port}:127.0.0.1");
        let ca = ctx.root.path(CA_CRT);
        let curl = |url: &str, resolve: &str| {
            Cmd::new("curl")
                .args(["--silent", "--show-error", "--fail", "--max-time", "60", "--cacert"])
                .arg(&ca)
                .args(["--resolve", resolve, url])
                .run()
        };
        let t0 = Instant::now();
        let mut last = String::new();
        loop {
            rep.report(&format!(
                "waiting for {url} ({} s){}",
                t0.elapsed().as_secs(),
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            ));
            match curl(&url, &resolve) {
                Ok(_) => break,
                Err(e) => last = tail(&e.to_string(), 2).replace('\n', " "),
            }
            let state = service_state(SERVICE);
            if state.starts_with("failed") {
                bail!(
                    "{SERVICE} failed ({state}) before {url} answered: {last}; its log:\n{}",
                    journal_tail(SERVICE)
                );
            }
            if t0.elapsed() > flypack_engine::docker::STALL {
                bail!(
                    "{url} did not answer in {} s (service {state}): {last}; its log:\n{}",
                    t0.elapsed().as_secs(),
                    journal_tail(SERVICE)
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let answered = t0.elapsed().as_secs_f64();
        // A fleet-signed certificate made for other names (a renamed or
        // restored unit) still serves; phones warn until it is re-signed.
        let named = curl(
            &format!("https://{host}:{port}/healthz"),
            &format!("{host}:{port}:127.0.0.1"),
        )
        .err()
        .map(|e| {
            let why = tail(&e.to_string(), 1);
            tracing::warn!("web app: its certificate does not name {host} ({why}): phones will warn");
            format!(
                "; its certificate does not name {host}, so phones warn: re-sign the unit with \
                 `builder customize IMAGE --unit UNIT.toml --fleet-ca CA`"
            )
        })
        .unwrap_or_default();
        let fp = fingerprint(&ca)?;
        let kind = if ctx.root.path(CA_KEY).is_file() {
            "the unit's own CA"
        } else {
            "the fleet CA"
        };
        let shown_port = if port == 443 { String::new() } else { format!(":{port}") };
        // On the console for whoever is in front of the unit: where to go,
        // and what the phone must show before it is told to trust the CA.
        tracing::info!(
            "web app: https://{host}.local{shown_port}/ (or the unit's address); first install its CA \
             from http://{host}.local/trust and check that the phone shows SHA-256 {fp}"
        );
        // No admin yet: a one-time code on the console (never in the status,
        // which anyone on the unit may read), as Cockpit-like appliances do.
        if !ctx.root.path(USERS).is_file() {
            let code = Cmd::new(BIN)
                .arg("enrol-code")
                .run()
                .context("making the first admin's enrolment code (flypack-web enrol-code)")?
                .stdout_str();
            tracing::info!(
                "web app: no admin yet: open https://{host}.local{shown_port}/enrol and enter the one-time code {} \
                 (it expires, 30 minutes by default; `sudo flypack-web enrol-code` makes a new one)",
                code.trim()
            );
        }
        Ok(Outcome::done(format!(
            "https://{host}{shown_port}/ answers after {answered:.1} s; certificate by {kind}, SHA-256 {fp}{named}"
        )))
    }
}
