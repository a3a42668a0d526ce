//! `compose/central` brought up with `docker-compose up`, as the runbook
//! does on the central host, against a real dockerd (the host's, or one the
//! harness starts): its compose file, `.env`, auth file, TLS folder and the
//! units' rules file by the relative path the file names.
//!
//! No image registry is reachable here, so the upstream images the file
//! names (`victoriametrics/victoria-metrics`, `vmauth`, `vmalert`) are
//! replaced, by an override file that changes only each service's
//! `image:`, with stand-ins: the stack's own image of Debian's
//! victoria-metrics package (built by `builder images`), committed under a
//! test tag per service with that binary as its entrypoint, as the upstream
//! images have theirs. What runs is the compose file's wiring, flags and
//! mounts, with Debian's build of the same programs. The test tags go with
//! the test; the upstream names are never touched.
//!
//! Checked: a vmagent on this machine sends over TLS (the fleet CA's
//! certificate) with the flypack's password and its samples are stored
//! with the flypack label; a wrong password is refused; the admin key from
//! `.env` guards vmauth's own endpoints; vmalert loaded the units' rules;
//! VictoriaMetrics and vmalert are published on 127.0.0.1 only; `down -v`
//! leaves nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flypack_e2e::*;
use serde_json::Value;

const PASSWORD: &str = "north-password-for-compose";
const ADMIN_KEY: &str = "admin-key-for-compose-0042";

/// Each service of the compose file, its stand-in's tag, and the binary it runs.
const STAND_INS: [(&str, &str, &str); 3] = [
    (
        "victoriametrics",
        "flypack-e2e/central-victoria-metrics:test",
        "/usr/bin/victoria-metrics",
    ),
    ("vmauth", "flypack-e2e/central-vmauth:test", "/usr/bin/vmauth"),
    ("vmalert", "flypack-e2e/central-vmalert:test", "/usr/bin/vmalert"),
];

/// The override file that puts the stand-ins in.
const OVERRIDE: &str = "stand-ins.yml";

fn docker(args: &[&str]) -> (bool, String) {
    sh(Command::new("docker").args(args))
}

/// `docker-compose -p PROJECT -f docker-compose.yml -f stand-ins.yml ARGS` in `dir`.
fn compose(dir: &Path, project: &str, args: &[&str]) -> (bool, String) {
    sh(Command::new("docker-compose")
        .current_dir(dir)
        .args(["--ansi", "never", "-p", project])
        .args(["-f", "docker-compose.yml", "-f", OVERRIDE])
        .args(args))
}

/// `docker-compose down -v` and the stand-ins' tags removed when the test
/// ends, passed or not.
struct Down<'a>(&'a Path, String);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let (ok, out) = compose(self.0, &self.1, &["down", "-v", "--remove-orphans"]);
        if !ok {
            eprintln!("docker-compose down: {out}");
        }
        for (_, tag, _) in STAND_INS {
            docker(&["rmi", tag]);
        }
    }
}

/// GET `url` with curl: (HTTP code, body).
fn get(url: &str, extra: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_central_comes_up_with_docker_compose_and_stores_a_flypack() {
    let api = host_docker();
    eprintln!("Docker API {api}");
    let images = stack_images();
    let cfg: Value = serde_json::from_slice(&std::fs::read(images.join("stack.json")).unwrap()).unwrap();
    let vm_image = cfg["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == "flypack/victoria-metrics:bookworm")
        .expect("the stack has Debian's victoria-metrics image");
    let (ok, out) = docker(&["load", "-i", vm_image["archive"].as_str().unwrap()]);
    assert!(ok, "{out}");
    let mut over = String::from("version: \"2.4\"\nservices:\n");
    for (service, tag, binary) in STAND_INS {
        over.push_str(&format!("  {service}:\n    image: {tag}\n"));
        let (ok, id) = docker(&["create", "flypack/victoria-metrics:bookworm", binary]);
        assert!(ok, "{id}");
        let id = id.trim().to_string();
        let (ok, out) = docker(&[
            "commit",
            "--change",
            &format!("ENTRYPOINT [\"{binary}\"]"),
            "--change",
            "CMD []",
            "--change",
            "USER 0",
            &id,
            tag,
        ]);
        docker(&["rm", "-f", &id]);
        assert!(ok, "{out}");
    }

    // The central host's folder, as the runbook makes it: the compose
    // folders (vmalert reads the units' rules from ../monitoring), .env,
    // auth.yml from the example, TLS from the fleet CA.
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = sh(Command::new("cp").arg("-r").arg(repo().join("compose")).arg(dir.path()));
    assert!(ok, "{out}");
    let central = dir.path().join("compose/central");
    std::fs::write(central.join(OVERRIDE), over).unwrap();
    std::fs::write(central.join(".env"), format!("VMAUTH_ADMIN_KEY={ADMIN_KEY}\n")).unwrap();
    let example = std::fs::read_to_string(central.join("vmauth/auth.example.yml")).unwrap();
    assert!(example.contains("CHANGE-ME-north"));
    std::fs::write(
        central.join("vmauth/auth.yml"),
        example.replace("CHANGE-ME-north", PASSWORD),
    )
    .unwrap();
    let ca = dir.path().join("fleet-ca.pem");
    let r = run(builder()
        .args(["fleet-ca", "new", "--name", "central", "--out"])
        .arg(&ca));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(builder()
        .args(["fleet-ca", "server", "--address", "127.0.0.1", "--ca"])
        .arg(&ca)
        .arg("--out")
        .arg(central.join("vmauth/tls")));
    assert_eq!(r.code, 0, "{}", r.stderr);

    let project = format!("fpcentral{}", std::process::id());
    let _down = Down(&central, project.clone());
    let t0 = Instant::now();
    let (ok, out) = compose(&central, &project, &["up", "-d"]);
    assert!(ok, "docker-compose up: {out}");
    let logs = || compose(&central, &project, &["logs", "--tail", "20"]).1;
    wait_for("VictoriaMetrics on 127.0.0.1:8428", Duration::from_secs(60), || {
        get("http://127.0.0.1:8428/health", &[]).0 == 200
    });
    eprintln!(
        "central: docker-compose up to VictoriaMetrics answering in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Published where the runbook says: vmauth to the network, the rest on
    // 127.0.0.1.
    for (service, port, want) in [
        ("vmauth", "8427", "0.0.0.0:8427"),
        ("victoriametrics", "8428", "127.0.0.1:8428"),
        ("vmalert", "8880", "127.0.0.1:8880"),
    ] {
        let (ok, out) = compose(&central, &project, &["port", service, port]);
        assert!(ok && out.trim() == want, "{service}: {out}");
    }

    // A unit's vmagent, here, sends as flypack north over TLS.
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("password"), PASSWORD).unwrap();
    let agent_port = free_port();
    std::fs::write(
        w.join("scrape.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vmagent\n    static_configs:\n      - targets: [\"127.0.0.1:{agent_port}\"]\n"
        ),
    )
    .unwrap();
    let agent: Vec<String> = [
        "vmagent".to_string(),
        format!("-promscrape.config={}", w.join("scrape.yml").display()),
        "-remoteWrite.url=https://127.0.0.1:8427/api/v1/write".into(),
        "-remoteWrite.label=flypack=south,unit=cam-1".into(),
        "-remoteWrite.basicAuth.username=north".into(),
        format!("-remoteWrite.basicAuth.passwordFile={}", w.join("password").display()),
        format!("-remoteWrite.tlsCAFile={}", ca.with_extension("crt").display()),
        format!("-remoteWrite.tmpDataPath={}", w.join("queue").display()),
        format!("-httpListenAddr=127.0.0.1:{agent_port}"),
    ]
    .into();
    let _agent = spawn_logged(&[], &agent, &[], &w.join("vmagent.log"));
    let series = || -> Vec<Value> {
        let (code, body) = get(
            "http://127.0.0.1:8428/api/v1/series",
            &["-G", "--data-urlencode", "match[]=up{unit=\"cam-1\"}"],
        );
        if code != 200 {
            return vec![];
        }
        serde_json::from_str::<Value>(&body).unwrap_or_default()["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let t = Instant::now();
    while series().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the unit's samples never arrived:\n{}\n--- vmagent ---\n{}",
            logs(),
            tail(&std::fs::read_to_string(w.join("vmagent.log")).unwrap_or_default(), 20)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // Stored as its user's flypack, whatever label it sent.
    let got = series();
    assert!(got.iter().all(|s| s["flypack"] == "north"), "{got:?}");

    // A wrong password is refused; the right one may write, not read.
    let ca_crt = ca.with_extension("crt").display().to_string();
    let cacert = ["--cacert", ca_crt.as_str()];
    let (code, body) = get(
        "https://127.0.0.1:8427/api/v1/write",
        &[&cacert[..], &["-u", "north:wrong-password", "-d", ""]].concat(),
    );
    // vmauth 1.79 answers an unknown user:password with 400 (later ones 401).
    assert!(matches!(code, 400 | 401), "a wrong password: {code} {body}");
    eprintln!("central: a wrong password: HTTP {code}: {}", body.trim());
    let auth = format!("north:{PASSWORD}");
    let (code, body) = get(
        "https://127.0.0.1:8427/api/v1/query?query=up",
        &[&cacert[..], &["-u", &auth]].concat(),
    );
    assert_ne!(code, 200, "the flypack's user read the central: {body}");
    // vmauth's own metrics need the admin key from .env.
    assert_eq!(get("https://127.0.0.1:8427/metrics", &cacert).0, 401);
    let (code, body) = get(&format!("https://127.0.0.1:8427/metrics?authKey={ADMIN_KEY}"), &cacert);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("vmauth_"), "{body}");

    // vmalert evaluates the units' rules (mounted from ../monitoring).
    let rules = std::fs::read_to_string(repo().join("compose/monitoring/vmalert/rules.yml")).unwrap();
    let first = rules
        .lines()
        .find_map(|l| l.trim().strip_prefix("- alert: "))
        .expect("a rule")
        .to_string();
    let mut names = Vec::new();
    wait_for("vmalert's rules", Duration::from_secs(60), || {
        let (code, body) = get("http://127.0.0.1:8880/api/v1/rules", &[]);
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        names = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        code == 200 && !names.is_empty()
    });
    assert!(names.contains(&first), "{first} not among {names:?}\n{}", logs());

    drop(_agent);
    let (ok, out) = compose(&central, &project, &["down", "-v", "--remove-orphans"]);
    assert!(ok, "{out}");
    let (_, left) = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    assert!(left.trim().is_empty(), "containers left: {left}");
    let (_, vols) = docker(&["volume", "ls", "-q", "--filter", &format!("name={project}_")]);
    assert!(vols.trim().is_empty(), "volumes left: {vols}");
}
