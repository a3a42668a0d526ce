//! The user's own account: password and TOTP.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::{base, render};
use crate::state::{AppState, Current, Peer};

fn account(st: &AppState, cur: &Current, message: Option<&str>, error: Option<&str>) -> Response {
    let mut c = base(st, Some(cur), "account");
    let user = st.users.get(&cur.user);
    let totp_on = user.as_ref().is_some_and(|u| u.totp_secret.is_some());
    c.insert("totp_on", &totp_on);
    let secret = crate::users::new_totp_secret();
    c.insert("totp_secret", &secret);
    c.insert(
        "totp_uri",
        &crate::users::otpauth_uri(&format!("Flypack {}", st.hostname), &cur.user, &secret),
    );
    c.insert("message", &message);
    c.insert("error", &error);
    c.insert("min_password", &crate::users::MIN_PASSWORD);
    render(st, "account.html", &c)
}

/// GET /account.
pub async fn page(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    account(&st, &cur, None, None)
}

/// The password form.
#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    current: String,
    password: String,
    password2: String,
}

fn failed(st: &AppState, cur: &Current, msg: &str) -> Response {
    let mut r = account(st, cur, None, Some(msg));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

/// POST /account/password.
pub async fn password(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Form(f): Form<PasswordForm>,
) -> Response {
    let Some(u) = st.users.get(&cur.user) else {
        return failed(&st, &cur, "no such user");
    };
    if !crate::users::verify_password(&u.password_hash, &f.current) {
        st.audit.record(
            &cur.user,
            &peer.0.to_string(),
            "account.password",
            "",
            "refused: wrong password",
        );
        return failed(&st, &cur, "The current password is wrong.");
    }
    if f.password != f.password2 {
        return failed(&st, &cur, "The two new passwords differ.");
    }
    if let Err(e) = crate::users::check_password(&f.password) {
        return failed(&st, &cur, &format!("{e:#}."));
    }
    let hash = crate::users::hash_password(&f.password);
    if let Err(e) = st.users.update(&cur.user, |u| {
        u.password_hash = hash;
        Ok(())
    }) {
        return failed(&st, &cur, &format!("{e:#}"));
    }
    // Other sessions of this user end; this one goes on.
    st.sessions.remove_user(&cur.user, Some(&cur.session_id));
    st.audit
        .record(&cur.user, &peer.0.to_string(), "account.password", "", "ok");
    account(
        &st,
        &cur,
        Some("Password changed. Your other sessions have ended."),
        None,
    )
}

/// The TOTP form.
#[derive(Debug, Deserialize)]
pub struct TotpForm {
    secret: String,
    code: String,
}

/// POST /account/totp: turns TOTP on once a code from the new secret checks.
pub async fn totp_on(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Form(f): Form<TotpForm>,
) -> Response {
    if crate::users::totp_from_secret(&f.secret).is_err() || !st.users.check_totp(&cur.user, &f.secret, &f.code) {
        return failed(
            &st,
            &cur,
            "That code does not match: check the phone's clock and try the next code.",
        );
    }
    let secret = f.secret.clone();
    if let Err(e) = st.users.update(&cur.user, |u| {
        u.totp_secret = Some(secret);
        Ok(())
    }) {
        return failed(&st, &cur, &format!("{e:#}"));
    }
    st.audit
        .record(&cur.user, &peer.0.to_string(), "account.totp", "on", "ok");
    account(
        &st,
        &cur,
        Some("Two-factor codes are on: logins now ask for a code."),
        None,
    )
}

/// The TOTP-off form.
#[derive(Debug, Deserialize)]
pub struct TotpOffForm {
    current: String,
}

/// POST /account/totp/off.
pub async fn totp_off(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Form(f): Form<TotpOffForm>,
) -> Response {
    let ok = st
        .users
        .get(&cur.user)
        .is_some_and(|u| crate::users::verify_password(&u.password_hash, &f.current));
    if !ok {
        return failed(&st, &cur, "The current password is wrong.");
    }
    if let Err(e) = st.users.update(&cur.user, |u| {
        u.totp_secret = None;
        Ok(())
    }) {
        return failed(&st, &cur, &format!("{e:#}"));
    }
    st.audit
        .record(&cur.user, &peer.0.to_string(), "account.totp", "off", "ok");
    account(&st, &cur, Some("Two-factor codes are off."), None)
}
