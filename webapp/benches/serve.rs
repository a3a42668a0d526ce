//! Benchmark of the real `flypack-web serve` process on loopback (issue 10).
//! Prints figures; asserts nothing. Run: `cargo bench -p flypack-web`
//! (`FLYPACK_WEB_CLIENTS=N` for another number of WebSocket clients).
//!
//! 1. RSS at idle (the sampler running, no client).
//! 2. RSS and CPU with N (200) WebSocket clients on the live page's feed at
//!    1 Hz, over 30 s; the messages each client got.
//! 3. Page latency over one keep-alive TLS connection: p50/p99 of 500
//!    GET /status (a NO-GO unit's page) and of 500 GET /healthz (no page
//!    rendering: what the TLS and HTTP layers alone cost, as a ratio).
//! 4. First-load bytes of each page: the HTML and every asset it names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flypack_web::config::Config;
use flypack_web::role::Role;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PASSWORD: &str = "a long enough password 1";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// /proc/PID: (RSS KiB, utime + stime in clock ticks).
fn proc_figures(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted from after the name.
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    (rss, ticks)
}

fn clk_tck() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A NO-GO unit's status and report, a unit config, TLS material, a user,
/// a session; the config the server reads.
fn prepare(root: &Path, https: SocketAddr) -> (String, String) {
    let put = |abs: &str, text: &str| {
        let p = flypack_web::paths::under(root, abs);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    put(flypack_web::paths::UNIT, include_str!("../../images/unit.example.toml"));
    put(
        flypack_web::paths::STATUS,
        &serde_json::json!({
            "schema": 1, "verdict": "NO-GO", "version": "0.1.0", "hostname": "fp-demo-01",
            "time": "2026-03-01T10:15:00Z", "provisioning": "done", "stages": [], "services": [],
            "reasons": ["net.carrier failed: media (eth1) has no carrier"]
        })
        .to_string(),
    );
    let mut cfg = Config::default();
    cfg.listen.https = https;
    cfg.listen.http = None;
    cfg.sources.exporter_url = "http://127.0.0.1:9/metrics".into();
    cfg.sources.victoriametrics_url = "http://127.0.0.1:9".into();
    cfg.sources.grafana_url = "http://127.0.0.1:9".into();
    cfg.sources.vmalert_url = "http://127.0.0.1:9".into();
    put(flypack_web::paths::CONFIG, &toml::to_string(&cfg).unwrap());
    let unit = flypack_web::pages::load_unit(root).unwrap().unwrap();
    flypack_web::tls::ensure_unit_tls(root, &unit).unwrap();
    let users = flypack_web::users::Users::load(root).unwrap();
    users.add("viewer", Role::Viewer, PASSWORD).unwrap();
    let sessions = flypack_web::session::Sessions::load(root, 3600, 12 * 3600).unwrap();
    let (token, _) = sessions.create("viewer");
    let ca = flypack_web::tls::ca_download(root).unwrap().pem;
    (token, ca)
}

async fn tls(addr: SocketAddr, ca: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(flypack_web::server::client_config(ca).unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("fp-demo-01.local").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// One keep-alive GET: (status, body).
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    path: &str,
    cookie: &str,
) -> (u16, Vec<u8>) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: fp-demo-01.local\r\nCookie: {cookie}\r\n\r\n");
    s.get_mut().write_all(req.as_bytes()).await.unwrap();
    let mut line = String::new();
    s.read_line(&mut line).await.unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap_or("0").parse().unwrap();
    let mut len = 0usize;
    loop {
        line.clear();
        s.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (status, body)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(addr: SocketAddr, ca: &str, cookie: &str, path: &str, n: usize) -> (f64, f64) {
    let mut s = BufReader::new(tls(addr, ca).await);
    for _ in 0..20 {
        get(&mut s, path, cookie).await;
    }
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let (status, _) = get(&mut s, path, cookie).await;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{path}");
    }
    (pct(&mut ms, 0.5), pct(&mut ms, 0.99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clients: usize = std::env::var("FLYPACK_WEB_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (token, ca) = prepare(root, addr);
    let cookie = format!("{}={token}", flypack_web::session::COOKIE);
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_flypack-web"))
            .args(["serve", "--root"])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    let t0 = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30), "flypack-web did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tck = clk_tck();

    println!("== 1. idle ==");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, _) = proc_figures(pid);
    println!("RSS idle: {} (goal <= 30 MiB)", mib(rss));

    println!("== 2. {clients} WebSocket clients on /live/ws at 1 Hz, 30 s ==");
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let ca = ca.clone();
        let cookie = cookie.clone();
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            use futures::StreamExt;
            let stream = tls(addr, &ca).await;
            let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                "wss://fp-demo-01.local/live/ws",
            )
            .map(|mut r| {
                r.headers_mut().insert("cookie", cookie.parse().unwrap());
                r
            })
            .unwrap();
            let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.expect("a WebSocket");
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, ticks0) = proc_figures(pid);
    let got0 = received.load(Ordering::Relaxed);
    let w0 = Instant::now();
    let mut peak = 0;
    while w0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(proc_figures(pid).0);
    }
    let (rss, ticks1) = proc_figures(pid);
    let secs = w0.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed) - got0;
    let cpu = (ticks1 - ticks0) as f64 / tck / secs * 100.0;
    println!(
        "RSS with {clients} clients: {} (peak {}; goal <= 60 MiB); CPU {cpu:.2} % of one core (goal < 5 %)",
        mib(rss),
        mib(peak)
    );
    println!(
        "messages: {got} in {secs:.1} s = {:.2} per client per second (1 Hz expected)",
        got as f64 / clients as f64 / secs
    );
    for t in &tasks {
        t.abort();
    }

    println!("== 3. page latency, one keep-alive TLS connection, 500 requests each ==");
    let (p50, p99) = latency(addr, &ca, &cookie, "/status", 500).await;
    let (h50, h99) = latency(addr, &ca, &cookie, "/healthz", 500).await;
    println!("GET /status  p50 {p50:.2} ms  p99 {p99:.2} ms (goal p99 < 50 ms)");
    println!("GET /healthz p50 {h50:.2} ms  p99 {h99:.2} ms (TLS + HTTP alone)");
    println!(
        "ratio /status to /healthz: p50 {:.2}x  p99 {:.2}x",
        p50 / h50,
        p99 / h99
    );

    println!("== 4. first-load bytes (HTML + the assets it names, uncompressed) ==");
    let mut s = BufReader::new(tls(addr, &ca).await);
    for page in [
        "/login", "/status", "/stack", "/live", "/history", "/jobs", "/account", "/trust",
    ] {
        // The login page as a visitor sees it (with a session it redirects).
        let ck = if page == "/login" { "none=1" } else { cookie.as_str() };
        let (status, html) = get(&mut s, page, ck).await;
        let html = String::from_utf8_lossy(&html).into_owned();
        let mut total = html.len();
        let mut assets = Vec::new();
        for part in html.split(['"', '\'']) {
            if part.starts_with("/static/") && !assets.contains(&part.to_string()) {
                assets.push(part.to_string());
            }
        }
        for a in &assets {
            let (st, body) = get(&mut s, a, &cookie).await;
            assert_eq!(st, 200, "{a}");
            total += body.len();
        }
        println!(
            "{page:9} HTTP {status}: {:.1} KB ({} assets) (goal < 150 KB)",
            total as f64 / 1000.0,
            assets.len()
        );
    }
    drop(server);
}
