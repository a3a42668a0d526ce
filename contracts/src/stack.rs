//! The image's stack as the builder records it for firstboot: which compose
//! file, which profiles, which images (the compose subset itself is parsed by
//! `flypack_engine::compose`).

use serde::{Deserialize, Serialize};

/// Where the builder records the image's stack for firstboot.
pub const STACK_CONFIG: &str = "/usr/share/flypack/stack.json";

/// The image's stack, as the builder records it ([`STACK_CONFIG`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// Compose project name.
    pub project: String,
    /// The compose file inside the image.
    pub compose: String,
    /// Enabled compose profiles.
    pub profiles: Vec<String>,
    /// The images and the archives holding them.
    pub images: Vec<crate::manifest::ContainerImage>,
}
