//! A real headless Chromium (Debian's `chromium` and `chromium-driver`) at a
//! phone's width (360 px) against the real HTTPS listener on loopback, with
//! the NO-GO fixture, a stub exporter the test changes, and a "firstboot"
//! that is a script printing a line every half second.
//!
//! One browser session walks what a crew does from a phone: log in, read why
//! the unit is NO-GO, watch a live tile follow the exporter, be refused an
//! action the role does not allow, and, as an operator, re-run QA, watch its
//! output stream and cancel it. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/webapp-screenshots/`.
//!
//! The browser accepts the unit's self-made certificate
//! (`acceptInsecureCerts`); that the certificate chains to the CA and names
//! the unit is `tests/server.rs`'s job.

// Test helpers panic on what the test did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::browser::*;
use common::{PASSWORD, config, nogo_unit};
use fantoccini::Locator;
use flypack_web::role::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stub exporter: answers every request with the current metrics text.
async fn stub_exporter(text: Arc<Mutex<String>>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            let text = text.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = text.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

fn metrics(mbps: f64) -> String {
    format!(
        "flypack_mcast_bitrate_mbps{{group=\"239.100.0.1\",interface=\"media.100\"}} {mbps}\n\
         flypack_mcast_packets_per_second{{group=\"239.100.0.1\",interface=\"media.100\"}} 1800\n\
         flypack_mcast_stream_missing{{group=\"239.100.0.1\",interface=\"media.100\"}} 0\n\
         flypack_mcast_joined{{group=\"239.100.0.1\",interface=\"media.100\"}} 1\n"
    )
}

/// A stand-in for firstboot: prints a line every half second for a minute.
fn slow_firstboot(dir: &Path) -> PathBuf {
    let p = dir.join("firstboot-stub");
    std::fs::write(
        &p,
        "#!/bin/sh\necho \"firstboot $*\"\ni=0\nwhile [ $i -lt 120 ]; do i=$((i+1)); echo \"step $i\"; sleep 0.5; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_reads_a_nogo_unit_watches_it_live_and_acts_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    nogo_unit(root);
    let exporter_text = Arc::new(Mutex::new(metrics(12.5)));
    let exporter = stub_exporter(exporter_text.clone()).await;
    let mut cfg = config(root);
    cfg.listen.https = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    cfg.listen.http = None;
    cfg.sources.exporter_url = format!("http://{exporter}/metrics");
    cfg.sources.sample_seconds = 1;
    cfg.actions.firstboot = slow_firstboot(root).to_string_lossy().into_owned();
    let run = flypack_web::server::start(root, cfg).await.expect("the web app starts");
    for r in [Role::Viewer, Role::Operator] {
        run.state.users.add(r.as_str(), r, PASSWORD).unwrap();
    }
    let base = format!("https://127.0.0.1:{}", run.https.port());
    let shots = Shots::new();
    let driver = start_driver();
    let c = browser(&driver).await;

    // The page is laid out for the phone: nothing wider than the screen.
    c.goto(&format!("{base}/login")).await.unwrap();
    let width = page_width(&c).await;
    assert!(width <= 360, "the login page is {width} px wide on a 360 px screen");
    shots.take(&c, "login").await;

    // A viewer reads why the unit is NO-GO.
    login(&c, &base, "viewer").await;
    c.goto(&format!("{base}/status")).await.unwrap();
    assert!(text(&c, "#verdict").await.contains("NO-GO"));
    let reasons = text(&c, "#reasons").await;
    assert!(reasons.contains("media (eth1) has no carrier"), "{reasons}");
    let failed = text(&c, "#check-net\\.carrier").await;
    assert!(failed.contains(common::FIX), "the failed check shows its fix: {failed}");
    let width = page_width(&c).await;
    assert!(width <= 360, "the status page is {width} px wide");
    shots.take(&c, "status-nogo").await;

    // The viewer is not offered the operator's action, and is refused it.
    assert!(
        c.find(Locator::Css("form[action='/actions/qa']")).await.is_err(),
        "a viewer is offered Re-run QA"
    );
    assert_eq!(post_from_page(&c, "/actions/qa").await, 403);

    // Live: the multicast tile follows the exporter.
    c.goto(&format!("{base}/live")).await.unwrap();
    wait_text(&c, "#tiles-mcast", Duration::from_secs(20), |t| t.contains("12.5")).await;
    let (state, _) = wait_text(&c, "#live-state", Duration::from_secs(10), |t| {
        !t.contains("Connecting")
    })
    .await;
    println!("live transport: {state}");
    *exporter_text.lock().unwrap() = metrics(37.5);
    let (_, took) = wait_text(&c, "#tiles-mcast", Duration::from_secs(20), |t| t.contains("37.5")).await;
    println!("the multicast tile showed the exporter's change after {took:?} (goal: within 2 s)");
    shots.take(&c, "live").await;
    logout(&c).await;

    // An operator re-runs QA, watches its output stream, cancels it.
    login(&c, &base, "operator").await;
    c.goto(&format!("{base}/status")).await.unwrap();
    c.find(Locator::Css("form[action='/actions/qa'] button"))
        .await
        .expect("an operator is offered Re-run QA")
        .click()
        .await
        .unwrap();
    // app.js asks before it posts.
    confirm(&c, "Re-run QA").await;
    wait_text(&c, "#job-state", Duration::from_secs(20), |t| t == "running").await;
    assert!(c.current_url().await.unwrap().path().starts_with("/jobs/"));
    let count = || async {
        c.execute("return document.querySelectorAll('#events li').length;", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap()
    };
    let first = count().await;
    let t0 = Instant::now();
    while count().await < first + 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the job's output does not stream"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(text(&c, "#events").await.contains("firstboot qa --format json"));
    shots.take(&c, "job-running").await;
    c.find(Locator::Css("#cancel button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    confirm(&c, "cancel").await;
    wait_text(&c, "#job-state", Duration::from_secs(30), |t| t == "cancelled").await;
    shots.take(&c, "job-cancelled").await;
    let audit = std::fs::read_to_string(flypack_web::paths::under(root, flypack_web::paths::AUDIT)).unwrap();
    assert!(
        audit.contains("\"operator\""),
        "the operator's action is audited: {audit}"
    );

    c.close().await.unwrap();
}
