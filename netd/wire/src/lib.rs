//! Types that cross rpod's process boundaries, with no I/O.
//!
//! - [`network`]: the netavark-format JSON that podman (and `rpod`) send to `netd`
//!   (`NetworkOptions`, `Network`, `PortMapping`...) and what `netd setup` prints back
//!   (`StatusBlock`), plus the one-key error object.
//! - [`dnsconfig`]: the per-network config files that `netd` writes and the DNS helper
//!   (`dnsd`, or aardvark-dns) reads: one reader and one writer of that format, here.
//!
//! Everything here is pure: parse and render, validate, no files or sockets.

pub mod dnsconfig;
pub mod network;

pub use network::{
    ErrorJson, NetAddress, NetInterface, Network, NetworkOptions, PerNetworkOptions, PortMapping, Route, StatusBlock,
    Subnet,
};
