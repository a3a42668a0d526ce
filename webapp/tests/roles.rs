//! The role matrix: every route of the router's own table, for every role and
//! for no session, against the status its access rule promises. A new route
//! is in the table, so it cannot be missed here. Also: CSRF refusals, a
//! session whose user is gone, and a session past its limits.

// Test helpers panic on what the test did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use flypack_web::role::{Access, Role};
use flypack_web::routes::{self, Csrf, Kind, RouteDef};
use flypack_web::session::COOKIE;
use flypack_web::state::{AppState, Peer};
use tower::ServiceExt;

/// Who may use each route, written down here on purpose: a route added to
/// the table, or an access rule changed, fails until this list agrees.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", "public"),
    ("GET", "/login", "public"),
    ("POST", "/login", "public"),
    ("GET", "/enrol", "public"),
    ("POST", "/enrol", "public"),
    ("GET", "/static/{version}/{file}", "public"),
    ("GET", "/trust", "public"),
    ("GET", "/ca.pem", "public"),
    ("GET", "/ca.der", "public"),
    ("GET", "/flypack.mobileconfig", "public"),
    ("GET", "/", "viewer"),
    ("GET", "/status", "viewer"),
    ("GET", "/stack", "viewer"),
    ("GET", "/live", "viewer"),
    ("GET", "/history", "viewer"),
    ("GET", "/fleet", "viewer"),
    ("GET", "/api/fleet", "viewer"),
    ("GET", "/jobs", "viewer"),
    ("GET", "/jobs/{id}", "viewer"),
    ("GET", "/jobs/{id}/events", "viewer"),
    ("GET", "/jobs/{id}/files/{name}", "viewer"),
    ("GET", "/api/status", "viewer"),
    ("GET", "/api/live", "viewer"),
    ("GET", "/live/ws", "viewer"),
    ("GET", "/live/sse", "viewer"),
    ("GET", "/api/history/{chart}", "viewer"),
    ("GET", "/account", "viewer"),
    ("POST", "/account/password", "viewer"),
    ("POST", "/account/totp", "viewer"),
    ("POST", "/account/totp/off", "viewer"),
    ("POST", "/logout", "viewer"),
    ("POST", "/actions/qa", "operator"),
    ("POST", "/actions/backup", "operator"),
    ("POST", "/actions/restart", "operator"),
    ("POST", "/jobs/{id}/cancel", "operator"),
    ("POST", "/jobs", "operator"),
    ("GET", "/network", "engineer"),
    ("POST", "/actions/network/apply", "engineer"),
    ("POST", "/actions/network/confirm", "engineer"),
    ("GET", "/waivers", "engineer"),
    ("POST", "/actions/waiver/add", "engineer"),
    ("POST", "/actions/waiver/remove", "engineer"),
    ("GET", "/vm/{*rest}", "engineer"),
    ("POST", "/vm/{*rest}", "engineer"),
    ("GET", "/grafana/{*rest}", "engineer"),
    ("POST", "/grafana/{*rest}", "engineer"),
    ("GET", "/users", "admin"),
    ("POST", "/users", "admin"),
    ("POST", "/users/{name}/role", "admin"),
    ("POST", "/users/{name}/password", "admin"),
    ("POST", "/users/{name}/totp-off", "admin"),
    ("POST", "/users/{name}/delete", "admin"),
    ("GET", "/audit", "admin"),
];

mod common;
use common::{ROLES, app};

/// A concrete path for a route pattern (parameters that name nothing real:
/// no action of the matrix touches an existing user or job).
fn concrete(path: &str) -> String {
    path.replace("{version}", flypack_web::VERSION)
        .replace("{file}", "app.css")
        .replace("{id}", "no-such-job")
        .replace("{name}", "no-such-user")
        .replace("{chart}", "cpu")
        .replace("{*rest}", "api/v1/status/buildinfo")
}

/// What the server puts on every request: the peer's address.
fn peer() -> Peer {
    Peer(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

struct Sent {
    status: StatusCode,
    location: Option<String>,
    sets_cookie: bool,
}

async fn send(st: &AppState, def: &RouteDef, role: Option<Role>) -> Sent {
    let mut req = Request::builder()
        .method(def.method.clone())
        .uri(concrete(def.path))
        .header(header::HOST, "fp-test.local")
        .extension(peer());
    if let Some(r) = role {
        let (token, session) = st.sessions.create(&r.to_string());
        req = req.header(header::COOKIE, format!("{COOKIE}={token}"));
        match def.csrf {
            Csrf::Token => req = req.header("x-csrf-token", session.csrf),
            Csrf::Origin => req = req.header(header::ORIGIN, "https://fp-test.local"),
            Csrf::None | Csrf::PreSession => {}
        }
    }
    if def.method != Method::GET {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let resp = routes::router(st.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    Sent {
        status: resp.status(),
        location: resp
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string()),
        sets_cookie: resp.headers().contains_key(header::SET_COOKIE),
    }
}

/// Sent to the login page by the guard (logging out also ends on the login
/// page, but it clears the cookie; the guard sets none).
fn to_login(s: &Sent) -> bool {
    s.status == StatusCode::SEE_OTHER
        && s.location.as_deref().is_some_and(|l| l.starts_with("/login"))
        && !s.sets_cookie
}

#[tokio::test]
async fn every_route_answers_each_role_as_its_access_rule_says() {
    let dir = tempfile::tempdir().unwrap();
    let st = app(dir.path()).await;
    let table = routes::table();
    let have: Vec<(String, String, String)> = table
        .iter()
        .map(|d| {
            let access = match d.access {
                Access::Public => "public".to_string(),
                Access::Role(r) => r.to_string(),
            };
            (d.method.to_string(), d.path.to_string(), access)
        })
        .collect();
    let want: Vec<(String, String, String)> = EXPECTED
        .iter()
        .map(|(m, p, a)| (m.to_string(), p.to_string(), a.to_string()))
        .collect();
    assert_eq!(
        have, want,
        "the route table and this test's list of access rules differ"
    );
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    for def in &table {
        let mut row = format!("{:6} {:28}", def.method.as_str(), def.path);
        for role in [None].into_iter().chain(ROLES.map(Some)) {
            let s = send(&st, def, role).await;
            row.push_str(&format!(" {:>4}", s.status.as_u16()));
            let ok = match (def.access, role) {
                // Public POSTs need the pre-session double submit, which
                // this request does not carry: refused by CSRF, never by role.
                (Access::Public, _) if def.method != Method::GET => s.status == StatusCode::FORBIDDEN,
                (Access::Public, _) => s.status != StatusCode::FORBIDDEN && s.status != StatusCode::UNAUTHORIZED,
                (Access::Role(_), None) => match def.kind {
                    Kind::Page => to_login(&s),
                    Kind::Api => s.status == StatusCode::UNAUTHORIZED,
                },
                (Access::Role(need), Some(r)) if !r.allows(need) => s.status == StatusCode::FORBIDDEN,
                (Access::Role(_), Some(_)) => {
                    s.status != StatusCode::FORBIDDEN && s.status != StatusCode::UNAUTHORIZED && !to_login(&s)
                }
            };
            if !ok {
                wrong.push(format!(
                    "{} {} as {:?}: {} {:?}",
                    def.method, def.path, role, s.status, s.location
                ));
            }
        }
        rows.push(row);
    }
    println!(
        "route                               none view  op  eng admin\n{}",
        rows.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "answers that break the access rules:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn mutating_requests_without_the_csrf_token_or_from_elsewhere_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let st = app(dir.path()).await;
    let (token, session) = st.sessions.create("admin");
    let post = |uri: &str, csrf: Option<&str>, origin: Option<&str>| {
        let mut r = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, "fp-test.local")
            .extension(peer())
            .header(header::COOKIE, format!("{COOKIE}={token}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        r.body(Body::from("check=time.sync")).unwrap()
    };
    let status = |r: Request<Body>| {
        let st = st.clone();
        async move { routes::router(st).oneshot(r).await.unwrap().status() }
    };
    assert_eq!(
        status(post("/actions/waiver/remove", None, None)).await,
        StatusCode::FORBIDDEN,
        "no token"
    );
    assert_eq!(
        status(post("/actions/waiver/remove", Some("not-the-token"), None)).await,
        StatusCode::FORBIDDEN,
        "wrong token"
    );
    assert_ne!(
        status(post("/actions/waiver/remove", Some(&session.csrf), None)).await,
        StatusCode::FORBIDDEN,
        "the session's token"
    );
    // Proxied apps: checked by Origin.
    assert_eq!(
        status(post("/vm/api/v1/import", None, Some("https://evil.example"))).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(post("/vm/api/v1/import", None, None)).await,
        StatusCode::FORBIDDEN
    );
    // Login: the pre-session cookie and the form field must match.
    let login = |cookie: &str, body: &str| {
        Request::builder()
            .method(Method::POST)
            .uri("/login")
            .header(header::HOST, "fp-test.local")
            .extension(peer())
            .header(header::COOKIE, cookie.to_string())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let pre = flypack_web::session::PRE_COOKIE;
    assert_eq!(
        status(login(&format!("{pre}=abc"), "pre=xyz&name=admin&password=x")).await,
        StatusCode::FORBIDDEN
    );
    assert_ne!(
        status(login(&format!("{pre}=abc"), "pre=abc&name=admin&password=x")).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_session_of_a_removed_user_or_past_its_limit_is_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let st = app(dir.path()).await;
    let get = |token: String| {
        Request::builder()
            .uri("/status")
            .header(header::HOST, "fp-test.local")
            .extension(peer())
            .header(header::COOKIE, format!("{COOKIE}={token}"))
            .body(Body::empty())
            .unwrap()
    };
    let (token, _) = st.sessions.create("viewer");
    let ok = routes::router(st.clone()).oneshot(get(token.clone())).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    st.users.remove("viewer").unwrap();
    let gone = routes::router(st.clone()).oneshot(get(token)).await.unwrap();
    assert_eq!(
        gone.status(),
        StatusCode::SEE_OTHER,
        "a removed user's session is refused"
    );

    // The same sessions file read by an app whose absolute limit has passed.
    let (token, _) = st.sessions.create("operator");
    let strict = flypack_web::session::Sessions::load(dir.path(), 600, 0).unwrap();
    assert!(strict.get(&token).is_none(), "an expired session is refused");
    assert!(st.sessions.get(&token).is_some());
}
