//! `dnsd`: container name server (aardvark-dns compatible), built on hickory-server.
//!
//! * [`table`]: the pure lookup table (names, scoping, upstream choice).
//! * [`config`]: loading the per-network files of the config directory.
//! * [`handler`]: the hickory-server request handler (answers and forwarding).
//! * [`server`]: listeners per bind address, reload, the daemon.

pub mod config;
pub mod handler;
pub mod server;
pub mod table;

/// The helper's version, as its `version` subcommand reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
