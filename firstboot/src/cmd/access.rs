//! `firstboot access`: rotate the admins' SSH keys with confirm-or-rollback.

use anyhow::{Context, Result};

use crate::access::{self, Set};
use crate::cli::AccessCommand;
use crate::root::Root;

/// Runs `firstboot access ...`.
pub fn run(root: &Root, c: &AccessCommand) -> Result<i32> {
    match c {
        AccessCommand::Keys { unit, confirm_within } => {
            let keys = access::keys_from_unit(root, unit)?;
            let n = keys.len();
            let exe = std::env::current_exe().context("finding firstboot's own path")?;
            match access::set_keys(root, keys, *confirm_within, &exe)? {
                Set::Unchanged => println!("unchanged: these {n} SSH key(s) are in force already"),
                Set::Pending(p) => println!(
                    "change {}: {n} SSH key(s) in force; log in with a new key and run \
                     `firstboot access confirm` within {confirm_within} s to keep them, \
                     or the old keys come back by themselves",
                    p.token
                ),
            }
            for (file, n) in access::other_key_files(root) {
                println!(
                    "note: {file} also lets {n} key(s) in (from the image's profile); this does not change it: \
                     build the image without them to retire them"
                );
            }
            Ok(0)
        }
        AccessCommand::Confirm => {
            let (token, persisted) = access::confirm(root)?;
            println!("SSH key change {token} confirmed: the new keys stay");
            super::central::follow_config(root, persisted);
            Ok(0)
        }
        AccessCommand::Rollback(args) => {
            args.wait();
            match access::rollback(root, args.if_pending.as_deref())? {
                Some(t) => println!("SSH key change {t} rolled back: the old keys are in force"),
                None => println!("nothing to roll back"),
            }
            Ok(0)
        }
    }
}
