//! Rootless mode (filled in by issue 8).

use std::path::PathBuf;
use std::sync::OnceLock;

/// What a rootless engine knows about its user.
#[derive(Debug, Clone)]
pub struct Rootless {
    /// The user's real UID (outside the user namespace).
    pub uid: u32,
    /// The user's real GID.
    pub gid: u32,
    /// The private run directory.
    pub run_dir: PathBuf,
}

static MODE: OnceLock<Option<Rootless>> = OnceLock::new();

/// The rootless settings (None: rootful).
pub fn mode() -> Option<&'static Rootless> {
    MODE.get_or_init(|| None).as_ref()
}
