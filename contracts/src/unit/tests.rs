use super::*;

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn examples_validate() {
    let p = repo().join("images/unit.example.toml");
    let u = parse_unit(&p, &std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(u.hostname.as_str(), "fp-demo-01");
    assert_eq!(u.vlans[0].id, 100);
    assert_eq!(u.interface("media").unwrap().addresses.len(), 2);
    let p = repo().join("images/fleet.example.toml");
    let f = parse_fleet(&p, &std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(f.units.len(), 2);
}

#[test]
fn fleet_matches_serial_first_then_mac() {
    let p = repo().join("images/fleet.example.toml");
    let f = parse_fleet(&p, &std::fs::read_to_string(&p).unwrap()).unwrap();
    let hw = Hardware {
        serial: Some("FP-MON-0001".into()),
        macs: vec!["3c:ec:ef:10:00:01".into()],
    };
    let (u, why) = f.find(&hw).unwrap();
    assert_eq!(
        (u.hostname.as_str(), why),
        ("fp-mon-01", FleetMatch::Serial("FP-MON-0001".into()))
    );
    let hw = Hardware {
        serial: None,
        macs: vec!["52:54:00:00:00:01".into(), "3C:EC:EF:10:00:02".into()],
    };
    let (u, why) = f.find(&hw).unwrap();
    assert_eq!(
        (u.hostname.as_str(), why),
        ("fp-enc-01", FleetMatch::Mac("3c:ec:ef:10:00:02".into()))
    );
    assert!(
        f.find(&Hardware {
            serial: Some("other".into()),
            macs: vec![]
        })
        .is_none()
    );
}

#[test]
fn round_trips_through_toml() {
    let p = repo().join("images/unit.example.toml");
    let u = parse_unit(&p, &std::fs::read_to_string(&p).unwrap()).unwrap();
    let again = parse_unit(Path::new("x"), &u.to_toml()).unwrap();
    assert_eq!(u, again);
    assert_eq!(u.digest(), again.digest());
}

const MIN: &str = r#"version = 1
hostname = "u1"
[[interfaces]]
label = "mgmt"
match = { name = "eth0" }
addresses = ["10.0.0.5/24"]
gateway = "10.0.0.1"
"#;

/// (edit, expected key path, words in the message)
#[test]
fn invalid_units_name_the_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("version = 1", "version = 2", "version", "expected 1"),
        ("hostname = \"u1\"", "hostname = \"U_1\"", "hostname", "not a hostname"),
        (
            "hostname = \"u1\"",
            "hostname = \"u1\"\ncolour = 1",
            "colour",
            "unknown field",
        ),
        (
            "label = \"mgmt\"",
            "label = \"Mgmt\"",
            "interfaces[0].label",
            "not an interface label",
        ),
        (
            "match = { name = \"eth0\" }",
            "match = {}",
            "interfaces[0].match",
            "expected name or mac",
        ),
        (
            "match = { name = \"eth0\" }",
            "match = { mac = \"52:54:00\" }",
            "interfaces[0].match.mac",
            "not a MAC address",
        ),
        (
            "match = { name = \"eth0\" }",
            "match = { name = \"averyveryverylongname\" }",
            "interfaces[0].match.name",
            "not a Linux interface name",
        ),
        (
            "[\"10.0.0.5/24\"]",
            "[\"10.0.0.5\"]",
            "interfaces[0].addresses[0]",
            "not an address with a prefix",
        ),
        (
            "[\"10.0.0.5/24\"]",
            "[\"10.0.0.5/33\"]",
            "interfaces[0].addresses[0]",
            "out of range",
        ),
        (
            "[\"10.0.0.5/24\"]",
            "[\"239.0.0.5/24\"]",
            "interfaces[0].addresses[0]",
            "cannot be an interface address",
        ),
        ("[\"10.0.0.5/24\"]", "[]", "interfaces[0].addresses", "no address"),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.9.0.1\"",
            "interfaces[0].gateway",
            "not in the subnet",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.5\"",
            "interfaces[0].gateway",
            "own address",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\nmtu = 20000",
            "interfaces[0].mtu",
            "576-9216",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[[vlans]]\nname = \"v100\"\nparent = \"media\"\nid = 100\naddresses = [\"10.1.0.1/24\"]",
            "vlans[0].parent",
            "not the label",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[[vlans]]\nname = \"v100\"\nparent = \"mgmt\"\nid = 5000\naddresses = [\"10.1.0.1/24\"]",
            "vlans[0].id",
            "1-4094",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[multicast]\ngroups = [{ group = \"10.1.1.1\", interface = \"mgmt\" }]",
            "multicast.groups[0].group",
            "not a multicast address",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[multicast]\ngroups = [{ group = \"239.1.1.1\", interface = \"nope\" }]",
            "multicast.groups[0].interface",
            "neither",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[multicast]\nigmp_version = 1",
            "multicast.igmp_version",
            "expected 2 or 3",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[qa]\nwaivers = [{ check = \"time.synk\", reason = \"no ntp here\", expires = \"2030-01-01\" }]",
            "qa.waivers[0].check",
            "not a QA check id",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[qa]\nwaivers = [{ check = \"time.sync\", reason = \"no ntp here\", expires = \"31/12/2030\" }]",
            "qa.waivers[0].expires",
            "YYYY-MM-DD",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[qa]\nwaivers = [{ check = \"time.sync\", reason = \"\", expires = \"2030-01-01\" }]",
            "qa.waivers[0].reason",
            "give the reason",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[time]\nntp = [\"pool.ntp.org\\nallow all\"]",
            "time.ntp[0]",
            "not an NTP server",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[time]\nntp = [\"ntp iburst maxpoll 1\"]",
            "time.ntp[0]",
            "not an NTP server",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[dns]\nsearch = [\"venue.example\\nDNSSEC=no\"]",
            "dns.search[0]",
            "not a domain name",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[access]\nssh_authorized_keys = [\"ssh-ed25519 AAAA x\\rssh-rsa BBBB evil\"]",
            "access.ssh_authorized_keys[0]",
            "not an SSH public key",
        ),
        (
            "hostname = \"u1\"",
            "hostname = \"u1\"\nrole = \"enc\\nx\"",
            "role",
            "not a role",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[[srt]]\nname = \"cam\"\nstats_file = \"/run/../etc/shadow\"",
            "srt[0].stats_file",
            "absolute path",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[time]\nrequired = true",
            "time.required",
            "no NTP server or PTP",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[time]\nptp = { interface = \"media\" }",
            "time.ptp.interface",
            "not the label",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[dns]\nsearch = [\"bad domain\"]",
            "dns.search[0]",
            "not a domain name",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[access]\nssh_authorized_keys = [\"hunter2\"]",
            "access.ssh_authorized_keys[0]",
            "not an SSH public key",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[alerting]\nalertmanager = \"https://admin:hunter2@am.example:9093\"",
            "alerting.alertmanager",
            "carries credentials",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[alerting]\nalertmanager = \"file:///etc/shadow\"",
            "alerting.alertmanager",
            "expected an http:// or https:// URL",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[alerting]\nalertmanager = \"http://am.example/a\\\"b<c\"",
            "alerting.alertmanager",
            "the path may hold only",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[alerting]\nalertmanager = \"http://am.example:9093/?x=1\"",
            "alerting.alertmanager",
            "no query",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[central]\nurl = \"http://central.example:8427/api/v1/write\"\nflypack = \"north\"",
            "central.url",
            "https:// only",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[central]\nurl = \"https://central.example/api/v1/write\\nremoteWrite_url=https://evil.example/\"\nflypack = \"north\"",
            "central.url",
            "no space, comma or control character",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[central]\nurl = \"https://central.example/api/v1/write,https://evil.example/\"\nflypack = \"north\"",
            "central.url",
            "no space, comma or control character",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.0.0.1\"\n[central]\nurl = \"https://north:pw@central.example/api/v1/write\"\nflypack = \"north\"",
            "central.url",
            "carries credentials",
        ),
    ];
    assert!(parse_unit(Path::new("unit.toml"), MIN).is_ok());
    for (from, to, key, words) in cases {
        assert!(MIN.contains(from), "anchor {from:?}");
        let text = MIN.replacen(from, to, 1);
        let errs = parse_unit(Path::new("unit.toml"), &text).expect_err(key).0;
        let e = errs
            .iter()
            .find(|e| e.key == *key)
            .unwrap_or_else(|| panic!("{key}: not among {errs:?}"));
        assert!(e.message.contains(words), "{key}: {:?} lacks {words:?}", e.message);
        assert_eq!(e.file, "unit.toml");
    }
}

#[test]
fn invalid_fleets_name_the_key() {
    let unit = |host: &str| format!("[units.config]\nversion = 1\nhostname = \"{host}\"\n");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("version = 1\n[[units]]\n{}", unit("a")),
            "units[0]",
            "expected serial or macs",
        ),
        (
            format!(
                "version = 1\n[[units]]\nserial = \"S1\"\n{}[[units]]\nserial = \"S1\"\n{}",
                unit("a"),
                unit("b")
            ),
            "units[1].serial",
            "listed for two units",
        ),
        (
            format!(
                "version = 1\n[[units]]\nmacs = [\"52:54:00:00:00:01\"]\n{}[[units]]\nmacs = [\"52:54:00:00:00:01\"]\n{}",
                unit("a"),
                unit("b")
            ),
            "units[1].macs[0]",
            "listed for two units",
        ),
        (
            format!(
                "version = 1\n[[units]]\nserial = \"S1\"\n{}[[units]]\nserial = \"S2\"\n{}",
                unit("a"),
                unit("a")
            ),
            "units[1].config.hostname",
            "used by two units",
        ),
        (
            format!("version = 1\n[[units]]\nserial = \"S1\"\n{}", unit("Bad_Host")),
            "units[0].config.hostname",
            "not a hostname",
        ),
        (
            format!(
                "version = 1\n[[units]]\nserial = \"S1\"\n{}[[units.config.interfaces]]\nlabel = \"m\"\nmatch = {{ name = \"eth0\" }}\n",
                unit("a")
            ),
            "units[0].config.interfaces[0].addresses",
            "no address",
        ),
        ("version = 2\n".to_string(), "version", "expected 1"),
    ];
    for (text, key, words) in cases {
        let errs = parse_fleet(Path::new("fleet.toml"), &text).expect_err(key).0;
        let e = errs
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("{key}: not among {errs:?}"));
        assert!(e.message.contains(words), "{key}: {:?} lacks {words:?}", e.message);
    }
}

#[test]
fn cidr_contains() {
    let c = IpCidr::try_from("10.0.0.5/24".to_string()).unwrap();
    assert!(c.contains("10.0.0.200".parse().unwrap()));
    assert!(!c.contains("10.0.1.1".parse().unwrap()));
    let c6 = IpCidr::try_from("fd00::5/64".to_string()).unwrap();
    assert!(c6.contains("fd00::1".parse().unwrap()));
    assert!(!c6.contains("fd01::1".parse().unwrap()));
}

#[test]
fn the_alertmanager_becomes_vmalerts_notifier_file() {
    let none = Alerting::default().notifier_config();
    assert!(none.ends_with("static_configs: []\n"), "{none}");
    let at = |u: &str| {
        Alerting {
            alertmanager: Some(u.into()),
        }
        .notifier_config()
    };
    let https = at("https://am.example/flypack/");
    assert!(
        https.contains(
            "scheme: \"https\"\npath_prefix: \"/flypack\"\nstatic_configs:\n  - targets: [\"am.example:443\"]\n"
        ),
        "{https}"
    );
    let v6 = at("http://[fd00::5]:9093");
    assert!(v6.contains("targets: [\"[fd00::5]:9093\"]"), "{v6}");
    assert!(v6.contains("path_prefix: \"\""), "{v6}");
}

#[test]
fn central_names_are_checked_and_become_vmagents_settings() {
    let base = "version = 1\nhostname = \"cam-1\"\n";
    let u = parse_unit(
        Path::new("unit.toml"),
        &format!("{base}[central]\nurl = \"https://central.example:8427/api/v1/write\"\nflypack = \"north\"\nsegment = \"truck-2\"\n"),
    )
    .unwrap();
    let c = u.central.as_ref().unwrap();
    let env = c.vmagent_env(&u.hostname, true);
    assert!(
        env.ends_with(
            "remoteWrite_url=https://central.example:8427/api/v1/write\n\
             remoteWrite_label=flypack=north,unit=cam-1,segment=truck-2\n\
             remoteWrite_basicAuth_username=north\n\
             remoteWrite_tlsCAFile=/etc/flypack/central/ca.crt\n"
        ),
        "{env}"
    );
    assert!(!c.vmagent_env(&u.hostname, false).contains("tlsCAFile"));
    // A label value that could add a label, a flag value or a line is refused.
    for bad in ["North", "a,unit=x", "a=b", "a\nb", "-a", ""] {
        let text = format!(
            "{base}[central]\nurl = \"https://c.example/api/v1/write\"\nflypack = {}\n",
            toml::Value::from(bad)
        );
        let e = parse_unit(Path::new("unit.toml"), &text).unwrap_err().to_string();
        assert!(
            e.contains("central.flypack") && e.contains("is not a name"),
            "{bad:?}: {e}"
        );
    }
}
