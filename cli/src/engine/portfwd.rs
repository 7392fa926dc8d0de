//! portfwd (or slirp4netns): a user-mode network stack that connects a network namespace to
//! the host without privileges, driven only through slirp4netns's contract (the process
//! boundary is the interface; see `shared/reference/slirp4netns.md`).
//!
//! How this works: `start` runs `PROG --configure --mtu=65520 --disable-host-loopback
//! --api-socket SOCK --ready-fd R [--exit-fd E] --netns-type=path NETNS tap0` in a session of
//! its own. The program creates `tap0` in the namespace (10.0.2.100/24, gateway 10.0.2.2, DNS
//! 10.0.2.3), writes one byte to fd R once it is ready and runs until fd E reports an event
//! (its write end is held by whoever supervises the container: when that process exits, for
//! any reason, the program exits too) or until SIGTERM. Its PID and start time go to a pid
//! file, so cleanup can stop exactly that process. Published ports are added one port and
//! protocol at a time with `add_hostfwd` requests on the API socket (one JSON request a
//! connection, as slirp4netns serves them) and removed with `list_hostfwd`/`remove_hostfwd`.
//!
//! The program is `network_cmd_path` from `rpod.conf` (podman's key), else `portfwd` beside
//! the rpod executable, else `portfwd` on `PATH`, else `slirp4netns` on `PATH`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rpod_wire::PortMapping;
use serde_json::{json, Value};

use crate::rootless;

/// The address `--configure` gives the namespace's `tap0`.
pub const GUEST_IP: &str = "10.0.2.100";
/// The gateway (the host, as seen from the namespace).
pub const GATEWAY_IP: &str = "10.0.2.2";
/// The DNS forwarder.
pub const DNS_IP: &str = "10.0.2.3";

/// Finds the program (see the module comment).
pub fn binary(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = super::configured(root, "network_cmd_path")? {
        if !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        let p = exe.with_file_name("portfwd");
        if p.is_file() {
            return Ok(p);
        }
    }
    for name in ["portfwd", "slirp4netns"] {
        if let Some(p) = which(name) {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "could not find portfwd (or slirp4netns), the network namespace can't be configured: install it beside rpod, on PATH, or name it with network_cmd_path in rpod.conf"
    )
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// A started program.
#[derive(Debug)]
pub struct Started {
    /// Its PID.
    pub pid: i32,
    /// The write end of its exit pipe (the program exits when every copy is closed).
    pub exit: Option<OwnedFd>,
}

/// Moves `fd` to a number of at least 10 (close-on-exec; the child clears that flag). The
/// original is closed, so no second copy outlives this.
fn high(fd: OwnedFd) -> anyhow::Result<OwnedFd> {
    let n = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)).context("dup")?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) })
}

/// Starts the program on `netns` with its API socket at `api`; returns once it is ready.
/// With `exit_fd`, it also exits when the returned [`Started::exit`] (and its copies) close.
pub fn start(bin: &Path, netns: &Path, api: &Path, pidfile: &Path, exit_fd: bool) -> anyhow::Result<Started> {
    if api.as_os_str().len() >= 108 {
        anyhow::bail!("the API socket path {} is too long (108 bytes or more)", api.display());
    }
    for p in [api, pidfile] {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    let _ = std::fs::remove_file(api);
    let log_path = pidfile.with_extension("log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    // Every end is close-on-exec: the child gets exactly the two descriptors whose flag its
    // pre_exec clears (its ready writer and exit reader), never the exit pipe's writer (it
    // would hold itself alive) nor a second ready writer (the reader would never see EOF).
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (ready_r, ready_w) = nix::unistd::pipe2(cloexec).context("pipe")?;
    let ready_w = high(ready_w)?;
    let (exit_r, exit_w) = if exit_fd {
        let (r, w) = nix::unistd::pipe2(cloexec).context("pipe")?;
        (Some(high(r)?), Some(w))
    } else {
        (None, None)
    };
    let (rw, er): (RawFd, RawFd) = (ready_w.as_raw_fd(), exit_r.as_ref().map_or(-1, |f| f.as_raw_fd()));
    let mut cmd = Command::new(bin);
    cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback", "--api-socket"]).arg(api);
    // The descriptors keep their (high) numbers in the child: no dup2 onto numbers the
    // spawn machinery may be using.
    cmd.arg("--ready-fd").arg(rw.to_string());
    if er >= 0 {
        cmd.arg("--exit-fd").arg(er.to_string());
    }
    cmd.arg("--netns-type=path").arg(netns).arg("tap0");
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: only async-signal-safe calls (fcntl, setsid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [rw, er] {
                if fd >= 0 && libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // A session of its own: signals meant for the caller's terminal do not reach it.
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("running {}", bin.display()))?;
    drop(cmd);
    drop(ready_w);
    drop(exit_r);
    let pid = child.id() as i32;
    // Not waited for here: it runs as long as the namespace needs it.
    std::mem::forget(child);
    let ok = wait_ready(&ready_r, pid, Duration::from_secs(20));
    if let Err(e) = ok {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_file(&log_path);
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(e).with_context(|| format!("{} failed: {:?}", bin.display(), tail.join("; ")));
    }
    rootless::write_pid_file(pidfile, pid)?;
    Ok(Started { pid, exit: exit_w })
}

fn wait_ready(ready: &OwnedFd, pid: i32, timeout: Duration) -> anyhow::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!("not ready after {timeout:?}");
        }
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(ready), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(100) as i32).unwrap_or(PollTimeout::NONE);
        match poll(&mut fds, ms) {
            Ok(0) => {
                if rootless::start_time(pid).is_none() {
                    anyhow::bail!("it exited before it was ready");
                }
            }
            Ok(_) => {
                let mut b = [0u8; 16];
                let n = nix::unistd::read(ready, &mut b).context("reading the ready pipe")?;
                if n == 0 {
                    anyhow::bail!("it exited before it was ready");
                }
                return Ok(());
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
    }
}

/// One API request; the reply's `return` (or `entries` for `list_hostfwd`), or the
/// program's error.
pub fn api(sock: &Path, req: &Value) -> anyhow::Result<Value> {
    let mut s = UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut body = serde_json::to_vec(req)?;
    body.push(b'\n');
    s.write_all(&body)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let v: Value = serde_json::from_slice(&out)
        .with_context(|| format!("bad reply from the port forwarder: {:?}", String::from_utf8_lossy(&out)))?;
    if let Some(e) = v.get("error") {
        let desc = e.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
        anyhow::bail!("{desc}");
    }
    Ok(v.get("return").cloned().unwrap_or(v))
}

/// Every (protocol, host address, host port, container port) a set of mappings publishes.
pub fn expand(ports: &[PortMapping]) -> Vec<(String, String, u16, u16)> {
    let mut out = Vec::new();
    for p in ports {
        for proto in p.protocol.split(',').filter(|x| !x.is_empty()) {
            for i in 0..p.range.max(1) {
                let host = if p.host_ip.is_empty() { "0.0.0.0".to_owned() } else { p.host_ip.clone() };
                out.push((proto.to_owned(), host, p.host_port + i, p.container_port + i));
            }
        }
    }
    out
}

/// Publishes ports through the program: to the container port on the namespace's own
/// address (`guest = None`), or to the same port on `guest` (the rootless netns, where netd's
/// rules take it on to the container). Nothing stays added on error.
pub fn add_ports(sock: &Path, ports: &[PortMapping], guest: Option<IpAddr>) -> anyhow::Result<()> {
    let mut added = Vec::new();
    for (proto, host, hp, cp) in expand(ports) {
        if proto == "sctp" {
            remove_ids(sock, &added);
            anyhow::bail!("port {hp}/sctp: sctp cannot be published in rootless mode");
        }
        if host.parse::<std::net::Ipv4Addr>().is_err() {
            remove_ids(sock, &added);
            anyhow::bail!("port {hp}/{proto}: only IPv4 host addresses can be published in rootless mode ({host})");
        }
        let (gaddr, gport) = match guest {
            Some(g) => (g.to_string(), hp),
            None => (String::new(), cp),
        };
        let req = json!({"execute": "add_hostfwd", "arguments": {
            "proto": proto, "host_addr": host, "host_port": hp, "guest_addr": gaddr, "guest_port": gport}});
        match api(sock, &req) {
            Ok(v) => added.push(v.get("id").and_then(Value::as_u64).unwrap_or(0)),
            Err(e) => {
                remove_ids(sock, &added);
                return Err(e).with_context(|| format!("publishing port {host}:{hp}/{proto}"));
            }
        }
    }
    Ok(())
}

fn remove_ids(sock: &Path, ids: &[u64]) {
    for id in ids {
        let _ = api(sock, &json!({"execute": "remove_hostfwd", "arguments": {"id": id}}));
    }
}

/// Removes the forwards of these mappings, matched by protocol, host address and host port
/// (a shared forwarder may hold another container's forward of the same port on another
/// address).
pub fn remove_ports(sock: &Path, ports: &[PortMapping]) -> anyhow::Result<()> {
    let want: BTreeSet<(String, String, u16)> =
        expand(ports).into_iter().map(|(p, host, hp, _)| (p, norm_addr(&host), hp)).collect();
    if want.is_empty() {
        return Ok(());
    }
    let list = api(sock, &json!({"execute": "list_hostfwd"}))?;
    let mut ids = Vec::new();
    for e in list.get("entries").and_then(Value::as_array).cloned().unwrap_or_default() {
        let proto = e.get("proto").and_then(Value::as_str).unwrap_or_default().to_owned();
        let addr = norm_addr(e.get("host_addr").and_then(Value::as_str).unwrap_or_default());
        let port = e.get("host_port").and_then(Value::as_u64).unwrap_or(0);
        if want.contains(&(proto, addr, port as u16)) {
            if let Some(id) = e.get("id").and_then(Value::as_u64) {
                ids.push(id);
            }
        }
    }
    remove_ids(sock, &ids);
    Ok(())
}

/// A host address as the forwarder lists it: empty means every address.
fn norm_addr(a: &str) -> String {
    match a.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) if a.is_empty() => "0.0.0.0".to_owned(),
        Err(_) => a.to_owned(),
    }
}

/// Stops the program of a pid file and removes its files. SIGKILL: it keeps no state, and
/// its API socket and files are removed here.
pub fn stop(pidfile: &Path, api: &Path) {
    rootless::kill_pid_file(pidfile, Duration::ZERO);
    let _ = std::fs::remove_file(api);
    let _ = std::fs::remove_file(pidfile.with_extension("log"));
}

/// Refuses host ports below the unprivileged port start (rootless mode).
pub fn check_unprivileged(ports: &[PortMapping]) -> anyhow::Result<()> {
    let start = rootless::unprivileged_port_start();
    for (_, host, hp, _) in expand(ports) {
        if hp < start {
            anyhow::bail!(
                "rootlessport cannot expose privileged port {hp}, you can add 'net.ipv4.ip_unprivileged_port_start={hp}' to /etc/sysctl.conf (currently {start}), or choose a larger port number (>= {start}): listen tcp {host}:{hp}: bind: permission denied"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_ranges_and_protocols() {
        let p = PortMapping {
            host_ip: String::new(),
            container_port: 80,
            host_port: 8080,
            range: 2,
            protocol: "tcp,udp".into(),
        };
        let e = expand(&[p]);
        assert_eq!(e.len(), 4);
        assert_eq!(e[0], ("tcp".to_owned(), "0.0.0.0".to_owned(), 8080, 80));
        assert_eq!(e[3], ("udp".to_owned(), "0.0.0.0".to_owned(), 8081, 81));
    }
}
