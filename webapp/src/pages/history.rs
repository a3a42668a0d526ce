//! History charts: named queries run through VictoriaMetrics's query_range
//! (the web app proxies; the browser never talks to VictoriaMetrics).

use axum::Extension;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{base, error_page, render};
use crate::state::{AppState, Current};

/// The charts: id, title, unit, PromQL.
pub const CHARTS: &[(&str, &str, &str, &str)] = &[
    (
        "cpu",
        "CPU",
        "%",
        "100 * (1 - avg(rate(node_cpu_seconds_total{mode=\"idle\"}[1m])))",
    ),
    (
        "memory",
        "Memory",
        "%",
        "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    ),
    (
        "net-rx",
        "Network in",
        "b/s",
        "sum by (device) (rate(node_network_receive_bytes_total{device!=\"lo\"}[1m])) * 8",
    ),
    (
        "net-tx",
        "Network out",
        "b/s",
        "sum by (device) (rate(node_network_transmit_bytes_total{device!=\"lo\"}[1m])) * 8",
    ),
    ("srt-rtt", "SRT round-trip", "ms", "flypack_srt_rtt_ms"),
    (
        "srt-loss",
        "SRT packets lost",
        "/s",
        "sum by (stream) (rate(flypack_srt_packets_lost_total[1m]))",
    ),
    (
        "mcast-bitrate",
        "Multicast bitrate",
        "Mb/s",
        "flypack_mcast_bitrate_mbps",
    ),
];

/// The ranges offered: name, seconds.
pub const RANGES: &[(&str, u64)] = &[("15m", 900), ("1h", 3600), ("6h", 21600), ("24h", 86400)];

/// GET /history.
pub async fn page(State(st): State<AppState>, Extension(cur): Extension<Current>) -> Response {
    let mut c = base(&st, Some(&cur), "history");
    let charts: Vec<serde_json::Value> = CHARTS
        .iter()
        .map(|(id, title, unit, _)| serde_json::json!({"id": id, "title": title, "unit": unit}))
        .collect();
    c.insert("charts", &charts);
    c.insert("ranges", &RANGES.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    render(&st, "history.html", &c)
}

/// `?range=`.
#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    range: Option<String>,
}

/// GET /api/history/{chart}?range=1h: VictoriaMetrics's query_range answer.
pub async fn api(
    State(st): State<AppState>,
    Path(chart): Path<String>,
    Query(q): Query<RangeQuery>,
    req: Request,
) -> Response {
    let Some((_, _, _, promql)) = CHARTS.iter().find(|(id, ..)| *id == chart) else {
        return error_page(StatusCode::NOT_FOUND, "no such chart");
    };
    let secs = RANGES
        .iter()
        .find(|(n, _)| Some(*n) == q.range.as_deref())
        .map(|(_, s)| *s)
        .unwrap_or(3600);
    let end = crate::security::unix_now();
    let step = (secs / 240).max(1);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", promql)
        .append_pair("start", &(end - secs).to_string())
        .append_pair("end", &end.to_string())
        .append_pair("step", &format!("{step}s"))
        .finish();
    let (mut parts, body) = req.into_parts();
    parts.uri = match format!("/api/v1/query_range?{query}").parse() {
        Ok(u) => u,
        Err(_) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, "building the query"),
    };
    parts.method = axum::http::Method::GET;
    let req = Request::from_parts(parts, body);
    crate::proxy::forward(
        &st.client,
        &st.config.sources.victoriametrics_url,
        "/api/v1/query_range",
        req,
        &[],
        "VictoriaMetrics does not answer: no history right now (the live page still works)",
    )
    .await
}
