//! Helpers for the workspace's end-to-end tests: build the binaries and the
//! default image once per run (shared by every test, across test processes),
//! build variants, boot images in QEMU and look inside them without mounting.
//!
//! These tests need root, mmdebstrap, QEMU and Debian's archive: `.ci/run`
//! installs what they need. A test that cannot run fails; it never skips.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use flypack_contracts::manifest::{Manifest, PartitionInfo};
use flypack_contracts::status::{StageState, Status, Verdict};
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

/// Cargo's target folder.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// Where end-to-end artefacts go (kept between runs, under target/).
/// `FLYPACK_E2E_DIR` moves it (CI keeps its compiled crates in a cache
/// but builds its images afresh in each clone).
pub fn e2e_dir() -> PathBuf {
    let d = std::env::var_os("FLYPACK_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("e2e"));
    std::fs::create_dir_all(&d).expect("creating target/e2e");
    d
}

/// Holds an exclusive lock on a file in target/e2e while alive.
pub struct Lock(#[allow(dead_code)] File);

/// Takes the named lock (blocking), so test processes do shared work once.
pub fn lock(name: &str) -> Lock {
    let f = File::create(e2e_dir().join(format!("{name}.lock"))).expect("creating lock file");
    f.lock().expect("locking");
    Lock(f)
}

/// The binaries under test.
#[derive(Debug)]
pub struct Bins {
    /// builder.
    pub builder: PathBuf,
    /// firstboot.
    pub firstboot: PathBuf,
    /// flypack-exporter.
    pub exporter: PathBuf,
    /// flypack-web.
    pub webapp: PathBuf,
}

/// Whether `name` is a variable cargo sets for a test it runs (not one it
/// reads as configuration, such as CARGO_HOME or CARGO_TARGET_DIR).
fn cargo_test_variable(name: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_BIN_EXE_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || name == "OUT_DIR"
}

/// The `builder`, `firstboot`, `flypack-exporter` and `flypack-web` binaries under test.
///
/// Under cargo-nextest (the README's test command) they are the ones its
/// build of the workspace made, beside this test's own binary (dev profile:
/// dependencies optimised, the test-only fault hooks on through the
/// packages' dev-dependencies on themselves). `cargo test --workspace
/// --no-run` runs once first: nothing to do after `cargo nextest run
/// --workspace`, a build after a run of only some packages.
/// `FLYPACK_BIN_DIR` points at prebuilt ones instead.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = match std::env::var_os("FLYPACK_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let _l = lock("cargo-build");
                assert!(
                    std::env::var_os("NEXTEST_RUN_ID").is_some(),
                    "run the end-to-end tests with `cargo nextest run` (README), or set FLYPACK_BIN_DIR to a folder \
                     holding test builds of builder, firstboot, flypack-exporter and flypack-web: plain `cargo test` holds cargo's build lock"
                );
                // target/<profile folder>/deps/<this test> -> target/<profile folder>
                let exe = std::env::current_exe().expect("the test's own path");
                let dir = exe
                    .parent()
                    .and_then(Path::parent)
                    .expect("the test binary sits in target/<profile>/deps")
                    .to_path_buf();
                // The same command nextest ran, so the same artefacts: no
                // `--profile` for the default one (target/debug).
                let mut args = vec!["test", "--workspace", "--no-run"];
                let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
                if folder != "debug" {
                    args.extend(["--profile", folder]);
                }
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let mut cmd = Command::new(cargo);
                // Without the variables cargo sets for a running test (this
                // package's name, version, folder): build scripts that read
                // them (ring's) are rerun when cargo's own environment has
                // other values than the build's, and everything above them
                // was compiled again, six minutes of CI inside a test.
                for (k, _) in std::env::vars_os() {
                    let k = k.to_string_lossy();
                    if cargo_test_variable(&k) {
                        cmd.env_remove(k.as_ref());
                    }
                }
                let st = cmd
                    .args(&args)
                    .current_dir(repo())
                    .stdout(Stdio::null())
                    .status()
                    .expect("running cargo test --no-run");
                assert!(
                    st.success(),
                    "cargo test --workspace --no-run (the builder, firstboot, flypack-exporter and flypack-web under test) failed"
                );
                dir
            }
        };
        let b = Bins {
            builder: dir.join("builder"),
            firstboot: dir.join("firstboot"),
            exporter: dir.join("flypack-exporter"),
            webapp: dir.join("flypack-web"),
        };
        assert!(
            b.builder.is_file() && b.firstboot.is_file() && b.exporter.is_file() && b.webapp.is_file(),
            "no builder/firstboot/flypack-exporter/flypack-web in {}",
            dir.display()
        );
        b
    })
}

/// A `builder` command with the test environment.
pub fn builder() -> Command {
    let b = bins();
    let mut c = Command::new(&b.builder);
    c.env("FLYPACK_FIRSTBOOT", &b.firstboot)
        .env("FLYPACK_EXPORTER", &b.exporter)
        .env("FLYPACK_WEB", &b.webapp)
        .current_dir(repo())
        .stdin(Stdio::null());
    c
}

/// What a `builder --json ...` run printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// JSON events from stdout.
    pub events: Vec<Value>,
    /// stderr.
    pub stderr: String,
}

impl Run {
    /// The first event of this kind.
    pub fn event(&self, kind: &str) -> Option<&Value> {
        self.events.iter().find(|e| e["event"] == kind)
    }
}

/// Runs a builder command and collects its JSON events.
pub fn run(cmd: &mut Command) -> Run {
    let out: Output = cmd.output().expect("running builder");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    Run {
        code: out.status.code().unwrap_or(-1),
        events,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `builder --json build PROFILE --out OUT`.
pub fn build(profile: &Path, out: &Path) -> Run {
    run(builder().args(["--json", "build"]).arg(profile).arg("--out").arg(out))
}

/// The plan `builder build --dry-run` prints for a profile.
pub fn dry_run(profile: &Path, out: &Path) -> Value {
    let o = builder()
        .args(["build", "--dry-run"])
        .arg(profile)
        .arg("--out")
        .arg(out)
        .output()
        .expect("dry run");
    assert!(
        o.status.success(),
        "dry run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("plan JSON")
}

/// The plan digest `builder build --dry-run` computes for a profile.
pub fn plan_digest(profile: &Path, out: &Path) -> String {
    dry_run(profile, out)["digest"]
        .as_str()
        .expect("plan digest")
        .to_string()
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The raw image.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Image {
    /// Loads an image and its manifest from an output folder.
    pub fn load(out: &Path, name: &str) -> Image {
        let m = std::fs::read(out.join(format!("{name}.manifest.json"))).expect("reading manifest");
        Image {
            path: out.join(format!("{name}.img")),
            manifest: serde_json::from_slice(&m).expect("parsing manifest"),
        }
    }

    /// A partition.
    pub fn part(&self, n: u32) -> &PartitionInfo {
        self.manifest.disk.partition(n).expect("partition in manifest")
    }

    /// `image?offset=N` of the root filesystem, for e2fsprogs tools.
    pub fn root_fs(&self) -> String {
        format!("{}?offset={}", self.path.display(), self.part(4).start_bytes)
    }

    /// A file's content in the root filesystem (debugfs, no mount).
    pub fn read_root_file(&self, path: &str) -> String {
        let o = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(self.root_fs())
            .output()
            .expect("debugfs");
        assert!(
            o.status.success(),
            "debugfs failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Copies partition `n` to a file (for fsck.vfat and friends).
    pub fn extract_partition(&self, n: u32, dest: &Path) {
        use std::io::{Read, Seek, SeekFrom};
        let p = self.part(n);
        let mut f = File::open(&self.path).expect("opening image");
        f.seek(SeekFrom::Start(p.start_bytes)).expect("seek");
        let mut buf = vec![0u8; p.size_bytes as usize];
        f.read_exact(&mut buf).expect("reading partition");
        std::fs::write(dest, buf).expect("writing partition copy");
    }
}

/// The default profile's image, built once per run and shared by every test
/// (rebuilt only when its plan digest changed: code, profile or overlay).
pub fn shared_image() -> Image {
    let out = e2e_dir().join("default");
    let profile = repo().join("images/flypack.toml");
    let _l = lock("default-image");
    built(&profile, &out, "the default image")
}

/// The image of `profile` in `out`, built unless its manifest has the
/// profile's plan digest.
fn built(profile: &Path, out: &Path, what: &str) -> Image {
    let want = plan_digest(profile, out);
    let current = std::fs::read(out.join("flypack.manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .map(|m| m.plan_digest);
    if current.as_deref() != Some(want.as_str()) || !out.join("flypack.img").is_file() {
        let r = build(profile, out);
        assert_eq!(r.code, 0, "building {what} failed:\n{}", r.stderr);
    }
    Image::load(out, "flypack")
}

/// A newer build of the default image, for updates: the default profile
/// with one overlay file changed (the video sysctl's `net.core.rmem_max`
/// halved to 33554432, which a unit shows once it runs it). Built once per
/// run (rebuilt only when its plan digest changed), on the cached root
/// filesystem.
pub fn updated_image() -> Image {
    variant_image("update", "the updated image", |overlay| {
        let sysctl = overlay.join("etc/sysctl.d/60-flypack-video.conf");
        let text = std::fs::read_to_string(&sysctl).expect("the video sysctl");
        assert!(text.contains("net.core.rmem_max = 67108864"), "{text}");
        std::fs::write(
            &sysctl,
            text.replace("net.core.rmem_max = 67108864", "net.core.rmem_max = 33554432"),
        )
        .expect("writing the sysctl");
    })
}

/// A bad update: the default image whose time service cannot start (a
/// drop-in in the overlay runs `/bin/false` in place of chronyd). A unit
/// that runs it comes back NO-GO (`sys.services`, a critical check), with
/// SSH and everything else up. Built as [`updated_image`] is.
pub fn broken_image() -> Image {
    variant_image("broken", "the broken image", |overlay| {
        let dropin = overlay.join("etc/systemd/system/chrony.service.d");
        std::fs::create_dir_all(&dropin).expect("creating the drop-in folder");
        std::fs::write(
            dropin.join("90-e2e-broken.conf"),
            "# e2e: an update that breaks the time service\n[Service]\nExecStart=\nExecStart=/bin/false\n",
        )
        .expect("writing the drop-in");
    })
}

/// The default profile built with its overlay changed by `edit` (given the
/// copy of `overlays/base`), into `E2E_DIR/NAME`: once per run, rebuilt
/// only when its plan digest changed.
fn variant_image(name: &str, what: &str, edit: impl FnOnce(&Path)) -> Image {
    let out = e2e_dir().join(name);
    let src = e2e_dir().join(format!("{name}-src"));
    let _l = lock(&format!("{name}-image"));
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).expect("creating the variant's overlay folder");
    let overlay = src.join("base");
    let (ok, msg) = sh(Command::new("cp")
        .arg("-a")
        .arg(repo().join("overlays/base"))
        .arg(&overlay));
    assert!(ok, "{msg}");
    edit(&overlay);
    let profile = src.join("flypack.toml");
    std::fs::write(&profile, default_profile_text(Some(&[&overlay]))).expect("writing the profile");
    built(&profile, &out, what)
}

/// A host's line of an ansible-playbook run's PLAY RECAP (`HOST : ok=…`),
/// if the run reached that host at all.
pub fn recap(out: &str, host: &str) -> Option<String> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(host) && l.contains("ok="))
        .map(str::to_string)
}

/// How a boot ended.
#[derive(Debug)]
pub struct Booted {
    /// builder boot's exit code.
    pub code: i32,
    /// The status line, if it appeared.
    pub status: Option<Status>,
    /// Seconds to the status line.
    pub seconds: Option<f64>,
    /// The console log.
    pub console: String,
    /// builder's stderr.
    pub stderr: String,
}

/// Boots `image` with `builder boot --expect-ready 600` plus `args`.
pub fn boot(image: &Path, args: &[&str], log: &Path) -> Booted {
    boot_within(image, 600, args, log)
}

/// Boots `image` with `builder boot --expect-ready SECS` plus `args`.
pub fn boot_within(image: &Path, secs: u32, args: &[&str], log: &Path) -> Booted {
    let r = run(builder()
        .args([
            "--json",
            "boot",
            "--quiet",
            "--expect-ready",
            &secs.to_string(),
            "--log",
        ])
        .arg(log)
        .arg(image)
        .args(args));
    let ready = r.event("ready");
    Booted {
        code: r.code,
        status: ready.map(|e| serde_json::from_value(e["status"].clone()).expect("status JSON")),
        seconds: ready.and_then(|e| e["seconds"].as_f64()),
        // Firmware writes bytes that are not UTF-8.
        console: String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned(),
        stderr: r.stderr,
    }
}

/// Runs a command and returns (success, stdout+stderr).
pub fn sh(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Names of the files in a folder, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binding a port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Ansible's connection timeout (seconds) for units that are QEMU guests
/// under software emulation (`ANSIBLE_TIMEOUT`): they can take more than
/// the default 10 s to answer SSH and sudo while other tests load the host.
pub const UNIT_TIMEOUT: &str = "60";

/// Asks `ok` every half second until it says yes; fails the test, naming
/// `what`, when that takes longer than `within`.
pub fn wait_for(what: &str, within: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !ok() {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Waits up to 30 s until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < until,
            "nothing listens on 127.0.0.1:{port} after 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Makes an SSH key pair in `dir`; returns (private key path, public key line).
pub fn keygen(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let (ok, msg) = sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e@flypack", "-f"])
        .arg(&key));
    assert!(ok, "{msg}");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    (key, public.trim().to_string())
}

/// A copy of `image` in `dir` with `unit` (TOML text) on its seed.
pub fn seeded_copy(image: &Path, dir: &Path, unit: &str) -> PathBuf {
    let copy = dir.join("unit.img");
    let (ok, msg) = sh(Command::new("cp").arg("--sparse=always").arg(image).arg(&copy));
    assert!(ok, "{msg}");
    let u = dir.join("unit.toml");
    std::fs::write(&u, unit).expect("writing unit.toml");
    let r = run(builder().args(["customize"]).arg(&copy).arg("--unit").arg(&u));
    assert_eq!(r.code, 0, "customize: {}", r.stderr);
    copy
}

/// The example unit config with an SSH key allowed in.
pub fn example_unit_with_key(public_key: &str) -> String {
    std::fs::read_to_string(repo().join("images/unit.example.toml"))
        .expect("unit example")
        .replace(
            "  # \"ssh-ed25519 AAAAC3... engineer@laptop\",",
            &format!("  {public_key:?},"),
        )
}

/// ssh's options for a test's guest: no prompt, no host key kept (every
/// guest is new), only the key given (`-i`), a dead guest noticed in 10 s.
pub const SSH_OPTIONS: [&str; 12] = [
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "LogLevel=ERROR",
];

/// A VM started with `builder boot --keep-running`, reachable over SSH.
pub struct Session {
    child: std::process::Child,
    /// The status line's content.
    pub status: Status,
    /// builder boot's console log.
    pub log: PathBuf,
    /// SSH port on 127.0.0.1.
    pub port: u16,
    key: PathBuf,
}

impl Session {
    /// Boots `image` (extra args for builder boot) and waits for the status line.
    // The child is waited for by Session's Drop.
    #[allow(clippy::zombie_processes)]
    pub fn start(image: &Path, key: &Path, log: &Path, extra: &[&str]) -> Session {
        use std::io::BufRead;
        let port = free_port();
        let mut child = builder()
            .args([
                "--json",
                "boot",
                "--quiet",
                "--keep-running",
                "--expect-ready",
                "600",
                "--log",
            ])
            .arg(log)
            .arg("--forward")
            .arg(format!("{port}:22"))
            .arg(image)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting builder boot");
        let out = child.stdout.take().expect("stdout");
        for line in std::io::BufReader::new(out).lines() {
            let line = line.expect("reading builder boot's output");
            let Ok(e) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if e["event"] == "ready" {
                let status = serde_json::from_value(e["status"].clone()).expect("status JSON");
                return Session {
                    child,
                    status,
                    log: log.to_path_buf(),
                    port,
                    key: key.to_path_buf(),
                };
            }
        }
        let _ = child.kill();
        panic!(
            "the VM never printed its status line; console tail:\n{}",
            console_tail(log, 60)
        );
    }

    /// Runs a command in the guest as the image's admin user: (exit code, output).
    pub fn ssh(&self, cmd: &str) -> (i32, String) {
        let mut last = String::new();
        for _ in 0..10 {
            let (code, text) = self.ssh_with(&self.key, cmd);
            // 255: ssh itself failed (sshd not up yet): try again.
            if code != 255 {
                return (code, text);
            }
            last = text;
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        panic!("cannot ssh into the guest: {last}");
    }

    /// One attempt at running a command in the guest, logging in with
    /// `key` and no other: (exit code, output); 255 when ssh failed.
    pub fn ssh_with(&self, key: &Path, cmd: &str) -> (i32, String) {
        let o = Command::new("ssh")
            .args(SSH_OPTIONS)
            .arg("-i")
            .arg(key)
            .args(["-p", &self.port.to_string(), "flypack@127.0.0.1", cmd])
            .stdin(Stdio::null())
            .output()
            .expect("running ssh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code().unwrap_or(-1), text)
    }

    /// `ip -j ARGS` in the guest, parsed.
    pub fn ip_json(&self, args: &str) -> Value {
        let (code, out) = self.ssh(&format!("ip -j {args}"));
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args}: {e}: {out}"))
    }

    /// Copies a local file into the guest.
    pub fn put(&self, local: &Path, remote: &str) {
        self.scp(local.as_os_str(), format!("flypack@127.0.0.1:{remote}").as_ref());
    }

    /// Copies a file out of the guest.
    pub fn get(&self, remote: &str, local: &Path) {
        self.scp(format!("flypack@127.0.0.1:{remote}").as_ref(), local.as_os_str());
    }

    fn scp(&self, from: &std::ffi::OsStr, to: &std::ffi::OsStr) {
        let o = Command::new("scp")
            .args([
                "-q",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-i",
            ])
            .arg(&self.key)
            .args(["-P", &self.port.to_string()])
            .arg(from)
            .arg(to)
            .output()
            .expect("running scp");
        assert!(o.status.success(), "scp: {}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // QEMU dies with builder (parent-death signal).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The global addresses (`addr/prefix`) of the first link in `ip -j addr` output.
pub fn global_addrs(v: &Value) -> Vec<String> {
    v[0]["addr_info"]
        .as_array()
        .expect("addr_info in ip -j addr output")
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
        .collect()
}

/// The last `n` lines of a console log.
pub fn console_tail(log: &Path, n: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    let l: Vec<&str> = text.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

/// A `firstboot` command (the build under test).
pub fn firstboot() -> Command {
    let mut c = Command::new(&bins().firstboot);
    c.current_dir(repo()).stdin(Stdio::null());
    c
}

/// The Docker daemon on the default socket, for the tests that need the
/// host's own (the stack test publishes ports on 127.0.0.1). The one that
/// answers is used; when none does, the harness starts Debian's dockerd with
/// a temporary data root (`$TMPDIR/flypack-e2e-dockerd`) in a session of its
/// own and leaves it running for the next test, so the README's test command
/// works on a fresh machine. Returns the daemon's API version.
pub fn host_docker() -> String {
    let answer = || sh(Command::new("docker").args(["version", "--format", "{{.Server.APIVersion}}"]));
    let (ok, v) = answer();
    if ok {
        return v.trim().to_owned();
    }
    let _l = lock("dockerd");
    let (ok, v) = answer();
    if ok {
        return v.trim().to_owned();
    }
    if Command::new("dockerd").arg("--version").output().is_err() {
        panic!("no Docker daemon answers and there is no dockerd to start: apt-get install docker.io (.ci/deps does)");
    }
    let root = std::env::temp_dir().join("flypack-e2e-dockerd");
    std::fs::create_dir_all(&root).expect("creating the dockerd folder");
    let log_path = root.join("dockerd.log");
    let log = File::create(&log_path).expect("creating the dockerd log");
    let err = log.try_clone().expect("dockerd log");
    // setsid --fork: the daemon is in a session of its own, not in the
    // test's process group (which nextest ends with the test); setsid itself
    // returns at once.
    let started = Command::new("setsid")
        .args(["--fork", "dockerd"])
        .arg("--data-root")
        .arg(root.join("data"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .status()
        .unwrap_or_else(|e| panic!("starting dockerd: {e}"));
    assert!(started.success(), "setsid --fork dockerd failed: {started}");
    // Starting a daemon is bounded by the daemon, not by the machine's speed
    // in any way that matters: a minute is many times what it takes here.
    let t0 = std::time::Instant::now();
    loop {
        let (ok, v) = answer();
        if ok {
            return v.trim().to_owned();
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "dockerd started by the test harness did not answer within 60 s; its log ({}):\n{}",
            log_path.display(),
            tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 20)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The default profile's stack images (`builder images`), built once per
/// run into target/e2e/stack-images.
pub fn stack_images() -> PathBuf {
    let out = e2e_dir().join("stack-images");
    let _l = lock("stack-images");
    std::fs::create_dir_all(&out).expect("creating the images folder");
    let r = run(builder()
        .args(["--json", "images", "images/flypack.toml", "--out"])
        .arg(&out));
    assert_eq!(r.code, 0, "builder images failed:\n{}", r.stderr);
    out
}

/// The default profile's text with every relative path made absolute, so a
/// copy works from any folder; `overlays` replaces the overlay list.
pub fn default_profile_text(overlays: Option<&[&Path]>) -> String {
    let images = repo().join("images");
    let q = |p: PathBuf| format!("{:?}", p.display().to_string());
    let overlay_list = match overlays {
        Some(list) => list.iter().map(|o| q(o.to_path_buf())).collect::<Vec<_>>().join(", "),
        None => q(repo().join("overlays/base")),
    };
    std::fs::read_to_string(images.join("flypack.toml"))
        .expect("the default profile")
        .replace(
            "preseed = \"flypack.preseed\"",
            &format!("preseed = {}", q(images.join("flypack.preseed"))),
        )
        .replace(
            "unit_defaults = \"flypack.unit.toml\"",
            &format!("unit_defaults = {}", q(images.join("flypack.unit.toml"))),
        )
        .replace(
            "compose = \"../compose/monitoring/docker-compose.yml\"",
            &format!("compose = {}", q(repo().join("compose/monitoring/docker-compose.yml"))),
        )
        .replace(
            "overlays = [\"../overlays/base\"]",
            &format!("overlays = [{overlay_list}]"),
        )
        .replace(
            "ansible = \"../ansible\"",
            &format!("ansible = {}", q(repo().join("ansible"))),
        )
        // Copies need no USB stick of their own: the shared image carries one.
        .replace("[installer]\nenabled = true", "[installer]\nenabled = false")
}

/// Asserts that a boot of the default image (default unit config, an 8 GiB
/// disk) reached its verdict: GO with the one warning every boot in QEMU has
/// (time.sync: no time source), the root grown, every stack service up.
pub fn assert_default_go(b: &Booted, what: &str) {
    let status = b.status.as_ref().unwrap_or_else(|| {
        panic!(
            "{what}: no FLYPACK-STATUS line (exit {}):\n{}\n--- console tail ---\n{}",
            b.code,
            b.stderr,
            tail(&b.console, 60)
        )
    });
    // The default unit config has no time source: in QEMU (no NTP) the one
    // warning is time.sync, so the verdict is GO with warnings.
    let qa = status.qa.as_ref().expect("QA ran");
    assert_eq!(qa.critical, Vec::<String>::new(), "{what}: {status:?}");
    assert_eq!(qa.warnings, vec!["time.sync".to_string()], "{what}: {status:?}");
    assert_eq!(status.verdict, Verdict::GoWithWarnings, "{what}: {status:?}");
    assert_eq!(b.code, 2, "{what}: builder boot exit code for GO with warnings");
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    let disk = status
        .stages
        .iter()
        .find(|s| s.name == "disk")
        .expect("disk stage reported");
    assert_eq!(disk.state, StageState::Done, "{what}: {disk:?}");
    // builder boot gives the guest an 8 GiB disk: the 4 GiB image's root grew.
    assert!(
        disk.detail.as_deref().unwrap_or("").contains("root grown to 7.9 GiB"),
        "{what}: {disk:?}"
    );
    // The status line stands at the start of a console line.
    assert!(
        b.console.lines().any(|l| l.starts_with("FLYPACK-STATUS {")),
        "{what}: status line not at line start"
    );
    let services: Vec<(String, String)> = status
        .services
        .iter()
        .map(|s| (s.name.clone(), s.state.to_string()))
        .collect();
    assert_eq!(services.len(), 5, "{what}: {status:?}");
    assert!(services.iter().all(|(_, st)| st == "healthy"), "{what}: {services:?}");
    eprintln!("{what}: FLYPACK-STATUS after {:.1} s", b.seconds.unwrap_or(0.0));
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

/// Writes an executable shell script (`body` after `#!/bin/sh`); returns its path.
pub fn script(path: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("writing the script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("making the script executable");
    path.to_path_buf()
}

/// Writes an executable stand-in for firstboot, `dir/name`, that prints
/// `stdout` and exits with `code` when its arguments are exactly `args`
/// (firstboot's own syntax, which the end-to-end tests run for real), and
/// fails as clap does otherwise; returns its path.
pub fn stand_in(dir: &Path, name: &str, args: &str, stdout: &str, code: i32) -> PathBuf {
    let body = dir.join(format!("{name}.out"));
    std::fs::write(&body, stdout).expect("writing the stand-in's output");
    script(
        &dir.join(name),
        &format!(
            "[ \"$*\" = '{args}' ] || {{ echo \"error: unexpected arguments: $*\" >&2; exit 2; }}\ncat '{}'\nexit {code}\n",
            body.display()
        ),
    )
}

/// A child process killed (and reaped) when the guard goes, so a failed
/// test leaves nothing running.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (a binary name, then flags) behind `prefix` (e.g. `ip
/// netns exec NS`, or nothing), its output to `log`; killed with the guard.
pub fn spawn_logged(prefix: &[&str], cmd: &[String], env: &[(String, String)], log: &Path) -> Kill {
    let out = std::fs::File::create(log).expect("creating the log");
    let all: Vec<&str> = prefix.iter().copied().chain(cmd.iter().map(String::as_str)).collect();
    let child = Command::new(all[0])
        .args(&all[1..])
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("the log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", all[0]));
    Kill(child)
}

/// A service's command in a compose file, with `profiles` on.
pub fn compose_command(file: &Path, service: &str, profiles: &[&str]) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("reading the compose file");
    let profiles: Vec<String> = profiles.iter().map(|p| p.to_string()).collect();
    let stack = flypack_engine::compose::parse(file, &text, &profiles).expect("parsing the compose file");
    stack
        .service(service)
        .unwrap_or_else(|| panic!("{} has no service {service}", file.display()))
        .command
        .clone()
        .expect("the service has a command")
}

/// Replaces the flag `name`'s value; the flag must be in the command, so the
/// test follows the compose file.
pub fn set_flag(cmd: &mut [String], name: &str, value: &str) {
    let prefix = format!("{name}=");
    let a = cmd
        .iter_mut()
        .find(|a| a.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the compose file's command has no {name}"));
    *a = format!("{prefix}{value}");
}

/// Where a test's central listens.
pub struct CentralAt<'a> {
    /// Runs each process (e.g. `ip netns exec NS`; empty: this machine).
    pub prefix: &'a [&'a str],
    /// VictoriaMetrics's listen address (`:8428`, `127.0.0.1:PORT`).
    pub vm: &'a str,
    /// vmauth's (TLS).
    pub auth: &'a str,
    /// `tls.crt` and `tls.key` for vmauth (`builder fleet-ca server`).
    pub tls: &'a Path,
}

/// The central monitoring stack of `compose/central`, VictoriaMetrics and
/// vmauth, run as processes with the compose file's commands (there is no
/// image registry here for its containers). vmauth's users are the example
/// auth file's, with its flypack `north` named `flypack` and given
/// `password`. Data and logs (`central-vm.log`, `central-vmauth.log`) in
/// `dir`. Waits until VictoriaMetrics answers.
pub fn start_central(dir: &Path, at: &CentralAt, flypack: &str, password: &str) -> Vec<Kill> {
    let file = repo().join("compose/central/docker-compose.yml");
    let mut vm = compose_command(&file, "victoriametrics", &[]);
    set_flag(
        &mut vm,
        "-storageDataPath",
        dir.join("central-vm").to_str().expect("UTF-8"),
    );
    set_flag(&mut vm, "-httpListenAddr", at.vm);
    vm.insert(0, "victoria-metrics".into());
    let example =
        std::fs::read_to_string(repo().join("compose/central/vmauth/auth.example.yml")).expect("the example auth file");
    let upstream = "http://victoriametrics:8428/";
    assert!(example.contains("password: \"CHANGE-ME-north\"") && example.contains(upstream));
    let vm_port = at.vm.rsplit(':').next().expect("a port");
    let auth = dir.join("auth.yml");
    std::fs::write(
        &auth,
        example
            .replace("CHANGE-ME-north", password)
            .replace("username: north", &format!("username: {flypack}"))
            .replace("flypack=north", &format!("flypack={flypack}"))
            .replace(upstream, &format!("http://127.0.0.1:{vm_port}/")),
    )
    .expect("writing auth.yml");
    let mut vmauth = compose_command(&file, "vmauth", &[]);
    set_flag(&mut vmauth, "-auth.config", auth.to_str().expect("UTF-8"));
    set_flag(&mut vmauth, "-httpListenAddr", at.auth);
    set_flag(
        &mut vmauth,
        "-tlsCertFile",
        at.tls.join("tls.crt").to_str().expect("UTF-8"),
    );
    set_flag(
        &mut vmauth,
        "-tlsKeyFile",
        at.tls.join("tls.key").to_str().expect("UTF-8"),
    );
    for a in &mut vmauth {
        // docker-compose's ${VMAUTH_ADMIN_KEY:?...} from .env
        if let Some(i) = a.find("${VMAUTH_ADMIN_KEY") {
            *a = format!("{}admin-key-for-the-test", &a[..i]);
        }
    }
    vmauth.insert(0, "vmauth".into());
    let procs = vec![
        spawn_logged(at.prefix, &vm, &[], &dir.join("central-vm.log")),
        spawn_logged(at.prefix, &vmauth, &[], &dir.join("central-vmauth.log")),
    ];
    let health = format!("http://127.0.0.1:{vm_port}/health");
    let t0 = std::time::Instant::now();
    loop {
        let mut c = Command::new(at.prefix.first().copied().unwrap_or("curl"));
        if !at.prefix.is_empty() {
            c.args(&at.prefix[1..]).arg("curl");
        }
        let ok = c
            .args(["-sf", "--max-time", "5", "-o", "/dev/null", &health])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            // vmauth's port taken, on this machine: no other test's
            // free_port() can hand it out meanwhile.
            if at.prefix.is_empty() {
                wait_for_port(at.auth.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port"));
            }
            return procs;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "the central's VictoriaMetrics did not answer within 30 s: {}",
            tail(
                &std::fs::read_to_string(dir.join("central-vm.log")).unwrap_or_default(),
                20
            )
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Network namespaces a test made, deleted when the guard goes.
pub struct Netns(pub Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs a `sh -e` script and fails the test, with its stderr, if it fails.
pub fn sh_ok(script: &str) {
    let o = Command::new("sh").arg("-ec").arg(script).output().expect("running sh");
    assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
}
