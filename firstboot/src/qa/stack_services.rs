//! `stack.services`: every critical service of the container stack is healthy.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let root = ctx.root;
    let stack = match crate::docker::load_stack(root) {
        Ok(Some((_, stack))) => stack,
        Ok(None) => return skip("the container stack is not enabled in this image"),
        // A stack config that does not load is a failure, never "not enabled".
        Err(e) => {
            return fail(
                format!("the image's stack config does not load: {e:#}"),
                "reflash the unit (the image's stack config is damaged)",
            );
        }
    };
    if !root.is_live() {
        return skip("not the running system");
    }
    let states = crate::docker::block_on(async {
        let d = crate::docker::connect_running().await?;
        crate::docker::states(&d, &stack).await
    });
    match states {
        Err(e) => fail(format!("{e:#}"), "journalctl -u docker; systemctl restart docker"),
        Ok(states) => {
            let good = |s: &crate::docker::ServiceState| {
                let has_health = stack.service(&s.name).is_some_and(|x| x.health.is_some());
                s.state.is_up(has_health)
            };
            let bad: Vec<String> = states
                .iter()
                .filter(|s| s.critical && !good(s))
                .map(|s| format!("{} {}", s.name, s.state))
                .collect();
            let all: Vec<String> = states.iter().map(|s| format!("{} {}", s.name, s.state)).collect();
            if bad.is_empty() {
                pass(all.join(", "))
            } else {
                fail(
                    format!("not healthy: {}", bad.join(", ")),
                    format!(
                        "docker logs {}_{}_1 says why",
                        stack.project,
                        bad[0].split(' ').next().unwrap_or("")
                    ),
                )
            }
        }
    }
}
