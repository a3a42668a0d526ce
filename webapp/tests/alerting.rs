//! Alerting for real, on a unit's network made for the test: a multicast
//! sender in one network namespace; in another (the unit), the exporter
//! joined to the group, VictoriaMetrics scraping it, vmalert with the unit's
//! rules file and the command line of the stack's compose file, a stand-in
//! Alertmanager named by the unit config's `[alerting]`, and the web app's
//! status page. The stream stops: MulticastStreamMissing fires, the page
//! shows it and the Alertmanager receives it. The stream resumes: the alert
//! resolves, the page clears and the Alertmanager hears the resolution.
//!
//! On the unit vmagent scrapes and VictoriaMetrics stores; here
//! VictoriaMetrics scrapes itself (the same scrape code, one process less).
//! Needs root, iproute2, python3 and Debian's victoria-metrics (vmalert).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};

use flypack_e2e::{Kill, Netns, sh_ok};
use std::time::{Duration, Instant};

use flypack_web::role::Role;
use serde_json::Value;

mod common;
use common::*;

/// On a failure, the end of every process's log, to say why.
struct Logs(std::path::PathBuf);
impl Drop for Logs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!(
            "--- vmalert's alerts ---\n{}",
            get("http://127.0.0.1:8880/api/v1/alerts").unwrap_or_default()
        );
        for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let t = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = t.lines().rev().take(15).collect();
                eprintln!("--- {} ---", p.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

fn get(url: &str) -> Option<String> {
    let o = Command::new("curl")
        .args(["-fs", "--max-time", "5", url])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn spawn(cmd: &mut Command, log: &Path) -> Kill {
    let f = std::fs::File::create(log).unwrap();
    Kill(
        cmd.stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {cmd:?}: {e} (is Debian's victoria-metrics installed? .ci/deps installs it)")
            }),
    )
}

fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// vmalert's alerts of one rule, as (state, labels).
fn alerts(name: &str) -> Vec<(String, Value)> {
    let text = get("http://127.0.0.1:8880/api/v1/alerts").unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["name"] == name)
        .map(|a| (a["state"].as_str().unwrap_or("").to_string(), a["labels"].clone()))
        .collect()
}

/// The stand-in Alertmanager's log: one line per alert received,
/// "PATH ALERTNAME firing|resolved".
const ALERTMANAGER: &str = r#"
import datetime, http.server, json, re, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        now = datetime.datetime.now(datetime.timezone.utc)
        with open(sys.argv[1], 'a') as f:
            for a in json.loads(body):
                ends = re.sub(r'(\.\d{6})\d*', r'\1', a.get('endsAt', '')).replace('Z', '+00:00')
                state = 'resolved' if ends and datetime.datetime.fromisoformat(ends) <= now else 'firing'
                f.write('%s %s %s\n' % (self.path, a['labels'].get('alertname'), state))
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(('127.0.0.1', 9093), H).serve_forever()
"#;

/// 200 packets a second to the group until killed.
const SENDER: &str = r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
while True:
    s.sendto(b'x' * 1000, ('239.10.0.1', 5000))
    time.sleep(0.005)
"#;

/// A service's command from the stack's compose file, with each `from` of
/// `rewrites` replaced (each must match: the test follows the compose file).
fn compose_command(stack: &flypack_engine::compose::Stack, service: &str, rewrites: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = stack.service(service).unwrap().command.clone().unwrap();
    for (from, to) in rewrites {
        assert!(
            cmd.iter().any(|a| a.contains(from)),
            "{service}'s command in the compose file has no {from:?}: {cmd:?}"
        );
        for a in &mut cmd {
            *a = a.replace(from, to);
        }
    }
    cmd
}

#[test]
fn a_stopped_multicast_stream_fires_an_alert_the_page_shows_and_the_alertmanager_hears() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tag = std::process::id() % 100000;
    let (src, unit_ns) = (format!("fpas{tag}"), format!("fpau{tag}"));
    let _ns = Netns(vec![src.clone(), unit_ns.clone()]);
    sh_ok(&format!(
        "ip netns add {src}; ip netns add {unit_ns}
         ip -n {src} link add vsrc type veth peer name vrx netns {unit_ns}
         ip -n {src} addr add 10.50.0.1/24 dev vsrc; ip -n {src} link set vsrc up; ip -n {src} link set lo up
         ip -n {unit_ns} addr add 10.50.0.2/24 dev vrx; ip -n {unit_ns} link set vrx up; ip -n {unit_ns} link set lo up
         ip -n {src} route add 224.0.0.0/4 dev vsrc"
    ));
    // From here this thread, what it starts and the web app's runtime live on
    // the unit's network: loopback there is the unit's own.
    let ns = std::fs::File::open(format!("/run/netns/{unit_ns}")).unwrap();
    rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _logs = Logs(d.to_path_buf());
    let unit_text = "version = 1\nhostname = \"fp-alert-01\"\n\
         [[interfaces]]\nlabel = \"media\"\nmatch = { name = \"vrx\" }\naddresses = [\"10.50.0.2/24\"]\n\
         [multicast]\ngroups = [{ group = \"239.10.0.1\", interface = \"media\", port = 5000 }]\n\
         [alerting]\nalertmanager = \"http://127.0.0.1:9093/am\"\n";
    let unit_path = d.join("unit.toml");
    std::fs::write(&unit_path, unit_text).unwrap();
    let unit = flypack_contracts::unit::parse_unit(&unit_path, unit_text).unwrap();
    let notifier = d.join("notifier.yml");
    std::fs::write(&notifier, unit.alerting.notifier_config()).unwrap();
    std::fs::write(
        d.join("scrape.yml"),
        "global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: video\n    static_configs:\n      - targets: [\"127.0.0.1:9150\"]\n",
    )
    .unwrap();

    let compose = repo.join("compose/monitoring/docker-compose.yml");
    let stack = flypack_engine::compose::parse(&compose, &std::fs::read_to_string(&compose).unwrap(), &[]).unwrap();
    let rules = repo.join("compose/monitoring/vmalert/rules.yml");
    let vm_cmd = compose_command(
        &stack,
        "victoriametrics",
        &[
            ("/var/lib/victoria-metrics", &d.join("vm").display().to_string()),
            ("-httpListenAddr=:8428", "-httpListenAddr=127.0.0.1:8428"),
        ],
    );
    let vmalert_cmd = compose_command(
        &stack,
        "vmalert",
        &[
            ("/etc/vmalert/rules.yml", &rules.display().to_string()),
            ("victoriametrics:8428", "127.0.0.1:8428"),
            ("-httpListenAddr=:8880", "-httpListenAddr=127.0.0.1:8880"),
            ("/etc/vmalert/notifier.yml", &notifier.display().to_string()),
        ],
    );

    // Through `ip netns exec`, which also mounts the namespace's own /sys:
    // the exporter finds the unit's NICs there.
    let _exporter = spawn(
        Command::new("ip")
            .args(["netns", "exec", &unit_ns])
            .arg(&flypack_e2e::bins().exporter)
            .arg(format!("--config={}", unit_path.display()))
            .arg("--listen=127.0.0.1:9150"),
        &d.join("exporter.log"),
    );
    let _vm = spawn(
        Command::new(&vm_cmd[0])
            .args(&vm_cmd[1..])
            .arg(format!("-promscrape.config={}", d.join("scrape.yml").display())),
        &d.join("vm.log"),
    );
    let received = d.join("alertmanager.log");
    let _am = spawn(
        Command::new("python3").args(["-c", ALERTMANAGER]).arg(&received),
        &d.join("am.log"),
    );
    wait_for("VictoriaMetrics to answer", Duration::from_secs(30), || {
        get("http://127.0.0.1:8428/health")
    });
    let _vmalert = spawn(
        Command::new(&vmalert_cmd[0]).args(&vmalert_cmd[1..]),
        &d.join("vmalert.log"),
    );
    let mut sender = spawn(
        Command::new("ip").args(["netns", "exec", &src, "python3", "-c", SENDER]),
        &d.join("sender.log"),
    );

    // The web app, on this network, asking the vmalert above.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let st = rt.block_on(async {
        let mut cfg = config(&root);
        cfg.sources.vmalert_url = "http://127.0.0.1:8880".into();
        let st = flypack_web::state::build(&root, cfg).unwrap();
        st.users.add("viewer", Role::Viewer, PASSWORD).unwrap();
        st
    });
    let status_page = || rt.block_on(Client::new(&st, Some(Role::Viewer)).page("/status"));

    // The stream flows into VictoriaMetrics, and vmalert has evaluated every
    // rule of the file against it without an error.
    let query =
        "http://127.0.0.1:8428/api/v1/query?query=flypack_mcast_packet_rate%7Bgroup%3D%22239.10.0.1%22%7D%3E100";
    wait_for("the stream's rate in VictoriaMetrics", Duration::from_secs(60), || {
        get(query).filter(|t| t.contains("239.10.0.1"))
    });
    let in_file = std::fs::read_to_string(&rules).unwrap().matches("- alert:").count();
    wait_for("vmalert to evaluate every rule", Duration::from_secs(60), || {
        let v: Value = serde_json::from_str(&get("http://127.0.0.1:8880/api/v1/rules")?).ok()?;
        let group = v["data"]["groups"]
            .as_array()?
            .iter()
            .find(|g| g["name"] == "flypack")?
            .clone();
        let rules = group["rules"].as_array()?.clone();
        assert_eq!(rules.len(), in_file, "vmalert loaded every rule of the file");
        for r in &rules {
            assert_eq!(r["lastError"], "", "rule {} fails against real data: {r}", r["name"]);
        }
        rules
            .iter()
            .all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")))
            .then_some(())
    });
    // Before the first packet the stream was missing: that alert, pending
    // or firing, resolves once the stream is seen; then nothing fires.
    let all = || get("http://127.0.0.1:8880/api/v1/alerts").unwrap_or_default();
    let t = Instant::now();
    loop {
        let text = all();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // vmalert 1.79 says null for none.
        if v["data"]["alerts"].is_null() && v["status"] == "success"
            || v["data"]["alerts"].as_array().is_some_and(|a| a.is_empty())
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "alerts still there while the stream flows: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let html = status_page();
    assert!(
        html.contains("id=\"no-alerts\""),
        "the stream flows: no alert\n{}",
        all()
    );

    // The stream stops.
    drop(sender);
    let t0 = Instant::now();
    let firing = wait_for("MulticastStreamMissing to fire", Duration::from_secs(120), || {
        alerts("MulticastStreamMissing")
            .into_iter()
            .find(|(s, _)| s == "firing")
    });
    let fired_after = t0.elapsed();
    assert_eq!(firing.1["group"], "239.10.0.1", "{}", firing.1);
    assert_eq!(firing.1["interface"], "vrx", "{}", firing.1);
    assert_eq!(firing.1["severity"], "critical", "{}", firing.1);
    let html = status_page();
    assert!(html.contains("1 firing"), "{html}");
    assert!(
        html.contains("<code class=\"check-id\">MulticastStreamMissing</code>"),
        "{html}"
    );
    assert!(html.contains("Multicast 239.10.0.1 on vrx: no packets"), "{html}");
    let heard = |state: &str| {
        std::fs::read_to_string(&received)
            .unwrap_or_default()
            .lines()
            .any(|l| l == format!("/am/api/v2/alerts MulticastStreamMissing {state}"))
            .then_some(())
    };
    wait_for("the Alertmanager to hear the alert", Duration::from_secs(60), || {
        heard("firing")
    });

    // The stream resumes.
    sender = spawn(
        Command::new("ip").args(["netns", "exec", &src, "python3", "-c", SENDER]),
        &d.join("sender2.log"),
    );
    let t1 = Instant::now();
    wait_for("MulticastStreamMissing to resolve", Duration::from_secs(120), || {
        alerts("MulticastStreamMissing").is_empty().then_some(())
    });
    let resolved_after = t1.elapsed();
    let html = status_page();
    assert!(html.contains("id=\"no-alerts\""), "{html}");
    wait_for(
        "the Alertmanager to hear the resolution",
        Duration::from_secs(60),
        || heard("resolved"),
    );
    eprintln!(
        "alerting: the stream stopped, firing after {:.1} s; resumed, resolved after {:.1} s (rule for: 10s, evaluated every 10 s, scraped every 5 s)",
        fired_after.as_secs_f64(),
        resolved_after.as_secs_f64()
    );
    drop(sender);
}
