//! The listeners: HTTPS (rustls) and plain HTTP, one task per connection,
//! HTTP/1.1 with upgrades (WebSocket), the peer address on every request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::Config;
use crate::state::{AppState, Peer};

/// A running web app.
#[derive(Debug)]
pub struct Running {
    /// Where HTTPS listens.
    pub https: SocketAddr,
    /// Where plain HTTP listens.
    pub http: Option<SocketAddr>,
    /// The shared state (tests look at jobs and the hub).
    pub state: AppState,
    /// Held while serving: `flypack-web users apply` refuses to change the
    /// users under a web app that holds them in memory.
    _lock: std::fs::File,
}

/// Binds the listeners and serves (on the current tokio runtime).
pub async fn start(root: &Path, config: Config) -> Result<Running> {
    let tls = crate::tls::server_config(root).context(
        "no usable TLS material: `flypack-web tls` makes it (flypack-web.service runs it as root before it starts)",
    )?;
    let lock = crate::rotate::take_serve_lock(root, "only one web app serves a unit")?;
    let https_addr = config.listen.https;
    let http_addr = config.listen.http;
    let state = crate::state::build(root, config)?;
    let https = TcpListener::bind(https_addr)
        .await
        .with_context(|| format!("listening on {https_addr} (HTTPS)"))?;
    let https_local = https.local_addr().context("HTTPS listener address")?;
    let app = crate::routes::router(state.clone());
    tokio::spawn(serve_tls(https, tokio_rustls::TlsAcceptor::from(tls), app));
    tracing::info!("serving https://{https_local}/");
    let http_local = match http_addr {
        Some(a) => {
            let l = TcpListener::bind(a)
                .await
                .with_context(|| format!("listening on {a} (HTTP)"))?;
            let local = l.local_addr().context("HTTP listener address")?;
            tokio::spawn(serve_plain(l, crate::plain::router(state.clone())));
            tracing::info!("serving http://{local}/ (redirect and CA certificate only)");
            Some(local)
        }
        None => None,
    };
    Ok(Running {
        https: https_local,
        http: http_local,
        state,
        _lock: lock,
    })
}

async fn serve_conn<I>(io: I, peer: SocketAddr, app: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(Peer(peer.ip()));
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(20))
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!("connection from {peer}: {e}");
    }
}

async fn serve_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, say: wait a little, go on.
                tracing::warn!("accepting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("nodelay: {e}");
            }
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_conn(tls, peer, app).await,
                Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                Err(_) => tracing::debug!("TLS handshake with {peer}: timed out"),
            }
        });
    }
}

async fn serve_plain(listener: TcpListener, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accepting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(serve_conn(tcp, peer, app.clone()));
    }
}

/// The rustls config a client needs to trust `ca_pem` only (tests, tools).
pub fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.context("reading the CA PEM")?).context("adding the CA")?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
