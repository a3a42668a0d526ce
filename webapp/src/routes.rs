//! The one route table. The router is built from it, each route behind a
//! guard that enforces its access (role) and CSRF rule; the role-matrix
//! test iterates the same table, so a new route cannot be missed.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::pages;
use crate::role::{Access, Role};
use crate::session::{COOKIE, PRE_COOKIE, cookie_value};
use crate::state::{AppState, Current, Peer};

/// How a refused request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A page: without a session, a redirect to the login page (303).
    Page,
    /// An API (JSON, WebSocket, event stream): without a session, 401.
    Api,
}

/// How a mutating request proves it comes from our own page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Csrf {
    /// Not mutating (GET).
    None,
    /// The session's CSRF token, in the `X-CSRF-Token` header or the `csrf` form field.
    Token,
    /// Before login: the `pre` form field equals the pre-session cookie (double submit).
    PreSession,
    /// A proxied app's request: the Origin (or Referer) is this host.
    Origin,
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteDef {
    /// Method.
    pub method: Method,
    /// axum path (`/jobs/{id}`).
    pub path: &'static str,
    /// Who may use it.
    pub access: Access,
    /// How it refuses.
    pub kind: Kind,
    /// Its CSRF rule.
    pub csrf: Csrf,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

macro_rules! h {
    ($f:expr) => {
        |m| on(m, $f)
    };
}

fn r(
    method: Method,
    path: &'static str,
    access: Access,
    kind: Kind,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
) -> RouteDef {
    let csrf = match (&method, access) {
        (&Method::GET, _) => Csrf::None,
        (_, Access::Public) => Csrf::PreSession,
        _ => Csrf::Token,
    };
    RouteDef {
        method,
        path,
        access,
        kind,
        csrf,
        handler,
    }
}

impl RouteDef {
    fn origin_checked(mut self) -> Self {
        self.csrf = Csrf::Origin;
        self
    }
}

/// Every route of the HTTPS app.
pub fn table() -> Vec<RouteDef> {
    use Access::Public;
    use Kind::{Api, Page};
    use Method as M;
    const V: Access = Access::Role(Role::Viewer);
    const O: Access = Access::Role(Role::Operator);
    const E: Access = Access::Role(Role::Engineer);
    const A: Access = Access::Role(Role::Admin);
    vec![
        // Public: health, login, enrolment, assets, the CA.
        r(M::GET, "/healthz", Public, Api, h!(pages::healthz)),
        r(M::GET, "/login", Public, Page, h!(pages::auth::login_page)),
        r(M::POST, "/login", Public, Page, h!(pages::auth::login)),
        r(M::GET, "/enrol", Public, Page, h!(pages::auth::enrol_page)),
        r(M::POST, "/enrol", Public, Page, h!(pages::auth::enrol)),
        r(
            M::GET,
            "/static/{version}/{file}",
            Public,
            Api,
            h!(crate::assets::serve),
        ),
        r(M::GET, "/trust", Public, Page, h!(pages::trust::page)),
        r(M::GET, "/ca.pem", Public, Api, h!(pages::trust::pem)),
        r(M::GET, "/ca.der", Public, Api, h!(pages::trust::der)),
        r(
            M::GET,
            "/flypack.mobileconfig",
            Public,
            Api,
            h!(pages::trust::mobileconfig),
        ),
        // Viewer: read everything.
        r(M::GET, "/", V, Page, h!(pages::home)),
        r(M::GET, "/status", V, Page, h!(pages::status::page)),
        r(M::GET, "/stack", V, Page, h!(pages::status::stack)),
        r(M::GET, "/live", V, Page, h!(pages::live_page)),
        r(M::GET, "/history", V, Page, h!(pages::history::page)),
        r(M::GET, "/fleet", V, Page, h!(pages::fleet::page)),
        r(M::GET, "/api/fleet", V, Api, h!(pages::fleet::api)),
        r(M::GET, "/jobs", V, Page, h!(pages::jobs::list)),
        r(M::GET, "/jobs/{id}", V, Page, h!(pages::jobs::show)),
        r(M::GET, "/jobs/{id}/events", V, Api, h!(pages::jobs::events)),
        r(M::GET, "/jobs/{id}/files/{name}", V, Page, h!(pages::jobs::file)),
        r(M::GET, "/api/status", V, Api, h!(pages::status::api)),
        r(M::GET, "/api/live", V, Api, h!(crate::live::poll)),
        r(M::GET, "/live/ws", V, Api, h!(crate::live::ws)),
        r(M::GET, "/live/sse", V, Api, h!(crate::live::sse)),
        r(M::GET, "/api/history/{chart}", V, Api, h!(pages::history::api)),
        r(M::GET, "/account", V, Page, h!(pages::account::page)),
        r(M::POST, "/account/password", V, Page, h!(pages::account::password)),
        r(M::POST, "/account/totp", V, Page, h!(pages::account::totp_on)),
        r(M::POST, "/account/totp/off", V, Page, h!(pages::account::totp_off)),
        r(M::POST, "/logout", V, Page, h!(pages::auth::logout)),
        // Operator: QA, backup, restart a service; cancel their jobs.
        r(M::POST, "/actions/qa", O, Page, h!(pages::actions::qa)),
        r(M::POST, "/actions/backup", O, Page, h!(pages::actions::backup)),
        r(M::POST, "/actions/restart", O, Page, h!(pages::actions::restart)),
        r(M::POST, "/jobs/{id}/cancel", O, Page, h!(pages::jobs::cancel)),
        // Ansible jobs: the handler checks each playbook's own role
        // (operator for qa.yml, stack.yml, diagnostics.yml; engineer else).
        r(M::POST, "/jobs", O, Page, h!(pages::jobs::start)),
        // Engineer: network changes, waivers, vmui and Grafana.
        r(M::GET, "/network", E, Page, h!(pages::actions::network_page)),
        r(
            M::POST,
            "/actions/network/apply",
            E,
            Page,
            h!(pages::actions::network_apply),
        ),
        r(
            M::POST,
            "/actions/network/confirm",
            E,
            Page,
            h!(pages::actions::network_confirm),
        ),
        r(M::GET, "/waivers", E, Page, h!(pages::actions::waivers_page)),
        r(M::POST, "/actions/waiver/add", E, Page, h!(pages::actions::waiver_add)),
        r(
            M::POST,
            "/actions/waiver/remove",
            E,
            Page,
            h!(pages::actions::waiver_remove),
        ),
        r(M::GET, "/vm/{*rest}", E, Page, h!(pages::engineer::vm)),
        r(M::POST, "/vm/{*rest}", E, Api, h!(pages::engineer::vm)).origin_checked(),
        r(M::GET, "/grafana/{*rest}", E, Page, h!(pages::engineer::grafana)),
        r(M::POST, "/grafana/{*rest}", E, Api, h!(pages::engineer::grafana)).origin_checked(),
        // Admin: users and the audit log.
        r(M::GET, "/users", A, Page, h!(pages::admin::users)),
        r(M::POST, "/users", A, Page, h!(pages::admin::add)),
        r(M::POST, "/users/{name}/role", A, Page, h!(pages::admin::set_role)),
        r(
            M::POST,
            "/users/{name}/password",
            A,
            Page,
            h!(pages::admin::set_password),
        ),
        r(M::POST, "/users/{name}/totp-off", A, Page, h!(pages::admin::totp_off)),
        r(M::POST, "/users/{name}/delete", A, Page, h!(pages::admin::delete)),
        r(M::GET, "/audit", A, Page, h!(pages::admin::audit)),
    ]
}

fn filter(m: &Method) -> MethodFilter {
    match *m {
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        _ => MethodFilter::GET,
    }
}

/// The HTTPS router: every route of [`table`] behind its guard, the
/// security headers on every response.
pub fn router(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for def in table() {
        let g = Guard {
            access: def.access,
            kind: def.kind,
            csrf: def.csrf,
        };
        let mr = (def.handler)(filter(&def.method)).route_layer(middleware::from_fn_with_state(
            state.clone(),
            move |st: State<AppState>, req: Request, next: Next| guard(g, st, req, next),
        ));
        router = router.route(def.path, mr);
    }
    router
        .fallback(pages::not_found)
        .layer(middleware::from_fn(crate::security::headers))
        .with_state(state)
}

#[derive(Debug, Clone, Copy)]
struct Guard {
    access: Access,
    kind: Kind,
    csrf: Csrf,
}

/// The request's peer address ("-" when unknown).
pub fn peer_of(req: &Request) -> std::net::IpAddr {
    req.extensions()
        .get::<Peer>()
        .map(|p| p.0)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

fn current_of(st: &AppState, req: &Request) -> Option<Current> {
    let cookies = req.headers().get(header::COOKIE)?.to_str().ok()?;
    let token = cookie_value(cookies, COOKIE)?;
    let s = st.sessions.get(token)?;
    let u = st.users.get(&s.user)?;
    Some(Current {
        user: u.name,
        role: u.role,
        csrf: s.csrf,
        session_id: s.id,
    })
}

/// Largest form the app takes (a pasted unit config fits).
pub const MAX_FORM: usize = 256 * 1024;

async fn guard(g: Guard, State(st): State<AppState>, req: Request, next: Next) -> Response {
    let current = current_of(&st, &req);
    let addr = peer_of(&req);
    if let Access::Role(needed) = g.access {
        match &current {
            None => {
                return match g.kind {
                    Kind::Page if req.method() == Method::GET => {
                        let next_url = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                        let q: String = form_urlencoded::byte_serialize(next_url.as_bytes()).collect();
                        Redirect::to(&format!("/login?next={q}")).into_response()
                    }
                    Kind::Page => Redirect::to("/login").into_response(),
                    Kind::Api => pages::error_page(StatusCode::UNAUTHORIZED, "log in first"),
                };
            }
            Some(c) if !c.role.allows(needed) => {
                if req.method() != Method::GET {
                    st.audit
                        .record(&c.user, &addr.to_string(), req.uri().path(), "", "refused: role");
                }
                return pages::error_page(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "Your role ({}) cannot do this: it needs {} or above. Ask an admin.",
                        c.role, needed
                    ),
                );
            }
            Some(_) => {}
        }
    }
    let mut req = match check_csrf(g.csrf, current.as_ref(), req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Some(c) = current {
        req.extensions_mut().insert(c);
    }
    next.run(req).await
}

fn refused(why: &str) -> Response {
    pages::error_page(
        StatusCode::FORBIDDEN,
        &format!("Refused: {why}. Reload the page and try again."),
    )
}

/// Checks the CSRF rule; gives the request back (its body re-readable).
async fn check_csrf(rule: Csrf, current: Option<&Current>, req: Request) -> Result<Request, Response> {
    match rule {
        Csrf::None => Ok(req),
        Csrf::Origin => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .or_else(|| req.headers().get(header::REFERER))
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let ok = !host.is_empty()
                && (origin == format!("https://{host}") || origin.starts_with(&format!("https://{host}/")));
            if ok {
                Ok(req)
            } else {
                Err(refused("the request did not come from this web app"))
            }
        }
        Csrf::Token | Csrf::PreSession => {
            let from_header = req
                .headers()
                .get("x-csrf-token")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
            let pre_cookie = req
                .headers()
                .get(header::COOKIE)
                .and_then(|h| h.to_str().ok())
                .and_then(|c| cookie_value(c, PRE_COOKIE))
                .map(str::to_string);
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
                Ok(b) => b,
                Err(_) => {
                    return Err(pages::error_page(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the form is too large",
                    ));
                }
            };
            let field = |name: &str| -> Option<String> {
                form_urlencoded::parse(&bytes)
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            };
            let ok = match rule {
                Csrf::Token => {
                    let expected = current.map(|c| c.csrf.as_str()).unwrap_or("");
                    let given = from_header.or_else(|| field("csrf")).unwrap_or_default();
                    !expected.is_empty() && crate::security::same(expected, &given)
                }
                _ => {
                    let given = field("pre").unwrap_or_default();
                    pre_cookie.is_some_and(|c| !c.is_empty() && crate::security::same(&c, &given))
                }
            };
            if !ok {
                return Err(refused("the form's security token is missing or stale"));
            }
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutating_route_has_a_csrf_rule_and_paths_are_unique() {
        let t = table();
        let mut seen = std::collections::BTreeSet::new();
        for d in &t {
            assert!(
                seen.insert((d.method.to_string(), d.path)),
                "{} {} twice",
                d.method,
                d.path
            );
            if d.method != Method::GET {
                assert_ne!(d.csrf, Csrf::None, "{} {}", d.method, d.path);
            }
            if d.access == Access::Public && d.method != Method::GET {
                assert_eq!(d.csrf, Csrf::PreSession, "{}", d.path);
            }
        }
    }
}
