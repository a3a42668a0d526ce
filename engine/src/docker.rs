//! Docker, through bollard: the one client module builder and firstboot
//! share. The API version is negotiated (Debian 12's Engine 20.10 speaks
//! 1.41).
//!
//! Timeouts. A quick API call (inspect, ping) keeps bollard's request
//! timeout of 120 s. Creating and starting containers scales with the
//! machine: firstboot's stack client waits up to [`STALL`] for each call.
//! Work whose length scales with the hardware and reports progress (loading
//! an image archive) runs with no request timeout and is bounded by progress
//! instead: it fails only when no byte has moved and Docker has reported
//! nothing for [`STALL`].
//!
//! [`Daemon`] runs a private dockerd (its own data root, socket and exec
//! root, no networking): builder uses it to fill the image's Docker store at
//! build time, and tests use it when no daemon answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use bollard::query_parameters::ImportImageOptionsBuilder;
use flypack_contracts::cmd::{Cmd, Process, Sink};
use futures::StreamExt;

/// How long work bounded by progress may go without any (no byte moved,
/// nothing reported by Docker) before it is declared stuck.
pub const STALL: Duration = Duration::from_secs(600);

/// The request timeout for work bounded by progress instead: 30 days.
const NO_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where the daemon listens: `None` is the local default
/// (`DOCKER_HOST`, else `/var/run/docker.sock`).
fn client(socket: Option<&Path>) -> Result<Docker, bollard::errors::Error> {
    match socket {
        Some(s) => Docker::connect_with_unix(&s.display().to_string(), 120, bollard::API_DEFAULT_VERSION),
        None => Docker::connect_with_local_defaults(),
    }
}

/// Connects to a daemon (see [`client`]), waiting up to `wait` for it to
/// answer (a daemon that is still starting).
pub async fn connect(socket: Option<&Path>, wait: Duration) -> Result<Docker> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = async {
            let d = client(socket)?.negotiate_version().await?;
            d.ping().await?;
            Ok::<_, bollard::errors::Error>(d)
        };
        match attempt.await {
            Ok(d) => return Ok(d),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("Docker not answering yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!(
                        "the Docker daemon{} does not answer after {} s (systemctl status docker; journalctl -u docker)",
                        socket.map(|s| format!(" at {}", s.display())).unwrap_or_default(),
                        wait.as_secs()
                    )
                });
            }
        }
    }
}

/// Progress of a load, for the caller's status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProgress {
    /// Bytes of the archive sent to Docker so far.
    pub sent: u64,
    /// The archive's size.
    pub total: u64,
    /// Docker's last progress message (`Loading layer ...`, `Loaded image: ...`).
    pub message: String,
    /// Seconds since the load began.
    pub seconds: u64,
}

/// Loads a `docker save` archive into the daemon (`docker load`), with no
/// request timeout: the load fails only when nothing moves for `stall` (no
/// byte sent, no message from Docker). `progress` is called at least every
/// few seconds.
pub async fn load_archive(
    d: &Docker,
    archive: &Path,
    stall: Duration,
    progress: &mut (dyn FnMut(&LoadProgress) + Send),
) -> Result<()> {
    let file = tokio::fs::File::open(archive)
        .await
        .with_context(|| format!("opening {}", archive.display()))?;
    let total = file
        .metadata()
        .await
        .with_context(|| format!("reading the size of {}", archive.display()))?
        .len();
    let t0 = Instant::now();
    // Milliseconds since t0 at the last sign of life, and bytes sent.
    let last = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (l2, s2) = (last.clone(), sent.clone());
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |chunk| {
        if let Ok(c) = chunk {
            s2.fetch_add(c.len() as u64, Ordering::Relaxed);
            l2.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    });
    let long = d.clone().with_timeout(NO_TIMEOUT);
    let opts = ImportImageOptionsBuilder::default().quiet(false).build();
    let mut out = long.import_image_stream(opts, stream, None);
    let mut message = String::from("sending the archive");
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            item = out.next() => match item {
                None => break,
                Some(Ok(info)) => {
                    last.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                    if let Some(e) = info.error_detail.and_then(|e| e.message) {
                        bail!("Docker refused {}: {e}", archive.display());
                    }
                    if let Some(s) = info.stream.or(info.status) {
                        let s = s.trim();
                        if !s.is_empty() {
                            message = s.to_string();
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(e).with_context(|| format!("loading {} into Docker", archive.display()));
                }
            },
            _ = tick.tick() => {
                let idle = t0.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if idle >= stall {
                    bail!(
                        "loading {} into Docker made no progress for {} s ({} of {} bytes sent; Docker last said {message:?}): \
                         the daemon is stuck (journalctl -u docker)",
                        archive.display(),
                        idle.as_secs(),
                        sent.load(Ordering::Relaxed),
                        total
                    );
                }
                progress(&LoadProgress {
                    sent: sent.load(Ordering::Relaxed),
                    total,
                    message: message.clone(),
                    seconds: t0.elapsed().as_secs(),
                });
            }
        }
    }
    progress(&LoadProgress {
        sent: sent.load(Ordering::Relaxed),
        total,
        message,
        seconds: t0.elapsed().as_secs(),
    });
    Ok(())
}

/// The id (`sha256:...`) of a local image, or None when it is not there.
pub async fn image_id(d: &Docker, reference: &str) -> Result<Option<String>> {
    match d.inspect_image(reference).await {
        Ok(info) => Ok(info.id),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("inspecting image {reference}")),
    }
}

/// A private dockerd: its own data root, exec root, socket and network
/// namespace, no bridge, no iptables, no IP forwarding, so it touches
/// neither the host's network nor another daemon. Stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    process: Process,
    socket: PathBuf,
    log: PathBuf,
    _exec: tempfile::TempDir,
}

impl Daemon {
    /// Starts dockerd on `data_root` and waits (up to `wait`) until it answers.
    pub fn start(data_root: &Path, wait: Duration) -> Result<Daemon> {
        std::fs::create_dir_all(data_root).with_context(|| format!("creating {}", data_root.display()))?;
        // A short path: unix socket paths are limited to 108 bytes.
        let exec = tempfile::Builder::new()
            .prefix("flypack-dockerd-")
            .tempdir_in("/run")
            .or_else(|_| tempfile::Builder::new().prefix("flypack-dockerd-").tempdir())
            .context("creating the private dockerd's exec root")?;
        let socket = exec.path().join("docker.sock");
        let log = exec.path().join("dockerd.log");
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // In a network namespace of its own: a daemon without a bridge
        // deletes the host's docker0 at start, and nothing it does may touch
        // the host's network.
        let process = Cmd::new("unshare")
            .args(["--net", "--", "dockerd"])
            .arg("--data-root")
            .arg(data_root)
            .arg("--exec-root")
            .arg(exec.path().join("exec"))
            .arg("--pidfile")
            .arg(exec.path().join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver=overlay2",
                "--log-level=warn",
            ])
            .spawn(
                Sink::File(log_file.try_clone()?),
                Sink::File(log_file),
                Duration::from_secs(60),
            )
            .context("starting a private dockerd")?;
        let mut daemon = Daemon {
            process,
            socket,
            log,
            _exec: exec,
        };
        let deadline = Instant::now() + wait;
        loop {
            if let Some(st) = daemon.process.try_wait()? {
                bail!("dockerd exited at once ({st}):\n{}", daemon.log_tail(20));
            }
            let ok = crate::rt::block_on(async {
                match client(Some(&daemon.socket)) {
                    Ok(d) => d.ping().await.is_ok(),
                    Err(_) => false,
                }
            })?;
            if ok {
                return Ok(daemon);
            }
            if Instant::now() >= deadline {
                bail!(
                    "a private dockerd did not answer within {} s:\n{}",
                    wait.as_secs(),
                    daemon.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The last lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        flypack_contracts::cmd::tail(&text, n)
    }

    /// Stops it and waits for it to exit (its data root is then consistent).
    pub fn stop(mut self) -> Result<()> {
        let st = self.process.stop().context("stopping the private dockerd")?;
        tracing::debug!("private dockerd exited: {st}");
        Ok(())
    }
}
