//! The outer playbooks (`ansible/playbooks/fleet/`) from the laptop's side,
//! without guests: the inventory is the one `builder inventory` writes from
//! fleet files; a second inventory says how this machine reaches each
//! "unit" (a local connection with a stand-in firstboot answering in its
//! real syntax, or an SSH port on 127.0.0.1 where nothing listens). The
//! same playbooks run against two booted units in `fleet.rs`.
//!
//! What a unit sends is treated as an attacker's: markup, Jinja and control
//! characters in its status and QA report are written as text in the
//! report and run nothing on the laptop; a backup that does not verify, or
//! is another unit's, is refused and removed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use flypack_e2e::*;
use flypack_engine::backup::{self, FleetKey, Manifest, Writer};
use serde_json::{Value, json};

/// A second flypack, one unit, reached over SSH in these tests.
const TRUCK_B: &str = r#"
version = 1
flypack = "truck-b"
[[units]]
serial = "FP-DEC-0007"
[units.config]
version = 1
hostname = "fp-dec-07"
role = "decoder"
[[units.config.interfaces]]
label = "mgmt"
match = { name = "eno1" }
addresses = ["10.20.0.7/24"]
"#;

fn ansible_dir() -> PathBuf {
    repo().join("ansible")
}

/// The inventory `builder inventory` writes for the example fleet
/// (truck-a: fp-enc-01, fp-mon-01) and truck-b (fp-dec-07).
fn generated_inventory(dir: &Path) -> PathBuf {
    let a = dir.join("truck-a.toml");
    std::fs::copy(repo().join("images/fleet.example.toml"), &a).unwrap();
    let b = dir.join("truck-b.toml");
    std::fs::write(&b, TRUCK_B).unwrap();
    let inv = dir.join("inventory.yml");
    let r = run(builder().arg("inventory").arg(&a).arg(&b).arg("--out").arg(&inv));
    assert_eq!(r.code, 0, "{}", r.stderr);
    inv
}

/// Runs a fleet playbook with both inventories; returns (success, output).
fn playbook(name: &str, inventories: &[&Path], args: &[String]) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["300", "ansible-playbook"])
        .arg(format!("playbooks/fleet/{name}"))
        .current_dir(ansible_dir())
        // The "units" are this machine, reached as root without sudo.
        .args(["-e", "ansible_become=false"]);
    for i in inventories {
        cmd.arg("-i").arg(i);
    }
    cmd.args(args);
    let o = cmd.output().expect("ansible-playbook (.ci/deps installs ansible-core)");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn status(hostname: &str, verdict: &str, reasons: &[&str]) -> String {
    json!({"schema": 1, "verdict": verdict, "version": "test", "hostname": hostname, "time": "2026-12-06T00:00:00Z",
           "provisioning": "done", "stages": [], "reasons": reasons})
    .to_string()
}

fn qa(hostname: &str, verdict: &str, outcome: &str, evidence: &str) -> String {
    json!({"schema": 1, "hostname": hostname, "time": "t", "version": "test", "verdict": verdict,
           "checks": [
               {"id": "net.link", "title": "links up", "severity": "critical", "outcome": outcome,
                "evidence": evidence, "fix": "plug the media cable into port 2"},
               {"id": "time.sync", "title": "time", "severity": "major", "outcome": "pass", "evidence": "synchronised"}]})
    .to_string()
}

/// Fleet status across two flypacks: one unit GO, one NO-GO whose status
/// and QA report carry markup, a Jinja expression that would run a command
/// on the laptop, and control characters; one unit that does not answer.
/// The report names all three, shows the unit's text as text, parses as
/// JUnit, and the run fails; limited to the GO unit it passes.
#[test]
fn fleet_status_reports_every_unit_and_runs_nothing_a_unit_sends() {
    let d = tempfile::tempdir().unwrap();
    let inv = generated_inventory(d.path());
    let pwned = d.path().join("pwned");
    let jinja = format!("{{{{ lookup('pipe', 'touch {}') }}}}", pwned.display());
    let hostile = format!("<script>alert(1)</script> {jinja} \u{1}bell");
    let fb_go = stand_in(d.path(), "fb-go", "status --json", &status("fp-enc-01", "GO", &[]), 0);
    let fb_nogo = stand_in(
        d.path(),
        "fb-nogo",
        "status --json",
        &status("fp-mon-01", "NO-GO", &["QA: critical check net.link failed", &hostile]),
        1,
    );
    let qa_go = d.path().join("qa-go.json");
    std::fs::write(&qa_go, qa("fp-enc-01", "GO", "pass", "2 links up")).unwrap();
    let qa_nogo = d.path().join("qa-nogo.json");
    std::fs::write(&qa_nogo, qa("fp-mon-01", "NO-GO", "fail", &hostile)).unwrap();
    // Each unit's vmalert, stood in for by files served on 127.0.0.1: none
    // firing on the GO unit (vmalert 1.79 says null), and on the NO-GO one
    // a firing alert whose summary is hostile (labels come from the
    // network) and a pending one.
    let web = d.path().join("vmalert");
    std::fs::create_dir(&web).unwrap();
    std::fs::write(web.join("go.json"), r#"{"status":"success","data":{"alerts":null}}"#).unwrap();
    std::fs::write(
        web.join("nogo.json"),
        json!({"status": "success", "data": {"alerts": [
            {"name": "McastGroupMissing", "state": "pending", "labels": {"severity": "critical"},
             "annotations": {"summary": "group 239.1.1.2 quiet"}, "activeAt": "2026-12-06T10:00:00Z"},
            {"name": "SrtPacketLoss", "state": "firing", "labels": {"severity": "warning"},
             "annotations": {"summary": hostile}, "activeAt": "2026-12-06T09:59:00Z"}]}})
        .to_string(),
    )
    .unwrap();
    let port = free_port();
    let _server = Kill(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(&web)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    let conn = d.path().join("connections.yml");
    let local = |fb: &Path, q: &Path, alerts: &str| {
        json!({"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
               "fleet_status_firstboot": fb, "fleet_status_qa_report": q,
               "fleet_status_alerts_url": format!("http://127.0.0.1:{port}/{alerts}")})
    };
    // YAML is a superset of JSON.
    let closed = free_port();
    std::fs::write(
        &conn,
        json!({"all": {"hosts": {
            "fp-enc-01": local(&fb_go, &qa_go, "go.json"),
            "fp-mon-01": local(&fb_nogo, &qa_nogo, "nogo.json"),
            "fp-dec-07": {"ansible_host": "127.0.0.1", "ansible_port": closed,
                          "ansible_ssh_common_args": "-o ConnectTimeout=5 -o StrictHostKeyChecking=no"}}}})
        .to_string(),
    )
    .unwrap();
    let out = d.path().join("report");
    let dest = format!("fleet_status_report_dir={}", out.display());

    let (ok, o) = playbook("status.yml", &[&inv, &conn], &["-e".into(), dest.clone()]);
    assert!(!ok, "a NO-GO unit and an unreachable one fail the run: {o}");
    assert!(o.contains("2 of 3 units are not GO"), "{o}");
    assert!(!pwned.exists(), "a unit's text ran a command on the laptop: {o}");

    let report: Value = serde_json::from_slice(&std::fs::read(out.join("fleet-status.json")).unwrap()).unwrap();
    let units: Vec<(String, String, String)> = report["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["flypack"].as_str().unwrap().to_string(),
                u["host"].as_str().unwrap().to_string(),
                u["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = |f: &str, h: &str, v: &str| (f.to_string(), h.to_string(), v.to_string());
    assert_eq!(
        units,
        vec![
            want("truck-a", "fp-enc-01", "GO"),
            want("truck-a", "fp-mon-01", "NO-GO"),
            want("truck-b", "fp-dec-07", "UNREACHABLE")
        ]
    );
    let alerts = |i: usize| -> Vec<(String, String)> {
        report["units"][i]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["name"].as_str().unwrap().into(), a["state"].as_str().unwrap().into()))
            .collect()
    };
    assert_eq!(alerts(0), vec![]);
    assert_eq!(report["units"][0]["alerts_problem"], "");
    assert_eq!(
        alerts(1),
        vec![
            ("SrtPacketLoss".to_string(), "firing".to_string()),
            ("McastGroupMissing".to_string(), "pending".to_string())
        ],
        "firing first"
    );
    let html = std::fs::read_to_string(out.join("fleet-status.html")).unwrap();
    assert!(html.contains("1 of 3 units GO"), "{html}");
    assert!(html.contains("1 unit(s) with a firing alert"), "{html}");
    assert!(html.contains("firing, warning: <b>SrtPacketLoss</b>"), "{html}");
    assert!(
        !html.contains("<script>") && html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("plug the media cable into port 2"),
        "the fix is shown: {html}"
    );
    assert!(
        !html.contains('\u{1}') && html.contains("\u{fffd}bell"),
        "control characters replaced"
    );
    assert!(html.contains("lookup(&#x27;pipe&#x27;"), "the Jinja stays text: {html}");
    // JUnit that a CI reads: Python's own parser, and the failures counted.
    let xml = out.join("fleet-status.xml");
    let check = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             r = E.parse(sys.argv[1]).getroot()\n\
             print(' '.join('%s:%s/%s' % (s.get('name'), s.get('failures'), s.get('tests')) for s in r))",
        ])
        .arg(&xml)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "fp-enc-01:0/4 fp-mon-01:3/4 fp-dec-07:1/1"
    );

    // A unit whose vmalert does not answer (its stack down) stays GO; the
    // report says its alerts are unknown and why.
    let (ok, o) = playbook(
        "status.yml",
        &[&inv, &conn],
        &[
            "-e".into(),
            dest,
            "-e".into(),
            format!("fleet_status_alerts_url=http://127.0.0.1:{closed}/api/v1/alerts"),
            "--limit".into(),
            "fp-enc-01".into(),
        ],
    );
    assert!(ok && o.contains("fp-enc-01: GO"), "{o}");
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("fleet-status.json")).unwrap()).unwrap();
    let problem = report["units"][0]["alerts_problem"].as_str().unwrap();
    assert!(
        problem.contains("vmalert did not answer") && problem.contains("stack"),
        "{problem}"
    );
}

/// An archive sealed to `key` whose manifest names `hostname`.
fn archive(path: &Path, hostname: &str, key: &FleetKey) {
    let mut w = Writer::new(File::create(path).unwrap(), &key.unit_part()).unwrap();
    w.add_bytes("identity/etc/hostname", format!("{hostname}\n").as_bytes(), 0o644)
        .unwrap();
    w.finish(Manifest {
        schema: backup::SCHEMA,
        image: "flypack".into(),
        hostname: hostname.into(),
        created: "2026-12-06T00:00:00Z".into(),
        version: "test".into(),
        volumes: Default::default(),
        entries: vec![],
    })
    .unwrap();
}

/// Backup pull: a unit's newest archive is fetched and verified with the
/// fleet key (a second run fetches nothing); one made by `firstboot backup`
/// on the spot (its real syntax) too; an archive that is another unit's, or
/// altered, or none at all, is refused with the reason, and nothing
/// unverified is left on the laptop.
#[test]
fn backup_pull_keeps_only_verified_backups_of_the_unit_they_came_from() {
    let d = tempfile::tempdir().unwrap();
    let inv = generated_inventory(d.path());
    let key_path = d.path().join("fleet-backup.key");
    let r = run(builder().args(["backup-key", "new", "--out"]).arg(&key_path));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let key = FleetKey::load(&key_path).unwrap();
    let unit_dir = |h: &str| {
        let p = d.path().join("units").join(h);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    // fp-enc-01: an old archive and a newer one (mtime decides).
    let enc = unit_dir("fp-enc-01");
    archive(
        &enc.join("fp-enc-01-20261201T000000Z.flypack-backup.age"),
        "fp-enc-01",
        &key,
    );
    let old = File::options()
        .write(true)
        .open(enc.join("fp-enc-01-20261201T000000Z.flypack-backup.age"))
        .unwrap();
    old.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(86_400))
        .unwrap();
    let newest = enc.join("fp-enc-01-20261206T000000Z.flypack-backup.age");
    archive(&newest, "fp-enc-01", &key);
    // fp-mon-01 holds fp-enc-01's backup under its own name.
    let mon = unit_dir("fp-mon-01");
    archive(
        &mon.join("fp-mon-01-20261206T000000Z.flypack-backup.age"),
        "fp-enc-01",
        &key,
    );
    // fp-dec-07's archive is altered after sealing.
    let dec = unit_dir("fp-dec-07");
    let altered = dec.join("fp-dec-07-20261206T000000Z.flypack-backup.age");
    archive(&altered, "fp-dec-07", &key);
    let mut bytes = std::fs::read(&altered).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&altered, bytes).unwrap();
    let empty = unit_dir("fp-empty");
    let _ = empty;

    let local = |dir: &Path| {
        json!({"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
               "ansible_user": "root", "backup_pull_unit_dir": dir})
    };
    let conn = d.path().join("connections.yml");
    std::fs::write(
        &conn,
        json!({"all": {"hosts": {"fp-enc-01": local(&enc), "fp-mon-01": local(&mon), "fp-dec-07": local(&dec)}}})
            .to_string(),
    )
    .unwrap();
    let laptop = d.path().join("laptop");
    let vars = |take: bool| {
        vec![
            "-e".to_string(),
            format!(
                "backup_pull_dir={} backup_pull_key={} backup_pull_builder={} backup_pull_take={take}",
                laptop.display(),
                key_path.display(),
                bins().builder.display()
            ),
        ]
    };
    let pulled = |h: &str| names(&laptop.join(h));

    // No key: refused before any unit is touched.
    let (ok, o) = playbook(
        "backup-pull.yml",
        &[&inv, &conn],
        &["-e".into(), format!("backup_pull_dir={}", laptop.display())],
    );
    assert!(
        !ok && o.contains("backup_pull_key must name the fleet's backup key"),
        "{o}"
    );
    assert!(!laptop.exists());

    let (ok, o) = playbook("backup-pull.yml", &[&inv, &conn], &vars(false));
    assert!(!ok, "{o}");
    assert!(o.contains("fp-enc-01: ") && o.contains("verified"), "{o}");
    assert_eq!(
        pulled("fp-enc-01"),
        vec!["fp-enc-01-20261206T000000Z.flypack-backup.age"]
    );
    assert_eq!(
        std::fs::read(
            laptop
                .join("fp-enc-01")
                .join("fp-enc-01-20261206T000000Z.flypack-backup.age")
        )
        .unwrap(),
        std::fs::read(&newest).unwrap()
    );
    assert!(o.contains("is a backup of fp-enc-01"), "another unit's backup: {o}");
    assert!(
        o.contains("fp-dec-07-20261206T000000Z.flypack-backup.age was refused and removed"),
        "{o}"
    );
    assert_eq!(pulled("fp-mon-01"), Vec::<String>::new(), "nothing unverified is kept");
    assert_eq!(pulled("fp-dec-07"), Vec::<String>::new(), "nothing unverified is kept");

    // Pulled again: nothing new to fetch.
    let mut again = vars(false);
    again.extend(["--limit".into(), "fp-enc-01".into()]);
    let (ok, o) = playbook("backup-pull.yml", &[&inv, &conn], &again);
    assert!(ok && o.contains("changed=0"), "{o}");

    // A unit with no backup: the fix is named.
    std::fs::write(
        &conn,
        json!({"all": {"hosts": {"fp-enc-01": local(&empty)}}}).to_string(),
    )
    .unwrap();
    let (ok, o) = playbook("backup-pull.yml", &[&inv, &conn], &again);
    assert!(
        !ok && o.contains("fp-enc-01 has no backup in") && o.contains("firstboot backup"),
        "{o}"
    );

    // Taking one now, as firstboot does it (its own syntax).
    let made = d.path().join("made.age");
    archive(&made, "fp-enc-01", &key);
    let fb = script(
        &d.path().join("fb-backup"),
        &format!(
            "[ \"$*\" = 'backup --out {dir} --json' ] || {{ echo \"error: unexpected arguments: $*\" >&2; exit 2; }}\n\
             cp '{made}' '{dir}/fp-enc-01-20261207T000000Z.flypack-backup.age'\necho '{{}}'\n",
            dir = empty.display(),
            made = made.display()
        ),
    );
    let mut take = vars(true);
    take.extend([
        "--limit".into(),
        "fp-enc-01".into(),
        "-e".into(),
        format!("backup_pull_firstboot={}", fb.display()),
    ]);
    let (ok, o) = playbook("backup-pull.yml", &[&inv, &conn], &take);
    assert!(ok, "{o}");
    assert_eq!(
        pulled("fp-enc-01"),
        vec![
            "fp-enc-01-20261206T000000Z.flypack-backup.age",
            "fp-enc-01-20261207T000000Z.flypack-backup.age"
        ]
    );
}

/// The rolling update's checks before it touches a unit (the update itself
/// runs in QEMU in `restore.rs`): relative paths refused; units already on
/// the image skipped, which is how a second run changes nothing; a unit of
/// another profile refused (its backup would not restore into the image),
/// which stops the rollout before the next unit. The "units" are this
/// machine, each with a manifest of its own.
#[test]
fn image_update_skips_a_unit_on_the_image_and_refuses_another_profile() {
    let d = tempfile::tempdir().unwrap();
    let inv = generated_inventory(d.path());
    let key = d.path().join("fleet-backup.key");
    let r = run(builder().args(["backup-key", "new", "--out"]).arg(&key));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let image = d.path().join("flypack.img");
    std::fs::write(&image, b"").unwrap();
    let manifest =
        |name: &str, digest: &str| json!({"name": name, "plan_digest": digest, "built_at": "2026-12-06T00:00:00Z"});
    std::fs::write(
        d.path().join("flypack.manifest.json"),
        manifest("flypack", "new").to_string(),
    )
    .unwrap();
    let unit = |h: &str, name: &str, digest: &str| {
        let p = d.path().join(format!("{h}.manifest.json"));
        std::fs::write(&p, manifest(name, digest).to_string()).unwrap();
        json!({"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
               "ansible_user": "root", "image_update_unit_manifest": p})
    };
    // A unit's manifest is the unit's word: a name that is a template
    // stays text on the laptop.
    let marker = d.path().join("templated");
    let hostile = format!("{{{{ lookup('pipe', 'touch {}') }}}}", marker.display());
    let conn = d.path().join("connections.yml");
    std::fs::write(
        &conn,
        json!({"all": {"hosts": {"fp-dec-07": unit("fp-dec-07", &hostile, "old"),
                                  "fp-enc-01": unit("fp-enc-01", "flypack", "new"),
                                  "fp-mon-01": unit("fp-mon-01", "flypack", "new")}}})
        .to_string(),
    )
    .unwrap();
    let work = d.path().join("work");
    let vars = |image: &str| {
        vec![
            "-e".to_string(),
            format!(
                "image_update_image={image} image_update_key={} image_update_work_dir={} image_update_builder={}",
                key.display(),
                work.display(),
                bins().builder.display()
            ),
        ]
    };
    let (ok, o) = playbook("image-update.yml", &[&inv, &conn], &vars("flypack.img"));
    assert!(!ok && o.contains("as absolute paths"), "a relative image path: {o}");
    let image = image.display().to_string();
    // Units on the image already: nothing to do, nothing changed.
    let (ok, o) = playbook(
        "image-update.yml",
        &[&inv, &conn],
        &[vars(&image), vec!["--limit".into(), "fp-enc-01,fp-mon-01".into()]].concat(),
    );
    assert!(ok, "{o}");
    for h in ["fp-enc-01", "fp-mon-01"] {
        let r = recap(&o, h).unwrap_or_else(|| panic!("{h} not in the recap: {o}"));
        assert!(r.contains("changed=0") && r.contains("failed=0"), "{r}");
    }
    // One unit at a time, in the inventory's order: fp-dec-07 runs another
    // profile and is refused, and the rollout stops there.
    let (ok, o) = playbook("image-update.yml", &[&inv, &conn], &vars(&image));
    assert!(!ok, "{o}");
    assert!(
        o.contains("fp-dec-07 runs the {{ lookup(") && o.contains("its backup cannot be restored into it"),
        "another profile: {o}"
    );
    assert!(!marker.exists(), "a unit's manifest ran a command on the laptop: {o}");
    assert!(recap(&o, "fp-dec-07").is_some_and(|r| r.contains("failed=1")), "{o}");
    assert!(
        recap(&o, "fp-enc-01").is_none() && recap(&o, "fp-mon-01").is_none(),
        "the rollout went on after a refused unit: {o}"
    );
    assert!(!work.exists(), "nothing made on the laptop: {o}");
}

/// A scratch unit for the central password: a stack config and compose
/// file, a config in force without `[central]`, and a seed (FAT, made by
/// mkfs.vfat) holding the password the unit was imaged with. Returns the
/// root, the seed, and a firstboot that acts on them.
fn password_unit(dir: &Path, host: &str, seed_password: &str) -> (PathBuf, PathBuf, PathBuf) {
    let root = dir.join(host);
    let compose = "/usr/share/flypack/compose/docker-compose.yml";
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(at(compose).parent().unwrap()).unwrap();
    std::fs::write(at(compose), "services: {}\n").unwrap();
    std::fs::write(
        at(flypack_contracts::stack::STACK_CONFIG),
        json!({"project": "monitoring", "compose": compose, "profiles": [], "images": []}).to_string(),
    )
    .unwrap();
    std::fs::create_dir_all(at("/etc/flypack")).unwrap();
    std::fs::write(
        at("/etc/flypack/unit.toml"),
        format!("version = 1\nhostname = \"{host}\"\n"),
    )
    .unwrap();
    let seed = dir.join(format!("{host}.seed"));
    File::create(&seed).unwrap().set_len(16 << 20).unwrap();
    let o = Command::new("mkfs.vfat")
        .args(["-n", "FLYPACKSEED"])
        .arg(&seed)
        .output()
        .unwrap();
    assert!(o.status.success(), "mkfs.vfat: {}", String::from_utf8_lossy(&o.stderr));
    flypack_contracts::seed::write(
        &seed,
        0,
        16 << 20,
        &[(flypack_contracts::seed::CENTRAL_PASSWORD_FILE, seed_password.as_bytes())],
        &[],
    )
    .unwrap();
    let fb = script(
        &dir.join(format!("{host}-firstboot")),
        &format!(
            "exec '{}' --root '{}' --seed '{}' \"$@\"\n",
            bins().firstboot.display(),
            root.display(),
            seed.display()
        ),
    );
    (root, seed, fb)
}

/// The central password handed to a flypack's units in service: each unit
/// takes its own flypack's file (the other flypack's is not there: that
/// unit fails, naming the file, and is left as it was), keeps it over the
/// seed's old password (the record firstboot keeps says which one it
/// replaces), installs it for vmagent-central's user only, and a second
/// run changes nothing. The real firstboot, on scratch roots: these units'
/// configs have no `[central]`, so no vmagent-central is restarted (the
/// restart is `firstboot stack restart`'s, tested in `stack.rs`).
#[test]
fn central_password_goes_to_each_flypacks_units_and_outlives_the_seeds() {
    use firstboot::central::{HANDED, Handed, seed_digest};
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let inv = generated_inventory(d.path());
    let old = "seed-password-of-2026";
    let units: Vec<(&str, (PathBuf, PathBuf, PathBuf))> = ["fp-enc-01", "fp-mon-01", "fp-dec-07"]
        .into_iter()
        .map(|h| (h, password_unit(d.path(), h, old)))
        .collect();
    let conn = d.path().join("connections.yml");
    let hosts: serde_json::Map<String, Value> = units
        .iter()
        .map(|(h, (_, _, fb))| {
            (
                h.to_string(),
                json!({"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                       "central_password_firstboot": fb,
                       "central_password_unit_file": d.path().join(format!("{h}.pushed"))}),
            )
        })
        .collect();
    std::fs::write(&conn, json!({"all": {"hosts": hosts}}).to_string()).unwrap();
    let passwords = d.path().join("central-passwords");
    std::fs::create_dir(&passwords).unwrap();
    let new = "truck-a-password-of-2027";
    std::fs::write(passwords.join("truck-a.password"), format!("{new}\n")).unwrap();
    let vars = vec![
        "-e".to_string(),
        format!("central_password_dir={}", passwords.display()),
    ];

    let (ok, o) = playbook("central-password.yml", &[&inv, &conn], &vars);
    assert!(!ok, "truck-b has no password file: {o}");
    assert!(
        o.contains("fp-dec-07 is in flypack truck-b") && o.contains("truck-b.password does not exist"),
        "{o}"
    );
    assert!(!o.contains(new), "the password is never shown: {o}");
    for (h, (root, _, _)) in &units {
        let installed = root.join("usr/share/flypack/compose/central/password");
        let record = root.join(HANDED.trim_start_matches('/'));
        assert!(
            !d.path().join(format!("{h}.pushed")).exists(),
            "{h}: the pushed copy is removed"
        );
        if *h == "fp-dec-07" {
            assert!(!installed.exists() && !record.exists(), "{h} was not touched");
            continue;
        }
        assert_eq!(std::fs::read_to_string(&installed).unwrap(), new, "{h}");
        let m = std::fs::metadata(&installed).unwrap();
        assert_eq!(
            (m.mode() & 0o777, m.uid(), m.gid()),
            (0o400, 100, 101),
            "{h}: vmagent's alone"
        );
        let rec: Handed = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        assert_eq!(
            rec,
            Handed {
                password: new.into(),
                replaces_seed: Some(seed_digest(old))
            },
            "{h}"
        );
        assert_eq!(std::fs::metadata(&record).unwrap().mode() & 0o777, 0o600, "{h}");
    }
    assert!(o.contains("no [central]"), "the units say nothing is sent yet: {o}");

    let mut again = vars.clone();
    again.extend(["--limit".to_string(), "flypack_truck_a".to_string()]);
    let (ok, o) = playbook("central-password.yml", &[&inv, &conn], &again);
    assert!(ok, "{o}");
    for h in ["fp-enc-01", "fp-mon-01"] {
        assert!(
            o.lines()
                .any(|l| l.starts_with(h) && l.contains("changed=0") && l.contains("failed=0")),
            "{h}: a second run changes nothing: {o}"
        );
    }
}
