#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A unit in QEMU, scanned from a peer on each of its networks: both NICs
//! are tap devices in a network namespace of the test's own (nothing leaves
//! this machine), the scanner (nmap) runs in that namespace. Only what the
//! unit config allows answers; with the firewall table deleted, the same
//! scan finds the exporters on the media LAN, so the test can fail. The same
//! boot also checks least privilege: the containers' users, capabilities and
//! read-only roots, the stack's ports on 127.0.0.1, and the hardening of our
//! systemd units (`systemd-analyze security`, printed for the record).

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use flypack_e2e::*;
use serde_json::Value;

// The web app's browser helpers (headless Chromium at a phone's width),
// shared with its own browser tests.
#[path = "../../webapp/tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;

/// The first admin's password (enrolled with the console's one-time code).
const PASSWORD: &str = "correct horse battery";

/// A network namespace, removed (with whatever still runs in it) when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("fpscan{}", std::process::id());
        let (ok, out) = sh(Command::new("ip").args(["netns", "add", &name]));
        assert!(ok, "{out}");
        let (ok, out) = sh(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        assert!(ok, "{out}");
        Netns(name)
    }
    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).stdin(Stdio::null());
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(o) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

const MGMT: &str = "10.77.0.10";
const MEDIA: &str = "192.168.50.10";

/// Open TCP ports of `addr`, scanned from the namespace (every port).
fn open_tcp(ns: &Netns, addr: &str) -> BTreeSet<u16> {
    let o = ns
        .exec()
        .args([
            "nmap",
            "-n",
            "-Pn",
            "-sS",
            "-p-",
            "--min-rate",
            "2000",
            "--max-retries",
            "1",
            "-oG",
            "-",
            addr,
        ])
        .output()
        .expect("nmap (apt-get install nmap; .ci/deps does)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "nmap: {out}{}", String::from_utf8_lossy(&o.stderr));
    let mut ports = BTreeSet::new();
    for l in out.lines().filter(|l| l.contains("Ports:")) {
        let list = l.split("Ports:").nth(1).unwrap().split('\t').next().unwrap();
        for p in list.split(',') {
            let f: Vec<&str> = p.trim().split('/').collect();
            if f.len() > 2 && f[1] == "open" {
                ports.insert(f[0].parse().unwrap());
            }
        }
    }
    assert!(out.contains("# Nmap done"), "nmap did not finish: {out}");
    ports
}

struct Vm {
    child: Child,
    status: Value,
    key: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on this machine's 127.0.0.1 that reaches `addr:port` inside
/// the namespace: chromedriver and Chromium stay in the test's own network
/// namespace, the unit is on the rig's. A Python helper binds the port
/// here, then joins the namespace (setns) and makes each connection to the
/// unit from there. Ended by its PID with the guard.
fn forward_into(ns: &Netns, addr: &str, port: u16) -> (u16, Kill) {
    const PROXY: &str = r#"
import ctypes, os, socket, sys, threading
ns, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(32)
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/run/netns/" + ns, os.O_RDONLY)
if libc.setns(fd, 0x40000000) != 0:
    sys.exit("setns: " + os.strerror(ctypes.get_errno()))
print(listener.getsockname()[1], flush=True)
def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    client, _ = listener.accept()
    try:
        unit = socket.create_connection((addr, port), timeout=30)
        unit.settimeout(None)
    except OSError:
        client.close()
        continue
    threading.Thread(target=pump, args=(client, unit), daemon=True).start()
    threading.Thread(target=pump, args=(unit, client), daemon=True).start()
"#;
    let mut child = Command::new("python3")
        .args(["-c", PROXY, &ns.0, addr, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let local: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the forwarder did not start: {line:?}"));
    (local, Kill(child))
}

/// The unit's own web app on a phone: headless Chromium at 360 px, through
/// [`forward_into`]. The admin logs in and lands on the unit's status with
/// its real verdict; the status, live and stack pages fit the screen; the
/// live page takes a new sample from the unit every second or so (its
/// /proc, its exporters) and lists its NICs by label and its multicast
/// group; nothing on the pages is an inline script. Screenshots go with the
/// web app's.
fn phone_checks(ns: &Netns) {
    use browser::*;
    use fantoccini::Locator;
    use std::time::Duration;
    let (port, _forward) = forward_into(ns, MGMT, 443);
    let base = format!("https://127.0.0.1:{port}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let driver = start_driver();
            let c = browser(&driver).await;
            let shots = Shots::new();
            login(&c, &base, "admin").await;
            assert_eq!(
                c.current_url().await.unwrap().path(),
                "/status",
                "a unit's home is its status"
            );
            assert!(text(&c, "#verdict").await.contains("GO"));
            let badge = c.find(Locator::Id("verdict-badge")).await.unwrap();
            assert_eq!(badge.text().await.unwrap(), "GO");
            assert!(text(&c, "header").await.contains("fp-scan-01"));
            for page in ["/status", "/stack", "/live"] {
                c.goto(&format!("{base}{page}")).await.unwrap();
                let width = page_width(&c).await;
                assert!(width <= 360, "{page} is {width} px wide on a 360 px screen");
                let inline = c
                    .execute("return document.querySelectorAll('script:not([src])').length;", vec![])
                    .await
                    .unwrap();
                assert_eq!(inline, serde_json::json!(0), "an inline script on {page}");
            }
            let (state, _) = wait_text(&c, "#live-state", Duration::from_secs(30), |t| {
                !t.contains("Connecting")
            })
            .await;
            println!("the unit's live page: {state}");
            let seq = |t: &str| t.trim().parse::<u64>().ok();
            let (first, _) = wait_text(&c, "#live-seq", Duration::from_secs(30), |t| seq(t).is_some()).await;
            let first = seq(&first).unwrap();
            let (_, took) = wait_text(&c, "#live-seq", Duration::from_secs(30), |t| {
                seq(t).is_some_and(|n| n >= first + 3)
            })
            .await;
            println!(
                "three new samples from the unit after {:.1} s (goal: one a second)",
                took.as_secs_f64()
            );
            let nics = text(&c, "#tiles-nics").await;
            // The config's links first, Docker's bridges after.
            let at = |n: &str| nics.find(n).unwrap_or_else(|| panic!("no {n} tile: {nics}"));
            assert!(at("mgmt") < at("docker0") && at("media") < at("docker0"), "{nics}");
            wait_text(&c, "#tiles-mcast", Duration::from_secs(30), |t| {
                t.contains("239.100.0.1")
            })
            .await;
            shots.take(&c, "unit-live").await;
            c.goto(&format!("{base}/status")).await.unwrap();
            shots.take(&c, "unit-status").await;
            c.close().await.unwrap();
        });
}

/// curl from the management LAN; (exit code, stdout and stderr).
fn curl(ns: &Netns, args: &[&str]) -> (i32, String) {
    curl_within(ns, 60, args)
}

/// [`curl`] allowed `secs` seconds, for what runs on the unit meanwhile.
fn curl_within(ns: &Netns, secs: u64, args: &[&str]) -> (i32, String) {
    let o = ns
        .exec()
        .args(["curl", "--silent", "--show-error", "--max-time", &secs.to_string()])
        .args(args)
        .output()
        .expect("curl (.ci/deps installs it)");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The web app as a phone on the management LAN meets it: plain HTTP only
/// redirects and offers the CA; HTTPS chains to that CA and names the
/// unit by name and address; the first admin enrols with the one-time code
/// the console showed; the live figures list the unit's VLAN and multicast
/// group; the verdict waited for all of it; and its systemd unit is
/// hardened.
fn web_app_checks(ns: &Netns, vm: &Vm, dir: &Path) {
    let webapp = vm.status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "webapp")
        .unwrap_or_else(|| panic!("no webapp stage: {}", vm.status));
    assert_eq!(webapp["state"], "done", "{webapp}");
    let detail = webapp["detail"].as_str().unwrap();

    let (code, out) = curl(
        ns,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &format!("http://{MGMT}/status?x=1"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("308 https://{MGMT}/status?x=1"), "plain HTTP redirects");
    let ca = dir.join("ca.pem");
    let (code, out) = curl(
        ns,
        &["--fail", "-o", ca.to_str().unwrap(), &format!("http://{MGMT}/ca.pem")],
    );
    assert_eq!(code, 0, "{out}");
    // What a phone shows before trusting it is what the unit announced.
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&ca)
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&o.stdout)
        .trim()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    assert!(detail.contains(&format!("SHA-256 {fp}")), "{detail} vs {fp}");
    assert!(detail.contains("the unit's own CA"), "{detail}");
    let cacert = ["--fail", "--cacert", ca.to_str().unwrap()];
    for (url, resolve) in [
        (format!("https://{MGMT}/healthz"), None),
        (
            "https://fp-scan-01.local/healthz".to_string(),
            Some(format!("fp-scan-01.local:443:{MGMT}")),
        ),
        (
            "https://fp-scan-01/healthz".to_string(),
            Some(format!("fp-scan-01:443:{MGMT}")),
        ),
    ] {
        let mut args: Vec<&str> = cacert.to_vec();
        if let Some(r) = &resolve {
            args.extend(["--resolve", r]);
        }
        args.push(&url);
        let (code, out) = curl(ns, &args);
        assert_eq!(code, 0, "{url} with the unit's CA: {out}");
    }
    // A name the certificate does not carry is refused.
    let (code, out) = curl(
        ns,
        &[
            &cacert[..],
            &["--resolve", &format!("other:443:{MGMT}"), "https://other/healthz"],
        ]
        .concat(),
    );
    assert_ne!(code, 0, "{out}");

    // The console showed a one-time code for the first admin.
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let code_line = console
        .lines()
        .rev()
        .find(|l| l.contains("enter the one-time code"))
        .unwrap_or_else(|| {
            panic!(
                "no enrolment code on the console:\n{}",
                console_tail(&dir.join("console.log"), 40)
            )
        });
    let enrol = code_line
        .split("one-time code ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let jar = dir.join("cookies");
    let jar = jar.to_str().unwrap();
    let https = |path: &str| format!("https://{MGMT}{path}");
    let (code, page) = curl(ns, &[&cacert[..], &["-c", jar, "-b", jar, &https("/enrol")]].concat());
    assert_eq!(code, 0, "{page}");
    let pre = page
        .split("name=\"pre\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no pre-session field: {page}"));
    // The enrolment form, posted with `code`: (curl's exit, "STATUS REDIRECT").
    let enrol_with = |code: &str| {
        curl(
            ns,
            &[
                "--cacert",
                ca.to_str().unwrap(),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                "-c",
                jar,
                "-b",
                jar,
                "--data-urlencode",
                &format!("code={code}"),
                "--data-urlencode",
                "name=admin",
                "--data-urlencode",
                &format!("password={PASSWORD}"),
                "--data-urlencode",
                &format!("password2={PASSWORD}"),
                "--data-urlencode",
                &format!("pre={pre}"),
                &https("/enrol"),
            ],
        )
    };
    // A wrong code is refused.
    let (_, out) = enrol_with("AAAA-BBBB-CCCC");
    assert!(out.starts_with("403"), "a wrong enrolment code: {out}");
    let (code, out) = enrol_with(enrol);
    assert_eq!(code, 0, "{out}");
    // To the home page, which sends a unit's users to its status.
    assert!(
        out.starts_with("303 ") && out.ends_with(&format!("{MGMT}/")),
        "enrolment: {out}"
    );
    let (code, status) = curl(ns, &[&cacert[..], &["-b", jar, &https("/status")]].concat());
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("fp-scan-01"), "{status}");
    // The admin re-runs QA: the web app's service cannot gain privileges,
    // so the action goes through the root helper on its socket, and the
    // job's events carry firstboot's report.
    let csrf = status
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token on /status: {status}"));
    // Starts a job with a form post (`fields` beside the CSRF token) and
    // follows its event stream to its end: (the job's id, curl's exit, the
    // events). QA takes 10 s on an idle guest; beside the starved boot on CI
    // it took over 60 s, so the wait is the stall period, as everywhere a
    // guest works.
    let run_job = |path: &str, fields: &[&str]| -> (String, i32, String) {
        let mut args: Vec<String> = [
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-b",
            jar,
            "--data-urlencode",
        ]
        .map(str::to_string)
        .to_vec();
        args.push(format!("csrf={csrf}"));
        for f in fields {
            args.extend(["--data-urlencode".to_string(), f.to_string()]);
        }
        args.push(https(path));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = curl(ns, &[&cacert[..], &args[..]].concat());
        assert_eq!(code, 0, "{out}");
        let job = out
            .strip_prefix("303 ")
            .and_then(|u| u.split("/jobs/").nth(1))
            .unwrap_or_else(|| panic!("{path} {fields:?} did not start a job: {out}"))
            .to_string();
        let (code, events) = curl_within(
            ns,
            flypack_engine::docker::STALL.as_secs(),
            &[&cacert[..], &["-N", "-b", jar, &https(&format!("/jobs/{job}/events"))]].concat(),
        );
        (job, code, events)
    };
    let started = std::time::Instant::now();
    let (_, code, events) = run_job("/actions/qa", &[]);
    println!(
        "firewall: the QA job from the web app took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "{events}");
    assert!(
        events.contains("event: end\ndata: succeeded") && events.contains("net.firewall"),
        "the QA job through the privileged helper: {events}"
    );
    // Runs a playbook from the Jobs page; asserts that it succeeded and
    // that its events hold each of `wants`; returns the job's page.
    let run_playbook = |name: &str, what: &str, wants: &[&str]| -> String {
        let started = std::time::Instant::now();
        let (job, code, events) = run_job("/jobs", &[&format!("playbook={name}")]);
        println!(
            "firewall: the {name} playbook ({what}) from the web app took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(code, 0, "{events}");
        assert!(
            events.contains("event: end\ndata: succeeded") && wants.iter().all(|w| events.contains(w)),
            "{name} ({what}) through the privileged helper, wanted {wants:?}: {events}"
        );
        let (code, page) = curl(
            ns,
            &[&cacert[..], &["-b", jar, &https(&format!("/jobs/{job}"))]].concat(),
        );
        assert_eq!(code, 0, "{page}");
        page
    };
    // An Ansible job from the Jobs page: the diagnostics playbook runs as
    // root through the same helper (only its name crosses the socket), and
    // its bundle comes back as the job's download. Root shows in what it
    // holds: the stack's containers (`docker ps`) and the whole journal.
    let page = run_playbook("diagnostics.yml", "a bundle", &["runner_on_ok"]);
    let page = page.replace("&#x2F;", "/");
    let href = page
        .split("href=\"")
        .filter_map(|r| r.split('"').next())
        .find(|h| h.contains("/files/diagnostics-") && h.ends_with(".tar.gz"))
        .unwrap_or_else(|| panic!("no bundle to download on the job's page: {page}"));
    let bundle = dir.join("diagnostics.tar.gz");
    let (code, out) = curl(
        ns,
        &[&cacert[..], &["-b", jar, "-o", bundle.to_str().unwrap(), &https(href)]].concat(),
    );
    assert_eq!(code, 0, "{out}");
    // One file of the bundle (by its path under the bundle's folder).
    let member = |path: &str| {
        let o = Command::new("tar")
            .arg("xzOf")
            .arg(&bundle)
            .args(["--wildcards", &format!("*/{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let ps = member("containers/ps.txt");
    assert!(
        ps.contains("victoriametrics") && ps.contains("node-exporter"),
        "the bundle's docker ps (run as root) lists the stack: {ps}"
    );
    let list = Command::new("tar").arg("tzf").arg(&bundle).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.ends_with("/containers/monitoring_victoriametrics_1.log"))
            && list
                .lines()
                .any(|l| l.ends_with("/files/var_lib_flypack_qa_report.json")),
        "the bundle holds each container's log and the QA report: {list}"
    );
    let journal = member("journal.txt");
    assert!(
        journal.contains("flypack-firstboot") && journal.contains("kernel:"),
        "the bundle's journal is the whole system's (root reads it): {}",
        &journal[..journal.len().min(2000)]
    );

    // The QA playbook on the real unit: the verdict comes back GO, the
    // report is kept with the job, and QA changes nothing.
    let page = run_playbook("qa.yml", "QA again", &[": GO", "changed=0"]);
    assert!(
        page.contains("qa-fp-scan-01.json"),
        "the report is kept with the job: {page}"
    );
    // The stack playbook puts a stopped service back, and on a second run
    // finds nothing to do.
    let (code, out) = ssh(ns, vm, "sudo docker stop monitoring_node-exporter_1");
    assert_eq!(code, 0, "{out}");
    run_playbook(
        "stack.yml",
        "a service stopped",
        &["node-exporter: healthy (started)", "changed=1"],
    );
    run_playbook(
        "stack.yml",
        "a second time",
        &["node-exporter: healthy (unchanged)", "changed=0"],
    );

    // An operator's restart of one service from the web app, through the
    // root helper: `firstboot stack restart`, which waits until the service
    // is healthy again.
    let (_, code, events) = run_job("/actions/restart", &["service=node-exporter"]);
    assert_eq!(code, 0, "{events}");
    assert!(
        events.contains("event: end\ndata: succeeded") && events.contains("restarted"),
        "restarting node-exporter from the web app: {events}"
    );

    // Housekeeping on the real unit: of nine backups a day apart, the seven
    // newest stay (the journal's vacuum runs too); a second run does nothing.
    let (code, out) = ssh(
        ns,
        vm,
        "sudo mkdir -p /var/backups/flypack && for i in 1 2 3 4 5 6 7 8 9; do \
         sudo touch -d \"$i days ago\" /var/backups/flypack/fp-scan-01-$i.flypack-backup.age; done",
    );
    assert_eq!(code, 0, "{out}");
    run_playbook(
        "maintenance.yml",
        "nine backups",
        &[
            "fp-scan-01-8.flypack-backup.age",
            "fp-scan-01-9.flypack-backup.age",
            "Shrink the journal",
        ],
    );
    let (code, out) = ssh(ns, vm, "ls /var/backups/flypack");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        (1..=7)
            .map(|i| format!("fp-scan-01-{i}.flypack-backup.age"))
            .collect::<Vec<_>>(),
        "the seven newest backups stay"
    );
    run_playbook("maintenance.yml", "a second time", &["changed=0"]);

    // The helper runs only the allow-list, for the web app's group only.
    let (code, out) = ssh(
        ns,
        vm,
        "sudo -u flypack-web flypack-web privileged call -- /usr/bin/firstboot network rollback; echo exit=$?; \
         flypack-web privileged call -- /usr/bin/firstboot qa --format json; echo exit=$?",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("refused by the privileged helper") && out.contains("exit=126"),
        "an action off the allow-list: {out}"
    );
    assert!(
        out.contains("Permission denied") && out.contains("exit=1"),
        "a user outside the web app's group reached the helper: {out}"
    );

    // The live figures (what the live page draws) list the unit's VLAN and
    // its multicast group, within a few samples.
    let mut live = String::new();
    for _ in 0..30 {
        let (code, out) = curl(ns, &[&cacert[..], &["-b", jar, &https("/api/live")]].concat());
        assert_eq!(code, 0, "{out}");
        live = out;
        if live.contains("\"media.100\"") && live.contains("239.100.0.1") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(live.contains("\"media.100\"") && live.contains("239.100.0.1"), "{live}");
    // Without the session, nothing.
    let (_, out) = curl(
        ns,
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &https("/api/live"),
        ],
    );
    assert!(out.starts_with("401") || out.starts_with("303"), "no session: {out}");
    // Its own user, not root, and only the capability to bind 80 and 443.
    let (code, out) = ssh(
        ns,
        vm,
        "p=$(pgrep -x flypack-web); stat -c %U /proc/$p; grep -E '^Cap(Eff|Bnd)' /proc/$p/status",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("flypack-web"), "{out}");
    assert!(
        out.contains("CapEff:\t0000000000000400") && out.contains("CapBnd:\t0000000000000400"),
        "{out}"
    );
}

fn ssh(ns: &Netns, vm: &Vm, cmd: &str) -> (i32, String) {
    for _ in 0..10 {
        let o = ns
            .exec()
            .arg("ssh")
            .args(SSH_OPTIONS)
            .arg("-i")
            .arg(&vm.key)
            .arg(format!("flypack@{MGMT}"))
            .arg(cmd)
            .output()
            .unwrap();
        if o.status.code() != Some(255) {
            return (
                o.status.code().unwrap_or(-1),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    panic!("cannot ssh into {MGMT}");
}

// The child is waited for by Vm's Drop (or killed and reaped below).
#[allow(clippy::zombie_processes)]
fn boot_in(ns: &Netns, image: &Path, key: PathBuf, log: &Path) -> Vm {
    let b = bins();
    let mut child = ns
        .exec()
        .arg(&b.builder)
        .args([
            "--json",
            "boot",
            "--quiet",
            "--keep-running",
            "--expect-ready",
            "600",
            "--log",
        ])
        .arg(log)
        .args(["--mgmt-tap", "fpm0", "--media-tap", "fpd0"])
        .arg(image)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // QEMU makes the taps; the namespace's side of each LAN gets its address.
    for _ in 0..100 {
        let (ok, _) = sh(Command::new("ip").args(["-n", &ns.0, "link", "show", "fpd0"]));
        if ok {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for (dev, addr) in [("fpm0", "10.77.0.1/24"), ("fpd0", "192.168.50.1/24")] {
        let (ok, out) = sh(Command::new("ip").args(["-n", &ns.0, "addr", "add", addr, "dev", dev]));
        assert!(ok, "{out}");
        let (ok, out) = sh(Command::new("ip").args(["-n", &ns.0, "link", "set", dev, "up"]));
        assert!(ok, "{out}");
    }
    let out = child.stdout.take().unwrap();
    for line in std::io::BufReader::new(out).lines() {
        let Ok(e) = serde_json::from_str::<Value>(&line.unwrap()) else {
            continue;
        };
        if e["event"] == "ready" {
            return Vm {
                child,
                status: e["status"].clone(),
                key,
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no status line:\n{}", console_tail(log, 60));
}

#[test]
fn a_port_scan_from_each_lan_finds_only_what_the_unit_allows() {
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let unit = format!(
        "version = 1\nhostname = \"fp-scan-01\"\n\
         [[interfaces]]\nlabel = \"mgmt\"\nmatch = {{ mac = \"52:54:00:f1:00:01\" }}\naddresses = [\"{MGMT}/24\"]\ngateway = \"10.77.0.1\"\n\
         [[interfaces]]\nlabel = \"media\"\nmatch = {{ mac = \"52:54:00:f1:00:02\" }}\naddresses = [\"{MEDIA}/24\"]\n\
         [[vlans]]\nname = \"media.100\"\nparent = \"media\"\nid = 100\naddresses = [\"10.100.0.10/24\"]\n\
         [multicast]\ngroups = [{{ group = \"239.100.0.1\", interface = \"media\", port = 5000 }}]\n\
         [qa]\nwaivers = [{{ check = \"time.sync\", reason = \"no NTP in the scan rig\", expires = \"2099-12-31\" }}]\n\
         [access]\nssh_authorized_keys = [{public:?}]\n"
    );
    let copy = seeded_copy(&img.path, dir.path(), &unit);
    let ns = Netns::new();
    let vm = boot_in(&ns, &copy, key, &dir.path().join("console.log"));
    assert_eq!(vm.status["verdict"], "GO", "{}", vm.status);

    // From the management LAN: SSH and the web app (HTTPS, and HTTP for the
    // redirect and the CA). From the media LAN: nothing.
    // The two LANs are scanned at once: two NICs, neither scan waits for the other.
    let t = std::time::Instant::now();
    let (mgmt, media) = std::thread::scope(|s| {
        let media = s.spawn(|| open_tcp(&ns, MEDIA));
        (open_tcp(&ns, MGMT), media.join().unwrap())
    });
    assert_eq!(mgmt, BTreeSet::from([22, 80, 443]), "management LAN");
    assert_eq!(media, BTreeSet::new(), "media LAN");
    eprintln!("firewall: both LANs scanned in {:.1} s", t.elapsed().as_secs_f64());
    let (code, out) = ssh(
        &ns,
        &vm,
        "sudo firstboot firewall status && sudo firstboot qa --format json",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("input drop, forward drop"), "{out}");
    let qa: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    let fw = qa["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "net.firewall")
        .unwrap();
    assert_eq!(fw["outcome"], "pass", "{fw}");

    // Least privilege, as running: every container non-root, every capability
    // dropped, no new privileges, a read-only root; VictoriaMetrics on 127.0.0.1.
    let (code, out) = ssh(
        &ns,
        &vm,
        "sudo docker inspect -f '{{.Name}} user={{.Config.User}} ro={{.HostConfig.ReadonlyRootfs}} drop={{.HostConfig.CapDrop}} sec={{.HostConfig.SecurityOpt}}' $(sudo docker ps -q)",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 5, "{out}");
    for l in out.lines() {
        assert!(
            !l.contains("user= ")
                && !l.contains("user=0")
                && !l.contains("user=root")
                && l.contains("ro=true")
                && l.contains("drop=[ALL]")
                && l.contains("no-new-privileges=true"),
            "{l}"
        );
    }
    let (code, out) = ssh(&ns, &vm, "ss -Htln");
    assert_eq!(code, 0, "{out}");
    let l8428: Vec<&str> = out.lines().filter(|l| l.contains(":8428 ")).collect();
    assert!(
        !l8428.is_empty() && l8428.iter().all(|l| l.contains("127.0.0.1:8428")),
        "{out}"
    );
    let (code, out) = ssh(
        &ns,
        &vm,
        "sudo docker inspect -f '{{range .Mounts}}{{.Source}} {{end}}' monitoring_video-exporter_1",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("/etc/flypack ") && !out.contains("secrets"),
        "the exporter mounts too much: {out}"
    );
    // Our units' hardening, for the record (`systemd-analyze security` scores).
    let (_, out) = ssh(
        &ns,
        &vm,
        "for u in flypack-firstboot flypack-firstboot-early flypack-backup flypack-status; do \
         printf '%s: ' $u; systemd-analyze security --no-pager $u.service | tail -1; done",
    );
    eprintln!("systemd-analyze security:\n{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("Overall exposure level")).count(),
        4,
        "{out}"
    );

    // AppArmor's profiles were compiled when the image was built, for this
    // kernel's features (builder's tree stage): the cache folder the running
    // kernel reads holds them, and they are older than this boot, so
    // apparmor.service loaded them without compiling (7 s at first boot).
    let (code, out) = ssh(
        &ns,
        &vm,
        "d=$(sudo apparmor_parser --print-cache-dir) && boot=$(date -d \"$(uptime -s)\" +%s) && \
         for p in lsb_release usr.sbin.chronyd usr.bin.tcpdump; do echo \"$p $(sudo stat -c %Z $d/$p) $boot\"; done",
    );
    assert_eq!(code, 0, "the AppArmor cache for this kernel is missing: {out}");
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (made, boot): (i64, i64) = (f[1].parse().expect(l), f[2].parse().expect(l));
        assert!(
            made < boot,
            "{}: compiled at boot, not at build time ({l}): has Debian's kernel changed its AppArmor \
             features? Capture them again (builder/src/stages/apparmor-kernel-features-bookworm)",
            f[0]
        );
    }

    web_app_checks(&ns, &vm, dir.path());
    phone_checks(&ns);

    // The firewall is what keeps them out: without its table, the exporters
    // (host network, every interface) answer on the media LAN.
    let (code, out) = ssh(&ns, &vm, "sudo nft delete table inet flypack");
    assert_eq!(code, 0, "{out}");
    let open = open_tcp(&ns, MEDIA);
    assert!(open.contains(&9100) && open.contains(&9150), "{open:?}");
}
