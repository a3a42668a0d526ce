//! `firstboot firewall`.

use anyhow::Result;

use crate::cli::FirewallCommand;
use crate::firewall;
use crate::root::Root;

/// Shows, applies or checks the firewall.
pub fn run(root: &Root, c: &FirewallCommand) -> Result<i32> {
    match c {
        FirewallCommand::Show => {
            let unit = crate::config::in_force_required(root)?;
            print!("{}", firewall::render(&unit, &firewall::resolve(&unit)?)?);
            Ok(0)
        }
        FirewallCommand::Apply => {
            println!("{}", firewall::apply(root, &crate::config::in_force_required(root)?)?);
            Ok(0)
        }
        FirewallCommand::Status => {
            let l = firewall::loaded_policies()?;
            println!(
                "table inet {}: input {}, forward {}, {} rules",
                firewall::TABLE,
                if l.input_drop { "drop" } else { "ACCEPT" },
                if l.forward_drop { "drop" } else { "ACCEPT" },
                l.rules
            );
            Ok(if l.input_drop && l.forward_drop { 0 } else { 1 })
        }
    }
}
