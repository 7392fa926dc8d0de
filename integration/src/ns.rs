//! Named network namespaces (`/run/netns/NAME`, made by `ip netns add`) and commands that
//! run inside one.
//!
//! A command enters its namespace with `setns(2)` between fork and exec (see [`command`]):
//! no `ip netns exec`, so no extra process and no private mount namespace. The one
//! exception is netd itself, which the harness runs through `ip netns exec` so that its view
//! of `/sys/class/net` matches the namespace, as it would on a real host.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::cmd::{self, Out};

/// `ip netns add` makes `/run/netns` a shared mount point the first time it runs; two
/// threads doing that first step at once can stack mounts. One lock for the whole process.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A named network namespace. Cloning the handle does not clone the namespace: the
/// [`crate::Env`] that made it deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A handle on an existing `/run/netns/NAME`.
    pub fn named(name: &str) -> Self {
        Netns { name: name.to_string() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, the path netd gets.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs in this namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command(self, program)
    }

    /// Runs `program args` here (10 s deadline) and returns what it did.
    pub fn run(&self, program: &str, args: &[&str]) -> Out {
        let mut c = self.command(program);
        c.args(args);
        cmd::run(c, None, Duration::from_secs(10))
    }

    /// `ip -n NAME args` (10 s deadline).
    pub fn ip(&self, args: &[&str]) -> Out {
        let mut c = Command::new("ip");
        c.arg("-n").arg(&self.name).args(args);
        cmd::run(c, None, Duration::from_secs(10))
    }

    /// `ip -n NAME args`, panicking on failure.
    pub fn ip_ok(&self, args: &[&str]) -> String {
        let o = self.ip(args);
        o.expect_ok(&format!("ip in netns {}", self.name)).to_string()
    }
}

/// A [`Command`] that enters `ns` (network namespace only) before exec.
pub fn command(ns: &Netns, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    let path = ns.path();
    // Opened now, so that the child only has to call setns; the file is close-on-exec and
    // lives as long as the Command (it is owned by the closure).
    let file = std::fs::File::open(&path);
    // SAFETY: the closure runs in the child between fork and exec; it only calls setns(2),
    // which is async-signal-safe, and builds an io::Error from errno (no allocation for
    // an OS error).
    unsafe {
        c.pre_exec(move || {
            use std::os::fd::AsRawFd;
            let f = file.as_ref().map_err(|e| std::io::Error::from(e.kind()))?;
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// `ip netns add NAME`. Panics on failure (a harness problem, not a test result).
pub(crate) fn add(name: &str) -> Netns {
    let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Command::new("ip");
    c.args(["netns", "add", name]);
    cmd::run(c, None, Duration::from_secs(10)).expect_ok("create a network namespace");
    Netns { name: name.to_string() }
}

/// `ip netns del NAME`; failures are reported on stderr, not raised (this runs in Drop).
pub(crate) fn del(ns: &Netns) {
    if !ns.path().exists() {
        return;
    }
    let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Command::new("ip");
    c.args(["netns", "del", &ns.name]);
    let o = cmd::run(c, None, Duration::from_secs(10));
    if !o.ok() {
        eprintln!("[harness] could not delete netns {}:\n{o}", ns.name);
    }
}
