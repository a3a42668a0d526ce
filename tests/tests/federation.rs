//! Federation for real, on networks the test makes: a central (a network
//! namespace running VictoriaMetrics and vmauth with the commands of
//! `compose/central/docker-compose.yml`, TLS from `builder fleet-ca
//! server`) and two units (each a namespace running vmagent-central with
//! the command of the unit stack's compose file and the settings firstboot
//! writes from a unit config's `[central]` and the seed's password and
//! fleet CA). The link to the central is cut for 40 s and restored: every
//! sample scraped meanwhile reaches the central (the on-disk queue drains),
//! and a query by the flypack label returns both units. A client with the
//! flypack's password that claims another flypack is stored as its own, a
//! wrong password stores nothing, and the flypack's user cannot read.
//!
//! The units scrape vmagent's own metrics every second (the unit's exporters
//! are not here; the queue does not care what it carries).
//! Needs root, iproute2, curl and Debian's victoria-metrics (vmagent, vmauth).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flypack_contracts::unit::Central;
use flypack_e2e::{
    CentralAt, Kill, Netns, builder, compose_command, repo, run, set_flag, sh_ok, spawn_logged, start_central, wait_for,
};
use serde_json::Value;

const CENTRAL_IP: &str = "10.77.0.1";
const PASSWORD: &str = "north-password-0123";

/// On a failure, the end of every process's log, to say why.
struct Logs(PathBuf);
impl Drop for Logs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let t = std::fs::read_to_string(&p).unwrap_or_default();
                eprintln!("--- {} ---\n{}", p.display(), flypack_e2e::tail(&t, 20));
            }
        }
    }
}

/// Starts `cmd` (a binary name, then flags) in namespace `ns`.
fn spawn(ns: &str, cmd: &[String], env: &[(String, String)], log: &Path) -> Kill {
    spawn_logged(&["ip", "netns", "exec", ns], cmd, env, log)
}

fn get_in(ns: &str, url: &str, auth: Option<&str>) -> (u16, String) {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        ns,
        "curl",
        "-s",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(a) = auth {
        c.args(["-k", "-u", a]);
    }
    let o = c.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn central_json(ns: &str, path: &str) -> Value {
    let (code, body) = get_in(ns, &format!("http://127.0.0.1:8428{path}"), None);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn series(ns: &str, selector: &str) -> Vec<Value> {
    let v = central_json(ns, &format!("/api/v1/series?match[]={}", urlencode(selector)));
    v["data"].as_array().cloned().unwrap_or_default()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A vmagent metric's value (summed over its series) from its /metrics.
fn agent_metric(ns: &str, name: &str) -> f64 {
    let (_, body) = get_in(ns, "http://127.0.0.1:8429/metrics", None);
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn units_federate_through_a_cut_link_and_lose_nothing() {
    let tag = std::process::id() % 100000;
    let (central, ua, ub) = (format!("fc{tag}"), format!("fua{tag}"), format!("fub{tag}"));
    let _ns = Netns(vec![central.clone(), ua.clone(), ub.clone()]);
    // The central's side is a bridge: taking it down cuts both units.
    sh_ok(&format!(
        "ip netns add {central}; ip netns add {ua}; ip netns add {ub}
         ip -n {central} link set lo up; ip -n {ua} link set lo up; ip -n {ub} link set lo up
         ip -n {central} link add br0 type bridge
         ip -n {central} addr add {CENTRAL_IP}/24 dev br0; ip -n {central} link set br0 up
         ip -n {central} link add pa type veth peer name eth0 netns {ua}
         ip -n {central} link add pb type veth peer name eth0 netns {ub}
         ip -n {central} link set pa master br0 up; ip -n {central} link set pb master br0 up
         ip -n {ua} addr add 10.77.0.2/24 dev eth0; ip -n {ua} link set eth0 up
         ip -n {ub} addr add 10.77.0.3/24 dev eth0; ip -n {ub} link set eth0 up"
    ));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _logs = Logs(d.to_path_buf());

    // The fleet CA and the central's certificate, as the runbook makes them.
    let ca = d.join("fleet-ca.pem");
    let r = run(builder()
        .args(["fleet-ca", "new", "--name", "test"])
        .arg("--out")
        .arg(&ca));
    assert_eq!(r.code, 0, "fleet-ca new: {}", r.stderr);
    let tls = d.join("central/vmauth/tls");
    let r = run(builder()
        .args(["fleet-ca", "server", "--address", CENTRAL_IP, "--ca"])
        .arg(&ca)
        .arg("--out")
        .arg(&tls));
    assert_eq!(r.code, 0, "fleet-ca server: {}", r.stderr);

    // The central, with the compose file's commands.
    let _central = start_central(
        d,
        &CentralAt {
            prefix: &["ip", "netns", "exec", &central],
            vm: ":8428",
            auth: ":8427",
            tls: &tls,
        },
        "north",
        PASSWORD,
    );

    // The units: what firstboot writes for each, then vmagent-central as the
    // unit's compose file runs it.
    let unit_file = repo().join("compose/monitoring/docker-compose.yml");
    let mut agents = Vec::new();
    for (ns, host, segment) in [(&ua, "cam-a", "truck-1"), (&ub, "cam-b", "truck-2")] {
        let udir = d.join(host);
        let compose = udir.join("docker-compose.yml");
        std::fs::create_dir_all(&udir).unwrap();
        let unit = flypack_contracts::unit::parse_unit(
            Path::new("unit.toml"),
            &format!(
                "version = 1\nhostname = \"{host}\"\n[central]\nurl = \"https://{CENTRAL_IP}:8427/api/v1/write\"\nflypack = \"north\"\nsegment = \"{segment}\"\n"
            ),
        )
        .unwrap();
        let seed = flypack_contracts::seed::SeedFiles {
            central_password: Some(flypack_contracts::seed::Secret(PASSWORD.into())),
            tls: Some(flypack_contracts::seed::SeedTls {
                ca: std::fs::read_to_string(ca.with_extension("crt")).unwrap(),
                ..Default::default()
            }),
            ..Default::default()
        };
        firstboot::config::install_central(&firstboot::root::Root::new(&udir), Some(&seed), &compose).unwrap();
        let (_, warning) = firstboot::config::write_central(&unit, &compose).unwrap();
        assert_eq!(warning, None);
        let dotenv = std::fs::read_to_string(udir.join(".env")).unwrap();
        assert_eq!(
            flypack_engine::compose::dotenv_profiles(&dotenv).unwrap(),
            vec!["central"]
        );
        let mut env =
            flypack_engine::compose::parse_env_file(&std::fs::read_to_string(udir.join(Central::ENV_FILE)).unwrap())
                .unwrap();
        assert_eq!(
            env.get("remoteWrite_tlsCAFile").map(String::as_str),
            Some("/etc/flypack/central/ca.crt")
        );
        env.insert(
            "remoteWrite_tlsCAFile".into(),
            udir.join(Central::CA_FILE).display().to_string(),
        );
        let scrape = udir.join("scrape.yml");
        std::fs::write(
            &scrape,
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vmagent\n    static_configs:\n      - targets: [\"127.0.0.1:8429\"]\n",
        )
        .unwrap();
        let mut cmd = compose_command(&unit_file, "vmagent-central", &["central"]);
        assert_eq!(cmd[0], "/usr/bin/vmagent");
        assert!(cmd.contains(&"-envflag.enable".to_string()));
        set_flag(&mut cmd, "-promscrape.config", scrape.to_str().unwrap());
        set_flag(
            &mut cmd,
            "-remoteWrite.tmpDataPath",
            udir.join("queue").to_str().unwrap(),
        );
        set_flag(
            &mut cmd,
            "-remoteWrite.basicAuth.passwordFile",
            udir.join(Central::PASSWORD_FILE).to_str().unwrap(),
        );
        agents.push(spawn(
            ns,
            &cmd,
            &env.into_iter().collect::<Vec<_>>(),
            &d.join(format!("{host}.log")),
        ));
    }
    wait_for("both units at the central", Duration::from_secs(60), || {
        series(&central, "up{flypack=\"north\"}").len() == 2
    });

    // An intruder with the flypack's password claims another flypack; a
    // second one has a wrong password.
    let intruders = d.join("intruders");
    std::fs::create_dir_all(&intruders).unwrap();
    std::fs::write(intruders.join("scrape.yml"), "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: intruder\n    static_configs:\n      - targets: [\"127.0.0.1:8431\"]\n").unwrap();
    std::fs::write(intruders.join("right"), PASSWORD).unwrap();
    std::fs::write(intruders.join("wrong"), "not-the-password-at-all").unwrap();
    let mut others = Vec::new();
    for (who, pw, port) in [("forger", "right", 8431), ("guesser", "wrong", 8432)] {
        let cmd: Vec<String> = [
            "vmagent".to_string(),
            format!("-promscrape.config={}", intruders.join("scrape.yml").display()),
            format!("-remoteWrite.url=https://{CENTRAL_IP}:8427/api/v1/write"),
            format!("-remoteWrite.label=flypack=south,unit={who}"),
            "-remoteWrite.basicAuth.username=north".into(),
            format!("-remoteWrite.basicAuth.passwordFile={}", intruders.join(pw).display()),
            "-remoteWrite.tlsInsecureSkipVerify".into(),
            format!(
                "-remoteWrite.tmpDataPath={}",
                intruders.join(format!("q-{who}")).display()
            ),
            format!("-httpListenAddr=127.0.0.1:{port}"),
        ]
        .into();
        others.push(spawn(&ua, &cmd, &[], &d.join(format!("{who}.log"))));
    }

    // The cut.
    std::thread::sleep(Duration::from_secs(5));
    let cut_at = now();
    sh_ok(&format!("ip -n {central} link set br0 down"));
    std::thread::sleep(Duration::from_secs(40));
    // Meanwhile the units queued on disk and sent nothing.
    for ns in [&ua, &ub] {
        let pending = agent_metric(ns, "vmagent_remotewrite_pending_data_bytes");
        assert!(pending > 0.0, "{ns}: nothing queued during the cut");
    }
    sh_ok(&format!("ip -n {central} link set br0 up"));
    let back_at = now();
    // Then every sample scraped during the cut arrives: the queue on disk
    // drains, and a batch that was in flight when the link went (not in
    // the queue) is sent again when its request times out.
    let t_back = Instant::now();
    let mut drained = None;
    let window = |unit: &str| -> Vec<i64> {
        let (code, body) = get_in(
            &central,
            &format!(
                "http://127.0.0.1:8428/api/v1/export?match[]={}&start={:.0}&end={:.0}",
                urlencode(&format!("up{{unit=\"{unit}\"}}")),
                cut_at - 5.0,
                back_at + 5.0
            ),
            None,
        );
        assert_eq!(code, 200, "{body}");
        let line: Value = serde_json::from_str(body.lines().next().unwrap_or("{}")).unwrap();
        let mut ts: Vec<i64> = line["timestamps"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        ts.sort_unstable();
        ts
    };
    let largest_gap = |ts: &[i64]| ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(i64::MAX);
    loop {
        let pending: Vec<f64> = [&ua, &ub]
            .iter()
            .map(|n| agent_metric(n, "vmagent_remotewrite_pending_data_bytes"))
            .collect();
        if drained.is_none() && pending.iter().all(|p| *p == 0.0) {
            drained = Some(t_back.elapsed().as_secs_f64());
        }
        let gaps: Vec<i64> = ["cam-a", "cam-b"].iter().map(|u| largest_gap(&window(u))).collect();
        if drained.is_some() && gaps.iter().all(|g| *g <= 1500) {
            break;
        }
        if t_back.elapsed() > Duration::from_secs(150) {
            for unit in ["cam-a", "cam-b"] {
                let ts = window(unit);
                for w in ts.windows(2).filter(|w| w[1] - w[0] > 1500) {
                    eprintln!(
                        "{unit}: a {} ms gap {:.1} s after the cut",
                        w[1] - w[0],
                        w[0] as f64 / 1000.0 - cut_at
                    );
                }
            }
            panic!(
                "150 s after the link came back: queues {pending:?} bytes, largest gaps {gaps:?} ms: samples were lost"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!(
        "the link came back: queues drained after {:.1} s, every sample at the central after {:.1} s",
        drained.unwrap_or_default(),
        t_back.elapsed().as_secs_f64()
    );
    for (unit, ns) in [("cam-a", &ua), ("cam-b", &ub)] {
        let ts = window(unit);
        let span = (ts.last().unwrap() - ts.first().unwrap()) as f64 / 1000.0;
        eprintln!(
            "{unit}: {} samples over {span:.0} s across the cut, largest gap {} ms",
            ts.len(),
            largest_gap(&ts)
        );
        assert!(span >= back_at - cut_at + 5.0, "{unit}: the samples span {span} s only");
        assert_eq!(agent_metric(ns, "vmagent_remotewrite_packets_dropped_total"), 0.0);
    }

    // One query by the flypack's label returns both units, with their segments.
    let mut got: Vec<(String, String)> = series(&central, "up{flypack=\"north\",job=\"vmagent\"}")
        .iter()
        .map(|s| {
            (
                s["unit"].as_str().unwrap().to_string(),
                s["segment"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("cam-a".to_string(), "truck-1".to_string()),
            ("cam-b".into(), "truck-2".into())
        ]
    );
    // The forger's samples are stored as its user's flypack; the guesser's not at all.
    wait_for("the forger's samples", Duration::from_secs(30), || {
        !series(&central, "up{unit=\"forger\"}").is_empty()
    });
    let forged = series(&central, "up{unit=\"forger\"}");
    assert!(forged.iter().all(|s| s["flypack"] == "north"), "{forged:?}");
    assert!(series(&central, "{flypack=\"south\"}").is_empty());
    assert!(series(&central, "up{unit=\"guesser\"}").is_empty());
    // The flypack's user may write, not read.
    let (code, body) = get_in(
        &ua,
        &format!("https://{CENTRAL_IP}:8427/api/v1/query?query=up"),
        Some(&format!("north:{PASSWORD}")),
    );
    assert_ne!(code, 200, "the flypack's user read the central: {body}");
    assert!(!body.contains("cam-b"), "{body}");
    drop(others);
    drop(agents);
}
