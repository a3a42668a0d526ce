//! The central's password, handed to a unit in service (`firstboot central
//! password`, run by the fleet playbook `central-password.yml`).
//!
//! The seed brings a unit its first password (`builder customize
//! --central-password`). A password handed over later is kept in
//! [`HANDED`], with the digest of the seed's password it replaces, and wins
//! over that seed password from then on: the config stage, when it runs
//! again (a seed change, a restore), must not put the old one back. A seed
//! that brings a different password (written since, by whoever holds the
//! disk) wins over the handed one, which is then forgotten. The record is
//! under `/etc/flypack/secrets`, so it is in the backup and survives a
//! restore.

use anyhow::{Context, Result, bail};
use flypack_contracts::atomic::{remove_any, write_atomic};
use flypack_contracts::digest::KeyHasher;
use flypack_contracts::seed::{self, Secret};
use serde::{Deserialize, Serialize};

use crate::root::Root;

/// The handed password and what it replaces (root's alone, 0600).
pub const HANDED: &str = "/etc/flypack/secrets/central-password.json";

/// The record in [`HANDED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handed {
    /// The password.
    pub password: String,
    /// The digest ([`seed_digest`]) of the seed's password when it was
    /// handed over; None when the seed had none.
    pub replaces_seed: Option<String>,
}

/// A digest of a seed password, to recognise it later without keeping it.
pub fn seed_digest(p: &str) -> String {
    KeyHasher::new().part("central-password", p).finish()
}

/// The handed record, if any. One that does not read is an error that says
/// how to put it right (it was written by us; a hand edit broke it).
pub fn handed(root: &Root) -> Result<Option<Handed>> {
    let path = root.path(HANDED);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {HANDED}")),
    };
    let fix = "hand the password over again with the fleet playbook central-password.yml \
               (or `firstboot central password FILE`), or remove the file to go back to the seed's";
    let h: Handed =
        serde_json::from_slice(&text).with_context(|| format!("{HANDED} is not a handed password: {fix}"))?;
    if let Some(why) = seed::central_password_problem(&h.password) {
        bail!("the password in {HANDED}: {why}; {fix}");
    }
    Ok(Some(h))
}

/// Which password the unit uses: the seed's `seed_pw`, or the handed one
/// when the seed still has the password that was handed over it (or none).
/// Returns it with where it came from; forgets a handed password that a
/// newer seed password replaces.
pub fn choose(root: &Root, seed_pw: Option<&Secret>) -> Result<Option<(Secret, &'static str)>> {
    let handed = handed(root)?;
    match (handed, seed_pw) {
        (Some(h), Some(s)) if h.replaces_seed.as_deref() != Some(seed_digest(&s.0).as_str()) && h.password != s.0 => {
            remove_any(&root.path(HANDED))?;
            Ok(Some((
                s.clone(),
                "central password from the seed (newer than the one handed over)",
            )))
        }
        (Some(h), _) => Ok(Some((Secret(h.password), "central password handed over"))),
        (None, Some(s)) => Ok(Some((s.clone(), "central password"))),
        (None, None) => Ok(None),
    }
}

/// Keeps `password` as the handed one, replacing the seed's `seed_pw`.
/// Returns false when it was handed already (nothing written).
pub fn keep(root: &Root, password: &str, seed_pw: Option<&Secret>) -> Result<bool> {
    if let Some(why) = seed::central_password_problem(password) {
        bail!("the new central password: {why}; make one with `openssl rand -hex 16`");
    }
    let replaces_seed = match (handed(root)?, seed_pw) {
        // Handed before: it still replaces what it replaced then.
        (Some(h), _) if h.password == password => return Ok(false),
        (Some(h), Some(s)) if h.replaces_seed.as_deref() == Some(seed_digest(&s.0).as_str()) => h.replaces_seed,
        (_, s) => s.map(|s| seed_digest(&s.0)),
    };
    let rec = Handed {
        password: password.to_string(),
        replaces_seed,
    };
    let path = root.path(HANDED);
    std::fs::create_dir_all(path.parent().expect("has a parent"))
        .with_context(|| format!("creating {}", path.display()))?;
    write_atomic(&path, serde_json::to_vec_pretty(&rec)?.as_slice(), 0o600)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &str) -> Secret {
        Secret(p.into())
    }

    #[test]
    fn a_handed_password_outlives_the_seeds_old_one_but_not_a_newer_one() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let old = s("seed-password-0001");
        assert_eq!(choose(&root, Some(&old)).unwrap().unwrap().0, old);
        assert!(keep(&root, "handed-password-0002", Some(&old)).unwrap());
        assert!(
            !keep(&root, "handed-password-0002", Some(&old)).unwrap(),
            "twice: unchanged"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.path(HANDED)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The config stage runs again with the old seed: the handed one stays.
        let (p, from) = choose(&root, Some(&old)).unwrap().unwrap();
        assert_eq!(
            (p.0.as_str(), from),
            ("handed-password-0002", "central password handed over")
        );
        // Handed again: it still replaces the seed's old one.
        assert!(keep(&root, "handed-password-0003", Some(&old)).unwrap());
        assert_eq!(choose(&root, Some(&old)).unwrap().unwrap().0, s("handed-password-0003"));
        // A seed without a password: the handed one.
        assert_eq!(choose(&root, None).unwrap().unwrap().0, s("handed-password-0003"));
        // Someone writes a newer password onto the seed: it wins, and the
        // handed one is forgotten (it cannot come back either).
        let newer = s("seed-password-0004");
        let (p, from) = choose(&root, Some(&newer)).unwrap().unwrap();
        assert_eq!(p, newer);
        assert!(from.contains("newer"), "{from}");
        assert!(!root.path(HANDED).exists());
        assert_eq!(choose(&root, Some(&old)).unwrap().unwrap().0, old);
    }

    #[test]
    fn a_bad_password_or_record_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let e = keep(&root, "short", None).unwrap_err().to_string();
        assert!(e.contains("openssl rand"), "{e}");
        let e = keep(&root, "two\nlines-of-password", None).unwrap_err().to_string();
        assert!(e.contains("new central password"), "{e}");
        assert!(!root.path(HANDED).exists(), "nothing written");
        std::fs::create_dir_all(root.path(HANDED).parent().unwrap()).unwrap();
        for bad in [
            &b"{not json"[..],
            br#"{"password":"a b c d e f g h i j","replaces_seed":null}"#,
            br#"{"password":"long-enough-password","replaces_seed":null,"extra":1}"#,
        ] {
            std::fs::write(root.path(HANDED), bad).unwrap();
            let e = format!("{:#}", choose(&root, None).unwrap_err());
            assert!(e.contains("central-password.yml"), "{e}");
        }
    }
}
