//! `rpod-storage`: the content-addressed image and layer store, OCI layer extraction, image
//! import/export, and overlay mounts for container root filesystems (plus the `fuse-overlay`
//! file system in [`fuse`]).

pub mod archive;
pub mod container;
pub mod digest;
pub mod error;
pub mod extract;
#[cfg(feature = "fuse")]
pub mod fuse;
pub mod registry;
pub mod safefs;
pub mod store;

pub use container::kernel_overlay_works;
pub use store::{default_root, ContainerRecord, ImageLayer, ImageRecord, LayerRecord, MountMethod, Store};

pub use registry::{login, logout, pull, Credentials, LoginOptions, PullOptions, Reference, RegistryError};

pub use digest::Digest;
pub use error::{Error, Result};

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
