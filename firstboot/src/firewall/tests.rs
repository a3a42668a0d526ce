//! Golden tests: the netfiles cases' unit configs render to exactly
//! `golden/NAME.nft` (interface N named `ethN`; the last interface of the
//! `3-full` case absent), and every rendered ruleset passes `nft -c`.

use super::*;

fn cases() -> Vec<(String, Unit)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/netfiles/golden");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".unit.toml"))
        .collect();
    v.sort();
    v.into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().replace(".unit.toml", "");
            let unit = flypack_contracts::unit::parse_unit(&p, &std::fs::read_to_string(&p).unwrap()).unwrap();
            (name, unit)
        })
        .collect()
}

fn names(case: &str, unit: &Unit) -> Names {
    let mut n = Names::new();
    let count = unit.interfaces.len();
    for (i, itf) in unit.interfaces.iter().enumerate() {
        let absent = case.starts_with("3-") && i + 1 == count;
        n.insert(itf.label.to_string(), (!absent).then(|| format!("eth{i}")));
    }
    for v in &unit.vlans {
        n.insert(v.name.to_string(), Some(v.name.to_string()));
    }
    n
}

#[test]
fn golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/firewall/golden");
    let mut failed = Vec::new();
    let all = cases();
    assert!(all.len() >= 4, "cases missing");
    for (case, unit) in &all {
        let got = render(unit, &names(case, unit)).unwrap();
        if let Some(f) = crate::golden::check(&dir.join(format!("{case}.nft")), &got) {
            failed.push(f);
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_ruleset_checks_with_nft() {
    for (case, unit) in cases() {
        let text = render(&unit, &names(&case, &unit)).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.nft");
        std::fs::write(&p, &text).unwrap();
        // -c: parse and check against the kernel, commit nothing.
        let o = std::process::Command::new("nft")
            .arg("-c")
            .arg("-f")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{case}: nft -c refused it: {}\n{text}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn a_bad_interface_name_never_reaches_the_ruleset() {
    let (case, unit) = cases().into_iter().find(|(c, _)| c.starts_with("2-")).unwrap();
    let mut n = names(&case, &unit);
    let first = n.keys().next().unwrap().clone();
    n.insert(first, Some("eth0\" accept\n\ttcp dport 1-65535".into()));
    assert!(
        render(&unit, &n)
            .unwrap_err()
            .to_string()
            .contains("not an interface name")
    );
}

#[test]
fn loaded_policies_are_read_from_nft_json() {
    let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "inet", "name": "flypack", "handle": 1}},
      {"chain": {"family": "inet", "table": "flypack", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "inet", "table": "flypack", "name": "forward", "handle": 2, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"rule": {"family": "inet", "table": "flypack", "chain": "input", "handle": 3, "expr": []}}]}"#;
    assert_eq!(
        parse_loaded(json).unwrap(),
        Loaded {
            input_drop: true,
            forward_drop: false,
            rules: 1
        }
    );
}
