//! Writing sysctls under /proc/sys, in the namespace of the calling thread.

use crate::error::{NetdError, Result};

/// Writes `value` to `/proc/sys/<key>` (key with `/` separators), unless it already holds it.
pub fn set(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    if let Ok(cur) = std::fs::read_to_string(&path) {
        if cur.trim() == value {
            return Ok(());
        }
    }
    std::fs::write(&path, value).map_err(|e| NetdError::Sysctl(format!("set {key} to {value}: {e}")))
}

/// Like [`set`], but a missing or read-only key is not an error (netavark ignores ENOENT/EROFS
/// for the container's IPv6 keys).
pub fn set_if_present(key: &str, value: &str) -> Result<()> {
    match set(key, value) {
        Err(NetdError::Sysctl(m)) if m.contains("No such file") || m.contains("Read-only") => Ok(()),
        r => r,
    }
}
