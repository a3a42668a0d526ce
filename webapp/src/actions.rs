//! The allow-list of privileged actions: named actions mapped to the argv
//! of a `firstboot` subcommand (never a shell), behind a configurable
//! prefix (the root helper's client by default, `crate::privileged`), with
//! every argument validated first, here and again by the helper.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::jobs::{JobKind, JobSpec};
use crate::role::Role;

/// An allowed action, with validated arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `firstboot qa --format json`.
    Qa,
    /// `firstboot backup --json`.
    Backup,
    /// `firstboot stack restart SERVICE`.
    Restart {
        /// A service of the stack (status.json's services).
        service: String,
    },
    /// `firstboot network apply --unit FILE --confirm-within SECS`.
    NetworkApply {
        /// The unit config to apply (written by the web app, parsed first).
        file: String,
        /// Seconds before firstboot rolls back without a confirmation.
        confirm_within: u32,
    },
    /// `firstboot network confirm`.
    NetworkConfirm,
    /// `firstboot waiver add CHECK --reason TEXT --expires YYYY-MM-DD`.
    WaiverAdd {
        /// A QA check id from the catalogue.
        check: String,
        /// Why (5-200 characters, one line).
        reason: String,
        /// Last day, not in the past.
        expires: String,
    },
    /// `firstboot waiver remove CHECK`.
    WaiverRemove {
        /// A QA check id from the catalogue.
        check: String,
    },
}

impl Action {
    /// The action's name (audit log, job list).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Qa => "qa",
            Action::Backup => "backup",
            Action::Restart { .. } => "restart",
            Action::NetworkApply { .. } => "network-apply",
            Action::NetworkConfirm => "network-confirm",
            Action::WaiverAdd { .. } => "waiver-add",
            Action::WaiverRemove { .. } => "waiver-remove",
        }
    }

    /// For people.
    pub fn title(&self) -> String {
        match self {
            Action::Qa => "Re-run QA".into(),
            Action::Backup => "Take a backup".into(),
            Action::Restart { service } => format!("Restart {service}"),
            Action::NetworkApply { confirm_within, .. } => {
                format!("Apply a network change (confirm within {confirm_within} s)")
            }
            Action::NetworkConfirm => "Confirm the network change".into(),
            Action::WaiverAdd { check, .. } => format!("Waive {check}"),
            Action::WaiverRemove { check } => format!("Remove the waiver of {check}"),
        }
    }

    /// The role it needs.
    pub fn role(&self) -> Role {
        match self {
            Action::Qa | Action::Backup | Action::Restart { .. } => Role::Operator,
            Action::NetworkApply { .. }
            | Action::NetworkConfirm
            | Action::WaiverAdd { .. }
            | Action::WaiverRemove { .. } => Role::Engineer,
        }
    }

    /// firstboot's arguments (after the program).
    pub fn args(&self) -> Vec<String> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Action::Qa => v(&["qa", "--format", "json"]),
            Action::Backup => v(&["backup", "--json"]),
            Action::Restart { service } => v(&["stack", "restart", service]),
            Action::NetworkApply { file, confirm_within } => v(&[
                "network",
                "apply",
                "--unit",
                file,
                "--confirm-within",
                &confirm_within.to_string(),
            ]),
            Action::NetworkConfirm => v(&["network", "confirm"]),
            Action::WaiverAdd { check, reason, expires } => {
                v(&["waiver", "add", check, "--reason", reason, "--expires", expires])
            }
            Action::WaiverRemove { check } => v(&["waiver", "remove", check]),
        }
    }

    /// The full command line: prefix, firstboot, arguments.
    pub fn argv(&self, cfg: &Config) -> Vec<String> {
        let mut a = cfg.actions.command_prefix.clone();
        a.push(cfg.actions.firstboot.clone());
        a.extend(self.args());
        a
    }

    /// The action whose firstboot arguments are exactly `args`, validated as
    /// the web app validates its forms (the privileged helper's check: it
    /// trusts nothing the web app sends). Anything else is an error.
    pub fn from_args(root: &Path, args: &[String]) -> Result<Action> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let action = match a.as_slice() {
            ["qa", "--format", "json"] => Action::Qa,
            ["backup", "--json"] => Action::Backup,
            ["stack", "restart", service] => restart(root, service)?,
            ["network", "apply", "--unit", file, "--confirm-within", secs] => pending_network(root, file, secs)?,
            ["network", "confirm"] => Action::NetworkConfirm,
            ["waiver", "add", check, "--reason", reason, "--expires", expires] => waiver_add(check, reason, expires)?,
            ["waiver", "remove", check] => waiver_remove(check)?,
            _ => {
                let shown: String = args.join(" ").chars().take(200).collect();
                bail!("`firstboot {shown}` is not an allowed action")
            }
        };
        if action.args() != args {
            bail!(
                "the arguments of {} are not in the form the web app sends",
                action.name()
            );
        }
        Ok(action)
    }

    /// The job that runs it.
    pub fn job(&self, cfg: &Config) -> JobSpec {
        JobSpec {
            kind: JobKind::Action,
            name: self.name().into(),
            title: self.title(),
            argv: self.argv(cfg),
            env: vec![],
            mutating: true,
            role: self.role(),
            ansible_events: false,
            files: vec![],
        }
    }
}

/// A restart, if `service` is one of the stack's services (status.json).
pub fn restart(root: &Path, service: &str) -> Result<Action> {
    let status = crate::pages::load_status(root)?;
    let known: Vec<String> = status
        .map(|s| s.services.into_iter().map(|s| s.name).collect())
        .unwrap_or_default();
    if known.is_empty() {
        bail!("the stack's services are not known yet (no services in status.json): nothing can be restarted");
    }
    if !known.iter().any(|k| k == service) {
        bail!(
            "{service:?} is not a service of the stack: expected one of {}",
            known.join(", ")
        );
    }
    Ok(Action::Restart {
        service: service.to_string(),
    })
}

/// A waiver, if the check is in the catalogue, the reason one sensible line
/// and the expiry a date from today on.
pub fn waiver_add(check: &str, reason: &str, expires: &str) -> Result<Action> {
    known_check(check)?;
    let reason = reason.trim();
    if reason.chars().count() < 5 || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        bail!("the reason must be one line of 5-200 characters (it is shown with the verdict)");
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let Ok(date) = time::Date::parse(expires, &fmt) else {
        bail!("{expires:?} is not a date: expected YYYY-MM-DD");
    };
    if date < time::OffsetDateTime::now_utc().date() {
        bail!("{expires} is in the past");
    }
    Ok(Action::WaiverAdd {
        check: check.to_string(),
        reason: reason.to_string(),
        expires: expires.to_string(),
    })
}

/// A waiver removal, if the check is in the catalogue.
pub fn waiver_remove(check: &str) -> Result<Action> {
    known_check(check)?;
    Ok(Action::WaiverRemove {
        check: check.to_string(),
    })
}

fn known_check(check: &str) -> Result<()> {
    if flypack_contracts::qa::CheckId::parse(check).is_none() {
        let ids: Vec<&str> = flypack_contracts::qa::CheckId::ALL.iter().map(|c| c.as_str()).collect();
        bail!("{check:?} is not a QA check: expected one of {}", ids.join(", "));
    }
    Ok(())
}

/// A network change, if `text` is a unit config that parses: written under
/// the web app's state (0640) for firstboot to read.
pub fn network_apply(root: &Path, text: &str, confirm_within: u32) -> Result<Action> {
    let dir = crate::paths::under(root, crate::paths::NETWORK);
    let name = Path::new("unit.toml");
    if let Err(e) = flypack_contracts::unit::parse_unit(name, text) {
        bail!("the unit config does not parse: {e}");
    }
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let mut rnd = [0u8; 4];
    crate::security::random_bytes(&mut rnd);
    let file = dir.join(format!(
        "unit-{}-{}.toml",
        crate::security::unix_now(),
        hex::encode(rnd)
    ));
    flypack_contracts::atomic::write_atomic(&file, text.as_bytes(), 0o640)?;
    // firstboot reads the path on the unit, which is the path under `/`.
    let on_unit = Path::new("/").join(file.strip_prefix(root).unwrap_or(&file));
    Ok(Action::NetworkApply {
        file: on_unit.to_string_lossy().into_owned(),
        confirm_within,
    })
}

/// A network change the web app wrote ([`network_apply`]): a regular file
/// (not a link) named as it names them, directly in its folder, that parses
/// as a unit config; a confirmation period of 10 s to 1 h.
fn pending_network(root: &Path, file: &str, secs: &str) -> Result<Action> {
    let dir = Path::new(crate::paths::NETWORK);
    let p = Path::new(file);
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let well_named = name
        .strip_prefix("unit-")
        .and_then(|n| n.strip_suffix(".toml"))
        .and_then(|n| n.split_once('-'))
        .is_some_and(|(t, h)| {
            !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit())
                && h.len() == 8
                && h.bytes().all(|b| b.is_ascii_hexdigit())
        });
    if p.parent() != Some(dir) || !well_named {
        bail!(
            "{file:?} is not a network change the web app wrote (unit-TIME-HEX.toml in {})",
            dir.display()
        );
    }
    let on_disk = crate::paths::under(root, file);
    let meta = std::fs::symlink_metadata(&on_disk).with_context(|| format!("reading {file}"))?;
    if !meta.file_type().is_file() || meta.len() > 1 << 20 {
        bail!("{file} is not a regular file of at most 1 MiB");
    }
    let text = std::fs::read_to_string(&on_disk).with_context(|| format!("reading {file}"))?;
    if let Err(e) = flypack_contracts::unit::parse_unit(Path::new("unit.toml"), &text) {
        bail!("{file} does not parse as a unit config: {e}");
    }
    let confirm_within: u32 = match secs.parse() {
        Ok(n) if (10..=3600).contains(&n) => n,
        _ => bail!("{secs:?} is not a confirmation period of 10 to 3600 seconds"),
    };
    Ok(Action::NetworkApply {
        file: file.to_string(),
        confirm_within,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_the_allow_list() {
        let cfg = Config::default();
        assert_eq!(
            Action::Qa.argv(&cfg),
            [
                "/usr/bin/flypack-web",
                "privileged",
                "call",
                "--",
                "/usr/bin/firstboot",
                "qa",
                "--format",
                "json"
            ]
        );
        assert_eq!(Action::Backup.argv(&cfg)[5..], ["backup", "--json"]);
        assert_eq!(
            Action::Restart {
                service: "vmagent".into()
            }
            .args(),
            ["stack", "restart", "vmagent"]
        );
        assert_eq!(
            Action::NetworkApply {
                file: "/x.toml".into(),
                confirm_within: 120
            }
            .args(),
            ["network", "apply", "--unit", "/x.toml", "--confirm-within", "120"]
        );
        assert_eq!(Action::NetworkConfirm.args(), ["network", "confirm"]);
        assert_eq!(
            waiver_add("net.dns", "venue DNS is down", "2999-12-31").unwrap().args(),
            [
                "waiver",
                "add",
                "net.dns",
                "--reason",
                "venue DNS is down",
                "--expires",
                "2999-12-31"
            ]
        );
        assert_eq!(
            waiver_remove("net.dns").unwrap().args(),
            ["waiver", "remove", "net.dns"]
        );
        assert_eq!(Action::Qa.role(), Role::Operator);
        assert_eq!(Action::NetworkConfirm.role(), Role::Engineer);
    }

    #[test]
    fn arguments_are_validated() {
        assert!(waiver_add("net.bogus", "a good reason", "2999-01-01").is_err());
        assert!(waiver_add("net.dns", "no", "2999-01-01").is_err());
        assert!(waiver_add("net.dns", "two\nlines here", "2999-01-01").is_err());
        assert!(waiver_add("net.dns", "a good reason", "2000-01-01").is_err());
        assert!(waiver_add("net.dns", "a good reason", "tomorrow").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(restart(dir.path(), "vmagent").is_err(), "no status: nothing known");
        assert!(network_apply(dir.path(), "version = 1\nhostname = \"BAD HOST\"\n", 60).is_err());
        let a = network_apply(dir.path(), "version = 1\nhostname = \"fp-01\"\n", 60).unwrap();
        match a {
            Action::NetworkApply { file, .. } => {
                assert!(file.starts_with("/var/lib/flypack/webapp/network/unit-"), "{file}");
                assert!(dir.path().join(file.trim_start_matches('/')).is_file());
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The allowed playbooks: every `*.yml`/`*.yaml` file in the playbooks folder.
pub fn playbooks(cfg: &Config) -> Vec<String> {
    playbooks_in(&cfg.jobs.playbooks_dir)
}

/// Every `*.yml`/`*.yaml` regular file (not a link) in `dir`, sorted.
pub fn playbooks_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| valid_playbook_name(n))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn valid_playbook_name(n: &str) -> bool {
    (n.ends_with(".yml") || n.ends_with(".yaml"))
        && !n.starts_with('.')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The role a playbook needs: operator for those `jobs.operator` names,
/// engineer for every other.
pub fn playbook_role(cfg: &Config, playbook: &str) -> Role {
    if cfg.jobs.operator.iter().any(|p| p == playbook) {
        Role::Operator
    } else {
        Role::Engineer
    }
}

/// The job that runs an allowed playbook with ansible-runner on this unit
/// (local connection). Its extra vars: `flypack_artifacts_dir` (the job's
/// `files/`, offered for download) and `flypack_root`.
///
/// With `jobs.run_as_root` (the default) the root helper runs it
/// ([`crate::privileged`]): the helper lays out the run itself from its own
/// playbooks folder, and only the playbook's name crosses the socket.
pub fn playbook_job(cfg: &Config, root: &Path, playbook: &str) -> Result<JobSpec> {
    if !playbooks(cfg).iter().any(|p| p == playbook) {
        bail!(
            "{playbook:?} is not an allowed playbook: expected one of {} (in {})",
            playbooks(cfg).join(", "),
            cfg.jobs.playbooks_dir.display()
        );
    }
    let dir = crate::jobs::JOB_DIR;
    let mutating = !cfg.jobs.read_only.iter().any(|r| r == playbook);
    if cfg.jobs.run_as_root {
        return Ok(JobSpec {
            kind: JobKind::Ansible,
            name: playbook.to_string(),
            title: format!("Ansible: {playbook}"),
            argv: [
                crate::privileged::WEB_APP,
                "privileged",
                "playbook",
                playbook,
                "--files-to",
                &format!("{dir}/files"),
            ]
            .map(str::to_string)
            .to_vec(),
            env: vec![],
            mutating,
            role: playbook_role(cfg, playbook),
            ansible_events: true,
            files: vec![],
        });
    }
    let mut argv = cfg.jobs.command_prefix.clone();
    argv.extend(
        [
            cfg.jobs.ansible_runner.as_str(),
            "run",
            dir,
            "--playbook",
            playbook,
            "--project-dir",
            &cfg.jobs.playbooks_dir.to_string_lossy(),
            "--ident",
            "run",
            "--json",
        ]
        .map(str::to_string),
    );
    Ok(JobSpec {
        kind: JobKind::Ansible,
        name: playbook.to_string(),
        title: format!("Ansible: {playbook}"),
        argv,
        env: vec![],
        mutating,
        role: playbook_role(cfg, playbook),
        ansible_events: true,
        files: runner_files(&format!("{dir}/files"), root, &cfg.jobs.ansible_cfg),
    })
}

/// ansible-runner's input files for a run on this unit: the local inventory,
/// the extra vars (`flypack_artifacts_dir`, `flypack_root`, nothing else) and
/// the environment (ANSIBLE_CONFIG when `ansible_cfg` exists).
pub fn runner_files(artifacts_dir: &str, root: &Path, ansible_cfg: &Path) -> Vec<(String, Vec<u8>)> {
    let extravars = serde_json::json!({
        "flypack_artifacts_dir": artifacts_dir,
        "flypack_root": root.to_string_lossy(),
    });
    let mut envvars = serde_json::json!({
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    });
    if ansible_cfg.is_file() {
        envvars["ANSIBLE_CONFIG"] = serde_json::Value::String(ansible_cfg.to_string_lossy().into_owned());
    }
    vec![
        (
            "inventory/hosts".into(),
            b"localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n".to_vec(),
        ),
        ("env/extravars".into(), extravars.to_string().into_bytes()),
        ("env/envvars".into(), envvars.to_string().into_bytes()),
    ]
}

#[cfg(test)]
mod playbook_tests {
    use super::*;

    #[test]
    fn only_playbooks_in_the_folder_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("diagnostics.yml"), "- hosts: all\n").unwrap();
        std::fs::write(dir.path().join("update.yml"), "- hosts: all\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        let mut cfg = Config::default();
        cfg.jobs.playbooks_dir = dir.path().to_path_buf();
        assert_eq!(playbooks(&cfg), ["diagnostics.yml", "update.yml"]);
        // As root (the default): only the name goes to the helper.
        let j = playbook_job(&cfg, Path::new("/"), "diagnostics.yml").unwrap();
        assert_eq!(
            j.argv,
            [
                "/usr/bin/flypack-web",
                "privileged",
                "playbook",
                "diagnostics.yml",
                "--files-to",
                "{job_dir}/files"
            ]
        );
        assert!(j.files.is_empty());
        cfg.jobs.run_as_root = false;
        let j = playbook_job(&cfg, Path::new("/"), "diagnostics.yml").unwrap();
        assert!(!j.mutating);
        assert_eq!(j.argv[..4], ["ansible-runner", "run", "{job_dir}", "--playbook"]);
        assert!(playbook_job(&cfg, Path::new("/"), "update.yml").unwrap().mutating);
        assert!(playbook_job(&cfg, Path::new("/"), "../etc/passwd").is_err());
        assert!(playbook_job(&cfg, Path::new("/"), "notes.txt").is_err());
    }
}
