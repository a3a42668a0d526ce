//! What every request handler shares.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::role::Role;

/// The shared state.
#[derive(Debug)]
pub struct Inner {
    /// The unit's root.
    pub root: PathBuf,
    /// The config.
    pub config: Config,
    /// The templates.
    pub tera: tera::Tera,
    /// Users.
    pub users: crate::users::Users,
    /// Sessions.
    pub sessions: crate::session::Sessions,
    /// Failed-login limits.
    pub limiter: crate::ratelimit::LoginLimiter,
    /// The audit log.
    pub audit: crate::audit::Audit,
    /// Live figures.
    pub live: Arc<crate::live::Hub>,
    /// Jobs.
    pub jobs: Arc<crate::jobs::Jobs>,
    /// HTTP client to the unit's services.
    pub client: crate::proxy::Client,
    /// The CA certificate for download (None: no TLS material yet).
    pub ca: Option<crate::tls::CaDownload>,
    /// The unit's hostname.
    pub hostname: String,
}

/// The state handlers get.
pub type AppState = Arc<Inner>;

/// The logged-in user of a request (put there by the route guard).
#[derive(Debug, Clone)]
pub struct Current {
    /// User name.
    pub user: String,
    /// Role now (read from users.json on each request: a demotion applies at once).
    pub role: Role,
    /// The session's CSRF token.
    pub csrf: String,
    /// The session id (hash of the token).
    pub session_id: String,
}

/// The peer address of a request (put there by the server).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// The unit's hostname: the unit config's, else /etc/hostname, else `flypack`.
pub fn hostname(root: &Path) -> String {
    if let Ok(Some(u)) = crate::pages::load_unit(root) {
        return u.hostname.to_string();
    }
    std::fs::read_to_string(crate::paths::under(root, crate::paths::HOSTNAME))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "flypack".into())
}

/// Builds the state (reads users, sessions, jobs, the CA) and starts the sampler.
pub fn build(root: &Path, config: Config) -> Result<AppState> {
    let users = crate::users::Users::load(root)?;
    if users.is_empty()
        && let Some(a) = &config.initial_admin
    {
        users
            .add_hashed(&a.name, Role::Admin, &a.password_hash)
            .context("creating the initial admin from the config")?;
        tracing::info!("created the initial admin {:?} from the config", a.name);
    }
    let sessions =
        crate::session::Sessions::load(root, config.login.idle_minutes * 60, config.login.absolute_hours * 3600)?;
    let limiter = crate::ratelimit::LoginLimiter::new(
        config.login.max_failures_per_user,
        config.login.max_failures_per_address,
        Duration::from_secs(config.login.failure_window_seconds),
    );
    let jobs = crate::jobs::Jobs::load(
        root,
        config.jobs.keep,
        Duration::from_secs(config.jobs.kill_grace_seconds),
    )?;
    let ca = match crate::tls::ca_download(root) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("no CA certificate to offer: {e:#}");
            None
        }
    };
    let live = crate::live::Hub::new();
    let client = crate::proxy::client();
    let state = Arc::new(Inner {
        root: root.to_path_buf(),
        hostname: hostname(root),
        tera: crate::pages::templates()?,
        audit: crate::audit::Audit::new(root),
        users,
        sessions,
        limiter,
        live: live.clone(),
        jobs,
        client: client.clone(),
        ca,
        config,
    });
    tokio::spawn(crate::live::run_sampler(
        live,
        crate::live::Sources {
            root: root.to_path_buf(),
            exporter_url: state.config.sources.exporter_url.clone(),
            every: Duration::from_secs(state.config.sources.sample_seconds),
        },
        client,
    ));
    Ok(state)
}
