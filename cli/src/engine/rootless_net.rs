//! The shared rootless network namespace, where a rootless user's bridge networks live
//! (podman 5's design).
//!
//! How this works: an unprivileged user cannot create links in the host's network namespace,
//! so bridge networks are made inside one network namespace of the user's own, the *rootless
//! netns*, bind-mounted at `<run dir>/rootless-netns/netns` (in the user's mount namespace,
//! so it lives as long as the pause process). It is created on demand by the first command
//! that sets up a bridge network, and removed by the cleanup of the last container (or pod)
//! that used one. Inside it:
//!
//! - netd runs unmodified (`netd --rootless true --config <rootless-netns>/netd`, entered with
//!   `setns` between fork and exec): it makes the bridges and veths (one end moved into each
//!   container's namespace), the nft rules, and starts dnsd there, so containers on one
//!   network resolve each other by name on the bridge's gateway;
//! - one portfwd (`--configure`, no exit fd: it is stopped by its pid file) connects it to the
//!   host: `tap0` is 10.0.2.100 and the default route, so containers reach out through
//!   netd's masquerade and portfwd's NAT. A published port `HOST:CTR` becomes an `add_hostfwd`
//!   of host port HOST to 10.0.2.100:HOST, and netd's DNAT rule (for any local address, as
//!   the host IP is dropped from netd's mapping) takes it on to the container's CTR.
//!
//! Faults: `ensure` checks the namespace is still mounted (an nsfs mount) and the forwarder's
//! pid file names a live process. A dead forwarder is restarted and given the running
//! containers' ports again; a lost namespace (the pause process and its mount namespace were
//! killed) is rebuilt from scratch, with netd's state for it cleared.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use rpod_wire::PortMapping;

use super::db::{NetMode, State};
use super::{portfwd, Engine};

/// The rootless netns's directory.
pub fn dir() -> PathBuf {
    super::run_base().join("rootless-netns")
}

/// The namespace's bind mount.
pub fn netns_path() -> PathBuf {
    dir().join("netns")
}

/// netd's `--config` for the namespace.
pub fn netd_config() -> PathBuf {
    dir().join("netd")
}

fn pidfile() -> PathBuf {
    dir().join("portfwd.pid")
}

fn api() -> PathBuf {
    dir().join("api.sock")
}

/// The address published ports are forwarded to inside the namespace.
pub fn guest() -> IpAddr {
    IpAddr::V4(portfwd::GUEST_IP.parse().unwrap_or(std::net::Ipv4Addr::new(10, 0, 2, 100)))
}

/// Whether `path` is a mounted network namespace.
fn mounted(path: &Path) -> bool {
    super::netns_mounted(path)
}

/// Whether the namespace is up (mounted).
pub fn is_up() -> bool {
    mounted(&netns_path())
}

fn lock() -> anyhow::Result<Flock<File>> {
    let d = dir();
    match std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&d) {
        Ok(()) => {}
        Err(e) => return Err(e).with_context(|| format!("rootless netns: creating {}", d.display())),
    }
    let path = super::run_base().join("rootless-netns.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
}

/// The port mappings netd gets inside the namespace: the host address is dropped (traffic
/// arrives for 10.0.2.100 from portfwd).
pub fn netd_ports(ports: &[PortMapping]) -> Vec<PortMapping> {
    ports.iter().map(|p| PortMapping { host_ip: String::new(), ..p.clone() }).collect()
}

/// Makes sure the namespace and its forwarder are up (rebuilding what is gone); returns
/// the namespace's path.
pub fn ensure(engine: &Engine) -> anyhow::Result<PathBuf> {
    let _l = lock()?;
    let ns = netns_path();
    if mounted(&ns) {
        if crate::rootless::read_pid_file(&pidfile()).is_some() {
            return Ok(ns);
        }
        tracing::info!("rootless netns: the port forwarder is gone, restarting it");
        start_forwarder(engine, &ns)?;
        republish(engine);
        return Ok(ns);
    }
    tracing::info!("rootless netns: creating it");
    destroy_locked();
    super::create_netns(&ns, true).context("rootless netns")?;
    if let Err(e) = start_forwarder(engine, &ns) {
        super::remove_netns(&ns);
        return Err(e);
    }
    Ok(ns)
}

fn start_forwarder(engine: &Engine, ns: &Path) -> anyhow::Result<()> {
    let bin = portfwd::binary(&engine.root)?;
    portfwd::start(&bin, ns, &api(), &pidfile(), false).context("rootless netns: starting the port forwarder")?;
    Ok(())
}

/// Publishes the ports of every running container and up pod on bridge networks again
/// (after the forwarder was restarted).
fn republish(engine: &Engine) {
    let mut sets: Vec<Vec<PortMapping>> = Vec::new();
    if let Ok(cs) = engine.db.containers() {
        for c in cs {
            if c.state == State::Running && c.config.pod.is_none() && matches!(c.config.net, NetMode::Bridge(_)) {
                sets.push(c.config.ports.clone());
            }
        }
    }
    if let Ok(ps) = engine.db.pods() {
        for p in ps {
            if super::pod::is_up(&p) && matches!(p.config.net, NetMode::Bridge(_)) {
                sets.push(p.config.ports.clone());
            }
        }
    }
    for ports in sets.iter().filter(|p| !p.is_empty()) {
        if let Err(e) = portfwd::add_ports(&api(), ports, Some(guest())) {
            tracing::warn!(error = %format!("{e:#}"), "rootless netns: republishing ports failed");
        }
    }
}

/// Publishes ports of a container or pod that netd just set up.
pub fn publish(ports: &[PortMapping]) -> anyhow::Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    portfwd::add_ports(&api(), ports, Some(guest()))
}

/// Withdraws ports of a container or pod (before its netd teardown).
pub fn unpublish(ports: &[PortMapping]) {
    if ports.is_empty() || !is_up() {
        return;
    }
    if let Err(e) = portfwd::remove_ports(&api(), ports) {
        tracing::warn!(error = %format!("{e:#}"), "rootless netns: removing published ports failed");
    }
}

/// A netd command that runs inside the namespace (which must be up); the returned file
/// must live until the command is spawned.
pub fn netd_command(bin: &Path) -> anyhow::Result<(Command, File)> {
    let ns = netns_path();
    let f = File::open(&ns).with_context(|| format!("rootless netns: opening {}", ns.display()))?;
    let fd = f.as_raw_fd();
    let mut cmd = Command::new(bin);
    // SAFETY: setns(2) is async-signal-safe; fd stays open until the spawn (the caller
    // holds the file).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.args(["--rootless", "true", "--config"]).arg(netd_config());
    Ok((cmd, f))
}

/// Removes the namespace when no container (running or being started) and no up pod other
/// than `leaving` uses a bridge network.
pub fn teardown_if_unused(engine: &Engine, leaving: &str) {
    if !is_up() {
        return;
    }
    let Ok(_l) = lock() else { return };
    // In use: a container on a bridge network whose namespace exists (running, or being
    // started: its namespace is made before netd sets it up, under this lock).
    let in_use = engine.db.containers().map(|cs| {
        cs.iter().any(|c| {
            c.id != leaving
                && c.config.pod.is_none()
                && matches!(&c.config.net, NetMode::Bridge(n) if !n.is_empty())
                && (c.state == State::Running || super::netns_mounted(&Engine::netns_path(&c.id)))
        })
    });
    let pods_in_use = engine.db.pods().map(|ps| {
        ps.iter().any(|p| p.id != leaving && super::pod::is_up(p) && matches!(&p.config.net, NetMode::Bridge(_)))
    });
    if in_use.unwrap_or(true) || pods_in_use.unwrap_or(true) {
        return;
    }
    tracing::info!("rootless netns: no longer used, removing it");
    destroy_locked();
}

/// Removes the namespace and everything in it, whoever uses it (`system reset`).
pub fn destroy() {
    if let Ok(_l) = lock() {
        destroy_locked();
    }
}

fn destroy_locked() {
    portfwd::stop(&pidfile(), &api());
    // dnsd, if netd left it running.
    let dns_pid = netd_config().join("aardvark-dns").join(rpod_wire::dnsconfig::PID_FILE);
    if let Some(pid) = std::fs::read_to_string(&dns_pid).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if matches!(comm.trim(), "dnsd" | "aardvark-dns") {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
    }
    super::remove_netns(&netns_path());
    let _ = std::fs::remove_dir_all(netd_config());
}
