//! The outer playbooks against two units at once: the shared image booted
//! twice in QEMU (each its own seed, both with the fleet's backup key), and
//! this machine as the engineer's laptop. The inventory is the one `builder
//! inventory` writes from the fleet file; a second inventory says how the
//! laptop reaches each unit here (its SSH forward on 127.0.0.1).
//!
//! - fleet status: one report, both units GO with their QA checks;
//! - backup pull: each unit's backup, fetched and verified with the fleet key;
//! - config push, both units in one batch: fp-demo-01's new media address is
//!   confirmed over a new connection and kept; fp-demo-02's new management
//!   address cuts the laptop off, so the confirm cannot come and the unit
//!   rolls back by itself and answers again as before. A second push of the
//!   kept config changes nothing.
//! - access rotation, both units in one batch, to a new SSH key: fp-demo-01's
//!   laptop logs in with the new key, confirms, and the old key is refused
//!   from then on; fp-demo-02's laptop holds a key that is not the new one,
//!   so the confirm cannot come and the unit puts its old key back by
//!   itself. fp-demo-01 also gets the fleet's web users (its web app stopped
//!   for the moment, then serving them). A second run changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use flypack_contracts::status::Verdict;
use flypack_e2e::*;
use serde_json::{Value, json};

const UNITS: [&str; 2] = ["fp-demo-01", "fp-demo-02"];
/// Where a guest reaches the central (builder boot --guest-forward).
const CENTRAL_IP: &str = "10.0.2.100";
const CENTRAL_PORT: u16 = 8427;
const CENTRAL_PASSWORD: &str = "e2e-central-password-0042";

fn unit_text(public: &str, hostname: &str) -> String {
    example_unit_with_key(public).replace("hostname = \"fp-demo-01\"", &format!("hostname = {hostname:?}"))
}

/// The fleet file for both units, from their configs (as TOML values, so
/// a test can change one and regenerate as an engineer would).
fn write_fleet(path: &Path, configs: &[toml::Value]) {
    let units: Vec<toml::Value> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut t = toml::Table::new();
            t.insert("serial".into(), toml::Value::String(format!("E2E-{i}")));
            t.insert("config".into(), c.clone());
            toml::Value::Table(t)
        })
        .collect();
    let mut fleet = toml::Table::new();
    fleet.insert("version".into(), toml::Value::Integer(1));
    fleet.insert("flypack".into(), toml::Value::String("e2e".into()));
    fleet.insert("units".into(), toml::Value::Array(units));
    std::fs::write(path, toml::to_string(&fleet).unwrap()).unwrap();
}

fn playbook(name: &str, inventories: &[&Path], args: &[String]) -> (bool, String, f64) {
    let t = Instant::now();
    let mut cmd = Command::new("timeout");
    cmd.args(["900", "ansible-playbook"])
        .arg(format!("playbooks/fleet/{name}"))
        // The units are QEMU guests under software emulation, two at once
        // beside other tests on 2 cores: once, both took more than
        // Ansible's default 10 s to answer SSH and sudo right after their
        // first boot ("Timeout (12s) waiting for privilege escalation
        // prompt"). Real units answer in well under a second.
        .env("ANSIBLE_TIMEOUT", UNIT_TIMEOUT)
        .current_dir(repo().join("ansible"));
    for i in inventories {
        cmd.arg("-i").arg(i);
    }
    let o = cmd.args(args).output().expect("ansible-playbook");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), out, t.elapsed().as_secs_f64())
}

#[test]
fn two_units_from_the_laptop_status_backup_pull_a_config_push_and_an_access_rotation_kept_or_rolled_back() {
    let img = shared_image();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let fleet_key = dir.path().join("fleet.key");
    let r = run(builder().args(["backup-key", "new", "--out"]).arg(&fleet_key));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The flypack's central, on this machine: its vmauth's certificate
    // from the fleet CA the units' seeds carry, for the address a guest
    // reaches it at (builder boot --guest-forward).
    let fleet_ca = dir.path().join("fleet-ca.pem");
    let r = run(builder()
        .args(["fleet-ca", "new", "--name", "e2e", "--out"])
        .arg(&fleet_ca));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let central_dir = mkdir(dir.path(), "central");
    let r = run(builder()
        .args(["fleet-ca", "server", "--address", CENTRAL_IP, "--ca"])
        .arg(&fleet_ca)
        .arg("--out")
        .arg(central_dir.join("tls")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let vm_port = free_port();
    let auth_port = std::iter::repeat_with(free_port).find(|p| *p != vm_port).unwrap();
    let _central = start_central(
        &central_dir,
        &CentralAt {
            prefix: &[],
            vm: &format!("127.0.0.1:{vm_port}"),
            auth: &format!("127.0.0.1:{auth_port}"),
            tls: &central_dir.join("tls"),
        },
        "e2e",
        CENTRAL_PASSWORD,
    );
    let images: Vec<PathBuf> = UNITS
        .iter()
        .map(|h| {
            let d = dir.path().join(h);
            std::fs::create_dir(&d).unwrap();
            let copy = seeded_copy(&img.path, &d, &unit_text(&public, h));
            let r = run(builder()
                .arg("customize")
                .arg(&copy)
                .arg("--unit")
                .arg(d.join("unit.toml"))
                .arg("--backup-key")
                .arg(&fleet_key)
                .arg("--fleet-ca")
                .arg(&fleet_ca));
            assert_eq!(r.code, 0, "{}", r.stderr);
            copy
        })
        .collect();

    // Both at once: a flypack is several units.
    let t = Instant::now();
    let sessions: Vec<Session> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .zip(UNITS)
            .map(|(img, h)| {
                let log = dir.path().join(format!("{h}.console.log"));
                let key = key.clone();
                let reach = format!("{CENTRAL_PORT}:{auth_port}");
                s.spawn(move || Session::start(img, &key, &log, &["--guest-forward", &reach]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!(
        "fleet: two units booted side by side reached their verdicts in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    for (s, h) in sessions.iter().zip(UNITS) {
        assert_eq!(s.status.hostname, h);
        assert_eq!(
            s.status.verdict,
            Verdict::Go,
            "{h}: {:?}\n{}",
            s.status,
            console_tail(&s.log, 40)
        );
    }

    // The laptop's inventory, from the fleet file; how it reaches them here.
    let mut configs: Vec<toml::Value> = UNITS
        .iter()
        .map(|h| toml::from_str(&unit_text(&public, h)).unwrap())
        .collect();
    let fleet = dir.path().join("e2e.toml");
    write_fleet(&fleet, &configs);
    let inv = dir.path().join("inventory.yml");
    let unit_configs = dir.path().join("configs");
    let regenerate = || {
        let r = run(builder()
            .arg("inventory")
            .arg(&fleet)
            .arg("--out")
            .arg(&inv)
            .arg("--unit-configs")
            .arg(&unit_configs));
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    regenerate();
    let conn = dir.path().join("forwards.yml");
    // The access rotation's new key, and a key that is not it (the laptop
    // of fp-demo-02 was handed the wrong one).
    let (new_key, new_public) = keygen(&mkdir(dir.path(), "new-key"));
    let (wrong_key, _) = keygen(&mkdir(dir.path(), "wrong-key"));
    let hosts: serde_json::Map<String, Value> = sessions
        .iter()
        .zip(UNITS)
        .zip([&new_key, &wrong_key])
        .map(|((s, h), rotate_key)| {
            (
                h.to_string(),
                json!({"ansible_host": "127.0.0.1", "ansible_port": s.port,
                       "rotate_access_key": rotate_key,
                       "ansible_ssh_private_key_file": key,
                       "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                                                   -o ServerAliveInterval=5 -o ServerAliveCountMax=3"}),
            )
        })
        .collect();
    std::fs::write(&conn, json!({"all": {"hosts": hosts}}).to_string()).unwrap();
    let invs: [&Path; 2] = [&inv, &conn];

    // Fleet status: both, then one (what Ansible's parallelism gives).
    let report = dir.path().join("report");
    let (ok, o, both) = playbook(
        "status.yml",
        &invs,
        &["-e".into(), format!("fleet_status_report_dir={}", report.display())],
    );
    assert!(ok, "{o}");
    let (ok, o1, one) = playbook(
        "status.yml",
        &invs,
        &[
            "-e".into(),
            format!("fleet_status_report_dir={}", dir.path().join("report-1").display()),
            "--limit".into(),
            "fp-demo-01".into(),
        ],
    );
    assert!(ok, "{o1}");
    println!(
        "fleet: status.yml took {both:.1} s for 2 units, {one:.1} s for 1 (ratio {:.2} against 2 single runs)",
        both / (2.0 * one)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(report.join("fleet-status.json")).unwrap()).unwrap();
    for (u, h) in r["units"].as_array().unwrap().iter().zip(UNITS) {
        assert_eq!(
            (u["host"].as_str(), u["verdict"].as_str(), u["flypack"].as_str()),
            (Some(h), Some("GO"), Some("e2e")),
            "{u}"
        );
        assert!(u["checks"].as_array().unwrap().len() >= 5, "the unit's QA checks: {u}");
        assert_eq!(u["problem"], "", "{u}");
        // The unit's own vmalert answered (what fires on a fresh unit varies).
        assert_eq!(u["alerts_problem"], "", "{u}");
        assert!(u["alerts"].is_array(), "{u}");
    }
    assert!(
        std::fs::read_to_string(report.join("fleet-status.html"))
            .unwrap()
            .contains("2 of 2 units GO")
    );

    // Backup pull.
    let laptop = dir.path().join("backups");
    let (ok, o, secs) = playbook(
        "backup-pull.yml",
        &invs,
        &[
            "-e".into(),
            format!(
                "backup_pull_dir={} backup_pull_key={} backup_pull_builder={}",
                laptop.display(),
                fleet_key.display(),
                bins().builder.display()
            ),
        ],
    );
    assert!(ok, "{o}");
    println!("fleet: backup-pull.yml (take, fetch, verify) took {secs:.1} s for 2 units");
    for h in UNITS {
        let got = names(&laptop.join(h));
        assert_eq!(got.len(), 1, "{h}: {got:?}");
        let r = run(builder()
            .args(["--json", "backup-key", "verify", "--key"])
            .arg(&fleet_key)
            .arg(laptop.join(h).join(&got[0])));
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.event("result").unwrap()["hostname"], h);
    }

    // A new central password for the flypack, to both booted units: each
    // keeps it (in /etc/flypack/secrets, root only) and says nothing is sent
    // yet (their configs have no [central]); the password is never shown,
    // the pushed copy is gone, and a second run changes nothing.
    let passwords = mkdir(dir.path(), "central-passwords");
    let central = CENTRAL_PASSWORD;
    std::fs::write(passwords.join("e2e.password"), format!("{central}\n")).unwrap();
    let vars = [
        "-e".to_string(),
        format!("central_password_dir={}", passwords.display()),
    ];
    let (ok, o, secs) = playbook("central-password.yml", &invs, &vars);
    assert!(ok, "{o}");
    println!("fleet: central-password.yml took {secs:.1} s for 2 units");
    assert!(!o.contains(central), "the password is never shown: {o}");
    for h in UNITS {
        assert!(
            o.contains(&format!(
                "{h}: changed: the central password is kept; the unit config in force has no [central]"
            )),
            "{h}: {o}"
        );
    }
    for s in &sessions {
        let (code, out) = s.ssh(
            "sudo stat -c '%a %U' /etc/flypack/secrets/central-password.json; \
             sudo jq -r .password /etc/flypack/secrets/central-password.json; \
             sudo test ! -e /run/flypack-central-password && echo gone",
        );
        assert_eq!(code, 0, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            ["600 root", central, "gone"],
            "kept for root alone, no copy left in /run: {out}"
        );
    }
    let (ok, o, _) = playbook("central-password.yml", &invs, &vars);
    assert!(ok && o.matches("changed=0").count() == 2, "a second run: {o}");

    // Config push: fp-demo-01 gets a second media address (kept once
    // confirmed); fp-demo-02's management link moves to an address the
    // laptop's forward does not reach (rolled back by the unit itself).
    // Both are told to send their metrics to the flypack's central.
    for (c, segment) in configs.iter_mut().zip(["stage-left", "stage-right"]) {
        let mut central = toml::Table::new();
        central.insert(
            "url".into(),
            toml::Value::String(format!("https://{CENTRAL_IP}:{CENTRAL_PORT}/api/v1/write")),
        );
        central.insert("flypack".into(), toml::Value::String("e2e".into()));
        central.insert("segment".into(), toml::Value::String(segment.into()));
        c.as_table_mut()
            .unwrap()
            .insert("central".into(), toml::Value::Table(central));
    }
    configs[0]["interfaces"][1]["addresses"]
        .as_array_mut()
        .unwrap()
        .push(toml::Value::String("192.168.51.10/24".into()));
    let mgmt = configs[1]["interfaces"][0].as_table_mut().unwrap();
    mgmt.insert("dhcp".into(), toml::Value::Boolean(false));
    mgmt.insert(
        "addresses".into(),
        toml::Value::Array(vec![toml::Value::String("10.0.2.99/24".into())]),
    );
    write_fleet(&fleet, &configs);
    regenerate();
    let push = |limit: Option<&str>| {
        let mut args = vec![
            "-e".to_string(),
            format!(
                "config_push_dir={} config_push_builder={} config_push_serial=2 config_push_confirm_within=60",
                unit_configs.display(),
                bins().builder.display()
            ),
        ];
        if let Some(l) = limit {
            args.extend(["--limit".to_string(), l.to_string()]);
        }
        playbook("config-push.yml", &invs, &args)
    };
    let (ok, o, secs) = push(None);
    println!("fleet: config-push.yml (one kept, one rolled back) took {secs:.1} s");
    assert!(!ok, "a unit that rolled back fails the run: {o}");
    assert!(
        o.contains("fp-demo-01: applied;") && o.contains("confirmed, it stays"),
        "{o}"
    );
    assert!(
        o.contains("fp-demo-02: the change was applied but the confirm did not come in time"),
        "{o}"
    );
    let (s1, s2) = (&sessions[0], &sessions[1]);
    let (code, out) = s1.ssh("ip -br addr show dev enp0s4 && sudo cat /etc/flypack/unit.toml");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.matches("192.168.51.10").count(),
        2,
        "in force and in the kept config: {out}"
    );
    let (code, out) =
        s2.ssh("ip -br addr show dev enp0s3 && sudo cat /etc/flypack/unit.toml; sudo ls /var/lib/flypack/network");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("10.0.2.15/24") && !out.contains("10.0.2.99"),
        "rolled back: {out}"
    );
    assert!(!out.contains("pending.json"), "{out}");
    // The kept change is not rolled back later (its timer was stopped).
    let (_, timers) = s1.ssh("systemctl list-timers --all --no-legend 'flypack-net-rollback-*'");
    assert!(!timers.contains("flypack-net-rollback"), "{timers}");

    // Federation followed the kept config at once (no reboot): fp-demo-01's
    // metrics reach the central over TLS, with the password handed over
    // above, labelled with its flypack, unit and segment. fp-demo-02's
    // [central] went with its rolled-back change: it sends nothing.
    assert!(
        o.contains("federation follows the config: vmagent-central runs with its settings"),
        "{o}"
    );
    let t = Instant::now();
    let at_central = || -> Vec<(String, String)> {
        let o = Command::new("curl")
            .args(["-sfG", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{vm_port}/api/v1/series"))
            .args(["--data-urlencode", "match[]={flypack=\"e2e\"}"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let mut got: Vec<(String, String)> = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    l["unit"].as_str().unwrap_or("?").to_string(),
                    l["segment"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect();
        got.sort();
        got.dedup();
        got
    };
    while at_central().is_empty() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    println!(
        "fleet: the kept unit's metrics were at the central {:.0} s after the push ended",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        at_central(),
        [("fp-demo-01".to_string(), "stage-left".to_string())],
        "the central's log: {}",
        tail(
            &std::fs::read_to_string(central_dir.join("central-vmauth.log")).unwrap_or_default(),
            20
        )
    );
    let (code, out) = s2.ssh("sudo docker ps --all --filter name=vmagent-central --format '{{.Names}}'");
    assert_eq!((code, out.trim()), (0, ""), "fp-demo-02 runs no vmagent-central");

    let (ok, o, _) = push(Some("fp-demo-01"));
    assert!(
        ok && o.contains("fp-demo-01: unchanged;") && o.contains("changed=0"),
        "a second push: {o}"
    );

    // Access rotation: every unit's config now lists only the new key; the
    // fleet's web users add an admin. fp-demo-02's config is its first one
    // again (its management change was rolled back above).
    configs[1] = toml::from_str(&unit_text(&public, UNITS[1])).unwrap();
    for c in &mut configs {
        c["access"]["ssh_authorized_keys"] = toml::Value::Array(vec![toml::Value::String(new_public.clone())]);
    }
    write_fleet(&fleet, &configs);
    regenerate();
    let mut hash = Command::new(&bins().webapp)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut hash.stdin.take().unwrap(), b"rotated password 2027\n").unwrap();
    let hash = String::from_utf8(hash.wait_with_output().unwrap().stdout).unwrap();
    let web_users = dir.path().join("web-users.toml");
    std::fs::write(
        &web_users,
        format!(
            "version = 1\nretire = [\"old-laptop\"]\n[[users]]\nname = \"ana\"\nrole = \"admin\"\npassword_hash = {:?}\n",
            hash.trim()
        ),
    )
    .unwrap();
    // 45 s to confirm: fp-demo-02 waits it out. The confirm is one raw SSH
    // command right after the keys are in force (a module run there once
    // outlasted a 45 s window on a loaded host; the raw command does not).
    let rotate = |extra: &[String]| {
        let mut args = vec![
            "-e".to_string(),
            format!(
                "rotate_access_dir={} rotate_access_web_users={} rotate_access_serial=2 rotate_access_confirm_within=45",
                unit_configs.display(),
                web_users.display()
            ),
        ];
        args.extend_from_slice(extra);
        playbook("rotate-access.yml", &invs, &args)
    };
    let (ok, o, secs) = rotate(&[]);
    println!("fleet: rotate-access.yml (one kept, one rolled back, web users) took {secs:.1} s");
    assert!(!ok, "a unit that put its old keys back fails the run: {o}");
    assert!(o.contains("confirmed with the new key, it stays"), "{o}");
    assert!(
        o.contains("fp-demo-02: the new keys were put in force, but this laptop could not confirm them")
            && o.contains("Permission denied (publickey)"),
        "{o}"
    );
    assert!(o.contains("fp-demo-01: web users added ana"), "{o}");

    // fp-demo-01: only the new key gets in, and it is in the config in force.
    let (code, out) = s1.ssh_with(&key, "true");
    assert_eq!(code, 255, "the old key is refused: {out}");
    let (code, out) = s1.ssh_with(
        &new_key,
        "sudo cat /etc/flypack/ssh/flypack.keys /etc/flypack/unit.toml; sudo ls /var/lib/flypack/access; \
         systemctl is-active flypack-web; sudo stat -c '%U %a' /var/lib/flypack/webapp/users.json; \
         sudo cat /var/lib/flypack/webapp/users.json",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.matches(new_public.as_str()).count(),
        2,
        "in force and in the config: {out}"
    );
    assert!(!out.contains(&public) && !out.contains("pending.json"), "{out}");
    assert!(
        out.contains("\nactive\nflypack-web 600\n"),
        "serving, and its user owns the users: {out}"
    );
    assert!(out.contains("\"name\": \"ana\"") && out.contains(hash.trim()), "{out}");
    // fp-demo-02: its old key is back, nothing waits, no timer is left.
    let (code, out) = s2.ssh(
        "sudo cat /etc/flypack/ssh/flypack.keys; sudo ls /var/lib/flypack/access; \
         systemctl list-timers --all --no-legend 'flypack-access-rollback-*'",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&public) && !out.contains(&new_public),
        "rolled back: {out}"
    );
    assert!(
        !out.contains("pending.json") && !out.contains("flypack-access-rollback"),
        "{out}"
    );

    // A second run on the rotated unit (reached with its new key) changes nothing.
    let (ok, o, _) = rotate(&[
        "--limit".into(),
        "fp-demo-01".into(),
        "-e".into(),
        format!("ansible_ssh_private_key_file={}", new_key.display()),
    ]);
    assert!(ok && o.contains("changed=0"), "a second rotation: {o}");
}

fn mkdir(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir(&d).unwrap();
    d
}
