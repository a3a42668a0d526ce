//! Multicast groups: one receiving socket per group, joined on the group's
//! interface, counting packets and bytes; rates over a sliding window.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flypack_contracts::unit::Group;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

/// Rate window.
const WINDOW: Duration = Duration::from_secs(5);

/// One group's live figures.
#[derive(Debug)]
pub struct GroupStats {
    /// Group address.
    pub group: Ipv4Addr,
    /// Configured interface (label or VLAN name).
    pub interface: String,
    /// Linux interface name it resolved to.
    pub ifname: Option<String>,
    /// UDP port, if configured (without one nothing is counted).
    pub port: Option<u16>,
    /// Expected bitrate, Mb/s.
    pub expected_mbps: Option<f64>,
    /// Packets received.
    pub packets: AtomicU64,
    /// Bytes received (UDP payload).
    pub bytes: AtomicU64,
    /// When the last packet arrived.
    pub last: Mutex<Option<Instant>>,
    /// (time, packets, bytes) samples for rates.
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
    /// Why the group is not being received, if it is not.
    pub error: Mutex<Option<String>>,
    /// Seconds without packets before "missing".
    pub missing_after: Duration,
}

impl GroupStats {
    /// (packets/s, bits/s) over the window.
    pub fn rates(&self) -> (f64, f64) {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match (s.front(), s.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                ((b.1 - a.1) as f64 / dt, (b.2 - a.2) as f64 * 8.0 / dt)
            }
            _ => (0.0, 0.0),
        }
    }

    /// Whether the stream is missing (configured port, no packet lately).
    pub fn missing(&self) -> bool {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.is_none_or(|t| t.elapsed() > self.missing_after)
    }

    fn sample(&self) {
        let now = Instant::now();
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.push_back((
            now,
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        ));
        while s.front().is_some_and(|f| now - f.0 > WINDOW) {
            s.pop_front();
        }
    }
}

/// The Linux interface for a group's `interface` (a VLAN name or an
/// interface label of the unit config, found by the config's one matching
/// rule, or a plain name).
pub fn resolve_ifname(sys_net: &Path, unit: Option<&flypack_contracts::unit::Unit>, interface: &str) -> Option<String> {
    if let Some(link) = unit.and_then(|u| u.link(interface)) {
        for e in std::fs::read_dir(sys_net).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let mac = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
            let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
            let kind = uevent
                .lines()
                .find_map(|l| l.strip_prefix("DEVTYPE="))
                .map(str::to_string);
            let seen = flypack_contracts::unit::SeenLink {
                name: &name,
                mac: Some(mac.trim()),
                vlan_id: None,
                kind: kind.as_deref(),
            };
            if link.matches(&seen) {
                return Some(name);
            }
        }
        return None;
    }
    sys_net.join(interface).exists().then(|| interface.to_string())
}

fn ifindex(sys_net: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(sys_net.join(name).join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn open(group: Ipv4Addr, port: u16, ifindex: u32) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).context("creating a UDP socket")?;
    s.set_reuse_address(true).context("SO_REUSEADDR")?;
    // Only this group's datagrams, not every group joined on the port.
    s.set_multicast_all_v4(false).context("IP_MULTICAST_ALL")?;
    // Bursts of video must not overflow the socket while we count.
    if let Err(e) = s.set_recv_buffer_size(8 << 20) {
        tracing::debug!("SO_RCVBUF: {e}");
    }
    s.bind(&SocketAddrV4::new(group, port).into())
        .with_context(|| format!("binding {group}:{port}"))?;
    s.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))
        .with_context(|| format!("joining {group}"))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .context("SO_RCVTIMEO")?;
    Ok(s)
}

fn receive(stats: Arc<GroupStats>, sock: Socket) {
    let sock: std::net::UdpSocket = sock.into();
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                stats.packets.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                *stats.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => {
                *stats.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("receiving: {e}"));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Joins every group and starts counting. A group that cannot be joined is
/// reported (its error), not fatal: the others are still watched.
pub fn start(
    unit: Option<&flypack_contracts::unit::Unit>,
    groups: Vec<Group>,
    missing_after: Duration,
) -> Result<Vec<Arc<GroupStats>>> {
    let sys_net = Path::new("/sys/class/net");
    let mut out = Vec::new();
    for g in groups {
        let ifname = resolve_ifname(sys_net, unit, &g.interface);
        let stats = Arc::new(GroupStats {
            group: g.group,
            interface: g.interface.clone(),
            ifname: ifname.clone(),
            port: g.port,
            expected_mbps: g.bitrate_mbps,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last: Mutex::new(None),
            samples: Mutex::new(VecDeque::new()),
            error: Mutex::new(None),
            missing_after,
        });
        let joined = (|| -> Result<Socket> {
            let name = ifname
                .as_deref()
                .with_context(|| format!("interface {:?} not found", g.interface))?;
            let idx = ifindex(sys_net, name).with_context(|| format!("no ifindex for {name}"))?;
            open(g.group, g.port.unwrap_or(0), idx)
        })();
        match joined {
            Ok(sock) => {
                let s = stats.clone();
                std::thread::Builder::new()
                    .name(format!("mcast {}", g.group))
                    .spawn(move || receive(s, sock))
                    .context("starting a receiver thread")?;
            }
            Err(e) => {
                tracing::warn!("group {} on {}: {e:#}", g.group, g.interface);
                *stats.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"));
            }
        }
        out.push(stats);
    }
    let ticking = out.clone();
    std::thread::Builder::new()
        .name("rates".into())
        .spawn(move || {
            loop {
                for s in &ticking {
                    s.sample();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .context("starting the rate thread")?;
    Ok(out)
}
