//! QEMU: boots an image the way a flypack server would run it (two NICs,
//! BIOS or UEFI), on a copy-on-write overlay so the image is never changed.
//! The serial console goes to a log file that we follow.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flypack_contracts::cmd::{Cmd, Sink};
use flypack_contracts::status::{Status, parse_status_line};

/// How long a line asked for with `--until` may follow the status line.
pub const UNTIL_GRACE: Duration = Duration::from_secs(15);

/// The context of an error starting QEMU (`builder boot` exits 125 on it).
pub const QEMU_START_FAILED: &str = "QEMU could not start";

/// OVMF firmware code (read-only) and the template for its variable store.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS (legacy BIOS).
    Bios,
    /// OVMF (UEFI).
    Uefi,
}

/// Accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation: works everywhere, slow.
    Tcg,
    /// Hardware virtualisation (/dev/kvm).
    Kvm,
    /// KVM if /dev/kvm is usable, else TCG.
    Auto,
}

/// A port forward from the host to the guest's management NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Port on 127.0.0.1.
    pub host: u16,
    /// Port in the guest.
    pub guest: u16,
}

impl std::str::FromStr for Forward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected HOST:GUEST ports, e.g. 2222:22");
        let (h, g) = s.split_once(':').ok_or_else(bad)?;
        Ok(Forward {
            host: h.parse().map_err(|_| bad())?,
            guest: g.parse().map_err(|_| bad())?,
        })
    }
}

/// Where the guest reaches a service on this machine: QEMU's user
/// networking answers on [`GuestForward::ADDRESS`]:`guest` and relays each
/// connection to 127.0.0.1:`host` (the central a test or a laptop runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestForward {
    /// Port on [`GuestForward::ADDRESS`], in the guest's network.
    pub guest: u16,
    /// Port on this machine's 127.0.0.1.
    pub host: u16,
}

impl GuestForward {
    /// The address the guest connects to: in QEMU's user network
    /// (10.0.2.0/24), beside its gateway (.2) and DNS (.3).
    pub const ADDRESS: &str = "10.0.2.100";
}

impl std::str::FromStr for GuestForward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected GUEST:HOST ports, e.g. 8427:18427");
        let (g, h) = s.split_once(':').ok_or_else(bad)?;
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        Ok(GuestForward {
            guest: port(g)?,
            host: port(h)?,
        })
    }
}

/// An internal disk: a raw file, with the serial number the guest sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraDisk {
    /// Raw image file.
    pub path: PathBuf,
    /// Serial number (lsblk SERIAL in the guest).
    pub serial: Option<String>,
}

impl std::str::FromStr for ExtraDisk {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, serial) = match s.rsplit_once(':') {
            Some((p, ser)) if !ser.contains('/') && !p.is_empty() => (p, Some(ser)),
            _ => (s, None),
        };
        if let Some(ser) = serial
            && (ser.is_empty()
                || ser.len() > 20
                || !ser.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(format!(
                "{s:?}: the serial after ':' must be 1-20 letters, digits, '-', '_' or '.'"
            ));
        }
        Ok(ExtraDisk {
            path: PathBuf::from(path),
            serial: serial.map(String::from),
        })
    }
}

/// Where the second (media) NIC is plugged. Guests are joined to each other
/// only through sockets on 127.0.0.1, never through the host's NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaNet {
    /// A hub with nothing else on it.
    Isolated,
    /// A point-to-point link to another VM: this one listens on 127.0.0.1:PORT.
    Listen(u16),
    /// A point-to-point link to another VM listening on 127.0.0.1:PORT.
    Connect(u16),
    /// A tap device of this name (made by QEMU in the caller's network
    /// namespace: run builder boot inside a namespace of the test's own).
    Tap(String),
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The image (raw or qcow2); never written.
    pub image: PathBuf,
    /// Firmware.
    pub firmware: Firmware,
    /// Accelerator.
    pub accel: Accel,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Virtual disk size (at least the image's); the root grows into it.
    pub disk_size: Option<u64>,
    /// Keep the overlay here (and reuse it if it exists) instead of a temp file.
    pub overlay: Option<PathBuf>,
    /// Port forwards to the management NIC.
    pub forwards: Vec<Forward>,
    /// Services on this machine the guest may reach (through socat, one
    /// process per connection; a chardev would carry one connection only).
    pub guest_forwards: Vec<GuestForward>,
    /// Let the guest reach beyond the VM through QEMU's NAT (DNS, NTP,
    /// gateways, the internet). Off by default: the guest reaches nothing
    /// but its forwards, as a unit at an offline venue.
    pub nat: bool,
    /// Plug the management NIC into this tap device instead of QEMU's user
    /// networking (no NAT, no forwards).
    pub mgmt_tap: Option<String>,
    /// The media NIC's network.
    pub media: MediaNet,
    /// Serial console log.
    pub console_log: PathBuf,
    /// Extra raw disk images attached as USB sticks.
    pub usb_disks: Vec<PathBuf>,
    /// The image is a USB installer: attach it as a USB stick, booted only
    /// when the internal disks hold nothing bootable.
    pub boot_usb: bool,
    /// Internal disks (raw files), booted before the image when `boot_usb`.
    pub disks: Vec<ExtraDisk>,
}

/// A running VM. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Vm {
    child: Option<flypack_contracts::cmd::Process>,
    _tmp: tempfile::TempDir,
    log: PathBuf,
    pos: u64,
    pending: String,
    /// Console lines seen so far (bounded).
    pub tail: std::collections::VecDeque<String>,
    started: Instant,
    accel: Accel,
    /// Stop waiting when a console line contains this.
    pub until: Option<String>,
    until_hit: Option<String>,
}

/// How waiting ended.
#[derive(Debug)]
pub enum Outcome {
    /// The status line appeared.
    Ready(Box<Status>),
    /// QEMU exited.
    Exited(std::process::ExitStatus),
    /// Time ran out.
    Timeout,
    /// A console line contained the text asked for ([`Vm::until`]).
    Line(String),
}

fn resolve_accel(a: Accel) -> Accel {
    match a {
        Accel::Auto => {
            if fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok() {
                Accel::Kvm
            } else {
                Accel::Tcg
            }
        }
        other => other,
    }
}

fn image_format(path: &Path) -> Result<&'static str> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("reading {}: is it a Flypack image?", path.display()))?;
    Ok(if &magic == b"QFI\xfb" { "qcow2" } else { "raw" })
}

impl Vm {
    /// Creates the overlay and starts QEMU.
    pub fn start(cfg: &VmConfig) -> Result<Vm> {
        let image = fs::canonicalize(&cfg.image).with_context(|| format!("image {} not found", cfg.image.display()))?;
        let fmt = image_format(&image)?;
        let image_size = fs::metadata(&image)?.len();
        let tmp = tempfile::Builder::new()
            .prefix("flypack-boot-")
            .tempdir()
            .context("creating a temp folder")?;
        let overlay = cfg.overlay.clone().unwrap_or_else(|| tmp.path().join("disk.qcow2"));
        if !overlay.exists() {
            let mut c = Cmd::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", fmt, "-b"])
                .arg(&image)
                .arg(&overlay);
            if let Some(size) = cfg.disk_size {
                let virt = if fmt == "raw" { image_size } else { 0 };
                c = c.arg(size.max(virt).to_string());
            }
            c.run().context("creating the copy-on-write overlay")?;
        }
        let accel = resolve_accel(cfg.accel);
        let args = qemu_args(cfg, &overlay, tmp.path(), accel)?;
        if let Some(parent) = cfg.console_log.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        File::create(&cfg.console_log)
            .with_context(|| format!("creating console log {}", cfg.console_log.display()))?;
        tracing::debug!("qemu-system-x86_64 {}", args.join(" "));
        let child = Cmd::new("qemu-system-x86_64")
            .args(&args)
            .spawn(Sink::Null, Sink::Piped, std::time::Duration::from_secs(5))
            .context(QEMU_START_FAILED)?;
        Ok(Vm {
            child: Some(child),
            _tmp: tmp,
            log: cfg.console_log.clone(),
            pos: 0,
            pending: String::new(),
            tail: Default::default(),
            started: Instant::now(),
            accel,
            until: None,
            until_hit: None,
        })
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether KVM is in use.
    pub fn uses_kvm(&self) -> bool {
        self.accel == Accel::Kvm
    }

    /// Reads new console output; calls `echo` with raw text.
    fn poll(&mut self, echo: &mut dyn FnMut(&str), found: &mut Option<Status>) -> Result<()> {
        let mut f = File::open(&self.log).with_context(|| format!("opening {}", self.log.display()))?;
        f.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.pos += buf.len() as u64;
        let text = String::from_utf8_lossy(&buf);
        echo(&text);
        self.pending.push_str(&text);
        while let Some(i) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=i).collect();
            let line = line.trim_end_matches(['\n', '\r']).to_string();
            // A status while provisioning is still in progress (a stage
            // failed and will be retried) is not the verdict yet.
            if found.is_none()
                && let Some(Ok(s)) = parse_status_line(&line)
                && s.provisioning != flypack_contracts::status::Provisioning::InProgress
            {
                *found = Some(s);
            }
            if self.until_hit.is_none()
                && let Some(u) = &self.until
                && line.contains(u.as_str())
            {
                self.until_hit = Some(line.clone());
            }
            if self.tail.len() == 200 {
                self.tail.pop_front();
            }
            self.tail.push_back(line);
        }
        Ok(())
    }

    /// Follows the console until the status line (or, with [`Vm::until`],
    /// that line, which may follow the status line by up to [`UNTIL_GRACE`]),
    /// QEMU's exit, or `timeout`
    /// (`None`: no status expected, wait for exit).
    pub fn wait(&mut self, timeout: Option<Duration>, echo: &mut dyn FnMut(&str)) -> Result<Outcome> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // The status line and the line asked for (--until) may reach the
        // console in either order (stdout and stderr are separate streams):
        // after the status line, the asked-for line still gets a moment.
        let mut status: Option<(Status, Instant)> = None;
        loop {
            let mut found = None;
            self.poll(echo, &mut found)?;
            if let Some(l) = self.until_hit.take() {
                return Ok(Outcome::Line(l));
            }
            if status.is_none()
                && let (Some(s), Some(_)) = (found, timeout)
            {
                status = Some((s, Instant::now()));
            }
            if let Some((_, at)) = &status
                && (self.until.is_none() || at.elapsed() >= UNTIL_GRACE)
            {
                let (s, _) = status.take().expect("just matched");
                return Ok(Outcome::Ready(Box::new(s)));
            }
            if let Some(status) = self.try_exit()? {
                let mut found = None;
                self.poll(echo, &mut found)?;
                return Ok(Outcome::Exited(status));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Outcome::Timeout);
            }
            if crate::interrupt::interrupted() {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_exit(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        Ok(child.try_wait()?)
    }

    /// QEMU's own error output (after it exited).
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(c) = self.child.as_mut()
            && let Some(mut e) = c.child().stderr.take()
        {
            // Best effort: this is only used to explain an exit.
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        let start = self.tail.len().saturating_sub(n);
        self.tail.iter().skip(start).cloned().collect::<Vec<_>>().join("\n")
    }

    /// Kills QEMU now (a power cut, for tests of resilience).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Already exited is fine.
            let _ = c.kill();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where an installer stick goes in the boot order. UEFI (OVMF) tries each
/// boot option in turn, so the stick goes after the disks, like a server set
/// to boot its disks first: the stick boots while they are blank, the
/// installed disk afterwards. SeaBIOS only ever tries the first hard disk,
/// so under BIOS the stick must come first.
fn usb_boot_index(cfg: &VmConfig) -> usize {
    match cfg.firmware {
        Firmware::Uefi => cfg.disks.len() + 1,
        Firmware::Bios => 1,
    }
}

/// A tap netdev (the name checked: it goes into an option list).
fn tap(name: &str, id: &str) -> Result<String> {
    if name.is_empty() || name.len() > 15 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
        bail!("{name:?} is not a tap device name (1-15 letters, digits, '-', '_')");
    }
    Ok(format!("tap,id={id},ifname={name},script=no,downscript=no"))
}

/// A path as a value inside a QEMU option list, where a comma separates
/// options: QEMU reads a doubled comma as one.
fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// QEMU's arguments (data, for golden tests).
pub fn qemu_args(cfg: &VmConfig, overlay: &Path, tmp: &Path, accel: Accel) -> Result<Vec<String>> {
    let accel_name = if accel == Accel::Kvm { "kvm" } else { "tcg" };
    let mut a: Vec<String> = vec![
        "-name".into(),
        "flypack".into(),
        "-machine".into(),
        format!("q35,accel={accel_name}"),
        "-smp".into(),
        cfg.cpus.to_string(),
        "-m".into(),
        cfg.memory_mib.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-chardev".into(),
        format!("file,id=console,path={}", opt_path(&cfg.console_log)),
        "-serial".into(),
        "chardev:console".into(),
        // Entropy for the SSH host keys made on first boot.
        "-device".into(),
        "virtio-rng-pci".into(),
        "-drive".into(),
        format!("if=none,id=disk0,format=qcow2,file={},discard=unmap", opt_path(overlay)),
    ];
    let usb = cfg.boot_usb || !cfg.usb_disks.is_empty();
    if usb {
        a.extend(["-device".into(), "qemu-xhci,id=xhci".into()]);
    }
    a.extend([
        "-device".into(),
        if cfg.boot_usb {
            format!(
                "usb-storage,bus=xhci.0,drive=disk0,removable=on,bootindex={}",
                usb_boot_index(cfg)
            )
        } else {
            "virtio-blk-pci,drive=disk0,bootindex=1".into()
        },
    ]);
    for (i, d) in cfg.disks.iter().enumerate() {
        let boot = if cfg.boot_usb && usb_boot_index(cfg) > 1 {
            i + 1
        } else {
            i + 2
        };
        let mut dev = format!("virtio-blk-pci,drive=hd{i},bootindex={boot}");
        if let Some(ser) = &d.serial {
            dev.push_str(&format!(",serial={ser}"));
        }
        a.extend([
            "-drive".into(),
            format!("if=none,id=hd{i},format=raw,file={},discard=unmap", opt_path(&d.path)),
            "-device".into(),
            dev,
        ]);
    }
    // restrict=on: the guest cannot send a packet beyond QEMU (no DNS, NTP
    // or gateway through the NAT); DHCP and the forwards still work.
    let user = match &cfg.mgmt_tap {
        Some(t) => tap(t, "mgmt")?,
        None => {
            let mut user = format!("user,id=mgmt,restrict={}", if cfg.nat { "off" } else { "on" });
            for f in &cfg.forwards {
                user.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest));
            }
            // restrict=on leaves explicit forwards working, these included.
            for f in &cfg.guest_forwards {
                user.push_str(&format!(
                    // socat's own messages would go into the guest's
                    // connection (its stderr is the socket): none.
                    ",guestfwd=tcp:{}:{}-cmd:socat -lf /dev/null - TCP:127.0.0.1:{}",
                    GuestForward::ADDRESS,
                    f.guest,
                    f.host
                ));
            }
            user
        }
    };
    a.extend([
        "-netdev".into(),
        user,
        "-device".into(),
        "virtio-net-pci,netdev=mgmt,mac=52:54:00:f1:00:01".into(),
    ]);
    let media = match &cfg.media {
        MediaNet::Isolated => "hubport,id=media,hubid=1".to_string(),
        MediaNet::Listen(port) => format!("socket,id=media,listen=127.0.0.1:{port}"),
        MediaNet::Connect(port) => format!("socket,id=media,connect=127.0.0.1:{port}"),
        MediaNet::Tap(t) => tap(t, "media")?,
    };
    a.extend([
        "-netdev".into(),
        media,
        "-device".into(),
        "virtio-net-pci,netdev=media,mac=52:54:00:f1:00:02".into(),
    ]);
    if !cfg.usb_disks.is_empty() {
        for (i, d) in cfg.usb_disks.iter().enumerate() {
            a.extend([
                "-drive".into(),
                format!("if=none,id=usb{i},format=raw,file={}", opt_path(d)),
                "-device".into(),
                format!("usb-storage,bus=xhci.0,drive=usb{i},removable=on"),
            ]);
        }
    }
    if cfg.firmware == Firmware::Uefi {
        if !Path::new(OVMF_CODE).exists() {
            bail!("UEFI firmware {OVMF_CODE} not found: apt-get install ovmf");
        }
        let vars = match &cfg.overlay {
            Some(o) => o.with_extension("vars.fd"),
            None => tmp.join("OVMF_VARS.fd"),
        };
        if !vars.exists() {
            fs::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
        }
        a.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", opt_path(&vars)),
        ]);
    }
    Ok(a)
}

/// Writes console text to stdout as it comes.
pub fn echo_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the VM.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_parses() {
        assert_eq!("2222:22".parse::<Forward>().unwrap(), Forward { host: 2222, guest: 22 });
        assert!("22".parse::<Forward>().unwrap_err().contains("HOST:GUEST"));
        assert!("a:b".parse::<Forward>().is_err());
        assert_eq!(
            "8427:18427".parse::<GuestForward>().unwrap(),
            GuestForward {
                guest: 8427,
                host: 18427
            }
        );
        assert!("8427".parse::<GuestForward>().unwrap_err().contains("GUEST:HOST"));
        assert!("8427:99999".parse::<GuestForward>().is_err());
        assert!("0:18427".parse::<GuestForward>().is_err());
    }

    #[test]
    fn extra_disks_parse() {
        let d: ExtraDisk = "/t/a.raw:SER-1".parse().unwrap();
        assert_eq!(
            d,
            ExtraDisk {
                path: "/t/a.raw".into(),
                serial: Some("SER-1".into())
            }
        );
        let d: ExtraDisk = "/t/a.raw".parse().unwrap();
        assert_eq!(d.serial, None);
        assert!(
            "/t/a.raw:bad serial"
                .parse::<ExtraDisk>()
                .unwrap_err()
                .contains("serial")
        );
    }

    /// The VM the argument tests start from.
    fn base() -> VmConfig {
        VmConfig {
            image: "/i/flypack.img".into(),
            firmware: Firmware::Bios,
            accel: Accel::Tcg,
            memory_mib: 2048,
            cpus: 2,
            disk_size: None,
            overlay: None,
            forwards: vec![],
            guest_forwards: vec![],
            nat: false,
            mgmt_tap: None,
            media: MediaNet::Isolated,
            console_log: "/l/console.log".into(),
            usb_disks: vec![],
            boot_usb: false,
            disks: vec![],
        }
    }

    #[test]
    fn installer_boots_after_the_disks() {
        let cfg = VmConfig {
            image: "/i/flypack-installer.img".into(),
            boot_usb: true,
            disks: vec!["/t/a.raw:A1".parse().unwrap(), "/t/b.raw".parse().unwrap()],
            ..base()
        };
        let bios = qemu_args(&cfg, Path::new("/t/disk.qcow2"), Path::new("/t"), Accel::Tcg)
            .unwrap()
            .join(" ");
        assert!(bios.contains("drive=disk0,removable=on,bootindex=1"), "{bios}");
        assert!(bios.contains("drive=hd0,bootindex=2,serial=A1"), "{bios}");
        let vars = tempfile::tempdir().unwrap();
        let cfg = VmConfig {
            firmware: Firmware::Uefi,
            ..cfg
        };
        let a = qemu_args(&cfg, Path::new("/t/disk.qcow2"), vars.path(), Accel::Tcg)
            .unwrap()
            .join(" ");
        assert!(
            a.contains("-device usb-storage,bus=xhci.0,drive=disk0,removable=on,bootindex=3"),
            "{a}"
        );
        assert!(
            a.contains("file=/t/a.raw,discard=unmap -device virtio-blk-pci,drive=hd0,bootindex=1,serial=A1"),
            "{a}"
        );
        assert!(a.contains("-device virtio-blk-pci,drive=hd1,bootindex=2 "), "{a}");
        assert!(a.find("qemu-xhci").unwrap() < a.find("usb-storage").unwrap(), "{a}");
    }

    #[test]
    fn args_golden_bios() {
        let cfg = VmConfig {
            forwards: vec![Forward { host: 2222, guest: 22 }],
            ..base()
        };
        let a = qemu_args(&cfg, Path::new("/t/disk.qcow2"), Path::new("/t"), Accel::Tcg)
            .unwrap()
            .join(" ");
        assert_eq!(
            a,
            "-name flypack -machine q35,accel=tcg -smp 2 -m 2048 -nodefaults -no-user-config -display none \
             -chardev file,id=console,path=/l/console.log -serial chardev:console -device virtio-rng-pci \
             -drive if=none,id=disk0,format=qcow2,file=/t/disk.qcow2,discard=unmap -device virtio-blk-pci,drive=disk0,bootindex=1 \
             -netdev user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22 -device virtio-net-pci,netdev=mgmt,mac=52:54:00:f1:00:01 \
             -netdev hubport,id=media,hubid=1 -device virtio-net-pci,netdev=media,mac=52:54:00:f1:00:02"
        );
    }

    #[test]
    fn the_guest_reaches_nothing_beyond_loopback_unless_asked() {
        let a = |cfg: &VmConfig| {
            qemu_args(cfg, Path::new("/t/disk.qcow2"), Path::new("/t"), Accel::Tcg)
                .unwrap()
                .join(" ")
        };
        assert!(a(&base()).contains("-netdev user,id=mgmt,restrict=on "));
        // A service on this machine's loopback, reached at 10.0.2.100: a
        // socat per connection, to 127.0.0.1 only; still restricted.
        let g = VmConfig {
            guest_forwards: vec!["8427:18427".parse().unwrap()],
            ..base()
        };
        let args = qemu_args(&g, Path::new("/t/disk.qcow2"), Path::new("/t"), Accel::Tcg).unwrap();
        assert!(
            args.iter()
                .any(|x| x == "user,id=mgmt,restrict=on,guestfwd=tcp:10.0.2.100:8427-cmd:socat -lf /dev/null - TCP:127.0.0.1:18427"),
            "{args:?}"
        );
        let nat = VmConfig { nat: true, ..base() };
        assert!(a(&nat).contains("-netdev user,id=mgmt,restrict=off "));
        let l = VmConfig {
            media: MediaNet::Listen(4100),
            ..base()
        };
        assert!(a(&l).contains("-netdev socket,id=media,listen=127.0.0.1:4100 "));
        let c = VmConfig {
            media: MediaNet::Connect(4100),
            ..base()
        };
        assert!(a(&c).contains("-netdev socket,id=media,connect=127.0.0.1:4100 "));
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let cfg = VmConfig {
            console_log: "/l/a,b.log".into(),
            disks: vec!["/t/x,y.raw".parse().unwrap()],
            ..base()
        };
        let a = qemu_args(&cfg, Path::new("/t/d,isk.qcow2"), Path::new("/t"), Accel::Tcg)
            .unwrap()
            .join(" ");
        assert!(a.contains("path=/l/a,,b.log "), "{a}");
        assert!(a.contains("file=/t/d,,isk.qcow2,discard"), "{a}");
        assert!(a.contains("file=/t/x,,y.raw,discard"), "{a}");
    }
}
