//! The one way we run external commands.
//!
//! Every command is logged with its full command line, runs with stdin closed
//! (or fed from a buffer), has its stderr captured, and on failure returns a
//! [`CmdError`] carrying the command, its exit status and the tail of stderr,
//! so the user sees what was run and why it failed.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// How many lines of stderr an error keeps.
const TAIL_LINES: usize = 25;

/// Children running right now, so an interrupted tool can stop them (and
/// then clean up its temporary files) instead of leaving them running.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

#[derive(Debug)]
struct Registered(u32);

impl Registered {
    fn new(pid: u32) -> Self {
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        Registered(pid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != self.0);
    }
}

/// Sends SIGTERM to every command currently running through [`Cmd`].
/// Their `run` then returns an error, and the caller unwinds normally.
pub fn terminate_running() {
    let pids = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for pid in pids {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            // The child may have exited in the meantime; nothing to do then.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// A failed external command.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program could not be started at all.
    #[error("could not run `{program}`: {source}{hint}")]
    Spawn {
        /// The program name.
        program: String,
        /// The OS error.
        source: std::io::Error,
        /// An install hint, or empty.
        hint: String,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}){}", fmt_tail(.stderr_tail))]
    Failed {
        /// The full command line, shell-quoted.
        command: String,
        /// The exit status, as text.
        status: String,
        /// The exit code, if it exited (not killed by a signal).
        code: Option<i32>,
        /// The last lines the program wrote to stderr.
        stderr_tail: String,
    },
    /// Reading the program's output failed.
    #[error("reading output of `{command}`: {source}")]
    Io {
        /// The full command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl CmdError {
    /// The captured stderr tail ("" when the program did not run).
    pub fn stderr(&self) -> &str {
        match self {
            CmdError::Failed { stderr_tail, .. } => stderr_tail,
            _ => "",
        }
    }

    /// The exit code, when the program exited with one.
    pub fn code(&self) -> Option<i32> {
        match self {
            CmdError::Failed { code, .. } => *code,
            _ => None,
        }
    }
}

fn fmt_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", tail.trim_end())
    }
}

/// Which stream a line came from, for [`Cmd::run_lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A command line to run.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    input: Option<Vec<u8>>,
}

/// What a successful command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Stdout as (lossy) UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Cmd {
    /// A command running `program`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
            input: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the command in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Feeds `input` to the command's stdin (instead of closing it).
    pub fn stdin_bytes(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.input = Some(input.into());
        self
    }

    /// The program name.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The command line, shell-quoted, for logs and errors.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(self.args.iter())
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c.stdin(if self.input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c
    }

    fn spawn_error(&self, e: std::io::Error) -> CmdError {
        let program = self.program.to_string_lossy().into_owned();
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            match package_for(&program) {
                Some(pkg) => {
                    format!(" (not installed: apt-get install {pkg}; `builder doctor` lists every missing tool)")
                }
                None => " (not installed or not on PATH)".to_string(),
            }
        } else {
            String::new()
        };
        CmdError::Spawn {
            program,
            source: e,
            hint,
        }
    }

    fn failed(&self, status: ExitStatus, stderr: &[u8]) -> CmdError {
        CmdError::Failed {
            command: self.display(),
            status: status.to_string(),
            code: status.code(),
            stderr_tail: tail(&String::from_utf8_lossy(stderr), TAIL_LINES),
        }
    }

    /// Runs the command to completion, capturing stdout and stderr.
    pub fn run(&self) -> Result<Output, CmdError> {
        tracing::debug!("running: {}", self.display());
        let mut c = self.command();
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| self.spawn_error(e))?;
        let _registered = Registered::new(child.id());
        if let Some(input) = &self.input {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let input = input.clone();
            // Feed stdin from a thread so a chatty child cannot deadlock us.
            std::thread::spawn(move || {
                // A child that exits without reading all input is reported by
                // its exit status, not by this broken pipe.
                let _ = stdin.write_all(&input);
            });
        }
        let out = child.wait_with_output().map_err(|e| CmdError::Io {
            command: self.display(),
            source: e,
        })?;
        if !out.status.success() {
            return Err(self.failed(out.status, &out.stderr));
        }
        Ok(Output {
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Runs a command that leaves a detached process behind (`setsid --fork`):
    /// its output goes to /dev/null (so nothing waits on its pipes) and only
    /// the direct child is waited for.
    pub fn run_detached(&self) -> Result<(), CmdError> {
        tracing::debug!("running detached: {}", self.display());
        let mut c = self.command();
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().map_err(|e| self.spawn_error(e))?;
        let status = child.wait().map_err(|e| CmdError::Io {
            command: self.display(),
            source: e,
        })?;
        if !status.success() {
            return Err(self.failed(status, b""));
        }
        Ok(())
    }

    /// Runs the command, calling `on_line` for every line it prints on stdout
    /// or stderr as it prints it (for progress), keeping the stderr tail for
    /// the error.
    pub fn run_lines(&self, mut on_line: impl FnMut(Stream, &str)) -> Result<(), CmdError> {
        tracing::debug!("running: {}", self.display());
        let mut c = self.command();
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| self.spawn_error(e))?;
        let _registered = Registered::new(child.id());
        if let Some(input) = &self.input {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let input = input.clone();
            std::thread::spawn(move || {
                // See `run`: the exit status reports a child that stopped reading.
                let _ = stdin.write_all(&input);
            });
        }
        let (tx, rx) = std::sync::mpsc::channel::<(Stream, String)>();
        let mut readers = Vec::new();
        for (stream, pipe) in [
            (
                Stream::Stdout,
                child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
            (
                Stream::Stderr,
                child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
        ] {
            let Some(pipe) = pipe else { continue };
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
                    if tx.send((stream, text)).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(tx);
        let mut stderr_tail: VecDeque<String> = VecDeque::new();
        for (stream, line) in rx {
            if stream == Stream::Stderr {
                if stderr_tail.len() == TAIL_LINES {
                    stderr_tail.pop_front();
                }
                stderr_tail.push_back(line.clone());
            }
            on_line(stream, &line);
        }
        for r in readers {
            // A reader thread only ends by EOF or a read error; neither panics.
            let _ = r.join();
        }
        let status = child.wait().map_err(|e| CmdError::Io {
            command: self.display(),
            source: e,
        })?;
        if !status.success() {
            let text: Vec<String> = stderr_tail.into_iter().collect();
            return Err(self.failed(status, text.join("\n").as_bytes()));
        }
        Ok(())
    }
}

/// Where a spawned process's output goes.
#[derive(Debug)]
pub enum Sink {
    /// Discarded.
    Null,
    /// Appended to this file (a daemon's log).
    File(std::fs::File),
    /// A pipe the caller reads ([`Process::child`]).
    Piped,
}

impl Sink {
    fn stdio(&self) -> std::io::Result<Stdio> {
        Ok(match self {
            Sink::Null => Stdio::null(),
            Sink::File(f) => Stdio::from(f.try_clone()?),
            Sink::Piped => Stdio::piped(),
        })
    }
}

/// A long-running child (a daemon, a VM) started by [`Cmd::spawn`]. It dies
/// with its parent (a parent-death signal), and dropping the guard stops it:
/// SIGTERM, a grace period, then SIGKILL. Dropping never panics.
#[derive(Debug)]
pub struct Process {
    child: Option<std::process::Child>,
    command: String,
    grace: std::time::Duration,
    _registered: Registered,
}

impl Process {
    /// The child (for its pid and piped streams).
    pub fn child(&mut self) -> &mut std::process::Child {
        self.child.as_mut().expect("a process is owned until dropped")
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child().try_wait()
    }

    /// Stops it now (SIGTERM, then SIGKILL after the grace period); returns
    /// its exit status.
    pub fn stop(&mut self) -> std::io::Result<ExitStatus> {
        let grace = self.grace;
        let child = self.child();
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            // It may exit between try_wait and here; a failed kill is then fine.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = std::time::Instant::now() + grace;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if std::time::Instant::now() >= deadline {
                child.kill()?;
                return child.wait();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kills it at once (SIGKILL), as a power cut would.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        let child = self.child();
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        child.kill()?;
        child.wait()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.stop()
        {
            tracing::warn!("stopping `{}`: {e}", self.command);
        }
    }
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure makes one async-signal-safe
    // system call (prctl) and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

impl Cmd {
    /// Starts the command as a long-running child owned by a [`Process`]
    /// (stdin closed), with its stdout and stderr going to `out` and `err`.
    /// `grace` is how long a stop waits after SIGTERM before SIGKILL.
    pub fn spawn(&self, out: Sink, err: Sink, grace: std::time::Duration) -> Result<Process, CmdError> {
        tracing::debug!("starting: {}", self.display());
        let io = |e: std::io::Error| CmdError::Io {
            command: self.display(),
            source: e,
        };
        let mut c = self.command();
        c.stdin(Stdio::null());
        c.stdout(out.stdio().map_err(io)?).stderr(err.stdio().map_err(io)?);
        die_with_parent(&mut c);
        let child = c.spawn().map_err(|e| self.spawn_error(e))?;
        let registered = Registered::new(child.id());
        Ok(Process {
            child: Some(child),
            command: self.display(),
            grace,
            _registered: registered,
        })
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Quotes `s` for a POSIX shell when it needs quoting.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%^".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The Debian package that provides a host tool we run.
pub fn package_for(program: &str) -> Option<&'static str> {
    let name = program.rsplit('/').next().unwrap_or(program);
    Some(match name {
        "mmdebstrap" => "mmdebstrap",
        "sfdisk" => "fdisk",
        "sgdisk" => "gdisk",
        "mkfs.ext4" | "mke2fs" | "e2fsck" | "fsck.ext4" | "resize2fs" | "debugfs" => "e2fsprogs",
        "mkfs.vfat" | "fsck.vfat" | "mkfs.fat" | "fsck.fat" => "dosfstools",
        "mcopy" | "mmd" | "mdir" | "mtype" => "mtools",
        "grub-mkimage" => "grub-common",
        "qemu-system-x86_64" => "qemu-system-x86",
        "qemu-img" => "qemu-utils",
        "tar" => "tar",
        "zstd" => "zstd",
        "systemctl" => "systemd",
        "ssh-keygen" => "openssh-client",
        "growpart" => "cloud-guest-utils",
        "ip" => "iproute2",
        "dockerd" | "docker" => "docker.io",
        "bmaptool" => "bmap-tools",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        for (input, want) in [
            ("plain-arg_1.0", "plain-arg_1.0"),
            ("offset=1048576", "offset=1048576"),
            ("two words", "'two words'"),
            ("it's", "'it'\\''s'"),
            ("", "''"),
            ("$HOME", "'$HOME'"),
        ] {
            assert_eq!(shell_quote(input), want, "{input}");
        }
    }

    #[test]
    fn success_captures_stdout_and_feeds_stdin() {
        let out = Cmd::new("sh")
            .args(["-c", "cat; echo done"])
            .stdin_bytes("in\n")
            .run()
            .unwrap();
        assert_eq!(out.stdout_str(), "in\ndone\n");
    }

    #[test]
    fn failure_names_command_status_and_stderr_tail() {
        let err = Cmd::new("sh")
            .args(["-c", "for i in $(seq 1 40); do echo line$i >&2; done; exit 3"])
            .run()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("`sh -c 'for i in"), "{text}");
        assert!(text.contains("(exit status: 3)"), "{text}");
        assert!(text.contains("line40"), "{text}");
        assert!(!text.contains("line15\n"), "{text}");
        assert_eq!(err.code(), Some(3));
    }

    #[test]
    fn missing_program_names_the_package() {
        let err = Cmd::new("mmdebstrap-does-not-exist").run().unwrap_err();
        assert!(err.to_string().contains("could not run `mmdebstrap-does-not-exist`"));
        let err = Cmd::new("/nonexistent/sgdisk").run().unwrap_err();
        assert!(err.to_string().contains("apt-get install gdisk"), "{err}");
    }

    #[test]
    fn run_lines_streams_both_streams() {
        let mut seen = Vec::new();
        Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2"])
            .run_lines(|s, l| seen.push((s, l.to_string())))
            .unwrap();
        seen.sort_by_key(|(s, _)| *s == Stream::Stderr);
        assert_eq!(
            seen,
            vec![(Stream::Stdout, "out".to_string()), (Stream::Stderr, "err".to_string())]
        );
    }
}
