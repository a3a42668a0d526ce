//! Kernel network counters from /proc, shared by QA and the video exporter.

use std::net::Ipv4Addr;

/// Multicast groups joined on an interface, from /proc/net/igmp.
pub fn igmp_groups(text: &str, ifname: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut current = false;
    for line in text.lines().skip(1) {
        if !line.starts_with(char::is_whitespace) {
            // "3\tenp0s3    :     2      V3"
            current = line.split_whitespace().nth(1) == Some(ifname);
            continue;
        }
        if current
            && let Some(v) = line
                .split_whitespace()
                .next()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        {
            // The kernel prints the address in host (little-endian) order.
            out.push(Ipv4Addr::from(v.swap_bytes()));
        }
    }
    out
}

/// UDP counters from /proc/net/snmp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams received.
    pub in_datagrams: u64,
    /// Receive errors of any kind.
    pub in_errors: u64,
    /// Datagrams dropped because a socket's receive buffer was full.
    pub rcvbuf_errors: u64,
}

/// Parses the `Udp:` lines of /proc/net/snmp.
pub fn udp_counters(snmp: &str) -> Option<UdpCounters> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<u64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| values.get(i))
            .copied()
            .unwrap_or(0)
    };
    Some(UdpCounters {
        in_datagrams: get("InDatagrams"),
        in_errors: get("InErrors"),
        rcvbuf_errors: get("RcvbufErrors"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn igmp() {
        let text = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
1\tlo        :     1      V3\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n\
3\tmedia.100 :     2      V3\n\
\t\t\t\t010064EF     1 0:00000000\t\t0\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n";
        assert_eq!(
            igmp_groups(text, "media.100"),
            vec![Ipv4Addr::new(239, 100, 0, 1), Ipv4Addr::new(224, 0, 0, 1)]
        );
        assert_eq!(igmp_groups(text, "lo"), vec![Ipv4Addr::new(224, 0, 0, 1)]);
        assert!(igmp_groups(text, "eth9").is_empty());
    }

    #[test]
    fn udp() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
Udp: 1000 5 7 900 3 0 0 12 0\n";
        assert_eq!(
            udp_counters(snmp),
            Some(UdpCounters {
                in_datagrams: 1000,
                in_errors: 7,
                rcvbuf_errors: 3
            })
        );
        assert_eq!(udp_counters("nothing"), None);
    }
}
