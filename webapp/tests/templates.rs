//! Every template, rendered by its own handler through the router with the
//! context the handler builds: a NO-GO unit (failed, waived, passed and
//! skipped checks, a failed stage, a waiver, a finished job with output and
//! a file, audit records), a unit with no status yet, one whose status does
//! not parse, and empty lists. Each page must render, follow the CSP (no
//! inline script, style or handler), carry the right form fields for the
//! handler it posts to, escape what users and tools wrote, show what the
//! role may use and nothing more, and stay small.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use flypack_contracts::qa::CheckId;
use flypack_web::role::Role;
use flypack_web::routes::{self, Csrf};
use flypack_web::session::{COOKIE, PRE_COOKIE};

mod common;
use common::*;

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Every page (a GET route that renders a template) and its template.
const PAGES: &[(&str, &str, Option<Role>)] = &[
    ("/login", "login.html", None),
    ("/enrol", "enrol.html", None),
    ("/trust", "trust.html", None),
    ("/status", "status.html", Some(Role::Viewer)),
    ("/stack", "stack.html", Some(Role::Viewer)),
    ("/live", "live.html", Some(Role::Viewer)),
    ("/history", "history.html", Some(Role::Viewer)),
    // Its source does not answer here: the page says so.
    ("/fleet", "fleet.html", Some(Role::Viewer)),
    ("/jobs", "jobs.html", Some(Role::Viewer)),
    ("/jobs/20260301-101500-diag", "job.html", Some(Role::Viewer)),
    ("/account", "account.html", Some(Role::Viewer)),
    ("/network", "network.html", Some(Role::Engineer)),
    ("/waivers", "waivers.html", Some(Role::Engineer)),
    ("/users", "users.html", Some(Role::Admin)),
    ("/audit", "audit.html", Some(Role::Admin)),
];

/// The CSP allows no inline script, style or event handler: the page must
/// not need one.
fn assert_csp_clean(uri: &str, html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<style"), "{uri}: a <style> block");
    assert!(!lower.contains("javascript:"), "{uri}: a javascript: URL");
    let mut rest = lower.as_str();
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        if tag.starts_with("script") {
            assert!(tag.contains(" src=\""), "{uri}: an inline <{tag}>");
            assert!(rest[end..].starts_with("></script>"), "{uri}: <{tag}> has a body");
        }
        // Attribute names only (values are quoted and may hold any text).
        let mut names = String::new();
        let mut quoted = false;
        for ch in tag.chars() {
            match ch {
                '"' => quoted = !quoted,
                _ if !quoted => names.push(ch),
                _ => {}
            }
        }
        for attr in names.split_whitespace().skip(1) {
            let name = attr.split('=').next().unwrap_or("");
            assert!(name != "style", "{uri}: a style attribute in <{tag}>");
            assert!(!name.starts_with("on"), "{uri}: an event handler attribute in <{tag}>");
        }
        rest = &rest[end..];
    }
}

/// The page's own weight and that of every asset it loads, in bytes.
fn weight(uri: &str, html: &str) -> usize {
    let prefix = flypack_web::assets::prefix();
    let mut seen = BTreeSet::new();
    let mut rest = html;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len() + 1..];
        let name: String = rest.chars().take_while(|c| *c != '"').collect();
        assert!(
            flypack_web::assets::ASSETS.iter().any(|(n, _, _)| *n == name),
            "{uri} loads {name}, which is no asset"
        );
        seen.insert(name);
    }
    let assets: usize = flypack_web::assets::ASSETS
        .iter()
        .filter(|(n, _, _)| seen.contains(*n))
        .map(|(_, _, b)| b.len())
        .sum();
    html.len() + assets
}

/// A form on a page: its action and its fields' names (and values).
#[derive(Debug)]
struct Form {
    action: String,
    fields: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let len = tag[at..].find('"')?;
    Some(tag[at..at + len].replace("&amp;", "&"))
}

fn forms(html: &str) -> Vec<Form> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<form ") {
        rest = &rest[at..];
        let end = rest.find("</form>").expect("a form is closed");
        let body = &rest[..end];
        let open = &body[..body.find('>').expect("a form tag is closed")];
        assert_eq!(
            attr(open, "method").as_deref(),
            Some("post"),
            "a form that does not POST: {open}"
        );
        let mut fields = Vec::new();
        let mut inner = body;
        while let Some(i) = inner.find(" name=\"") {
            let tag_start = inner[..i].rfind('<').expect("a field is in a tag");
            let tag_end = i + inner[i..].find('>').expect("a field tag is closed");
            let tag = &inner[tag_start..tag_end];
            if !tag.starts_with("<meta") {
                fields.push((
                    attr(tag, "name").expect("a field has a name"),
                    attr(tag, "value").unwrap_or_default(),
                ));
            }
            inner = &inner[tag_end..];
        }
        out.push(Form {
            action: attr(open, "action").expect("a form has an action"),
            fields,
        });
        rest = &rest[end..];
    }
    out
}

/// The route a form posts to (path parameters match one segment).
fn post_route(action: &str) -> Option<routes::RouteDef> {
    routes::table().into_iter().find(|d| {
        if d.method != Method::POST {
            return false;
        }
        let want: Vec<&str> = d.path.split('/').collect();
        let have: Vec<&str> = action.split('/').collect();
        want.len() == have.len()
            && want
                .iter()
                .zip(&have)
                .all(|(w, h)| (w.starts_with('{') && !w.starts_with("{*") && !h.is_empty()) || w == h)
    })
}

/// The fields each form must carry: those of the handler's form struct.
fn required_fields(route: &str) -> &'static [&'static str] {
    match route {
        "/login" => &["pre", "name", "password", "next"],
        "/enrol" => &["pre", "code", "name", "password", "password2"],
        "/account/password" => &["current", "password", "password2"],
        "/account/totp" => &["secret", "code"],
        "/account/totp/off" => &["current"],
        "/actions/restart" => &["service"],
        "/actions/network/apply" => &["unit"],
        "/actions/waiver/add" => &["check", "reason", "expires"],
        "/actions/waiver/remove" => &["check"],
        "/jobs" => &["playbook"],
        "/users" => &["name", "role", "password"],
        "/users/{name}/role" => &["role"],
        "/users/{name}/password" => &["password"],
        _ => &[],
    }
}

#[tokio::test]
async fn every_template_renders_for_every_role_within_the_csp_and_the_weight() {
    let dir = tempfile::tempdir().unwrap();
    nogo_unit(dir.path());
    // With a fleet source (a closed port), so that the Fleet page renders.
    let mut cfg = config(dir.path());
    cfg.sources.fleet_url = "http://127.0.0.1:9".into();
    let st = flypack_web::state::build(dir.path(), cfg).unwrap();
    for r in ROLES {
        st.users.add(r.as_str(), r, PASSWORD).unwrap();
    }
    st.audit.record("admin", "127.0.0.1", "user.add", XSS, "ok");

    let templates: BTreeSet<&str> = flypack_web::pages::TEMPLATES.iter().map(|(n, _)| *n).collect();
    let mut covered: BTreeSet<&str> = ["base.html"].into();
    for (uri, template, least) in PAGES {
        covered.insert(template);
        let roles: Vec<Option<Role>> = match least {
            // With a session, /login sends the user on to `next`.
            None if *uri == "/login" => vec![None],
            None => [None].into_iter().chain(ROLES.map(Some)).collect(),
            Some(l) => ROLES.into_iter().filter(|r| r.allows(*l)).map(Some).collect(),
        };
        for role in roles {
            let c = Client::new(&st, role);
            let html = c.page(uri).await;
            let who = format!("{uri} as {role:?}");
            assert_csp_clean(&who, &html);
            let w = weight(&who, &html);
            assert!(w < 150_000, "{who}: {w} bytes with its assets");
            if *uri != "/history" {
                assert!(!html.contains("uplot"), "{who} loads uPlot");
            }
            assert!(html.contains("fp-demo-01"), "{who}: the hostname is not in the page");
            assert!(!html.contains(XSS), "{who}: unescaped text");
            for f in forms(&html) {
                let route =
                    post_route(&f.action).unwrap_or_else(|| panic!("{who}: a form posts to {}, no route", f.action));
                let names: Vec<&str> = f.fields.iter().map(|(n, _)| n.as_str()).collect();
                match route.csrf {
                    Csrf::Token => assert!(
                        f.fields.iter().any(|(n, v)| n == "csrf" && *v == c.csrf),
                        "{who}: the form to {} has no csrf field with the session's token",
                        f.action
                    ),
                    Csrf::PreSession => assert!(
                        names.contains(&"pre"),
                        "{who}: the form to {} has no pre field",
                        f.action
                    ),
                    other => panic!("{who}: a form posts to {} ({other:?})", f.action),
                }
                for need in required_fields(route.path) {
                    assert!(
                        names.contains(need),
                        "{who}: the form to {} lacks {need}: {names:?}",
                        f.action
                    );
                }
                if let Some(role) = role {
                    let needed = match route.access {
                        flypack_web::role::Access::Role(r) => r,
                        flypack_web::role::Access::Public => Role::Viewer,
                    };
                    assert!(role.allows(needed), "{who}: offers {} which needs {needed}", f.action);
                }
            }
        }
    }
    assert_eq!(covered, templates, "a template no page here renders");
}

#[tokio::test]
async fn a_nogo_unit_shows_the_verdict_the_failed_check_its_fix_and_the_waiver() {
    let dir = tempfile::tempdir().unwrap();
    nogo_unit(dir.path());
    let st = app(dir.path()).await;
    let viewer = Client::new(&st, Some(Role::Viewer));
    let html = viewer.page("/status").await;
    assert!(html.contains("id=\"verdict-badge\" class=\"badge v-nogo\""), "{html}");
    assert!(html.contains("class=\"verdict v-nogo\""));
    assert!(html.contains("Why NO-GO"));
    assert!(html.contains("net.carrier failed: media (eth1) has no carrier"));
    assert!(html.contains("id=\"check-net.carrier\""));
    assert!(html.contains(FIX), "the fix hint of the failed check");
    assert!(
        html.contains(&format!("driver says {XSS_ESCAPED}")),
        "evidence, escaped"
    );
    assert!(html.contains("demo unit in QEMU: no NTP or PTP source"), "the waiver");
    assert!(
        html.contains("grafana: image not in the local store"),
        "the failed stage's detail"
    );
    // The failed check comes first and is open; the passed one is closed.
    let failed = html.find("id=\"check-net.carrier\"").unwrap();
    let passed = html.find("id=\"check-sys.debian\"").unwrap();
    assert!(failed < passed);
    assert!(html.contains("id=\"check-net.carrier\" open>"));
    assert!(html.contains("id=\"check-sys.debian\">"));
    // A viewer cannot act; an operator can re-run QA; an engineer can waive.
    assert!(!html.contains("/actions/qa"));
    assert!(!html.contains("Waive this check"));
    let op = Client::new(&st, Some(Role::Operator)).page("/status").await;
    assert!(op.contains("action=\"/actions/qa\""));
    assert!(!op.contains("Waive this check"));
    let eng = Client::new(&st, Some(Role::Engineer)).page("/status").await;
    assert!(eng.contains("/waivers?check=net.carrier"));

    // The stack: restart buttons for operators only.
    let stack = viewer.page("/stack").await;
    assert!(stack.contains("grafana") && stack.contains("exited"));
    assert!(!stack.contains("/actions/restart"));
    let stack = Client::new(&st, Some(Role::Operator)).page("/stack").await;
    assert!(stack.contains("name=\"service\" value=\"grafana\""));

    // The job: escaped title and output, the file link encoded.
    let job = viewer.page(&format!("/jobs/{JOB}")).await;
    assert!(job.contains(&format!("Diagnostics {XSS_ESCAPED}")));
    assert!(job.contains(&format!("tool said {XSS_ESCAPED}")));
    assert!(
        job.contains(&format!("href=\"/jobs/{JOB}/files/report%201%23.txt\"")),
        "{job}"
    );
    assert!(job.contains("data-next=\"3\""));
    assert!(job.contains("data-running=\"0\""));
    assert!(!job.contains("/cancel"), "a finished job cannot be cancelled");
    let file = viewer.get(&format!("/jobs/{JOB}/files/report%201%23.txt")).await;
    assert_eq!(file.status, StatusCode::OK, "the file link works");
    assert_eq!(file.body, "diagnostics\n");

    // The live page's scripts reach the routes that exist.
    let live = viewer.page("/live").await;
    for (attr, path) in [
        ("data-ws", "/live/ws"),
        ("data-sse", "/live/sse"),
        ("data-poll", "/api/live"),
    ] {
        assert!(live.contains(&format!("{attr}=\"{path}\"")), "{attr}");
        assert!(
            routes::table()
                .iter()
                .any(|d| d.method == Method::GET && d.path == path),
            "{path}"
        );
    }
    assert!(job.contains(&format!("data-src=\"/jobs/{JOB}/events\"")));
    assert!(routes::table().iter().any(|d| d.path == "/jobs/{id}/events"));

    // The trust page: the fingerprint and the three downloads.
    let trust = Client::new(&st, None).page("/trust").await;
    assert!(trust.contains("id=\"fingerprint\""));
    for d in ["/flypack.mobileconfig", "/ca.der", "/ca.pem"] {
        assert!(trust.contains(&format!("href=\"{d}\"")), "{d}");
        assert_eq!(Client::new(&st, None).get(d).await.status, StatusCode::OK, "{d}");
    }

    // The waivers page lists the unit config's waiver and every check.
    let w = Client::new(&st, Some(Role::Engineer)).page("/waivers").await;
    assert!(w.contains("demo unit in QEMU"));
    assert!(w.contains("until 2030-12-31"));
    assert_eq!(w.matches("<option value=").count(), CheckId::ALL.len());
}

#[tokio::test]
async fn a_unit_without_status_or_with_a_broken_one_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let st = app(dir.path()).await;
    let admin = Client::new(&st, Some(Role::Admin));
    let html = admin.page("/status").await;
    assert!(html.contains("NO STATUS YET"));
    assert!(html.contains("id=\"no-status\""));
    assert!(html.contains(flypack_web::paths::STATUS));
    assert!(html.contains("id=\"no-report\""));
    assert!(html.contains("class=\"badge v-unknown\""));
    assert!(!html.contains("id=\"stages\""));
    let stack = admin.page("/stack").await;
    assert!(stack.contains("id=\"no-status\""));
    // Empty lists.
    assert!(admin.page("/jobs").await.contains("id=\"no-jobs\""));
    assert!(admin.page("/jobs").await.contains("No playbook is allowed"));
    assert!(admin.page("/audit").await.contains("id=\"no-records\""));
    assert!(admin.page("/waivers").await.contains("id=\"no-waivers\""));
    assert!(admin.page("/network").await.contains("id=\"no-unit\""));
    assert!(admin.page("/trust").await.contains("id=\"no-ca\""));

    write(
        dir.path(),
        flypack_web::paths::STATUS,
        "{\"schema\": 1, \"verdict\": \"MAYBE\"}",
    );
    let html = admin.page("/status").await;
    assert!(html.contains("id=\"status-error\""));
    assert!(html.contains("parsing"), "the parse error is shown: {html}");
    assert!(html.contains("UNKNOWN"));
}

#[tokio::test]
async fn the_nav_shows_what_the_role_may_use() {
    let dir = tempfile::tempdir().unwrap();
    nogo_unit(dir.path());
    let st = app(dir.path()).await;
    let nav = |html: &str| -> Vec<String> {
        let start = html.find("<nav").unwrap();
        let end = html[start..].find("</nav>").unwrap() + start;
        html[start..end]
            .split("href=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_string())
            .collect()
    };
    let links = |role: Option<Role>| {
        let st = st.clone();
        async move {
            let uri = if role.is_some() { "/status" } else { "/login" };
            nav(&Client::new(&st, role).page(uri).await)
        }
    };
    let viewer = links(Some(Role::Viewer)).await;
    assert_eq!(viewer, ["/status", "/live", "/history", "/stack", "/jobs", "/account"]);
    let operator = links(Some(Role::Operator)).await;
    assert_eq!(operator, viewer);
    let engineer = links(Some(Role::Engineer)).await;
    for l in ["/network", "/waivers", "/vm/vmui/", "/grafana/"] {
        assert!(engineer.iter().any(|x| x == l), "engineer: {l}");
    }
    assert!(!engineer.iter().any(|x| x == "/users" || x == "/audit"));
    let admin = links(Some(Role::Admin)).await;
    assert!(admin.iter().any(|x| x == "/users") && admin.iter().any(|x| x == "/audit"));
    // Every link a role sees opens for that role.
    for (role, ls) in [
        (Role::Viewer, &viewer),
        (Role::Engineer, &engineer),
        (Role::Admin, &admin),
    ] {
        for l in ls
            .iter()
            .filter(|l| !l.starts_with("/vm/") && !l.starts_with("/grafana/"))
        {
            Client::new(&st, Some(role)).page(l).await;
        }
    }
    // Logged out: no verdict, no pages behind the login.
    let out = links(None).await;
    assert_eq!(out, ["/login", "/trust"]);
    let login = Client::new(&st, None).page("/login").await;
    assert!(!login.contains("verdict-badge"));
    assert!(!login.contains("NO-GO"));
}

#[tokio::test]
async fn the_login_form_carries_the_pre_session_token_and_escapes_what_was_typed() {
    let dir = tempfile::tempdir().unwrap();
    nogo_unit(dir.path());
    let st = app(dir.path()).await;
    let anon = Client::new(&st, None);
    let p = anon.get("/login?next=/history").await;
    assert_eq!(p.status, StatusCode::OK);
    let cookie = p
        .set_cookie
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{PRE_COOKIE}=")))
        .and_then(|c| c.split(';').next())
        .expect("the pre-session cookie is set")
        .to_string();
    let login = forms(&p.body)
        .into_iter()
        .find(|f| f.action == "/login")
        .expect("a login form");
    let field = |n: &str| login.fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(field("pre").as_deref(), Some(cookie.as_str()), "pre equals the cookie");
    assert_eq!(field("next").as_deref(), Some("/history"));

    // Wrong password, a name with markup: refused, the name comes back escaped.
    let pre_cookie = Some(format!("{PRE_COOKIE}={cookie}"));
    let bad = form(&[
        ("pre", &cookie),
        ("next", "/history"),
        ("name", XSS),
        ("password", "nope"),
    ]);
    let r = anon.send(Method::POST, "/login", pre_cookie.clone(), Some(bad)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.body.contains("Wrong user name, password or code."));
    assert!(r.body.contains(&format!("value=\"{XSS_ESCAPED}\"")), "{}", r.body);
    assert!(!r.body.contains(XSS));
    assert_csp_clean("/login (refused)", &r.body);

    // The form's own fields log in and go where `next` said.
    let good = form(&[
        ("pre", &cookie),
        ("next", "/history"),
        ("name", "viewer"),
        ("password", PASSWORD),
    ]);
    let r = anon.send(Method::POST, "/login", pre_cookie, Some(good)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/history"));
    assert!(r.set_cookie.iter().any(|c| c.starts_with(&format!("{COOKIE}="))));

    // The enrolment form carries the same token.
    let e = anon
        .send(Method::GET, "/enrol", Some(format!("{PRE_COOKIE}={cookie}")), None)
        .await;
    let enrol = forms(&e.body)
        .into_iter()
        .find(|f| f.action == "/enrol")
        .expect("an enrolment form");
    assert!(enrol.fields.iter().any(|(k, v)| k == "pre" && *v == cookie));
    assert!(e.body.contains("id=\"has-admin\""), "this unit has an admin already");
}

#[tokio::test]
async fn forms_post_what_their_handlers_take() {
    let dir = tempfile::tempdir().unwrap();
    nogo_unit(dir.path());
    let st = app(dir.path()).await;
    let admin = Client::new(&st, Some(Role::Admin));
    // Add a user with the users page's own form, then change their role.
    let html = admin.page("/users").await;
    let add = forms(&html)
        .into_iter()
        .find(|f| f.action == "/users")
        .expect("the add form");
    let mut fields: Vec<(String, String)> = add.fields.iter().filter(|(k, _)| k == "csrf").cloned().collect();
    fields.push(("name".into(), "camera.op-2".into()));
    fields.push(("role".into(), "operator".into()));
    fields.push(("password".into(), PASSWORD.into()));
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = admin.send(Method::POST, "/users", None, Some(form(&pairs))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Added camera.op-2."));
    assert!(r.body.contains("id=\"user-camera.op-2\""));
    let set = forms(&r.body)
        .into_iter()
        .find(|f| f.action == "/users/camera.op-2/role")
        .expect("the role form of the new user");
    assert!(set.fields.iter().any(|(k, v)| k == "csrf" && *v == admin.csrf));
    let r = admin
        .send(
            Method::POST,
            "/users/camera.op-2/role",
            None,
            Some(form(&[("csrf", &admin.csrf), ("role", "engineer")])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("camera.op-2 is now engineer."));
    // A refused input comes back as the page with the error, escaped.
    let r = admin
        .send(
            Method::POST,
            "/users",
            None,
            Some(form(&[
                ("csrf", &admin.csrf),
                ("name", XSS),
                ("role", "viewer"),
                ("password", PASSWORD),
            ])),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("id=\"error\""));
    assert!(!r.body.contains(XSS));
    // The account page: a wrong current password is said, escaped.
    let r = admin
        .send(
            Method::POST,
            "/account/password",
            None,
            Some(form(&[
                ("csrf", &admin.csrf),
                ("current", "wrong"),
                ("password", "x"),
                ("password2", "x"),
            ])),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("The current password is wrong."));
    // The audit log shows what was done, escaped.
    let audit = admin.page("/audit").await;
    assert!(audit.contains("user.add"));
    assert!(audit.contains(&format!("{XSS_ESCAPED} as viewer")), "{audit}");
    assert!(!audit.contains("<script>alert"));
}

#[test]
fn the_templates_parse_and_a_running_job_offers_cancel_and_a_totp_login_asks_for_the_code() {
    let t = flypack_web::pages::templates().expect("the templates parse");
    let mut c = tera::Context::new();
    c.insert("hostname", "fp-01");
    c.insert("static", flypack_web::assets::prefix());
    c.insert("version", "0.1.0");
    c.insert("nav", "login");
    c.insert("user", &None::<String>);
    c.insert("role", &None::<String>);
    c.insert("csrf", "");
    c.insert("is_operator", &false);
    c.insert("is_engineer", &false);
    c.insert("is_admin", &false);
    c.insert("verdict", &None::<String>);
    let mut login = c.clone();
    login.insert("pre", "p".repeat(64).as_str());
    login.insert("next", "/status");
    login.insert("name", "ops");
    login.insert("need_code", &true);
    login.insert("error", &Some("Enter the code from your authenticator app."));
    login.insert("no_users", &false);
    login.insert("enrol_pending", &false);
    let html = t.render("login.html", &login).unwrap();
    assert!(html.contains("name=\"code\""));
    assert!(html.contains("autocomplete=\"one-time-code\""));
    assert!(html.contains("Enter the code"));

    let mut job = c.clone();
    job.insert("nav", "jobs");
    job.insert("user", &Some("ops"));
    job.insert("role", &Some("operator"));
    job.insert("csrf", "t0ken");
    job.insert("is_operator", &true);
    job.insert("verdict", &Some("GO"));
    job.insert("can_cancel", &true);
    job.insert("command", "sudo -n /usr/bin/firstboot qa --format json");
    job.insert(
        "job",
        &serde_json::json!({"id": "j1", "kind": "action", "name": "qa", "title": "Re-run QA", "user": "ops",
            "role": "operator", "mutating": true, "argv": ["firstboot", "qa"], "started": "2026-03-01T10:00:00Z",
            "state": "running"}),
    );
    job.insert("events", &Vec::<serde_json::Value>::new());
    job.insert("files", &Vec::<serde_json::Value>::new());
    let html = t.render("job.html", &job).unwrap();
    assert!(html.contains("action=\"/jobs/j1/cancel\""));
    assert!(html.contains("name=\"csrf\" value=\"t0ken\""));
    assert!(html.contains("data-running=\"1\""));
    assert!(html.contains("data-next=\"0\""));
    assert!(html.contains("id=\"no-events\""));
    assert!(html.contains("class=\"badge v-go\""));
    assert!(!html.contains("Finished"), "no end time while it runs");
}

/// Each playbook needs its own role: an operator is offered and may run
/// only the playbooks `jobs.operator` names (diagnostics.yml here, not
/// update.yml); asking for another is refused with the role it needs, and
/// the refusal is in the audit log. An engineer is offered both.
#[tokio::test]
async fn an_operator_runs_only_the_playbooks_open_to_operators() {
    let dir = tempfile::tempdir().unwrap();
    nogo_unit(dir.path());
    let st = app(dir.path()).await;
    let op = Client::new(&st, Some(Role::Operator));
    let html = op.page("/jobs").await;
    assert!(
        html.contains("value=\"diagnostics.yml\"") && !html.contains("value=\"update.yml\""),
        "{html}"
    );
    let eng = Client::new(&st, Some(Role::Engineer));
    let html = eng.page("/jobs").await;
    assert!(html.contains("value=\"diagnostics.yml\"") && html.contains("value=\"update.yml\""));
    let r = op
        .send(
            Method::POST,
            "/jobs",
            None,
            Some(form(&[("csrf", &op.csrf), ("playbook", "update.yml")])),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.body
            .contains("update.yml needs the engineer role; yours is operator."),
        "{}",
        r.body
    );
    let refused = st.audit.tail(10).unwrap();
    assert!(
        refused
            .iter()
            .any(|a| a.action == "job.start" && a.result == "refused: needs the engineer role"),
        "{refused:?}"
    );
    let viewer = Client::new(&st, Some(Role::Viewer));
    let html = viewer.page("/jobs").await;
    assert!(!html.contains("id=\"playbooks\""), "a viewer runs nothing: {html}");
}

/// A stand-in vmalert on loopback that gives every request the same answer.
async fn stand_in_vmalert(body: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = l.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn firing_alerts_show_on_the_status_page_escaped_and_a_silent_vmalert_is_said() {
    let dir = tempfile::tempdir().unwrap();
    nogo_unit(dir.path());
    // Labels come from the network (a stream's name): hostile text.
    let body = serde_json::json!({"status": "success", "data": {"alerts": [
        {"name": "MulticastStreamMissing", "state": "firing",
         "labels": {"severity": "critical", "group": "239.100.0.1", "interface": XSS},
         "annotations": {"summary": format!("Multicast 239.100.0.1 on {XSS}: no packets"), "fix": "Check the sender"},
         "activeAt": "2026-12-06T09:00:00Z"},
        {"name": "TimeNotSynchronised", "state": "pending", "labels": {"severity": "warning"},
         "annotations": {"summary": "The clock is not synchronised"}, "activeAt": "2026-12-06T09:01:00Z"},
    ]}})
    .to_string();
    let addr = stand_in_vmalert(body).await;
    let mut cfg = config(dir.path());
    cfg.sources.vmalert_url = format!("http://{addr}");
    let st = flypack_web::state::build(dir.path(), cfg).unwrap();
    st.users.add("viewer", Role::Viewer, PASSWORD).unwrap();
    let html = Client::new(&st, Some(Role::Viewer)).page("/status").await;
    assert!(html.contains("1 firing") && html.contains("1 pending"), "{html}");
    assert!(
        html.contains("<code class=\"check-id\">MulticastStreamMissing</code>"),
        "{html}"
    );
    assert!(
        html.contains(&format!("Multicast 239.100.0.1 on {XSS_ESCAPED}: no packets")),
        "the summary, escaped"
    );
    assert!(html.contains(&format!("interface={XSS_ESCAPED}")), "the label, escaped");
    assert!(!html.contains(XSS), "nothing unescaped");
    let firing = html.find("MulticastStreamMissing").unwrap();
    let pending = html.find("TimeNotSynchronised").unwrap();
    assert!(firing < pending, "firing before pending");
    assert!(html.contains("Check the sender"));
    // The test app's vmalert is a closed port: the page says so, and still
    // shows the verdict.
    let dir = tempfile::tempdir().unwrap();
    nogo_unit(dir.path());
    let st = app(dir.path()).await;
    let html = Client::new(&st, Some(Role::Viewer)).page("/status").await;
    assert!(html.contains("vmalert does not answer"), "{html}");
    assert!(html.contains("Why NO-GO"));
}
