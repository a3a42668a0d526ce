//! Host figures from /proc and /sys (under the root, so tests fake them).

use std::path::Path;

use anyhow::{Context, Result};

/// CPU time counters from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time not idle.
    pub busy: u64,
    /// All time.
    pub total: u64,
}

/// Parses /proc/stat's `cpu` line.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// CPU use between two readings, percent.
pub fn cpu_percent(prev: CpuTimes, now: CpuTimes) -> Option<f64> {
    let dt = now.total.checked_sub(prev.total)?;
    let db = now.busy.checked_sub(prev.busy)?;
    (dt > 0).then(|| 100.0 * db as f64 / dt as f64)
}

/// Memory from /proc/meminfo, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// MemTotal.
    pub total: u64,
    /// MemAvailable.
    pub available: u64,
}

/// Parses /proc/meminfo.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let get = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
    };
    Some(Memory {
        total: get("MemTotal:")?,
        available: get("MemAvailable:")?,
    })
}

/// One network interface's counters from /sys/class/net/NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicCounters {
    /// Kernel name.
    pub name: String,
    /// MAC address.
    pub mac: Option<String>,
    /// operstate (`up`, `down`, ...).
    pub oper: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
}

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Every interface but `lo`, sorted by name.
pub fn nics(root: &Path) -> Result<Vec<NicCounters>> {
    let dir = root.join("sys/class/net");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let p = e.path();
        let s = p.join("statistics");
        out.push(NicCounters {
            mac: std::fs::read_to_string(p.join("address"))
                .ok()
                .map(|m| m.trim().to_string()),
            oper: std::fs::read_to_string(p.join("operstate"))
                .map(|t| t.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            rx_bytes: read_u64(&s.join("rx_bytes")),
            tx_bytes: read_u64(&s.join("tx_bytes")),
            rx_errors: read_u64(&s.join("rx_errors")),
            tx_errors: read_u64(&s.join("tx_errors")),
            rx_dropped: read_u64(&s.join("rx_dropped")),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Used and total bytes of the filesystem holding `path`.
pub fn disk(path: &Path) -> Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    let total = s.f_blocks * s.f_frsize;
    let avail = s.f_bavail * s.f_frsize;
    let free = s.f_bfree * s.f_frsize;
    // Used as df counts it: total minus free; percent against used + available.
    Ok((total.saturating_sub(free), total.saturating_sub(free) + avail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_meminfo() {
        let a = parse_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(a, CpuTimes { busy: 200, total: 1000 });
        let b = parse_stat("cpu  150 0 150 750 150 0 0 0 0 0\n").unwrap();
        assert_eq!(cpu_percent(a, b), Some(50.0));
        assert_eq!(cpu_percent(b, a), None);
        let m = parse_meminfo("MemTotal:       16000 kB\nMemFree: 1 kB\nMemAvailable:    4000 kB\n").unwrap();
        assert_eq!(
            m,
            Memory {
                total: 16000 * 1024,
                available: 4000 * 1024
            }
        );
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[test]
    fn reads_fake_sys_class_net() {
        let dir = tempfile::tempdir().unwrap();
        for (n, rx) in [("eth0", "42\n"), ("lo", "1\n")] {
            let s = dir.path().join("sys/class/net").join(n).join("statistics");
            std::fs::create_dir_all(&s).unwrap();
            std::fs::write(s.join("rx_bytes"), rx).unwrap();
        }
        std::fs::write(dir.path().join("sys/class/net/eth0/operstate"), "up\n").unwrap();
        let v = nics(dir.path()).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "eth0");
        assert_eq!(v[0].rx_bytes, 42);
        assert_eq!(v[0].oper, "up");
        let (used, total) = disk(dir.path()).unwrap();
        assert!(total >= used);
    }
}
