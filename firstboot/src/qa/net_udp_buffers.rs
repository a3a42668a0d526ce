//! `net.udp-buffers`: rmem_max/wmem_max hold SRT's buffer at the configured bitrate and latency.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let u = ctx.unit;
    let root = ctx.root;
    let need = (u.qa.srt_bitrate_mbps * 1e6 / 8.0 * (u.qa.srt_latency_ms as f64 / 1000.0) * 2.0) as i64;
    let r = read_sysctl(root, "net.core.rmem_max").unwrap_or(0);
    let w = read_sysctl(root, "net.core.wmem_max").unwrap_or(0);
    let ev = format!(
        "rmem_max {r}, wmem_max {w}; SRT at {} Mb/s with {} ms latency needs {need} (2 x bitrate x latency)",
        u.qa.srt_bitrate_mbps, u.qa.srt_latency_ms
    );
    if r >= need && w >= need {
        pass(ev)
    } else {
        fail(
            ev,
            format!(
                "raise net.core.rmem_max and net.core.wmem_max to at least {need} (/etc/sysctl.d/60-flypack-video.conf)"
            ),
        )
    }
}
