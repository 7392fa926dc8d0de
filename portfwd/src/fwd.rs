//! Host port forwarding (API socket and `--publish`), served by the engine's loop.
//!
//! How this works: a TCP forward is a listening socket on the host. Each accepted client gets
//! a socket created *inside* the container's network namespace by the namespace helper
//! (see `helper.rs`), connected to the guest address; bytes then move between the two kernel
//! sockets with `splice(2)` through one pipe per direction, never through the TAP device or
//! the userspace stack. A UDP forward is a bound host socket; each client address gets its
//! own namespace socket connected to the guest port, and replies go back with `sendto` from
//! the host socket; idle UDP clients expire after 60 s
//! (env PORTFWD_UDP_TIMEOUT_MS overrides). The guest sees forwarded connections
//! coming from its own address (as with podman's rootlessport).
//!
//! API connections are non-blocking and served by the same loop: one `read` of the request
//! (as slirp4netns does), the reply, then the client's remaining input is discarded until it
//! closes. A silent or slow client therefore never holds up the network (slirp4netns pauses
//! its stack while it handles a request); such connections are closed after 10 s.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};
use mio::unix::SourceFd;
use mio::Interest;

use crate::api::{self, Entry, Request};
use crate::cli::Proto;
use crate::engine::{tok, Engine, K_API_CONN, K_FWD_CONN_A, K_FWD_CONN_B, K_FWD_LISTEN, K_FWD_UDPNS};
use crate::slab::Slab;
use crate::sys;

/// Pipe capacity asked for per direction of a forwarded connection (the first
/// [`BIG_PIPE_CONNS`] concurrent connections; later ones keep the default 64 KiB, because the
/// per-user pipe budget (fs.pipe-user-pages-soft) would otherwise run out).
const PIPE_SIZE: usize = 1 << 20;
const BIG_PIPE_CONNS: usize = 8;
/// Most concurrent forwarded TCP connections (and UDP clients).
const MAX_CONNS: usize = 4096;

enum Sock {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct FwdEntry {
    id: u64,
    proto: Proto,
    host: SocketAddr,
    guest: SocketAddr,
    sock: Sock,
    clients: HashMap<SocketAddr, usize>,
}

struct Dir {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
    queued: usize,
    eof: bool,
    shut: bool,
}

impl Dir {
    fn new(big: bool) -> io::Result<Dir> {
        let (r, w) = sys::pipe()?;
        if !big {
            return Ok(Dir { r, w, cap: 65536, queued: 0, eof: false, shut: false });
        }
        static WANT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let want = *WANT
            .get_or_init(|| std::env::var("PORTFWD_PIPE_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(PIPE_SIZE));
        let cap = sys::pipe_size(w.as_raw_fd(), want);
        Ok(Dir { r, w, cap, queued: 0, eof: false, shut: false })
    }

    /// Moves what it can from `src` to `dst`. Err on a socket error.
    fn pump(&mut self, src: i32, dst: i32) -> io::Result<()> {
        loop {
            let mut progress = false;
            if !self.eof && self.queued < self.cap {
                match sys::splice(src, self.w.as_raw_fd(), self.cap - self.queued) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.queued += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.queued > 0 {
                match sys::splice(self.r.as_raw_fd(), dst, self.queued) {
                    Ok(n) => {
                        self.queued -= n;
                        progress |= n > 0;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if !progress {
                break;
            }
        }
        if self.eof && self.queued == 0 && !self.shut {
            sys::shutdown_write(dst);
            self.shut = true;
        }
        Ok(())
    }
}

struct SpliceConn {
    a: OwnedFd,
    b: OwnedFd,
    connected: bool,
    ab: Dir,
    ba: Dir,
}

/// An accepted API connection.
struct ApiConn {
    s: mio::net::UnixStream,
    /// the reply not yet written
    out: Vec<u8>,
    replied: bool,
    since: Instant,
}

/// Most API connections open at once (further ones are closed at once).
const MAX_API_CONNS: usize = 64;
/// An API connection is closed after this long, whatever its state.
const API_IDLE: Duration = Duration::from_secs(10);

struct UdpNs {
    entry: usize,
    client: SocketAddr,
    sock: UdpSocket,
    last: Instant,
}

/// All forwards and their live connections.
#[derive(Default)]
pub struct Forwards {
    entries: Slab<FwdEntry>,
    next_id: u64,
    conns: Slab<SpliceConn>,
    udpns: Slab<UdpNs>,
    /// accepted API connections (request not yet read, or reply not yet drained)
    api_conns: Slab<ApiConn>,
    /// empty pipes of finished connections, reused (saves two pipe2 + fcntl per direction)
    pipes: Vec<Dir>,
}

/// Pipes kept for reuse.
const PIPE_POOL: usize = 16;

fn listen_tcp(a: &SocketAddr) -> io::Result<TcpListener> {
    let s = sys::socket(sys::family(&a.ip()), libc::SOCK_STREAM, 0)?;
    sys::setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    sys::bind(s.as_raw_fd(), a)?;
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(s.as_raw_fd(), 1024) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is an owned listening socket.
    Ok(TcpListener::from_std(unsafe { std::net::TcpListener::from_raw_fd(s.into_raw_fd()) }))
}

fn bind_udp(a: &SocketAddr) -> io::Result<UdpSocket> {
    let s = sys::socket(sys::family(&a.ip()), libc::SOCK_DGRAM, 0)?;
    sys::bind(s.as_raw_fd(), a)?;
    // SAFETY: s is an owned bound datagram socket.
    Ok(UdpSocket::from_std(unsafe { std::net::UdpSocket::from_raw_fd(s.into_raw_fd()) }))
}

impl Engine {
    /// Adds a forward; the error text says why (for logs and the API's error desc).
    pub fn add_forward(&mut self, proto: Proto, host: SocketAddr, guest: SocketAddr) -> Result<u64, String> {
        let sock = match proto {
            Proto::Tcp => Sock::Tcp(listen_tcp(&host).map_err(|e| format!("listen tcp {host}: {e}"))?),
            Proto::Udp => Sock::Udp(bind_udp(&host).map_err(|e| format!("listen udp {host}: {e}"))?),
        };
        self.fwd.next_id += 1;
        let id = self.fwd.next_id;
        let idx = self.fwd.entries.insert(FwdEntry { id, proto, host, guest, sock, clients: HashMap::new() });
        let reg = self.poll.registry();
        let Some(e) = self.fwd.entries.get_mut(idx) else { return Err("internal".into()) };
        let r = match &mut e.sock {
            Sock::Tcp(l) => reg.register(l, tok(K_FWD_LISTEN, idx), Interest::READABLE),
            Sock::Udp(u) => reg.register(u, tok(K_FWD_LISTEN, idx), Interest::READABLE),
        };
        if let Err(err) = r {
            self.fwd.entries.remove(idx);
            return Err(format!("register: {err}"));
        }
        tracing::info!("forwarding {} {host} -> {guest} (id {id})", proto.as_str());
        Ok(id)
    }

    /// Removes forward `id`; false if unknown.
    pub fn remove_forward(&mut self, id: u64) -> bool {
        let Some(idx) = self.fwd.entries.iter().find(|(_, e)| e.id == id).map(|(i, _)| i) else { return false };
        if let Some(mut e) = self.fwd.entries.remove(idx) {
            let reg = self.poll.registry();
            let _ = match &mut e.sock {
                Sock::Tcp(l) => reg.deregister(l),
                Sock::Udp(u) => reg.deregister(u),
            };
            for (_, c) in e.clients.drain() {
                if let Some(mut u) = self.fwd.udpns.remove(c) {
                    let _ = reg.deregister(&mut u.sock);
                }
            }
        }
        true
    }

    /// Forwards in insertion order.
    pub fn list_forwards(&self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self
            .fwd
            .entries
            .iter()
            .map(|(_, e)| Entry { id: e.id, proto: e.proto, host: e.host, guest: e.guest })
            .collect();
        v.sort_by_key(|e| e.id);
        v
    }

    /// Applies one API request and returns the reply.
    pub fn api_request(&mut self, buf: &[u8]) -> String {
        match api::parse(buf) {
            Err(desc) => api::error_reply(desc),
            Ok(Request::List) => api::list_reply(&self.list_forwards()),
            Ok(Request::Remove { id }) => {
                if self.remove_forward(id) {
                    api::remove_reply()
                } else {
                    api::error_reply("bad request: remove_hostfwd: bad arguments.id")
                }
            }
            Ok(Request::Add { proto, host, guest_addr, guest_port }) => {
                let g = guest_addr.unwrap_or(self.cfg.net.guest);
                match self.add_forward(proto, host, SocketAddr::new(IpAddr::V4(g), guest_port)) {
                    Ok(id) => api::add_reply(id),
                    Err(detail) => {
                        tracing::warn!("add_hostfwd: {detail}");
                        // slirp4netns's text, with the reason appended (no extra key: the
                        // contract's error object holds only `desc`)
                        api::error_reply(&format!("bad request: add_hostfwd: slirp_add_hostfwd failed: {detail}"))
                    }
                }
            }
        }
    }

    /// Accepts pending API connections. Each is non-blocking and served by the loop
    /// ([`Engine::api_conn_event`]), so a slow or silent client never stalls the network.
    pub fn api_accept(&mut self) {
        loop {
            let Some(l) = self.api.as_ref() else { return };
            let s = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if self.fwd.api_conns.len() >= MAX_API_CONNS || s.set_nonblocking(true).is_err() {
                tracing::warn!("too many pending API connections; closing a new one");
                continue;
            }
            let idx = self.fwd.api_conns.insert(ApiConn {
                s: mio::net::UnixStream::from_std(s),
                out: Vec::new(),
                replied: false,
                since: Instant::now(),
            });
            let Some(c) = self.fwd.api_conns.get_mut(idx) else { return };
            if self
                .poll
                .registry()
                .register(&mut c.s, tok(K_API_CONN, idx), Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                self.fwd.api_conns.remove(idx);
                continue;
            }
            self.api_conn_event(idx);
        }
    }

    /// An API connection is ready: a single read of the request (as slirp4netns does), the
    /// reply, then the rest of the input is discarded until the client closes (so that
    /// closing never resets the connection before the client has read the reply).
    pub fn api_conn_event(&mut self, idx: usize) {
        let mut buf = [0u8; api::MAX_REQUEST + 1];
        let Some(c) = self.fwd.api_conns.get_mut(idx) else { return };
        if !c.replied {
            let n = loop {
                match c.s.read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => return self.api_close(idx),
                }
            };
            eprintln!("api_handler: got request: {}", String::from_utf8_lossy(&buf[..n]).trim_end());
            let reply = self.api_request(&buf[..n]);
            let Some(c) = self.fwd.api_conns.get_mut(idx) else { return };
            c.out = reply.into_bytes();
            c.replied = true;
        }
        let Some(c) = self.fwd.api_conns.get_mut(idx) else { return };
        while !c.out.is_empty() {
            match c.s.write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.api_close(idx),
            }
        }
        let _ = c.s.shutdown(Shutdown::Write);
        loop {
            match c.s.read(&mut buf) {
                Ok(0) => return self.api_close(idx),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.api_close(idx),
            }
        }
    }

    fn api_close(&mut self, idx: usize) {
        if let Some(mut c) = self.fwd.api_conns.remove(idx) {
            let _ = self.poll.registry().deregister(&mut c.s);
        }
    }

    pub fn fwd_listener_event(&mut self, idx: usize) {
        let Some(e) = self.fwd.entries.get_mut(idx) else { return };
        let guest = e.guest;
        match &e.sock {
            Sock::Tcp(l) => {
                let mut accepted = Vec::new();
                loop {
                    match l.accept() {
                        Ok((s, _)) => accepted.push(s),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                for s in accepted {
                    self.fwd_new_conn(s, guest);
                }
            }
            Sock::Udp(_) => self.fwd_udp_host(idx),
        }
    }

    fn fwd_new_conn(&mut self, client: mio::net::TcpStream, guest: SocketAddr) {
        if self.fwd.conns.len() >= MAX_CONNS {
            return;
        }
        let _ = client.set_nodelay(true);
        let ns = match self.helper.socket(true, &guest.ip()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("no socket in the namespace: {e}");
                return;
            }
        };
        let _ = sys::setsockopt_int(ns.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        if let Err(e) = sys::connect(ns.as_raw_fd(), &guest) {
            tracing::debug!("connect {guest} in the namespace: {e}");
            return;
        }
        let big = self.fwd.conns.len() < BIG_PIPE_CONNS;
        let mut dir = || match self.fwd.pipes.pop() {
            Some(d) => Ok(d),
            None => Dir::new(big),
        };
        let (Ok(ab), Ok(ba)) = (dir(), dir()) else { return };
        // SAFETY: into_raw_fd hands over ownership of the accepted socket.
        let a = unsafe { OwnedFd::from_raw_fd(client.into_raw_fd()) };
        let idx = self.fwd.conns.insert(SpliceConn { a, b: ns, connected: false, ab, ba });
        let Some(c) = self.fwd.conns.get(idx) else { return };
        let reg = self.poll.registry();
        let i = Interest::READABLE | Interest::WRITABLE;
        let ok = reg.register(&mut SourceFd(&c.a.as_raw_fd()), tok(K_FWD_CONN_A, idx), i).is_ok()
            && reg.register(&mut SourceFd(&c.b.as_raw_fd()), tok(K_FWD_CONN_B, idx), i).is_ok();
        if !ok {
            self.fwd_close(idx, true);
        }
    }

    fn fwd_close(&mut self, idx: usize, reset: bool) {
        if let Some(c) = self.fwd.conns.remove(idx) {
            let reg = self.poll.registry();
            let _ = reg.deregister(&mut SourceFd(&c.a.as_raw_fd()));
            let _ = reg.deregister(&mut SourceFd(&c.b.as_raw_fd()));
            if reset {
                sys::set_linger0(c.a.as_raw_fd());
                sys::set_linger0(c.b.as_raw_fd());
            }
            for mut d in [c.ab, c.ba] {
                if d.queued == 0 && self.fwd.pipes.len() < PIPE_POOL {
                    d.eof = false;
                    d.shut = false;
                    self.fwd.pipes.push(d);
                }
            }
        }
    }

    pub fn fwd_conn_event(&mut self, idx: usize) {
        let Some(c) = self.fwd.conns.get_mut(idx) else { return };
        if !c.connected {
            match sys::so_error(c.b.as_raw_fd()) {
                Err(_) => return self.fwd_close(idx, true),
                Ok(()) => {
                    // SAFETY: getpeername into a zeroed sockaddr_storage of the right length.
                    let connected = unsafe {
                        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
                        let mut l = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                        libc::getpeername(c.b.as_raw_fd(), &mut ss as *mut _ as *mut libc::sockaddr, &mut l) == 0
                    };
                    if !connected {
                        return;
                    }
                    c.connected = true;
                }
            }
        }
        let (a, b) = (c.a.as_raw_fd(), c.b.as_raw_fd());
        let r1 = c.ab.pump(a, b);
        let r2 = c.ba.pump(b, a);
        if r1.is_err() || r2.is_err() {
            return self.fwd_close(idx, true);
        }
        if c.ab.shut && c.ba.shut {
            self.fwd_close(idx, false);
        }
    }

    fn fwd_udp_host(&mut self, idx: usize) {
        let mut buf = [0u8; 65536];
        loop {
            let Some(e) = self.fwd.entries.get_mut(idx) else { return };
            let Sock::Udp(u) = &e.sock else { return };
            let (n, from) = match u.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let guest = e.guest;
            let c = match e.clients.get(&from) {
                Some(&c) => c,
                None => {
                    if self.fwd.udpns.len() >= MAX_CONNS {
                        continue; // bounded: drop datagrams of new clients until some expire
                    }
                    let Ok(fd) = self.helper.socket(false, &guest.ip()) else { return };
                    if sys::connect(fd.as_raw_fd(), &guest).is_err() {
                        continue;
                    }
                    // SAFETY: fd is an owned datagram socket.
                    let sock = UdpSocket::from_std(unsafe { std::net::UdpSocket::from_raw_fd(fd.into_raw_fd()) });
                    let c = self.fwd.udpns.insert(UdpNs { entry: idx, client: from, sock, last: Instant::now() });
                    if let Some(u) = self.fwd.udpns.get_mut(c) {
                        let _ = self.poll.registry().register(&mut u.sock, tok(K_FWD_UDPNS, c), Interest::READABLE);
                    }
                    if let Some(e) = self.fwd.entries.get_mut(idx) {
                        e.clients.insert(from, c);
                    }
                    c
                }
            };
            if let Some(u) = self.fwd.udpns.get_mut(c) {
                u.last = Instant::now();
                let _ = u.sock.send(&buf[..n]);
            }
        }
    }

    pub fn fwd_udpns_event(&mut self, c: usize) {
        let mut buf = [0u8; 65536];
        loop {
            let Some(u) = self.fwd.udpns.get_mut(c) else { return };
            let n = match u.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            u.last = Instant::now();
            let (entry, client) = (u.entry, u.client);
            if let Some(FwdEntry { sock: Sock::Udp(h), .. }) = self.fwd.entries.get(entry) {
                let _ = h.send_to(&buf[..n], client);
            }
        }
    }

    pub fn fwd_sweep(&mut self) {
        let now = Instant::now();
        let stale: Vec<usize> =
            self.fwd.api_conns.iter().filter(|(_, c)| now.duration_since(c.since) > API_IDLE).map(|(i, _)| i).collect();
        for i in stale {
            self.api_close(i);
        }
        // forwarded UDP clients expire like the guest's own UDP flows (60 s by default)
        let fwd_idle = crate::engine::udp_idle().0;
        let old: Vec<usize> =
            self.fwd.udpns.iter().filter(|(_, u)| now.duration_since(u.last) > fwd_idle).map(|(i, _)| i).collect();
        for c in old {
            if let Some(mut u) = self.fwd.udpns.remove(c) {
                let _ = self.poll.registry().deregister(&mut u.sock);
                if let Some(e) = self.fwd.entries.get_mut(u.entry) {
                    e.clients.remove(&u.client);
                }
            }
        }
    }
}
