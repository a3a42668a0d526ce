//! The status page (verdict, stages, QA report) and the stack page.

use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use flypack_contracts::qa::{Outcome, Severity};

use super::{base, load_report, load_status, render};
use crate::state::{AppState, Current};

fn verdict_class(v: &str) -> &'static str {
    match v {
        "GO" => "go",
        "GO-WITH-WARNINGS" => "warn",
        _ => "nogo",
    }
}

/// GET /status.
pub async fn page(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    let mut c = base(&st, Some(&cur), "status");
    let (status, status_error) = match load_status(&st.root) {
        Ok(s) => (s, None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let (report, report_error) = match load_report(&st.root) {
        Ok(r) => (r, None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    c.insert(
        "verdict_class",
        &status
            .as_ref()
            .map(|s| verdict_class(s.verdict.as_str()))
            .unwrap_or("unknown"),
    );
    c.insert("status", &status);
    c.insert("status_error", &status_error);
    c.insert("report_error", &report_error);
    let mut checks = report.as_ref().map(|r| r.checks.clone()).unwrap_or_default();
    let rank = |o: Outcome, s: Severity| -> u8 {
        match (o, s) {
            (Outcome::Fail, Severity::Critical) => 0,
            (Outcome::Fail, Severity::Major) => 1,
            (Outcome::Fail, Severity::Minor) => 2,
            (Outcome::Waived, _) => 3,
            (Outcome::Pass, _) => 4,
            (Outcome::Skip, _) => 5,
        }
    };
    checks.sort_by_key(|c| rank(c.outcome, c.severity));
    c.insert("checks", &checks);
    c.insert("report_time", &report.as_ref().map(|r| r.time.clone()));
    c.insert("status_path", crate::paths::STATUS);
    match crate::alerts::fetch(&st.client, &st.config.sources.vmalert_url).await {
        Ok(a) => {
            c.insert("alerts", &a);
            c.insert("alerts_error", &None::<String>);
        }
        Err(e) => {
            c.insert("alerts", &None::<crate::alerts::Alerts>);
            c.insert("alerts_error", &Some(format!("{e:#}")));
        }
    }
    render(&st, "status.html", &c)
}

/// GET /stack.
pub async fn stack(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    let mut c = base(&st, Some(&cur), "stack");
    let status = load_status(&st.root).ok().flatten();
    let services: Vec<serde_json::Value> = status
        .as_ref()
        .map(|s| {
            s.services
                .iter()
                .map(|x| {
                    serde_json::json!({
                        "name": x.name,
                        "state": x.state.as_str(),
                        "critical": x.critical,
                        "ok": x.state.is_running() && x.state != flypack_contracts::status::ServiceState::Unhealthy,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    c.insert("services", &services);
    c.insert("have_status", &status.is_some());
    render(&st, "stack.html", &c)
}

/// GET /api/status: the status contract as JSON (null before firstboot wrote it).
pub async fn api(State(st): State<AppState>) -> Response {
    let body = match load_status(&st.root) {
        Ok(s) => serde_json::json!({ "status": s, "report": load_report(&st.root).ok().flatten() }),
        Err(e) => serde_json::json!({ "status": null, "error": format!("{e:#}") }),
    };
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
