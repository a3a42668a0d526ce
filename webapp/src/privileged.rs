//! Privileged actions from an unprivileged service.
//!
//! The web app runs as its own user with `NoNewPrivileges=yes`, so `sudo`
//! cannot work from it. Its actions go instead to a root helper through a
//! unix socket that only the web app's group may open
//! (`flypack-web-privileged.socket`, one root process per connection,
//! `flypack-web privileged serve`). The helper trusts nothing it is sent:
//! it parses the request against the same allow-list as the web app
//! ([`Action::from_args`]), always runs `/usr/bin/firstboot` itself, and
//! streams firstboot's output and exit code back. A web app taken over by
//! an attacker can therefore run only the allow-listed actions.
//!
//! The web app reaches it through its command prefix
//! (`flypack-web privileged call --`), so a job's output and exit code are
//! those of firstboot, as with `sudo`.
//!
//! Playbooks (`flypack-web privileged playbook NAME`) run the same way: only
//! the playbook's name crosses the socket. The helper takes it from its own
//! root-owned folder ([`ANSIBLE_DIR`]), lays out ansible-runner's input
//! itself in a root-owned run folder ([`RUNS`]: the local inventory,
//! ansible.cfg, and no extra vars but the artifacts folder), streams
//! ansible-runner's events, and names the artifacts folder at the end; the
//! client copies the artifacts into the job's folder. Nothing the web app
//! writes reaches the run, so a web app taken over cannot make a playbook
//! run a command of its choosing.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::actions::Action;

/// The helper's socket (`webapp/systemd/flypack-web-privileged.socket`).
pub const SOCKET: &str = "/run/flypack-web-privileged.sock";
/// The program the helper runs; never taken from the request.
pub const FIRSTBOOT: &str = "/usr/bin/firstboot";
/// The web app's program (the client of the helper).
pub const WEB_APP: &str = "/usr/bin/flypack-web";
/// The playbooks the helper runs (`playbooks/`) and their `ansible.cfg`,
/// under the root it serves: root's, from the image.
pub const ANSIBLE_DIR: &str = "usr/share/flypack/ansible";
/// The helper's playbook runs, under the root it serves (root's; the web
/// app's group may read them, to copy the artifacts).
pub const RUNS: &str = "var/lib/flypack/ansible-runs";
/// Runs kept (the oldest are removed when a run starts).
const KEEP_RUNS: usize = 10;
/// The web app's group (may read the runs' artifacts).
const WEB_GROUP: &str = "flypack-web";
/// A request is a few arguments: anything longer is refused unread.
const MAX_REQUEST: u64 = 64 * 1024;

/// What the web app asks: firstboot's arguments, or a playbook's name.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    playbook: Option<String>,
}

/// The helper's programs.
#[derive(Debug, Clone)]
pub struct Programs {
    /// firstboot.
    pub firstboot: PathBuf,
    /// ansible-runner.
    pub ansible_runner: PathBuf,
}

/// What the helper answers, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    /// A line firstboot wrote to stdout.
    Stdout(String),
    /// A line firstboot wrote to stderr.
    Stderr(String),
    /// firstboot ended with this code (-1: killed by a signal).
    Exit(i32),
    /// The request is not an allowed action: why.
    Refused(String),
    /// A playbook's artifacts are in this folder (sent before its exit code).
    Files(String),
}

/// Exit code of `call` when the helper refused the request or cannot be reached.
pub const REFUSED: i32 = 126;

/// `flypack-web privileged call -- FIRSTBOOT ARGS...`: asks the helper to run
/// firstboot with ARGS (the program in `argv[0]` is ignored: the helper
/// runs its own), prints its output and returns its exit code.
pub fn call(socket: &Path, argv: &[String]) -> Result<i32> {
    let args = argv.get(1..).unwrap_or_default().to_vec();
    ask(socket, &Request { args, playbook: None }, None)
}

/// `flypack-web privileged playbook NAME --files-to DIR`: asks the helper to
/// run the playbook NAME from its own folder, prints ansible-runner's events,
/// copies the run's artifacts into DIR and returns ansible-runner's exit code.
pub fn playbook(socket: &Path, name: &str, files_to: &Path) -> Result<i32> {
    ask(
        socket,
        &Request {
            args: vec![],
            playbook: Some(name.to_string()),
        },
        Some(files_to),
    )
}

fn ask(socket: &Path, req: &Request, files_to: Option<&Path>) -> Result<i32> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the privileged helper at {}: is flypack-web-privileged.socket running \
             (systemctl status flypack-web-privileged.socket)?",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)
        .context("sending the request to the privileged helper")?;
    s.shutdown(std::net::Shutdown::Write).ok();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    for l in BufReader::new(s).lines() {
        let l = l.context("reading the privileged helper's answer")?;
        match serde_json::from_str::<Reply>(&l).with_context(|| format!("the helper's answer {l:?}"))? {
            Reply::Stdout(t) => writeln!(out, "{t}")?,
            Reply::Stderr(t) => writeln!(err, "{t}")?,
            Reply::Exit(code) => return Ok(code),
            Reply::Refused(why) => {
                eprintln!("refused by the privileged helper: {why}");
                return Ok(REFUSED);
            }
            Reply::Files(dir) => {
                if let Some(to) = files_to {
                    copy_artifacts(Path::new(&dir), to)?;
                }
            }
        }
    }
    bail!("the privileged helper ended without an exit code (see journalctl -u 'flypack-web-privileged@*')")
}

/// Copies the regular files of a run's artifacts folder into `to` (as the
/// web app's user: the client's side). Links and folders are skipped.
fn copy_artifacts(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("listing the artifacts in {}", from.display()))? {
        let e = e.with_context(|| format!("listing the artifacts in {}", from.display()))?;
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let dst = to.join(e.file_name());
        std::fs::copy(e.path(), &dst)
            .with_context(|| format!("copying {} to {}", e.path().display(), dst.display()))?;
    }
    Ok(())
}

/// `flypack-web privileged serve`: one connection on stdin and stdout
/// (systemd's `Accept=yes`). Refuses what the allow-list does not allow;
/// otherwise runs firstboot (or ansible-runner) and streams its output and
/// exit code.
pub fn serve(root: &Path, programs: &Programs, input: impl Read, mut output: impl Write) -> Result<()> {
    let mut req = String::new();
    BufReader::new(input.take(MAX_REQUEST))
        .read_line(&mut req)
        .context("reading the request")?;
    let mut send = |r: &Reply| -> std::io::Result<()> {
        let mut l = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        l.push(b'\n');
        output.write_all(&l)?;
        output.flush()
    };
    let parsed = if req.ends_with('\n') {
        serde_json::from_str::<Request>(&req)
            .map_err(|e| anyhow::anyhow!("not a request: {e}"))
            .and_then(|r| Job::parse(root, programs, r))
    } else {
        Err(anyhow::anyhow!(
            "the request is not one line of at most {MAX_REQUEST} bytes"
        ))
    };
    let job = match parsed {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("privileged helper: refused: {e:#}");
            send(&Reply::Refused(format!("{e:#}")))?;
            return Ok(());
        }
    };
    tracing::info!("privileged helper: {} ({})", job.name, crate::jobs::display(&job.argv));
    let mut child = Command::new(&job.argv[0])
        .args(&job.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", job.argv[0]))?;
    let (tx, rx) = std::sync::mpsc::channel::<Reply>();
    let pump = |from: Box<dyn Read + Send>, wrap: fn(String) -> Reply| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).map(|n| n > 0).unwrap_or(false) {
                let text = String::from_utf8_lossy(&buf).trim_end_matches('\n').to_string();
                if tx.send(wrap(text)).is_err() {
                    break;
                }
                buf.clear();
            }
        })
    };
    let threads = [
        pump(Box::new(child.stdout.take().expect("piped")), Reply::Stdout),
        pump(Box::new(child.stderr.take().expect("piped")), Reply::Stderr),
    ];
    drop(tx);
    // The action runs to its end even if the web app hangs up: a backup or a
    // network change half-done would be worse than one nobody watched.
    let mut listening = true;
    for r in rx {
        if listening && send(&r).is_err() {
            listening = false;
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let code = child
        .wait()
        .with_context(|| format!("waiting for {}", job.argv[0]))?
        .code()
        .unwrap_or(-1);
    tracing::info!("privileged helper: {} ended with {code}", job.name);
    if let Some(files) = &job.artifacts {
        if let Err(e) = share_with_web_app(root, files) {
            tracing::warn!("privileged helper: {e:#}");
        }
        if listening && send(&Reply::Files(files.to_string_lossy().into_owned())).is_err() {
            listening = false;
        }
    }
    if listening {
        send(&Reply::Exit(code))?;
    }
    Ok(())
}

/// What the helper runs for one request.
struct Job {
    /// The action's or playbook's name (the journal).
    name: String,
    /// The program and its arguments, all decided here.
    argv: Vec<String>,
    /// A playbook run's artifacts folder.
    artifacts: Option<PathBuf>,
}

impl Job {
    /// Checks a request against the allow-list and decides what runs.
    fn parse(root: &Path, programs: &Programs, r: Request) -> Result<Job> {
        match r.playbook {
            None => {
                let action = Action::from_args(root, &r.args)?;
                let mut argv = vec![programs.firstboot.to_string_lossy().into_owned()];
                argv.extend(r.args);
                Ok(Job {
                    name: action.name().to_string(),
                    argv,
                    artifacts: None,
                })
            }
            Some(_) if !r.args.is_empty() => bail!("a playbook request takes no arguments"),
            Some(name) => Job::playbook(root, programs, &name),
        }
    }

    /// A run of the playbook `name` from the helper's own folder, laid out in
    /// a fresh root-owned run folder.
    fn playbook(root: &Path, programs: &Programs, name: &str) -> Result<Job> {
        let ansible = root.join(ANSIBLE_DIR);
        let playbooks = ansible.join("playbooks");
        let allowed = crate::actions::playbooks_in(&playbooks);
        if !allowed.iter().any(|p| p == name) {
            bail!(
                "{name:?} is not a playbook of this unit: expected one of {} (in {})",
                allowed.join(", "),
                playbooks.display()
            );
        }
        let runs = root.join(RUNS);
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        prune_runs(&runs);
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("the OS random source: {e}"))?;
        let run = runs.join(format!(
            "{:011}-{}",
            time::OffsetDateTime::now_utc().unix_timestamp(),
            hex::encode(nonce)
        ));
        std::fs::create_dir(&run).with_context(|| format!("making the run folder {}", run.display()))?;
        let files = run.join("files");
        std::fs::create_dir(&files).with_context(|| format!("creating {}", files.display()))?;
        for (rel, content) in crate::actions::runner_files(&files.to_string_lossy(), root, &ansible.join("ansible.cfg"))
        {
            let p = run.join(&rel);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
        }
        share_with_web_app(root, &runs)?;
        share_with_web_app(root, &run)?;
        share_with_web_app(root, &files)?;
        let argv = [
            programs.ansible_runner.to_string_lossy().as_ref(),
            "run",
            &run.to_string_lossy(),
            "--playbook",
            name,
            "--project-dir",
            &playbooks.to_string_lossy(),
            "--ident",
            "run",
            "--json",
        ]
        .map(str::to_string)
        .to_vec();
        Ok(Job {
            name: format!("playbook {name}"),
            argv,
            artifacts: Some(files),
        })
    }
}

/// Removes the oldest runs beyond [`KEEP_RUNS`] (names start with the time).
fn prune_runs(runs: &Path) {
    let Ok(rd) = std::fs::read_dir(runs) else { return };
    let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    let extra = (names.len() + 1).saturating_sub(KEEP_RUNS);
    for old in names.into_iter().take(extra) {
        if let Err(e) = flypack_contracts::atomic::remove_any(&old) {
            tracing::warn!("privileged helper: removing the old run {}: {e:#}", old.display());
        }
    }
}

/// Lets the web app's group read `path` (a folder: list and enter it; its
/// regular files directly inside too). Root keeps ownership; links are not
/// followed. Without the group (a test's root), nothing changes.
fn share_with_web_app(root: &Path, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(gid) = group_id(root, WEB_GROUP) else {
        return Ok(());
    };
    let mut paths = vec![path.to_path_buf()];
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) && path.file_name().is_some_and(|n| n == "files") {
        for e in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
            let e = e.with_context(|| format!("listing {}", path.display()))?;
            if e.file_type().is_ok_and(|t| t.is_file()) {
                paths.push(e.path());
            }
        }
    }
    for p in paths {
        let m = std::fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        let mode = if m.is_dir() { 0o750 } else { 0o640 };
        std::os::unix::fs::lchown(&p, None, Some(gid)).with_context(|| format!("chown of {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod of {}", p.display()))?;
    }
    Ok(())
}

/// A group's id from `root`'s /etc/group.
fn group_id(root: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(root.join("etc/group"))
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs(firstboot: &Path) -> Programs {
        Programs {
            firstboot: firstboot.to_path_buf(),
            ansible_runner: PathBuf::from("/bin/false"),
        }
    }

    fn ask(root: &Path, firstboot: &Path, req: &[u8]) -> Vec<Reply> {
        ask_with(root, &programs(firstboot), req)
    }

    fn ask_with(root: &Path, programs: &Programs, req: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        serve(root, programs, req, &mut out).unwrap();
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    /// A stand-in for firstboot that echoes its arguments and fails with 3.
    fn fake_firstboot(dir: &Path) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("firstboot");
        std::fs::write(&p, "#!/bin/sh\necho \"args: $*\"\necho oops >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn an_allowed_action_runs_and_its_output_and_code_come_back() {
        let d = tempfile::tempdir().unwrap();
        let fb = fake_firstboot(d.path());
        let r = ask(d.path(), &fb, b"{\"args\":[\"qa\",\"--format\",\"json\"]}\n");
        let text = format!("{r:?}");
        assert!(text.contains("Stdout(\"args: qa --format json\")"), "{text}");
        assert!(text.contains("Stderr(\"oops\")"), "{text}");
        assert!(matches!(r.last(), Some(Reply::Exit(3))), "{text}");
    }

    #[test]
    fn what_the_allow_list_does_not_allow_is_refused_and_nothing_runs() {
        let d = tempfile::tempdir().unwrap();
        let fb = fake_firstboot(d.path());
        let evil = d.path().join("evil.toml");
        std::fs::write(&evil, "version = 1\nhostname = \"x\"\n").unwrap();
        for req in [
            // Not an action at all, or one with a smuggled argument.
            r#"{"args":["network","apply","--unit","/etc/shadow","--confirm-within","60"]}"#.to_string(),
            format!(
                r#"{{"args":["network","apply","--unit","{}","--confirm-within","60"]}}"#,
                evil.display()
            ),
            r#"{"args":["qa","--format","json","--root","/tmp/x"]}"#.into(),
            r#"{"args":["backup","--json","; rm -rf /"]}"#.into(),
            r#"{"args":["stack","restart","nosuch"]}"#.into(),
            r#"{"args":["waiver","add","time.sync","--reason","  padded  ","--expires","2099-01-01"]}"#.into(),
            r#"{"args":["install"]}"#.into(),
            r#"{"args":[]}"#.into(),
            r#"{"args":["qa"],"program":"/bin/sh"}"#.into(),
            "not json".into(),
        ] {
            let r = ask(d.path(), &fb, format!("{req}\n").as_bytes());
            assert!(
                matches!(r.as_slice(), [Reply::Refused(_)]),
                "{req} was not refused: {r:?}"
            );
        }
        // A request without its end of line (cut, or longer than the limit).
        let long = format!("{{\"args\":[\"{}\"]}}", "a".repeat(70_000));
        let r = ask(d.path(), &fb, long.as_bytes());
        assert!(matches!(r.as_slice(), [Reply::Refused(_)]), "{r:?}");
    }

    #[test]
    fn call_relays_output_and_exit_code() {
        let d = tempfile::tempdir().unwrap();
        let fb = fake_firstboot(d.path());
        let sock = d.path().join("s.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let root = d.path().to_path_buf();
        let server = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            serve(&root, &programs(&fb), c.try_clone().unwrap(), c).unwrap();
        });
        let code = call(&sock, &["/usr/bin/firstboot".into(), "backup".into(), "--json".into()]).unwrap();
        server.join().unwrap();
        assert_eq!(code, 3);
        // Refused: the code says so.
        let l = std::os::unix::net::UnixListener::bind(d.path().join("t.sock")).unwrap();
        let root = d.path().to_path_buf();
        let server = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            serve(&root, &programs(Path::new("/bin/false")), c.try_clone().unwrap(), c).unwrap();
        });
        let code = call(&d.path().join("t.sock"), &["x".into(), "install".into()]).unwrap();
        server.join().unwrap();
        assert_eq!(code, REFUSED);
    }

    /// A stand-in for ansible-runner: records its arguments and its input's
    /// extra vars in the artifacts folder it was given, exits with 2.
    fn fake_runner(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("ansible-runner");
        std::fs::write(
            &p,
            "#!/bin/sh\necho '{\"event\":\"playbook_on_start\"}'\n\
             cp \"$2/env/extravars\" \"$2/files/extravars.json\"\necho \"$*\" > \"$2/files/args.txt\"\n\
             ln -s /etc/shadow \"$2/files/shadow\"\nexit 2\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// A scratch root holding the helper's playbooks folder (diagnostics.yml,
    /// and linked.yml, a link to a playbook outside it), and the programs
    /// with the stand-in runner.
    fn unit_with_playbooks() -> (tempfile::TempDir, Programs) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let pb = root.join(ANSIBLE_DIR).join("playbooks");
        std::fs::create_dir_all(&pb).unwrap();
        std::fs::write(pb.join("diagnostics.yml"), "- hosts: all\n").unwrap();
        std::fs::write(root.join("outside.yml"), "- hosts: all\n").unwrap();
        std::os::unix::fs::symlink(root.join("outside.yml"), pb.join("linked.yml")).unwrap();
        let p = Programs {
            firstboot: PathBuf::from("/bin/false"),
            ansible_runner: fake_runner(root),
        };
        (d, p)
    }

    #[test]
    fn a_playbook_runs_from_the_helpers_own_folder_with_an_input_it_lays_out() {
        let (d, p) = unit_with_playbooks();
        let r = ask_with(d.path(), &p, b"{\"playbook\":\"diagnostics.yml\"}\n");
        let text = format!("{r:?}");
        assert!(text.contains("playbook_on_start"), "{text}");
        let [.., Reply::Files(files), Reply::Exit(2)] = r.as_slice() else {
            panic!("no artifacts folder and exit code 2: {text}")
        };
        let files = Path::new(files);
        assert!(files.starts_with(d.path().join(RUNS)), "{}", files.display());
        // Its only extra vars: the artifacts folder and the root.
        let vars: serde_json::Value =
            serde_json::from_slice(&std::fs::read(files.join("extravars.json")).unwrap()).unwrap();
        let keys: Vec<&String> = vars.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["flypack_artifacts_dir", "flypack_root"]);
        assert_eq!(vars["flypack_artifacts_dir"], files.to_string_lossy().as_ref());
        let args = std::fs::read_to_string(files.join("args.txt")).unwrap();
        let pb = d.path().join(ANSIBLE_DIR).join("playbooks");
        assert!(
            args.contains(&format!("--playbook diagnostics.yml --project-dir {}", pb.display())),
            "{args}"
        );
        // The client copies regular files only: not the link to /etc/shadow.
        let to = d.path().join("job-files");
        copy_artifacts(files, &to).unwrap();
        let mut got: Vec<String> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        got.sort();
        assert_eq!(got, ["args.txt", "extravars.json"]);
    }

    #[test]
    fn a_playbook_outside_the_helpers_folder_is_refused_and_nothing_runs() {
        let (d, p) = unit_with_playbooks();
        for req in [
            r#"{"playbook":"../../../../outside.yml"}"#.to_string(),
            r#"{"playbook":"linked.yml"}"#.into(),
            r#"{"playbook":"nosuch.yml"}"#.into(),
            format!(r#"{{"playbook":"{}"}}"#, d.path().join("outside.yml").display()),
            r#"{"playbook":"diagnostics.yml","args":["-e","x=1"]}"#.into(),
            r#"{"playbook":"diagnostics.yml","extravars":{"diagnostics_commands":[]}}"#.into(),
        ] {
            let r = ask_with(d.path(), &p, format!("{req}\n").as_bytes());
            assert!(
                matches!(r.as_slice(), [Reply::Refused(_)]),
                "{req} was not refused: {r:?}"
            );
        }
        assert!(!d.path().join(RUNS).exists(), "a refused request made a run folder");
    }

    #[test]
    fn old_runs_are_pruned() {
        let (d, p) = unit_with_playbooks();
        for _ in 0..KEEP_RUNS + 3 {
            ask_with(d.path(), &p, b"{\"playbook\":\"diagnostics.yml\"}\n");
        }
        assert_eq!(std::fs::read_dir(d.path().join(RUNS)).unwrap().count(), KEEP_RUNS);
    }
}
