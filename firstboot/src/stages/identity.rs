//! `identity`: make this unit itself, though every unit was flashed from the
//! same image: hostname, machine-id, SSH host keys, and who may log in.

use std::path::Path;

use anyhow::{Context, Result};
use flypack_contracts::atomic::write_atomic;
use flypack_contracts::cmd::Cmd;
use flypack_contracts::digest::KeyHasher;

use crate::root::Root;
use crate::runner::{Ctx, Outcome, Stage};

/// Per-user authorized keys from the unit config (sshd reads them too).
pub const KEYS_DIR: &str = "/etc/flypack/ssh";

/// The stage.
#[derive(Debug)]
pub struct Identity;

/// Members of the `sudo` group: the unit's administrators.
pub fn admins(root: &Root) -> Vec<String> {
    let group = std::fs::read_to_string(root.path("/etc/group")).unwrap_or_default();
    group
        .lines()
        .find(|l| l.starts_with("sudo:"))
        .and_then(|l| l.split(':').nth(3))
        .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

fn set_hostname(root: &Root, name: &str) -> Result<bool> {
    let mut changed = false;
    let hf = root.path("/etc/hostname");
    if std::fs::read_to_string(&hf)
        .map(|s| s.trim().to_string())
        .ok()
        .as_deref()
        != Some(name)
    {
        write_atomic(&hf, format!("{name}\n").as_bytes(), 0o644)?;
        changed = true;
    }
    let hosts_path = root.path("/etc/hosts");
    let hosts = std::fs::read_to_string(&hosts_path).unwrap_or_default();
    let want_line = format!("127.0.1.1\t{name}");
    let mut lines: Vec<String> = hosts
        .lines()
        .filter(|l| !l.starts_with("127.0.1.1"))
        .map(str::to_string)
        .collect();
    let pos = lines
        .iter()
        .position(|l| l.starts_with("127.0.0.1"))
        .map(|p| p + 1)
        .unwrap_or(0);
    lines.insert(pos, want_line);
    let new = lines.join("\n") + "\n";
    if new != hosts {
        write_atomic(&hosts_path, new.as_bytes(), 0o644)?;
        changed = true;
    }
    if root.is_live() {
        let current = rustix::system::uname().nodename().to_string_lossy().into_owned();
        if current != name {
            rustix::system::sethostname(name.as_bytes()).context("setting the hostname")?;
            changed = true;
        }
    }
    Ok(changed)
}

fn machine_id(root: &Root) -> Result<String> {
    let p = root.path("/etc/machine-id");
    let valid = |s: &str| s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit());
    let cur = std::fs::read_to_string(&p).unwrap_or_default().trim().to_string();
    if root.is_live() {
        // systemd made a transient id at boot (the image has none); commit
        // it so it survives reboots. A no-op once committed.
        if let Err(e) = Cmd::new("systemd-machine-id-setup").arg("--commit").run() {
            tracing::debug!("systemd-machine-id-setup --commit: {e}");
        }
        let now = std::fs::read_to_string(&p).unwrap_or_default().trim().to_string();
        if !valid(&now) {
            Cmd::new("systemd-machine-id-setup")
                .run()
                .context("making a machine-id")?;
        }
    } else if !valid(&cur) {
        let id = uuid_hex();
        write_atomic(&p, format!("{id}\n").as_bytes(), 0o444)?;
    }
    Ok(std::fs::read_to_string(&p).unwrap_or_default().trim().to_string())
}

fn uuid_hex() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        // /dev/urandom never fails a 16-byte read once open.
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}

/// The host keys sshd's configuration names (`HostKey` lines in
/// `sshd_config` and `sshd_config.d/*.conf`); `None` when there is none, so
/// sshd uses its defaults (RSA, ECDSA and Ed25519).
fn configured_host_keys(root: &Root) -> Option<Vec<String>> {
    let mut files = vec![root.path("/etc/ssh/sshd_config")];
    if let Ok(rd) = std::fs::read_dir(root.path("/etc/ssh/sshd_config.d")) {
        let mut more: Vec<_> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        more.sort();
        files.extend(more);
    }
    let keys: Vec<String> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    match (w.next(), w.next()) {
                        (Some(k), Some(v)) if k.eq_ignore_ascii_case("HostKey") => Some(v.to_string()),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    (!keys.is_empty()).then_some(keys)
}

/// Makes the host keys sshd is configured with (the image's overlay names
/// Ed25519 and ECDSA: an RSA key costs 15 s under emulation and is made only
/// when a `HostKey` line asks for it), or all default types when no
/// `HostKey` line exists. Existing keys are kept.
fn make_host_keys(root: &Root) -> Result<()> {
    let Some(keys) = configured_host_keys(root) else {
        Cmd::new("ssh-keygen")
            .arg("-A")
            .arg("-f")
            .arg(root.dir())
            .run()
            .context("making SSH host keys")?;
        // Flushed, so the journal never records keys that a power cut loses.
        for t in ["ed25519", "ecdsa", "rsa"] {
            for suffix in ["", ".pub"] {
                let f = root.path(format!("/etc/ssh/ssh_host_{t}_key{suffix}"));
                if let Ok(h) = std::fs::File::open(&f) {
                    h.sync_all().with_context(|| format!("flushing {}", f.display()))?;
                }
            }
        }
        flypack_contracts::atomic::fsync_dir(&root.path("/etc/ssh"))?;
        return Ok(());
    };
    for k in keys {
        let Some(t) = ["ed25519", "ecdsa", "rsa"]
            .into_iter()
            .find(|t| k.ends_with(&format!("ssh_host_{t}_key")))
        else {
            tracing::warn!("HostKey {k}: not a key type firstboot makes (ed25519, ecdsa, rsa); sshd may not start");
            continue;
        };
        let path = root.path(&k);
        if key_is_whole(&path) {
            continue;
        }
        make_key(&path, t).with_context(|| format!("making the SSH host key {k}"))?;
    }
    Ok(())
}

/// A host key that sshd can load and whose public half is beside it. A power
/// cut soon after a key was made can leave an empty file under its name.
fn key_is_whole(path: &Path) -> bool {
    let mut pubf = path.as_os_str().to_owned();
    pubf.push(".pub");
    path.exists()
        && std::fs::metadata(&pubf).is_ok_and(|m| m.len() > 0)
        && Cmd::new("ssh-keygen").arg("-y").arg("-f").arg(path).run().is_ok()
}

/// Makes one host key so that a power cut at any point leaves either no key
/// or a whole one: written under a temporary name, flushed to disk, then
/// renamed (public half first, so a private key under its name always has
/// its public half), and the folder flushed.
fn make_key(path: &Path, t: &str) -> Result<()> {
    let dir = path.parent().context("a host key path has a folder")?;
    let name = path
        .file_name()
        .context("a host key path has a name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.flypack-new"));
    let tmp_pub = dir.join(format!(".{name}.flypack-new.pub"));
    let mut pubf = path.as_os_str().to_owned();
    pubf.push(".pub");
    for f in [&tmp, &tmp_pub] {
        flypack_contracts::atomic::remove_any(f)?;
    }
    let bits: &[&str] = if t == "rsa" { &["-b", "3072"] } else { &[] };
    Cmd::new("ssh-keygen")
        .args(["-q", "-t", t, "-N", "", "-C", ""])
        .args(bits)
        .arg("-f")
        .arg(&tmp)
        .run()?;
    for f in [&tmp, &tmp_pub] {
        std::fs::File::open(f)
            .and_then(|h| h.sync_all())
            .with_context(|| format!("flushing {}", f.display()))?;
    }
    std::fs::rename(&tmp_pub, &pubf).with_context(|| format!("renaming {}", tmp_pub.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    flypack_contracts::atomic::fsync_dir(dir)
}

fn host_keys(root: &Root) -> Result<Vec<String>> {
    make_host_keys(root)?;
    let mut fps = Vec::new();
    for t in ["ed25519", "ecdsa", "rsa"] {
        let p = root.path(format!("/etc/ssh/ssh_host_{t}_key.pub"));
        if p.exists()
            && let Ok(o) = Cmd::new("ssh-keygen").arg("-l").arg("-f").arg(&p).run()
            && let Some(fp) = o.stdout_str().split_whitespace().nth(1)
        {
            fps.push(format!("{} {fp}", t.to_uppercase()));
        }
    }
    Ok(fps)
}

/// The keys file's text for `keys`.
pub fn keys_text(keys: &[String]) -> String {
    keys.iter().map(|k| format!("{}\n", k.trim())).collect()
}

/// Writes every admin's keys file (`KEYS_DIR/ADMIN.keys`) from the unit
/// config's keys (none: removed); returns the number of admins.
pub fn authorized_keys(root: &Root, keys: &[String]) -> Result<usize> {
    let dir = root.path(KEYS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let admins = admins(root);
    let text = keys_text(keys);
    for a in &admins {
        let f = dir.join(format!("{a}.keys"));
        if keys.is_empty() {
            flypack_contracts::atomic::remove_any(&f)?;
        } else if std::fs::read_to_string(&f).ok().as_deref() != Some(text.as_str()) {
            write_atomic(&f, text.as_bytes(), 0o644)?;
        }
    }
    Ok(admins.len())
}

impl Stage for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn early(&self) -> bool {
        true
    }

    fn input_digest(&self, ctx: &Ctx) -> Result<String> {
        let unit = ctx.unit()?;
        let mut h = KeyHasher::new();
        h.part("hostname", unit.hostname.as_str());
        for k in &unit.access.ssh_authorized_keys {
            h.part("key", k);
        }
        Ok(h.finish())
    }

    fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        let root = &ctx.root;
        let unit = ctx.unit()?;
        let name = unit.hostname.as_str();
        set_hostname(root, name)?;
        let id = machine_id(root)?;
        ctx.fault_point("identity", "mid");
        let fps = host_keys(root)?;
        let n = authorized_keys(root, &unit.access.ssh_authorized_keys)?;
        Ok(Outcome::done(format!(
            "hostname {name}, machine-id {}, SSH host keys {}, {} key(s) for {n} admin(s)",
            &id[..id.len().min(12)],
            if fps.is_empty() {
                "present".to_string()
            } else {
                fps.join(", ")
            },
            unit.access.ssh_authorized_keys.len()
        )))
    }
}

/// Whether a path exists under the root (for tests of the stage).
pub fn exists(root: &Root, p: &str) -> bool {
    Path::new(&root.path(p)).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the host keys sshd's config names are made (no 15-second RSA
    /// key unless asked for); with no HostKey line, every default type.
    #[test]
    fn host_keys_follow_sshd_config() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        std::fs::create_dir_all(root.path("/etc/ssh/sshd_config.d")).unwrap();
        std::fs::write(
            root.path("/etc/ssh/sshd_config"),
            "Include /etc/ssh/sshd_config.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(
            root.path("/etc/ssh/sshd_config.d/60-flypack.conf"),
            "HostKey /etc/ssh/ssh_host_ed25519_key\nhostkey /etc/ssh/ssh_host_ecdsa_key\n",
        )
        .unwrap();
        host_keys(&root).unwrap();
        for (t, want) in [("ed25519", true), ("ecdsa", true), ("rsa", false)] {
            assert_eq!(exists(&root, &format!("/etc/ssh/ssh_host_{t}_key")), want, "{t}");
        }
        std::fs::write(
            root.path("/etc/ssh/sshd_config.d/70-old-clients.conf"),
            "HostKey /etc/ssh/ssh_host_rsa_key\n",
        )
        .unwrap();
        let fps = host_keys(&root).unwrap();
        assert!(exists(&root, "/etc/ssh/ssh_host_rsa_key"));
        assert_eq!(fps.len(), 3, "{fps:?}");
        // A power cut left an empty key under its name: it is made again,
        // and a whole one is kept.
        let ecdsa = std::fs::read(root.path("/etc/ssh/ssh_host_ecdsa_key")).unwrap();
        std::fs::write(root.path("/etc/ssh/ssh_host_ed25519_key"), "").unwrap();
        host_keys(&root).unwrap();
        assert!(key_is_whole(&root.path("/etc/ssh/ssh_host_ed25519_key")));
        assert_eq!(std::fs::read(root.path("/etc/ssh/ssh_host_ecdsa_key")).unwrap(), ecdsa);
        let left: Vec<_> = std::fs::read_dir(root.path("/etc/ssh"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("flypack-new"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");

        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        std::fs::create_dir_all(root.path("/etc/ssh")).unwrap();
        host_keys(&root).unwrap();
        for t in ["ed25519", "ecdsa", "rsa"] {
            assert!(exists(&root, &format!("/etc/ssh/ssh_host_{t}_key")), "{t}");
        }
    }

    #[test]
    fn identity_in_a_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        {
            let dir = "/etc/ssh";
            std::fs::create_dir_all(root.path(dir)).unwrap();
        }
        std::fs::write(root.path("/etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tflypack\n").unwrap();
        std::fs::write(root.path("/etc/group"), "root:x:0:\nsudo:x:27:flypack,ops\n").unwrap();
        std::fs::write(root.path("/etc/machine-id"), "").unwrap();
        let unit = flypack_contracts::unit::parse_unit(
            Path::new("u"),
            "version = 1\nhostname = \"fp-7\"\n[access]\nssh_authorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIabc t@x\"]\n",
        )
        .unwrap();
        let ctx = Ctx::with_unit(root.clone(), unit);
        let out = Identity.run(&ctx).unwrap();
        assert!(out.detail.starts_with("hostname fp-7, machine-id "), "{}", out.detail);
        assert_eq!(std::fs::read_to_string(root.path("/etc/hostname")).unwrap(), "fp-7\n");
        assert_eq!(
            std::fs::read_to_string(root.path("/etc/hosts")).unwrap(),
            "127.0.0.1\tlocalhost\n127.0.1.1\tfp-7\n"
        );
        let id = std::fs::read_to_string(root.path("/etc/machine-id")).unwrap();
        assert_eq!(id.trim().len(), 32);
        assert!(exists(&root, "/etc/ssh/ssh_host_ed25519_key"));
        assert_eq!(
            std::fs::read_to_string(root.path("/etc/flypack/ssh/ops.keys")).unwrap(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIabc t@x\n"
        );
        // Converges: a second run changes nothing.
        let key_before = std::fs::read(root.path("/etc/ssh/ssh_host_ed25519_key")).unwrap();
        Identity.run(&ctx).unwrap();
        assert_eq!(
            std::fs::read(root.path("/etc/ssh/ssh_host_ed25519_key")).unwrap(),
            key_before
        );
        assert_eq!(std::fs::read_to_string(root.path("/etc/machine-id")).unwrap(), id);
    }
}
