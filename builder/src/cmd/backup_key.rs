//! `builder backup-key`: the fleet's backup key (see
//! `flypack_engine::backup::key` for what each part is and where it lives).

use anyhow::{Context, Result, bail};
use flypack_engine::backup::{self, FleetKey, Keys, UnitKey};
use serde_json::json;

use crate::cli::BackupKeyCommand;
use crate::progress::{Mode, Reporter};

/// `KEY` → `KEY.unit.toml`.
pub fn unit_path(key: &std::path::Path) -> std::path::PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".unit.toml");
    s.into()
}

/// Loads fleet keys, naming the one that fails.
pub fn load_keys(paths: &[std::path::PathBuf]) -> Result<Vec<FleetKey>> {
    paths.iter().map(|p| FleetKey::load(p)).collect()
}

/// Runs a `builder backup-key` subcommand.
pub fn run(c: &BackupKeyCommand, rep: &Reporter) -> Result<i32> {
    match c {
        BackupKeyCommand::New { out } => {
            if out.exists() {
                bail!(
                    "{} exists: a new key there would make every backup made with the old one unreadable; \
                     choose another --out (and see `builder backup-key unit` to rotate)",
                    out.display()
                );
            }
            let now = time::OffsetDateTime::now_utc()
                .replace_nanosecond(0)?
                .format(&time::format_description::well_known::Rfc3339)?;
            let k = FleetKey::generate(&now)?;
            k.save(out)?;
            let unit = unit_path(out);
            k.unit_part().save(&unit)?;
            if rep.mode() == Mode::Json {
                rep.event(
                    "result",
                    json!({ "key": out, "unit_part": unit, "recipient": k.recipient().to_string() }),
                );
            } else {
                eprintln!(
                    "fleet backup key: {} (SECRET: it decrypts every backup; keep it on this laptop and a copy offline)\n\
                     unit part:        {} (for the profile's [backup] key = ..., or `builder customize IMG --backup-key`)\n\
                     recipient:        {}\n\
                     restore with:     builder restore --backup ARCHIVE --key {} ...",
                    out.display(),
                    unit.display(),
                    k.recipient(),
                    out.display()
                );
            }
            Ok(0)
        }
        BackupKeyCommand::Unit { keys, out } => {
            let mut merged: Option<UnitKey> = None;
            for k in keys {
                let u = UnitKey::load(k)?;
                match &mut merged {
                    None => merged = Some(u),
                    Some(m) => m.merge(&u),
                }
            }
            let m = merged.context("no key given")?;
            m.save(out)?;
            eprintln!(
                "{}: {} recipient(s), {} auth key(s); new backups are tagged with the first",
                out.display(),
                m.recipients.len(),
                m.auth.len()
            );
            Ok(0)
        }
        BackupKeyCommand::Verify { archive, keys } => {
            let fleet = load_keys(keys)?;
            let (m, _) = backup::verify(archive, &Keys::fleet(&fleet))?;
            if rep.mode() == Mode::Json {
                rep.event(
                    "result",
                    json!({ "hostname": m.hostname, "image": m.image, "created": m.created, "entries": m.entries.len(), "bytes": m.data_bytes(), "volumes": m.volumes }),
                );
            } else {
                println!(
                    "{}: OK: backup of {} ({} image) from {}, {} entries, {} bytes of data, authenticated by the fleet key",
                    archive.display(),
                    m.hostname,
                    m.image,
                    m.created,
                    m.entries.len(),
                    m.data_bytes()
                );
                for (v, how) in &m.volumes {
                    println!("  volume {v}: {how}");
                }
            }
            Ok(0)
        }
    }
}
