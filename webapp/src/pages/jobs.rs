//! Jobs: the list, one job (its events streaming live), its files, start
//! (an allowed playbook) and cancel.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{base, error_page, render, start_job};
use crate::jobs::valid_id;
use crate::state::{AppState, Current, Peer};

/// GET /jobs.
pub async fn list(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    let mut c = base(&st, Some(&cur), "jobs");
    c.insert("jobs", &st.jobs.list());
    // Only the playbooks this user's role may run.
    let books: Vec<serde_json::Value> = crate::actions::playbooks(&st.config)
        .into_iter()
        .filter(|p| cur.role.allows(crate::actions::playbook_role(&st.config, p)))
        .map(|p| {
            let ro = st.config.jobs.read_only.contains(&p);
            serde_json::json!({"name": p, "read_only": ro})
        })
        .collect();
    c.insert("playbooks", &books);
    c.insert("busy", &st.jobs.busy());
    render(&st, "jobs.html", &c)
}

/// GET /jobs/{id}.
pub async fn show(State(st): State<AppState>, Extension(cur): Extension<Current>, Path(id): Path<String>) -> Response {
    let Some(job) = valid_id(&id).then(|| st.jobs.get(&id)).flatten() else {
        return error_page(StatusCode::NOT_FOUND, "No such job.");
    };
    let meta = job.meta();
    let mut c = base(&st, Some(&cur), "jobs");
    c.insert(
        "can_cancel",
        &(meta.state == crate::jobs::JobState::Running && cur.role.allows(meta.role)),
    );
    c.insert("command", &crate::jobs::display(&meta.argv));
    c.insert("job", &meta);
    c.insert("events", &job.events_from(0));
    c.insert(
        "files",
        &job.files()
            .into_iter()
            .map(|(n, s)| serde_json::json!({"href": format!("/jobs/{id}/files/{}", path_segment(&n)), "name": n, "size": s}))
            .collect::<Vec<_>>(),
    );
    render(&st, "job.html", &c)
}

/// `s` percent-encoded as one URL path segment (a file name may hold
/// spaces, `#` or `?`).
pub fn path_segment(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// GET /jobs/{id}/events: Server-Sent Events, replayed from `Last-Event-ID`,
/// then live until the job ends (an `end` event).
pub async fn events(State(st): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let Some(job) = valid_id(&id).then(|| st.jobs.get(&id)).flatten() else {
        return error_page(StatusCode::NOT_FOUND, "No such job.");
    };
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map(|n| n + 1)
        .unwrap_or(0);
    let rx = job.watch();
    let stream = futures::stream::unfold((job, rx, from, false), |(job, mut rx, from, done)| async move {
        if done {
            return None;
        }
        loop {
            let batch = job.events_from(from);
            if let Some(e) = batch.first() {
                let ev = Event::default()
                    .id(e.seq.to_string())
                    .event("job")
                    .json_data(e)
                    .unwrap_or_else(|_| Event::default().comment("unserialisable"));
                return Some((Ok::<Event, Infallible>(ev), (job, rx, from + 1, false)));
            }
            if !job.running() {
                let ev = Event::default().event("end").data(job.meta().state.as_str());
                return Some((Ok(ev), (job, rx, from, true)));
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// GET /jobs/{id}/files/{name}: a file the job left.
pub async fn file(State(st): State<AppState>, Path((id, name)): Path<(String, String)>) -> Response {
    let Some(job) = valid_id(&id).then(|| st.jobs.get(&id)).flatten() else {
        return error_page(StatusCode::NOT_FOUND, "No such job.");
    };
    let Some((name, _)) = job.files().into_iter().find(|(n, _)| *n == name) else {
        return error_page(StatusCode::NOT_FOUND, "No such file.");
    };
    let path = job.dir().join("files").join(&name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let safe: String = name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                .collect();
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{safe}\"")),
                ],
                bytes,
            )
                .into_response()
        }
        Err(e) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reading {}: {e}", path.display()),
        ),
    }
}

/// The start form.
#[derive(Debug, Deserialize)]
pub struct StartForm {
    playbook: String,
}

/// POST /jobs: runs an allowed playbook.
pub async fn start(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Form(f): Form<StartForm>,
) -> Response {
    match crate::actions::playbook_job(&st.config, &st.root, &f.playbook) {
        Ok(spec) if !cur.role.allows(spec.role) => {
            st.audit.record(
                &cur.user,
                &peer.0.to_string(),
                "job.start",
                &f.playbook,
                &format!("refused: needs the {} role", spec.role),
            );
            error_page(
                StatusCode::FORBIDDEN,
                &format!("{} needs the {} role; yours is {}.", f.playbook, spec.role, cur.role),
            )
        }
        Ok(spec) => start_job(&st, &cur, &peer.0.to_string(), spec, &f.playbook),
        Err(e) => {
            st.audit.record(
                &cur.user,
                &peer.0.to_string(),
                "job.start",
                &f.playbook,
                &format!("refused: {e:#}"),
            );
            super::bad_request(&e)
        }
    }
}

/// POST /jobs/{id}/cancel.
pub async fn cancel(
    State(st): State<AppState>,
    Extension(cur): Extension<Current>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Response {
    let Some(job) = valid_id(&id).then(|| st.jobs.get(&id)).flatten() else {
        return error_page(StatusCode::NOT_FOUND, "No such job.");
    };
    let meta = job.meta();
    if !cur.role.allows(meta.role) {
        st.audit
            .record(&cur.user, &peer.0.to_string(), "job.cancel", &id, "refused: role");
        return error_page(
            StatusCode::FORBIDDEN,
            &format!(
                "Your role ({}) cannot cancel this job: it needs {}.",
                cur.role, meta.role
            ),
        );
    }
    match st.jobs.cancel(&id) {
        Ok(()) => {
            st.audit.record(&cur.user, &peer.0.to_string(), "job.cancel", &id, "ok");
            Redirect::to(&format!("/jobs/{id}")).into_response()
        }
        Err(e) => {
            st.audit.record(
                &cur.user,
                &peer.0.to_string(),
                "job.cancel",
                &id,
                &format!("failed: {e:#}"),
            );
            error_page(StatusCode::CONFLICT, &format!("{e:#}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_is_one_path_segment() {
        assert_eq!(path_segment("report-1.tar.gz"), "report-1.tar.gz");
        assert_eq!(path_segment("report 1#?.txt"), "report%201%23%3F.txt");
        assert_eq!(path_segment("a/b%"), "a%2Fb%25");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
