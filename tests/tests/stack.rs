//! The monitoring stack against a real dockerd (the host's, or one the
//! harness starts when none answers): the images built from Debian packages,
//! brought up by firstboot's stack code,
//! every service healthy, VictoriaMetrics answering for series scraped from
//! node exporter and from our exporter; a re-run changes nothing; a changed
//! service is recreated with its volume kept; docker-compose recognises the
//! containers; bad input fails before anything starts.
//!
//! One test, run in steps: the stack publishes host ports, so two copies
//! cannot run at once on one machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flypack_e2e::*;
use serde_json::Value;

fn docker(args: &[&str]) -> (bool, String) {
    sh(Command::new("docker").args(args))
}

/// Removes every container, volume and network of `project`.
fn down(project: &str) {
    let (_, ids) = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    for id in ids.split_whitespace() {
        docker(&["rm", "-f", id]);
    }
    let (_, vols) = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    for v in vols.split_whitespace() {
        docker(&["volume", "rm", "-f", v]);
    }
    docker(&["network", "rm", &format!("{project}_default")]);
}

/// The service states `firstboot stack --json up` printed on stdout (the
/// text before the JSON is stderr's progress).
fn states(out: &str) -> Vec<Value> {
    let json = out.split(STDERR_MARK).next().unwrap_or_default();
    serde_json::from_str::<Vec<Value>>(json.trim()).unwrap_or_else(|e| panic!("no JSON ({e}): {out}"))
}

const STDERR_MARK: &str = "\n--- stderr ---\n";

fn up(config: &Path) -> (i32, String) {
    let o = firstboot()
        .arg("stack")
        .arg("--config")
        .arg(config)
        .args(["--json", "up"])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{STDERR_MARK}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn vm_query(q: &str) -> Vec<Value> {
    let (ok, out) = sh(Command::new("curl").args([
        "-s",
        "--max-time",
        "5",
        "-G",
        "http://127.0.0.1:8428/api/v1/query",
        "--data-urlencode",
        &format!("query={q}"),
    ]));
    if !ok {
        return vec![];
    }
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn the_stack_comes_up_healthy_and_converges() {
    let api = host_docker();
    eprintln!("Docker API {api}");
    let images = stack_images();
    let dir = tempfile::tempdir().unwrap();
    // A copy of the compose folder under a test project name.
    let project = format!("fpe2e{}", std::process::id());
    let compose_dir = dir.path().join(&project);
    let (ok, msg) = sh(Command::new("cp")
        .arg("-r")
        .arg(repo().join("compose/monitoring"))
        .arg(&compose_dir));
    assert!(ok, "{msg}");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(images.join("stack.json")).unwrap()).unwrap();
    cfg["project"] = Value::String(project.clone());
    cfg["compose"] = Value::String(compose_dir.join("docker-compose.yml").display().to_string());
    let config = dir.path().join("stack.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    // Nothing else may hold the stack's host ports: the unit's own project
    // name and leftovers of earlier runs of this test.
    let (_, names) = docker(&["ps", "-a", "--format", "{{.Label \"com.docker.compose.project\"}}"]);
    for p in names.lines().filter(|p| *p == "monitoring" || p.starts_with("fpe2e")) {
        down(p);
    }
    let _cleanup = Down(project.clone());

    // Bad input first, from a clean daemon: nothing may start.
    let refs: Vec<String> = cfg["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect();
    for r in &refs {
        docker(&["rmi", "-f", r]);
    }
    let mut bad = cfg.clone();
    let archive = PathBuf::from(cfg["images"][0]["archive"].as_str().unwrap());
    // An image the build put into Docker's store (no archive) that is not
    // there: the store was wiped; the fix is a reflash.
    let mut in_store = cfg.clone();
    for i in in_store["images"].as_array_mut().unwrap() {
        i.as_object_mut().unwrap().remove("archive");
        i.as_object_mut().unwrap().remove("archive_sha256");
    }
    let bad_config = dir.path().join("bad.json");
    std::fs::write(&bad_config, serde_json::to_vec(&in_store).unwrap()).unwrap();
    let (code, out) = up(&bad_config);
    assert_ne!(code, 0);
    assert!(
        out.contains("is not in Docker's store (/var/lib/docker), where the build put it") && out.contains("reflash"),
        "{out}"
    );
    for i in bad["images"].as_array_mut().unwrap() {
        i["archive"] = Value::String(dir.path().join("missing.tar").display().to_string());
    }
    std::fs::write(&bad_config, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (code, out) = up(&bad_config);
    assert_ne!(code, 0);
    assert!(out.contains("missing.tar is missing or unreadable"), "{out}");
    let corrupt = dir.path().join("corrupt.tar");
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    for i in bad["images"].as_array_mut().unwrap() {
        i["archive"] = Value::String(corrupt.display().to_string());
    }
    std::fs::write(&bad_config, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (code, out) = up(&bad_config);
    assert_ne!(code, 0);
    assert!(out.contains("corrupt.tar is corrupt: SHA-256"), "{out}");
    let (_, listed) = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    assert!(
        listed.trim().is_empty(),
        "containers started despite bad input: {listed}"
    );

    // Up, healthy.
    let t0 = Instant::now();
    let (code, out) = up(&config);
    assert_eq!(code, 0, "{out}");
    eprintln!(
        "stack up (images loaded, all healthy) in {:.1} s on this dockerd",
        t0.elapsed().as_secs_f64()
    );
    let first = states(&out);
    assert_eq!(first.len(), 5, "{out}");
    for s in &first {
        assert_eq!(s["state"], "healthy", "{s}");
        assert_eq!(s["action"], "created", "{s}");
    }

    // VictoriaMetrics answers for series from node exporter and our exporter.
    wait_for(
        "node exporter series in VictoriaMetrics",
        Duration::from_secs(90),
        || !vm_query("node_uname_info").is_empty() && !vm_query("up{job=\"node\"} == 1").is_empty(),
    );
    wait_for(
        "video exporter series in VictoriaMetrics",
        Duration::from_secs(90),
        || !vm_query("flypack_exporter_build_info").is_empty(),
    );
    // vmalert runs from the image with the compose folder's rules and the
    // notifier file firstboot wrote there (no unit config: no Alertmanager),
    // and evaluates every rule against VictoriaMetrics without an error.
    let notifier = std::fs::read_to_string(compose_dir.join("vmalert/notifier.yml")).unwrap();
    assert!(notifier.contains("static_configs: []"), "{notifier}");
    let in_file = std::fs::read_to_string(compose_dir.join("vmalert/rules.yml"))
        .unwrap()
        .matches("- alert:")
        .count();
    wait_for("vmalert to evaluate every rule", Duration::from_secs(90), || {
        let (ok, out) = sh(Command::new("curl").args(["-s", "--max-time", "5", "http://127.0.0.1:8880/api/v1/rules"]));
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let Some(rules) = v["data"]["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == "flypack"))
            .and_then(|g| g["rules"].as_array().cloned())
        else {
            return false;
        };
        assert!(
            ok && rules.len() == in_file,
            "vmalert has {} of {in_file} rules: {out}",
            rules.len()
        );
        for r in &rules {
            assert_eq!(r["lastError"], "", "{r}");
        }
        rules
            .iter()
            .all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")))
    });

    // A re-run changes nothing.
    let (code, out) = up(&config);
    assert_eq!(code, 0, "{out}");
    let again = states(&out);
    assert_eq!(again.len(), first.len(), "{out}");
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(b["action"], "unchanged", "{b}");
        assert_eq!(a["container"], b["container"], "{a} vs {b}");
    }

    // One service restarted (the operator's action in the web app): the
    // same container, started again, healthy when the command returns; the
    // others untouched. A name that is not a service restarts nothing.
    let started_at = |name: &str| {
        let (ok, t) = docker(&["inspect", "-f", "{{.State.StartedAt}}", &format!("{project}_{name}_1")]);
        assert!(ok, "{t}");
        t.trim().to_string()
    };
    let (vmagent0, vm0) = (started_at("vmagent"), started_at("victoriametrics"));
    let restart = |service: &str| {
        let o = firstboot()
            .arg("stack")
            .arg("--config")
            .arg(&config)
            .args(["--json", "restart", service])
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = restart("vmagent");
    assert_eq!(code, 0, "{out}{err}");
    let r = states(&format!("{out}{STDERR_MARK}"));
    assert_eq!(r.len(), 1, "{out}");
    assert_eq!(
        (r[0]["name"].as_str(), r[0]["action"].as_str(), r[0]["state"].as_str()),
        (Some("vmagent"), Some("restarted"), Some("healthy")),
        "{out}"
    );
    let vmagent_first = first.iter().find(|s| s["name"] == "vmagent").unwrap();
    assert_eq!(r[0]["container"], vmagent_first["container"], "{out}");
    assert_ne!(started_at("vmagent"), vmagent0, "vmagent was not started again");
    assert_eq!(started_at("victoriametrics"), vm0, "another service was restarted");
    let (code, out, err) = restart("vmagent; reboot");
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("is not a service of this unit's stack") && err.contains("vmagent"),
        "{err}"
    );

    // Data in VictoriaMetrics' volume survives a recreate of the service.
    let (ok, msg) = sh(Command::new("curl").args([
        "-s",
        "--max-time",
        "5",
        "--data-binary",
        "flypack_e2e_marker 42",
        "http://127.0.0.1:8428/api/v1/import/prometheus",
    ]));
    assert!(ok, "{msg}");
    wait_for("the marker in VictoriaMetrics", Duration::from_secs(30), || {
        !vm_query("flypack_e2e_marker").is_empty()
    });
    let file = compose_dir.join("docker-compose.yml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "      - -search.latencyOffset=5s\n",
        "      - -search.latencyOffset=5s\n      - -search.maxUniqueTimeseries=100000\n",
    );
    std::fs::write(&file, text).unwrap();
    let (code, out) = up(&config);
    assert_eq!(code, 0, "{out}");
    let changed = states(&out);
    assert_eq!(changed.len(), 5, "{out}");
    for s in &changed {
        let want = if s["name"] == "victoriametrics" {
            "recreated"
        } else {
            "unchanged"
        };
        assert_eq!(s["action"], want, "{s}");
        assert_eq!(s["state"], "healthy", "{s}");
    }
    wait_for("the marker after the recreate", Duration::from_secs(60), || {
        vm_query("flypack_e2e_marker")
            .first()
            .map(|r| r["value"][1] == "42")
            .unwrap_or(false)
    });

    // docker-compose (Debian's 1.29) sees the containers as its own, and
    // Docker's own probes (every 30 s) agree with firstboot's, which called
    // them healthy before Docker had probed.
    let compose_ps = || {
        let (ok, ps) = sh(Command::new("docker-compose")
            .arg("-p")
            .arg(&project)
            .arg("-f")
            .arg(&file)
            .arg("ps"));
        assert!(ok, "{ps}");
        ps
    };
    let services = [
        "node-exporter",
        "victoriametrics",
        "video-exporter",
        "vmagent",
        "vmalert",
    ];
    wait_for(
        "Docker's own probes to call every service healthy",
        Duration::from_secs(120),
        || {
            let ps = compose_ps();
            services.iter().all(|svc| {
                let line = ps
                    .lines()
                    .find(|l| l.starts_with(&format!("{project}_{svc}_1")))
                    .unwrap_or_else(|| panic!("{svc} not in docker-compose ps:\n{ps}"));
                assert!(
                    line.contains("Up (healthy)") || line.contains("Up (health: starting)"),
                    "{line}"
                );
                line.contains("Up (healthy)")
            })
        },
    );

    // Federation on: what firstboot writes from a unit config's [central]
    // and the seed's password turns the `central` profile on, and
    // vmagent-central starts with its env file's settings (no central here:
    // it queues, and is healthy all the same). The others stay as they were.
    let with_central = flypack_contracts::unit::parse_unit(
        Path::new("unit.toml"),
        "version = 1\nhostname = \"cam-1\"\n[central]\nurl = \"https://127.0.0.1:9/api/v1/write\"\nflypack = \"north\"\n",
    )
    .unwrap();
    let seed = flypack_contracts::seed::SeedFiles {
        central_password: Some(flypack_contracts::seed::Secret("north-password-0123".into())),
        ..Default::default()
    };
    // The test's folder is a scratch root around the compose folder: what
    // firstboot keeps of a handed password goes under it, never into this
    // machine's /etc.
    let root = dir.path().to_path_buf();
    firstboot::config::install_central(&firstboot::root::Root::new(&root), Some(&seed), &file).unwrap();
    assert_eq!(
        firstboot::config::write_central(&with_central, &file).unwrap(),
        (true, None)
    );
    let (code, out) = up(&config);
    assert_eq!(code, 0, "{out}");
    let on = states(&out);
    assert_eq!(on.len(), 6, "{out}");
    for s in &on {
        let want = if s["name"] == "vmagent-central" {
            "created"
        } else {
            "unchanged"
        };
        assert_eq!(s["action"], want, "{s}");
        assert_eq!(s["state"], "healthy", "{s}");
    }
    let central = format!("{project}_vmagent-central_1");
    let (ok, env) = docker(&["inspect", "-f", "{{json .Config.Env}}", &central]);
    assert!(ok, "{env}");
    for want in [
        "remoteWrite_url=https://127.0.0.1:9/api/v1/write",
        "remoteWrite_label=flypack=north,unit=cam-1",
        "remoteWrite_basicAuth_username=north",
    ] {
        assert!(env.contains(want), "{want} not in {env}");
    }
    assert!(
        !env.contains("north-password"),
        "the password is in the environment: {env}"
    );
    // It reads the password file (0400, its user) and tries the central.
    wait_for("vmagent-central to try the central", Duration::from_secs(60), || {
        let (_, logs) = docker(&["logs", &central]);
        logs.contains("127.0.0.1:9") && !logs.contains("cannot read")
    });

    // A new password handed over, as the fleet playbook
    // central-password.yml does on a unit in service: installed, and
    // vmagent-central restarted with it; a second time, nothing happens.
    // firstboot runs on the scratch root, whose stack config names the
    // compose file inside it and whose config in force has the [central].
    let mut rooted = cfg.clone();
    rooted["compose"] = Value::String(format!("/{project}/docker-compose.yml"));
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(at(flypack_contracts::stack::STACK_CONFIG).parent().unwrap()).unwrap();
    std::fs::write(
        at(flypack_contracts::stack::STACK_CONFIG),
        serde_json::to_vec_pretty(&rooted).unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(at("/etc/flypack")).unwrap();
    std::fs::write(at("/etc/flypack/unit.toml"), with_central.to_toml()).unwrap();
    let handed = dir.path().join("north-2027.password");
    std::fs::write(&handed, "north-password-of-2027\n").unwrap();
    let started = || {
        let (ok, t) = docker(&["inspect", "-f", "{{.State.StartedAt}}", &central]);
        assert!(ok, "{t}");
        t.trim().to_string()
    };
    let before = started();
    let hand = || {
        let o = firstboot()
            .arg("--root")
            .arg(&root)
            .args(["central", "password"])
            .arg(&handed)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = hand();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("changed: vmagent-central restarted"), "{out}{err}");
    assert_ne!(started(), before, "vmagent-central was not restarted");
    assert_eq!(
        std::fs::read_to_string(compose_dir.join(flypack_contracts::unit::Central::PASSWORD_FILE)).unwrap(),
        "north-password-of-2027"
    );
    // Up by firstboot's own probe (the command said so; Docker's probe
    // comes every 30 s), and running.
    let (_, st) = docker(&["inspect", "-f", "{{.State.Running}}", &central]);
    assert_eq!(st.trim(), "true", "{out}{err}");
    let after = started();
    let (code, out, err) = hand();
    assert_eq!(
        (code, out.trim()),
        (0, "unchanged: vmagent-central sends with this password already"),
        "{err}"
    );
    assert_eq!(started(), after, "restarted for nothing");

    // Off again: the profile goes, and so does the container (its queue's
    // volume stays, as with docker-compose).
    let without =
        flypack_contracts::unit::parse_unit(Path::new("unit.toml"), "version = 1\nhostname = \"cam-1\"\n").unwrap();
    assert_eq!(firstboot::config::write_central(&without, &file).unwrap(), (true, None));
    let (code, out) = up(&config);
    assert_eq!(code, 0, "{out}");
    let off = states(&out);
    assert_eq!(off.len(), 5, "{out}");
    assert!(off.iter().all(|s| s["action"] == "unchanged"), "{out}");
    let (_, left) = docker(&["ps", "-aq", "--filter", &format!("name={central}")]);
    assert!(left.trim().is_empty(), "vmagent-central is still there: {left}");
}

/// Takes the test's stack down however the test ends.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        down(&self.0);
    }
}

#[test]
fn unknown_compose_keys_are_rejected_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    let compose_dir = dir.path().join("monitoring");
    let (ok, msg) = sh(Command::new("cp")
        .arg("-r")
        .arg(repo().join("compose/monitoring"))
        .arg(&compose_dir));
    assert!(ok, "{msg}");
    let file = compose_dir.join("docker-compose.yml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "  vmagent:\n    image:",
        "  vmagent:\n    deploy:\n      replicas: 2\n    image:",
    );
    std::fs::write(&file, text).unwrap();
    let profile = default_profile_text(None).replace(
        &format!(
            "compose = {:?}",
            repo()
                .join("compose/monitoring/docker-compose.yml")
                .display()
                .to_string()
        ),
        &format!("compose = {:?}", file.display().to_string()),
    );
    let p = dir.path().join("p.toml");
    std::fs::write(&p, profile).unwrap();
    let r = run(builder().arg("validate").arg(&p));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("stack.compose:") && r.stderr.contains("services.vmagent.deploy: unknown field `deploy`"),
        "{}",
        r.stderr
    );
}
