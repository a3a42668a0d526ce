//! The Fleet page against a real VictoriaMetrics (Debian's), holding series
//! as a central holds them after federation: each with the flypack, segment
//! and unit labels, the verdict from the units' textfile metric, SRT and
//! multicast figures, and the central vmalert's `ALERTS`. Two flypacks:
//! north (one unit GO with its SRT figures, one silent for 15 minutes since
//! it went NO-GO) and south (one unit GO with warnings, a stream missing and
//! an alert firing, and one whose hostname is an HTML injection).
//! The same page in a real headless Chromium at a phone's width, from the
//! real HTTPS listener. Needs Debian's victoria-metrics, chromium and
//! chromium-driver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fantoccini::Locator;
use flypack_e2e::{Kill, free_port};
use flypack_web::role::Role;
use serde_json::{Value, json};

mod common;
use common::browser::*;
use common::*;

/// 64 characters, what the page cuts a label to, and no place to break it.
const LONG_UNIT: &str = "fp-a-unit-name-as-long-as-the-fleet-page-shows-and-no-space-0064";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One series as VictoriaMetrics's /api/v1/import takes it (JSON line).
fn series(name: &str, labels: &[(&str, &str)], points: &[(u64, f64)]) -> String {
    let mut m = serde_json::Map::new();
    m.insert("__name__".into(), name.into());
    for (k, v) in labels {
        m.insert(k.to_string(), Value::from(*v));
    }
    json!({
        "metric": m,
        "values": points.iter().map(|p| p.1).collect::<Vec<_>>(),
        "timestamps": points.iter().map(|p| p.0 * 1000).collect::<Vec<_>>(),
    })
    .to_string()
}

fn verdict(labels: &[(&str, &str)], reached: &str, at: &[u64]) -> Vec<String> {
    ["GO", "GO-WITH-WARNINGS", "NO-GO"]
        .iter()
        .map(|v| {
            let mut l = labels.to_vec();
            l.push(("verdict", v));
            let value = if *v == reached { 1.0 } else { 0.0 };
            series(
                "flypack_verdict",
                &l,
                &at.iter().map(|t| (*t, value)).collect::<Vec<_>>(),
            )
        })
        .collect()
}

fn curl(args: &[&str]) -> Option<String> {
    let o = Command::new("curl")
        .args(["-fsS", "--max-time", "5"])
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_page_shows_every_flypacks_units_from_the_central() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(d.path().join("vm.log")).unwrap();
    let vm = Kill(
        Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", d.path().join("vm").display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=1d")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting victoria-metrics (Debian's victoria-metrics; .ci/deps installs it)"),
    );
    let t0 = Instant::now();
    while curl(&[&format!("{base}/health")]).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "victoria-metrics did not start");
        std::thread::sleep(Duration::from_millis(200));
    }

    // What the central holds. VictoriaMetrics shows samples about 30 s after
    // their time, so the newest here are a minute old.
    let t = now();
    let n1 = [("flypack", "north"), ("segment", "10_10_0_0_24"), ("unit", "n-01")];
    let n2 = [("flypack", "north"), ("segment", "10_10_0_0_24"), ("unit", "n-02")];
    let s1 = [("flypack", "south"), ("segment", "dhcp"), ("unit", "s-01")];
    let evil = [("flypack", "south"), ("segment", "dhcp"), ("unit", XSS)];
    // The longest label the page shows whole, with nowhere to break a line.
    let long = [("flypack", "south"), ("segment", "dhcp"), ("unit", LONG_UNIT)];
    let fresh = [t - 120, t - 60];
    let mut lines = Vec::new();
    lines.extend(verdict(&n1, "GO", &fresh));
    lines.extend(verdict(&n2, "NO-GO", &[t - 960, t - 900]));
    lines.extend(verdict(&s1, "GO-WITH-WARNINGS", &fresh));
    lines.extend(verdict(&evil, "GO", &fresh));
    lines.extend(verdict(&long, "GO", &fresh));
    for (stream, up) in [("cam-1", 1.0), ("cam-2", 0.0)] {
        let l = [n1.as_slice(), &[("stream", stream)]].concat();
        lines.push(series("flypack_srt_up", &l, &[(t - 120, up), (t - 60, up)]));
        lines.push(series(
            "flypack_srt_rtt_ms",
            &l,
            &[(t - 60, if up > 0.0 { 12.5 } else { 48.0 })],
        ));
        lines.push(series(
            "flypack_srt_packets_lost_total",
            &l,
            &[(t - 120, 0.0), (t - 90, 30.0), (t - 60, 60.0)],
        ));
    }
    for (group, missing, mbps) in [("239.10.0.1", 0.0, 6.0), ("239.10.0.2", 1.0, 0.0)] {
        let l = [s1.as_slice(), &[("group", group)]].concat();
        lines.push(series("flypack_mcast_joined", &l, &[(t - 60, 1.0)]));
        lines.push(series("flypack_mcast_stream_missing", &l, &[(t - 60, missing)]));
        lines.push(series("flypack_mcast_bitrate_mbps", &l, &[(t - 60, mbps)]));
    }
    let alert = [
        s1.as_slice(),
        &[("alertname", "MulticastStreamMissing"), ("alertstate", "firing")],
    ]
    .concat();
    lines.push(series("ALERTS", &alert, &[(t - 60, 1.0)]));
    let body = d.path().join("import.jsonl");
    std::fs::write(&body, lines.join("\n")).unwrap();
    curl(&[
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("{base}/api/v1/import"),
    ])
    .expect("importing the series");
    curl(&[&format!("{base}/internal/force_flush")]).expect("flushing");

    // The web app of the central: a fleet source, and no unit of its own.
    let root = d.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let mut cfg = config(&root);
    cfg.sources.fleet_url = base.clone();
    let st = flypack_web::state::build(&root, cfg).unwrap();
    st.users.add("viewer", Role::Viewer, PASSWORD).unwrap();
    let viewer = Client::new(&st, Some(Role::Viewer));

    let mut view = Value::Null;
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(30) {
        let p = viewer.get("/api/fleet").await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
        view = serde_json::from_str(&p.body).unwrap();
        if view["flypacks"].as_array().is_some_and(|f| f.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(view["problems"], json!([]), "every query answered: {view:#}");
    let unit = |f: usize, name: &str| -> Value {
        view["flypacks"][f]["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["unit"] == name)
            .unwrap_or_else(|| panic!("{name} in flypack {f}: {view:#}"))
            .clone()
    };
    assert_eq!(view["flypacks"][0]["name"], "north", "{view:#}");
    assert_eq!(
        (
            view["flypacks"][0]["go"].as_u64(),
            view["flypacks"][0]["silent"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let u = unit(0, "n-01");
    assert_eq!(
        (u["verdict"].as_str(), u["silent"].as_bool()),
        (Some("GO"), Some(false)),
        "{u}"
    );
    assert_eq!(
        (
            u["srt_up"].as_u64(),
            u["srt_streams"].as_u64(),
            u["srt_rtt_ms"].as_f64()
        ),
        (Some(1), Some(2), Some(48.0)),
        "{u}"
    );
    assert!(
        u["srt_lost_per_s"].as_f64().unwrap() > 0.5,
        "two streams losing a packet a second: {u}"
    );
    let heard = u["last_heard_secs"].as_u64().unwrap();
    assert!((55..180).contains(&heard), "heard about a minute ago: {u}");
    let u = unit(0, "n-02");
    assert_eq!(
        (u["verdict"].as_str(), u["silent"].as_bool()),
        (Some("NO-GO"), Some(true)),
        "{u}"
    );
    assert!(u["last_heard_secs"].as_u64().unwrap() >= 900, "{u}");
    let u = unit(1, "s-01");
    assert_eq!(u["verdict"], "GO-WITH-WARNINGS", "{u}");
    assert_eq!(
        (
            u["mcast_groups"].as_u64(),
            u["mcast_missing"].as_u64(),
            u["mcast_mbps"].as_f64()
        ),
        (Some(2), Some(1), Some(6.0)),
        "{u}"
    );
    assert_eq!(u["alerts"], json!(["MulticastStreamMissing"]), "{u}");

    let page = viewer.page("/fleet").await;
    for want in [
        "<h2>north</h2>",
        "1 of 2 GO",
        "1 silent",
        "SILENT",
        "when it was NO-GO",
        "1 of 2 up, worst RTT 48.0 ms",
        "2 group(s), 1 missing, 6.0 Mb/s",
        "MulticastStreamMissing",
        "3 of 3 GO",
        XSS_ESCAPED,
        LONG_UNIT,
        "<a href=\"/fleet\" aria-current=\"page\">Fleet</a>",
    ] {
        assert!(page.contains(want), "{want:?} on the page:\n{page}");
    }
    assert!(!page.contains(XSS), "a unit's name is escaped");
    let home = viewer.get("/").await;
    assert_eq!(
        home.location.as_deref(),
        Some("/fleet"),
        "a central opens on the Fleet page"
    );
    assert_eq!(
        Client::new(&st, None).get("/fleet").await.location.as_deref(),
        Some("/login?next=%2Ffleet")
    );

    // On a phone: the real HTTPS listener, Chromium at 360 px. A viewer
    // lands on the Fleet page, which fits the screen with the long label;
    // the injected name is text, and ran nothing.
    let unit = flypack_contracts::unit::parse_unit(
        std::path::Path::new("unit.example.toml"),
        include_str!("../../images/unit.example.toml"),
    )
    .unwrap();
    flypack_web::tls::ensure_unit_tls(&root, &unit).expect("TLS material made");
    let mut cfg = config(&root);
    cfg.sources.fleet_url = base.clone();
    cfg.listen.https = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    cfg.listen.http = None;
    let run = flypack_web::server::start(&root, cfg)
        .await
        .expect("the web app starts");
    run.state.users.add("phone", Role::Viewer, PASSWORD).unwrap();
    let driver = start_driver();
    let c = browser(&driver).await;
    login(&c, &format!("https://127.0.0.1:{}", run.https.port()), "phone").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/fleet");
    let width = page_width(&c).await;
    let wide = c
        .execute(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 360)\
             .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 8);",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        width <= 360,
        "the Fleet page is {width} px wide on a 360 px screen: {wide}"
    );
    let names = c
        .execute(
            "return [...document.querySelectorAll('article.unit h3')].map(h => h.firstChild.textContent.trim());",
            vec![],
        )
        .await
        .unwrap();
    let names: Vec<String> = serde_json::from_value(names).unwrap();
    assert_eq!(
        names,
        ["n-01", "n-02", XSS, LONG_UNIT, "s-01"],
        "the units as the phone shows them"
    );
    assert!(c.get_alert_text().await.is_err(), "the injected name opened a dialog");
    // The header names a central as such (it has no verdict of its own).
    let badge = c.find(Locator::Id("verdict-badge")).await.unwrap();
    assert_eq!(
        (badge.text().await.unwrap(), badge.attr("href").await.unwrap()),
        ("CENTRAL".to_string(), Some("/fleet".to_string()))
    );
    let scripts = c
        .execute("return document.querySelectorAll('script:not([src])').length;", vec![])
        .await
        .unwrap();
    assert_eq!(scripts, json!(0), "an inline script on the page");
    Shots::new().take(&c, "fleet").await;
    c.close().await.unwrap();
    drop(run);

    // The central's VictoriaMetrics gone: the page says so, and still renders.
    drop(vm);
    let page = viewer.page("/fleet").await;
    assert!(
        page.contains("Part of the view is missing") && page.contains("No unit has reported yet"),
        "{page}"
    );

    // A unit's web app has no fleet source: no page, no link.
    let unit_root = d.path().join("unit");
    std::fs::create_dir_all(&unit_root).unwrap();
    let st = flypack_web::state::build(&unit_root, config(&unit_root)).unwrap();
    st.users.add("admin", Role::Admin, PASSWORD).unwrap();
    let c = Client::new(&st, Some(Role::Admin));
    let p = c.get("/fleet").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.body.contains("sources.fleet_url"), "{}", p.body);
    assert!(!c.page("/account").await.contains("href=\"/fleet\""));
    assert_eq!(c.get("/").await.location.as_deref(), Some("/status"));
}
