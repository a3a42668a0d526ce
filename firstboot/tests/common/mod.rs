//! A test rig: the unit under test ("dut") in its own network namespace and
//! mount namespace, running the real systemd-networkd (with its own D-Bus, so
//! `networkctl reload` works), cabled with veth pairs to a "gateway"
//! namespace. firstboot runs inside it exactly as on a unit (root `/`), its
//! state directories bind-mounted from a temp dir.
//!
//! Needs root, iproute2, dbus and systemd-networkd. This kernel has no 8021q
//! module, so VLANs are tested in QEMU instead (tests/tests/restore.rs, the unit-life test).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static N: AtomicU32 = AtomicU32::new(0);

/// MAC of the DUT's management veth.
pub const MGMT_MAC: &str = "02:fb:00:00:00:01";
/// MAC of the DUT's media veth.
pub const MEDIA_MAC: &str = "02:fb:00:00:00:02";

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn sh(script: &str) -> Output {
    run(Command::new("sh").arg("-ec").arg(script))
}

/// The rig.
pub struct Rig {
    /// Name prefix (netns names are NAME-dut, NAME-gw).
    pub name: String,
    /// Temp dir holding the DUT's state directories.
    pub dir: tempfile::TempDir,
    ns_dir: PathBuf,
    networkd: Option<Child>,
    dbus_pid: Option<u32>,
    helpers: Vec<Child>,
}

/// Directories of the DUT that live in the temp dir.
const BINDS: &[(&str, &str)] = &[
    ("etc-network", "/etc/systemd/network"),
    ("etc-flypack", "/etc/flypack"),
    ("var-lib-flypack", "/var/lib/flypack"),
    ("resolved-d", "/etc/systemd/resolved.conf.d"),
    ("run-flypack", "/run/flypack"),
    // firstboot writes chrony's drop-in: never into the host's /etc/chrony.
    ("etc-chrony", "/etc/chrony/conf.d"),
];

impl Rig {
    /// Builds the rig: namespaces, veths (DUT mgmt0/media0 to gateway gw0/gw1,
    /// gateway 10.9.0.1/24 on gw0 and 10.8.0.1/24 on gw1), networkd running.
    pub fn new() -> Rig {
        let name = format!("fb{}x{}", std::process::id() % 100000, N.fetch_add(1, Ordering::SeqCst));
        let dir = tempfile::tempdir().unwrap();
        let ns_dir = dir.path().join("ns");
        std::fs::create_dir_all(&ns_dir).unwrap();
        for (d, target) in BINDS {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
            // The mount points must exist on the host; they stay empty there.
            std::fs::create_dir_all(target).unwrap();
        }
        let (dut, gw) = (format!("{name}-dut"), format!("{name}-gw"));
        sh(&format!(
            "ip netns add {dut}; ip netns add {gw}
             ip -n {dut} link set lo up; ip -n {gw} link set lo up
             ip -n {dut} link add mgmt0 address {MGMT_MAC} type veth peer name gw0 netns {gw}
             ip -n {dut} link add media0 address {MEDIA_MAC} type veth peer name gw1 netns {gw}
             ip -n {gw} addr add 10.9.0.1/24 dev gw0; ip -n {gw} link set gw0 up
             ip -n {gw} addr add 10.8.0.1/24 dev gw1; ip -n {gw} link set gw1 up"
        ));
        let mnt = ns_dir.join("mnt");
        let mut binds = String::new();
        for (d, target) in BINDS {
            binds.push_str(&format!("mount --bind {}/{d} {target}\n", dir.path().display()));
        }

        sh(&format!(
            "mount --bind {ns} {ns}; mount --make-private {ns}; touch {mnt}
             nsenter --net=/run/netns/{dut} unshare --mount={mnt} --propagation private sh -ec '
               mount -t sysfs -o ro sysfs /sys
               mount -t tmpfs tmpfs /run/systemd
               mount -t tmpfs tmpfs /run/dbus
               mkdir -p /run/systemd/netif
               chown systemd-network:systemd-network /run/systemd/netif
               {binds}'",
            ns = ns_dir.display(),
            mnt = mnt.display(),
        ));
        let mut rig = Rig {
            name,
            dir,
            ns_dir,
            networkd: None,
            dbus_pid: None,
            helpers: vec![],
        };
        let o = rig
            .dut(&["dbus-daemon", "--system", "--fork", "--print-pid", "--nopidfile"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "dbus-daemon: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        rig.dbus_pid = String::from_utf8_lossy(&o.stdout).trim().parse().ok();
        let log = std::fs::File::create(rig.dir.path().join("networkd.log")).unwrap();
        let child = rig
            .dut(&["/lib/systemd/systemd-networkd"])
            .env("SYSTEMD_LOG_LEVEL", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        rig.networkd = Some(child);
        // networkd answers on the bus once it is up.
        for _ in 0..50 {
            if rig
                .dut(&["networkctl", "list"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return rig;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "systemd-networkd did not come up: {}",
            std::fs::read_to_string(rig.dir.path().join("networkd.log")).unwrap_or_default()
        );
    }

    /// A command inside the DUT (its network and mount namespaces).
    pub fn dut(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", self.ns_dir.join("mnt").display()))
            .arg(format!("--net=/run/netns/{}-dut", self.name))
            .arg("--")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// A command in the gateway namespace.
    pub fn gw(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-gw", self.name)])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs a shell script in the gateway namespace.
    pub fn gw_sh(&self, script: &str) -> Output {
        run(&mut self.gw(&["sh", "-ec", script]))
    }

    /// Runs a shell script in the DUT.
    pub fn dut_sh(&self, script: &str) -> Output {
        run(&mut self.dut(&["sh", "-ec", script]))
    }

    /// Runs firstboot in the DUT: (exit code, stdout+stderr).
    pub fn firstboot(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec![env!("CARGO_BIN_EXE_firstboot")];
        all.extend_from_slice(args);
        let o = self.dut(&all).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    /// Writes a unit config into the temp dir; returns its path.
    pub fn unit_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Managed networkd files, as the DUT sees them.
    pub fn network_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path().join("etc-network"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// `ip -j` output from the DUT, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["ip", "-j"];
        all.extend_from_slice(args);
        serde_json::from_slice(&run(&mut self.dut(&all)).stdout).unwrap()
    }

    /// IPv4/IPv6 addresses (addr/prefix) on a DUT link.
    pub fn addresses(&self, dev: &str) -> Vec<String> {
        let v = self.ip_json(&["addr", "show", "dev", dev]);
        v[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["scope"] == "global")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect()
    }

    /// Starts a helper process in the DUT, stopped with the rig.
    pub fn dut_spawn(&mut self, args: &[&str]) {
        let c = self
            .dut(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.helpers.push(c);
    }

    /// Whether a TCP connection from the gateway to ADDR:PORT is accepted
    /// within two seconds.
    pub fn gw_connects(&self, addr: &str, port: u16) -> bool {
        let script = format!(
            "import socket\ns=socket.socket()\ns.settimeout(2)\ntry:\n s.connect(('{addr}',{port}))\n print('open')\nexcept Exception as e:\n print('closed', e)"
        );
        let o = self.gw(&["python3", "-c", &script]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).starts_with("open")
    }

    /// Starts a helper process in the gateway namespace, stopped with the rig.
    pub fn gw_spawn(&mut self, args: &[&str]) {
        let c = self
            .gw(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.helpers.push(c);
    }

    /// Path inside the temp dir standing in for a DUT directory.
    pub fn host_path(&self, dut_path: &str) -> PathBuf {
        for (d, target) in BINDS {
            if let Some(rest) = dut_path.strip_prefix(target) {
                return self.dir.path().join(d).join(rest.trim_start_matches('/'));
            }
        }
        panic!("{dut_path} is not a rig directory")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Cleanup is best effort: a leftover namespace does not fail a test.
        for c in self.helpers.iter_mut().chain(self.networkd.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.dbus_pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        // Processes still in the DUT's namespace (an armed rollback that
        // firstboot detached) are this rig's own: end them by pid, never by
        // a host-wide pattern that could hit another test's.
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &format!("{}-dut", self.name)])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("umount").arg(self.ns_dir.join("mnt")).status();
        let _ = Command::new("umount").arg(&self.ns_dir).status();
        for ns in ["dut", "gw"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}-{ns}", self.name)])
                .status();
        }
    }
}

/// A unit config for the rig: mgmt static on 10.9.0.0/24 with `gw` as its
/// gateway, media static on 10.8.0.0/24; `extra` appended.
pub fn unit(addr: &str, gw: &str, extra: &str) -> String {
    format!(
        "version = 1
hostname = \"rig-unit\"
[[interfaces]]
label = \"mgmt\"
match = {{ mac = \"{MGMT_MAC}\" }}
addresses = [\"{addr}\"]
gateway = \"{gw}\"
[[interfaces]]
label = \"media\"
match = {{ mac = \"{MEDIA_MAC}\" }}
addresses = [\"10.8.0.5/24\", \"fd08::5/64\"]
mtu = 1400
{extra}
[qa]
settle_seconds = 10
"
    )
}

/// Whether a path exists.
pub fn exists(p: &Path) -> bool {
    p.exists()
}
