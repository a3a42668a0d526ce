use super::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn monitoring(profiles: &[&str]) -> Stack {
    let file = repo().join("compose/monitoring/docker-compose.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    let profiles: Vec<String> = profiles.iter().map(|p| p.to_string()).collect();
    parse(&file, &text, &profiles).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_monitoring_stack_parses_in_start_order() {
    let s = monitoring(&[]);
    assert_eq!(s.project, "monitoring");
    let names: Vec<&str> = s.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "node-exporter",
            "victoriametrics",
            "video-exporter",
            "vmagent",
            "vmalert"
        ]
    );
    assert_eq!(s.volumes, ["vm-data", "vmagent-data"]);
    assert_eq!(s.networks, ["default"]);
    let vm = s.service("victoriametrics").unwrap();
    assert_eq!(
        vm.ports,
        vec![Port {
            host_ip: "127.0.0.1".into(),
            host_port: 8428,
            container_port: 8428,
            protocol: "tcp".into()
        }]
    );
    assert!(vm.critical);
    // Least privilege, as written.
    for svc in &s.services {
        assert_eq!(svc.cap_drop, ["ALL"], "{}", svc.name);
        assert_eq!(svc.security_opt, ["no-new-privileges=true"], "{}", svc.name);
        assert!(svc.read_only, "{}", svc.name);
        assert!(
            svc.user.as_deref().is_some_and(|u| !u.starts_with("0") && u != "root"),
            "{}",
            svc.name
        );
        assert!(svc.ports.iter().all(|p| p.host_ip == "127.0.0.1"), "{}", svc.name);
    }
    let h = vm.health.as_ref().unwrap();
    assert_eq!(
        (h.interval_ns, h.retries, h.start_period_ns),
        (30_000_000_000, 5, 60_000_000_000)
    );
    let agent = s.service("vmagent").unwrap();
    // vmagent queues what it scrapes until VictoriaMetrics answers: it
    // starts with it, not after it.
    assert!(agent.depends_on.is_empty(), "{:?}", agent.depends_on);
    assert_eq!(
        agent.mounts[0],
        Mount {
            source: Source::Bind {
                path: repo().join("compose/monitoring/./vmagent/scrape.yml")
            },
            target: "/etc/vmagent/scrape.yml".into(),
            read_only: true,
            propagation: None
        }
    );
    let node = s.service("node-exporter").unwrap();
    assert_eq!(node.network_mode.as_deref(), Some("host"));
    assert!(node.networks.is_empty());
    assert!(node.mounts[0].read_only);
    assert_eq!(node.mounts[0].propagation, None);
    // Grafana only with its profile on.
    assert!(s.service("grafana").is_none());
    let g = monitoring(&["grafana"]);
    assert_eq!(
        g.service("grafana").unwrap().environment["GF_ANALYTICS_REPORTING_ENABLED"],
        "false"
    );
    assert!(g.volumes.contains(&"grafana-data".to_string()));
    assert_eq!(s.images().len(), 3);
}

#[test]
fn config_hash_follows_the_spec_and_the_image() {
    let s = monitoring(&[]);
    let vm = s.service("victoriametrics").unwrap();
    let a = s.config_hash(vm, "sha256:aa");
    assert_eq!(a, s.config_hash(vm, "sha256:aa"));
    assert_ne!(a, s.config_hash(vm, "sha256:bb"));
    let mut changed = vm.clone();
    changed
        .command
        .as_mut()
        .unwrap()
        .push("-dedup.minScrapeInterval=10s".into());
    assert_ne!(a, s.config_hash(&changed, "sha256:aa"));
}

#[test]
fn durations() {
    for (s, secs) in [("5s", 5.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0)] {
        assert_eq!(parse_duration(s), Some(std::time::Duration::from_secs_f64(secs)), "{s}");
    }
    for bad in ["", "5", "5x", "s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

const MIN: &str = "version: \"2.4\"
services:
  a:
    image: x:1
    ports: [\"80:8080\"]
    volumes: [\"data:/d\"]
    healthcheck:
      test: [\"CMD\", \"true\"]
  b:
    image: y:1
    depends_on:
      a:
        condition: service_healthy
volumes:
  data:
";

/// Bad compose files: (edit, key path, words).
#[test]
fn bad_compose_files_name_the_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "    image: y:1\n",
            "    image: y:1\n    deploy: {}\n",
            "services.b.deploy",
            "unknown field `deploy`",
        ),
        (
            "version: \"2.4\"\n",
            "version: \"2.4\"\nsecrets: {}\n",
            "secrets",
            "unknown field `secrets`",
        ),
        (
            "[\"80:8080\"]",
            "[\"80:http\"]",
            "services.a.ports[0]",
            "expected HOST:CONTAINER",
        ),
        (
            "[\"data:/d\"]",
            "[\"nodata:/d\"]",
            "services.a.volumes[0]",
            "neither a path nor a volume",
        ),
        (
            "[\"data:/d\"]",
            "[\"data:/d:z\"]",
            "services.a.volumes[0]",
            "mount option \"z\" is not supported",
        ),
        (
            "[\"data:/d\"]",
            "[\"/d\"]",
            "services.a.volumes[0]",
            "anonymous volumes are not supported",
        ),
        (
            "condition: service_healthy",
            "condition: service_completed_successfully",
            "services.b.depends_on.a.condition",
            "expected service_started or service_healthy",
        ),
        (
            "      a:\n        condition",
            "      c:\n        condition",
            "services.b.depends_on.c",
            "not a service of this file",
        ),
        (
            "    image: y:1\n",
            "    image: y:1\n    restart: sometimes\n",
            "services.b.restart",
            "expected no, always",
        ),
        (
            "    image: y:1\n",
            "    image: y:1\n    network_mode: container:a\n",
            "services.b.network_mode",
            "expected host, bridge or none",
        ),
        (
            "    image: x:1\n",
            "    image: x:1\n    network_mode: host\n",
            "services.a.ports",
            "publishes no ports",
        ),
        (
            "      test: [\"CMD\", \"true\"]\n",
            "      test: [\"CMD\", \"true\"]\n      interval: soon\n",
            "services.a.healthcheck.interval",
            "not a duration",
        ),
        (
            "    healthcheck:\n      test: [\"CMD\", \"true\"]\n",
            "",
            "services.b.depends_on.a.condition",
            "needs a healthcheck",
        ),
    ];
    assert!(parse(Path::new("/s/docker-compose.yml"), MIN, &[]).is_ok());
    for (from, to, key, words) in cases {
        assert!(MIN.contains(from), "anchor {from:?}");
        let text = MIN.replacen(from, to, 1);
        let errs = match parse(Path::new("/s/docker-compose.yml"), &text, &[]) {
            Ok(_) => panic!("{key}: accepted"),
            Err(e) => e.0,
        };
        let e = errs
            .iter()
            .find(|e| e.key == *key)
            .unwrap_or_else(|| panic!("{key}: not among {errs:?}"));
        assert!(e.message.contains(words), "{key}: {:?} lacks {words:?}", e.message);
    }
}

#[test]
fn cycles_are_errors() {
    let text = "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: y\n    depends_on: [a]\n";
    let e = parse(Path::new("/s/c.yml"), text, &[]).unwrap_err();
    assert!(e.to_string().contains("dependency cycle"), "{e}");
}

#[test]
fn env_files_are_read_literally_and_the_compose_file_wins() {
    let text =
        "services:\n  a:\n    image: x\n    env_file: [conf/a.env]\n    environment:\n      KEPT: from-compose\n";
    let mut s = parse(Path::new("/s/c.yml"), text, &[]).unwrap();
    assert_eq!(s.services[0].env_files, vec![PathBuf::from("/s/conf/a.env")]);
    s.read_env_files(|p| {
        assert_eq!(p, Path::new("/s/conf/a.env"));
        Ok("# a comment\n\nURL=https://c.example/api?x=1\nKEPT=from-file\nQUOTED=\"as is\"\r\n".into())
    })
    .unwrap();
    let env = &s.services[0].environment;
    assert_eq!(env["URL"], "https://c.example/api?x=1");
    assert_eq!(env["KEPT"], "from-compose");
    assert_eq!(env["QUOTED"], "\"as is\"");
    // The env is part of the config hash: a changed file recreates the container.
    let before = s.config_hash(&s.services[0], "img");
    s.services[0]
        .environment
        .insert("URL".into(), "https://other.example/".into());
    assert_ne!(before, s.config_hash(&s.services[0], "img"));
}

#[test]
fn hostile_or_missing_env_files_are_errors_naming_the_file() {
    for bad in ["/etc/passwd", "../up.env", "a/../../b"] {
        let text = format!("services:\n  a:\n    image: x\n    env_file: [\"{bad}\"]\n");
        let e = parse(Path::new("/s/c.yml"), &text, &[]).unwrap_err().to_string();
        assert!(
            e.contains("env_file[0]") && e.contains("inside the compose file's folder"),
            "{bad}: {e}"
        );
    }
    let text = "services:\n  a:\n    image: x\n    env_file: [a.env]\n";
    for (content, want) in [
        ("NOKEY\n", "line 1: expected KEY=VALUE"),
        ("1X=y\n", "not a variable name"),
        ("K=a\u{1b}[2J\n", "control character"),
    ] {
        let mut s = parse(Path::new("/s/c.yml"), text, &[]).unwrap();
        let e = s.read_env_files(|_| Ok(content.into())).unwrap_err();
        assert!(e.contains("/s/a.env") && e.contains(want), "{content:?}: {e}");
    }
    let mut s = parse(Path::new("/s/c.yml"), text, &[]).unwrap();
    let e = s
        .read_env_files(|_| Err(std::io::Error::from(std::io::ErrorKind::NotFound)))
        .unwrap_err();
    assert!(e.contains("service a: env file /s/a.env"), "{e}");
    let mut s = parse(Path::new("/s/c.yml"), text, &[]).unwrap();
    assert!(
        s.read_env_files(|_| Ok("K=v\n".repeat(20_000)))
            .unwrap_err()
            .contains("at most")
    );
}

#[test]
fn dotenv_enables_profiles_as_docker_compose_does() {
    assert_eq!(dotenv_profiles("# none\n").unwrap(), Vec::<String>::new());
    assert_eq!(
        dotenv_profiles("COMPOSE_PROFILES=central, grafana\n").unwrap(),
        vec!["central", "grafana"]
    );
    assert!(dotenv_profiles("garbage\n").is_err());
}
