//! The web app's config (`/etc/flypack/webapp.toml`, TOML). Every key is
//! optional; unknown keys are errors that name the key path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Config schema version.
pub const CONFIG_SCHEMA: u32 = 1;

/// The config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// [`CONFIG_SCHEMA`].
    pub version: u32,
    /// Where to listen.
    pub listen: Listen,
    /// Where the live and history figures come from.
    pub sources: Sources,
    /// Logins and sessions.
    pub login: Login,
    /// The first admin, from a hash made by `flypack-web hash-password`
    /// (or `builder web-password`); used only while there is no user.
    pub initial_admin: Option<InitialAdmin>,
    /// The privileged actions (firstboot subcommands).
    pub actions: Actions,
    /// Ansible jobs.
    pub jobs: Jobs,
}

/// `[listen]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// HTTPS.
    pub https: SocketAddr,
    /// Plain HTTP (redirect and CA certificate only); none to disable.
    pub http: Option<SocketAddr>,
    /// The HTTPS port the redirect points to [default: the port of `https`].
    pub public_https_port: Option<u16>,
}

/// `[sources]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sources {
    /// The video exporter's Prometheus text (SRT streams, multicast groups).
    pub exporter_url: String,
    /// VictoriaMetrics (history charts via query_range; vmui for engineers).
    pub victoriametrics_url: String,
    /// Grafana (auth proxy on `X-Flypack-User`), for engineers, when it answers.
    pub grafana_url: String,
    /// vmalert (the alerts the status page shows).
    pub vmalert_url: String,
    /// A VictoriaMetrics holding every flypack's federated metrics (the
    /// central's, `http://127.0.0.1:8428` on the central host): turns on the
    /// Fleet page. Empty (the default, on a unit): no Fleet page.
    pub fleet_url: String,
    /// Seconds between live samples.
    pub sample_seconds: u64,
}

/// `[login]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Login {
    /// A session ends after this many minutes without a request.
    pub idle_minutes: u64,
    /// A session ends this many hours after login, whatever happens.
    pub absolute_hours: u64,
    /// Failed logins for one user name within the window before it is refused.
    pub max_failures_per_user: u32,
    /// Failed logins from one address within the window before it is refused.
    pub max_failures_per_address: u32,
    /// The window, seconds.
    pub failure_window_seconds: u64,
    /// Minutes an enrolment code stays valid.
    pub enrol_minutes: u32,
}

/// `[initial_admin]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialAdmin {
    /// User name.
    pub name: String,
    /// argon2id PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
}

/// `[actions]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Actions {
    /// Put before every privileged command: by default the client of the
    /// root helper (`flypack-web privileged call --`, which runs only the
    /// allow-listed firstboot subcommands); `sudo -n` where a sudoers rule
    /// allows it; empty to run firstboot as the web app's user (tests).
    pub command_prefix: Vec<String>,
    /// The firstboot program.
    pub firstboot: String,
    /// Seconds a network change waits for its confirmation before firstboot rolls it back.
    pub confirm_within_seconds: u32,
}

/// `[jobs]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    /// The allowed playbooks: every `*.yml` in this folder.
    pub playbooks_dir: PathBuf,
    /// ansible.cfg for the runs (ANSIBLE_CONFIG), when it exists.
    pub ansible_cfg: PathBuf,
    /// The ansible-runner program.
    pub ansible_runner: String,
    /// Run playbooks as root through the root helper (`flypack-web privileged
    /// playbook`), which runs only its own playbooks folder's
    /// (/usr/share/flypack/ansible/playbooks). When false, ansible-runner runs
    /// as the web app's user, from `playbooks_dir` (tests).
    pub run_as_root: bool,
    /// Put before ansible-runner when not run as root.
    pub command_prefix: Vec<String>,
    /// Playbooks that change nothing (they may run beside a mutating job).
    pub read_only: Vec<String>,
    /// Playbooks an operator may run; every other one needs an engineer.
    pub operator: Vec<String>,
    /// Finished jobs kept on disk (oldest removed).
    pub keep: usize,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled.
    pub kill_grace_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_SCHEMA,
            listen: Listen::default(),
            sources: Sources::default(),
            login: Login::default(),
            initial_admin: None,
            actions: Actions::default(),
            jobs: Jobs::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            https: SocketAddr::from(([0, 0, 0, 0], 443)),
            http: Some(SocketAddr::from(([0, 0, 0, 0], 80))),
            public_https_port: None,
        }
    }
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            exporter_url: "http://127.0.0.1:9150/metrics".into(),
            victoriametrics_url: "http://127.0.0.1:8428".into(),
            grafana_url: "http://127.0.0.1:3000".into(),
            vmalert_url: "http://127.0.0.1:8880".into(),
            fleet_url: String::new(),
            sample_seconds: 1,
        }
    }
}

impl Default for Login {
    fn default() -> Self {
        Login {
            idle_minutes: 60,
            absolute_hours: 12,
            max_failures_per_user: 5,
            max_failures_per_address: 20,
            failure_window_seconds: 300,
            enrol_minutes: 30,
        }
    }
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            command_prefix: vec![
                "/usr/bin/flypack-web".into(),
                "privileged".into(),
                "call".into(),
                "--".into(),
            ],
            firstboot: "/usr/bin/firstboot".into(),
            confirm_within_seconds: 120,
        }
    }
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            playbooks_dir: PathBuf::from("/usr/share/flypack/ansible/playbooks"),
            ansible_cfg: PathBuf::from("/usr/share/flypack/ansible/ansible.cfg"),
            ansible_runner: "ansible-runner".into(),
            run_as_root: true,
            command_prefix: vec![],
            read_only: vec!["diagnostics.yml".into()],
            // An operator re-runs QA, collects diagnostics and brings the
            // stack back; housekeeping and anything new need an engineer.
            operator: vec!["diagnostics.yml".into(), "qa.yml".into(), "stack.yml".into()],
            keep: 50,
            kill_grace_seconds: 10,
        }
    }
}

impl Config {
    /// Parses and checks a config.
    pub fn parse(file: &Path, text: &str) -> Result<Config> {
        let cfg: Config = flypack_contracts::config::parse_toml(file, text)?;
        cfg.check().with_context(|| format!("checking {}", file.display()))?;
        Ok(cfg)
    }

    /// The config for `root`: `explicit` when given, else
    /// `ROOT/etc/flypack/webapp.toml` when it exists, else the defaults.
    pub fn load(root: &Path, explicit: Option<&Path>) -> Result<Config> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => crate::paths::under(root, crate::paths::CONFIG),
        };
        match std::fs::read_to_string(&path) {
            Ok(t) => Config::parse(&path, &t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn check(&self) -> Result<()> {
        if self.version != CONFIG_SCHEMA {
            bail!("version: expected {CONFIG_SCHEMA}, found {}", self.version);
        }
        for (key, url) in [
            ("sources.exporter_url", &self.sources.exporter_url),
            ("sources.victoriametrics_url", &self.sources.victoriametrics_url),
            ("sources.grafana_url", &self.sources.grafana_url),
            ("sources.vmalert_url", &self.sources.vmalert_url),
        ] {
            if !url.starts_with("http://") || url.parse::<hyper::Uri>().is_err() {
                bail!("{key}: {url:?} is not a plain http:// URL (the sources are on the unit itself)");
            }
        }
        let fleet = &self.sources.fleet_url;
        if !fleet.is_empty() && (!fleet.starts_with("http://") || fleet.parse::<hyper::Uri>().is_err()) {
            bail!(
                "sources.fleet_url: {fleet:?} is not a plain http:// URL (the central's VictoriaMetrics, \
                 on its own host: http://127.0.0.1:8428)"
            );
        }
        if self.sources.sample_seconds == 0 || self.sources.sample_seconds > 60 {
            bail!(
                "sources.sample_seconds: expected 1-60, found {}",
                self.sources.sample_seconds
            );
        }
        if self.login.idle_minutes == 0 || self.login.absolute_hours == 0 {
            bail!("login.idle_minutes and login.absolute_hours must be at least 1");
        }
        if self.login.max_failures_per_user == 0 || self.login.max_failures_per_address == 0 {
            bail!("login.max_failures_per_user and login.max_failures_per_address must be at least 1");
        }
        if self.login.enrol_minutes == 0 || self.login.enrol_minutes > 24 * 60 {
            bail!(
                "login.enrol_minutes: expected 1-1440, found {}",
                self.login.enrol_minutes
            );
        }
        if let Some(a) = &self.initial_admin {
            crate::users::check_name(&a.name).context("initial_admin.name")?;
            if !a.password_hash.starts_with("$argon2id$") {
                bail!("initial_admin.password_hash: expected an argon2id hash from `flypack-web hash-password`");
            }
        }
        if self.actions.firstboot.is_empty() {
            bail!("actions.firstboot: empty");
        }
        if !(10..=3600).contains(&self.actions.confirm_within_seconds) {
            bail!("actions.confirm_within_seconds: expected 10 to 3600 (the privileged helper refuses others)");
        }
        if self.jobs.ansible_runner.is_empty() {
            bail!("jobs.ansible_runner: empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::parse(Path::new("w.toml"), "").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.https.to_string(), "0.0.0.0:443");
        assert_eq!(c.listen.http.unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(
            c.actions.command_prefix,
            ["/usr/bin/flypack-web", "privileged", "call", "--"]
        );
        assert_eq!(c.sources.exporter_url, "http://127.0.0.1:9150/metrics");
        assert_eq!(c.login.enrol_minutes, 30);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_key() {
        let e = Config::parse(Path::new("w.toml"), "[listen]\nhttps = \"127.0.0.1:8443\"\nbogus = 1\n").unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        let e = Config::parse(Path::new("w.toml"), "[sources]\nexporter_url = \"https://x\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("sources.exporter_url"), "{e:#}");
        let e = Config::parse(
            Path::new("w.toml"),
            "[initial_admin]\nname = \"a\"\npassword_hash = \"plain\"\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("initial_admin.password_hash"), "{e:#}");
        let c = Config::parse(
            Path::new("w.toml"),
            "version = 1\n[listen]\nhttps = \"127.0.0.1:8443\"\n[actions]\ncommand_prefix = []\n",
        )
        .unwrap();
        assert!(c.actions.command_prefix.is_empty());
        assert_eq!(c.listen.https.port(), 8443);
    }
}
