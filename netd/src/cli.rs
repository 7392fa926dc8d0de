//! The command line, netavark's.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "netd", version, about = "netavark-compatible container network setup")]
pub struct Cli {
    /// Read the JSON input from this file instead of stdin (`-` is stdin).
    #[arg(short = 'f', long = "file", global = true)]
    pub file: Option<PathBuf>,
    /// The run directory: DNS configs in <DIR>/aardvark-dns, netd's state in <DIR>/netd.
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Rootless mode.
    #[arg(short = 'r', long = "rootless", global = true, action = clap::ArgAction::Set, default_value = "false")]
    pub rootless: bool,
    /// The DNS helper to start (aardvark-dns compatible).
    #[arg(short = 'a', long = "aardvark-binary", global = true)]
    pub aardvark_binary: Option<PathBuf>,
    /// nftables (default) or none.
    #[arg(long = "firewall-driver", env = "NETAVARK_FW", global = true)]
    pub firewall_driver: Option<String>,
    /// Accepted for netavark compatibility; netd has no external plugins.
    #[arg(long = "plugin-directory", global = true)]
    pub plugin_directory: Vec<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up the networks of a container in the given network namespace.
    Setup { netns: PathBuf },
    /// Tear down the networks of a container.
    Teardown { netns: PathBuf },
    /// Update a network's DNS servers.
    Update {
        network: String,
        #[arg(long = "network-dns-servers", num_args = 0..)]
        network_dns_servers: Vec<String>,
    },
    /// Print version information as JSON.
    Version,
    /// Re-apply every network's and port's firewall rules from netd's state.
    FirewallReload,
}
