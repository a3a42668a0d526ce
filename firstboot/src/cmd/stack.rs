//! `firstboot stack`.

use anyhow::Result;

use crate::cli::{StackArgs, StackCommand};
use crate::root::Root;
use crate::{docker, stages};

/// Brings the stack up, shows its services, or restarts one.
pub fn run(root: &Root, a: &StackArgs) -> Result<i32> {
    let path = a
        .config
        .clone()
        .unwrap_or_else(|| root.path(flypack_contracts::stack::STACK_CONFIG));
    let Some((cfg, stack)) = docker::load_stack_from(root, &path)? else {
        anyhow::bail!(
            "no stack config at {}: this image has no container stack",
            path.display()
        );
    };
    let states = match &a.command {
        StackCommand::Up => {
            let mut last = String::new();
            let mut progress = |m: &str| {
                if m != last {
                    eprintln!("{m}");
                    last = m.to_string();
                }
            };
            // Another config than the unit's is not the unit's stack: no record.
            let (notes, states) = if a.config.is_none() {
                stages::stack::converge(root, &cfg, &stack, &mut progress)?
            } else {
                stages::stack::bring_up(root, &cfg, &stack, &mut progress)?
            };
            for n in notes {
                eprintln!("{n}");
            }
            states
        }
        StackCommand::Status => docker::block_on(async {
            let d = docker::connect_running().await?;
            docker::states(&d, &stack).await
        })?,
        StackCommand::Restart { service } => {
            let _turn = stages::stack::exclusive(root, &mut |m| eprintln!("{m}"))?;
            let st = docker::block_on(async {
                let d = docker::connect_running().await?;
                docker::restart(&d, &stack, service, &mut |m| eprintln!("{m}")).await
            });
            if a.config.is_none() {
                stages::stack::refresh_record(root, &stack);
            }
            vec![st?]
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&states)?);
    } else {
        for s in &states {
            println!(
                "{:<18} {:<10} {}{}",
                s.name,
                s.state,
                s.action,
                if s.critical { " (critical)" } else { "" }
            );
        }
    }
    let ok = states.iter().all(|s| {
        !s.critical
            || s.state
                .is_up(stack.service(&s.name).is_some_and(|v| v.health.is_some()))
    });
    Ok(if ok { 0 } else { 1 })
}
