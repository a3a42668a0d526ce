//! The playbooks under `ansible/`, the way the web app's Jobs page runs them:
//! everything passes `ansible-lint` (production profile) and a syntax check,
//! and the diagnostics bundle is made for real through ansible-runner on this
//! machine, with the job spec the web app builds (its inventory, extra vars
//! and ANSIBLE_CONFIG). On a unit the same playbook reads the unit's own
//! journal, QA report and containers; here it reads this machine's, and what
//! is missing (no firstboot, no QA report) must be recorded, never fatal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flypack_e2e::stand_in;
use flypack_web::actions::{playbook_job, playbooks, playbooks_in};
use flypack_web::config::Config;
use flypack_web::jobs::{Job, JobState, Jobs};

fn ansible_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ansible")
        .canonicalize()
        .unwrap()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (.ci/deps installs ansible-core, ansible-lint, python3-ansible-runner)")
    });
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Asserts that a diagnostics job succeeded, that ansible-runner's events
/// reached its stream task by task, and that its bundle is among the job's
/// files (what the web app offers for download) holding `wants`; returns
/// the bundle's path.
fn assert_bundle_made(job: &Job, wants: &[&str]) -> PathBuf {
    let events = job.events_from(0);
    let text: Vec<String> = events
        .iter()
        .map(|e| format!("{} {:?} {}", e.stream, e.event, e.text))
        .collect();
    assert_eq!(job.meta().state, JobState::Succeeded, "{}", text.join("\n"));
    assert!(
        events
            .iter()
            .any(|e| e.stream == "ansible" && e.event.as_deref() == Some("runner_on_ok")),
        "{}",
        text.join("\n")
    );
    let files = job.files();
    let bundle = files
        .iter()
        .find(|(n, _)| n.starts_with("diagnostics-") && n.ends_with(".tar.gz"))
        .unwrap_or_else(|| panic!("no bundle among {files:?}"));
    let path = job.dir().join("files").join(&bundle.0);
    let (ok, list) = run(Command::new("tar").arg("tzf").arg(&path));
    assert!(ok, "{list}");
    for want in wants {
        assert!(
            list.lines().any(|l| l.ends_with(want)),
            "{want} not in the bundle:\n{list}"
        );
    }
    path
}

#[test]
fn every_playbook_passes_ansible_lint_and_a_syntax_check() {
    let dir = ansible_dir();
    // From the folder, as a user runs it: ansible.cfg's roles_path applies.
    let (ok, out) = run(Command::new("ansible-lint")
        .args(["--offline", "--profile", "production", "--nocolor"])
        .current_dir(&dir));
    assert!(ok, "ansible-lint:\n{out}");
    assert!(out.contains("Passed with production profile"), "{out}");
    // The inner playbooks (the unit's Jobs page) and the outer ones (the
    // laptop's, in playbooks/fleet/, which the Jobs page does not list).
    for (sub, at_least) in [("playbooks", 4), ("playbooks/fleet", 2)] {
        let mut n = 0;
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yml") {
                let (ok, out) = run(Command::new("ansible-playbook")
                    .args(["--syntax-check", "-i", "localhost,"])
                    .arg(&p)
                    .current_dir(&dir));
                assert!(ok, "{}: {out}", p.display());
                n += 1;
            }
        }
        assert!(n >= at_least, "{n} playbooks in {sub}");
    }
    let jobs_page = playbooks_in(&dir.join("playbooks"));
    for outer in playbooks_in(&dir.join("playbooks/fleet")) {
        assert!(
            !jobs_page.contains(&outer),
            "{outer} is the laptop's, not on a unit's Jobs page"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_diagnostics_bundle_is_made_through_ansible_runner_as_the_web_app_runs_it() {
    let dir = ansible_dir();
    let scratch = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.jobs.playbooks_dir = dir.join("playbooks");
    cfg.jobs.ansible_cfg = dir.join("ansible.cfg");
    cfg.jobs.command_prefix = vec![];
    cfg.jobs.run_as_root = false;
    assert!(
        playbooks(&cfg).iter().any(|p| p == "diagnostics.yml"),
        "{:?}",
        playbooks(&cfg)
    );
    let jobs = Jobs::load(scratch.path(), 10, Duration::from_secs(5)).unwrap();
    let spec = playbook_job(&cfg, Path::new("/"), "diagnostics.yml").unwrap();
    assert!(!spec.mutating, "diagnostics only reads: it may run beside a change");
    let job = jobs.start(spec, "engineer").unwrap();
    jobs.wait_idle().await;
    let path = assert_bundle_made(
        &job,
        &[
            "journal.txt",
            "status.json",
            "network/ip-addr.json",
            "network/ip-route.json",
            "network/nft-ruleset.txt",
            "containers/ps.txt",
            "files/etc_os-release",
        ],
    );
    // A source that is missing is written down in the bundle, with why.
    let (ok, status) = run(Command::new("tar")
        .arg("xzOf")
        .arg(&path)
        .arg("--wildcards")
        .arg("*/status.json"));
    assert!(ok, "{status}");
    if Command::new("firstboot").arg("--version").output().is_err() {
        assert!(status.contains("# firstboot status --json: not found"), "{status}");
    }
}

/// The bundle's module (roles/diagnostics/library/flypack_bundle.py) makes
/// tar members only inside the bundle's folder, reads only regular files
/// (a FIFO would hang the job), and leaves nothing behind when it refuses.
#[test]
fn the_bundle_refuses_paths_that_leave_it_and_reads_no_fifo() {
    let dir = ansible_dir();
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("out");
    let root = scratch.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\n").unwrap();
    let (ok, o) = run(Command::new("mkfifo").arg(root.join("etc/fifo")));
    assert!(ok, "{o}");
    let playbook = |vars: &str| {
        run(Command::new("timeout")
            .args(["120", "ansible-playbook", "playbooks/diagnostics.yml", "-e"])
            .arg(format!(
                "flypack_artifacts_dir={} flypack_root={}",
                out.display(),
                root.display()
            ))
            .args(["-e", vars])
            .current_dir(&dir))
    };
    for (vars, why) in [
        (
            r#"{"diagnostics_commands": [{"file": "../../escaped", "argv": ["true"]}]}"#,
            "file must be a relative path inside the bundle",
        ),
        (
            r#"{"diagnostics_commands": [{"file": "/etc/cron.d/x", "argv": ["true"]}]}"#,
            "file must be a relative path inside the bundle",
        ),
        (
            r#"{"diagnostics_files": ["../../etc/shadow"]}"#,
            "expected a path relative to root",
        ),
        (
            r#"{"diagnostics_commands": [{"file": "x", "argv": "id; reboot"}]}"#,
            "argv must be a non-empty list of strings",
        ),
    ] {
        let (ok, o) = playbook(vars);
        assert!(!ok && o.contains(why), "{vars}: {o}");
        assert!(
            !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
            "{vars}: something was written"
        );
    }
    let (ok, o) = playbook(
        r#"{"diagnostics_files": ["etc/fifo", "etc/os-release"], "diagnostics_commands": [{"file": "id.txt", "argv": ["id", "-u"]}]}"#,
    );
    assert!(ok, "{o}");
    assert!(o.contains("etc/fifo: not a regular file"), "{o}");
    let bundles: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(bundles.len(), 1, "one bundle and no partial file: {bundles:?}");
    let (ok, list) = run(Command::new("tar").arg("tzvf").arg(&bundles[0]));
    assert!(ok, "{list}");
    assert!(
        list.contains("/files/etc_os-release") && list.contains("/id.txt"),
        "{list}"
    );
    assert!(!list.contains("fifo") && !list.contains(".."), "{list}");
}

/// As on a unit: the job asks the root helper (`flypack-web privileged
/// playbook`), which runs the playbook from its own folder with an input it
/// lays out itself; the artifacts come back into the job's folder. The
/// helper serves here on a socket in a temporary root whose Ansible folder
/// is this repository's.
#[tokio::test(flavor = "multi_thread")]
async fn the_diagnostics_bundle_is_made_through_the_root_helper() {
    use flypack_web::privileged::{ANSIBLE_DIR, Programs, RUNS, serve};
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("root");
    let ansible = root.join(ANSIBLE_DIR);
    std::fs::create_dir_all(ansible.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(ansible_dir(), &ansible).unwrap();
    let sock = scratch.path().join("helper.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let helper_root = root.clone();
    let helper = std::thread::spawn(move || {
        let (c, _) = listener.accept().unwrap();
        let programs = Programs {
            firstboot: PathBuf::from("/bin/false"),
            ansible_runner: PathBuf::from("ansible-runner"),
        };
        serve(&helper_root, &programs, c.try_clone().unwrap(), c).unwrap();
    });

    let mut cfg = Config::default();
    cfg.jobs.playbooks_dir = ansible.join("playbooks");
    assert!(cfg.jobs.run_as_root, "the default is the root helper");
    let mut spec = playbook_job(&cfg, &root, "diagnostics.yml").unwrap();
    spec.argv[0] = env!("CARGO_BIN_EXE_flypack-web").into();
    spec.argv
        .extend(["--socket".into(), sock.to_string_lossy().into_owned()]);
    let jobs = Jobs::load(&scratch.path().join("web"), 10, Duration::from_secs(5)).unwrap();
    let job = jobs.start(spec, "engineer").unwrap();
    jobs.wait_idle().await;
    helper.join().unwrap();
    // The run was laid out by the helper, under its own root.
    let runs: Vec<_> = std::fs::read_dir(root.join(RUNS)).unwrap().collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    // The bundle came back into the job's files.
    assert_bundle_made(
        &job,
        &[
            "journal.txt",
            "status.json",
            "network/ip-addr.json",
            "containers/ps.txt",
        ],
    );
}

/// Runs a playbook from the Ansible folder with extra vars; returns whether
/// it succeeded and its output.
fn playbook(name: &str, vars: &[String]) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "ansible-playbook"])
        .arg(format!("playbooks/{name}"))
        .current_dir(ansible_dir());
    for v in vars {
        cmd.args(["-e", v]);
    }
    run(&mut cmd)
}

/// The QA playbook keeps the report with the job, reports no change (QA is
/// a check), and fails on NO-GO naming the failed check and its fix. The
/// real firstboot runs it in the firewall end-to-end test; here a stand-in
/// prints a report.
#[test]
fn the_qa_playbook_keeps_the_report_and_fails_on_no_go_with_the_fix() {
    const QA: &str = "qa --format json";
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let report = |verdict: &str, outcome: &str| {
        serde_json::json!({
            "schema": 1, "hostname": "fp-test-01", "time": "now", "version": "0",
            "verdict": verdict,
            "checks": [{"id": "net.link", "title": "links up", "severity": "critical",
                        "outcome": outcome, "evidence": "media: no carrier",
                        "fix": "plug the media cable into port 2"}]
        })
        .to_string()
    };
    let go = stand_in(scratch.path(), "go", QA, &report("GO", "pass"), 0);
    let (ok, o) = playbook(
        "qa.yml",
        &[
            format!("qa_firstboot={}", go.display()),
            format!("flypack_artifacts_dir={}", out.display()),
        ],
    );
    assert!(ok && o.contains("fp-test-01: GO") && o.contains("changed=0"), "{o}");
    let kept = std::fs::read_to_string(out.join("qa-fp-test-01.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&kept).unwrap()["verdict"],
        "GO"
    );
    let no_go = stand_in(scratch.path(), "nogo", QA, &report("NO-GO", "fail"), 1);
    let (ok, o) = playbook("qa.yml", &[format!("qa_firstboot={}", no_go.display())]);
    assert!(
        !ok && o.contains("fp-test-01: NO-GO")
            && o.contains("net.link (media: no carrier; fix: plug the media cable into port 2)"),
        "{o}"
    );
    // An exit code QA never gives is a failure of the run itself.
    let broken = stand_in(scratch.path(), "broken", QA, "Segmentation fault", 139);
    let (ok, o) = playbook("qa.yml", &[format!("qa_firstboot={}", broken.display())]);
    assert!(!ok && o.contains("\"rc\": 139"), "{o}");
}

/// The stack playbook reports a change only when `firstboot stack up` did
/// something to a service, and fails when a critical service is not
/// healthy (its exit 1).
#[test]
fn the_stack_playbook_reports_a_change_only_when_a_service_was_touched() {
    const STACK: &str = "stack --json up";
    let scratch = tempfile::tempdir().unwrap();
    let states = |vm: &str, action: &str| {
        serde_json::json!([
            {"name": "victoriametrics", "state": vm, "critical": true, "container": "abc", "action": action},
            {"name": "node-exporter", "state": "healthy", "critical": true, "container": "def", "action": "unchanged"}
        ])
        .to_string()
    };
    for (name, vm, action, code, changed) in [
        ("same", "healthy", "unchanged", 0, "changed=0"),
        ("fixed", "healthy", "recreated", 0, "changed=1"),
    ] {
        let fb = stand_in(scratch.path(), name, STACK, &states(vm, action), code);
        let (ok, o) = playbook("stack.yml", &[format!("stack_firstboot={}", fb.display())]);
        assert!(ok && o.contains(changed), "{name}: {o}");
        assert!(o.contains(&format!("victoriametrics: {vm} ({action})")), "{o}");
    }
    let sick = stand_in(scratch.path(), "sick", STACK, &states("unhealthy", "started"), 1);
    let (ok, o) = playbook("stack.yml", &[format!("stack_firstboot={}", sick.display())]);
    assert!(!ok && o.contains("unhealthy"), "{o}");
}

/// The housekeeping playbook removes all but the newest backups (the real
/// `firstboot backup prune`, under a root of its own) and says when the
/// journal gave space back; a second run changes nothing; a bound of 0
/// backups is refused before anything is removed.
#[test]
fn the_maintenance_playbook_prunes_old_backups_once() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("root");
    let backups = root.join("var/backups/flypack");
    std::fs::create_dir_all(&backups).unwrap();
    // Nine archives, a day apart, and a file that is no archive.
    let day = 86_400;
    let now = std::time::SystemTime::now();
    for i in 0..9u64 {
        let p = backups.join(format!("fp-test-01-{i}.flypack-backup.age"));
        std::fs::write(&p, "sealed").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(now - Duration::from_secs((9 - i) * day)).unwrap();
    }
    std::fs::write(backups.join("notes.txt"), "keep me").unwrap();
    // journalctl reports on stderr; this one freed space once.
    let journalctl = scratch.path().join("journalctl");
    let marker = scratch.path().join("vacuumed");
    std::fs::write(
        &journalctl,
        format!(
            "#!/bin/sh\nif [ -e '{m}' ]; then echo 'Vacuuming done, freed 0B of archived journals from /var/log/journal.' >&2; \
             else touch '{m}'; echo 'Vacuuming done, freed 120.0M of archived journals from /var/log/journal.' >&2; fi\n",
            m = marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&journalctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vars = |extra: &str| {
        vec![format!(
            "flypack_root={} maintenance_journalctl={} maintenance_firstboot={} {extra}",
            root.display(),
            journalctl.display(),
            flypack_e2e::bins().firstboot.display()
        )]
    };
    let left = || {
        let mut v: Vec<String> = std::fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };

    let (ok, o) = playbook("maintenance.yml", &vars("maintenance_backup_keep=0"));
    assert!(!ok && o.contains("maintenance_backup_keep must be 1 or more"), "{o}");
    assert_eq!(left().len(), 10, "nothing removed on a refused bound");

    let (ok, o) = playbook("maintenance.yml", &vars(""));
    assert!(ok && o.contains("changed=2"), "the journal and the backups: {o}");
    assert!(
        o.contains("removed fp-test-01-0.flypack-backup.age, fp-test-01-1.flypack-backup.age"),
        "the job says which went: {o}"
    );
    let want: Vec<String> = (2..9)
        .map(|i| format!("fp-test-01-{i}.flypack-backup.age"))
        .chain(["notes.txt".to_string()])
        .collect();
    assert_eq!(left(), want, "the 7 newest archives and the other file stay");

    let (ok, o) = playbook("maintenance.yml", &vars(""));
    assert!(ok && o.contains("changed=0"), "a second run: {o}");
    assert_eq!(left(), want);
}
