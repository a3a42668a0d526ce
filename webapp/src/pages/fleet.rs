//! The Fleet page: every flypack's units as the central sees them
//! ([`crate::fleet`]).

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{base, error_page, render};
use crate::state::{AppState, Current};

const NO_SOURCE: &str = "No fleet source: this web app shows the fleet where it runs beside the central's \
                         VictoriaMetrics (sources.fleet_url in /etc/flypack/webapp.toml; see \
                         docs/runbooks/central-monitoring.md).";

async fn view(st: &AppState) -> Option<crate::fleet::FleetView> {
    let url = &st.config.sources.fleet_url;
    if url.is_empty() {
        return None;
    }
    Some(crate::fleet::gather(&st.client, url, crate::security::unix_now()).await)
}

/// GET /fleet.
pub async fn page(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    let Some(v) = view(&st).await else {
        return error_page(StatusCode::NOT_FOUND, NO_SOURCE);
    };
    let mut c = base(&st, Some(&cur), "fleet");
    c.insert("fleet", &v);
    c.insert("silent_after", &crate::fleet::SILENT_AFTER_SECS);
    render(&st, "fleet.html", &c)
}

/// GET /api/fleet: the same, as JSON.
pub async fn api(State(st): State<AppState>) -> Response {
    match view(&st).await {
        Some(v) => Json(v).into_response(),
        None => error_page(StatusCode::NOT_FOUND, NO_SOURCE),
    }
}
