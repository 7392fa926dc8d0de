//! portfwd integration tests (one binary): namespaces made by the tests, traffic on loopback
//! and inside them only. Root is needed (skipped loudly otherwise, failed under
//! RPOD_REQUIRE_ROOT=1); the rootless tests switch to the `rpodtest` user themselves.

mod common;
mod fwd;
mod podman;
mod rootless;
mod tap;
