//! Login, logout and enrolment of the first admin.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{base, render};
use crate::session::{PRE_COOKIE, cookie_value};
use crate::state::{AppState, Current, Peer};
use crate::users::LoginCheck;

/// `?next=`.
#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Only a path on this site (never `//host` or a scheme). Without one, `/`:
/// the home page decides (the status page, or the Fleet page on a central).
fn safe_next(n: Option<&str>) -> String {
    match n {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_string(),
        _ => "/".into(),
    }
}

/// The pre-session token: the cookie's, or a new one (then set).
fn pre_token(headers: &HeaderMap) -> (String, Option<String>) {
    let have = headers
        .get(header::COOKIE)
        .and_then(|h| h.to_str().ok())
        .and_then(|c| cookie_value(c, PRE_COOKIE))
        .filter(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string);
    match have {
        Some(t) => (t, None),
        None => {
            let t = crate::security::random_token();
            let cookie = format!("{PRE_COOKIE}={t}; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Strict");
            (t, Some(cookie))
        }
    }
}

fn with_cookie(mut resp: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

fn login_form(
    st: &AppState,
    headers: &HeaderMap,
    next: &str,
    user: &str,
    need_code: bool,
    error: Option<&str>,
) -> Response {
    let (pre, cookie) = pre_token(headers);
    let mut c = base(st, None, "login");
    c.insert("pre", &pre);
    c.insert("next", next);
    c.insert("name", user);
    c.insert("need_code", &need_code);
    c.insert("error", &error);
    c.insert("no_users", &st.users.is_empty());
    c.insert("enrol_pending", &crate::enrol::pending(&st.root));
    with_cookie(render(st, "login.html", &c), cookie)
}

/// GET /login.
pub async fn login_page(
    State(st): State<AppState>,
    cur: Option<Extension<Current>>,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if cur.is_some() {
        return Redirect::to(&next).into_response();
    }
    login_form(&st, &headers, &next, "", false, None)
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    next: Option<String>,
}

/// POST /login.
pub async fn login(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    let addr = peer.0.to_string();
    let name = f.name.trim().to_ascii_lowercase();
    if let Err(l) = st.limiter.check(&name, peer.0) {
        st.audit.record(&name, &addr, "login", "", "refused: too many failures");
        let mut r = login_form(
            &st,
            &headers,
            &next,
            &name,
            false,
            Some(&format!("Too many failed logins: try again in {} s.", l.retry_after)),
        );
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(v) = HeaderValue::from_str(&l.retry_after.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    match st.users.check_login(&name, &f.password, &f.code) {
        LoginCheck::Ok(user) => {
            st.limiter.succeeded(&user.name);
            let (token, _) = st.sessions.create(&user.name);
            st.audit.record(&user.name, &addr, "login", "", "ok");
            let mut r = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&st.sessions.cookie(&token)) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        LoginCheck::NeedCode => login_form(
            &st,
            &headers,
            &next,
            &name,
            true,
            Some("Enter the code from your authenticator app."),
        ),
        LoginCheck::Wrong => {
            st.limiter.failed(&name, peer.0);
            st.audit.record(&name, &addr, "login", "", "failed");
            let mut r = login_form(
                &st,
                &headers,
                &next,
                &name,
                !f.code.is_empty(),
                Some("Wrong user name, password or code."),
            );
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}

/// POST /logout.
pub async fn logout(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
) -> Response {
    st.sessions.remove(&cur.session_id);
    st.audit.record(&cur.user, &peer.0.to_string(), "logout", "", "ok");
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&crate::session::clear_cookie()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn enrol_form(st: &AppState, headers: &HeaderMap, name: &str, error: Option<&str>) -> Response {
    let (pre, cookie) = pre_token(headers);
    let mut c = base(st, None, "enrol");
    c.insert("pre", &pre);
    c.insert("name", name);
    c.insert("error", &error);
    c.insert("has_admin", &st.users.has_admin());
    c.insert("min_password", &crate::users::MIN_PASSWORD);
    with_cookie(render(st, "enrol.html", &c), cookie)
}

/// GET /enrol.
pub async fn enrol_page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    enrol_form(&st, &headers, "admin", None)
}

/// The enrolment form.
#[derive(Debug, Deserialize)]
pub struct EnrolForm {
    code: String,
    name: String,
    password: String,
    password2: String,
}

/// POST /enrol: the code creates an admin, then is spent.
pub async fn enrol(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(f): Form<EnrolForm>,
) -> Response {
    let addr = peer.0.to_string();
    let name = f.name.trim().to_ascii_lowercase();
    let fail = |status: StatusCode, msg: &str| {
        let mut r = enrol_form(&st, &headers, &name, Some(msg));
        *r.status_mut() = status;
        r
    };
    if let Err(l) = st.limiter.check("enrol:", peer.0) {
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many wrong codes: try again in {} s.", l.retry_after),
        );
    }
    if let Err(e) = crate::enrol::check(&st.root, &f.code) {
        st.limiter.failed("enrol:", peer.0);
        st.audit.record(&name, &addr, "enrol", "", &format!("refused: {e}"));
        return fail(StatusCode::FORBIDDEN, &format!("{e}."));
    }
    if f.password != f.password2 {
        return fail(StatusCode::BAD_REQUEST, "The two passwords differ.");
    }
    if let Err(e) = st.users.add(&name, crate::role::Role::Admin, &f.password) {
        return fail(StatusCode::BAD_REQUEST, &format!("{e:#}."));
    }
    if let Err(e) = crate::enrol::spend(&st.root) {
        tracing::error!("spending the enrolment code: {e:#}");
    }
    st.audit.record(&name, &addr, "enrol", "first admin", "ok");
    let (token, _) = st.sessions.create(&name);
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&st.sessions.cookie(&token)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/jobs/1")), "/jobs/1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
