//! `firstboot central password FILE`: a new password for the central, on a
//! unit in service (the fleet playbook `central-password.yml` runs it).

use std::path::Path;

use anyhow::{Context, Result, bail};
use flypack_contracts::seed;
use flypack_contracts::unit::Central;

use crate::cli::CentralCommand;
use crate::root::Root;
use crate::{central, config, docker, stages};

/// The service that sends the unit's metrics to the central.
const SERVICE: &str = "vmagent-central";

/// Reads the password: one line, a final newline (an editor's, `echo`'s)
/// not part of it. Bounded: FILE may be anything.
fn read_password(file: &Path) -> Result<String> {
    let limit = 4096;
    let read = if file == Path::new("-") {
        seed::read_at_most(std::io::stdin(), limit).context("reading the password from standard input")?
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        seed::read_at_most(f, limit).with_context(|| format!("reading {}", file.display()))?
    };
    let Some(text) = read else {
        bail!(
            "{} is larger than {limit} bytes: it is not a password file",
            file.display()
        );
    };
    let text = String::from_utf8(text).with_context(|| format!("{} is not UTF-8 text", file.display()))?;
    Ok(seed::password_line(&text).to_string())
}

/// Runs `firstboot central ...`.
pub fn run(root: &Root, c: &CentralCommand, seed: Option<&Path>) -> Result<i32> {
    let CentralCommand::Password { file } = c;
    let password = read_password(file)?;
    let Some(compose) = config::stack_compose(root) else {
        bail!("this image has no container stack: there is no vmagent-central to give a password to");
    };
    // Which seed password the new one replaces: the seed must read.
    let loc = config::locate_seed(root, seed)?;
    let files = config::read_seed(&loc).context(
        "reading the seed, to know which password the new one replaces: nothing was changed; \
         `firstboot config --explain` says what is wrong with it",
    )?;
    let pw_file = compose
        .parent()
        .context("the compose file has no folder")?
        .join(Central::PASSWORD_FILE);
    let before = std::fs::read_to_string(&pw_file).ok();
    // The record first: from here on the config stage installs this one.
    let kept = central::keep(
        root,
        &password,
        files.as_ref().and_then(|f| f.central_password.as_ref()),
    )?;
    config::install_central(root, files.as_ref(), &compose)?;
    let installed = before.as_deref() != Some(password.as_str());
    let Some(unit) = config::in_force(root) else {
        println!(
            "changed: the central password is kept; no unit config is in force yet, the stack stage starts vmagent-central"
        );
        return Ok(0);
    };
    let (turned_on, warning) = config::write_central(&unit, &compose)?;
    if let Some(w) = warning {
        bail!("{w}");
    }
    if unit.central.is_none() {
        println!(
            "{}: the central password is kept; the unit config in force has no [central], so nothing is sent \
             (push a config with [central]: the fleet playbook config-push.yml)",
            if kept || installed { "changed" } else { "unchanged" }
        );
        return Ok(0);
    }
    let path = root.path(flypack_contracts::stack::STACK_CONFIG);
    let Some((cfg, stack)) = docker::load_stack_from(root, &path)? else {
        bail!("no stack config at {}", path.display());
    };
    let health = stack.service(SERVICE).is_some_and(|v| v.health.is_some());
    if turned_on {
        // [central] was waiting for a password: the profile is on now.
        let states = converge(root, &cfg, &stack)?;
        return report(
            &states,
            health,
            "changed: federation is on with the new password, vmagent-central started",
        );
    }
    let running = docker::block_on(async {
        let d = docker::connect_running().await?;
        let states = docker::states(&d, &stack).await?;
        Ok(states
            .into_iter()
            .find(|s| s.name == SERVICE)
            .is_some_and(|s| s.state.is_up(health)))
    })?;
    if !kept && !installed && running {
        println!("unchanged: vmagent-central sends with this password already");
        return Ok(0);
    }
    let turn = stages::stack::exclusive(root, &mut |m| eprintln!("{m}"))?;
    let st = docker::block_on(async {
        let d = docker::connect_running().await?;
        docker::restart(&d, &stack, SERVICE, &mut |m| eprintln!("{m}")).await
    })
    .context("the new password is in place, but vmagent-central did not restart with it");
    stages::stack::refresh_record(root, &stack);
    drop(turn);
    let st = st?;
    report(
        &[st],
        health,
        "changed: vmagent-central restarted with the new password",
    )
}

/// After a unit config in service was kept (`firstboot network confirm`,
/// `network apply`, `access confirm`): when that turned federation on or
/// off or changed where it sends, the stack converges, so vmagent-central
/// starts, is recreated with the new settings, or goes, at once rather
/// than at the next boot. Prints what federation is now, or a warning: the
/// config is kept either way (the exit code says whether it was), and the
/// stack's record, which the status page shows, says how the service is.
pub fn follow_config(root: &Root, persisted: config::Persisted) {
    if let Some(w) = &persisted.central_warning {
        println!("warning: {w}");
    }
    if !persisted.central {
        return;
    }
    match follow(root) {
        Ok(Some(line)) => println!("{line}"),
        Ok(None) => {}
        Err(e) => println!(
            "warning: the config is kept, but federation did not follow it: {e:#}; `firstboot stack up` tries again"
        ),
    }
}

fn follow(root: &Root) -> Result<Option<String>> {
    let path = root.path(flypack_contracts::stack::STACK_CONFIG);
    let Some((cfg, stack)) = docker::load_stack_from(root, &path)? else {
        return Ok(None);
    };
    let states = converge(root, &cfg, &stack)?;
    let Some(service) = stack.service(SERVICE) else {
        return Ok(Some("federation is off: vmagent-central does not run".into()));
    };
    match states.iter().find(|s| s.name == SERVICE) {
        Some(s) if s.state.is_up(service.health.is_some()) => Ok(Some(
            "federation follows the config: vmagent-central runs with its settings".into(),
        )),
        Some(s) => bail!("vmagent-central is {}", s.state),
        None => bail!("the stack has no vmagent-central"),
    }
}

/// Brings the stack to what its compose file and `.env` say, and records it.
fn converge(
    root: &Root,
    cfg: &flypack_contracts::stack::StackConfig,
    stack: &flypack_engine::compose::Stack,
) -> Result<Vec<docker::ServiceState>> {
    let (notes, states) = stages::stack::converge(root, cfg, stack, &mut |m| eprintln!("{m}"))?;
    for n in notes {
        eprintln!("{n}");
    }
    Ok(states)
}

/// Prints `done` when vmagent-central is up among `states`; exit 1
/// otherwise, saying the new password is kept all the same.
fn report(states: &[docker::ServiceState], health: bool, done: &str) -> Result<i32> {
    const KEPT: &str = "the new password is in place";
    match states.iter().find(|s| s.name == SERVICE) {
        Some(s) if s.state.is_up(health) => {
            println!("{done}");
            Ok(0)
        }
        Some(s) => {
            eprintln!("{KEPT}, but vmagent-central is {}", s.state);
            Ok(1)
        }
        None => {
            eprintln!("{KEPT}, but the stack has no vmagent-central");
            Ok(1)
        }
    }
}
