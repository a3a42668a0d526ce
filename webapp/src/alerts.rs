//! The alerts the unit's vmalert holds (`GET /api/v1/alerts`): firing and
//! pending, for the status page. vmalert runs on the unit, but what it says
//! comes from metrics, and metric labels come from the network (a stream
//! name, an interface): every field is bounded, and templates escape it.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// At most this many alerts are shown (the rest are counted).
pub const MAX_ALERTS: usize = 100;
/// At most this many characters of any one text.
const MAX_TEXT: usize = 500;
/// How long the status page waits for vmalert.
const WITHIN: Duration = Duration::from_secs(2);

/// One alert, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The rule's name (`alertname`).
    pub name: String,
    /// `firing` or `pending` (waiting out the rule's `for:`).
    pub state: String,
    /// `critical`, `warning`, or what the rule says.
    pub severity: String,
    /// The summary annotation, filled in by vmalert.
    pub summary: String,
    /// The fix annotation.
    pub fix: String,
    /// Since when (RFC 3339, vmalert's `activeAt`).
    pub since: String,
    /// The other labels, `name=value`, for telling alerts of one rule apart.
    pub labels: Vec<String>,
}

/// What vmalert said.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Alerts {
    /// Firing first (critical first), then pending; at most [`MAX_ALERTS`].
    pub alerts: Vec<Alert>,
    /// How many were left off.
    pub left_off: usize,
    /// How many are firing (of all, shown or not).
    pub firing: usize,
}

#[derive(Deserialize)]
struct Answer {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    // vmalert 1.79 answers `null`, not `[]`, when nothing is pending or firing.
    #[serde(default)]
    alerts: Option<Vec<Raw>>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    name: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "activeAt")]
    active_at: String,
}

fn bounded(s: &str) -> String {
    // Control characters would break a line of the page; the rest is escaped
    // by the template.
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '\u{fffd}' } else { c })
        .collect();
    match clean.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => format!("{}…", &clean[..i]),
        None => clean,
    }
}

/// Labels that say nothing the page does not already show.
const KNOWN: [&str; 4] = ["alertname", "alertgroup", "severity", "job"];

/// Reads vmalert's answer.
pub fn parse(text: &str) -> Result<Alerts> {
    let a: Answer = serde_json::from_str(text).context("vmalert's answer is not the alerts API's JSON")?;
    let mut all: Vec<Alert> = a
        .data
        .alerts
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.state == "firing" || r.state == "pending")
        .map(|r| Alert {
            name: bounded(&r.name),
            state: r.state.clone(),
            severity: bounded(r.labels.get("severity").map_or("", String::as_str)),
            summary: bounded(r.annotations.get("summary").map_or("", String::as_str)),
            fix: bounded(r.annotations.get("fix").map_or("", String::as_str)),
            since: bounded(&r.active_at),
            labels: r
                .labels
                .iter()
                .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
                .take(10)
                .map(|(k, v)| bounded(&format!("{k}={v}")))
                .collect(),
        })
        .collect();
    let rank = |a: &Alert| {
        (
            a.state != "firing",
            match a.severity.as_str() {
                "critical" => 0,
                "warning" => 1,
                _ => 2,
            },
            a.since.clone(),
        )
    };
    all.sort_by_key(rank);
    let firing = all.iter().filter(|a| a.state == "firing").count();
    let left_off = all.len().saturating_sub(MAX_ALERTS);
    all.truncate(MAX_ALERTS);
    Ok(Alerts {
        alerts: all,
        left_off,
        firing,
    })
}

/// Asks vmalert (`base` is its root URL).
pub async fn fetch(client: &crate::proxy::Client, base: &str) -> Result<Alerts> {
    let url = format!("{}/api/v1/alerts", base.trim_end_matches('/'));
    parse(&crate::proxy::get_text(client, &url, WITHIN).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_critical_comes_first_and_hostile_text_is_bounded() {
        let long = "x".repeat(5000);
        let text = serde_json::json!({"status": "success", "data": {"alerts": [
            {"name": "DiskFilling", "state": "pending", "labels": {"severity": "warning", "alertname": "DiskFilling", "mountpoint": "/"},
             "annotations": {"summary": "/: 9% free"}, "activeAt": "2026-12-06T09:00:00Z"},
            {"name": "NicErrors", "state": "firing", "labels": {"severity": "warning"}, "annotations": {}, "activeAt": "2026-12-06T08:00:00Z"},
            {"name": "MulticastStreamMissing", "state": "firing",
             "labels": {"severity": "critical", "group": "239.1.1.1", "interface": "media\u{1b}[2J"},
             "annotations": {"summary": long, "fix": "<script>"}, "activeAt": "2026-12-06T08:30:00Z"},
            {"name": "Gone", "state": "inactive", "labels": {}, "annotations": {}},
        ]}})
        .to_string();
        let a = parse(&text).unwrap();
        let names: Vec<&str> = a.alerts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["MulticastStreamMissing", "NicErrors", "DiskFilling"]);
        assert_eq!(a.firing, 2);
        let m = &a.alerts[0];
        assert_eq!(m.summary.chars().count(), MAX_TEXT + 1, "bounded, with an ellipsis");
        assert_eq!(m.labels, ["group=239.1.1.1", "interface=media\u{fffd}[2J"]);
        assert_eq!(a.alerts[2].labels, ["mountpoint=/"]);
        assert!(parse("<html>").is_err());
        // What vmalert 1.79 says when nothing fires.
        let none = parse(r#"{"status":"success","data":{"alerts":null}}"#).unwrap();
        assert_eq!((none.alerts.len(), none.firing), (0, 0));
    }

    #[test]
    fn at_most_max_alerts_are_kept_and_the_rest_counted() {
        let many: Vec<serde_json::Value> = (0..MAX_ALERTS + 7)
            .map(|i| serde_json::json!({"name": format!("A{i}"), "state": "firing", "labels": {}, "annotations": {}}))
            .collect();
        let a = parse(&serde_json::json!({"data": {"alerts": many}}).to_string()).unwrap();
        assert_eq!((a.alerts.len(), a.left_off, a.firing), (MAX_ALERTS, 7, MAX_ALERTS + 7));
    }
}
