use super::*;

fn answer(rows: &[(&[(&str, &str)], &str)]) -> Result<String> {
    let result: Vec<Value> = rows
        .iter()
        .map(|(labels, v)| {
            let m: serde_json::Map<String, Value> =
                labels.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
            serde_json::json!({"metric": m, "value": [1000, v]})
        })
        .collect();
    Ok(serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string())
}

const N1: &[(&str, &str)] = &[("flypack", "north"), ("segment", "a"), ("unit", "n-01")];
const N2: &[(&str, &str)] = &[("flypack", "north"), ("segment", "a"), ("unit", "n-02")];
const S1: &[(&str, &str)] = &[("flypack", "south"), ("segment", "b"), ("unit", "s-01")];

fn with(
    base: &[(&'static str, &'static str)],
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    base.iter().chain(extra).copied().collect()
}

#[test]
fn units_are_grouped_by_flypack_with_their_verdict_age_and_figures() {
    let now = 10_000;
    let n1v = with(N1, &[("verdict", "GO")]);
    let n2v = with(N2, &[("verdict", "NO-GO")]);
    let s1v = with(S1, &[("verdict", "GO-WITH-WARNINGS")]);
    let s1a = with(S1, &[("alertname", "MulticastStreamMissing")]);
    let s1b = with(S1, &[("alertname", "SrtLoss")]);
    let mut a: BTreeMap<&str, Result<String>> = BTreeMap::new();
    a.insert("verdict", answer(&[(&n1v, "1"), (&n2v, "1"), (&s1v, "1")]));
    a.insert("seen", answer(&[(N1, "9960"), (N2, "9000"), (S1, "9990")]));
    a.insert("srt_streams", answer(&[(N1, "2")]));
    a.insert("srt_up", answer(&[(N1, "1")]));
    a.insert("srt_rtt", answer(&[(N1, "12.34"), (N2, "NaN")]));
    a.insert("srt_lost", answer(&[(N1, "0.5")]));
    a.insert("mcast_groups", answer(&[(S1, "3")]));
    a.insert("mcast_missing", answer(&[(S1, "1")]));
    a.insert("mcast_mbps", answer(&[(S1, "+Inf")]));
    a.insert("alerts", answer(&[(&s1b, "1"), (&s1a, "1"), (&s1a, "1")]));
    let v = assemble(&a, now);
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let names: Vec<&str> = v.flypacks.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["north", "south"]);
    let north = &v.flypacks[0];
    assert_eq!((north.go, north.silent, north.units.len()), (1, 1, 2));
    let n1 = &north.units[0];
    assert_eq!(
        (n1.unit.as_str(), n1.verdict.as_str(), n1.last_heard_secs, n1.silent),
        ("n-01", "GO", Some(40), false)
    );
    assert_eq!(
        (n1.srt_up, n1.srt_streams, n1.srt_rtt_ms, n1.srt_lost_per_s),
        (1, 2, Some(12.34), 0.5)
    );
    let n2 = &north.units[1];
    assert_eq!(
        (n2.verdict.as_str(), n2.last_heard_secs, n2.silent),
        ("NO-GO", Some(1000), true)
    );
    assert_eq!(n2.srt_rtt_ms, None, "NaN is dropped");
    let s1 = &v.flypacks[1].units[0];
    assert_eq!(
        (s1.mcast_groups, s1.mcast_missing, s1.mcast_mbps),
        (3, 1, 0.0),
        "+Inf is dropped"
    );
    assert_eq!(s1.alerts, ["MulticastStreamMissing", "SrtLoss"]);
    assert_eq!(v.flypacks[1].go, 1, "GO with warnings counts as GO");
}

#[test]
fn a_failed_query_is_named_and_the_rest_still_shown() {
    let mut a: BTreeMap<&str, Result<String>> = BTreeMap::new();
    let n1v = with(N1, &[("verdict", "GO")]);
    a.insert("verdict", answer(&[(&n1v, "1")]));
    a.insert(
        "seen",
        Err(anyhow::anyhow!("GET http://central: no answer within 5000 ms")),
    );
    a.insert("srt_up", Ok("<html>proxy error</html>".into()));
    a.insert(
        "srt_rtt",
        Ok(r#"{"status":"error","error":"unknown func tlast_over_time"}"#.into()),
    );
    let v = assemble(&a, 100);
    assert_eq!(v.problems.len(), 3, "{:?}", v.problems);
    assert!(
        v.problems[0].starts_with("seen: GET http://central"),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems.iter().any(|p| p.starts_with("srt_up: not JSON")),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems.iter().any(|p| p.contains("unknown func")),
        "{:?}",
        v.problems
    );
    let u = &v.flypacks[0].units[0];
    assert_eq!((u.verdict.as_str(), u.silent), ("GO", true), "never heard: silent");
}

#[test]
fn what_units_send_is_bounded() {
    let long = "x".repeat(500);
    let hostile = vec![("flypack", "north"), ("unit", long.as_str()), ("verdict", "<script>")];
    let ctl = vec![("flypack", "north\u{1b}[31m"), ("unit", "n-\u{7}01"), ("verdict", "GO")];
    let nameless = vec![("flypack", "north"), ("verdict", "GO")];
    let mut a: BTreeMap<&str, Result<String>> = BTreeMap::new();
    a.insert("verdict", answer(&[(&hostile, "1"), (&ctl, "1"), (&nameless, "1")]));
    let v = assemble(&a, 100);
    let units: Vec<&UnitView> = v.flypacks.iter().flat_map(|f| &f.units).collect();
    assert_eq!(units.len(), 2, "a series without a unit label is not a unit");
    let long_one = units.iter().find(|u| u.unit.starts_with('x')).unwrap();
    assert_eq!(long_one.unit.chars().count(), MAX_LABEL + 1, "cut, with an ellipsis");
    assert_eq!(long_one.verdict, "", "only the three verdicts are taken");
    let ctl_one = units.iter().find(|u| u.unit == "n-01").unwrap();
    assert_eq!(ctl_one.flypack, "north[31m", "control characters dropped");

    let many: Vec<Vec<(&str, String)>> = (0..MAX_UNITS + 5)
        .map(|i| vec![("flypack", "big".to_string()), ("unit", format!("u-{i:05}"))])
        .collect();
    let rows: Vec<Value> = many
        .iter()
        .map(|l| {
            let m: serde_json::Map<String, Value> = l
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(v.as_str())))
                .collect();
            serde_json::json!({"metric": m, "value": [1, "1"]})
        })
        .collect();
    let mut a: BTreeMap<&str, Result<String>> = BTreeMap::new();
    a.insert(
        "srt_up",
        Ok(serde_json::json!({"status": "success", "data": {"result": rows}}).to_string()),
    );
    let v = assemble(&a, 100);
    assert_eq!(v.flypacks[0].units.len(), MAX_UNITS);
    assert_eq!(v.not_shown, 5);
}
