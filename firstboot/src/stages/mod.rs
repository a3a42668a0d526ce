//! The provisioning stages, in order.

pub mod disk;
pub mod firewall;
pub mod identity;
pub mod network;
pub mod qa;
pub mod stack;

use crate::runner::Stage;

/// Stage names in order (the status lists them all, pending or not).
pub const ORDER: &[&str] = &["identity", "netconf", "firewall", "disk", "network", "stack", "qa"];
/// Stages the early unit runs, before systemd-networkd starts.
pub const EARLY: &[&str] = &["identity", "netconf", "firewall"];

/// The stages to run on a unit.
pub fn all() -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(identity::Identity),
        Box::new(network::NetConf),
        Box::new(firewall::Firewall),
        Box::new(disk::Disk),
        Box::new(network::Network),
        Box::new(stack::StackStage),
        Box::new(qa::Qa),
    ]
}
