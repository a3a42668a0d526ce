//! Jobs: every process the web app starts (firstboot actions and
//! ansible-runner). Each runs in its own process group (so a cancel reaches
//! everything it started), with stdin closed and its output captured line
//! by line as events that stream to the page; its folder keeps `job.json`,
//! `events.jsonl` and its artifacts. Only one mutating job runs at a time.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use crate::role::Role;

/// What kind of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A firstboot subcommand from the allow-list.
    Action,
    /// An Ansible playbook through ansible-runner.
    Ansible,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Running.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, or could not start.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// The web app stopped while it ran.
    Interrupted,
}

impl JobState {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Kind.
    pub kind: JobKind,
    /// Action name or playbook file name.
    pub name: String,
    /// For people.
    pub title: String,
    /// The full command line (prefix included).
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Whether it changes the unit (one at a time).
    pub mutating: bool,
    /// The role needed to start or cancel it.
    pub role: Role,
    /// stdout is ansible-runner's JSON events (`-j`).
    pub ansible_events: bool,
    /// Files to write into the job's folder before it starts (relative path, content).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Stands for the job's folder in a [`JobSpec`]'s argv, environment and files.
pub const JOB_DIR: &str = "{job_dir}";

impl JobSpec {
    /// The spec with [`JOB_DIR`] replaced by `dir`.
    fn in_dir(mut self, dir: &Path) -> JobSpec {
        let d = dir.to_string_lossy();
        for a in &mut self.argv {
            *a = a.replace(JOB_DIR, &d);
        }
        for (_, v) in &mut self.env {
            *v = v.replace(JOB_DIR, &d);
        }
        for (_, c) in &mut self.files {
            if let Ok(t) = std::str::from_utf8(c) {
                *c = t.replace(JOB_DIR, &d).into_bytes();
            }
        }
        self
    }
}

/// job.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMeta {
    /// Id (sortable by start time).
    pub id: String,
    /// Kind.
    pub kind: JobKind,
    /// Action name or playbook.
    pub name: String,
    /// For people.
    pub title: String,
    /// Who started it.
    pub user: String,
    /// Role needed to cancel it.
    pub role: Role,
    /// Changes the unit.
    pub mutating: bool,
    /// The command line.
    pub argv: Vec<String>,
    /// Start (RFC 3339).
    pub started: String,
    /// End (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// State.
    pub state: JobState,
    /// Exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rc: Option<i32>,
}

/// One line of output, an Ansible event, or a state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Position (0, 1, ...).
    pub seq: usize,
    /// When.
    pub time: String,
    /// `stdout`, `stderr`, `ansible` or `state`.
    pub stream: String,
    /// The Ansible event name (`runner_on_ok`, ...), or the new state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The text.
    pub text: String,
}

/// One job.
#[derive(Debug)]
pub struct Job {
    dir: PathBuf,
    meta: Mutex<JobMeta>,
    events: Mutex<Vec<JobEvent>>,
    count: watch::Sender<usize>,
    pgid: Mutex<Option<i32>>,
    cancelled: AtomicBool,
}

impl Job {
    /// Its metadata now.
    pub fn meta(&self) -> JobMeta {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Events from `from` on.
    pub fn events_from(&self, from: usize) -> Vec<JobEvent> {
        let ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        ev.get(from..).map(<[JobEvent]>::to_vec).unwrap_or_default()
    }

    /// A receiver that changes whenever an event arrives.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Whether it still runs.
    pub fn running(&self) -> bool {
        self.meta().state == JobState::Running
    }

    fn push(&self, stream: &str, event: Option<String>, text: String) {
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let e = JobEvent {
            seq: ev.len(),
            time: crate::security::now_rfc3339(),
            stream: stream.to_string(),
            event,
            text,
        };
        if let Err(err) = append_line(&self.dir.join("events.jsonl"), &e) {
            tracing::warn!("job {}: {err:#}", self.dir.display());
        }
        ev.push(e);
        let n = ev.len();
        drop(ev);
        self.count.send_replace(n);
    }

    fn save(&self) {
        let m = self.meta();
        let r = serde_json::to_vec_pretty(&m)
            .context("serialising job.json")
            .and_then(|t| flypack_contracts::atomic::write_atomic(&self.dir.join("job.json"), &t, 0o640));
        if let Err(e) = r {
            tracing::error!("job {}: {e:#}", m.id);
        }
    }

    /// The files it left for download (its `files/` folder), by name.
    pub fn files(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(self.dir.join("files"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let m = e.path().symlink_metadata().ok()?;
                        m.is_file()
                            .then(|| (e.file_name().to_string_lossy().into_owned(), m.len()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn append_line<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut line = serde_json::to_vec(v).context("serialising")?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(&line)
        .with_context(|| format!("writing {}", path.display()))
}

/// Why a job did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A mutating job runs already.
    #[error("job {0} is still running: one change at a time (wait for it, or cancel it)")]
    Busy(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Every job.
#[derive(Debug)]
pub struct Jobs {
    dir: PathBuf,
    map: Mutex<BTreeMap<String, Arc<Job>>>,
    keep: usize,
    grace: Duration,
}

/// Whether `id` looks like a job id (so it is safe in a path).
pub fn valid_id(id: &str) -> bool {
    id.len() <= 40 && !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl Jobs {
    /// Loads the jobs kept under `root` (those that were running are marked interrupted).
    pub fn load(root: &Path, keep: usize, grace: Duration) -> Result<Arc<Jobs>> {
        let dir = crate::paths::under(root, crate::paths::JOBS);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut map = BTreeMap::new();
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let id = e.file_name().to_string_lossy().into_owned();
            if !valid_id(&id) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(e.path().join("job.json")) else {
                continue;
            };
            let Ok(mut meta) = serde_json::from_str::<JobMeta>(&text) else {
                tracing::warn!("{}: unreadable job.json, ignored", e.path().display());
                continue;
            };
            let events: Vec<JobEvent> = std::fs::read_to_string(e.path().join("events.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let was_running = meta.state == JobState::Running;
            if was_running {
                meta.state = JobState::Interrupted;
            }
            let (count, _) = watch::channel(events.len());
            let job = Arc::new(Job {
                dir: e.path(),
                meta: Mutex::new(meta),
                events: Mutex::new(events),
                count,
                pgid: Mutex::new(None),
                cancelled: AtomicBool::new(false),
            });
            if was_running {
                job.push(
                    "state",
                    Some("interrupted".into()),
                    "the web app stopped while this job ran".into(),
                );
                job.save();
            }
            map.insert(id, job);
        }
        Ok(Arc::new(Jobs {
            dir,
            map: Mutex::new(map),
            keep,
            grace,
        }))
    }

    /// A job.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<JobMeta> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.values().rev().map(|j| j.meta()).collect()
    }

    /// The running mutating job, if any.
    pub fn busy(&self) -> Option<String> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.values()
            .find(|j| {
                let x = j.meta();
                x.mutating && x.state == JobState::Running
            })
            .map(|j| j.meta().id)
    }

    /// Whether any job runs.
    pub fn any_running(&self) -> bool {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.values().any(|j| j.running())
    }

    /// Starts a job for `user`.
    pub fn start(self: &Arc<Self>, spec: JobSpec, user: &str) -> Result<Arc<Job>, StartError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if spec.mutating
            && let Some(j) = map.values().find(|j| {
                let x = j.meta();
                x.mutating && x.state == JobState::Running
            })
        {
            return Err(StartError::Busy(j.meta().id));
        }
        let stamp = time::OffsetDateTime::now_utc();
        let mut rnd = [0u8; 3];
        crate::security::random_bytes(&mut rnd);
        let id = format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}-{}",
            stamp.year(),
            u8::from(stamp.month()),
            stamp.day(),
            stamp.hour(),
            stamp.minute(),
            stamp.second(),
            hex::encode(rnd)
        );
        let dir = self.dir.join(&id);
        std::fs::create_dir_all(dir.join("files")).with_context(|| format!("creating {}", dir.display()))?;
        let spec = spec.in_dir(&dir);
        for (rel, content) in &spec.files {
            let p = dir.join(rel);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            flypack_contracts::atomic::write_atomic(&p, content, 0o640)?;
        }
        let meta = JobMeta {
            id: id.clone(),
            kind: spec.kind,
            name: spec.name.clone(),
            title: spec.title.clone(),
            user: user.to_string(),
            role: spec.role,
            mutating: spec.mutating,
            argv: spec.argv.clone(),
            started: crate::security::now_rfc3339(),
            finished: None,
            state: JobState::Running,
            rc: None,
        };
        let (count, _) = watch::channel(0);
        let job = Arc::new(Job {
            dir: dir.clone(),
            meta: Mutex::new(meta),
            events: Mutex::new(vec![]),
            count,
            pgid: Mutex::new(None),
            cancelled: AtomicBool::new(false),
        });
        job.save();
        map.insert(id, job.clone());
        drop(map);
        let me = self.clone();
        let j = job.clone();
        tokio::spawn(async move {
            run(&j, &spec).await;
            me.prune();
        });
        Ok(job)
    }

    /// Cancels a running job: SIGTERM to its process group, SIGKILL after the grace time.
    pub fn cancel(&self, id: &str) -> Result<()> {
        let job = self.get(id).with_context(|| format!("no job {id}"))?;
        if !job.running() {
            anyhow::bail!("job {id} is not running");
        }
        let pgid = (*job.pgid.lock().unwrap_or_else(|e| e.into_inner()))
            .with_context(|| format!("job {id} has no process"))?;
        job.cancelled.store(true, Ordering::SeqCst);
        job.push(
            "state",
            Some("cancelling".into()),
            "cancel requested: SIGTERM to the job's processes".into(),
        );
        signal_group(pgid, rustix::process::Signal::TERM).with_context(|| format!("signalling job {id}"))?;
        let grace = self.grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if job.running() {
                job.push("state", Some("killing".into()), "still running: SIGKILL".into());
                if let Err(e) = signal_group(pgid, rustix::process::Signal::KILL) {
                    tracing::warn!("SIGKILL to job group {pgid}: {e}");
                }
            }
        });
        Ok(())
    }

    /// Waits until no job runs (tests, shutdown).
    pub async fn wait_idle(&self) {
        while self.any_running() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn prune(&self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let finished: Vec<String> = map
            .iter()
            .filter(|(_, j)| !j.running())
            .map(|(k, _)| k.clone())
            .collect();
        if finished.len() <= self.keep {
            return;
        }
        for id in &finished[..finished.len() - self.keep] {
            if let Some(j) = map.remove(id)
                && let Err(e) = flypack_contracts::atomic::remove_any(j.dir())
            {
                tracing::warn!("removing old job {id}: {e:#}");
            }
        }
    }
}

fn signal_group(pgid: i32, sig: rustix::process::Signal) -> Result<()> {
    let pid = rustix::process::Pid::from_raw(pgid).context("bad process group")?;
    rustix::process::kill_process_group(pid, sig).context("kill")?;
    Ok(())
}

/// Shell-quotes a command line for logs.
pub fn display(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(job: &Arc<Job>, spec: &JobSpec) {
    let line = display(&spec.argv);
    tracing::info!("job {}: running {line}", job.meta().id);
    let Some((prog, args)) = spec.argv.split_first() else {
        finish(job, JobState::Failed, None, "empty command line".into());
        return;
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .current_dir(&job.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                format!(" ({prog} is not installed or not on PATH)")
            } else {
                String::new()
            };
            finish(
                job,
                JobState::Failed,
                None,
                format!("could not run `{line}`: {e}{hint}"),
            );
            return;
        }
    };
    *job.pgid.lock().unwrap_or_else(|e| e.into_inner()) = child.id().map(|p| p as i32);
    job.push("state", Some("running".into()), format!("$ {line}"));
    let out = child.stdout.take().map(|s| {
        let j = job.clone();
        let ansible = spec.ansible_events;
        tokio::spawn(async move {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if ansible && let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
                    let event = v.get("event").and_then(|e| e.as_str()).map(str::to_string);
                    let text = v
                        .get("stdout")
                        .and_then(|e| e.as_str())
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    if !text.is_empty() {
                        j.push("ansible", event, text);
                    }
                    continue;
                }
                j.push("stdout", None, l);
            }
        })
    });
    let err = child.stderr.take().map(|s| {
        let j = job.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                j.push("stderr", None, l);
            }
        })
    });
    let status = child.wait().await;
    for t in [out, err].into_iter().flatten() {
        // A reader task that panicked lost lines; the exit status still counts.
        if let Err(e) = t.await {
            tracing::warn!("job output reader: {e}");
        }
    }
    let cancelled = job.cancelled.load(Ordering::SeqCst);
    match status {
        Ok(s) => {
            let state = if cancelled {
                JobState::Cancelled
            } else if s.success() {
                JobState::Succeeded
            } else {
                JobState::Failed
            };
            finish(job, state, s.code(), format!("{} ({s})", state.as_str()));
        }
        Err(e) => finish(job, JobState::Failed, None, format!("waiting for `{line}`: {e}")),
    }
}

fn finish(job: &Job, state: JobState, rc: Option<i32>, text: String) {
    {
        let mut m = job.meta.lock().unwrap_or_else(|e| e.into_inner());
        m.state = state;
        m.rc = rc;
        m.finished = Some(crate::security::now_rfc3339());
    }
    job.save();
    job.push("state", Some(state.as_str().into()), text);
    tracing::info!("job {}: {}", job.meta().id, state.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], mutating: bool) -> JobSpec {
        JobSpec {
            kind: JobKind::Action,
            name: "t".into(),
            title: "t".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            mutating,
            role: Role::Operator,
            ansible_events: false,
            files: vec![],
        }
    }

    #[tokio::test]
    async fn runs_captures_refuses_a_second_change_and_cancels() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::load(dir.path(), 10, Duration::from_secs(5)).unwrap();
        let a = jobs
            .start(spec(&["sh", "-c", "echo hello; echo oops >&2; exit 3"], true), "op")
            .unwrap();
        jobs.wait_idle().await;
        let m = a.meta();
        assert_eq!(m.state, JobState::Failed);
        assert_eq!(m.rc, Some(3));
        let ev = a.events_from(0);
        assert!(ev.iter().any(|e| e.stream == "stdout" && e.text == "hello"));
        assert!(ev.iter().any(|e| e.stream == "stderr" && e.text == "oops"));
        let long = jobs
            .start(spec(&["sh", "-c", "sleep 30 & sleep 30; wait"], true), "op")
            .unwrap();
        assert!(matches!(
            jobs.start(spec(&["true"], true), "op"),
            Err(StartError::Busy(_))
        ));
        let ro = jobs.start(spec(&["true"], false), "op").unwrap();
        let mut w = long.watch();
        while long.events_from(0).is_empty() {
            w.changed().await.unwrap();
        }
        jobs.cancel(&long.meta().id).unwrap();
        jobs.wait_idle().await;
        assert_eq!(long.meta().state, JobState::Cancelled);
        assert_eq!(ro.meta().state, JobState::Succeeded);
        let missing = jobs.start(spec(&["/nonexistent/prog"], false), "op").unwrap();
        jobs.wait_idle().await;
        assert_eq!(missing.meta().state, JobState::Failed);
        // Reloaded from disk.
        let again = Jobs::load(dir.path(), 10, Duration::from_secs(5)).unwrap();
        assert_eq!(again.list().len(), 4);
        assert_eq!(
            again.get(&a.meta().id).unwrap().events_from(0).len(),
            a.events_from(0).len()
        );
    }
}
