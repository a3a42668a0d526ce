//! The provisioning stages, in the one order that runs them (the status
//! lists them all, pending or not). Each stage says whether the early unit,
//! before systemd-networkd starts, runs it too.

pub mod config;
pub mod disk;
pub mod firewall;
pub mod identity;
pub mod network;
pub mod qa;
pub mod restore;
pub mod stack;
pub mod webapp;

use crate::runner::Stage;

/// Every stage, in order.
pub fn all() -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(restore::Restore),
        Box::new(config::Config),
        Box::new(identity::Identity),
        Box::new(network::NetConf),
        Box::new(firewall::Firewall),
        Box::new(disk::Disk),
        Box::new(network::Network),
        Box::new(stack::StackStage),
        Box::new(webapp::WebApp),
        Box::new(qa::Qa),
    ]
}

/// Stage names in order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|s| s.name()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_order_is_the_contract() {
        assert_eq!(
            super::names(),
            [
                "restore", "config", "identity", "netconf", "firewall", "disk", "network", "stack", "webapp", "qa"
            ]
        );
        let early: Vec<&str> = super::all().iter().filter(|s| s.early()).map(|s| s.name()).collect();
        assert_eq!(early, ["restore", "config", "identity", "netconf", "firewall"]);
    }
}
