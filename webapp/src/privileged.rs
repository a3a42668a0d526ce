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

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::actions::Action;

/// The helper's socket (`webapp/systemd/flypack-web-privileged.socket`).
pub const SOCKET: &str = "/run/flypack-web-privileged.sock";
/// The program the helper runs; never taken from the request.
pub const FIRSTBOOT: &str = "/usr/bin/firstboot";
/// A request is a few arguments: anything longer is refused unread.
const MAX_REQUEST: u64 = 64 * 1024;

/// What the web app asks: firstboot's arguments.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    args: Vec<String>,
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
}

/// Exit code of `call` when the helper refused the request or cannot be reached.
pub const REFUSED: i32 = 126;

/// `flypack-web privileged call -- FIRSTBOOT ARGS...`: asks the helper to run
/// firstboot with ARGS (the program in `argv[0]` is ignored: the helper
/// runs its own), prints its output and returns its exit code.
pub fn call(socket: &Path, argv: &[String]) -> Result<i32> {
    let args = argv.get(1..).unwrap_or_default().to_vec();
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the privileged helper at {}: is flypack-web-privileged.socket running \
             (systemctl status flypack-web-privileged.socket)?",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(&Request { args })?;
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
        }
    }
    bail!("the privileged helper ended without an exit code (see journalctl -u 'flypack-web-privileged@*')")
}

/// `flypack-web privileged serve`: one connection on stdin and stdout
/// (systemd's `Accept=yes`). Refuses what the allow-list does not allow;
/// otherwise runs firstboot and streams its output and exit code.
pub fn serve(root: &Path, firstboot: &Path, input: impl Read, mut output: impl Write) -> Result<()> {
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
            .and_then(|r| Action::from_args(root, &r.args).map(|a| (a, r.args)))
    } else {
        Err(anyhow::anyhow!(
            "the request is not one line of at most {MAX_REQUEST} bytes"
        ))
    };
    let (action, args) = match parsed {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("privileged helper: refused: {e:#}");
            send(&Reply::Refused(format!("{e:#}")))?;
            return Ok(());
        }
    };
    tracing::info!("privileged helper: {} (firstboot {})", action.name(), args.join(" "));
    let mut child = Command::new(firstboot)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", firstboot.display()))?;
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
    let code = child.wait().context("waiting for firstboot")?.code().unwrap_or(-1);
    tracing::info!("privileged helper: {} ended with {code}", action.name());
    if listening {
        send(&Reply::Exit(code))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(root: &Path, firstboot: &Path, req: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        serve(root, firstboot, req, &mut out).unwrap();
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
            serve(&root, &fb, c.try_clone().unwrap(), c).unwrap();
        });
        let code = call(&sock, &["/usr/bin/firstboot".into(), "backup".into(), "--json".into()]).unwrap();
        server.join().unwrap();
        assert_eq!(code, 3);
        // Refused: the code says so.
        let l = std::os::unix::net::UnixListener::bind(d.path().join("t.sock")).unwrap();
        let root = d.path().to_path_buf();
        let server = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            serve(&root, Path::new("/bin/false"), c.try_clone().unwrap(), c).unwrap();
        });
        let code = call(&d.path().join("t.sock"), &["x".into(), "install".into()]).unwrap();
        server.join().unwrap();
        assert_eq!(code, REFUSED);
    }
}
