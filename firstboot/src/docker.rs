//! The one place firstboot talks to Docker (through bollard, API version
//! negotiated: Debian 12's Engine 20.10 speaks 1.41): load image archives
//! (checking their ids), and bring a compose stack up the way docker-compose
//! would, labelled so `docker-compose ps` and `logs` recognise it.
//! Idempotent: a container whose config-hash label matches is left alone; a
//! changed one is recreated, its named volumes kept.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountType, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ImportImageOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use flypack_contracts::compose::{Condition, Service, Source, Stack};
use flypack_contracts::manifest::ContainerImage;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// The docker-compose version the labels claim (Debian 12's docker-compose).
pub const COMPOSE_VERSION: &str = "1.29.2";

/// A running container's state, for the status and QA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Service name.
    pub name: String,
    /// `healthy`, `running`, `starting`, `unhealthy`, `exited`, `missing`.
    pub state: String,
    /// Whether the verdict depends on it.
    pub critical: bool,
    /// Container id (short).
    pub container: String,
    /// What was done: `created`, `recreated`, `started`, `unchanged`.
    pub action: String,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")
}

/// Connects to the local daemon, waiting up to `wait` for it to answer.
pub async fn connect(wait: Duration) -> Result<Docker> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = async {
            let d = Docker::connect_with_local_defaults()?.negotiate_version().await?;
            d.ping().await?;
            Ok::<_, bollard::errors::Error>(d)
        };
        match attempt.await {
            Ok(d) => return Ok(d),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("Docker not answering yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(anyhow!(e))
                    .context("the Docker daemon does not answer (systemctl status docker; journalctl -u docker)");
            }
        }
    }
}

/// Loads the archives whose images are not present with their expected ids,
/// then checks every id. A wrong archive checksum or id is an error.
pub async fn load_images(d: &Docker, root: &crate::root::Root, images: &[ContainerImage]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut by_archive: std::collections::BTreeMap<&str, Vec<&ContainerImage>> = Default::default();
    for i in images {
        by_archive.entry(i.archive.as_str()).or_default().push(i);
    }
    for (archive, imgs) in by_archive {
        let mut present = true;
        for i in &imgs {
            match d.inspect_image(&i.reference).await {
                Ok(info) if info.id.as_deref() == Some(i.id.as_str()) => {}
                _ => present = false,
            }
        }
        if present {
            continue;
        }
        let path = root.path(archive);
        let sum = flypack_contracts::digest::sha256_file(&path)
            .with_context(|| format!("image archive {archive} is missing or unreadable"))?;
        let want = &imgs[0].archive_sha256;
        if &sum != want {
            bail!("image archive {archive} is corrupt: SHA-256 {sum}, the manifest says {want}; reflash the unit");
        }
        let file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("opening {archive}"))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        let opts = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut out = d.import_image_stream(opts, stream, None);
        while let Some(r) = out.next().await {
            r.with_context(|| format!("loading {archive} into Docker"))?;
        }
        notes.push(format!("loaded {archive}"));
    }
    for i in images {
        let info = d
            .inspect_image(&i.reference)
            .await
            .with_context(|| format!("image {} missing after loading", i.reference))?;
        let id = info.id.unwrap_or_default();
        if id != i.id {
            bail!(
                "image {} has id {id}, the manifest says {}: the archive does not hold the image that was built; reflash the unit",
                i.reference,
                i.id
            );
        }
    }
    Ok(notes)
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

async fn state_of(d: &Docker, name: &str) -> Result<String> {
    let c = match d.inspect_container(name, None::<InspectContainerOptions>).await {
        Ok(c) => c,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok("missing".into()),
        Err(e) => return Err(e).with_context(|| format!("inspecting {name}")),
    };
    let st = c.state.unwrap_or_default();
    if let Some(h) = st.health.and_then(|h| h.status) {
        match h {
            HealthStatusEnum::HEALTHY => return Ok("healthy".into()),
            HealthStatusEnum::UNHEALTHY => return Ok("unhealthy".into()),
            HealthStatusEnum::STARTING => return Ok("starting".into()),
            _ => {}
        }
    }
    Ok(match st.status.map(|s| s.to_string()) {
        Some(s) => s,
        None => "unknown".into(),
    })
}

/// Brings `stack` up: networks, volumes, containers in dependency order,
/// waiting for each dependency's condition; then waits until every service
/// is healthy (or running, without a health check), up to `timeout`.
pub async fn up(
    d: &Docker,
    stack: &Stack,
    image_ids: &HashMap<String, String>,
    timeout: Duration,
) -> Result<Vec<ServiceState>> {
    let deadline = Instant::now() + timeout;
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
    // Like docker-compose (which binds with -v), a missing bind source is
    // made as a directory rather than failing the container.
    for s in &stack.services {
        for m in &s.mounts {
            if let Source::Bind { path } = &m.source {
                if !path.exists() {
                    std::fs::create_dir_all(path)
                        .with_context(|| format!("creating bind source {} for {}", path.display(), s.name))?;
                }
            }
        }
    }
    let mut out: Vec<ServiceState> = Vec::new();
    for s in &stack.services {
        for (dep, cond) in &s.depends_on {
            let want = |st: &str| match cond {
                Condition::ServiceHealthy => st == "healthy",
                Condition::ServiceStarted => matches!(st, "running" | "healthy" | "starting"),
            };
            loop {
                let st = state_of(d, &container_name(stack, dep)).await?;
                if want(&st) {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("{} waits for {dep} to be {:?}, but it is {st}", s.name, cond);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let image_id = image_ids.get(&s.image).cloned().unwrap_or_default();
        let hash = stack.config_hash(s, &image_id);
        let name = container_name(stack, &s.name);
        let existing = d.inspect_container(&name, None::<InspectContainerOptions>).await.ok();
        let current_hash = existing
            .as_ref()
            .and_then(|c| c.config.as_ref())
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get("com.docker.compose.config-hash").cloned());
        let mut action = "unchanged";
        if existing.is_some() && current_hash.as_deref() != Some(hash.as_str()) {
            d.stop_container(&name, Some(StopContainerOptionsBuilder::default().t(20).build()))
                .await
                .ok();
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
        let running = d
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            d.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>)
                .await
                .with_context(|| format!("starting {name}"))?;
            if action == "unchanged" {
                action = "started";
            }
        }
        let id = d
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.id)
            .unwrap_or_default();
        out.push(ServiceState {
            name: s.name.clone(),
            state: String::new(),
            critical: s.critical,
            container: id.chars().take(12).collect(),
            action: action.into(),
        });
    }
    // Wait for every service to settle.
    loop {
        let mut all = true;
        for o in out.iter_mut() {
            let s = stack.service(&o.name).expect("a stack service");
            o.state = state_of(d, &container_name(stack, &o.name)).await?;
            let ok = if s.health.is_some() {
                o.state == "healthy"
            } else {
                o.state == "running"
            };
            all &= ok;
        }
        if all || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(out)
}

/// The live state of every service of `stack`.
pub async fn states(d: &Docker, stack: &Stack) -> Result<Vec<ServiceState>> {
    let mut out = Vec::new();
    for s in &stack.services {
        let name = container_name(stack, &s.name);
        out.push(ServiceState {
            name: s.name.clone(),
            state: state_of(d, &name).await?,
            critical: s.critical,
            container: String::new(),
            action: String::new(),
        });
    }
    Ok(out)
}

/// Runs `f` on a fresh runtime (firstboot is synchronous).
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    runtime()?.block_on(f)
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
pub fn load_stack(root: &crate::root::Root) -> Result<Option<(flypack_contracts::compose::StackConfig, Stack)>> {
    load_stack_from(root, &root.path(flypack_contracts::compose::STACK_CONFIG))
}

/// Reads a stack config (paths in it are under `root`) and its compose file.
pub fn load_stack_from(
    root: &crate::root::Root,
    p: &Path,
) -> Result<Option<(flypack_contracts::compose::StackConfig, Stack)>> {
    let p = p.to_path_buf();
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let cfg: flypack_contracts::compose::StackConfig =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))?;
    let file = root.path(&cfg.compose);
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    // Paths inside the stack are the unit's paths, whatever the root.
    let stack = flypack_contracts::compose::parse(Path::new(&cfg.compose), &text, &cfg.profiles)?;
    Ok(Some((cfg, stack)))
}
