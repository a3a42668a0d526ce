//! Users (admin) and the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;

use super::{base, render};
use crate::role::Role;
use crate::state::{AppState, Current, Peer};

fn users_page(st: &AppState, cur: &Current, message: Option<&str>, error: Option<&str>) -> Response {
    let mut c = base(st, Some(cur), "users");
    let users: Vec<serde_json::Value> = st
        .users
        .list()
        .into_iter()
        .map(|u| {
            serde_json::json!({"name": u.name, "role": u.role, "totp": u.totp_secret.is_some(), "created": u.created})
        })
        .collect();
    c.insert("users", &users);
    c.insert("roles", &Role::ALL.map(Role::as_str));
    c.insert("message", &message);
    c.insert("error", &error);
    c.insert("min_password", &crate::users::MIN_PASSWORD);
    let mut r = render(st, "users.html", &c);
    if error.is_some() {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    r
}

fn done(
    st: &AppState,
    cur: &Current,
    peer: &Peer,
    what: &str,
    detail: &str,
    r: anyhow::Result<()>,
    ok: &str,
) -> Response {
    match r {
        Ok(()) => {
            st.audit.record(&cur.user, &peer.0.to_string(), what, detail, "ok");
            users_page(st, cur, Some(ok), None)
        }
        Err(e) => {
            st.audit
                .record(&cur.user, &peer.0.to_string(), what, detail, &format!("refused: {e:#}"));
            users_page(st, cur, None, Some(&format!("{e:#}")))
        }
    }
}

/// GET /users.
pub async fn users(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    users_page(&st, &cur, None, None)
}

/// The add form.
#[derive(Debug, Deserialize)]
pub struct AddForm {
    name: String,
    role: String,
    password: String,
}

/// POST /users.
pub async fn add(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Form(f): Form<AddForm>,
) -> Response {
    let name = f.name.trim().to_ascii_lowercase();
    let r = match Role::parse(&f.role) {
        Some(role) => st.users.add(&name, role, &f.password),
        None => Err(anyhow::anyhow!("{:?} is not a role", f.role)),
    };
    done(
        &st,
        &cur,
        &peer,
        "user.add",
        &format!("{name} as {}", f.role),
        r,
        &format!("Added {name}."),
    )
}

/// The role form.
#[derive(Debug, Deserialize)]
pub struct RoleForm {
    role: String,
}

/// POST /users/{name}/role.
pub async fn set_role(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Form(f): Form<RoleForm>,
) -> Response {
    let r = match Role::parse(&f.role) {
        Some(role) => st.users.update(&name, |u| {
            u.role = role;
            Ok(())
        }),
        None => Err(anyhow::anyhow!("{:?} is not a role", f.role)),
    };
    done(
        &st,
        &cur,
        &peer,
        "user.role",
        &format!("{name} to {}", f.role),
        r,
        &format!("{name} is now {}.", f.role),
    )
}

/// The password form.
#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    password: String,
}

/// POST /users/{name}/password.
pub async fn set_password(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Form(f): Form<PasswordForm>,
) -> Response {
    let r = crate::users::check_password(&f.password).and_then(|_| {
        let hash = crate::users::hash_password(&f.password);
        st.users.update(&name, |u| {
            u.password_hash = hash;
            Ok(())
        })
    });
    if r.is_ok() {
        st.sessions.remove_user(&name, Some(&cur.session_id));
    }
    done(
        &st,
        &cur,
        &peer,
        "user.password",
        &name,
        r,
        &format!("Set a new password for {name}; their sessions ended."),
    )
}

/// POST /users/{name}/totp-off.
pub async fn totp_off(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Response {
    let r = st.users.update(&name, |u| {
        u.totp_secret = None;
        Ok(())
    });
    done(
        &st,
        &cur,
        &peer,
        "user.totp-off",
        &name,
        r,
        &format!("Two-factor codes are off for {name}."),
    )
}

/// POST /users/{name}/delete.
pub async fn delete(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Response {
    let r = if name == cur.user {
        Err(anyhow::anyhow!("you cannot delete yourself"))
    } else {
        st.users.remove(&name)
    };
    if r.is_ok() {
        st.sessions.remove_user(&name, None);
    }
    done(&st, &cur, &peer, "user.delete", &name, r, &format!("Deleted {name}."))
}

/// GET /audit.
pub async fn audit(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    let mut c = base(&st, Some(&cur), "audit");
    c.insert("records", &st.audit.tail(200).unwrap_or_default());
    render(&st, "audit.html", &c)
}
