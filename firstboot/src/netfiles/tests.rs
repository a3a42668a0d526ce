//! Golden tests: each `golden/NAME.unit.toml` renders to exactly
//! `golden/NAME.expected` (every file, with a `=== path ===` header).
//! After an intended change: `UPDATE_GOLDEN=1 cargo test -p firstboot netfiles`,
//! review the diff, and run again without it (see `crate::golden`).

use super::*;
use std::path::Path;

fn dump(files: &Files) -> String {
    let mut s = String::new();
    for (path, text) in files {
        s.push_str(&format!("=== {path} ===\n{text}"));
    }
    s
}

#[test]
fn golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/netfiles/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".unit.toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "golden cases missing");
    let mut failed = Vec::new();
    for case in cases {
        let text = std::fs::read_to_string(&case).unwrap();
        let unit =
            flypack_contracts::unit::parse_unit(&case, &text).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let got = dump(&render(&unit));
        let expected_path = case.with_file_name(
            case.file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".unit.toml", ".expected"),
        );
        if let Some(f) = crate::golden::check(&expected_path, &got) {
            failed.push(f);
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn managed_paths() {
    assert!(is_managed("/etc/systemd/network/10-flypack-media.network"));
    assert!(is_managed(RESOLVED_FILE));
    assert!(!is_managed("/etc/systemd/network/99-flypack-fallback.network"));
    assert!(!is_managed("/etc/systemd/network/10-flypack"));
}

#[test]
fn link_files_match_a_predictable_name_by_the_property_it_comes_from() {
    assert_eq!(naming_property("eno1"), Some("ID_NET_NAME_ONBOARD"));
    assert_eq!(naming_property("ens3"), Some("ID_NET_NAME_SLOT"));
    assert_eq!(naming_property("enp0s4"), Some("ID_NET_NAME_PATH"));
    assert_eq!(naming_property("enp65s0f0"), Some("ID_NET_NAME_PATH"));
    assert_eq!(naming_property("enP2p1s0"), Some("ID_NET_NAME_PATH"));
    assert_eq!(naming_property("wlp2s0"), Some("ID_NET_NAME_PATH"));
    assert_eq!(naming_property("enx525400f10002"), Some("ID_NET_NAME_MAC"));
    // Names udev does not make: the kernel's own, or not a scheme name.
    for n in ["eth0", "media0", "enxyz", "en", "eno", "enpX", "lo"] {
        assert_eq!(naming_property(n), None, "{n}");
    }
}
