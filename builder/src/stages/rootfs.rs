//! Root filesystem stage: mmdebstrap from Debian's archive (signatures
//! checked by apt, as mmdebstrap does), cached by a digest of its inputs.
//!
//! Downloaded packages are kept between builds in `CACHE/apt/` (the
//! container images' in `CACHE/apt-images/`: they are built at the same
//! time, and one cache serves one mmdebstrap at a time) with the
//! recipe from mmdebstrap's manual (`--skip=essential/unlink`, `sync-in` in
//! a setup hook, `sync-out` in a customize hook). The result is one tar
//! archive per input digest in `CACHE/rootfs/`, written under a temporary
//! name and renamed when complete, with the installed package list beside it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use flypack_contracts::atomic::{TempPath, write_atomic};
use flypack_contracts::cmd::{Cmd, CmdError, Stream};
use flypack_contracts::manifest::Package;

use crate::plan::RootfsPlan;
use crate::progress::Reporter;

/// How many cached root filesystems to keep.
const KEEP_CACHED: usize = 10;

/// What the stage produced.
#[derive(Debug, Clone)]
pub struct Rootfs {
    /// The root filesystem archive.
    pub archive: PathBuf,
    /// Installed packages.
    pub packages: Vec<Package>,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// Runs the stage.
pub fn run(plan: &RootfsPlan, cache_dir: &Path, profile: &Path, rep: &Reporter) -> Result<Rootfs> {
    run_with(plan, cache_dir, APT_CACHE, profile, rep)
}

/// The package cache of the appliance's root filesystem, in the cache folder.
pub const APT_CACHE: &str = "apt";
/// The package cache of the container images' root filesystems: their own,
/// so that they are built while the appliance's is (a package cache is used
/// by one mmdebstrap at a time).
pub const APT_CACHE_IMAGES: &str = "apt-images";

/// [`run`] with the package cache `CACHE/apt_cache/`.
pub fn run_with(
    plan: &RootfsPlan,
    cache_dir: &Path,
    apt_cache: &str,
    profile: &Path,
    rep: &Reporter,
) -> Result<Rootfs> {
    let dir = cache_dir.join("rootfs");
    fs::create_dir_all(&dir).with_context(|| format!("creating cache folder {}", dir.display()))?;
    let list = plan.archive.with_extension("packages.json");

    // One build makes a given root filesystem at a time; others wait for it.
    let _turn = super::take_turn(&plan.archive.with_extension("lock"), || {
        rep.info("another build is making the same root filesystem; waiting for it");
    })?;

    if !plan.refresh && plan.archive.is_file() && list.is_file() {
        let stage = rep.stage("rootfs", "reusing the cached root filesystem");
        let packages = read_packages(&list)?;
        super::touch(&plan.archive)?;
        stage.done(&format!("cached {} ({} packages)", short(&plan.key), packages.len()));
        return Ok(Rootfs {
            archive: plan.archive.clone(),
            packages,
            cached: true,
        });
    }

    let stage = rep.stage("rootfs", "checking the mirror");
    check_mirrors(plan, profile)?;
    stage.progress("running mmdebstrap");

    crate::interrupt::check()?;
    let apt_lock_path = cache_dir.join(format!("{apt_cache}.lock"));
    let apt_cache = cache_dir.join(apt_cache);
    fs::create_dir_all(&apt_cache).with_context(|| format!("creating {}", apt_cache.display()))?;
    let work = cache_dir.join("work");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let archive_tmp = TempPath::sibling(&plan.archive)?;
    let list_tmp = TempPath::sibling(&list)?;
    let preseed_tmp = TempPath::sibling(&plan.archive.with_extension("preseed"))?;
    if let Some(p) = &plan.preseed {
        fs::write(preseed_tmp.path(), &p.text).with_context(|| format!("writing {}", preseed_tmp.path().display()))?;
    }

    // One mmdebstrap at a time shares the package cache (sync-in/sync-out).
    let _apt_turn = super::take_turn(&apt_lock_path, || {
        stage.progress("waiting for another build using the package cache");
    })?;
    // Under /tmp: the hooks copy it to the same path inside the tree (dpkg,
    // chrooted, opens the path apt gives it) and remove it from there.
    // Kept (and removed) with the folder until mmdebstrap is done.
    let stub = if plan.provided.is_empty() {
        None
    } else {
        let dir = tempfile::Builder::new()
            .prefix("flypack-provided-")
            .tempdir()
            .context("making a temporary folder for the stub package")?;
        let deb = stub_package(&plan.provided, dir.path())?;
        Some((dir, deb))
    };
    let cmd = mmdebstrap(
        plan,
        &apt_cache,
        archive_tmp.path(),
        list_tmp.path(),
        plan.preseed.as_ref().map(|_| preseed_tmp.path()),
        stub.as_ref().map(|(_, deb)| deb.as_path()),
    )
    .env("TMPDIR", &work);
    let mut errors: Vec<String> = Vec::new();
    let result = cmd.run_lines(|stream, line| {
        if stream == Stream::Stderr
            && (line.starts_with("E: ") || line.contains("useradd: ") || line.starts_with("W: Unable"))
        {
            errors.push(line.to_string());
        }
        if let Some(msg) = line.strip_prefix("I: ") {
            // Hook lines carry whole shell commands: show their start.
            let short: String = msg.chars().take(90).collect();
            stage.progress(&short);
        }
    });
    if let Err(e) = result {
        return Err(explain(plan, profile, &errors, e));
    }

    let packages = read_dpkg_list(list_tmp.path())?;
    if packages.is_empty() {
        bail!("mmdebstrap finished but no installed packages were listed: the root filesystem is unusable");
    }
    write_atomic(&list, serde_json::to_vec_pretty(&packages)?.as_slice(), 0o644)?;
    archive_tmp.persist(&plan.archive)?;
    drop(list_tmp);
    super::prune_archives(
        &dir,
        &plan.archive,
        KEEP_CACHED,
        &[&["packages.json", "lock"], crate::stages::tree::UNPACKED_COMPANIONS].concat(),
        "root filesystem",
    )?;
    let size = fs::metadata(&plan.archive).map(|m| m.len()).unwrap_or(0);
    stage.done(&format!(
        "built {} ({} packages, {})",
        short(&plan.key),
        packages.len(),
        indicatif::HumanBytes(size)
    ));
    Ok(Rootfs {
        archive: plan.archive.clone(),
        packages,
        cached: false,
    })
}

fn short(key: &str) -> &str {
    &key[..12.min(key.len())]
}

/// The control file of the stub package that provides `provided`.
pub fn stub_control(provided: &[String]) -> String {
    format!(
        "Package: {STUB_PACKAGE}\n\
         Version: 1\n\
         Architecture: all\n\
         Maintainer: Flypack <root@localhost>\n\
         Section: misc\n\
         Priority: optional\n\
         Provides: {}\n\
         Description: packages left out of this Flypack image\n \
         The profile's [debian] provided lists packages that others depend on\n \
         and that no part of the appliance uses. This package stands in for\n \
         them, without their files.\n",
        provided.join(", ")
    )
}

/// The stub package's name.
pub const STUB_PACKAGE: &str = "flypack-provided";

/// Builds the stub package (with Debian's dpkg-deb) in `dir`; returns the
/// .deb's absolute path (mmdebstrap takes a local package by its path).
fn stub_package(provided: &[String], dir: &Path) -> Result<PathBuf> {
    let root = dir.join(STUB_PACKAGE);
    fs::create_dir_all(root.join("DEBIAN")).with_context(|| format!("creating {}", root.display()))?;
    fs::write(root.join("DEBIAN/control"), stub_control(provided))
        .with_context(|| format!("writing {}/DEBIAN/control", root.display()))?;
    let deb = std::path::absolute(dir.join(format!("{STUB_PACKAGE}_1_all.deb")))?;
    Cmd::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .run()
        .context("building the stub package for [debian] provided")?;
    Ok(deb)
}

/// The mmdebstrap command line for a plan; `stub` is the package that
/// provides `plan.provided` (which are then left out).
pub fn mmdebstrap(
    plan: &RootfsPlan,
    apt_cache: &Path,
    out: &Path,
    list_out: &Path,
    preseed: Option<&Path>,
    stub: Option<&Path>,
) -> Cmd {
    let q = |p: &Path| flypack_contracts::cmd::shell_quote(&p.display().to_string());
    let mut cmd = Cmd::new("mmdebstrap")
        .arg(format!("--variant={}", plan.variant))
        // Explicit: the output is written under a temporary name without .tar.
        .arg("--format=tar")
        .arg(format!("--architectures={}", plan.architecture));
    if let Some(stub) = stub {
        // First, so that apt has the provider before it meets a dependant.
        cmd = cmd.arg(format!("--include={}", stub.display()));
    }
    // apt (outside the tree) hands the stub's path to dpkg (chrooted): the
    // stub is copied to the same path inside, and removed at the end.
    let stub_dir = stub.and_then(Path::parent).map(q);
    // "name-" tells apt not to install the real package.
    let include: Vec<String> = plan
        .packages
        .iter()
        .cloned()
        .chain(plan.provided.iter().map(|p| format!("{p}-")))
        .collect();
    let mut cmd = cmd
        .arg(format!("--include={}", include.join(",")))
        .arg("--skip=essential/unlink")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives/",
            q(apt_cache)
        ));
    if let (Some(stub), Some(dir)) = (stub, &stub_dir) {
        cmd = cmd
            .arg(format!("--setup-hook=mkdir -p \"$1\"{dir}"))
            .arg(format!("--setup-hook=copy-in {} {dir}", q(stub)))
            .arg(format!("--customize-hook=rm -r \"$1\"{dir}"));
    }
    if plan.packages.iter().any(|p| p == "zstd") {
        // zstd initramfs: much faster to unpack at boot than gzip.
        cmd = cmd.arg(
            "--setup-hook=mkdir -p \"$1\"/etc/initramfs-tools/conf.d && \
             echo COMPRESS=zstd > \"$1\"/etc/initramfs-tools/conf.d/flypack-compress.conf",
        );
    }
    if let Some(p) = preseed {
        // Before the non-essential packages are installed and configured.
        cmd = cmd.arg(format!("--essential-hook=copy-in {} /tmp", q(p))).arg(format!(
            "--essential-hook=chroot \"$1\" debconf-set-selections /tmp/{name} && rm \"$1\"/tmp/{name}",
            name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
    }
    for u in &plan.users {
        let mut hook = format!(
            "--customize-hook=chroot \"$1\" useradd --create-home --user-group --shell {} ",
            flypack_contracts::cmd::shell_quote(&u.shell)
        );
        if !u.groups.is_empty() {
            hook.push_str(&format!("--groups {} ", u.groups.join(",")));
        }
        // No password, ever: the account is locked and logs in with SSH keys.
        hook.push_str(&format!(
            "{name} && chroot \"$1\" passwd --lock --quiet {name}",
            name = u.name
        ));
        cmd = cmd.arg(hook);
    }
    cmd.arg(format!(
        "--customize-hook=sync-out /var/cache/apt/archives {}",
        q(apt_cache)
    ))
    .arg(format!(
        "--customize-hook=chroot \"$1\" dpkg-query -W -f='${{Package}}\\t${{Version}}\\n' > {}",
        q(list_out)
    ))
    .arg(&plan.suite)
    .arg(out)
    .args(&plan.sources)
}

/// Turns mmdebstrap's failure into what the user must change.
fn explain(plan: &RootfsPlan, profile: &Path, errors: &[String], e: CmdError) -> anyhow::Error {
    let p = profile.display();
    for line in errors {
        if let Some(pkg) = line
            .strip_prefix("E: Unable to locate package ")
            .or_else(|| line.strip_prefix("E: Package '").and_then(|s| s.split('\'').next()))
        {
            return anyhow!(
                "{p}: debian.packages: package {pkg:?} does not exist in {} ({}) at {}: check its name \
                 (apt-cache policy {pkg}) and debian.components\n(mmdebstrap said: {line})",
                plan.suite,
                plan.sources
                    .first()
                    .map(|s| s.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default(),
                plan.mirror
            );
        }
        if let Some(rest) = line.split("useradd: group '").nth(1) {
            let group = rest.split('\'').next().unwrap_or(rest);
            return anyhow!(
                "{p}: users: group {group:?} does not exist in the image: remove it from the user's groups \
                 or add the package that creates it\n(mmdebstrap said: {line})"
            );
        }
        if line.contains("Failed to fetch")
            || line.contains("Could not resolve")
            || line.contains("Temporary failure resolving")
            || line.contains("Unable to connect")
            || line.contains("Release' does not have a Release file")
            || line.contains("does not have a Release file")
        {
            return anyhow!(
                "{p}: debian.mirror: cannot download from {}: check the URL and the network\n(mmdebstrap said: {line})",
                plan.mirror
            );
        }
    }
    anyhow::Error::new(e).context("mmdebstrap failed to build the root filesystem")
}

/// Checks that every source answers before spending minutes in mmdebstrap.
fn check_mirrors(plan: &RootfsPlan, profile: &Path) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    for src in &plan.sources {
        let mut f = src.split_whitespace().skip(1);
        let (Some(url), Some(suite)) = (f.next(), f.next()) else {
            continue;
        };
        let release = format!("{}/dists/{suite}/InRelease", url.trim_end_matches('/'));
        if let Some(path) = release.strip_prefix("file://") {
            if !Path::new(path).is_file() {
                bail!(
                    "{}: debian.mirror: {release} does not exist: check the path",
                    profile.display()
                );
            }
            continue;
        }
        match agent.head(&release).call() {
            Ok(_) => {}
            Err(ureq::Error::StatusCode(code)) => bail!(
                "{}: debian.mirror: {release} answered HTTP {code}: check the mirror URL and the suite",
                profile.display()
            ),
            Err(e) => bail!(
                "{}: debian.mirror: cannot reach {url} ({e}): check the URL and the network \
                 (builds need Debian's archive; booting and flashing do not)",
                profile.display()
            ),
        }
    }
    Ok(())
}

fn read_dpkg_list(path: &Path) -> Result<Vec<Package>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out: Vec<Package> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| Package {
            name: n.to_string(),
            version: v.to_string(),
        })
        .collect();
    out.sort();
    Ok(out)
}

fn read_packages(path: &Path) -> Result<Vec<Package>> {
    let text = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PreseedPlan, RootfsUser};

    fn plan() -> RootfsPlan {
        RootfsPlan {
            key: "k".into(),
            recipe: 1,
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            variant: "minbase".into(),
            sources: vec!["deb http://deb.debian.org/debian bookworm main".into()],
            mirror: "http://deb.debian.org/debian".into(),
            snapshot: None,
            packages: vec!["linux-image-amd64".into(), "zstd".into()],
            provided: vec![],
            preseed: Some(PreseedPlan {
                path: "/p/flypack.preseed".into(),
                text: String::new(),
            }),
            users: vec![RootfsUser {
                name: "ops".into(),
                groups: vec!["sudo".into(), "adm".into()],
                shell: "/bin/bash".into(),
            }],
            archive: "/c/rootfs/k.tar".into(),
            cached: false,
            refresh: false,
        }
    }

    #[test]
    fn mmdebstrap_command_golden() {
        let cmd = mmdebstrap(
            &plan(),
            Path::new("/c/apt"),
            Path::new("/c/rootfs/tmp.tar"),
            Path::new("/c/list"),
            Some(Path::new("/c/x.preseed")),
            None,
        );
        let want = [
            "mmdebstrap",
            "--variant=minbase",
            "--format=tar",
            "--architectures=amd64",
            "--include=linux-image-amd64,zstd",
            "--skip=essential/unlink",
            "'--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/'",
            "'--setup-hook=sync-in /c/apt /var/cache/apt/archives/'",
            "'--setup-hook=mkdir -p \"$1\"/etc/initramfs-tools/conf.d && echo COMPRESS=zstd > \"$1\"/etc/initramfs-tools/conf.d/flypack-compress.conf'",
            "'--essential-hook=copy-in /c/x.preseed /tmp'",
            "'--essential-hook=chroot \"$1\" debconf-set-selections /tmp/x.preseed && rm \"$1\"/tmp/x.preseed'",
            "'--customize-hook=chroot \"$1\" useradd --create-home --user-group --shell /bin/bash --groups sudo,adm ops && chroot \"$1\" passwd --lock --quiet ops'",
            "'--customize-hook=sync-out /var/cache/apt/archives /c/apt'",
            "'--customize-hook=chroot \"$1\" dpkg-query -W -f='\\''${Package}\\t${Version}\\n'\\'' > /c/list'",
            "bookworm",
            "/c/rootfs/tmp.tar",
            "'deb http://deb.debian.org/debian bookworm main'",
        ]
        .join(" ");
        assert_eq!(cmd.display(), want);
    }

    /// A provided package is left out ("name-") and the stub that provides
    /// it comes first; the stub is a real .deb that provides exactly those.
    #[test]
    fn provided_packages_are_left_out_for_a_stub_that_provides_them() {
        let mut p = plan();
        p.provided = vec!["ansible".into(), "foo".into()];
        let dir = tempfile::tempdir().unwrap();
        let deb = stub_package(&p.provided, dir.path()).unwrap();
        let cmd = mmdebstrap(
            &p,
            Path::new("/c/apt"),
            Path::new("/c/rootfs/tmp.tar"),
            Path::new("/c/list"),
            None,
            Some(&deb),
        )
        .display();
        let want = format!(
            "--architectures=amd64 --include={} --include=linux-image-amd64,zstd,ansible-,foo- --skip",
            deb.display()
        );
        assert!(cmd.contains(&want), "{cmd}");
        let dir = deb.parent().unwrap().display();
        for hook in [
            format!("'--setup-hook=mkdir -p \"$1\"{dir}'"),
            format!("'--setup-hook=copy-in {} {dir}'", deb.display()),
            format!("'--customize-hook=rm -r \"$1\"{dir}'"),
        ] {
            assert!(cmd.contains(&hook), "{hook} in {cmd}");
        }
        let field = |f: &str| {
            let o = std::process::Command::new("dpkg-deb")
                .arg("--field")
                .arg(&deb)
                .arg(f)
                .output()
                .unwrap();
            assert!(o.status.success(), "{o:?}");
            String::from_utf8(o.stdout).unwrap().trim().to_string()
        };
        assert_eq!(field("Package"), STUB_PACKAGE);
        assert_eq!(field("Provides"), "ansible, foo");
        let o = std::process::Command::new("dpkg-deb")
            .arg("--contents")
            .arg(&deb)
            .output()
            .unwrap();
        let contents = String::from_utf8_lossy(&o.stdout);
        assert!(
            contents.lines().all(|l| l.ends_with(" ./")),
            "the stub holds no files: {contents}"
        );
    }

    #[test]
    fn failures_become_profile_errors() {
        let e = || CmdError::Failed {
            command: "mmdebstrap".into(),
            status: "exit status: 1".into(),
            code: Some(1),
            stderr_tail: String::new(),
        };
        let p = Path::new("images/x.toml");
        let msg = explain(&plan(), p, &["E: Unable to locate package nosuchpkg".into()], e()).to_string();
        assert!(
            msg.starts_with("images/x.toml: debian.packages: package \"nosuchpkg\" does not exist in bookworm"),
            "{msg}"
        );
        let msg = explain(
            &plan(),
            p,
            &["E: Package 'foo' has no installation candidate".into()],
            e(),
        )
        .to_string();
        assert!(msg.contains("package \"foo\" does not exist"), "{msg}");
        let msg = explain(&plan(), p, &["useradd: group 'docker' does not exist".into()], e()).to_string();
        assert!(msg.contains("group \"docker\" does not exist in the image"), "{msg}");
        let msg = explain(
            &plan(),
            p,
            &["E: Failed to fetch http://x/InRelease  Could not resolve 'x'".into()],
            e(),
        )
        .to_string();
        assert!(msg.contains("debian.mirror: cannot download"), "{msg}");
        let msg = format!("{:#}", explain(&plan(), p, &[], e()));
        assert!(msg.contains("mmdebstrap failed"), "{msg}");
    }

    #[test]
    fn dpkg_list_parses() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        fs::write(&p, "zstd\t1.5.4+dfsg2-5\nlibc6\t2.36-9+deb12u14\nremoved\t\n").unwrap();
        let l = read_dpkg_list(&p).unwrap();
        assert_eq!(
            l,
            vec![
                Package {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u14".into()
                },
                Package {
                    name: "zstd".into(),
                    version: "1.5.4+dfsg2-5".into()
                },
            ]
        );
    }
}
