//! Progress reporting for long work: indicatif spinners and bars on a
//! terminal, plain timestamped lines otherwise, JSON event lines (on stdout)
//! for machines.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Spinners and bars (stderr is a terminal).
    Tty,
    /// One line per event on stderr.
    Plain,
    /// One JSON object per line on stdout.
    Json,
    /// Nothing (tests).
    Quiet,
}

impl Mode {
    /// `Json` if asked, else `Tty` when stderr is a terminal, else `Plain`.
    pub fn detect(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Tty
        } else {
            Mode::Plain
        }
    }
}

/// The progress reporter of one command.
#[derive(Debug)]
pub struct Reporter {
    mode: Mode,
    start: Instant,
    out: Mutex<()>,
    /// The terminal's bars: stages may run at once (the container images
    /// are made beside the root filesystem), one bar each.
    bars: MultiProgress,
}

impl Reporter {
    /// A reporter in `mode`.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            start: Instant::now(),
            out: Mutex::new(()),
            bars: if mode == Mode::Tty {
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
            } else {
                MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
            },
        }
    }

    /// Prints a line above the bars (they are drawn again below it).
    fn line(&self, line: &str) {
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if self.mode == Mode::Tty {
            let _ = self.bars.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn plain(&self, line: &str) {
        self.line(&format!("[{:>7.1}s] {line}", self.elapsed()));
    }

    /// Emits one JSON event line (JSON mode only).
    pub fn event(&self, kind: &str, mut fields: Value) {
        if self.mode != Mode::Json {
            return;
        }
        if let Value::Object(m) = &mut fields {
            m.insert("event".into(), json!(kind));
            m.insert("t".into(), json!((self.elapsed() * 10.0).round() / 10.0));
        }
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (reader went away) must not abort the build.
        let _ = writeln!(stdout, "{fields}");
        let _ = stdout.flush();
    }

    /// An informational line.
    pub fn info(&self, msg: &str) {
        match self.mode {
            Mode::Tty | Mode::Plain => self.plain(msg),
            Mode::Json => self.event("info", json!({ "message": msg })),
            Mode::Quiet => {}
        }
    }

    /// A warning line.
    pub fn warn(&self, msg: &str) {
        match self.mode {
            Mode::Tty | Mode::Plain => self.plain(&format!("warning: {msg}")),
            Mode::Json => self.event("warning", json!({ "message": msg })),
            Mode::Quiet => {}
        }
    }

    /// Starts a stage; finish it with [`Stage::done`].
    pub fn stage(&self, name: &'static str, what: &str) -> Stage<'_> {
        let bar = match self.mode {
            Mode::Tty => {
                let pb = self.bars.add(ProgressBar::new_spinner());
                pb.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold:>8} {elapsed:>4} {wide_msg}")
                        .expect("valid template"),
                );
                pb.set_prefix(name);
                pb.set_message(what.to_string());
                pb.enable_steady_tick(Duration::from_millis(120));
                Some(pb)
            }
            Mode::Plain => {
                self.plain(&format!("{name}: {what}"));
                None
            }
            Mode::Json => {
                self.event("stage-start", json!({ "stage": name, "message": what }));
                None
            }
            Mode::Quiet => None,
        };
        Stage {
            reporter: self,
            name,
            started: Instant::now(),
            bar,
            finished: false,
            last_plain: Mutex::new(None),
        }
    }
}

/// A running stage.
#[derive(Debug)]
pub struct Stage<'a> {
    reporter: &'a Reporter,
    name: &'static str,
    started: Instant,
    bar: Option<ProgressBar>,
    finished: bool,
    last_plain: Mutex<Option<Instant>>,
}

impl Stage<'_> {
    /// Updates what the stage is doing. Plain mode prints at most one such
    /// line every two seconds.
    pub fn progress(&self, msg: &str) {
        match self.reporter.mode {
            Mode::Tty => {
                if let Some(b) = &self.bar {
                    b.set_message(msg.to_string());
                }
            }
            Mode::Plain => {
                let mut last = self.last_plain.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                    *last = Some(Instant::now());
                    self.reporter.plain(&format!("{}: {msg}", self.name));
                }
            }
            Mode::Json => self
                .reporter
                .event("stage-progress", json!({ "stage": self.name, "message": msg })),
            Mode::Quiet => {}
        }
    }

    /// Switches the spinner to a byte progress bar (rate and ETA).
    pub fn bytes(&self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            if b.length() != Some(total) {
                b.set_length(total);
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner:.cyan} {prefix:.bold:>8} {elapsed:>4} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
            }
            b.set_position(done);
        } else if self.reporter.mode == Mode::Json {
            self.reporter.event(
                "stage-bytes",
                json!({ "stage": self.name, "done": done, "total": total }),
            );
        } else if self.reporter.mode == Mode::Plain {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            self.progress(&format!("{pct}% of {}", indicatif::HumanBytes(total)));
        }
    }

    /// Seconds since the stage started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Finishes the stage with a one-line summary.
    pub fn done(mut self, summary: &str) {
        self.finished = true;
        let secs = self.started.elapsed().as_secs_f64();
        match self.reporter.mode {
            Mode::Tty => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                    self.reporter.bars.remove(&b);
                }
                self.reporter
                    .line(&format!("  \u{2713} {:>8} {secs:>6.1}s  {summary}", self.name));
            }
            Mode::Plain => self
                .reporter
                .plain(&format!("{}: done in {secs:.1}s: {summary}", self.name)),
            Mode::Json => self.reporter.event(
                "stage-done",
                json!({ "stage": self.name, "seconds": (secs * 10.0).round() / 10.0, "summary": summary }),
            ),
            Mode::Quiet => {}
        }
    }
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64();
        match self.reporter.mode {
            Mode::Tty => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                    self.reporter.bars.remove(&b);
                }
                self.reporter
                    .line(&format!("  \u{2717} {:>8} {secs:>6.1}s  failed", self.name));
            }
            Mode::Plain => self.reporter.plain(&format!("{}: failed after {secs:.1}s", self.name)),
            Mode::Json => self
                .reporter
                .event("stage-failed", json!({ "stage": self.name, "seconds": secs })),
            Mode::Quiet => {}
        }
    }
}
