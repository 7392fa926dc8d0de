//! The firewall: rules are rendered by [`rules`] (pure) and applied by a [`Firewall`]
//! implementation, one atomic batch per setup, teardown or reload.

pub mod nft;
pub mod rules;

use crate::error::Result;

/// Applies one nft batch atomically.
pub trait Firewall: Send + Sync {
    fn apply(&self, batch: &str) -> Result<()>;
    /// Lists a map's `key : value` elements (used to explain a conflict).
    fn list_map(&self, map: &str) -> Result<String>;
}

/// The `none` driver: no rules at all.
pub struct NoFirewall;

impl Firewall for NoFirewall {
    fn apply(&self, _batch: &str) -> Result<()> {
        Ok(())
    }
    fn list_map(&self, _map: &str) -> Result<String> {
        Ok(String::new())
    }
}

/// Which firewall driver to use, from `--firewall-driver` or `NETAVARK_FW`.
pub fn driver(name: Option<&str>) -> Result<Box<dyn Firewall>> {
    match name.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("nftables") => Ok(Box::new(nft::NftCli::default())),
        Some("iptables") | Some("firewalld") => {
            tracing::warn!("firewall driver {name:?} is not supported by netd; using nftables");
            Ok(Box::new(nft::NftCli::default()))
        }
        Some("none") => Ok(Box::new(NoFirewall)),
        Some(other) => Err(crate::error::msg(format!("Must provide a valid firewall backend, got {other}"))),
    }
}
