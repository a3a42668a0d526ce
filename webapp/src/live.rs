//! The live figures: one sampler reads /proc, /sys and the video exporter
//! once a second and fans the snapshot out to every client (WebSocket, SSE,
//! polling) through a broadcast channel, serialised once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::procfs;
use crate::prom;
use crate::state::AppState;

/// A share of something, bytes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Use {
    /// Used.
    pub used: u64,
    /// Total.
    pub total: u64,
    /// Used, percent.
    pub percent: f64,
}

/// A NIC, now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Nic {
    /// Kernel name.
    pub name: String,
    /// Its label or VLAN name in the unit config.
    pub label: Option<String>,
    /// operstate.
    pub oper: String,
    /// Received, bits per second.
    pub rx_bps: f64,
    /// Sent, bits per second.
    pub tx_bps: f64,
    /// Receive errors (total).
    pub rx_errors: u64,
    /// Transmit errors (total).
    pub tx_errors: u64,
    /// Received packets dropped (total).
    pub rx_dropped: u64,
    /// Errors and drops in the last interval.
    pub errors_delta: u64,
}

/// An SRT stream, now.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Srt {
    /// Stream name.
    pub name: String,
    /// Statistics fresh (the exporter's flypack_srt_up).
    pub up: bool,
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Sending rate, Mb/s.
    pub send_mbps: Option<f64>,
    /// Receiving rate, Mb/s.
    pub recv_mbps: Option<f64>,
    /// Packets lost (both directions, total).
    pub lost: u64,
    /// Packets lost in the last interval.
    pub lost_delta: u64,
    /// Packets retransmitted (total).
    pub retrans: u64,
    /// Packets retransmitted in the last interval.
    pub retrans_delta: u64,
    /// Receive buffer, ms.
    pub buffer_ms: Option<f64>,
    /// Latency minus 4 x RTT, ms (below 0: losses cannot be recovered in time).
    pub headroom_ms: Option<f64>,
}

/// A multicast group, now.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Mcast {
    /// Group address.
    pub group: String,
    /// Interface.
    pub interface: String,
    /// Mb/s over the exporter's last 5 s.
    pub mbps: Option<f64>,
    /// Packets per second.
    pub pps: Option<f64>,
    /// No packet lately.
    pub missing: Option<bool>,
    /// The kernel holds the membership.
    pub joined: Option<bool>,
    /// The unit config's expected Mb/s.
    pub expected_mbps: Option<f64>,
}

/// One sample of everything.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Snapshot {
    /// Sample number (grows by one each sample).
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    /// CPU use, percent.
    pub cpu_percent: Option<f64>,
    /// Memory.
    pub mem: Option<Use>,
    /// The root filesystem.
    pub disk: Option<Use>,
    /// NICs.
    pub nics: Vec<Nic>,
    /// SRT streams.
    pub srt: Vec<Srt>,
    /// Multicast groups.
    pub mcast: Vec<Mcast>,
    /// Why the exporter's figures are missing, when they are.
    pub exporter_error: Option<String>,
}

#[derive(Debug, Default)]
struct Prev {
    at: Option<Instant>,
    cpu: Option<procfs::CpuTimes>,
    nics: BTreeMap<String, procfs::NicCounters>,
    srt: BTreeMap<String, (u64, u64)>,
}

/// The sampler's output, shared by every client.
#[derive(Debug)]
pub struct Hub {
    tx: broadcast::Sender<Utf8Bytes>,
    latest: RwLock<Utf8Bytes>,
    last_poll: AtomicU64,
    started: Instant,
}

impl Hub {
    /// A hub with nothing sampled yet.
    pub fn new() -> Arc<Hub> {
        let (tx, _) = broadcast::channel(4);
        Arc::new(Hub {
            tx,
            latest: RwLock::new(Utf8Bytes::from_static("{\"seq\":0}")),
            last_poll: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// The latest snapshot (JSON).
    pub fn latest(&self) -> Utf8Bytes {
        self.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Marks a poll (keeps the sampler running without subscribers).
    pub fn polled(&self) {
        self.last_poll
            .store(self.started.elapsed().as_secs(), Ordering::Relaxed);
    }

    /// A receiver of every next snapshot.
    pub fn subscribe(&self) -> broadcast::Receiver<Utf8Bytes> {
        self.tx.subscribe()
    }

    /// How many clients listen.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }

    fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0 || self.started.elapsed().as_secs() <= self.last_poll.load(Ordering::Relaxed) + 10
    }
}

/// What the sampler reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The root.
    pub root: PathBuf,
    /// The exporter's /metrics URL.
    pub exporter_url: String,
    /// Seconds between samples.
    pub every: Duration,
}

/// Runs the sampler forever.
pub async fn run_sampler(hub: Arc<Hub>, src: Sources, client: crate::proxy::Client) {
    let mut tick = tokio::time::interval(src.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut prev = PrevState::default();
    let mut unit = UnitCache::default();
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        if !hub.wanted() {
            continue;
        }
        seq += 1;
        let exporter = crate::proxy::get_text(&client, &src.exporter_url, Duration::from_millis(800)).await;
        let unit = unit.get(&src.root);
        let snap = sample(&src.root, seq, exporter, unit.as_ref(), &mut prev);
        match serde_json::to_string(&snap) {
            Ok(json) => {
                let b = Utf8Bytes::from(json);
                *hub.latest.write().unwrap_or_else(|e| e.into_inner()) = b.clone();
                // No receiver is not an error: nobody is watching right now.
                let _ = hub.tx.send(b);
            }
            Err(e) => tracing::error!("serialising a live sample: {e}"),
        }
    }
}

#[derive(Default)]
struct UnitCache {
    stamp: Option<std::time::SystemTime>,
    unit: Option<flypack_contracts::unit::Unit>,
}

impl UnitCache {
    fn get(&mut self, root: &Path) -> Option<flypack_contracts::unit::Unit> {
        let path = crate::paths::under(root, crate::paths::UNIT);
        let stamp = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if stamp != self.stamp {
            self.stamp = stamp;
            self.unit = crate::pages::load_unit(root).ok().flatten();
        }
        self.unit.clone()
    }
}

fn label_of(unit: Option<&flypack_contracts::unit::Unit>, n: &procfs::NicCounters) -> Option<String> {
    let unit = unit?;
    let seen = flypack_contracts::unit::SeenLink {
        name: &n.name,
        mac: n.mac.as_deref(),
        vlan_id: None,
        kind: if n.name.contains('.') { Some("vlan") } else { None },
    };
    unit.links().into_iter().find(|l| l.matches(&seen)).map(|l| l.label)
}

/// One sample (pure apart from reading files under `root`).
pub fn sample(
    root: &Path,
    seq: u64,
    exporter: anyhow::Result<String>,
    unit: Option<&flypack_contracts::unit::Unit>,
    prev: &mut PrevState,
) -> Snapshot {
    let prev = &mut prev.0;
    let now = Instant::now();
    let dt = prev
        .at
        .map(|t| now.duration_since(t).as_secs_f64())
        .filter(|d| *d > 0.0);
    prev.at = Some(now);
    let cpu_now = std::fs::read_to_string(root.join("proc/stat"))
        .ok()
        .and_then(|t| procfs::parse_stat(&t));
    let cpu_percent = match (prev.cpu, cpu_now) {
        (Some(a), Some(b)) => procfs::cpu_percent(a, b),
        _ => None,
    };
    prev.cpu = cpu_now;
    let mem = std::fs::read_to_string(root.join("proc/meminfo"))
        .ok()
        .and_then(|t| procfs::parse_meminfo(&t))
        .map(|m| {
            let used = m.total.saturating_sub(m.available);
            Use {
                used,
                total: m.total,
                percent: pct(used, m.total),
            }
        });
    let disk = procfs::disk(root).ok().map(|(used, total)| Use {
        used,
        total,
        percent: pct(used, total),
    });
    let mut nics = Vec::new();
    for n in procfs::nics(root).unwrap_or_default() {
        let p = prev.nics.get(&n.name);
        let rate = |now: u64, before: Option<u64>| -> f64 {
            match (before, dt) {
                (Some(b), Some(dt)) if now >= b => (now - b) as f64 * 8.0 / dt,
                _ => 0.0,
            }
        };
        let errs = n.rx_errors + n.tx_errors + n.rx_dropped;
        let errs_before = p.map(|p| p.rx_errors + p.tx_errors + p.rx_dropped);
        nics.push(Nic {
            label: label_of(unit, &n),
            oper: n.oper.clone(),
            rx_bps: rate(n.rx_bytes, p.map(|p| p.rx_bytes)),
            tx_bps: rate(n.tx_bytes, p.map(|p| p.tx_bytes)),
            rx_errors: n.rx_errors,
            tx_errors: n.tx_errors,
            rx_dropped: n.rx_dropped,
            errors_delta: errs_before.map(|b| errs.saturating_sub(b)).unwrap_or(0),
            name: n.name.clone(),
        });
        prev.nics.insert(n.name.clone(), n);
    }
    // The unit config's links first (what the engineer cabled), then the
    // rest (Docker's bridges and veths) by name.
    nics.sort_by(|a, b| (a.label.is_none(), &a.name).cmp(&(b.label.is_none(), &b.name)));
    let (samples, exporter_error) = match exporter {
        Ok(t) => (prom::parse(&t), None),
        Err(e) => (vec![], Some(format!("{e:#}"))),
    };
    let mut srt: BTreeMap<String, Srt> = BTreeMap::new();
    if let Some(u) = unit {
        for s in &u.srt {
            srt.entry(s.name.to_string()).or_default();
        }
    }
    let mut mcast: BTreeMap<(String, String), Mcast> = BTreeMap::new();
    for s in &samples {
        if let Some(metric) = s.name.strip_prefix("flypack_srt_") {
            let st = srt.entry(s.label("stream").to_string()).or_default();
            match metric {
                "up" => st.up = s.value >= 1.0,
                "rtt_ms" => st.rtt_ms = Some(s.value),
                "send_rate_mbps" => st.send_mbps = Some(s.value),
                "recv_rate_mbps" => st.recv_mbps = Some(s.value),
                "packets_lost" => st.lost += s.value as u64,
                "packets_retransmitted" => st.retrans += s.value as u64,
                "buffer_ms" if s.label("direction") == "recv" => st.buffer_ms = Some(s.value),
                "latency_headroom_ms" => st.headroom_ms = Some(s.value),
                _ => {}
            }
        } else if let Some(metric) = s.name.strip_prefix("flypack_mcast_") {
            let key = (s.label("group").to_string(), s.label("interface").to_string());
            let g = mcast.entry(key).or_default();
            match metric {
                "bitrate_mbps" => g.mbps = Some(s.value),
                "packet_rate" => g.pps = Some(s.value),
                "stream_missing" => g.missing = Some(s.value >= 1.0),
                "joined" => g.joined = Some(s.value >= 1.0),
                "expected_bitrate_mbps" => g.expected_mbps = Some(s.value),
                _ => {}
            }
        }
    }
    if let Some(u) = unit {
        for g in &u.multicast.groups {
            let have = mcast.keys().any(|(grp, _)| *grp == g.group.to_string());
            if !have {
                mcast.insert(
                    (g.group.to_string(), g.interface.clone()),
                    Mcast {
                        expected_mbps: g.bitrate_mbps,
                        ..Default::default()
                    },
                );
            }
        }
    }
    let srt: Vec<Srt> = srt
        .into_iter()
        .map(|(name, mut s)| {
            if let Some((lost, retrans)) = prev.srt.get(&name) {
                s.lost_delta = s.lost.saturating_sub(*lost);
                s.retrans_delta = s.retrans.saturating_sub(*retrans);
            }
            prev.srt.insert(name.clone(), (s.lost, s.retrans));
            s.name = name;
            s
        })
        .collect();
    let mcast = mcast
        .into_iter()
        .map(|((group, interface), mut g)| {
            g.group = group;
            g.interface = interface;
            g
        })
        .collect();
    Snapshot {
        seq,
        time: crate::security::now_rfc3339(),
        cpu_percent,
        mem,
        disk,
        nics,
        srt,
        mcast,
        exporter_error,
    }
}

/// The sampler's memory of the previous sample (for rates).
#[derive(Debug, Default)]
pub struct PrevState(Prev);

fn pct(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * used as f64 / total as f64
    }
}

/// GET /live/ws: the snapshots over a WebSocket.
pub async fn ws(State(st): State<AppState>, up: WebSocketUpgrade) -> Response {
    let hub = st.live.clone();
    up.on_upgrade(move |socket| ws_client(hub, socket))
}

async fn ws_client(hub: Arc<Hub>, mut socket: WebSocket) {
    let mut rx = hub.subscribe();
    if socket.send(Message::Text(hub.latest())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(b) => if socket.send(Message::Text(b)).await.is_err() { return },
                // A slow client skips samples; it gets the next one.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// GET /live/sse: the snapshots as Server-Sent Events (the fallback when a
/// WebSocket is refused, as iOS Safari does for a certificate trusted by exception).
pub async fn sse(State(st): State<AppState>) -> Response {
    let hub = st.live.clone();
    let first = hub.latest();
    let rx = hub.subscribe();
    let stream = futures::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        if let Some(f) = first {
            return Some((
                Ok::<Event, std::convert::Infallible>(Event::default().data(f.as_str())),
                (None, rx),
            ));
        }
        loop {
            match rx.recv().await {
                Ok(b) => return Some((Ok(Event::default().data(b.as_str())), (None, rx))),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// GET /api/live: the latest snapshot (polling, the last fallback).
pub async fn poll(State(st): State<AppState>) -> Response {
    st.live.polled();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        st.live.latest().as_str().to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_reads_proc_sys_and_the_exporter() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("proc")).unwrap();
        std::fs::write(r.join("proc/stat"), "cpu  100 0 100 800 0 0 0 0\n").unwrap();
        std::fs::write(r.join("proc/meminfo"), "MemTotal: 1000 kB\nMemAvailable: 250 kB\n").unwrap();
        let s = r.join("sys/class/net/eth0/statistics");
        std::fs::create_dir_all(&s).unwrap();
        std::fs::write(s.join("rx_bytes"), "1000").unwrap();
        let text = "flypack_srt_up{stream=\"cam1\"} 1\nflypack_srt_rtt_ms{stream=\"cam1\"} 12\n\
                    flypack_srt_packets_lost_total{stream=\"cam1\",direction=\"recv\"} 5\n\
                    flypack_mcast_bitrate_mbps{group=\"239.1.1.1\",interface=\"media\"} 19.5\n\
                    flypack_mcast_stream_missing{group=\"239.1.1.1\",interface=\"media\"} 0\n";
        let mut prev = PrevState::default();
        let a = sample(r, 1, Ok(text.into()), None, &mut prev);
        assert_eq!(a.cpu_percent, None);
        assert_eq!(a.mem.as_ref().unwrap().percent, 75.0);
        assert_eq!(a.srt[0].rtt_ms, Some(12.0));
        assert_eq!(a.srt[0].lost, 5);
        assert_eq!(a.mcast[0].mbps, Some(19.5));
        assert_eq!(a.mcast[0].missing, Some(false));
        std::fs::write(r.join("proc/stat"), "cpu  150 0 150 900 0 0 0 0\n").unwrap();
        let text2 = text.replace("} 5\n", "} 9\n");
        let b = sample(r, 2, Ok(text2), None, &mut prev);
        assert_eq!(b.cpu_percent, Some(50.0));
        assert_eq!(b.srt[0].lost_delta, 4);
        // The config's links come before Docker's bridges, whatever their names.
        for (name, mac) in [
            ("br-0a1b", "02:42:00:00:00:01"),
            ("enp0s3", "52:54:00:00:00:03"),
            ("docker0", "02:42:00:00:00:02"),
        ] {
            let d = r.join("sys/class/net").join(name);
            std::fs::create_dir_all(d.join("statistics")).unwrap();
            std::fs::write(d.join("address"), mac).unwrap();
        }
        let unit = flypack_contracts::unit::parse_unit(
            std::path::Path::new("u.toml"),
            "version = 1\nhostname = \"u\"\n[[interfaces]]\nlabel = \"mgmt\"\nmatch = { mac = \"52:54:00:00:00:03\" }\naddresses = [\"10.0.0.2/24\"]\n",
        )
        .unwrap();
        let order = sample(r, 3, Ok(String::new()), Some(&unit), &mut prev);
        let names: Vec<(&str, Option<&str>)> = order
            .nics
            .iter()
            .map(|n| (n.name.as_str(), n.label.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("enp0s3", Some("mgmt")),
                ("br-0a1b", None),
                ("docker0", None),
                ("eth0", None)
            ]
        );
        let c = sample(r, 3, Err(anyhow::anyhow!("connection refused")), None, &mut prev);
        assert_eq!(c.exporter_error.as_deref(), Some("connection refused"));
        assert!(c.srt.is_empty());
    }
}
