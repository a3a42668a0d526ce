//! The real listeners on loopback: the HTTPS certificate chains to the CA the
//! app offers and names the unit (hostname, hostname.local, every address of
//! the unit config); plain HTTP gives only the redirect and the CA.

// Test helpers panic on what the test did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use flypack_web::config::Config;
use flypack_web::server::{self, Running};
use flypack_web::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UNIT: &str = r#"
version = 1
hostname = "fp-test-07"

[[interfaces]]
label = "mgmt"
match = { name = "eth0" }
addresses = ["192.168.77.7/24"]

[[interfaces]]
label = "media"
match = { name = "eth1" }
addresses = ["10.9.8.7/24", "fd77::7/64"]
"#;

fn scratch_unit(root: &Path) -> flypack_contracts::unit::Unit {
    let path = flypack_web::paths::under(root, flypack_web::paths::UNIT);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, UNIT).unwrap();
    flypack_contracts::unit::parse_unit(&path, UNIT).expect("the test's unit config parses")
}

async fn start(root: &Path) -> Running {
    let mut c = Config::default();
    c.listen.https = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    c.listen.http = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    c.listen.public_https_port = Some(8443);
    c.sources.exporter_url = "http://127.0.0.1:9/metrics".into();
    c.sources.victoriametrics_url = "http://127.0.0.1:9".into();
    c.sources.vmalert_url = "http://127.0.0.1:9".into();
    server::start(root, c).await.expect("the server starts")
}

/// One HTTP/1.1 request on a stream; the whole response as text.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
    path: &str,
) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn tls_get(addr: SocketAddr, ca_pem: &str, name: &str, path: &str) -> Result<String, String> {
    let cfg = server::client_config(ca_pem).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut s = connector.connect(server_name, tcp).await.map_err(|e| e.to_string())?;
    Ok(exchange(&mut s, name, path).await)
}

#[tokio::test]
async fn https_chains_to_the_offered_ca_and_names_the_unit_and_plain_http_only_redirects() {
    let dir = tempfile::tempdir().unwrap();
    let unit = scratch_unit(dir.path());
    let outcome = tls::ensure_unit_tls(dir.path(), &unit).expect("TLS material made");
    assert!(outcome.action.contains("per-unit CA"), "{outcome:?}");
    let run = start(dir.path()).await;
    let plain = run.http.expect("plain HTTP listens");

    // The CA as plain HTTP offers it: the phone's first step.
    let mut tcp = TcpStream::connect(plain).await.unwrap();
    let ca = exchange(&mut tcp, "fp-test-07.local", "/ca.pem").await;
    assert!(status_line(&ca).contains(" 200 "), "{ca}");
    let ca_pem = ca.split("\r\n\r\n").nth(1).unwrap().to_string();
    assert!(ca_pem.contains("BEGIN CERTIFICATE"), "{ca_pem}");
    let mut tcp = TcpStream::connect(plain).await.unwrap();
    let der = exchange(&mut tcp, "fp-test-07.local", "/ca.der").await;
    assert!(status_line(&der).contains(" 200 "), "{}", status_line(&der));

    // Every name and address of the unit verifies against that CA alone.
    for name in [
        "fp-test-07",
        "fp-test-07.local",
        "192.168.77.7",
        "10.9.8.7",
        "fd77::7",
        "127.0.0.1",
    ] {
        let r = tls_get(run.https, &ca_pem, name, "/healthz")
            .await
            .unwrap_or_else(|e| panic!("TLS as {name}: {e}"));
        assert!(status_line(&r).contains(" 200 "), "{name}: {r}");
        assert!(header(&r, "strict-transport-security").is_some(), "HSTS: {r}");
    }
    // A name the certificate does not carry, or another CA: refused.
    let err = tls_get(run.https, &ca_pem, "fp-other-01", "/healthz")
        .await
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("notvalidforname") || err.contains("not valid for"),
        "{err}"
    );
    let other = tls::make_fleet_ca("elsewhere").unwrap();
    let err = tls_get(run.https, &other.cert_pem, "fp-test-07", "/healthz")
        .await
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("unknownissuer") || err.contains("issuer"),
        "{err}"
    );

    // Plain HTTP serves nothing else: a redirect to the same path on HTTPS.
    for path in ["/", "/status", "/login", "/api/status", "/users"] {
        let mut tcp = TcpStream::connect(plain).await.unwrap();
        let r = exchange(&mut tcp, "fp-test-07.local:80", path).await;
        let code = status_line(&r).split_whitespace().nth(1).unwrap_or("");
        assert!(["301", "302", "303", "307", "308"].contains(&code), "{path}: {r}");
        assert_eq!(
            header(&r, "location"),
            Some(format!("https://fp-test-07.local:8443{path}").as_str()),
            "{path}"
        );
        assert!(!r.contains("<form"), "{path}: plain HTTP must not serve a page");
    }
    // A hostile Host header does not become the redirect's target host.
    let mut tcp = TcpStream::connect(plain).await.unwrap();
    let r = exchange(&mut tcp, "evil.example/\r\nX: y", "/").await;
    let loc = header(&r, "location").unwrap_or("");
    assert!(!loc.contains("evil.example/"), "{r}");
}

#[tokio::test]
async fn a_fleet_signed_certificate_is_served_and_its_ca_key_never_on_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let unit = scratch_unit(dir.path());
    let fleet = tls::make_fleet_ca("rig-a").unwrap();
    let leaf = tls::issue_unit_cert(&fleet, &tls::unit_names(&unit)).unwrap();
    tls::write_tls(dir.path(), &fleet.cert_pem, &leaf, None).unwrap();
    let outcome = tls::ensure_unit_tls(dir.path(), &unit).unwrap();
    assert!(outcome.action.contains("kept"), "{outcome:?}");
    let tls_dir = flypack_web::paths::under(dir.path(), flypack_web::paths::TLS_DIR);
    for e in std::fs::read_dir(&tls_dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        assert!(!text.contains(fleet.key_pem.trim()), "the fleet CA key is on the unit");
    }
    let run = start(dir.path()).await;
    let r = tls_get(run.https, &fleet.cert_pem, "fp-test-07.local", "/healthz")
        .await
        .unwrap();
    assert!(status_line(&r).contains(" 200 "), "{r}");
}
