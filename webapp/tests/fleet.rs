//! The Fleet page against a real VictoriaMetrics (Debian's), holding series
//! as a central holds them after federation: each with the flypack, segment
//! and unit labels, the verdict from the units' textfile metric, SRT and
//! multicast figures, and the central vmalert's `ALERTS`. Two flypacks:
//! north (one unit GO with its SRT figures, one silent for 15 minutes since
//! it went NO-GO) and south (one unit GO with warnings, a stream missing and
//! an alert firing, and one whose hostname is an HTML injection).
//! Needs Debian's victoria-metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use flypack_e2e::{Kill, free_port};
use flypack_web::role::Role;
use serde_json::{Value, json};

mod common;
use common::*;

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
    let fresh = [t - 120, t - 60];
    let mut lines = Vec::new();
    lines.extend(verdict(&n1, "GO", &fresh));
    lines.extend(verdict(&n2, "NO-GO", &[t - 960, t - 900]));
    lines.extend(verdict(&s1, "GO-WITH-WARNINGS", &fresh));
    lines.extend(verdict(&evil, "GO", &fresh));
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
        "2 of 2 GO",
        XSS_ESCAPED,
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
