//! Plain HTTP: only the redirect to HTTPS and the CA certificate (with the
//! page that says how to install it), so a phone can trust the flypack
//! before it ever sees the HTTPS site.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::state::AppState;

/// The paths plain HTTP serves (everything else redirects).
pub const PATHS: &[&str] = &[
    "/trust",
    "/ca.pem",
    "/ca.der",
    "/flypack.mobileconfig",
    "/static/{version}/{file}",
];

/// The plain-HTTP router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/trust", get(crate::pages::trust::page))
        .route("/ca.pem", get(crate::pages::trust::pem))
        .route("/ca.der", get(crate::pages::trust::der))
        .route("/flypack.mobileconfig", get(crate::pages::trust::mobileconfig))
        .route("/static/{version}/{file}", get(crate::assets::serve))
        .fallback(redirect)
        .layer(middleware::from_fn(crate::security::headers))
        .with_state(state)
}

/// Where a plain request goes on HTTPS.
pub fn https_url(host: Option<&str>, fallback_host: &str, port: u16, path_and_query: &str) -> String {
    let host = host
        .and_then(crate::security::clean_host)
        .map(|h| {
            // Drop the port of the plain listener; keep an IPv6 literal whole.
            match h.rsplit_once(':') {
                Some((name, p)) if !name.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(']') => {
                    name.to_string()
                }
                _ => h.to_string(),
            }
        })
        .unwrap_or_else(|| format!("{fallback_host}.local"));
    let port = if port == 443 { String::new() } else { format!(":{port}") };
    format!("https://{host}{port}{path_and_query}")
}

async fn redirect(State(st): State<AppState>, req: Request) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let port = st
        .config
        .listen
        .public_https_port
        .unwrap_or(st.config.listen.https.port());
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = https_url(host, &st.hostname, port, pq);
    if req.method() == Method::GET || req.method() == Method::HEAD {
        Redirect::permanent(&url).into_response()
    } else {
        (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, url)]).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_the_host_and_path() {
        assert_eq!(
            https_url(Some("fp-01.local"), "x", 443, "/live?a=1"),
            "https://fp-01.local/live?a=1"
        );
        assert_eq!(https_url(Some("10.0.0.5:80"), "x", 8443, "/"), "https://10.0.0.5:8443/");
        assert_eq!(https_url(Some("[fd00::5]"), "x", 443, "/"), "https://[fd00::5]/");
        assert_eq!(https_url(Some("[fd00::5]:80"), "x", 443, "/"), "https://[fd00::5]/");
        assert_eq!(https_url(None, "fp-02", 443, "/"), "https://fp-02.local/");
        assert_eq!(https_url(Some("evil\r\n"), "fp-02", 443, "/"), "https://fp-02.local/");
    }
}
