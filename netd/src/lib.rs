//! `netd`: a netavark-compatible network setup helper.
//!
//! `main.rs` only parses the command line and maps errors to netavark's exit protocol
//! (`{"error": "..."}` on stdout, exit 1). Everything else is here so that tests can drive it:
//! [`driver`] (bridge, macvlan), [`firewall`] (pure rule rendering plus an nft applier),
//! [`dns`] (the DNS helper's files and process), [`state`] (what `firewall-reload` needs),
//! [`netns`] and [`nl`] (namespaces and netlink).

pub mod cli;
pub mod commands;
pub mod dns;
pub mod driver;
pub mod error;
pub mod firewall;
pub mod netns;
pub mod nl;
pub mod state;
pub mod sysctl;
