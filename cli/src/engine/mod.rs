//! The container engine: state (SQLite plus per-container folders), networks (netd run as a
//! process, IPAM here), network namespaces, the OCI runtime and the per-container monitor.
//!
//! Layout under the store root:
//! - `rpod.db`: containers and IP leases; `rpod.lock`: held by commands while they change
//!   state;
//! - `containers-run/<id>/`: the bundle (`config.json`), `ctr.log`, `exit`, `hosts`,
//!   `resolv.conf`, `hostname`, `runc.log`;
//! - `networks/<name>.json`: podman-format network files; `netd-run/`: netd's `--config`.
//!
//! Network namespaces are bind mounts under `/run/rpod/netns/<id>`, and the runtime's state
//! is under `/run/rpod/runc`: both vanish on reboot, like the processes they describe.

pub mod db;
pub mod lifecycle;
pub mod network;
pub mod pod;
pub mod portfwd;
pub mod rootless_net;
pub mod spec;
pub mod tty;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use rpod_storage::Store;
use rpod_wire::{NetworkOptions, StatusBlock};

use crate::Cli;

/// The run directory of a rootful engine.
pub const ROOTFUL_RUN_DIR: &str = "/run/rpod";

/// The run directory: `/run/rpod` for root, the user's private one in rootless mode
/// (see [`crate::rootless`]). It holds things that vanish on reboot, like the processes they
/// describe: network namespaces, the runtime's state, console and attach sockets.
pub fn run_base() -> PathBuf {
    match crate::rootless::mode() {
        Some(r) => r.run_dir.clone(),
        None => PathBuf::from(ROOTFUL_RUN_DIR),
    }
}

/// Where network namespaces are mounted.
pub fn netns_dir() -> PathBuf {
    run_base().join("netns")
}

/// The OCI runtime's state directory (`runc --root`).
pub fn runtime_root() -> PathBuf {
    run_base().join("runc")
}

/// The mount method: rootful, the kernel; rootless, `mount_program` from `rpod.conf`
/// (`""` = the kernel only, a path = always that program), else the kernel with
/// `fuse-overlay` (beside rpod, or on PATH; else `fuse-overlayfs`) as fallback.
pub fn mount_method(root: &Path) -> anyhow::Result<rpod_storage::MountMethod> {
    use rpod_storage::MountMethod;
    if let Some(p) = configured(root, "mount_program")? {
        return Ok(if p.is_empty() { MountMethod::Kernel } else { MountMethod::Program(PathBuf::from(p)) });
    }
    if !crate::rootless::is_rootless() {
        return Ok(MountMethod::Kernel);
    }
    let beside = std::env::current_exe().ok().map(|e| e.with_file_name("fuse-overlay")).filter(|p| p.is_file());
    let on_path = |n: &str| {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(n)).find(|p| p.is_file()))
    };
    match beside.or_else(|| on_path("fuse-overlay")).or_else(|| on_path("fuse-overlayfs")) {
        Some(p) => Ok(MountMethod::Auto(p)),
        None => Ok(MountMethod::Kernel),
    }
}

/// A 64-hex random ID.
pub fn random_id() -> String {
    let v: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    hex::encode(v)
}

/// The engine: the store, the database and the paths.
#[derive(Debug)]
pub struct Engine {
    /// The store (its root is canonical).
    pub store: Store,
    /// The state database.
    pub db: db::Db,
    /// The store root.
    pub root: PathBuf,
    /// The OCI runtime binary.
    pub runtime: String,
}

impl Engine {
    /// Opens the store and the database.
    pub fn open(cli: &Cli) -> anyhow::Result<Engine> {
        let store = cli.store()?;
        let method = mount_method(store.root())?;
        let store = store.with_mount_method(method);
        let root = store.root().to_path_buf();
        let db = db::Db::open(&root.join("rpod.db"))?;
        let runtime = match &cli.runtime {
            Some(r) => r.clone(),
            None => configured_runtime(&root)?.unwrap_or_else(|| "runc".to_owned()),
        };
        if runtime.is_empty() {
            anyhow::bail!("the OCI runtime name is empty: invalid argument");
        }
        Ok(Engine { store, db, root, runtime })
    }

    /// Mounts a container's root filesystem (with the store's mount method); returns its
    /// path.
    pub fn mount_rootfs(&self, id: &str) -> anyhow::Result<PathBuf> {
        Ok(self.store.mount(id)?)
    }

    /// The engine lock (exclusive), held while state changes.
    pub fn lock(&self) -> anyhow::Result<Flock<File>> {
        let path = self.root.join("rpod.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
    }

    /// A container's folder.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers-run").join(id)
    }

    /// The socket `rpod attach` writes a detached `-i` container's input to.
    pub fn attach_socket(id: &str) -> PathBuf {
        run_base().join("attach").join(format!("{}.sock", &id[..id.len().min(16)]))
    }

    /// A container's network namespace path.
    pub fn netns_path(id: &str) -> PathBuf {
        netns_dir().join(id)
    }

    /// netd's `--config` directory.
    pub fn netd_config(&self) -> PathBuf {
        self.root.join("netd-run")
    }

    /// The netd binary: `$RPOD_NETD`, else `netd` next to this executable.
    pub fn netd_bin() -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("RPOD_NETD") {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe().context("finding the rpod executable")?;
        let p = exe.with_file_name("netd");
        if !p.is_file() {
            anyhow::bail!("netd not found at {} (set RPOD_NETD)", p.display());
        }
        Ok(p)
    }

    /// A netd command: in rootless mode it runs inside the rootless netns (which must be
    /// up; the returned file must live until the spawn).
    fn netd_command(&self) -> anyhow::Result<(Command, Option<File>)> {
        let bin = Self::netd_bin()?;
        if crate::rootless::is_rootless() {
            let (cmd, f) = rootless_net::netd_command(&bin)?;
            return Ok((cmd, Some(f)));
        }
        let mut cmd = Command::new(&bin);
        cmd.arg("--config").arg(self.netd_config());
        Ok((cmd, None))
    }

    /// Runs `netd setup|teardown NETNS` with the options on stdin; returns its stdout.
    /// Rootless: in the rootless netns (set up first when needed), with the published ports
    /// carried there by its port forwarder.
    pub fn netd(&self, command: &str, netns: &Path, opts: &NetworkOptions) -> anyhow::Result<String> {
        if !crate::rootless::is_rootless() {
            return self.netd_run(command, netns, opts);
        }
        let ports = opts.port_mappings.clone().unwrap_or_default();
        let mut inner = opts.clone();
        inner.port_mappings = opts.port_mappings.as_ref().map(|p| rootless_net::netd_ports(p));
        if command == "setup" {
            rootless_net::ensure(self)?;
            let out = self.netd_run(command, netns, &inner)?;
            if let Err(e) = rootless_net::publish(&ports) {
                let _ = self.netd_run("teardown", netns, &inner);
                return Err(e);
            }
            return Ok(out);
        }
        if !rootless_net::is_up() {
            // Gone with everything in it.
            return Ok("{}".to_owned());
        }
        rootless_net::unpublish(&ports);
        self.netd_run(command, netns, &inner)
    }

    fn netd_run(&self, command: &str, netns: &Path, opts: &NetworkOptions) -> anyhow::Result<String> {
        let bin = Self::netd_bin()?;
        let input = serde_json::to_vec(opts)?;
        let (mut cmd, _ns) = self.netd_command()?;
        let mut child = cmd
            .arg(command)
            .arg(netns)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", bin.display()))?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(&input).context("writing to netd")?;
        }
        let out = child.wait_with_output().context("waiting for netd")?;
        if !out.status.success() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let msg = serde_json::from_str::<serde_json::Value>(&stdout)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| {
                    let e = String::from_utf8_lossy(&out.stderr);
                    e.lines().last().unwrap_or("").to_owned()
                });
            anyhow::bail!("netavark (netd {command}): {msg}");
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `netd firewall-reload`: re-applies every running container's rules.
    pub fn netd_firewall_reload(&self) -> anyhow::Result<()> {
        let bin = Self::netd_bin()?;
        if crate::rootless::is_rootless() && !rootless_net::is_up() {
            // No bridge network in use: no rules to re-apply.
            return Ok(());
        }
        let (mut cmd, _ns) = self.netd_command()?;
        let out = cmd
            .arg("firewall-reload")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() {
            let e = String::from_utf8_lossy(&out.stderr);
            anyhow::bail!("netavark (netd firewall-reload): {}", e.lines().last().unwrap_or("").trim());
        }
        Ok(())
    }

    /// `netd setup`, parsed.
    pub fn netd_setup(
        &self,
        netns: &Path,
        opts: &NetworkOptions,
    ) -> anyhow::Result<std::collections::BTreeMap<String, StatusBlock>> {
        let out = self.netd("setup", netns, opts)?;
        serde_json::from_str(&out).with_context(|| format!("parsing netd's status {out:?}"))
    }

    /// A runtime command (`runc --root ... ARGS`) with the engine's runtime.
    pub fn runtime_cmd(&self) -> Command {
        runtime_cmd(&self.runtime)
    }

    /// The runtime a container was created with (the engine's for older records).
    pub fn runtime_of<'a>(&'a self, c: &'a db::Container) -> &'a str {
        c.config.runtime.as_deref().unwrap_or(&self.runtime)
    }

    /// A runtime command for a container (with the runtime it was created with).
    pub fn runtime_cmd_for(&self, c: &db::Container) -> Command {
        runtime_cmd(self.runtime_of(c))
    }
}

/// The runtime named by the configuration file: `<root>/rpod.conf`, else
/// `/etc/rpod/rpod.conf` (`runtime = "runc"|"crun"|PATH`; `#` comments and `[section]`
/// headers are ignored, so podman's `[engine] runtime = ...` reads too).
pub fn configured_runtime(root: &Path) -> anyhow::Result<Option<String>> {
    configured(root, "runtime")
}

/// The configuration files, most specific first: `<root>/rpod.conf`, for a rootless user
/// `$XDG_CONFIG_HOME/rpod/rpod.conf` (or `~/.config/rpod/rpod.conf`), then
/// `/etc/rpod/rpod.conf`. The first that exists is the one read.
pub fn config_files(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![root.join("rpod.conf")];
    if crate::rootless::is_rootless() {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(b) = base {
            v.push(b.join("rpod/rpod.conf"));
        }
    }
    v.push(PathBuf::from("/etc/rpod/rpod.conf"));
    v
}

/// The value of `key` in the configuration file (see [`config_files`]).
pub fn configured(root: &Path, key: &str) -> anyhow::Result<Option<String>> {
    for path in config_files(root) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        return parse_conf(&text, key).with_context(|| format!("parsing {}", path.display()));
    }
    Ok(None)
}

/// The value of `key` in a `key = "value"` file (the last one wins).
fn parse_conf(text: &str, key: &str) -> anyhow::Result<Option<String>> {
    let mut found = None;
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with('[') {
            continue;
        }
        let (k, v) = l.split_once('=').ok_or_else(|| anyhow::anyhow!("line {}: expected key = \"value\"", n + 1))?;
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let v = match v.strip_prefix('"').and_then(|x| x.split_once('"')) {
            Some((inner, rest)) if rest.trim().is_empty() || rest.trim().starts_with('#') => inner,
            Some(_) => anyhow::bail!("line {}: unexpected text after the value", n + 1),
            None if v.starts_with('"') => anyhow::bail!("line {}: unterminated string", n + 1),
            None => v.split('#').next().unwrap_or("").trim(),
        };
        found = Some(v.to_owned());
    }
    Ok(found)
}

/// Whether cgroups are hybrid: v1 controllers with the v2 hierarchy on
/// `/sys/fs/cgroup/unified` (crun refuses to run there).
pub fn hybrid_cgroups() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut root_is_v2 = false;
    let mut unified = false;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        match (f[1], f[2]) {
            ("/sys/fs/cgroup", t) => root_is_v2 = t == "cgroup2",
            ("/sys/fs/cgroup/unified", "cgroup2") => unified = true,
            _ => {}
        }
    }
    unified && !root_is_v2
}

/// A command running `runtime --root <run dir>/runc`. crun on hybrid cgroups runs in a
/// private mount namespace where a plain cgroup2 filesystem is mounted on `/sys/fs/cgroup`.
pub fn runtime_cmd(runtime: &str) -> Command {
    let is_crun = Path::new(runtime).file_name().is_some_and(|n| n == "crun");
    let mut c = if is_crun && hybrid_cgroups() {
        let mut c = Command::new("unshare");
        c.args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t cgroup2 none /sys/fs/cgroup && exec \"$0\" \"$@\"",
            runtime,
        ]);
        c
    } else {
        Command::new(runtime)
    };
    c.arg("--root").arg(runtime_root());
    c
}

/// Creates a network namespace mounted at `path` (with `lo` up when `lo_up`).
pub fn create_netns(path: &Path, lo_up: bool) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_netns(path);
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let target = path.to_path_buf();
    let res = std::thread::spawn(move || -> anyhow::Result<()> {
        // Only this thread moves to the new namespace; it ends right after.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting the network namespace on {}", target.display()))?;
        if lo_up {
            // A socket made by this thread belongs to its new network namespace.
            set_lo_up().context("setting lo up")?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?;
    if res.is_err() {
        remove_netns(path);
    }
    res
}

/// Sets `lo` up in the calling thread's network namespace (SIOCSIFFLAGS).
fn set_lo_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the named interface into ifr.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the flags member of the union was just filled in by the kernel.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags from ifr.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `path` is a mounted network namespace (an nsfs mount), not a plain file left
/// behind when the mount namespace that held the mount went away.
pub fn netns_mounted(path: &Path) -> bool {
    const NSFS_MAGIC: libc::__fsword_t = 0x6e73_6673;
    nix::sys::statfs::statfs(path).map(|s| s.filesystem_type() == nix::sys::statfs::FsType(NSFS_MAGIC)).unwrap_or(false)
}

/// Unmounts and removes a network namespace file (no error if absent).
pub fn remove_netns(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// A PID with its start time (clock ticks since boot; 0 when it is gone).
pub fn with_start(pid: i64) -> (i64, i64) {
    let t = i32::try_from(pid).ok().filter(|p| *p > 0).and_then(crate::rootless::start_time);
    (pid, t.and_then(|t| i64::try_from(t).ok()).unwrap_or(0))
}

/// Whether `pid` is alive and, when its start time was recorded (`start` non-zero), still
/// the process that started then, not another one that reused the PID (after a reboot).
pub fn alive_as(pid: i64, start: i64) -> bool {
    if start == 0 {
        return alive(pid);
    }
    alive(pid) && with_start(pid).1 == start
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i64) -> bool {
    if pid <= 0 || i32::try_from(pid).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf() {
        let p = |t: &str| parse_conf(t, "runtime").map_err(|e| e.to_string());
        assert_eq!(p("runtime = \"crun\"\n"), Ok(Some("crun".to_owned())));
        assert_eq!(p("# c\n[engine]\nruntime=\"/usr/bin/runc\" # x\n"), Ok(Some("/usr/bin/runc".to_owned())));
        assert_eq!(p("runtime = crun\n"), Ok(Some("crun".to_owned())));
        assert_eq!(p("other = \"x\"\n"), Ok(None));
        assert!(p("runtime = \"crun\n").is_err());
        assert!(p("garbage\n").is_err());
    }
}
