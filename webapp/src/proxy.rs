//! Plain HTTP to the unit's own services: the video exporter (live),
//! VictoriaMetrics (history, and vmui for engineers) and Grafana (auth
//! proxy). One client; nothing leaves the unit.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The HTTP client.
pub type Client = HyperClient<HttpConnector, Body>;

/// A client (HTTP/1.1, plain).
pub fn client() -> Client {
    let mut c = HttpConnector::new();
    c.set_connect_timeout(Some(Duration::from_secs(2)));
    c.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(c)
}

/// The most [`get_text`] reads (the exporter's text for a hundred streams is
/// a few hundred KiB).
const MAX_TEXT: usize = 8 << 20;

/// GETs `url` and returns its body as text (2xx only, at most
/// [`MAX_TEXT`] bytes), within `within`.
pub async fn get_text(client: &Client, url: &str, within: Duration) -> Result<String> {
    let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
    let fut = async {
        let req = axum::http::Request::get(uri)
            .body(Body::empty())
            .context("building the request")?;
        let resp = client.request(req).await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_TEXT)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading {url}: {e} (at most {MAX_TEXT} bytes)"))?
            .to_bytes();
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        String::from_utf8(body.to_vec()).with_context(|| format!("{url}: not UTF-8"))
    };
    tokio::time::timeout(within, fut)
        .await
        .with_context(|| format!("GET {url}: no answer within {} ms", within.as_millis()))?
}

const HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Headers never passed upstream: ours (the session cookie, CSRF) and
/// anything that claims an identity.
fn strip_request(h: &mut HeaderMap) {
    for k in HOP {
        h.remove(k);
    }
    h.remove(header::COOKIE);
    h.remove(header::AUTHORIZATION);
    let ours: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-flypack-") || k.as_str() == "x-csrf-token")
        .cloned()
        .collect();
    for k in ours {
        h.remove(k);
    }
}

/// Forwards `req` to `base` + `path` (with the request's query), adding
/// `extra` headers; streams the answer back. An upstream that does not
/// answer gives 502 with `down` as the message.
pub async fn forward(
    client: &Client,
    base: &str,
    path: &str,
    req: Request,
    extra: &[(&'static str, String)],
    down: &str,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{}{path}{query}", base.trim_end_matches('/'));
    let Ok(uri) = url.parse::<Uri>() else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    strip_request(&mut parts.headers);
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(v) {
            parts.headers.insert(HeaderName::from_static(k), v);
        }
    }
    let mut up = axum::http::Request::new(body);
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = parts.headers;
    match tokio::time::timeout(Duration::from_secs(30), client.request(up)).await {
        Ok(Ok(resp)) => {
            let (mut p, b) = resp.into_parts();
            for k in HOP {
                p.headers.remove(k);
            }
            // An upstream cannot set cookies on the web app's origin.
            p.headers.remove(header::SET_COOKIE);
            Response::from_parts(p, Body::new(b))
        }
        Ok(Err(e)) => {
            tracing::debug!("proxy to {url}: {e}");
            crate::pages::error_page(StatusCode::BAD_GATEWAY, down)
        }
        Err(_) => crate::pages::error_page(StatusCode::GATEWAY_TIMEOUT, &format!("{down} (no answer in 30 s)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_never_go_upstream() {
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("__Host-flypack=secret"));
        h.insert("x-flypack-user", HeaderValue::from_static("admin"));
        h.insert("x-csrf-token", HeaderValue::from_static("t"));
        h.insert("accept", HeaderValue::from_static("text/html"));
        strip_request(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }
}
