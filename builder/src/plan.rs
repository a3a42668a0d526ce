//! The build plan: every input of a build, resolved and checked, before
//! anything is built. `builder build --dry-run` prints it as JSON, and it is
//! embedded in the image (`/usr/share/flypack/plan.json`) so later tools
//! know what they are looking at.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flypack_contracts::digest::{KeyHasher, sha256_file};
use flypack_contracts::manifest::ProfileRef;
use serde::Serialize;

use crate::disk_plan::{self, DiskPlan, Ids};
use crate::elfcheck;
use crate::grub::BootConfig;
use crate::overlay::{self, OverlayPlan};
use crate::profile::{Format, Profile, User};

/// Version of the plan JSON.
pub const PLAN_SCHEMA: u32 = 1;
/// Bump when the root filesystem recipe (mmdebstrap hooks) changes, so
/// cached root filesystems made by the old recipe are not reused.
pub const ROOTFS_RECIPE: u32 = 1;

/// Where a build reads and writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The profile file.
    pub profile: PathBuf,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Cache folder (packages, root filesystems).
    pub cache_dir: PathBuf,
    /// The firstboot binary to put in the image.
    pub firstboot: PathBuf,
    /// Rebuild the root filesystem even if a cached one matches.
    pub refresh_rootfs: bool,
    /// Fixed identifiers (tests); random when `None`.
    pub ids: Option<Ids>,
}

/// The plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// [`PLAN_SCHEMA`].
    pub schema: u32,
    /// Builder version.
    pub builder_version: &'static str,
    /// Image name.
    pub name: String,
    /// The profile.
    pub profile: ProfileRef,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Cache folder.
    pub cache_dir: PathBuf,
    /// Root filesystem stage.
    pub rootfs: RootfsPlan,
    /// Overlays, in order.
    pub overlays: Vec<OverlayPlan>,
    /// Users (SSH keys are installed by the tree stage).
    pub users: Vec<User>,
    /// The default unit config baked into the image.
    pub unit_defaults: String,
    /// The fleet inventory baked into the image.
    pub fleet: Option<String>,
    /// Our binaries.
    pub firstboot: ProgramPlan,
    /// Boot loader.
    pub boot: BootPlan,
    /// Disk layout.
    pub disk: DiskPlan,
    /// Output files.
    pub outputs: OutputsPlan,
    /// Digest of every input that decides the image's content (not the
    /// random identifiers).
    pub digest: String,
}

/// The root filesystem stage.
#[derive(Debug, Clone, Serialize)]
pub struct RootfsPlan {
    /// Cache key (digest of everything below).
    pub key: String,
    /// Recipe version, [`ROOTFS_RECIPE`].
    pub recipe: u32,
    /// Suite.
    pub suite: String,
    /// Architecture.
    pub architecture: String,
    /// mmdebstrap variant.
    pub variant: String,
    /// Sources lines.
    pub sources: Vec<String>,
    /// Main archive URL used (for messages and the manifest).
    pub mirror: String,
    /// Snapshot pin.
    pub snapshot: Option<String>,
    /// Packages.
    pub packages: Vec<String>,
    /// Preseed file and content.
    pub preseed: Option<PreseedPlan>,
    /// Users created in the root filesystem (name, groups, shell).
    pub users: Vec<RootfsUser>,
    /// The cached root filesystem archive.
    pub archive: PathBuf,
    /// Whether it exists already (and will be reused).
    pub cached: bool,
    /// Rebuild even if cached.
    pub refresh: bool,
}

/// A preseed file.
#[derive(Debug, Clone, Serialize)]
pub struct PreseedPlan {
    /// Path.
    pub path: PathBuf,
    /// Content.
    pub text: String,
}

/// A user as created in the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootfsUser {
    /// Name.
    pub name: String,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// Shell.
    pub shell: String,
}

/// A binary of ours.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramPlan {
    /// Where it is on the host.
    pub path: PathBuf,
    /// SHA-256.
    pub sha256: String,
    /// Highest glibc version it needs ("" if static).
    pub glibc_required: String,
}

/// Boot loader plan.
#[derive(Debug, Clone, Serialize)]
pub struct BootPlan {
    /// Menu title.
    pub title: String,
    /// Timeout.
    pub timeout: u32,
    /// Serial console.
    pub serial_console: String,
    /// Extra kernel arguments.
    pub extra_cmdline: Vec<String>,
    /// The full kernel command line.
    pub cmdline: String,
}

impl BootPlan {
    /// The grub module's view.
    pub fn config(&self, root_partuuid: &str) -> BootConfig {
        BootConfig {
            title: self.title.clone(),
            timeout: self.timeout,
            root_partuuid: root_partuuid.to_string(),
            serial_console: self.serial_console.clone(),
            extra_cmdline: self.extra_cmdline.clone(),
        }
    }
}

/// Output files (final names).
#[derive(Debug, Clone, Serialize)]
pub struct OutputsPlan {
    /// The raw image.
    pub image: PathBuf,
    /// The manifest.
    pub manifest: PathBuf,
    /// The checksum file.
    pub sums: PathBuf,
    /// zstd-compressed image, if asked for.
    pub zst: Option<PathBuf>,
    /// qcow2 image, if asked for.
    pub qcow2: Option<PathBuf>,
}

/// Makes the plan for a validated profile.
pub fn make(profile: &Profile, opts: &Options) -> Result<Plan> {
    let d = &profile.debian;
    let users: Vec<RootfsUser> = profile
        .users
        .iter()
        .map(|u| RootfsUser {
            name: u.name.to_string(),
            groups: u.groups.iter().map(ToString::to_string).collect(),
            shell: u.shell.clone(),
        })
        .collect();
    let packages: Vec<String> = d.packages.iter().map(ToString::to_string).collect();
    let preseed = d.preseed.as_ref().map(|p| PreseedPlan {
        path: p.path.clone(),
        text: p.text.clone(),
    });
    let sources = d.sources();
    let variant = "minbase".to_string();

    let mut k = KeyHasher::new();
    k.part("recipe", ROOTFS_RECIPE.to_le_bytes())
        .part("suite", &d.suite)
        .part("arch", &d.architecture)
        .part("variant", &variant);
    for s in &sources {
        k.part("source", s);
    }
    for p in &packages {
        k.part("package", p);
    }
    k.part("preseed", preseed.as_ref().map(|p| p.text.as_str()).unwrap_or(""));
    for u in &users {
        k.part("user", &u.name)
            .part("groups", u.groups.join(","))
            .part("shell", &u.shell);
    }
    let key = k.finish();
    let archive = opts.cache_dir.join("rootfs").join(format!("{key}.tar"));
    let cached = archive.is_file() && archive.with_extension("packages.json").is_file();

    let overlays = profile
        .overlays
        .iter()
        .map(|o| overlay::plan(o).with_context(|| format!("overlay {}", o.display())))
        .collect::<Result<Vec<_>>>()?;

    let firstboot = program(&opts.firstboot, &d.suite)?;

    let ids = opts.ids.clone().unwrap_or_else(Ids::random);
    let disk = disk_plan::plan(&profile.disk, &ids);
    let title = format!("Flypack {}", profile.name);
    let boot = BootPlan {
        cmdline: BootConfig {
            title: title.clone(),
            timeout: profile.boot.timeout,
            root_partuuid: disk.part(flypack_contracts::layout::PART_ROOT).uuid.to_string(),
            serial_console: profile.boot.serial_console.clone(),
            extra_cmdline: profile.boot.cmdline.clone(),
        }
        .cmdline(),
        title,
        timeout: profile.boot.timeout,
        serial_console: profile.boot.serial_console.clone(),
        extra_cmdline: profile.boot.cmdline.clone(),
    };

    let name = profile.name.to_string();
    let out = |suffix: &str| opts.out_dir.join(format!("{name}{suffix}"));
    let outputs = OutputsPlan {
        image: out(".img"),
        manifest: out(".manifest.json"),
        sums: opts.out_dir.join("SHA256SUMS"),
        zst: profile.outputs.formats.contains(&Format::Zst).then(|| out(".img.zst")),
        qcow2: profile.outputs.formats.contains(&Format::Qcow2).then(|| out(".qcow2")),
    };

    let mut h = KeyHasher::new();
    h.part("builder", flypack_contracts::VERSION)
        .part("builder-exe", builder_exe_digest())
        .part("rootfs", &key)
        .part("firstboot", &firstboot.sha256)
        .part(
            "users",
            serde_json::to_vec(&profile.users).context("serialising users")?,
        )
        .part("boot", serde_json::to_vec(&profile.boot).context("serialising boot")?)
        .part("disk", serde_json::to_vec(&profile.disk).context("serialising disk")?)
        .part(
            "outputs",
            serde_json::to_vec(&profile.outputs).context("serialising outputs")?,
        )
        .part("name", &name)
        .part("unit-defaults", &profile.unit_defaults)
        .part("fleet", profile.fleet.as_deref().unwrap_or(""));
    for o in &overlays {
        h.part("overlay", &o.digest);
    }

    Ok(Plan {
        schema: PLAN_SCHEMA,
        builder_version: flypack_contracts::VERSION,
        name,
        profile: ProfileRef {
            path: profile.path.display().to_string(),
            digest: profile.digest.clone(),
        },
        out_dir: opts.out_dir.clone(),
        cache_dir: opts.cache_dir.clone(),
        rootfs: RootfsPlan {
            key,
            recipe: ROOTFS_RECIPE,
            suite: d.suite.clone(),
            architecture: d.architecture.clone(),
            variant,
            sources,
            mirror: d.effective_mirror(),
            snapshot: d.snapshot.as_ref().map(ToString::to_string),
            packages,
            preseed,
            users,
            archive,
            cached,
            refresh: opts.refresh_rootfs,
        },
        overlays,
        users: profile.users.clone(),
        unit_defaults: profile.unit_defaults.clone(),
        fleet: profile.fleet.clone(),
        firstboot,
        boot,
        disk,
        outputs,
        digest: h.finish(),
    })
}

fn program(path: &Path, suite: &str) -> Result<ProgramPlan> {
    if !path.is_file() {
        anyhow::bail!(
            "firstboot binary {} not found: build it with `cargo build --release -p firstboot` \
             (builder looks next to itself), or pass --firstboot PATH",
            path.display()
        );
    }
    let target = elfcheck::suite_glibc(suite).context("unknown suite glibc")?;
    let info = elfcheck::check_runs_on(path, target, "firstboot")?;
    Ok(ProgramPlan {
        path: path.to_path_buf(),
        sha256: sha256_file(path)?,
        glibc_required: info.glibc.map(|(a, b)| format!("{a}.{b}")).unwrap_or_default(),
    })
}

/// Digest of the running builder executable: a changed builder changes the
/// plan digest, so "the image is up to date" means "built by this code".
fn builder_exe_digest() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| sha256_file(&p).ok())
        .unwrap_or_else(|| "unknown".to_string())
}
