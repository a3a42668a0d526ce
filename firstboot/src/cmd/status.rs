//! `firstboot status`.

use std::time::{Duration, Instant};

use anyhow::Result;
use flypack_contracts::layout::target;

use crate::cli::StatusArgs;
use crate::journal::Journal;
use crate::root::Root;
use crate::status;

/// The status as it stands.
pub fn current(root: &Root) -> Result<flypack_contracts::status::Status> {
    let journal = Journal::load(&root.path(target::JOURNAL))?;
    let done = root.path(target::DONE_MARKER).exists();
    Ok(status::compute(root, &journal, done))
}

/// Shows (or announces) the verdict; exit code 0 GO, 1 NO-GO, 2 GO with warnings.
pub fn run(root: &Root, a: &StatusArgs) -> Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut s = current(root)?;
    while a.wait && s.provisioning == flypack_contracts::status::Provisioning::InProgress && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        s = current(root)?;
    }
    if a.announce {
        status::announce(root, &s)?;
    } else if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", status::table(&s));
    }
    Ok(s.verdict.exit_code())
}
