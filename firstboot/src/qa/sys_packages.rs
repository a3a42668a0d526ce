//! `sys.packages`: the image's key packages are installed.

#[allow(unused_imports)]
use super::*;

/// Runs the check.
pub fn check(ctx: &Ctx, _s: &Snapshot) -> Check {
    let root = ctx.root;
    packages(root)
}

fn packages(root: &Root) -> Check {
    let manifest = match std::fs::read(root.path(format!("/{}", flypack_contracts::layout::target::MANIFEST))) {
        Ok(b) => b,
        Err(e) => {
            return fail(
                format!("no image manifest: {e}"),
                "reflash the unit with a Flypack image",
            );
        }
    };
    let Ok(m) = serde_json::from_slice::<flypack_contracts::manifest::Manifest>(&manifest) else {
        return fail("the image manifest is not readable", "reflash the unit");
    };
    let key = [
        "openssh-server",
        "systemd-resolved",
        "chrony",
        "linuxptp",
        "iproute2",
        "ethtool",
        "docker.io",
    ];
    let want: Vec<&str> = key
        .iter()
        .copied()
        .filter(|k| m.packages.iter().any(|p| p.name == *k))
        .collect();
    if !root.is_live() {
        return pass(format!("{} key packages in the image manifest", want.len()));
    }
    let out = match Cmd::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Status}\n")
        .args(&want)
        .run()
    {
        Ok(o) => o.stdout_str(),
        Err(e) => e.to_string(),
    };
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|k| !out.lines().any(|l| l == format!("{k} installed")))
        .collect();
    if missing.is_empty() {
        pass(format!("installed: {}", want.join(", ")))
    } else {
        fail(
            format!("not installed: {}", missing.join(", ")),
            "reflash the unit; removed packages are not repaired in place",
        )
    }
}
