//! The compose subset: the monitoring stack's declaration
//! (`compose/*/docker-compose.yml`) as firstboot brings it up through the
//! Docker API. Every key outside the subset is an error with its key path
//! (`services.vmagent.deploy: unknown field`), never silently ignored.
//!
//! [`RawCompose`] is what serde reads; [`validate`] resolves and checks it
//! into a [`Stack`]: ports, volumes and durations parsed, dependencies known
//! and acyclic, services in start order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use flypack_contracts::config::{ConfigError, ConfigErrors};

/// Label marking a service whose health decides GO / NO-GO.
pub const CRITICAL_LABEL: &str = "org.flypack.critical";

/// A command: a list, or a string split on whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawCommand {
    /// `["a", "b"]`.
    List(Vec<String>),
    /// `"a b"`.
    Line(String),
}

impl RawCommand {
    fn to_vec(&self) -> Vec<String> {
        match self {
            RawCommand::List(v) => v.clone(),
            RawCommand::Line(s) => s.split_whitespace().map(str::to_string).collect(),
        }
    }
}

/// A map, or a list of `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawKeyValues {
    /// `{KEY: value}` (values may be numbers or booleans in YAML).
    Map(BTreeMap<String, yaml_serde::Value>),
    /// `["KEY=value"]`.
    List(Vec<String>),
}

impl Default for RawKeyValues {
    fn default() -> Self {
        RawKeyValues::List(Vec::new())
    }
}

impl RawKeyValues {
    fn to_map(&self) -> Result<BTreeMap<String, String>, String> {
        match self {
            RawKeyValues::Map(m) => m
                .iter()
                .map(|(k, v)| {
                    let s = match v {
                        yaml_serde::Value::String(s) => s.clone(),
                        yaml_serde::Value::Bool(b) => b.to_string(),
                        yaml_serde::Value::Number(n) => n.to_string(),
                        yaml_serde::Value::Null => String::new(),
                        _ => return Err(format!("{k}: expected a string, number or boolean")),
                    };
                    Ok((k.clone(), s))
                })
                .collect(),
            RawKeyValues::List(l) => l
                .iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => Ok((k.to_string(), v.to_string())),
                    None => Ok((e.clone(), String::new())),
                })
                .collect(),
        }
    }
}

/// `depends_on`: a list of services, or a map with conditions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawDependsOn {
    /// `[a, b]`: started.
    List(Vec<String>),
    /// `{a: {condition: service_healthy}}`.
    Map(BTreeMap<String, RawDependency>),
}

impl Default for RawDependsOn {
    fn default() -> Self {
        RawDependsOn::List(Vec::new())
    }
}

/// One dependency with a condition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDependency {
    /// `service_started` or `service_healthy`.
    pub condition: String,
}

/// `healthcheck`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]`, or a shell string.
    #[serde(default)]
    pub test: Option<RawCommand>,
    /// Between checks.
    #[serde(default)]
    pub interval: Option<String>,
    /// One check's timeout.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Failures before unhealthy.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Grace period.
    #[serde(default)]
    pub start_period: Option<String>,
    /// Turns the image's healthcheck off.
    #[serde(default)]
    pub disable: bool,
}

/// A service as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Image reference.
    pub image: String,
    /// Command.
    #[serde(default)]
    pub command: Option<RawCommand>,
    /// Entrypoint.
    #[serde(default)]
    pub entrypoint: Option<RawCommand>,
    /// Environment.
    #[serde(default)]
    pub environment: RawKeyValues,
    /// Files of `KEY=VALUE` lines, relative to the compose file's folder,
    /// read when the stack is brought up (what `environment` sets wins).
    #[serde(default)]
    pub env_file: Vec<String>,
    /// Published ports (short syntax).
    #[serde(default)]
    pub ports: Vec<String>,
    /// Volumes (short syntax).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Networks.
    #[serde(default)]
    pub networks: Vec<String>,
    /// `host`, `bridge` or `none`.
    #[serde(default)]
    pub network_mode: Option<String>,
    /// `host`.
    #[serde(default)]
    pub pid: Option<String>,
    /// Health check.
    #[serde(default)]
    pub healthcheck: Option<RawHealthcheck>,
    /// Start order and conditions.
    #[serde(default)]
    pub depends_on: RawDependsOn,
    /// Restart policy.
    #[serde(default)]
    pub restart: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: RawKeyValues,
    /// Compose profiles the service belongs to (none: always on).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// `host:ip` entries for /etc/hosts (`host-gateway` allowed).
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// Added capabilities.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Dropped capabilities (`ALL` drops every one).
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Security options (`no-new-privileges=true`).
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// A read-only root filesystem.
    #[serde(default)]
    pub read_only: bool,
    /// User.
    #[serde(default)]
    pub user: Option<String>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// A named volume's definition (only labels).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVolume {
    /// Labels.
    #[serde(default)]
    pub labels: RawKeyValues,
}

/// A network's definition (only the bridge driver).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// `bridge`.
    #[serde(default)]
    pub driver: Option<String>,
}

/// A compose file as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompose {
    /// Compose file format version (informative).
    #[serde(default)]
    pub version: Option<String>,
    /// Services.
    pub services: BTreeMap<String, RawService>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<RawVolume>>,
    /// Networks.
    #[serde(default)]
    pub networks: BTreeMap<String, Option<RawNetwork>>,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// Host address ("" = all).
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Source {
    /// A named volume (project-scoped).
    Volume {
        /// Name in the compose file.
        name: String,
    },
    /// A host path (relative paths resolved against the compose file's folder).
    Bind {
        /// Absolute host path.
        path: PathBuf,
    },
}

/// A mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Source.
    pub source: Source,
    /// Path in the container.
    pub target: String,
    /// Read only.
    pub read_only: bool,
    /// Bind propagation (`rslave`, ...), if given.
    pub propagation: Option<String>,
}

/// A health check, durations in nanoseconds (Docker's unit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Test command.
    pub test: Vec<String>,
    /// Interval.
    pub interval_ns: i64,
    /// Timeout.
    pub timeout_ns: i64,
    /// Retries.
    pub retries: i64,
    /// Start period.
    pub start_period_ns: i64,
}

/// A dependency condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The dependency runs.
    ServiceStarted,
    /// The dependency is healthy.
    ServiceHealthy,
}

/// A resolved service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Command.
    pub command: Option<Vec<String>>,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Environment, sorted (after [`Stack::read_env_files`], with the
    /// env files' keys too).
    pub environment: BTreeMap<String, String>,
    /// Env files (unit paths), read by [`Stack::read_env_files`].
    pub env_files: Vec<PathBuf>,
    /// Ports.
    pub ports: Vec<Port>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Networks (empty with a network_mode).
    pub networks: Vec<String>,
    /// `host`, `bridge`, `none`, or None for the project networks.
    pub network_mode: Option<String>,
    /// `host` or None.
    pub pid: Option<String>,
    /// Health check (None: none, or disabled).
    pub health: Option<Health>,
    /// Dependencies.
    pub depends_on: BTreeMap<String, Condition>,
    /// Restart policy (`no`, `always`, `unless-stopped`, `on-failure`).
    pub restart: String,
    /// Labels from the file.
    pub labels: BTreeMap<String, String>,
    /// Extra /etc/hosts entries.
    pub extra_hosts: Vec<String>,
    /// Capabilities added.
    pub cap_add: Vec<String>,
    /// Capabilities dropped.
    pub cap_drop: Vec<String>,
    /// Security options.
    pub security_opt: Vec<String>,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// User.
    pub user: Option<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Whether its health decides the verdict.
    pub critical: bool,
}

/// A resolved stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stack {
    /// Project name (the compose file's folder name, as docker-compose uses).
    pub project: String,
    /// The compose file.
    pub file: PathBuf,
    /// Active services in start order (dependencies first).
    pub services: Vec<Service>,
    /// Named volumes used by active services.
    pub volumes: Vec<String>,
    /// Networks used by active services.
    pub networks: Vec<String>,
}

impl Stack {
    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Images the active services need.
    pub fn images(&self) -> BTreeSet<String> {
        self.services.iter().map(|s| s.image.clone()).collect()
    }

    /// Reads every active service's env files (with `read`, which maps a
    /// unit path to its contents) into its environment; keys the compose
    /// file sets win, as with docker-compose. A missing or malformed file is
    /// an error naming it: the service would start without its settings.
    pub fn read_env_files(&mut self, read: impl Fn(&Path) -> std::io::Result<String>) -> Result<(), String> {
        for s in &mut self.services {
            let mut from_files = BTreeMap::new();
            for f in &s.env_files {
                let text = read(f).map_err(|e| format!("service {}: env file {}: {e}", s.name, f.display()))?;
                let vars =
                    parse_env_file(&text).map_err(|e| format!("service {}: env file {}: {e}", s.name, f.display()))?;
                from_files.extend(vars);
            }
            for (k, v) in from_files {
                s.environment.entry(k).or_insert(v);
            }
        }
        Ok(())
    }

    /// The digest docker-compose calls config-hash: a change recreates the container.
    pub fn config_hash(&self, service: &Service, image_id: &str) -> String {
        let json = serde_json::to_vec(&(service, image_id)).expect("a service serialises");
        flypack_contracts::digest::sha256_hex(&json)
    }
}

/// The most an env file may hold (they are a few lines; read without trust).
const MAX_ENV_FILE: usize = 64 * 1024;

/// Parses an env file as docker-compose does: `KEY=VALUE` lines taken
/// literally (no quotes, no expansion), blank lines and `#` comments
/// skipped. A key is letters, digits, `_` and `.`, not starting with a digit;
/// a value holds no control character.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    if text.len() > MAX_ENV_FILE {
        return Err(format!("{} bytes: at most {MAX_ENV_FILE}", text.len()));
    }
    let mut vars = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let key_ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !key_ok {
            return Err(format!("line {}: {key:?} is not a variable name", n + 1));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("line {}: the value of {key} holds a control character", n + 1));
        }
        vars.insert(key.to_string(), value.to_string());
    }
    Ok(vars)
}

/// The profiles a compose folder's `.env` enables (`COMPOSE_PROFILES=a,b`,
/// as docker-compose reads it); none when the line is absent.
pub fn dotenv_profiles(text: &str) -> Result<Vec<String>, String> {
    let vars = parse_env_file(text)?;
    Ok(vars
        .get("COMPOSE_PROFILES")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default())
}

/// Parses a duration like `5s`, `1m30s`, `500ms`, `2h`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        total += v * match unit.as_str() {
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(std::time::Duration::from_secs_f64(total))
}

fn parse_port(s: &str) -> Result<Port, String> {
    let bad = || format!("{s:?}: expected HOST:CONTAINER[/tcp|udp] or IP:HOST:CONTAINER (e.g. \"8428:8428\")");
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((a, p)) if p == "tcp" || p == "udp" => (a, p.to_string()),
        Some(_) => return Err(bad()),
        None => (s, "tcp".to_string()),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (container, host, ip) = match parts.as_slice() {
        [c, h] => (*c, *h, ""),
        [c, h, ip] => (*c, *h, *ip),
        _ => return Err(bad()),
    };
    Ok(Port {
        host_ip: ip.to_string(),
        host_port: host.parse().map_err(|_| bad())?,
        container_port: container.parse().map_err(|_| bad())?,
        protocol,
    })
}

fn parse_mount(s: &str, base: &Path, volumes: &BTreeMap<String, Option<RawVolume>>) -> Result<Mount, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, target, opts) = match parts.as_slice() {
        [src, target] => (*src, *target, ""),
        [src, target, opts] => (*src, *target, *opts),
        _ => {
            return Err(format!(
                "{s:?}: expected SOURCE:TARGET[:OPTIONS] (anonymous volumes are not supported)"
            ));
        }
    };
    if !target.starts_with('/') {
        return Err(format!("{s:?}: the container path must be absolute"));
    }
    let mut read_only = false;
    let mut propagation = None;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "rslave" | "slave" | "rshared" | "shared" | "rprivate" | "private" => propagation = Some(o.to_string()),
            other => {
                return Err(format!(
                    "{s:?}: mount option {other:?} is not supported (ro, rw, rslave, slave, rshared, shared, rprivate, private)"
                ));
            }
        }
    }
    let source = if src.starts_with('/') {
        Source::Bind {
            path: PathBuf::from(src),
        }
    } else if src.starts_with("./") || src.starts_with("../") || src == "." {
        Source::Bind { path: base.join(src) }
    } else if volumes.contains_key(src) {
        Source::Volume { name: src.to_string() }
    } else {
        return Err(format!(
            "{s:?}: {src:?} is neither a path nor a volume declared under the top-level volumes"
        ));
    };
    if propagation.is_some() && matches!(source, Source::Volume { .. }) {
        return Err(format!("{s:?}: propagation applies to bind mounts only"));
    }
    Ok(Mount {
        source,
        target: target.to_string(),
        read_only,
        propagation,
    })
}

/// Parses and validates a compose file with the given profiles enabled.
pub fn parse(file: &Path, text: &str, profiles: &[String]) -> Result<Stack, ConfigErrors> {
    let raw: RawCompose = {
        let de = yaml_serde::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            // The YAML error repeats the path and the position; we give both
            // separately.
            let mut message = inner.to_string();
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            if let Some((prefix, rest)) = message.split_once(": ")
                && !prefix.contains(' ')
            {
                message = rest.to_string();
            }
            ConfigErrors(vec![ConfigError {
                file: file.display().to_string(),
                line: inner.location().map(|l| l.line()),
                key: if key.is_empty() || key == "." { ".".into() } else { key },
                message,
            }])
        })?
    };
    validate(file, raw, profiles)
}

/// Checks a parsed compose file.
pub fn validate(file: &Path, raw: RawCompose, profiles: &[String]) -> Result<Stack, ConfigErrors> {
    let mut errs = Vec::new();
    let mut err = |key: String, msg: String| errs.push(ConfigError::new(file, key, msg));
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let project = base
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect::<String>()
        })
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".into());
    for (n, net) in &raw.networks {
        if let Some(d) = net.as_ref().and_then(|n| n.driver.as_deref())
            && d != "bridge"
        {
            err(
                format!("networks.{n}.driver"),
                format!("{d:?}: only \"bridge\" is supported"),
            );
        }
    }
    let active: BTreeSet<&str> = raw
        .services
        .iter()
        .filter(|(_, s)| s.profiles.is_empty() || s.profiles.iter().any(|p| profiles.contains(p)))
        .map(|(n, _)| n.as_str())
        .collect();
    let mut services = BTreeMap::new();
    for (name, s) in &raw.services {
        let k = format!("services.{name}");
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            err(
                k.clone(),
                format!("{name:?}: service names are letters, digits, '-' and '_'"),
            );
        }
        if s.image.trim().is_empty() {
            err(
                format!("{k}.image"),
                "an image is required (the builder puts it inside the disk image)".into(),
            );
        }
        let environment = s.environment.to_map().unwrap_or_else(|e| {
            err(format!("{k}.environment"), e);
            BTreeMap::new()
        });
        let mut env_files = Vec::new();
        for (i, f) in s.env_file.iter().enumerate() {
            let p = Path::new(f);
            if p.is_absolute()
                || p.components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
            {
                err(
                    format!("{k}.env_file[{i}]"),
                    format!("{f:?}: an env file is a path inside the compose file's folder (no '..', not absolute)"),
                );
            } else {
                env_files.push(base.join(p));
            }
        }
        let labels = s.labels.to_map().unwrap_or_else(|e| {
            err(format!("{k}.labels"), e);
            BTreeMap::new()
        });
        let mut ports = Vec::new();
        for (i, p) in s.ports.iter().enumerate() {
            match parse_port(p) {
                Ok(p) => ports.push(p),
                Err(e) => err(format!("{k}.ports[{i}]"), e),
            }
        }
        let mut mounts = Vec::new();
        for (i, v) in s.volumes.iter().enumerate() {
            match parse_mount(v, &base, &raw.volumes) {
                Ok(m) => mounts.push(m),
                Err(e) => err(format!("{k}.volumes[{i}]"), e),
            }
        }
        if let Some(m) = &s.network_mode {
            if !matches!(m.as_str(), "host" | "bridge" | "none") {
                err(
                    format!("{k}.network_mode"),
                    format!("{m:?}: expected host, bridge or none"),
                );
            }
            if !s.networks.is_empty() {
                err(
                    format!("{k}.networks"),
                    "networks cannot be combined with network_mode".into(),
                );
            }
            if m == "host" && !ports.is_empty() {
                err(
                    format!("{k}.ports"),
                    "a service on the host network publishes no ports: it listens on the host directly".into(),
                );
            }
        }
        for (i, n) in s.networks.iter().enumerate() {
            if !raw.networks.contains_key(n) && n != "default" {
                err(
                    format!("{k}.networks[{i}]"),
                    format!("{n:?} is not declared under the top-level networks"),
                );
            }
        }
        if let Some(p) = &s.pid
            && p != "host"
        {
            err(format!("{k}.pid"), format!("{p:?}: only \"host\" is supported"));
        }
        let restart = s.restart.clone().unwrap_or_else(|| "no".into());
        if !matches!(restart.as_str(), "no" | "always" | "unless-stopped" | "on-failure") {
            err(
                format!("{k}.restart"),
                format!("{restart:?}: expected no, always, unless-stopped or on-failure"),
            );
        }
        let health = match &s.healthcheck {
            None => None,
            Some(h) if h.disable => None,
            Some(h) => {
                let dur = |key: &str, v: &Option<String>, default: u64, err: &mut dyn FnMut(String, String)| -> i64 {
                    match v {
                        None => (default * 1_000_000_000) as i64,
                        Some(t) => match parse_duration(t) {
                            Some(d) => d.as_nanos() as i64,
                            None => {
                                err(
                                    format!("{k}.healthcheck.{key}"),
                                    format!("{t:?} is not a duration (e.g. \"5s\", \"1m30s\")"),
                                );
                                0
                            }
                        },
                    }
                };
                let test = match &h.test {
                    Some(RawCommand::List(v)) => {
                        if !matches!(v.first().map(String::as_str), Some("CMD" | "CMD-SHELL" | "NONE")) {
                            err(
                                format!("{k}.healthcheck.test"),
                                "a list test starts with CMD, CMD-SHELL or NONE".into(),
                            );
                        }
                        v.clone()
                    }
                    Some(RawCommand::Line(l)) => vec!["CMD-SHELL".to_string(), l.clone()],
                    None => {
                        err(format!("{k}.healthcheck.test"), "a health check needs a test".into());
                        vec![]
                    }
                };
                Some(Health {
                    test,
                    interval_ns: dur("interval", &h.interval, 30, &mut err),
                    timeout_ns: dur("timeout", &h.timeout, 30, &mut err),
                    retries: h.retries.unwrap_or(3) as i64,
                    start_period_ns: dur("start_period", &h.start_period, 0, &mut err),
                })
            }
        };
        let mut depends_on = BTreeMap::new();
        match &s.depends_on {
            RawDependsOn::List(l) => {
                for d in l {
                    depends_on.insert(d.clone(), Condition::ServiceStarted);
                }
            }
            RawDependsOn::Map(m) => {
                for (d, c) in m {
                    let cond = match c.condition.as_str() {
                        "service_started" => Condition::ServiceStarted,
                        "service_healthy" => Condition::ServiceHealthy,
                        other => {
                            err(
                                format!("{k}.depends_on.{d}.condition"),
                                format!("{other:?}: expected service_started or service_healthy"),
                            );
                            Condition::ServiceStarted
                        }
                    };
                    depends_on.insert(d.clone(), cond);
                }
            }
        }
        for (d, c) in &depends_on {
            match raw.services.get(d) {
                None => err(
                    format!("{k}.depends_on.{d}"),
                    format!("{d:?} is not a service of this file"),
                ),
                Some(ds) => {
                    if *c == Condition::ServiceHealthy && ds.healthcheck.as_ref().is_none_or(|h| h.disable) {
                        err(
                            format!("{k}.depends_on.{d}.condition"),
                            format!("service_healthy needs a healthcheck on {d:?}"),
                        );
                    }
                    if active.contains(name.as_str()) && !active.contains(d.as_str()) {
                        err(
                            format!("{k}.depends_on.{d}"),
                            format!("{d:?} is not enabled (its profiles are off)"),
                        );
                    }
                }
            }
        }
        let critical = labels.get(CRITICAL_LABEL).is_some_and(|v| v == "true");
        services.insert(
            name.clone(),
            Service {
                name: name.clone(),
                image: s.image.clone(),
                command: s.command.as_ref().map(RawCommand::to_vec),
                entrypoint: s.entrypoint.as_ref().map(RawCommand::to_vec),
                environment,
                env_files,
                ports,
                mounts,
                networks: if s.network_mode.is_some() {
                    vec![]
                } else if s.networks.is_empty() {
                    vec!["default".into()]
                } else {
                    s.networks.clone()
                },
                network_mode: s.network_mode.clone(),
                pid: s.pid.clone(),
                health,
                depends_on,
                restart,
                labels,
                extra_hosts: s.extra_hosts.clone(),
                cap_add: s.cap_add.clone(),
                cap_drop: s.cap_drop.clone(),
                security_opt: s.security_opt.clone(),
                read_only: s.read_only,
                user: s.user.clone(),
                working_dir: s.working_dir.clone(),
                critical,
            },
        );
    }
    // Start order: dependencies first; a cycle is an error.
    let mut order: Vec<String> = Vec::new();
    let mut visiting = BTreeSet::new();
    fn visit(
        n: &str,
        svcs: &BTreeMap<String, Service>,
        order: &mut Vec<String>,
        visiting: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        if order.iter().any(|o| o == n) {
            return Ok(());
        }
        if !visiting.insert(n.to_string()) {
            return Err(format!("dependency cycle through {n:?}"));
        }
        if let Some(s) = svcs.get(n) {
            for d in s.depends_on.keys() {
                visit(d, svcs, order, visiting)?;
            }
        }
        visiting.remove(n);
        order.push(n.to_string());
        Ok(())
    }
    for name in services.keys().filter(|n| active.contains(n.as_str())) {
        if let Err(e) = visit(name, &services, &mut order, &mut visiting) {
            err(format!("services.{name}.depends_on"), e);
            break;
        }
    }
    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    let services: Vec<Service> = order
        .iter()
        .filter(|n| active.contains(n.as_str()))
        .filter_map(|n| services.get(n).cloned())
        .collect();
    let mut volumes: BTreeSet<String> = BTreeSet::new();
    let mut networks: BTreeSet<String> = BTreeSet::new();
    for s in &services {
        for m in &s.mounts {
            if let Source::Volume { name } = &m.source {
                volumes.insert(name.clone());
            }
        }
        networks.extend(s.networks.iter().cloned());
    }
    Ok(Stack {
        project,
        file: file.to_path_buf(),
        services,
        volumes: volumes.into_iter().collect(),
        networks: networks.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests;
