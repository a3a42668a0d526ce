//! The build stages, in order: rootfs, gate, images, store, tree, disk,
//! installer, outputs. Each takes the plan (and what the previous
//! stage produced) and returns what it produced.

pub mod disk;
pub mod gate;
pub mod images;
pub mod installer;
pub mod outputs;
pub mod rootfs;
pub mod store;
pub mod tree;
