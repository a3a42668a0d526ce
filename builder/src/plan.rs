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
    /// The flypack-exporter binary (for the stack's video-exporter image).
    pub exporter: PathBuf,
    /// The flypack-web binary (the unit's web app) to put in the image.
    pub webapp: PathBuf,
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
    /// The Ansible folder installed at /usr/share/flypack/ansible.
    pub ansible: Option<PathBuf>,
    /// The unit part of the fleet's backup key (a secret: not printed, not
    /// in the plan inside the image; its digest is in the plan's).
    #[serde(skip)]
    pub backup_key: Option<String>,
    /// The security gate.
    pub gate: crate::stages::gate::GatePlan,
    /// Our binaries.
    pub firstboot: ProgramPlan,
    /// The web app.
    pub webapp: ProgramPlan,
    /// Boot loader.
    pub boot: BootPlan,
    /// Disk layout.
    pub disk: DiskPlan,
    /// Output files.
    pub outputs: OutputsPlan,
    /// The container stack, if the profile has one.
    pub stack: Option<StackPlan>,
    /// USB installer settings.
    pub installer: crate::profile::Installer,
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
    /// Packages a stub package provides instead (`[debian] provided`).
    pub provided: Vec<String>,
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

/// The container stack.
#[derive(Debug, Clone, Serialize)]
pub struct StackPlan {
    /// Compose project name.
    pub project: String,
    /// The folder holding the compose file (copied into the image).
    pub compose_dir: PathBuf,
    /// The compose file's name in it.
    pub compose_file: String,
    /// Enabled compose profiles.
    pub profiles: Vec<String>,
    /// The shared base of the images built from Debian packages.
    pub base: RootfsPlan,
    /// The images.
    pub images: Vec<StackImagePlan>,
    /// Cache key of the built images' archive.
    pub archive_key: String,
}

/// One stack image.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum StackImagePlan {
    /// Debian packages on the shared base.
    Debian {
        /// Reference.
        reference: String,
        /// The root filesystem with the packages (diffed against the base).
        rootfs: Box<RootfsPlan>,
    },
    /// Our binaries on the shared base.
    Binaries {
        /// Reference.
        reference: String,
        /// Binary files.
        binaries: Vec<PathBuf>,
    },
    /// A `docker save` archive.
    Archive {
        /// Reference.
        reference: String,
        /// Path.
        path: PathBuf,
    },
    /// Exported from the local Docker daemon.
    Docker {
        /// Reference.
        reference: String,
    },
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
    /// The block map (bmaptool format).
    pub bmap: PathBuf,
    /// The USB installer image and its block map, if the profile asks for it.
    pub installer: Option<(PathBuf, PathBuf)>,
    /// zstd-compressed image, if asked for.
    pub zst: Option<PathBuf>,
    /// qcow2 image, if asked for.
    pub qcow2: Option<PathBuf>,
}

/// Makes the plan for a validated profile.
/// What the security gate reads: the security index, and the updates index
/// where the profile takes updates.
fn gate_plan(profile: &Profile) -> crate::stages::gate::GatePlan {
    let d = &profile.debian;
    let sec = &profile.security;
    let mut indices = Vec::new();
    if let Some(m) = sec.mirror.as_ref().or(d.security_mirror.as_ref()) {
        indices.push((m.as_str().to_string(), format!("{}-security", d.suite)));
    }
    if sec.check_updates.unwrap_or(d.updates) {
        indices.push((d.mirror.as_str().to_string(), format!("{}-updates", d.suite)));
    }
    crate::stages::gate::GatePlan {
        enabled: sec.gate && !indices.is_empty(),
        indices,
        components: d.components.clone(),
        architecture: d.architecture.clone(),
        keyring: sec.keyring.clone(),
        waivers: sec
            .waivers
            .iter()
            .map(|w| (w.package.to_string(), (w.reason.clone(), w.expires.to_string())))
            .collect(),
    }
}

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
    let mut rootfs = rootfs_plan(d, "minbase", packages, preseed, users, opts);
    rootfs.provide(d.provided.iter().map(ToString::to_string).collect(), opts);
    let key = rootfs.key.clone();
    let gate = gate_plan(profile);

    let overlays = profile
        .overlays
        .iter()
        .map(|o| overlay::plan(o).with_context(|| format!("overlay {}", o.display())))
        .collect::<Result<Vec<_>>>()?;

    let firstboot = program(&opts.firstboot, &d.suite, "firstboot", "firstboot", "firstboot")?;
    let webapp = program(&opts.webapp, &d.suite, "flypack-web", "flypack-web", "webapp")?;
    let stack = stack_plan(profile, opts)?;

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
        bmap: out(".bmap"),
        installer: profile
            .installer
            .enabled
            .then(|| (out("-installer.img"), out("-installer.bmap"))),
        zst: profile.outputs.formats.contains(&Format::Zst).then(|| out(".img.zst")),
        qcow2: profile.outputs.formats.contains(&Format::Qcow2).then(|| out(".qcow2")),
    };

    let mut h = KeyHasher::new();
    h.part("builder", flypack_contracts::VERSION)
        .part("builder-exe", builder_exe_digest())
        .part("rootfs", &key)
        .part("firstboot", &firstboot.sha256)
        .part("webapp", &webapp.sha256)
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
        .part("fleet", profile.fleet.as_deref().unwrap_or(""))
        .part("backup-key", profile.backup_key.as_deref().unwrap_or(""))
        .part(
            "installer",
            serde_json::to_vec(&profile.installer).context("serialising installer")?,
        );
    for o in &overlays {
        h.part("overlay", &o.digest);
    }
    if let Some(a) = &profile.ansible {
        h.part("ansible", dir_digest(a)?);
    }
    if let Some(s) = &stack {
        h.part("stack", &s.archive_key)
            .part("compose", dir_digest(&s.compose_dir)?)
            .part("profiles", s.profiles.join(","));
        for i in &s.images {
            if let StackImagePlan::Archive { path, .. } = i {
                h.part("archive", sha256_file(path)?);
            }
        }
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
        rootfs,
        overlays,
        users: profile.users.clone(),
        unit_defaults: profile.unit_defaults.clone(),
        fleet: profile.fleet.clone(),
        ansible: profile.ansible.clone(),
        backup_key: profile.backup_key.clone(),
        gate,
        firstboot,
        webapp,
        boot,
        disk,
        outputs,
        stack,
        installer: profile.installer.clone(),
        digest: h.finish(),
    })
}

/// A root filesystem stage's plan (the image's, or a container image's).
pub fn rootfs_plan(
    d: &crate::profile::Debian,
    variant: &str,
    packages: Vec<String>,
    preseed: Option<PreseedPlan>,
    users: Vec<RootfsUser>,
    opts: &Options,
) -> RootfsPlan {
    let sources = d.sources();
    let mut k = KeyHasher::new();
    k.part("recipe", ROOTFS_RECIPE.to_le_bytes())
        .part("suite", &d.suite)
        .part("arch", &d.architecture)
        .part("variant", variant);
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
    RootfsPlan {
        key,
        recipe: ROOTFS_RECIPE,
        suite: d.suite.clone(),
        architecture: d.architecture.clone(),
        variant: variant.to_string(),
        sources,
        mirror: d.effective_mirror(),
        snapshot: d.snapshot.as_ref().map(ToString::to_string),
        packages,
        provided: vec![],
        preseed,
        users,
        archive,
        cached,
        refresh: opts.refresh_rootfs,
    }
}

impl RootfsPlan {
    /// Adds packages a stub provides instead (part of the cache key).
    pub fn provide(&mut self, provided: Vec<String>, opts: &Options) {
        if provided.is_empty() {
            return;
        }
        let mut k = KeyHasher::new();
        k.part("rootfs", &self.key);
        for p in &provided {
            k.part("provided", p);
        }
        self.key = k.finish();
        self.archive = opts.cache_dir.join("rootfs").join(format!("{}.tar", self.key));
        self.cached = self.archive.is_file() && self.archive.with_extension("packages.json").is_file();
        self.provided = provided;
    }
}

fn stack_plan(profile: &Profile, opts: &Options) -> Result<Option<StackPlan>> {
    let Some(s) = &profile.stack else { return Ok(None) };
    let d = &profile.debian;
    let mut base_pkgs = s.base_packages.clone();
    base_pkgs.sort();
    let base = rootfs_plan(d, "essential", base_pkgs.clone(), None, vec![], opts);
    let mut k = KeyHasher::new();
    // How the archive is made: a change here must not reuse an archive made the old way.
    k.part("format", crate::stages::images::ARCHIVE_FORMAT)
        .part("base", &base.key);
    let mut images = Vec::new();
    for img in &s.images {
        match img {
            crate::profile::StackImage::Debian { reference, packages } => {
                let mut all = base_pkgs.clone();
                all.extend(packages.iter().cloned());
                all.sort();
                all.dedup();
                let rootfs = rootfs_plan(d, "essential", all, None, vec![], opts);
                k.part("debian", reference).part("key", &rootfs.key);
                images.push(StackImagePlan::Debian {
                    reference: reference.clone(),
                    rootfs: Box::new(rootfs),
                });
            }
            crate::profile::StackImage::Binaries { reference, binaries } => {
                let mut paths = Vec::new();
                for b in binaries {
                    let p = if b == "flypack-exporter" {
                        opts.exporter.clone()
                    } else {
                        PathBuf::from(b)
                    };
                    let info =
                        program(&p, &d.suite, b, b, "exporter").with_context(|| format!("stack image {reference}"))?;
                    k.part("binary", reference).part("sha", &info.sha256);
                    paths.push(p);
                }
                images.push(StackImagePlan::Binaries {
                    reference: reference.clone(),
                    binaries: paths,
                });
            }
            crate::profile::StackImage::Archive { reference, path } => images.push(StackImagePlan::Archive {
                reference: reference.clone(),
                path: path.clone(),
            }),
            crate::profile::StackImage::Docker { reference } => images.push(StackImagePlan::Docker {
                reference: reference.clone(),
            }),
        }
    }
    let dir = s.compose.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Some(StackPlan {
        project: s.project.clone(),
        compose_file: s
            .compose
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        compose_dir: dir,
        profiles: s.profiles.clone(),
        base,
        images,
        archive_key: k.finish(),
    }))
}

/// Digest of a folder's files (for the compose folder in the plan digest).
fn dir_digest(dir: &Path) -> Result<String> {
    let mut h = KeyHasher::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() { stack.push(p) } else { files.push(p) }
        }
    }
    files.sort();
    for f in files {
        h.part("path", f.strip_prefix(dir).unwrap_or(&f).as_os_str().as_encoded_bytes())
            .part("data", std::fs::read(&f)?);
    }
    Ok(h.finish())
}

/// One of our binaries (`name`, from cargo package `package`, given with
/// `--flag`), checked to run on the image's suite.
fn program(path: &Path, suite: &str, name: &str, package: &str, flag: &str) -> Result<ProgramPlan> {
    if !path.is_file() {
        anyhow::bail!(
            "{name} binary {} not found: build it with `cargo build --release -p {package}` \
             (builder looks next to itself), or pass --{flag} PATH",
            path.display(),
        );
    }
    let target = elfcheck::suite_glibc(suite).context("unknown suite glibc")?;
    let info = elfcheck::check_runs_on(path, target, name)?;
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
