//! Fixtures the web app's tests share: a config that runs nothing real, a
//! NO-GO unit (status, QA report, unit config, a finished job, playbooks,
//! TLS material), and an app with one user per role.

// Each test binary uses its own part of these.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod browser;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use flypack_contracts::qa::{CheckId, CheckResult, Outcome, Report};
use flypack_contracts::status::{
    Provisioning, QaSummary, ServiceState, ServiceStatus, StageState, StageStatus, Status, Verdict,
};
use flypack_web::config::Config;
use flypack_web::role::Role;
use flypack_web::routes;
use flypack_web::session::COOKIE;
use flypack_web::state::{self, AppState, Peer};

pub const ROLES: [Role; 4] = [Role::Viewer, Role::Operator, Role::Engineer, Role::Admin];
pub const PASSWORD: &str = "a long enough password 1";
pub const JOB: &str = "20260301-101500-diag";
pub const XSS: &str = "<script>alert('x')</script>";
pub const XSS_ESCAPED: &str = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;";
/// The fix hint of the failed critical check.
pub const FIX: &str = "Plug the media LAN cable into the port labelled media, or fix the switch port";

pub fn config(root: &Path) -> Config {
    let mut c = Config::default();
    // Nothing here may run a real command on this machine.
    c.actions.command_prefix = vec![];
    c.actions.firstboot = "/bin/false".into();
    c.jobs.ansible_runner = "/bin/false".into();
    c.jobs.command_prefix = vec![];
    c.jobs.playbooks_dir = root.join("playbooks");
    // Upstreams that never answer: a closed loopback port.
    c.sources.victoriametrics_url = "http://127.0.0.1:9".into();
    c.sources.grafana_url = "http://127.0.0.1:9".into();
    c.sources.vmalert_url = "http://127.0.0.1:9".into();
    c.sources.exporter_url = "http://127.0.0.1:9/metrics".into();
    c
}

pub fn write(root: &Path, abs: &str, text: &str) {
    let p = flypack_web::paths::under(root, abs);
    std::fs::create_dir_all(p.parent().expect("a parent folder")).expect("creating the folder");
    std::fs::write(p, text).expect("writing the fixture");
}

pub fn check(id: CheckId, outcome: Outcome, evidence: &str, fix: &str, waiver: Option<&str>) -> CheckResult {
    CheckResult {
        id,
        title: id.title().into(),
        severity: id.severity(),
        outcome,
        evidence: evidence.into(),
        fix: fix.into(),
        waiver: waiver.map(str::to_string),
        duration_ms: 42,
    }
}

/// A unit that is NO-GO: status, QA report, unit config (with a waiver), a
/// finished job with output and a file, two playbooks.
pub fn nogo_unit(root: &Path) {
    let report = Report {
        schema: 1,
        hostname: "fp-demo-01".into(),
        time: "2026-03-01T10:14:00Z".into(),
        version: "0.1.0".into(),
        verdict: Verdict::NoGo,
        checks: vec![
            check(CheckId::SysDebian, Outcome::Pass, "Debian 12.9", "", None),
            check(
                CheckId::NetCarrier,
                Outcome::Fail,
                &format!("media (eth1): no carrier; driver says {XSS}"),
                FIX,
                None,
            ),
            check(
                CheckId::TimeSync,
                Outcome::Waived,
                "chrony: no source",
                "Point [time] ntp at a reachable server",
                Some("demo unit in QEMU: no NTP or PTP source"),
            ),
            check(
                CheckId::McastJoin,
                Outcome::Skip,
                "no multicast groups configured",
                "",
                None,
            ),
        ],
    };
    let status = Status {
        schema: 1,
        verdict: Verdict::NoGo,
        version: "0.1.0".into(),
        hostname: "fp-demo-01".into(),
        time: "2026-03-01T10:15:00Z".into(),
        provisioning: Provisioning::Done,
        stages: vec![
            StageStatus {
                name: "disk".into(),
                state: StageState::Done,
                attempts: 1,
                duration_ms: Some(1200),
                detail: None,
            },
            StageStatus {
                name: "stack".into(),
                state: StageState::Failed,
                attempts: 3,
                duration_ms: None,
                detail: Some("grafana: image not in the local store".into()),
            },
        ],
        qa: Some(QaSummary {
            passed: 1,
            failed: 1,
            waived: 1,
            critical: vec!["net.carrier".into()],
            warnings: vec![],
            skipped: vec!["mcast.join".into()],
            report: "/var/lib/flypack/qa/report.json".into(),
        }),
        services: vec![
            ServiceStatus {
                name: "victoriametrics".into(),
                state: ServiceState::Healthy,
                critical: true,
            },
            ServiceStatus {
                name: "grafana".into(),
                state: ServiceState::Exited,
                critical: false,
            },
        ],
        reasons: vec!["net.carrier failed: media (eth1) has no carrier".into()],
    };
    write(
        root,
        flypack_web::paths::STATUS,
        &serde_json::to_string(&status).expect("status serialises"),
    );
    write(
        root,
        flypack_web::paths::QA_REPORT,
        &serde_json::to_string(&report).expect("report serialises"),
    );
    write(
        root,
        flypack_web::paths::UNIT,
        include_str!("../../../images/unit.example.toml"),
    );
    let job = format!("{}/{JOB}", flypack_web::paths::JOBS);
    let meta = serde_json::json!({
        "id": JOB, "kind": "ansible", "name": "diagnostics.yml",
        "title": format!("Diagnostics {XSS}"), "user": "engineer", "role": "engineer",
        "mutating": false, "argv": ["ansible-runner", "run", "--playbook", "diagnostics.yml"],
        "started": "2026-03-01T10:20:00Z", "finished": "2026-03-01T10:21:00Z",
        "state": "failed", "rc": 2,
    });
    write(root, &format!("{job}/job.json"), &meta.to_string());
    let events = [
        serde_json::json!({"seq": 0, "time": "2026-03-01T10:20:01Z", "stream": "ansible", "event": "runner_on_ok", "text": "ok: [localhost] => gather facts"}),
        serde_json::json!({"seq": 1, "time": "2026-03-01T10:20:30Z", "stream": "stderr", "text": format!("tool said {XSS}")}),
        serde_json::json!({"seq": 2, "time": "2026-03-01T10:21:00Z", "stream": "state", "event": "failed", "text": "exit code 2"}),
    ];
    let lines: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    write(root, &format!("{job}/events.jsonl"), &(lines.join("\n") + "\n"));
    write(root, &format!("{job}/files/report 1#.txt"), "diagnostics\n");
    std::fs::create_dir_all(root.join("playbooks")).expect("creating playbooks/");
    std::fs::write(root.join("playbooks/diagnostics.yml"), "- hosts: localhost\n").expect("writing a playbook");
    std::fs::write(root.join("playbooks/update.yml"), "- hosts: localhost\n").expect("writing a playbook");
    let unit = flypack_web::pages::load_unit(root)
        .expect("reading the unit config")
        .expect("the example unit config");
    flypack_web::tls::ensure_unit_tls(root, &unit).expect("TLS material made");
}

pub async fn app(root: &Path) -> AppState {
    let st = state::build(root, config(root)).expect("state builds");
    for r in ROLES {
        st.users.add(r.as_str(), r, PASSWORD).expect("user added");
    }
    st
}

/// A response, read whole.
pub struct Page {
    pub status: StatusCode,
    pub body: String,
    pub set_cookie: Vec<String>,
    pub location: Option<String>,
}

/// Requests through the router in process, as a user of a role (or none).
pub struct Client {
    pub st: AppState,
    pub cookie: Option<String>,
    pub csrf: String,
}

impl Client {
    pub fn new(st: &AppState, role: Option<Role>) -> Client {
        let (cookie, csrf) = match role {
            Some(r) => {
                let (token, s) = st.sessions.create(r.as_str());
                (Some(format!("{COOKIE}={token}")), s.csrf)
            }
            None => (None, String::new()),
        };
        Client {
            st: st.clone(),
            cookie,
            csrf,
        }
    }

    pub async fn send(&self, method: Method, uri: &str, cookie: Option<String>, form: Option<String>) -> Page {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "fp-test.local")
            .extension(Peer(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))));
        if let Some(c) = cookie.or_else(|| self.cookie.clone()) {
            req = req.header(header::COOKIE, c);
        }
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(f)
            }
            None => Body::empty(),
        };
        let resp = routes::router(self.st.clone())
            .oneshot(req.body(body).expect("a valid request"))
            .await
            .expect("the router answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("reading the body").to_bytes();
        Page {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            set_cookie: headers
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|v| v.to_str().expect("an ASCII header").to_string())
                .collect(),
            location: headers
                .get(header::LOCATION)
                .map(|l| l.to_str().expect("an ASCII header").to_string()),
        }
    }

    pub async fn get(&self, uri: &str) -> Page {
        self.send(Method::GET, uri, None, None).await
    }

    /// GET that must answer 200 with a whole page.
    pub async fn page(&self, uri: &str) -> String {
        let p = self.get(uri).await;
        assert_eq!(p.status, StatusCode::OK, "GET {uri}:\n{}", p.body);
        assert!(
            p.body.trim_end().ends_with("</html>"),
            "GET {uri} is not a whole page:\n{}",
            p.body
        );
        p.body
    }
}
