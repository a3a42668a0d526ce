//! Static assets, embedded in the binary (nothing is loaded from the
//! internet). URLs carry a digest of the assets, so browsers cache them for
//! good and a new build is fetched anew.
//!
//! Vendored: uPlot 1.6.32 (MIT, (c) 2022 Leon Sorokin), `uPlot.iife.min.js`
//! and `uPlot.min.css` from the npm package `uplot`.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Every asset: name, content type, bytes.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../static/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/app.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/live.js"),
    ),
    (
        "history.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/history.js"),
    ),
    (
        "job.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/job.js"),
    ),
    (
        "uplot.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/uPlot.iife.min.js"),
    ),
    (
        "uplot.css",
        "text/css; charset=utf-8",
        include_bytes!("../static/uPlot.min.css"),
    ),
    ("icon.svg", "image/svg+xml", include_bytes!("../static/icon.svg")),
];

/// The URL prefix of the assets: `/static/DIGEST`.
pub fn prefix() -> &'static str {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| {
        let mut h = Sha256::new();
        for (n, _, b) in ASSETS {
            h.update(n.as_bytes());
            h.update(b);
        }
        format!("/static/{}", &hex::encode(h.finalize())[..12])
    })
}

/// GET /static/{version}/{file}.
pub async fn serve(Path((version, file)): Path<(String, String)>) -> Response {
    let Some((_, ctype, body)) = ASSETS.iter().find(|(n, _, _)| *n == file) else {
        return crate::pages::error_page(StatusCode::NOT_FOUND, "no such file");
    };
    let cache = if prefix().ends_with(&format!("/{version}")) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    ([(header::CONTENT_TYPE, *ctype), (header::CACHE_CONTROL, cache)], *body).into_response()
}
