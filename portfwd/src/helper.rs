//! The namespace helper: a child process that lives inside the target namespaces.
//!
//! How this works: at start-up, while portfwd is still single-threaded, it forks. The child
//! joins the user namespace (when one is given or the target PID's differs from ours) and the
//! network namespace, creates and configures the TAP device, and hands the TAP descriptor back
//! over a `SOCK_SEQPACKET` pair. It then stays as a *socket factory*: every request byte asks
//! for a fresh non-blocking TCP or UDP socket of one family, created inside the namespace and
//! returned with `SCM_RIGHTS`. A socket keeps the namespace it was created in, so the parent
//! (which stays in the host namespaces, where its outbound sockets must live) can connect such
//! a socket to the guest for the port-forwarding fast path. The child dies with the parent
//! (`PR_SET_PDEATHSIG`) or when the pair is closed.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::cli::{Config, Target};
use crate::{sys, Error};

/// Request bytes for the socket factory.
pub const REQ_TCP4: u8 = b't';
pub const REQ_TCP6: u8 = b'T';
pub const REQ_UDP4: u8 = b'u';
pub const REQ_UDP6: u8 = b'U';

/// Sockets fetched per round trip to the helper (TCP; UDP sockets are fetched one by one).
const POOL_BATCH: usize = 16;

/// The parent's handle on the helper child.
#[derive(Debug)]
pub struct Helper {
    sock: OwnedFd,
    pub pid: i32,
    /// ready TCP sockets (IPv4, IPv6), fetched in batches to save round trips
    pool: [Vec<OwnedFd>; 2],
}

impl Helper {
    fn fetch(&self, req: u8, n: usize, into: &mut Vec<OwnedFd>) -> io::Result<()> {
        let reqs = [req; POOL_BATCH];
        sys::send_fd(self.sock.as_raw_fd(), &reqs[..n.min(POOL_BATCH)], None)?;
        let mut err = None;
        for _ in 0..n.min(POOL_BATCH) {
            let mut b = [0u8; 8];
            match sys::recv_fd(self.sock.as_raw_fd(), &mut b)? {
                Some((_, Some(fd))) => into.push(fd),
                Some((k, None)) if k >= 5 => {
                    err = Some(io::Error::from_raw_os_error(i32::from_ne_bytes([b[1], b[2], b[3], b[4]])))
                }
                _ => return Err(io::Error::new(io::ErrorKind::BrokenPipe, "namespace helper is gone")),
            }
        }
        match err {
            Some(e) if into.is_empty() => Err(e),
            _ => Ok(()),
        }
    }

    /// A fresh non-blocking socket inside the namespace.
    pub fn socket(&mut self, tcp: bool, addr: &IpAddr) -> io::Result<OwnedFd> {
        let v4 = addr.is_ipv4();
        if !tcp {
            let mut v = Vec::with_capacity(1);
            self.fetch(if v4 { REQ_UDP4 } else { REQ_UDP6 }, 1, &mut v)?;
            return v.pop().ok_or_else(|| io::Error::other("no socket"));
        }
        let i = usize::from(!v4);
        if self.pool[i].is_empty() {
            let mut v = std::mem::take(&mut self.pool[i]);
            let r = self.fetch(if v4 { REQ_TCP4 } else { REQ_TCP6 }, POOL_BATCH, &mut v);
            self.pool[i] = v;
            r?;
        }
        self.pool[i].pop().ok_or_else(|| io::Error::other("no socket"))
    }

    /// The helper's control descriptor (readable on EOF when the child dies).
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // SAFETY: kill/waitpid on our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Forks the helper. Must be called while the process is single-threaded.
/// Returns the TAP descriptor (non-blocking) and the helper.
pub fn start(cfg: &Config) -> Result<(OwnedFd, Helper), Error> {
    let mut sv = [0 as RawFd; 2];
    // SAFETY: sv has room for two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) } < 0 {
        return Err(Error::Setup(format!("socketpair: {}", io::Error::last_os_error())));
    }
    // SAFETY: both descriptors are fresh.
    let (parent, child) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    // SAFETY: fork while single-threaded (documented precondition); the child only runs
    // child_main and exits without returning.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Setup(format!("fork: {}", io::Error::last_os_error())));
    }
    if pid == 0 {
        drop(parent);
        let code = child_main(cfg, child);
        // SAFETY: leave the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(child);
    let helper = Helper { sock: parent, pid, pool: [Vec::new(), Vec::new()] };
    let mut buf = [0u8; 1024];
    match sys::recv_fd(helper.sock.as_raw_fd(), &mut buf) {
        Ok(Some((_, Some(tap)))) => {
            sys::set_nonblocking(tap.as_raw_fd()).map_err(|e| Error::Setup(format!("tap: {e}")))?;
            Ok((tap, helper))
        }
        Ok(Some((n, None))) => {
            Err(Error::Setup(String::from_utf8_lossy(&buf[..n]).trim_start_matches('E').to_string()))
        }
        Ok(None) => Err(Error::Setup("namespace helper exited during setup".into())),
        Err(e) => Err(Error::Setup(format!("namespace helper: {e}"))),
    }
}

fn child_main(cfg: &Config, sock: OwnedFd) -> i32 {
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let tap = match child_setup(cfg) {
        Ok(t) => t,
        Err(msg) => {
            let _ = sys::send_fd(sock.as_raw_fd(), format!("E{msg}").as_bytes(), None);
            return 1;
        }
    };
    eprintln!("sent tapfd={} for {}", tap.as_raw_fd(), cfg.tap);
    if sys::send_fd(sock.as_raw_fd(), b"0", Some(tap.as_raw_fd())).is_err() {
        return 1;
    }
    drop(tap);
    // Socket factory.
    let mut b = [0u8; 64];
    loop {
        match sys::recv_fd(sock.as_raw_fd(), &mut b) {
            Ok(Some((n, _))) if n >= 1 => {
                for &req in &b[..n] {
                    let (fam, ty) = match req {
                        REQ_TCP4 => (libc::AF_INET, libc::SOCK_STREAM),
                        REQ_TCP6 => (libc::AF_INET6, libc::SOCK_STREAM),
                        REQ_UDP4 => (libc::AF_INET, libc::SOCK_DGRAM),
                        REQ_UDP6 => (libc::AF_INET6, libc::SOCK_DGRAM),
                        _ => continue,
                    };
                    let r = match sys::socket(fam, ty, 0) {
                        Ok(s) => sys::send_fd(sock.as_raw_fd(), b"0", Some(s.as_raw_fd())),
                        Err(e) => {
                            let c = e.raw_os_error().unwrap_or(libc::EIO).to_ne_bytes();
                            sys::send_fd(sock.as_raw_fd(), &[b'E', c[0], c[1], c[2], c[3]], None)
                        }
                    };
                    if r.is_err() {
                        return 0;
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return 0,
        }
    }
}

fn child_setup(cfg: &Config) -> Result<OwnedFd, String> {
    let (netns, userns) = match &cfg.target {
        Target::Pid(p) => {
            (format!("/proc/{p}/ns/net"), Some(cfg.userns_path.clone().unwrap_or(format!("/proc/{p}/ns/user"))))
        }
        Target::Path(p) => (p.clone(), cfg.userns_path.clone()),
    };
    // Open both before joining anything (the paths may not be reachable afterwards).
    let netfd = sys::open_ro(&netns).map_err(|e| format!("open {netns}: {e}"))?;
    let userfd = match &userns {
        Some(u) => Some(sys::open_ro(u).map_err(|e| format!("open {u}: {e}"))?),
        None => None,
    };
    if let Some(u) = userfd {
        let mine = sys::open_ro("/proc/self/ns/user").map_err(|e| format!("open /proc/self/ns/user: {e}"))?;
        let same = sys::dev_ino(u.as_raw_fd()).ok() == sys::dev_ino(mine.as_raw_fd()).ok();
        if !same {
            sys::setns(u.as_raw_fd(), libc::CLONE_NEWUSER).map_err(|e| format!("setns(user namespace): {e}"))?;
        }
    }
    sys::setns(netfd.as_raw_fd(), libc::CLONE_NEWNET).map_err(|e| format!("setns(network namespace {netns}): {e}"))?;
    drop(netfd);
    let _ = sys::link_up("lo");
    let tap = sys::tap_open(&cfg.tap).map_err(|e| format!("cannot create TAP device {}: {e}", cfg.tap))?;
    if cfg.configure {
        configure(cfg).map_err(|e| format!("cannot configure {}: {e}", cfg.tap))?;
    }
    Ok(tap)
}

fn configure(cfg: &Config) -> io::Result<()> {
    let dev = cfg.tap.as_str();
    let n = &cfg.net;
    if let Some(mac) = cfg.mac {
        sys::set_mac(dev, mac)?;
    }
    sys::set_mtu(dev, cfg.mtu)?;
    if n.ipv6 {
        // The static address must be usable at once: no duplicate address detection.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/accept_dad"), "0");
    }
    sys::set_ipv4(dev, n.guest, n.prefix)?;
    sys::link_up(dev)?;
    sys::add_default_route4(dev, n.gateway)?;
    if n.ipv6 {
        sys::set_ipv6(dev, n.guest6, 64, n.gateway6)?;
    }
    Ok(())
}
