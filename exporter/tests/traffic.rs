//! The exporter against real traffic: an SRT link between two
//! srt-live-transmit processes on loopback, and multicast from a sender in
//! another network namespace. The exported figures must match what was
//! sent, within stated tolerances. Needs root, srt-tools, iproute2, curl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};

use flypack_e2e::{Kill, Netns, sh_ok};
use std::time::{Duration, Instant};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Metric value from Prometheus text, by name and label substring.
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn scrape(ns: Option<&str>, port: u16) -> String {
    let mut c = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    let o = c
        .args(["-s", "--max-time", "5", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn exporter(ns: Option<&str>, config: &Path, port: u16) -> Kill {
    let exe = env!("CARGO_BIN_EXE_flypack-exporter");
    let mut c = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, exe]);
            c
        }
        None => Command::new(exe),
    };
    let child = c
        .arg(format!("--config={}", config.display()))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let k = Kill(child);
    let t0 = Instant::now();
    while scrape(ns, port).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "the exporter did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    k
}

/// Sends `count` datagrams of `size` bytes to `to` at `pps` packets per second.
fn pace(sock: &UdpSocket, to: &str, size: usize, pps: u32, count: u32) {
    let buf = vec![0x47u8; size];
    let t0 = Instant::now();
    for i in 0..count {
        sock.send_to(&buf, to).unwrap();
        let due = t0 + Duration::from_secs_f64((i + 1) as f64 / pps as f64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
}

#[test]
fn srt_figures_match_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("cam1.json");
    let (srt_port, in_port, out_port) = (free_udp_port(), free_udp_port(), free_udp_port());
    let _rx = Kill(
        Command::new("srt-live-transmit")
            .args(["-s:100", &format!("-statsout:{}", stats.display()), "-pf:json", "-f"])
            .arg(format!("srt://:{srt_port}?mode=listener&latency=200"))
            .arg(format!("udp://127.0.0.1:{out_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("srt-live-transmit (srt-tools) is needed"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let _tx = Kill(
        Command::new("srt-live-transmit")
            .arg(format!("udp://127.0.0.1:{in_port}"))
            .arg(format!("srt://127.0.0.1:{srt_port}?latency=200"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let unit = dir.path().join("unit.toml");
    std::fs::write(
        &unit,
        format!(
            "version = 1\nhostname = \"srt-test\"\n[[srt]]\nname = \"cam1\"\nstats_file = \"{}\"\n",
            stats.display()
        ),
    )
    .unwrap();
    let port = free_tcp_port();
    let _exp = exporter(None, &unit, port);

    // 400 packets/s of 1316 bytes (7 MPEG-TS packets): 4.21 Mb/s of payload, for 10 s.
    let (pps, size, secs) = (400u32, 1316usize, 10u32);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sender = std::thread::spawn(move || pace(&sock, &format!("127.0.0.1:{in_port}"), size, pps, pps * secs));
    std::thread::sleep(Duration::from_secs(6));
    let mid = scrape(None, port);
    sender.join().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let end = scrape(None, port);

    let sent_mbps = (pps as usize * size * 8) as f64 / 1e6;
    let rate =
        value(&mid, "flypack_srt_recv_rate_mbps", "stream=\"cam1\"").unwrap_or_else(|| panic!("no recv rate:\n{mid}"));
    eprintln!("SRT: sent {sent_mbps:.2} Mb/s, exporter says {rate:.2} Mb/s");
    // SRT counts its 16-byte header too: within 15 %.
    assert!(
        (rate - sent_mbps).abs() / sent_mbps < 0.15,
        "rate {rate} vs sent {sent_mbps}"
    );
    let packets = value(&end, "flypack_srt_packets_total", "direction=\"recv\"").unwrap();
    let sent = (pps * secs) as f64;
    eprintln!("SRT: sent {sent} packets, exporter says {packets} received");
    // Loopback loses nothing: within 1 % (the last report may trail by a few packets).
    assert!((packets - sent).abs() / sent < 0.01, "packets {packets} vs sent {sent}");
    assert_eq!(
        value(&end, "flypack_srt_packets_lost_total", "direction=\"recv\""),
        Some(0.0)
    );
    assert_eq!(value(&end, "flypack_srt_up", "stream=\"cam1\""), Some(1.0));
    assert_eq!(value(&end, "flypack_srt_latency_ms", "stream=\"cam1\""), Some(200.0));
    let rtt = value(&end, "flypack_srt_rtt_ms", "stream=\"cam1\"").unwrap();
    assert!((0.0..50.0).contains(&rtt), "loopback RTT {rtt} ms");
    let headroom = value(&end, "flypack_srt_latency_headroom_ms", "stream=\"cam1\"").unwrap();
    assert!((headroom - (200.0 - 4.0 * rtt)).abs() < 1e-6, "{headroom}");
}

#[test]
fn multicast_figures_match_what_was_sent() {
    let tag = format!("{}", std::process::id() % 100000);
    let (src, rx) = (format!("mcs{tag}"), format!("mcr{tag}"));
    let _ns = Netns(vec![src.clone(), rx.clone()]);
    sh_ok(&format!(
        "ip netns add {src}; ip netns add {rx}
         ip -n {src} link add vsrc type veth peer name vrx netns {rx}
         ip -n {src} addr add 10.50.0.1/24 dev vsrc; ip -n {src} link set vsrc up; ip -n {src} link set lo up
         ip -n {rx} addr add 10.50.0.2/24 dev vrx; ip -n {rx} link set vrx up; ip -n {rx} link set lo up
         ip -n {src} route add 224.0.0.0/4 dev vsrc"
    ));
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("unit.toml");
    std::fs::write(
        &unit,
        "version = 1\nhostname = \"mc-test\"\n[[interfaces]]\nlabel = \"media\"\nmatch = { name = \"vrx\" }\naddresses = [\"10.50.0.2/24\"]\n\
         [multicast]\ngroups = [\n  { group = \"239.10.0.1\", interface = \"media\", port = 5000, bitrate_mbps = 1.6 },\n  { group = \"239.10.0.2\", interface = \"media\", port = 5002 },\n]\n",
    )
    .unwrap();
    let port = free_tcp_port();
    let _exp = exporter(Some(&rx), &unit, port);
    // The sender: 200 pps and 100 pps of 1000-byte datagrams for 8 s.
    let script = r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
d = b'x' * 1000
t0 = time.time()
for i in range(1600):
    s.sendto(d, ('239.10.0.1', 5000))
    if i % 2 == 0:
        s.sendto(d, ('239.10.0.2', 5002))
    w = t0 + (i + 1) / 200.0 - time.time()
    if w > 0:
        time.sleep(w)
"#;
    let mut sender = Kill(
        Command::new("ip")
            .args(["netns", "exec", &src, "python3", "-c", script])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(6));
    let mid = scrape(Some(&rx), port);
    let _ = sender.0.wait();
    let g1 = "group=\"239.10.0.1\"";
    let g2 = "group=\"239.10.0.2\"";
    let pps1 = value(&mid, "flypack_mcast_packet_rate", g1).unwrap_or_else(|| panic!("{mid}"));
    let pps2 = value(&mid, "flypack_mcast_packet_rate", g2).unwrap();
    let mbps1 = value(&mid, "flypack_mcast_bitrate_mbps", g1).unwrap();
    eprintln!("multicast: sent 200 and 100 pps, exporter says {pps1:.1} and {pps2:.1} pps, {mbps1:.3} Mb/s");
    // Paced from Python, measured over 5 s: within 10 %.
    assert!((pps1 - 200.0).abs() / 200.0 < 0.10, "{pps1}");
    assert!((pps2 - 100.0).abs() / 100.0 < 0.10, "{pps2}");
    assert!((mbps1 - 1.6).abs() / 1.6 < 0.10, "{mbps1}");
    assert_eq!(value(&mid, "flypack_mcast_joined", g1), Some(1.0));
    assert_eq!(value(&mid, "flypack_mcast_stream_missing", g1), Some(0.0));
    assert_eq!(value(&mid, "flypack_mcast_expected_bitrate_mbps", g1), Some(1.6));
    std::thread::sleep(Duration::from_secs(5));
    let end = scrape(Some(&rx), port);
    assert_eq!(
        value(&end, "flypack_mcast_packets_total", g1),
        Some(1600.0),
        "every datagram counted"
    );
    assert_eq!(value(&end, "flypack_mcast_packets_total", g2), Some(800.0));
    assert_eq!(
        value(&end, "flypack_mcast_stream_missing", g1),
        Some(1.0),
        "the stream stopped: missing"
    );
    // The unit config's interface, by label: carrier and error counters.
    let media = "label=\"media\",interface=\"vrx\"";
    assert_eq!(value(&end, "flypack_nic_up", media), Some(1.0), "{end}");
    assert_eq!(
        value(&end, "flypack_nic_errors_total", &format!("{media},direction=\"rx\"")),
        Some(0.0)
    );
    sh_ok(&format!("ip -n {src} link set vsrc down"));
    let down = scrape(Some(&rx), port);
    assert_eq!(
        value(&down, "flypack_nic_up", media),
        Some(0.0),
        "the peer is down: no carrier\n{down}"
    );
}
