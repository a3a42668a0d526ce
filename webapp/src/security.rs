//! Randomness, clocks, and the security headers every response carries.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Fills `buf` from the OS's random source.
pub fn random_bytes(buf: &mut [u8]) {
    // The kernel's random source does not fail once the system is up; a
    // process that cannot get randomness must not make tokens or keys.
    getrandom::fill(buf).expect("the OS random source");
}

/// 256 random bits, hex (session and CSRF tokens).
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    random_bytes(&mut b);
    hex::encode(b)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Whether a Host header value is safe to echo into a header (host[:port]).
pub fn clean_host(host: &str) -> Option<&str> {
    let ok =
        !host.is_empty() && host.len() <= 255 && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    ok.then_some(host)
}

/// The Content-Security-Policy: our own scripts and styles only (no inline),
/// no framing, WebSocket to this host.
pub fn csp(host: Option<&str>) -> String {
    let ws = host.map(|h| format!(" wss://{h}")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; \
         connect-src 'self'{ws}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Adds the security headers to every response (a proxied app's own CSP is kept).
pub async fn headers(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(clean_host)
        .map(str::to_string);
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY)
        && let Ok(v) = HeaderValue::from_str(&csp(host.as_deref()))
    {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    let fixed: [(HeaderName, &str); 6] = [
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    ];
    for (k, v) in fixed {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Compares two secrets in constant time.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_has_no_unsafe_inline_and_denies_framing() {
        let c = csp(Some("fp-01.local"));
        assert!(!c.contains("unsafe-inline"));
        assert!(c.contains("frame-ancestors 'none'"));
        assert!(c.contains("connect-src 'self' wss://fp-01.local;"));
        assert_eq!(clean_host("fp-01.local:8443"), Some("fp-01.local:8443"));
        assert_eq!(clean_host("evil\r\nx"), None);
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert_eq!(random_token().len(), 64);
    }
}
