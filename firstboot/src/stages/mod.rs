//! The provisioning stages, in order.

pub mod disk;

use crate::runner::Stage;

/// Stage names in order (the status lists them all, pending or not).
pub const ORDER: &[&str] = &["disk"];

/// The stages to run on a unit.
pub fn all() -> Vec<Box<dyn Stage>> {
    vec![Box::new(disk::Disk)]
}
