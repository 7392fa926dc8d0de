//! `portfwd`: userspace network stack for rootless containers; implemented by issue 7.
//!
//! Only the crate skeleton exists so far; the workspace builds it from the start.

/// The helper's version, as its `version` subcommand reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
