//! rpod's end-to-end test harness: network namespaces standing in for a machine, the
//! outside world and containers, and helpers to drive `netd` and real traffic through them.
//!
//! # Theory of operation
//! Each test builds an [`Env`]: a random 6-character prefix (`r` + 5), a *host* namespace
//! where netd runs (its bridges, veths, nft table and DNS daemon live and die there), an
//! *upstream* namespace linked to it by a veth pair (198.18.0.0/24 and fd00:198::/64, the
//! host's default routes point at it), container namespaces made on demand
//! (`/run/netns/<prefix><name>`), and a temporary directory that holds netd's `--config`.
//! Nothing global is touched: not the real host's links, routes or firewall. Dropping the
//! Env (normally or during a panic) kills the processes and deletes the namespaces and the
//! directory.
//!
//! Traffic checks use the `rpod-probe` binary of this crate (TCP/UDP servers that answer
//! with the address they saw, and clients with deadlines) and busybox (`ping`, `wget`,
//! `httpd`, `nslookup`). Expected-to-work checks retry for a few seconds; expected-to-fail
//! checks make one attempt with a short timeout, so every "blocked" assertion should sit
//! next to a positive control in the same test.
//!
//! Skipping: [`env_or_skip!`] returns from the test with a loud `SKIP <test>: <reason>`
//! on stderr when not root or a basic tool is missing; with `RPOD_REQUIRE_ROOT=1` (CI) that
//! is a failure instead. [`skip!`] does the same for a missing kernel feature (always a skip).
//!
//! Environment: `NETD_BIN` (the netd to test; default `target/<profile>/netd`),
//! `RPOD_PROBE_BIN`, `RPOD_REQUIRE_ROOT=1`, `RPOD_KEEP_ON_FAILURE=1` (leave a failed test's
//! namespaces and directory in place). `PORTFWD_BIN` and `FUSE_OVERLAY_BIN` (default: the
//! build's `portfwd` and `fuse-overlay`) for the rootless podman test.

pub mod cmd;
pub mod env;
pub mod netd;
pub mod netopts;
pub mod ns;
pub mod proc;
pub mod snapshot;

pub use env::{
    print_skip, random_prefix, require_root, sock, Container, Env, Reply, HOST_IP4, HOST_IP6, UPSTREAM_IP4,
    UPSTREAM_IP6,
};
pub use netd::{netd, netd_raw, netd_with_env, warn_if_stale, workspace_bin, NetdOut};
pub use netopts::{hex_id, Attach, Network, Opts, Port};
pub use ns::Netns;
pub use proc::Proc;
pub use snapshot::Snapshot;

/// Prints `SKIP <test>: <reason>` loudly and returns from the calling test.
#[macro_export]
macro_rules! skip {
    ($test:expr, $($reason:tt)+) => {{
        $crate::print_skip($test, &format!($($reason)+));
        return;
    }};
}

/// `let env = env_or_skip!("test_name");` builds the test's [`Env`], or skips the test
/// (fails it under `RPOD_REQUIRE_ROOT=1`) when it cannot run here.
#[macro_export]
macro_rules! env_or_skip {
    ($test:expr) => {
        match $crate::Env::new($test) {
            Ok(env) => env,
            Err(reason) => $crate::skip!($test, "{}", reason),
        }
    };
}
