//! The privileged actions' handlers (the allow-list is in `crate::actions`).

use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::{bad_request, base, render, start_job};
use crate::actions::{self, Action};
use crate::state::{AppState, Current, Peer};

fn run(st: &AppState, cur: &Current, peer: &Peer, r: anyhow::Result<Action>, detail: &str) -> Response {
    match r {
        Ok(a) => {
            let spec = a.job(&st.config);
            start_job(st, cur, &peer.0.to_string(), spec, detail)
        }
        Err(e) => {
            st.audit.record(
                &cur.user,
                &peer.0.to_string(),
                "action",
                detail,
                &format!("refused: {e:#}"),
            );
            bad_request(&e)
        }
    }
}

/// POST /actions/qa.
pub async fn qa(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
) -> Response {
    run(&st, &cur, &peer, Ok(Action::Qa), "")
}

/// POST /actions/backup.
pub async fn backup(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
) -> Response {
    run(&st, &cur, &peer, Ok(Action::Backup), "")
}

/// The restart form.
#[derive(Debug, Deserialize)]
pub struct RestartForm {
    service: String,
}

/// POST /actions/restart.
pub async fn restart(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Form(f): Form<RestartForm>,
) -> Response {
    let r = actions::restart(&st.root, &f.service);
    run(&st, &cur, &peer, r, &f.service)
}

/// GET /network: the unit config in force, to edit and apply.
pub async fn network_page(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    let mut c = base(&st, Some(&cur), "network");
    let text = std::fs::read_to_string(crate::paths::under(&st.root, crate::paths::UNIT)).unwrap_or_default();
    c.insert("unit", &text);
    c.insert("confirm_within", &st.config.actions.confirm_within_seconds);
    render(&st, "network.html", &c)
}

/// The network form.
#[derive(Debug, Deserialize)]
pub struct NetworkForm {
    unit: String,
}

/// POST /actions/network/apply.
pub async fn network_apply(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Form(f): Form<NetworkForm>,
) -> Response {
    let r = actions::network_apply(&st.root, &f.unit, st.config.actions.confirm_within_seconds);
    let detail = match &r {
        Ok(Action::NetworkApply { file, .. }) => file.clone(),
        _ => String::new(),
    };
    run(&st, &cur, &peer, r, &detail)
}

/// POST /actions/network/confirm.
pub async fn network_confirm(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
) -> Response {
    run(&st, &cur, &peer, Ok(Action::NetworkConfirm), "")
}

/// GET /waivers.
pub async fn waivers_page(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    let mut c = base(&st, Some(&cur), "waivers");
    let unit = super::load_unit(&st.root).ok().flatten();
    let waivers: Vec<serde_json::Value> = unit
        .map(|u| {
            u.qa.waivers
                .iter()
                .map(|w| serde_json::json!({"check": w.check, "reason": w.reason, "expires": w.expires.to_string()}))
                .collect()
        })
        .unwrap_or_default();
    c.insert("waivers", &waivers);
    let checks: Vec<serde_json::Value> = flypack_contracts::qa::CheckId::ALL
        .iter()
        .map(|c| serde_json::json!({"id": c.as_str(), "title": c.title()}))
        .collect();
    c.insert("checks", &checks);
    render(&st, "waivers.html", &c)
}

/// The waiver form.
#[derive(Debug, Deserialize)]
pub struct WaiverForm {
    check: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    expires: String,
}

/// POST /actions/waiver/add.
pub async fn waiver_add(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Form(f): Form<WaiverForm>,
) -> Response {
    let r = actions::waiver_add(&f.check, &f.reason, &f.expires);
    run(&st, &cur, &peer, r, &f.check)
}

/// POST /actions/waiver/remove.
pub async fn waiver_remove(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Form(f): Form<WaiverForm>,
) -> Response {
    let r = actions::waiver_remove(&f.check);
    run(&st, &cur, &peer, r, &f.check)
}
