//! The pages and their handlers: one module per area. Templates are
//! embedded (tera, autoescaped); every page extends `base.html`.

pub mod account;
pub mod actions;
pub mod admin;
pub mod auth;
pub mod engineer;
pub mod fleet;
pub mod history;
pub mod jobs;
pub mod status;
pub mod trust;

use std::path::Path;

use anyhow::{Context, Result};
use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use flypack_contracts::qa::Report;
use flypack_contracts::status::Status;
use flypack_contracts::unit::Unit;

use crate::role::Role;
use crate::state::{AppState, Current};

/// Every template, embedded.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("enrol.html", include_str!("../../templates/enrol.html")),
    ("status.html", include_str!("../../templates/status.html")),
    ("stack.html", include_str!("../../templates/stack.html")),
    ("live.html", include_str!("../../templates/live.html")),
    ("history.html", include_str!("../../templates/history.html")),
    ("jobs.html", include_str!("../../templates/jobs.html")),
    ("job.html", include_str!("../../templates/job.html")),
    ("network.html", include_str!("../../templates/network.html")),
    ("waivers.html", include_str!("../../templates/waivers.html")),
    ("account.html", include_str!("../../templates/account.html")),
    ("users.html", include_str!("../../templates/users.html")),
    ("audit.html", include_str!("../../templates/audit.html")),
    ("trust.html", include_str!("../../templates/trust.html")),
    ("fleet.html", include_str!("../../templates/fleet.html")),
];

/// The templates, parsed.
pub fn templates() -> Result<tera::Tera> {
    let mut t = tera::Tera::new();
    t.add_raw_templates(TEMPLATES.iter().copied())
        .map_err(|e| anyhow::anyhow!("parsing the templates: {e}"))?;
    Ok(t)
}

/// Reads the status contract (None: firstboot has not written it yet).
pub fn load_status(root: &Path) -> Result<Option<Status>> {
    read_json(&crate::paths::under(root, crate::paths::STATUS))
}

/// Reads the last QA report.
pub fn load_report(root: &Path) -> Result<Option<Report>> {
    read_json(&crate::paths::under(root, crate::paths::QA_REPORT))
}

/// Reads the unit config in force.
pub fn load_unit(root: &Path) -> Result<Option<Unit>> {
    let path = crate::paths::under(root, crate::paths::UNIT);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(
            flypack_contracts::unit::parse_unit(&path, &t).map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(
            serde_json::from_str(&t).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The context every page has: the unit, the user, the CSRF token, the nav.
pub fn base(st: &AppState, cur: Option<&Current>, nav: &str) -> tera::Context {
    let mut c = tera::Context::new();
    c.insert("hostname", &st.hostname);
    c.insert("static", crate::assets::prefix());
    c.insert("version", crate::VERSION);
    c.insert("nav", nav);
    c.insert("user", &cur.map(|c| c.user.clone()));
    c.insert("role", &cur.map(|c| c.role.as_str()));
    c.insert("csrf", &cur.map(|c| c.csrf.clone()).unwrap_or_default());
    let role = cur.map(|c| c.role);
    c.insert("is_operator", &role.is_some_and(|r| r.allows(Role::Operator)));
    c.insert("is_engineer", &role.is_some_and(|r| r.allows(Role::Engineer)));
    c.insert("is_admin", &role.is_some_and(|r| r.allows(Role::Admin)));
    let verdict = load_status(&st.root).ok().flatten().map(|s| s.verdict.as_str());
    c.insert("verdict", &verdict);
    c.insert("has_fleet", &!st.config.sources.fleet_url.is_empty());
    c.insert("is_central", &is_central(st));
    c
}

/// A central: a web app with a fleet source and no unit status of its own
/// (it runs beside the central's VictoriaMetrics, not on a unit). Its home
/// is the Fleet page, and its header says CENTRAL, not a unit's verdict.
pub fn is_central(st: &AppState) -> bool {
    !st.config.sources.fleet_url.is_empty() && matches!(load_status(&st.root), Ok(None))
}

/// Renders a template (a template error is a 500 that says which).
pub fn render(st: &AppState, name: &str, ctx: &tera::Context) -> Response {
    match st.tera.render(name, ctx) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("rendering {name}: {e:?}");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("rendering {name} failed: {e}"),
            )
        }
    }
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A plain error page (no template, no state: usable everywhere).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{code}</title><link rel=\"stylesheet\" href=\"{s}/app.css\"></head>\
         <body><main class=\"page\"><h1>{code}</h1><p class=\"error\" id=\"error\">{msg}</p>\
         <p><a href=\"/status\">Status</a> · <a href=\"/login\">Log in</a></p></main></body></html>",
        code = status.as_u16(),
        s = crate::assets::prefix(),
        msg = esc(message),
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// A 400 page for a refused input.
pub fn bad_request(e: &anyhow::Error) -> Response {
    error_page(StatusCode::BAD_REQUEST, &format!("{e:#}"))
}

/// Anything not in the route table.
pub async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "No such page.")
}

/// GET /healthz: up (for firstboot's `webapp` stage).
pub async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"ok\":true,\"version\":\"{}\"}}", crate::VERSION),
    )
        .into_response()
}

/// GET /: the status page; the Fleet page on a central (a web app with a
/// fleet source and no unit status of its own).
pub async fn home(State(st): State<AppState>) -> Redirect {
    if is_central(&st) {
        Redirect::to("/fleet")
    } else {
        Redirect::to("/status")
    }
}

/// GET /live.
pub async fn live_page(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    let c = base(&st, Some(&cur), "live");
    render(&st, "live.html", &c)
}

/// Starts `spec` for `cur` and answers with a redirect to the job (or why not).
pub fn start_job(st: &AppState, cur: &Current, addr: &str, spec: crate::jobs::JobSpec, detail: &str) -> Response {
    let action = format!(
        "{}.{}",
        if spec.kind == crate::jobs::JobKind::Ansible {
            "job"
        } else {
            "action"
        },
        spec.name
    );
    match st.jobs.start(spec, &cur.user) {
        Ok(job) => {
            let id = job.meta().id;
            st.audit
                .record(&cur.user, addr, &action, detail, &format!("started job {id}"));
            Redirect::to(&format!("/jobs/{id}")).into_response()
        }
        Err(crate::jobs::StartError::Busy(id)) => {
            st.audit
                .record(&cur.user, addr, &action, detail, &format!("refused: job {id} running"));
            error_page(
                StatusCode::CONFLICT,
                &format!("Job {id} is still running: one change at a time. Wait for it, or cancel it."),
            )
        }
        Err(crate::jobs::StartError::Other(e)) => {
            st.audit
                .record(&cur.user, addr, &action, detail, &format!("failed: {e:#}"));
            error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}"))
        }
    }
}
