//! The cross-flypack view: every unit the central holds metrics of, grouped
//! by flypack, with its verdict, when it was last heard, and its key video
//! figures (SRT streams, multicast groups) and firing alerts.
//!
//! Read from a VictoriaMetrics that holds the federated series (the
//! central's, `sources.fleet_url`): the units' vmagent-central sends them
//! with the flypack, segment and unit labels, and the central's vmalert
//! writes its `ALERTS` back. What the central holds was sent by units, so
//! it is an attacker's input here: label values are bounded and escaped by
//! the templates, numbers that are not finite are dropped, and the number
//! of units shown is capped.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

/// The most units shown (the rest are counted).
pub const MAX_UNITS: usize = 1000;
/// The longest label value kept (longer ones are cut).
const MAX_LABEL: usize = 64;
/// A unit not heard for this long is marked silent. VictoriaMetrics shows
/// samples about 30 s after they arrive (its `search.latencyOffset`), and
/// vmagent sends every few seconds.
pub const SILENT_AFTER_SECS: u64 = 180;

/// One query of the view: what it fills, and its MetricsQL.
const QUERIES: &[(&str, &str)] = &[
    ("verdict", "last_over_time(flypack_verdict[1d]) == 1"),
    (
        "seen",
        "max by (flypack, segment, unit) (tlast_over_time(flypack_verdict[1d]))",
    ),
    ("srt_streams", "count by (flypack, segment, unit) (flypack_srt_up)"),
    ("srt_up", "sum by (flypack, segment, unit) (flypack_srt_up)"),
    ("srt_rtt", "max by (flypack, segment, unit) (flypack_srt_rtt_ms)"),
    (
        "srt_lost",
        "sum by (flypack, segment, unit) (rate(flypack_srt_packets_lost_total[2m]))",
    ),
    (
        "mcast_groups",
        "count by (flypack, segment, unit) (flypack_mcast_joined)",
    ),
    (
        "mcast_missing",
        "sum by (flypack, segment, unit) (flypack_mcast_stream_missing)",
    ),
    (
        "mcast_mbps",
        "sum by (flypack, segment, unit) (flypack_mcast_bitrate_mbps)",
    ),
    ("alerts", "ALERTS{alertstate=\"firing\"}"),
];

/// One unit, as the central sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnitView {
    /// Its flypack (the label the central's vmauth set).
    pub flypack: String,
    /// Its segment.
    pub segment: String,
    /// Its hostname.
    pub unit: String,
    /// GO, GO-WITH-WARNINGS, NO-GO; empty when no verdict was received.
    pub verdict: String,
    /// Seconds since its verdict's last sample reached the central.
    pub last_heard_secs: Option<u64>,
    /// Not heard for [`SILENT_AFTER_SECS`] or more.
    pub silent: bool,
    /// SRT streams up, of those it has.
    pub srt_up: u64,
    /// SRT streams it has.
    pub srt_streams: u64,
    /// The worst round-trip of its SRT streams, ms.
    pub srt_rtt_ms: Option<f64>,
    /// SRT packets lost per second, over its streams.
    pub srt_lost_per_s: f64,
    /// Multicast groups it has joined.
    pub mcast_groups: u64,
    /// Groups whose stream is missing.
    pub mcast_missing: u64,
    /// Multicast bitrate received, Mb/s.
    pub mcast_mbps: f64,
    /// Alerts firing for it (names).
    pub alerts: Vec<String>,
}

/// One flypack.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlypackView {
    /// Its name.
    pub name: String,
    /// Its units, by segment and name.
    pub units: Vec<UnitView>,
    /// Units whose verdict is GO (or GO with warnings) and that are not silent.
    pub go: usize,
    /// Silent units.
    pub silent: usize,
}

/// The whole view.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetView {
    /// The flypacks, by name.
    pub flypacks: Vec<FlypackView>,
    /// Units not shown ([`MAX_UNITS`]).
    pub not_shown: usize,
    /// Queries that failed, with why (the rest is still shown).
    pub problems: Vec<String>,
}

type Key = (String, String, String);

fn label(m: &Value, name: &str) -> String {
    let s = m.get(name).and_then(Value::as_str).unwrap_or("");
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(MAX_LABEL).collect();
    if s.chars().count() > MAX_LABEL {
        out.push('…');
    }
    out
}

/// The samples of an instant query's answer: (flypack, segment, unit), the
/// series' labels, the value (finite values only).
pub fn samples(answer: &str) -> Result<Vec<(Key, Value, f64)>> {
    let v: Value = serde_json::from_str(answer).context("not JSON")?;
    if v["status"] != "success" {
        bail!("{}", v["error"].as_str().unwrap_or("the query failed"));
    }
    let Some(result) = v["data"]["result"].as_array() else {
        bail!("no result vector");
    };
    let mut out = Vec::new();
    for r in result {
        let m = &r["metric"];
        let Some(value) = r["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()) else {
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        let unit = label(m, "unit");
        if unit.is_empty() {
            continue;
        }
        out.push(((label(m, "flypack"), label(m, "segment"), unit), m.clone(), value));
    }
    Ok(out)
}

/// Builds the view from each query's answer (key → body, or why it failed).
pub fn assemble(answers: &BTreeMap<&str, Result<String>>, now: u64) -> FleetView {
    let mut units: BTreeMap<Key, UnitView> = BTreeMap::new();
    let mut problems = Vec::new();
    for (key, _) in QUERIES {
        let parsed = match answers.get(key) {
            Some(Ok(body)) => samples(body),
            Some(Err(e)) => Err(anyhow::anyhow!("{e:#}")),
            None => continue,
        };
        let rows = match parsed {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{key}: {e:#}"));
                continue;
            }
        };
        for (k, m, v) in rows {
            if !units.contains_key(&k) && units.len() >= MAX_UNITS * 2 {
                continue;
            }
            let u = units.entry(k.clone()).or_insert_with(|| UnitView {
                flypack: k.0.clone(),
                segment: k.1.clone(),
                unit: k.2.clone(),
                ..Default::default()
            });
            let count = v.max(0.0).round() as u64;
            match *key {
                "verdict" => {
                    let verdict = label(&m, "verdict");
                    if ["GO", "GO-WITH-WARNINGS", "NO-GO"].contains(&verdict.as_str()) {
                        u.verdict = verdict;
                    }
                }
                "seen" => u.last_heard_secs = Some(now.saturating_sub(v.max(0.0) as u64)),
                "srt_streams" => u.srt_streams = count,
                "srt_up" => u.srt_up = count,
                "srt_rtt" => u.srt_rtt_ms = Some(v),
                "srt_lost" => u.srt_lost_per_s = v.max(0.0),
                "mcast_groups" => u.mcast_groups = count,
                "mcast_missing" => u.mcast_missing = count,
                "mcast_mbps" => u.mcast_mbps = v.max(0.0),
                "alerts" => {
                    let name = label(&m, "alertname");
                    if !name.is_empty() && !u.alerts.contains(&name) && u.alerts.len() < 20 {
                        u.alerts.push(name);
                        u.alerts.sort();
                    }
                }
                _ => {}
            }
        }
    }
    let mut view = FleetView {
        problems,
        ..Default::default()
    };
    let mut by_flypack: BTreeMap<String, FlypackView> = BTreeMap::new();
    for (i, (_, mut u)) in units.into_iter().enumerate() {
        if i >= MAX_UNITS {
            view.not_shown += 1;
            continue;
        }
        u.silent = u.last_heard_secs.is_none_or(|s| s >= SILENT_AFTER_SECS);
        let f = by_flypack.entry(u.flypack.clone()).or_insert_with(|| FlypackView {
            name: u.flypack.clone(),
            ..Default::default()
        });
        if u.silent {
            f.silent += 1;
        } else if u.verdict.starts_with("GO") {
            f.go += 1;
        }
        f.units.push(u);
    }
    view.flypacks = by_flypack.into_values().collect();
    view
}

/// Runs every query against the VictoriaMetrics at `base_url` and builds the view.
pub async fn gather(client: &crate::proxy::Client, base_url: &str, now: u64) -> FleetView {
    let base = base_url.trim_end_matches('/');
    let futures = QUERIES.iter().map(|(key, promql)| {
        let url = format!(
            "{base}/api/v1/query?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("query", promql)
                .append_pair("time", &now.to_string())
                .finish()
        );
        async move { (*key, crate::proxy::get_text(client, &url, Duration::from_secs(5)).await) }
    });
    let answers: BTreeMap<&str, Result<String>> = futures::future::join_all(futures).await.into_iter().collect();
    assemble(&answers, now)
}

#[cfg(test)]
mod tests;
