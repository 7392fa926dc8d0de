//! `rpod-storage`: the layer store and `fuse-overlay`.
//!
//! Only the crate skeleton exists so far; the workspace builds it from the start.

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
