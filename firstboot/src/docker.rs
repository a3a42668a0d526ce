//! The one place firstboot talks to Docker (through the engine's bollard
//! client, API version negotiated: Debian 12's Engine 20.10 speaks 1.41):
//! check the images the disk image carries in Docker's store (or load
//! archives, for a stack outside an image), and bring a compose stack up the
//! way docker-compose would, labelled so `docker-compose ps` and `logs`
//! recognise it. Idempotent: a container whose config-hash label matches is
//! left alone; a changed one is recreated, its named volumes kept.
//!
//! No wait here is bounded by a clock that scales with the hardware: loading
//! is bounded by bytes moving, and waiting for a service by Docker's own
//! health probes (see [`Waiter`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::exec::StartExecResults;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointSettings, ExecConfig, HealthConfig, HealthStatusEnum,
    HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum, MountType, NetworkCreateRequest,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use flypack_contracts::manifest::ContainerImage;
pub use flypack_contracts::status::ServiceState as State;
use flypack_engine::compose::{Condition, Health, Service, Source, Stack};
use flypack_engine::docker as engine;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// The docker-compose version the labels claim (Debian 12's docker-compose).
pub const COMPOSE_VERSION: &str = "1.29.2";

/// How long the daemon may take to answer when firstboot starts (it starts
/// with the unit; a slow machine needs longer than a fast one, so this is
/// generous: it only bounds a daemon that never comes up).
pub const DAEMON_WAIT: Duration = Duration::from_secs(600);

/// After Docker has declared a service unhealthy (its start period and its
/// retries are spent), how many more failed probes before firstboot gives up
/// on it. Counted in probes, not seconds, so a slow machine gets as many
/// (at the stack's 30 s interval, two more minutes).
pub const EXTRA_PROBES: i64 = 4;

/// How often firstboot runs a health test itself while Docker still calls
/// the service "starting" (see [`Prober`]).
pub const OWN_PROBE_EVERY: Duration = Duration::from_secs(3);

/// Restarts after which a crashing service is given up on.
pub const MAX_RESTARTS: i64 = 5;

/// A stack service's container, for the status and QA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Service name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// Whether the verdict depends on it.
    pub critical: bool,
    /// Container id (short).
    pub container: String,
    /// What was done: `created`, `recreated`, `started`, `unchanged`, `restarted`.
    pub action: String,
    /// Why firstboot stopped waiting for it, when it is not up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<String>,
}

/// Connects to the local daemon (waiting up to [`DAEMON_WAIT`] for it), for
/// bringing the stack up. Its requests time out after [`engine::STALL`], not
/// bollard's 120 s: creating and starting a container (a network namespace,
/// a veth pair, firewall rules, runc) is work that scales with the machine,
/// and a starved first boot under emulation spent 295 s in the stack stage
/// and once needed a second attempt at it. A daemon that answers nothing for
/// the stall period is stuck, as everywhere else.
pub async fn connect() -> Result<Docker> {
    Ok(engine::connect(None, DAEMON_WAIT).await?.with_timeout(engine::STALL))
}

/// Connects to a daemon that should already be running (status, QA,
/// backups: after the stack stage), waiting at most 30 s.
pub async fn connect_running() -> Result<Docker> {
    engine::connect(None, Duration::from_secs(30)).await
}

/// Checks the images in Docker's store; loads the archives of those missing
/// (images built into the disk image have no archive: they must be there).
/// A load is bounded by progress, not by a clock; `progress` hears about it.
/// Returns notes on what was loaded.
pub async fn load_images(
    d: &Docker,
    root: &crate::root::Root,
    images: &[ContainerImage],
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut by_archive: std::collections::BTreeMap<&str, Vec<&ContainerImage>> = Default::default();
    for i in images {
        match i.archive.as_deref() {
            Some(a) => by_archive.entry(a).or_default().push(i),
            None => check_id(d, i).await.map(|_| ())?,
        }
    }
    for (archive, imgs) in by_archive {
        let mut present = true;
        for i in &imgs {
            present &= engine::image_id(d, &i.reference).await?.as_deref() == Some(i.id.as_str());
        }
        if present {
            continue;
        }
        let path = root.path(archive);
        progress(&format!("checking {archive}"));
        let sum = flypack_contracts::digest::sha256_file(&path)
            .with_context(|| format!("image archive {archive} is missing or unreadable"))?;
        if let Some(want) = &imgs[0].archive_sha256
            && &sum != want
        {
            bail!("image archive {archive} is corrupt: SHA-256 {sum}, the manifest says {want}; reflash the unit");
        }
        engine::load_archive(d, &path, engine::STALL, &mut |p| {
            progress(&format!(
                "loading {archive}: {} of {} MiB sent, Docker: {}",
                p.sent >> 20,
                p.total >> 20,
                p.message
            ))
        })
        .await?;
        notes.push(format!("loaded {archive}"));
    }
    for i in images {
        check_id(d, i).await?;
    }
    Ok(notes)
}

async fn check_id(d: &Docker, i: &ContainerImage) -> Result<()> {
    match engine::image_id(d, &i.reference).await? {
        Some(id) if id == i.id => Ok(()),
        Some(id) => bail!(
            "image {} has id {id}, the manifest says {}: Docker's store does not hold the image that was built; reflash the unit",
            i.reference,
            i.id
        ),
        None if i.archive.is_none() => bail!(
            "image {} is not in Docker's store (/var/lib/docker), where the build put it: the store was altered or \
             wiped; reflash the unit",
            i.reference
        ),
        None => bail!("image {} missing after loading its archive", i.reference),
    }
}

fn compose_labels(stack: &Stack, service: &str, hash: &str) -> HashMap<String, String> {
    let dir = stack.file.parent().map(|p| p.display().to_string()).unwrap_or_default();
    HashMap::from([
        ("com.docker.compose.project".into(), stack.project.clone()),
        ("com.docker.compose.service".into(), service.to_string()),
        ("com.docker.compose.container-number".into(), "1".into()),
        ("com.docker.compose.oneoff".into(), "False".into()),
        ("com.docker.compose.config-hash".into(), hash.to_string()),
        ("com.docker.compose.version".into(), COMPOSE_VERSION.into()),
        ("com.docker.compose.project.working_dir".into(), dir),
        (
            "com.docker.compose.project.config_files".into(),
            stack.file.display().to_string(),
        ),
    ])
}

/// docker-compose's names.
pub fn container_name(stack: &Stack, service: &str) -> String {
    format!("{}_{service}_1", stack.project)
}
/// Name of a project network.
pub fn network_name(stack: &Stack, net: &str) -> String {
    format!("{}_{net}", stack.project)
}
/// Creates a project volume unless it exists; returns its host path.
pub async fn ensure_volume(d: &Docker, stack: &Stack, v: &str) -> Result<std::path::PathBuf> {
    let name = volume_name(stack, v);
    if let Ok(info) = d.inspect_volume(&name).await {
        return Ok(info.mountpoint.into());
    }
    let info = d
        .create_volume(VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(HashMap::from([
                ("com.docker.compose.project".into(), stack.project.clone()),
                ("com.docker.compose.volume".into(), v.to_string()),
                ("com.docker.compose.version".into(), COMPOSE_VERSION.into()),
            ])),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating volume {name}"))?;
    Ok(info.mountpoint.into())
}

/// Name of a project volume.
pub fn volume_name(stack: &Stack, vol: &str) -> String {
    format!("{}_{vol}", stack.project)
}

/// The container spec for a service.
pub fn container_body(stack: &Stack, s: &Service, hash: &str) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = s.labels.clone().into_iter().collect();
    labels.extend(compose_labels(stack, &s.name, hash));
    let mounts: Vec<Mount> = s
        .mounts
        .iter()
        .map(|m| match &m.source {
            Source::Volume { name } => Mount {
                target: Some(m.target.clone()),
                source: Some(volume_name(stack, name)),
                typ: Some(MountType::VOLUME),
                read_only: Some(m.read_only),
                ..Default::default()
            },
            Source::Bind { path } => Mount {
                target: Some(m.target.clone()),
                source: Some(path.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(m.read_only),
                bind_options: m.propagation.as_ref().map(|p| MountBindOptions {
                    propagation: Some(match p.as_str() {
                        "rslave" => MountBindOptionsPropagationEnum::RSLAVE,
                        "slave" => MountBindOptionsPropagationEnum::SLAVE,
                        "rshared" => MountBindOptionsPropagationEnum::RSHARED,
                        "shared" => MountBindOptionsPropagationEnum::SHARED,
                        "private" => MountBindOptionsPropagationEnum::PRIVATE,
                        _ => MountBindOptionsPropagationEnum::RPRIVATE,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        })
        .collect();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in &s.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        exposed.push(key.clone());
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(vec![]))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let network_mode = match &s.network_mode {
        Some(m) => m.clone(),
        None => network_name(stack, s.networks.first().map(String::as_str).unwrap_or("default")),
    };
    let networking_config = s.network_mode.is_none().then(|| NetworkingConfig {
        endpoints_config: Some(
            s.networks
                .iter()
                .map(|n| {
                    (
                        network_name(stack, n),
                        EndpointSettings {
                            aliases: Some(vec![s.name.clone()]),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        ),
    });
    ContainerCreateBody {
        image: Some(s.image.clone()),
        cmd: s.command.clone(),
        entrypoint: s.entrypoint.clone(),
        env: Some(s.environment.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        user: s.user.clone(),
        working_dir: s.working_dir.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: s.health.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: Some(h.interval_ns),
            timeout: Some(h.timeout_ns),
            retries: Some(h.retries),
            start_period: Some(h.start_period_ns),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            mounts: Some(mounts),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            network_mode: Some(network_mode),
            pid_mode: s.pid.clone(),
            extra_hosts: (!s.extra_hosts.is_empty()).then(|| s.extra_hosts.clone()),
            cap_add: (!s.cap_add.is_empty()).then(|| s.cap_add.clone()),
            cap_drop: (!s.cap_drop.is_empty()).then(|| s.cap_drop.clone()),
            security_opt: (!s.security_opt.is_empty()).then(|| s.security_opt.clone()),
            readonly_rootfs: s.read_only.then_some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(match s.restart.as_str() {
                    "always" => RestartPolicyNameEnum::ALWAYS,
                    "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
                    "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                    _ => RestartPolicyNameEnum::NO,
                }),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        networking_config,
        ..Default::default()
    }
}

/// What Docker says about a service's container right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// Its state.
    pub state: Option<State>,
    /// Failed health probes in a row.
    pub failing_streak: i64,
    /// When the last health probe ended (Docker's timestamp).
    pub last_probe: Option<String>,
    /// What the last health probe printed.
    pub last_output: String,
    /// Times Docker restarted it.
    pub restarts: i64,
    /// Its last exit code, when it exited.
    pub exit_code: Option<i64>,
    /// Its short id.
    pub id: String,
}

impl Observed {
    fn state(&self) -> State {
        self.state.unwrap_or(State::Unknown)
    }
    /// What changes when Docker makes progress with it: a new probe, a new
    /// state, a restart.
    fn progress_key(&self) -> (Option<State>, Option<String>, i64) {
        (self.state, self.last_probe.clone(), self.restarts)
    }
}

/// Inspects a container.
pub async fn observe(d: &Docker, name: &str) -> Result<Observed> {
    let c = match d.inspect_container(name, None::<InspectContainerOptions>).await {
        Ok(c) => c,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            return Ok(Observed {
                state: Some(State::Missing),
                ..Default::default()
            });
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting {name}")),
    };
    let st = c.state.unwrap_or_default();
    let health = st.health.unwrap_or_default();
    let last = health.log.as_ref().and_then(|l| l.last());
    let container = match st.status {
        Some(ContainerStateStatusEnum::CREATED) => State::Created,
        Some(ContainerStateStatusEnum::RUNNING) => State::Running,
        Some(ContainerStateStatusEnum::PAUSED) => State::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => State::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => State::Removing,
        Some(ContainerStateStatusEnum::EXITED) => State::Exited,
        Some(ContainerStateStatusEnum::DEAD) => State::Dead,
        Some(ContainerStateStatusEnum::STOPPING) => State::Stopping,
        Some(ContainerStateStatusEnum::EMPTY) | None => State::Unknown,
    };
    // Health only means something while the container runs.
    let state = match (container, health.status) {
        (State::Running, Some(HealthStatusEnum::HEALTHY)) => State::Healthy,
        (State::Running, Some(HealthStatusEnum::UNHEALTHY)) => State::Unhealthy,
        (State::Running, Some(HealthStatusEnum::STARTING)) => State::Starting,
        (other, _) => other,
    };
    Ok(Observed {
        state: Some(state),
        failing_streak: health.failing_streak.unwrap_or(0),
        last_probe: last.and_then(|r| r.end.as_ref()).map(|t| format!("{t:?}")),
        last_output: last
            .and_then(|r| r.output.clone())
            .map(|o| o.trim().chars().take(200).collect())
            .unwrap_or_default(),
        restarts: c.restart_count.unwrap_or(0),
        exit_code: (!state.is_running()).then_some(st.exit_code).flatten(),
        id: c.id.unwrap_or_default().chars().take(12).collect(),
    })
}

/// Runs a service's health test once in its container, as Docker's probe
/// does (an exec as the container's user, bounded by the test's timeout).
/// `None` when it passes; otherwise what it said.
pub async fn probe(d: &Docker, container: &str, h: &Health) -> Option<String> {
    let cmd: Vec<String> = match h.test.split_first() {
        Some((k, rest)) if k == "CMD" => rest.to_vec(),
        Some((k, rest)) if k == "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), rest.join(" ")],
        _ => return Some(format!("no test to run: {:?}", h.test)),
    };
    let timeout = Duration::from_nanos(u64::try_from(h.timeout_ns).unwrap_or(0).max(1_000_000_000));
    let run = async {
        let exec = d
            .create_exec(
                container,
                ExecConfig {
                    cmd: Some(cmd),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let mut text = String::new();
        if let StartExecResults::Attached { mut output, .. } = d.start_exec(&exec.id, None).await? {
            while let Some(chunk) = output.next().await {
                if text.len() < 200 {
                    text.push_str(&chunk?.to_string());
                }
            }
        }
        let code = d.inspect_exec(&exec.id).await?.exit_code;
        Ok::<_, bollard::errors::Error>((code, text))
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Some(format!("the test took over {} s", timeout.as_secs())),
        Ok(Err(e)) => Some(format!("the test could not run: {e}")),
        Ok(Ok((Some(0), _))) => None,
        Ok(Ok((code, text))) => Some(format!(
            "exit code {}: {}",
            code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into()),
            text.trim().chars().take(200).collect::<String>()
        )),
    }
}

/// What firstboot sees of a stack's services: Docker's state, and, while
/// Docker still calls a service "starting", the service's own health test
/// run by firstboot (at most every [`OWN_PROBE_EVERY`]).
///
/// Why: a probe is an exec into the container (runc, a shim, a mount), a
/// second or more of CPU under emulation, so the stack probes every 30 s
/// once up; Docker 20.10 has no faster start interval and runs the first
/// probe one interval after the start. A passing test is what Docker's next
/// probe will report, so the service counts as healthy from then on; Docker's
/// own "unhealthy" or a stopped container always wins.
#[derive(Debug, Default)]
pub struct Prober {
    last: HashMap<String, Instant>,
    passed: HashMap<String, String>,
}

impl Prober {
    /// Observes one service of `stack`.
    pub async fn observe(&mut self, d: &Docker, stack: &Stack, s: &Service) -> Result<Observed> {
        let name = container_name(stack, &s.name);
        let mut o = observe(d, &name).await?;
        let Some(h) = s.health.as_ref().filter(|_| o.state() == State::Starting) else {
            self.passed.remove(&s.name);
            return Ok(o);
        };
        if !self.passed.contains_key(&s.name) && self.last.get(&s.name).is_none_or(|t| t.elapsed() >= OWN_PROBE_EVERY) {
            self.last.insert(s.name.clone(), Instant::now());
            match probe(d, &name, h).await {
                None => {
                    tracing::info!("stack: {}'s health test passed (firstboot's probe)", s.name);
                    self.passed
                        .insert(s.name.clone(), time::OffsetDateTime::now_utc().to_string());
                }
                Some(why) => {
                    tracing::debug!("stack: {}'s health test: {why}", s.name);
                    o.last_output = why;
                }
            }
        }
        if let Some(at) = self.passed.get(&s.name) {
            o.state = Some(State::Healthy);
            o.last_probe = Some(format!("firstboot's probe at {at}"));
        }
        Ok(o)
    }
}

/// What a wait wants of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Up: healthy, or running when it has no health check.
    Up,
    /// A dependency condition.
    Condition(Condition),
}

/// Decides, from what Docker reports, whether a service is where it should
/// be, still on its way, or lost; and whether anything at all is moving.
/// Nothing here counts wall-clock time against a service except
/// [`engine::STALL`], a whole period in which Docker reports no change at all
/// (no probe, no state change, no restart) for any service waited for.
#[derive(Debug)]
pub struct Waiter {
    seen: HashMap<String, (Option<State>, Option<String>, i64)>,
    last_change: Instant,
    started: Instant,
    stall: Duration,
}

/// A verdict on one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Where it should be.
    Reached,
    /// On its way.
    Waiting,
    /// Lost: why.
    GaveUp(String),
}

impl Waiter {
    /// A waiter that declares a stall after `stall` without any change.
    pub fn new(stall: Duration) -> Self {
        Waiter {
            seen: HashMap::new(),
            last_change: Instant::now(),
            started: Instant::now(),
            stall,
        }
    }

    /// Seconds since the wait began.
    pub fn seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Judges one service from what Docker reported.
    pub fn judge(&mut self, s: &Service, want: Want, o: &Observed) -> Verdict {
        let key = o.progress_key();
        if self.seen.get(&s.name) != Some(&key) {
            self.seen.insert(s.name.clone(), key);
            self.last_change = Instant::now();
        }
        let st = o.state();
        let reached = match want {
            Want::Up | Want::Condition(Condition::ServiceHealthy) if s.health.is_some() => st == State::Healthy,
            Want::Up | Want::Condition(Condition::ServiceHealthy) => st.is_up(false),
            Want::Condition(Condition::ServiceStarted) => st.is_running(),
        };
        if reached {
            return Verdict::Reached;
        }
        let retries = s.health.as_ref().map(|h| h.retries).unwrap_or(0);
        match st {
            State::Missing | State::Dead | State::Removing => Verdict::GaveUp(format!("its container is {st}")),
            State::Exited | State::Restarting if o.restarts >= MAX_RESTARTS => Verdict::GaveUp(format!(
                "it keeps crashing: restarted {} times, last exit code {} (docker logs for the reason)",
                o.restarts,
                o.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into())
            )),
            State::Exited if s.restart == "no" || s.restart.is_empty() => Verdict::GaveUp(format!(
                "it exited (code {}) and its restart policy is \"no\"",
                o.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into())
            )),
            State::Unhealthy if o.failing_streak >= retries + EXTRA_PROBES => Verdict::GaveUp(format!(
                "unhealthy: {} health probes failed in a row; the last said {:?}",
                o.failing_streak, o.last_output
            )),
            _ => Verdict::Waiting,
        }
    }

    /// An error once nothing has changed for the stall period.
    pub fn check_stall(&self, waiting_for: &str) -> Result<()> {
        let idle = self.last_change.elapsed();
        if idle >= self.stall {
            bail!(
                "Docker reported no change for {} s while waiting for {waiting_for} (no health probe, no state change): \
                 the daemon or the containers are stuck (journalctl -u docker; docker ps)",
                idle.as_secs()
            );
        }
        Ok(())
    }
}

/// Brings `stack` up: networks, volumes, containers in dependency order,
/// each after its dependencies meet their condition; then waits until every
/// service is up or given up on (see [`Waiter`]). `progress` hears what is
/// being waited for.
pub async fn up(
    d: &Docker,
    stack: &Stack,
    image_ids: &HashMap<String, String>,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Vec<ServiceState>> {
    for n in &stack.networks {
        let name = network_name(stack, n);
        if d.inspect_network(&name, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
            .is_err()
        {
            d.create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(HashMap::from([
                    ("com.docker.compose.project".into(), stack.project.clone()),
                    ("com.docker.compose.network".into(), n.clone()),
                    ("com.docker.compose.version".into(), COMPOSE_VERSION.into()),
                ])),
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating network {name}"))?;
        }
    }
    for v in &stack.volumes {
        ensure_volume(d, stack, v).await?;
    }
    remove_orphans(d, stack).await?;
    // Like docker-compose (which binds with -v), a missing bind source is
    // made as a directory rather than failing the container.
    for s in &stack.services {
        for m in &s.mounts {
            if let Source::Bind { path } = &m.source
                && !path.exists()
            {
                std::fs::create_dir_all(path)
                    .with_context(|| format!("creating bind source {} for {}", path.display(), s.name))?;
            }
        }
    }
    // Start every service whose dependencies meet their conditions, in the
    // compose order, together; the others wait for theirs (started services
    // are not held up by a slow dependency of another one).
    let mut out: Vec<ServiceState> = Vec::new();
    let mut pending: Vec<&Service> = stack.services.iter().collect();
    let mut waiter = Waiter::new(engine::STALL);
    let mut prober = Prober::default();
    while !pending.is_empty() {
        let mut blocked = Vec::new();
        let mut still = Vec::new();
        let mut ready_now: Vec<&Service> = Vec::new();
        let before = out.len();
        for s in pending {
            let mut ready = true;
            for (dep, cond) in &s.depends_on {
                let dep_svc = stack
                    .service(dep)
                    .with_context(|| format!("{} depends on unknown service {dep}", s.name))?;
                if !out.iter().any(|o| &o.name == dep) {
                    ready = false;
                    continue;
                }
                let o = prober.observe(d, stack, dep_svc).await?;
                match waiter.judge(dep_svc, Want::Condition(*cond), &o) {
                    Verdict::Reached => {}
                    Verdict::GaveUp(why) => {
                        bail!("{} cannot start: it needs {dep} ({cond:?}), and {dep} {why}", s.name)
                    }
                    Verdict::Waiting => {
                        ready = false;
                        blocked.push(format!(
                            "{dep} to be {} ({}{})",
                            want_text(*cond),
                            o.state(),
                            probes(&o)
                        ));
                    }
                }
            }
            if ready {
                ready_now.push(s);
            } else {
                still.push(s);
            }
        }
        // The services ready in this pass start together: creating and
        // starting a container is mostly waiting on dockerd, runc and the
        // firewall rules, and one at a time they took 38 s of a first boot
        // under emulation. A service that depends on one of them waits for
        // the next pass.
        let started =
            futures::future::try_join_all(ready_now.iter().map(|s| ensure_container(d, stack, s, image_ids))).await?;
        out.extend(started);
        if !still.is_empty() && out.len() == before && blocked.is_empty() {
            bail!(
                "services {:?} depend on services that never start (a dependency cycle?)",
                still.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
        }
        pending = still;
        if !pending.is_empty() && !blocked.is_empty() {
            let what = format!(
                "{} before starting {}",
                blocked.join(", "),
                pending.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            );
            waiter.check_stall(&what)?;
            progress(&format!("waiting {} s for {what}", waiter.seconds()));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    settle(d, stack, &mut out, &mut prober, progress).await?;
    Ok(out)
}

/// Waits until every service in `out` is up or given up on (see
/// [`Waiter`]), updating its state; `progress` hears what is waited for.
async fn settle(
    d: &Docker,
    stack: &Stack,
    out: &mut [ServiceState],
    prober: &mut Prober,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<()> {
    let mut waiter = Waiter::new(engine::STALL);
    loop {
        let mut waiting = Vec::new();
        for o in out.iter_mut().filter(|o| o.gave_up.is_none()) {
            let s = stack.service(&o.name).context("a stack service")?;
            let seen = prober.observe(d, stack, s).await?;
            o.state = seen.state();
            match waiter.judge(s, Want::Up, &seen) {
                Verdict::Reached => {}
                Verdict::Waiting => waiting.push(format!("{} ({}{})", o.name, o.state, probes(&seen))),
                Verdict::GaveUp(why) => {
                    tracing::warn!("giving up on {}: {why}", o.name);
                    o.gave_up = Some(why);
                }
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        let what = waiting.join(", ");
        waiter.check_stall(&what)?;
        progress(&format!("waiting {} s for {what}", waiter.seconds()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Restarts one service's container (as `docker restart` does: stop, with
/// 20 s to exit, then start) and waits until it is up again or given up on.
/// A name that is not one of the stack's services is refused.
pub async fn restart(
    d: &Docker,
    stack: &Stack,
    service: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ServiceState> {
    let Some(s) = stack.service(service) else {
        bail!(
            "{service:?} is not a service of this unit's stack ({}): nothing was restarted",
            stack
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let name = container_name(stack, &s.name);
    if observe(d, &name).await?.state() == State::Missing {
        bail!("{service} has no container: bring the stack up (firstboot stack up) instead");
    }
    d.restart_container(
        &name,
        Some(
            bollard::query_parameters::RestartContainerOptionsBuilder::default()
                .t(20)
                .build(),
        ),
    )
    .await
    .with_context(|| format!("restarting {name}"))?;
    let mut out = [ServiceState {
        name: s.name.clone(),
        state: State::Starting,
        critical: s.critical,
        container: String::new(),
        action: "restarted".into(),
        gave_up: None,
    }];
    // Docker resets the health to "starting" on a start; our own probe
    // answers before its first one (see [`Prober`]).
    settle(d, stack, &mut out, &mut Prober::default(), progress).await?;
    let [mut st] = out;
    st.container = observe(d, &name).await?.id;
    Ok(st)
}

fn want_text(c: Condition) -> &'static str {
    match c {
        Condition::ServiceHealthy => "healthy",
        Condition::ServiceStarted => "started",
    }
}

fn probes(o: &Observed) -> String {
    if o.failing_streak > 0 {
        format!(", {} probes failed", o.failing_streak)
    } else {
        String::new()
    }
}

/// Creates (or recreates, when its config changed) and starts one service's
/// container.
async fn ensure_container(
    d: &Docker,
    stack: &Stack,
    s: &Service,
    image_ids: &HashMap<String, String>,
) -> Result<ServiceState> {
    let image_id = image_ids.get(&s.image).cloned().unwrap_or_default();
    let hash = stack.config_hash(s, &image_id);
    let name = container_name(stack, &s.name);
    let existing = match d.inspect_container(&name, None::<InspectContainerOptions>).await {
        Ok(c) => Some(c),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => None,
        Err(e) => return Err(e).with_context(|| format!("inspecting {name}")),
    };
    let current_hash = existing
        .as_ref()
        .and_then(|c| c.config.as_ref())
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get("com.docker.compose.config-hash").cloned());
    let mut action = "unchanged";
    if existing.is_some() && current_hash.as_deref() != Some(hash.as_str()) {
        // A container that is already stopped cannot be stopped: the
        // removal below is what must succeed.
        if let Err(e) = d
            .stop_container(&name, Some(StopContainerOptionsBuilder::default().t(20).build()))
            .await
        {
            tracing::debug!("stopping {name} before recreating it: {e}");
        }
        d.remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .with_context(|| format!("removing {name} to recreate it"))?;
        action = "recreated";
    }
    if existing.is_none() || action == "recreated" {
        d.create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            container_body(stack, s, &hash),
        )
        .await
        .with_context(|| format!("creating {name}"))?;
        if action != "recreated" {
            action = "created";
        }
    }
    let o = observe(d, &name).await?;
    if !o.state().is_running() && o.state() != State::Restarting {
        d.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .with_context(|| format!("starting {name}"))?;
        if action == "unchanged" {
            action = "started";
        }
    }
    let o = observe(d, &name).await?;
    tracing::info!("stack: {} {action}, {}", s.name, o.state());
    Ok(ServiceState {
        name: s.name.clone(),
        state: o.state(),
        critical: s.critical,
        container: o.id,
        action: action.into(),
        gave_up: None,
    })
}

/// The live state of every service of `stack`.
pub async fn states(d: &Docker, stack: &Stack) -> Result<Vec<ServiceState>> {
    let mut out = Vec::new();
    // Together: a starting service's probe is an exec of a second or more.
    let seen = futures::future::try_join_all(
        stack
            .services
            .iter()
            .map(|s| async move { Prober::default().observe(d, stack, s).await }),
    )
    .await?;
    for (s, o) in stack.services.iter().zip(seen) {
        out.push(ServiceState {
            name: s.name.clone(),
            state: o.state(),
            critical: s.critical,
            container: o.id,
            action: String::new(),
            gave_up: None,
        });
    }
    Ok(out)
}

/// Runs `f` on a runtime (firstboot is synchronous).
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    flypack_engine::rt::block_on(f)?
}

/// Stops and removes the project's containers of services the stack no
/// longer has (a profile turned off: `[central]` gone from the unit config),
/// as `docker-compose up --remove-orphans` does. Their volumes stay.
async fn remove_orphans(d: &Docker, stack: &Stack) -> Result<()> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.compose.project={}", stack.project)],
        )]))
        .build();
    for c in d
        .list_containers(Some(opts))
        .await
        .context("listing the project's containers")?
    {
        let service = c
            .labels
            .as_ref()
            .and_then(|l| l.get("com.docker.compose.service"))
            .cloned()
            .unwrap_or_default();
        if stack.service(&service).is_some() {
            continue;
        }
        let Some(id) = c.id else { continue };
        tracing::info!("stack: removing {service}, which the stack no longer has");
        if let Err(e) = d
            .stop_container(&id, Some(StopContainerOptionsBuilder::default().t(20).build()))
            .await
        {
            tracing::debug!("stopping {service} before removing it: {e}");
        }
        d.remove_container(&id, Some(RemoveContainerOptionsBuilder::default().force(true).build()))
            .await
            .with_context(|| format!("removing {service}, which the stack no longer has"))?;
    }
    Ok(())
}

/// Lists the project's containers (for tests and diagnostics).
pub async fn project_containers(d: &Docker, project: &str) -> Result<Vec<String>> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.compose.project={project}")],
        )]))
        .build();
    Ok(d.list_containers(Some(opts))
        .await?
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect())
}

/// Reads the image's stack config and its compose file from under `root`.
pub fn load_stack(root: &crate::root::Root) -> Result<Option<(flypack_contracts::stack::StackConfig, Stack)>> {
    load_stack_from(root, &root.path(flypack_contracts::stack::STACK_CONFIG))
}

/// Reads a stack config (paths in it are under `root`) and its compose file.
pub fn load_stack_from(
    root: &crate::root::Root,
    p: &Path,
) -> Result<Option<(flypack_contracts::stack::StackConfig, Stack)>> {
    let p = p.to_path_buf();
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let cfg: flypack_contracts::stack::StackConfig =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))?;
    let file = root.path(&cfg.compose);
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    // The profiles the unit turns on besides the image's: COMPOSE_PROFILES
    // in the .env beside the compose file, as docker-compose reads it
    // (firstboot writes it from the unit config: `central`).
    let mut profiles = cfg.profiles.clone();
    let dotenv = file.with_file_name(".env");
    match std::fs::read_to_string(&dotenv) {
        Ok(t) => {
            for p in flypack_engine::compose::dotenv_profiles(&t)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dotenv.display()))?
            {
                if !profiles.contains(&p) {
                    profiles.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", dotenv.display())),
    }
    // Paths inside the stack are the unit's paths, whatever the root.
    let mut stack = flypack_engine::compose::parse(Path::new(&cfg.compose), &text, &profiles)?;
    stack
        .read_env_files(|p| std::fs::read_to_string(root.path(p)))
        .map_err(anyhow::Error::msg)?;
    Ok(Some((cfg, stack)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Stack {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/monitoring/docker-compose.yml");
        let text = std::fs::read_to_string(&file).unwrap();
        flypack_engine::compose::parse(&file, &text, &[]).unwrap()
    }

    fn seen(state: State, streak: i64, restarts: i64, probe: &str) -> Observed {
        Observed {
            state: Some(state),
            failing_streak: streak,
            last_probe: (!probe.is_empty()).then(|| probe.to_string()),
            last_output: "connection refused".into(),
            restarts,
            exit_code: (!state.is_running()).then_some(1),
            id: "abc".into(),
        }
    }

    #[test]
    fn waits_are_judged_by_docker_not_by_the_clock() {
        let st = stack();
        let vm = st.service("victoriametrics").unwrap(); // health check, 5 retries
        let healthy = Want::Condition(Condition::ServiceHealthy);
        let started = Want::Condition(Condition::ServiceStarted);
        let cases: &[(Want, Observed, &str)] = &[
            (Want::Up, seen(State::Healthy, 0, 0, "t1"), "reached"),
            (Want::Up, seen(State::Running, 0, 0, ""), "waiting"),
            (Want::Up, seen(State::Starting, 3, 0, "t1"), "waiting"),
            (started, seen(State::Starting, 0, 0, ""), "reached"),
            (healthy, seen(State::Starting, 0, 0, ""), "waiting"),
            (Want::Up, seen(State::Unhealthy, 5, 0, "t1"), "waiting"),
            (Want::Up, seen(State::Unhealthy, 8, 0, "t1"), "waiting"),
            (
                Want::Up,
                seen(State::Unhealthy, 9, 0, "t1"),
                "unhealthy: 9 health probes",
            ),
            (Want::Up, seen(State::Restarting, 0, 4, ""), "waiting"),
            (
                Want::Up,
                seen(State::Restarting, 0, 5, ""),
                "keeps crashing: restarted 5 times",
            ),
            (Want::Up, seen(State::Exited, 0, 1, ""), "waiting"),
            (Want::Up, seen(State::Missing, 0, 0, ""), "its container is missing"),
            (Want::Up, seen(State::Dead, 0, 0, ""), "its container is dead"),
            (Want::Up, seen(State::Created, 0, 0, ""), "waiting"),
        ];
        for (want, o, expect) in cases {
            let mut w = Waiter::new(Duration::from_secs(600));
            let got = match w.judge(vm, *want, o) {
                Verdict::Reached => "reached".to_string(),
                Verdict::Waiting => "waiting".to_string(),
                Verdict::GaveUp(why) => why,
            };
            assert!(got.contains(expect), "{want:?} {o:?}: {got}");
        }
    }

    #[test]
    fn a_service_without_a_health_check_is_up_when_running() {
        let st = stack();
        let mut svc = st.service("vmagent").unwrap().clone();
        svc.health = None;
        svc.restart = "no".into();
        let mut w = Waiter::new(Duration::from_secs(600));
        assert_eq!(
            w.judge(&svc, Want::Up, &seen(State::Running, 0, 0, "")),
            Verdict::Reached
        );
        let exited = w.judge(&svc, Want::Up, &seen(State::Exited, 0, 0, ""));
        assert!(
            matches!(&exited, Verdict::GaveUp(why) if why.contains("restart policy is \"no\"")),
            "{exited:?}"
        );
    }

    #[test]
    fn only_a_period_without_any_change_is_a_stall() {
        let st = stack();
        let vm = st.service("victoriametrics").unwrap();
        let mut w = Waiter::new(Duration::from_millis(300));
        w.judge(vm, Want::Up, &seen(State::Starting, 1, 0, "t1"));
        std::thread::sleep(Duration::from_millis(200));
        // A new probe result is progress: the stall clock starts again.
        w.judge(vm, Want::Up, &seen(State::Starting, 2, 0, "t2"));
        std::thread::sleep(Duration::from_millis(200));
        w.check_stall("victoriametrics").unwrap();
        // The same probe seen again is not.
        w.judge(vm, Want::Up, &seen(State::Starting, 2, 0, "t2"));
        std::thread::sleep(Duration::from_millis(150));
        let e = w.check_stall("victoriametrics").unwrap_err().to_string();
        assert!(e.contains("Docker reported no change for"), "{e}");
        assert!(e.contains("waiting for victoriametrics"), "{e}");
    }
}
