//! vmui and Grafana behind the login (engineers).

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::Response;

use crate::role::Role;
use crate::state::{AppState, Current};

/// The Grafana role a web app role maps to (auth proxy, `X-Flypack-Role`).
pub fn grafana_role(r: Role) -> &'static str {
    match r {
        Role::Admin => "Admin",
        Role::Engineer => "Editor",
        Role::Operator | Role::Viewer => "Viewer",
    }
}

/// /vm/...: VictoriaMetrics (vmui at /vm/vmui/).
pub async fn vm(State(st): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().strip_prefix("/vm").unwrap_or("/").to_string();
    crate::proxy::forward(
        &st.client,
        &st.config.sources.victoriametrics_url,
        &path,
        req,
        &[],
        "VictoriaMetrics does not answer on this unit",
    )
    .await
}

/// /grafana/...: Grafana with auth proxy (served from the /grafana sub-path).
pub async fn grafana(State(st): State<AppState>, Extension(cur): Extension<Current>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let extra = [
        ("x-flypack-user", cur.user.clone()),
        ("x-flypack-role", grafana_role(cur.role).to_string()),
    ];
    crate::proxy::forward(
        &st.client,
        &st.config.sources.grafana_url,
        &path,
        req,
        &extra,
        "Grafana is not running on this unit (it is optional: the default image has none)",
    )
    .await
}
