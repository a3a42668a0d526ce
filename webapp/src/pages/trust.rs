//! The CA certificate for phones: the install page and the downloads (PEM,
//! DER, iOS profile). Served on HTTPS and on plain HTTP.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{base, error_page, render};
use crate::state::{AppState, Current};

fn missing() -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "This unit has no CA certificate yet (`flypack-web tls` makes it when the service starts).",
    )
}

/// GET /trust: how to install the CA on a phone.
pub async fn page(State(st): State<AppState>, cur: Option<axum::Extension<Current>>) -> Response {
    let mut c = base(&st, cur.as_ref().map(|c| &c.0), "trust");
    c.insert("ca_name", &st.ca.as_ref().map(|c| c.name.clone()));
    c.insert("fingerprint", &st.ca.as_ref().map(|c| c.fingerprint.clone()));
    render(&st, "trust.html", &c)
}

/// GET /ca.pem.
pub async fn pem(State(st): State<AppState>) -> Response {
    match &st.ca {
        Some(ca) => (
            [
                (header::CONTENT_TYPE, "application/x-pem-file"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"flypack-ca.pem\""),
            ],
            ca.pem.clone(),
        )
            .into_response(),
        None => missing(),
    }
}

/// GET /ca.der (Android: Settings > Security > Install a certificate > CA certificate).
pub async fn der(State(st): State<AppState>) -> Response {
    match &st.ca {
        Some(ca) => (
            [
                (header::CONTENT_TYPE, "application/x-x509-ca-cert"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"flypack-ca.crt\""),
            ],
            ca.der.clone(),
        )
            .into_response(),
        None => missing(),
    }
}

/// GET /flypack.mobileconfig (iOS).
pub async fn mobileconfig(State(st): State<AppState>) -> Response {
    match &st.ca {
        Some(ca) => (
            [
                (header::CONTENT_TYPE, "application/x-apple-aspen-config"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"flypack.mobileconfig\"",
                ),
            ],
            crate::tls::mobileconfig(ca, &st.hostname),
        )
            .into_response(),
        None => missing(),
    }
}
