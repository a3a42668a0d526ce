//! `stack.docker`: Docker is running (where the stack is enabled).

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    if !ctx.stack_enabled {
        return skip("the container stack is not enabled in this image");
    }
    match Cmd::new("systemctl")
        .args(["is-active", "--quiet", "docker.service"])
        .run()
    {
        Ok(_) => pass("docker.service active"),
        Err(_) => fail("docker.service not active", "journalctl -u docker"),
    }
}
