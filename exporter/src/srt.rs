//! SRT statistics, as `srt-live-transmit -s:N -statsout:FILE -pf:json -f`
//! writes them: one JSON object per report, counters cumulative (`-f`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// Link figures.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Link {
    /// Round-trip time, ms.
    #[serde(default)]
    pub rtt: f64,
    /// Estimated bandwidth, Mb/s.
    #[serde(default)]
    pub bandwidth: f64,
}

/// One direction's figures.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Direction {
    /// Packets.
    #[serde(default)]
    pub packets: u64,
    /// Packets lost.
    #[serde(default)]
    pub packets_lost: u64,
    /// Packets dropped (too late to be useful).
    #[serde(default)]
    pub packets_dropped: u64,
    /// Packets retransmitted.
    #[serde(default)]
    pub packets_retransmitted: u64,
    /// Bytes.
    #[serde(default)]
    pub bytes: u64,
    /// Buffered, ms.
    #[serde(default)]
    pub ms_buf: f64,
    /// Rate, Mb/s.
    #[serde(default)]
    pub mbit_rate: f64,
    /// Configured latency (TSBPD delay), ms.
    #[serde(default)]
    pub ms_tsb_pd_delay: Option<f64>,
}

/// One statistics report.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Report {
    /// Link.
    #[serde(default)]
    pub link: Link,
    /// Sending side.
    #[serde(default)]
    pub send: Direction,
    /// Receiving side.
    #[serde(default)]
    pub recv: Direction,
}

impl Report {
    /// The configured latency, ms (receiver's, else sender's).
    pub fn latency_ms(&self) -> Option<f64> {
        self.recv.ms_tsb_pd_delay.or(self.send.ms_tsb_pd_delay)
    }

    /// Latency minus 4 x RTT (SRT's guidance for room to retransmit).
    /// Negative: lost packets cannot be recovered in time.
    pub fn headroom_ms(&self) -> Option<f64> {
        self.latency_ms().map(|l| l - 4.0 * self.link.rtt)
    }
}

/// The newest complete report in a statistics file, and its age.
pub fn latest(path: &Path) -> Option<(Report, Duration)> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let age = f
        .metadata()
        .ok()?
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = String::new();
    f.read_to_string(&mut buf).ok()?;
    let report = buf
        .lines()
        .rev()
        .map(|l| l.trim().trim_end_matches(','))
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str::<Report>(l).ok())?;
    Some((report, age))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two reports as srt-live-transmit 1.5 writes them (-pf:json -f).
    const STATS: &str = r#"{"sid":31157751,"timepoint":"2026-11-27T11:20:15.747387+0000","time":866,"window":{"flow":8192,"congestion":8192,"flight":0},"link":{"rtt":0.074,"bandwidth":12.396,"maxBandwidth":1000},"send":{"packets":0,"packetsUnique":0,"packetsLost":0,"packetsDropped":0,"packetsRetransmitted":0,"packetsFilterExtra":0,"bytes":0,"bytesUnique":0,"bytesDropped":0,"byteAvailBuf":12288000,"msBuf":0,"mbitRate":0,"sendPeriod":12},"recv":{"packets":204,"packetsUnique":204,"packetsLost":0,"packetsDropped":0,"packetsRetransmitted":0,"packetsBelated":0,"packetsFilterExtra":0,"packetsFilterSupply":0,"packetsFilterLoss":0,"bytes":277440,"bytesUnique":277440,"bytesLost":0,"bytesDropped":0,"byteAvailBuf":12141000,"msBuf":24,"mbitRate":2.56004,"msTsbPdDelay":120}}
{"sid":31157751,"timepoint":"2026-11-27T11:20:15.861703+0000","time":981,"window":{"flow":8192,"congestion":8192,"flight":0},"link":{"rtt":10.5,"bandwidth":12.444,"maxBandwidth":1000},"send":{"packets":0,"packetsUnique":0,"packetsLost":0,"packetsDropped":0,"packetsRetransmitted":3,"packetsFilterExtra":0,"bytes":0,"bytesUnique":0,"bytesDropped":0,"byteAvailBuf":12288000,"msBuf":0,"mbitRate":0,"sendPeriod":12},"recv":{"packets":305,"packetsUnique":305,"packetsLost":2,"packetsDropped":1,"packetsRetransmitted":0,"packetsBelated":0,"packetsFilterExtra":0,"packetsFilterSupply":0,"packetsFilterLoss":0,"bytes":414800,"bytesUnique":414800,"bytesLost":0,"bytesDropped":0,"byteAvailBuf":12139500,"msBuf":35,"mbitRate":3.38161,"msTsbPdDelay":120}}
{"sid":311"#;

    #[test]
    fn the_newest_complete_report_wins() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cam1.json");
        std::fs::write(&p, STATS).unwrap();
        let (r, age) = latest(&p).unwrap();
        assert_eq!(r.recv.packets, 305);
        assert_eq!(
            (
                r.recv.packets_lost,
                r.recv.packets_dropped,
                r.send.packets_retransmitted
            ),
            (2, 1, 3)
        );
        assert_eq!(r.recv.bytes, 414800);
        assert!((r.recv.mbit_rate - 3.38161).abs() < 1e-9);
        assert_eq!(r.latency_ms(), Some(120.0));
        assert_eq!(r.headroom_ms(), Some(120.0 - 42.0));
        assert!(age < Duration::from_secs(60));
        assert!(latest(&d.path().join("missing.json")).is_none());
    }
}
