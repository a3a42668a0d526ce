//! flypack-exporter: the video figures broadcast engineers watch, as
//! Prometheus metrics on /metrics.
//!
//! - SRT: per stream, from the JSON statistics `srt-live-transmit -s:N
//!   -statsout:FILE -pf:json -f` writes (round-trip time, rates, loss,
//!   retransmissions, drops, buffers, latency and its headroom).
//! - Multicast: per configured group, the exporter joins the group on its
//!   interface and counts what arrives (packet and bit rate, a stream-missing
//!   flag), and reads the kernel's membership from /proc/net/igmp.
//! - UDP receive errors from /proc/net/snmp (a full socket buffer drops video).
//! - Each interface of the unit config, by label: carrier and error counters
//!   from /sys/class/net (what the alert rules watch).
//!
//! Configured from the unit config (`[multicast] groups`, `[[srt]]`).

pub mod mcast;
pub mod metrics;
pub mod srt;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

/// Serves video metrics for Prometheus/vmagent.
#[derive(Debug, clap::Parser)]
#[command(name = "flypack-exporter", version, max_term_width = 100)]
pub struct Cli {
    /// The unit config (multicast groups, SRT streams).
    #[arg(long, default_value = "/etc/flypack/unit.toml")]
    pub config: PathBuf,

    /// Address to serve /metrics on.
    #[arg(long, default_value = "0.0.0.0:9150")]
    pub listen: SocketAddr,

    /// Seconds without a packet before a multicast stream counts as missing.
    #[arg(long, default_value_t = 3)]
    pub missing_after: u64,

    /// Print the metrics once and exit (for checks).
    #[arg(long)]
    pub once: bool,
}

/// Reads the unit config; a missing file means nothing to watch.
pub fn load_unit(path: &std::path::Path) -> Result<Option<flypack_contracts::unit::Unit>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(flypack_contracts::unit::parse_unit(path, &t)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Runs the exporter.
pub fn run(cli: Cli) -> Result<()> {
    let unit = load_unit(&cli.config)?;
    if unit.is_none() {
        tracing::warn!("{} not found: serving only UDP counters", cli.config.display());
    }
    let groups = mcast::start(
        unit.as_ref(),
        unit.as_ref().map(|u| u.multicast.groups.clone()).unwrap_or_default(),
        Duration::from_secs(cli.missing_after),
    )?;
    let streams: Vec<(String, PathBuf)> = unit
        .as_ref()
        .map(|u| {
            u.srt
                .iter()
                .map(|s| (s.name.to_string(), PathBuf::from(&s.stats_file)))
                .collect()
        })
        .unwrap_or_default();
    let state = Arc::new(metrics::State { groups, streams, unit });
    if cli.once {
        std::thread::sleep(Duration::from_millis(1100));
        print!("{}", metrics::render(&state));
        return Ok(());
    }
    let server =
        tiny_http::Server::http(cli.listen).map_err(|e| anyhow::anyhow!("listening on {}: {e}", cli.listen))?;
    tracing::info!("serving /metrics on {}", cli.listen);
    for req in server.incoming_requests() {
        let (code, body, ctype) = match req.url() {
            "/metrics" => (200, metrics::render(&state), "text/plain; version=0.0.4; charset=utf-8"),
            "/" => (200, "flypack-exporter: see /metrics\n".to_string(), "text/plain"),
            _ => (404, "not found\n".to_string(), "text/plain"),
        };
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()).expect("valid header");
        let resp = tiny_http::Response::from_string(body)
            .with_status_code(code)
            .with_header(header);
        if let Err(e) = req.respond(resp) {
            tracing::debug!("responding: {e}");
        }
    }
    Ok(())
}
