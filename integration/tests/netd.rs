//! End-to-end tests of `netd` with real traffic, each in its own namespaces (see the
//! `rpod_integration` crate docs for the harness), and `rootless_podman`: our `portfwd` and
//! `fuse-overlay` under rootless podman. One test binary on purpose: it links once.
//!
//! Run as root: `cargo build --workspace && cargo test -p rpod-integration --test netd`.
//! Not root: every test prints `SKIP` and passes, unless RPOD_REQUIRE_ROOT=1.
//! `NETD_BIN=/path/to/netd` tests another binary (e.g. Debian's netavark, for comparison).

#[path = "netd/bad_input.rs"]
mod bad_input;
#[path = "netd/bridge.rs"]
mod bridge;
#[path = "netd/dns.rs"]
mod dns;
#[path = "netd/dnsd.rs"]
mod dnsd;
#[path = "netd/lifecycle.rs"]
mod lifecycle;
#[path = "netd/macvlan.rs"]
mod macvlan;
#[path = "netd/options.rs"]
mod options;
#[path = "netd/podman.rs"]
mod podman;
#[path = "netd/ports.rs"]
mod ports;
#[path = "netd/rootless_podman.rs"]
mod rootless_podman;

use rpod_integration::{Env, Network};

/// `10.89.<n>.<host>`.
pub fn ip4(n: u8, host: u8) -> String {
    format!("10.89.{n}.{host}")
}

/// A v4 bridge network named `name` on the bridge `<prefix><suffix>`, subnet 10.89.<n>.0/24,
/// gateway .1.
pub fn bridge4(env: &Env, name: &str, suffix: &str, n: u8) -> Network {
    Network::bridge(name, &env.name(suffix)).subnet(&format!("10.89.{n}.0/24"), Some(&ip4(n, 1)))
}

/// The MAC address of `dev` in `ns`, lower case.
pub fn mac_of(env: &Env, ns: &rpod_integration::Netns, dev: &str) -> String {
    env.link_details(ns, dev)
        .and_then(|v| v.get("address").and_then(|a| a.as_str()).map(str::to_lowercase))
        .unwrap_or_else(|| panic!("no link {dev} in {}", ns.name()))
}

/// The `linkinfo.info_kind` of `dev` in `ns` (`veth`, `macvlan`, `bridge`...).
pub fn kind_of(env: &Env, ns: &rpod_integration::Netns, dev: &str) -> String {
    env.link_details(ns, dev)
        .and_then(|v| v.pointer("/linkinfo/info_kind").and_then(|a| a.as_str()).map(str::to_string))
        .unwrap_or_default()
}

/// Asserts that a container namespace is back to just `lo`.
pub fn assert_only_lo(env: &Env, c: &rpod_integration::Container) {
    let links = env.links(&c.ns, None);
    assert_eq!(links, vec!["lo".to_string()], "container {} should have only lo left", c.name);
}
