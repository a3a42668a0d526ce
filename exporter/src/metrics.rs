//! The metrics, encoded by prometheus-client from a collector that reads
//! everything fresh on each scrape.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::mcast::GroupStats;
use crate::srt;

/// What the exporter watches.
#[derive(Debug)]
pub struct State {
    /// Multicast groups.
    pub groups: Vec<Arc<GroupStats>>,
    /// SRT streams: (name, statistics file).
    pub streams: Vec<(String, PathBuf)>,
    /// The unit config, for its interfaces (found again at each scrape: a
    /// NIC may come and go).
    pub unit: Option<flypack_contracts::unit::Unit>,
}

/// One of `/sys/class/net/IF/...`, as a number (None when unreadable: the
/// kernel refuses `carrier` on an interface that is administratively down).
fn sys_number(sys_net: &Path, ifname: &str, file: &str) -> Option<u64> {
    std::fs::read_to_string(sys_net.join(ifname).join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[derive(Debug)]
struct Scrape(Arc<State>);

type Labels = Vec<(&'static str, String)>;

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(0.0f64);
    let mut fam = enc.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(fam.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(0u64);
    let mut fam = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(fam.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        gauges(
            &mut enc,
            "flypack_exporter_build_info",
            "The exporter's version.",
            &[(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1.0)],
        )?;

        // UDP receive errors: a full socket buffer drops video silently.
        if let Some(u) = std::fs::read_to_string("/proc/net/snmp")
            .ok()
            .and_then(|t| flypack_contracts::netstat::udp_counters(&t))
        {
            counters(
                &mut enc,
                "flypack_udp_rcvbuf_errors",
                "UDP datagrams dropped because a socket's receive buffer was full.",
                &[(vec![], u.rcvbuf_errors)],
            )?;
            counters(
                &mut enc,
                "flypack_udp_in_errors",
                "UDP datagrams that could not be delivered.",
                &[(vec![], u.in_errors)],
            )?;
        }

        // The unit config's interfaces, by label: link state and errors, so
        // an alert rule names the NIC the config names and needs no join.
        let sys_net = Path::new("/sys/class/net");
        let nics: Vec<(Labels, Option<String>)> = s
            .unit
            .iter()
            .flat_map(|u| u.interfaces.iter())
            .map(|i| {
                let ifname = crate::mcast::resolve_ifname(sys_net, s.unit.as_ref(), i.label.as_str());
                (
                    vec![
                        ("label", i.label.to_string()),
                        ("interface", ifname.clone().unwrap_or_default()),
                    ],
                    ifname,
                )
            })
            .collect();
        gauges(
            &mut enc,
            "flypack_nic_up",
            "1 if the unit config's interface exists and has carrier (interface is empty when none matches).",
            &nics
                .iter()
                .map(|(l, n)| {
                    let up = n
                        .as_deref()
                        .and_then(|n| sys_number(sys_net, n, "carrier"))
                        .map_or(0.0, |c| if c == 1 { 1.0 } else { 0.0 });
                    (l.clone(), up)
                })
                .collect::<Vec<_>>(),
        )?;
        let mut errors: Vec<(Labels, u64)> = Vec::new();
        for (l, n) in &nics {
            let Some(n) = n else { continue };
            for (dir, file) in [("rx", "statistics/rx_errors"), ("tx", "statistics/tx_errors")] {
                if let Some(v) = sys_number(sys_net, n, file) {
                    let mut l = l.clone();
                    l.push(("direction", dir.to_string()));
                    errors.push((l, v));
                }
            }
        }
        counters(
            &mut enc,
            "flypack_nic_errors",
            "Receive and transmit errors the driver counted on the unit config's interface.",
            &errors,
        )?;

        // Multicast.
        let igmp = std::fs::read_to_string("/proc/net/igmp").unwrap_or_default();
        let l = |g: &GroupStats| -> Labels {
            vec![
                ("group", g.group.to_string()),
                ("interface", g.ifname.clone().unwrap_or_else(|| g.interface.clone())),
            ]
        };
        let joined: Vec<(Labels, f64)> = s
            .groups
            .iter()
            .map(|g| {
                let on = g
                    .ifname
                    .as_deref()
                    .is_some_and(|i| flypack_contracts::netstat::igmp_groups(&igmp, i).contains(&g.group));
                (l(g), if on { 1.0 } else { 0.0 })
            })
            .collect();
        gauges(
            &mut enc,
            "flypack_mcast_joined",
            "1 if the kernel holds a membership of the group on its interface (/proc/net/igmp).",
            &joined,
        )?;
        let counted: Vec<&Arc<GroupStats>> = s.groups.iter().filter(|g| g.port.is_some()).collect();
        use std::sync::atomic::Ordering::Relaxed;
        counters(
            &mut enc,
            "flypack_mcast_packets",
            "Packets received on the group.",
            &counted
                .iter()
                .map(|g| (l(g), g.packets.load(Relaxed)))
                .collect::<Vec<_>>(),
        )?;
        counters(
            &mut enc,
            "flypack_mcast_bytes",
            "UDP payload bytes received on the group.",
            &counted
                .iter()
                .map(|g| (l(g), g.bytes.load(Relaxed)))
                .collect::<Vec<_>>(),
        )?;
        let rates: Vec<(Labels, (f64, f64))> = counted.iter().map(|g| (l(g), g.rates())).collect();
        gauges(
            &mut enc,
            "flypack_mcast_packet_rate",
            "Packets per second over the last 5 s.",
            &rates.iter().map(|(l, r)| (l.clone(), r.0)).collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "flypack_mcast_bitrate_mbps",
            "Megabits per second of UDP payload over the last 5 s.",
            &rates.iter().map(|(l, r)| (l.clone(), r.1 / 1e6)).collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "flypack_mcast_stream_missing",
            "1 if no packet arrived lately (see --missing-after).",
            &counted
                .iter()
                .map(|g| (l(g), if g.missing() { 1.0 } else { 0.0 }))
                .collect::<Vec<_>>(),
        )?;
        let expected: Vec<(Labels, f64)> = s
            .groups
            .iter()
            .filter_map(|g| g.expected_mbps.map(|e| (l(g), e)))
            .collect();
        gauges(
            &mut enc,
            "flypack_mcast_expected_bitrate_mbps",
            "The bitrate the unit config expects.",
            &expected,
        )?;

        // SRT.
        let reports: Vec<(String, Option<(srt::Report, std::time::Duration)>)> =
            s.streams.iter().map(|(n, p)| (n.clone(), srt::latest(p))).collect();
        let up: Vec<(Labels, f64)> = reports
            .iter()
            .map(|(n, r)| {
                (
                    vec![("stream", n.clone())],
                    if r.as_ref().is_some_and(|(_, age)| age.as_secs() < 10) {
                        1.0
                    } else {
                        0.0
                    },
                )
            })
            .collect();
        gauges(
            &mut enc,
            "flypack_srt_up",
            "1 if the stream's statistics were updated in the last 10 s.",
            &up,
        )?;
        let live: Vec<(&String, &srt::Report, std::time::Duration)> = reports
            .iter()
            .filter_map(|(n, r)| r.as_ref().map(|(r, a)| (n, r, *a)))
            .collect();
        let st = |n: &String| -> Labels { vec![("stream", n.clone())] };
        let dir = |n: &String, d: &str| -> Labels { vec![("stream", n.clone()), ("direction", d.to_string())] };
        gauges(
            &mut enc,
            "flypack_srt_stats_age_seconds",
            "Seconds since the statistics file was written.",
            &live
                .iter()
                .map(|(n, _, a)| (st(n), a.as_secs_f64()))
                .collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "flypack_srt_rtt_ms",
            "Round-trip time.",
            &live.iter().map(|(n, r, _)| (st(n), r.link.rtt)).collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "flypack_srt_send_rate_mbps",
            "Sending rate.",
            &live
                .iter()
                .map(|(n, r, _)| (st(n), r.send.mbit_rate))
                .collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "flypack_srt_recv_rate_mbps",
            "Receiving rate.",
            &live
                .iter()
                .map(|(n, r, _)| (st(n), r.recv.mbit_rate))
                .collect::<Vec<_>>(),
        )?;
        let both = |f: &dyn Fn(&srt::Direction) -> u64| -> Vec<(Labels, u64)> {
            live.iter()
                .flat_map(|(n, r, _)| [(dir(n, "send"), f(&r.send)), (dir(n, "recv"), f(&r.recv))])
                .collect()
        };
        counters(&mut enc, "flypack_srt_packets", "Packets.", &both(&|d| d.packets))?;
        counters(&mut enc, "flypack_srt_bytes", "Bytes.", &both(&|d| d.bytes))?;
        counters(
            &mut enc,
            "flypack_srt_packets_lost",
            "Packets lost (detected by sequence gaps).",
            &both(&|d| d.packets_lost),
        )?;
        counters(
            &mut enc,
            "flypack_srt_packets_dropped",
            "Packets dropped because they arrived too late to play.",
            &both(&|d| d.packets_dropped),
        )?;
        counters(
            &mut enc,
            "flypack_srt_packets_retransmitted",
            "Packets retransmitted.",
            &both(&|d| d.packets_retransmitted),
        )?;
        let bufs: Vec<(Labels, f64)> = live
            .iter()
            .flat_map(|(n, r, _)| [(dir(n, "send"), r.send.ms_buf), (dir(n, "recv"), r.recv.ms_buf)])
            .collect();
        gauges(
            &mut enc,
            "flypack_srt_buffer_ms",
            "Media held in the SRT buffer.",
            &bufs,
        )?;
        gauges(
            &mut enc,
            "flypack_srt_latency_ms",
            "Configured SRT latency (TSBPD delay).",
            &live
                .iter()
                .filter_map(|(n, r, _)| r.latency_ms().map(|v| (st(n), v)))
                .collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "flypack_srt_latency_headroom_ms",
            "Latency minus 4 x RTT: below 0, lost packets cannot be retransmitted in time.",
            &live
                .iter()
                .filter_map(|(n, r, _)| r.headroom_ms().map(|v| (st(n), v)))
                .collect::<Vec<_>>(),
        )?;
        Ok(())
    }
}

/// The metrics in Prometheus/OpenMetrics text.
pub fn render(state: &Arc<State>) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Scrape(state.clone())));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        tracing::error!("encoding metrics: {e}");
    }
    out
}
