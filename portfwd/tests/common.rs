//! Test harness: namespaces, portfwd processes, a guest-side probe, host-side echo servers.
//! Everything made here is removed on drop (also when a test panics).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_portfwd");

/// Skips (or fails under RPOD_REQUIRE_ROOT=1) when not root or a tool is missing.
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut why = None;
    if !root {
        why = Some("needs root (network namespaces)".to_string());
    }
    for t in tools {
        if why.is_none()
            && !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        {
            why = Some(format!("missing tool {t}"));
        }
    }
    match why {
        None => true,
        Some(w) => {
            if std::env::var("RPOD_REQUIRE_ROOT").as_deref() == Ok("1") {
                panic!("{test}: {w} (RPOD_REQUIRE_ROOT=1)");
            }
            eprintln!("SKIP {test}: {w}");
            false
        }
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique short prefix for names.
pub fn prefix() -> String {
    format!("pf{}{}", std::process::id() % 100000, SEQ.fetch_add(1, Ordering::SeqCst))
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(p: &str) -> TempDir {
        let d = PathBuf::from(format!("/tmp/{p}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        TempDir(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, s: &str) -> String {
        self.0.join(s).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: &str) -> Netns {
        let ok = Command::new("ip").args(["netns", "add", name]).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "ip netns add {name}");
        Netns(name.to_string())
    }
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
    /// A command run inside the namespace.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, prog]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed (whole process group) on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    pub fn exited_within(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < d {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // SAFETY: signalling our own child's process group and the child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Spawns a command in its own process group.
pub fn spawn(mut c: Command) -> Proc {
    c.process_group(0);
    Proc(c.spawn().expect("spawn"))
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0 as RawFd; 2];
    // SAFETY: p has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

/// A running portfwd with its exit pipe (dropping it stops portfwd).
pub struct Portfwd {
    pub proc: Proc,
    pub exit_w: Option<OwnedFd>,
    pub log: PathBuf,
}

impl Portfwd {
    /// Starts `prefix_cmd... portfwd -e 3 -r 4 ARGS` and waits until it reports ready.
    pub fn start(prefix_cmd: &[&str], args: &[&str], log: &str) -> Result<Portfwd, String> {
        let (ready_r, ready_w) = pipe();
        let (exit_r, exit_w) = pipe();
        let mut c = if prefix_cmd.is_empty() {
            Command::new(BIN)
        } else {
            let mut c = Command::new(prefix_cmd[0]);
            c.args(&prefix_cmd[1..]).arg(BIN);
            c
        };
        c.args(["-e", "3", "-r", "4"]).args(args);
        let logf = std::fs::File::create(log).expect("log");
        c.stdout(logf.try_clone().expect("log")).stderr(logf).stdin(Stdio::null());
        let (er, rw) = (exit_r.as_raw_fd(), ready_w.as_raw_fd());
        // SAFETY: only async-signal-safe dup2 calls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                // move both out of the way first: either may already be fd 3 or 4
                let e2 = libc::fcntl(er, libc::F_DUPFD, 10);
                let r2 = libc::fcntl(rw, libc::F_DUPFD, 10);
                if e2 < 0 || r2 < 0 || libc::dup2(e2, 3) < 0 || libc::dup2(r2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(e2);
                libc::close(r2);
                Ok(())
            });
        }
        let proc = spawn(c);
        drop(ready_w);
        drop(exit_r);
        let mut f = std::fs::File::from(ready_r);
        let mut b = [0u8; 16];
        let n = f.read(&mut b).unwrap_or(0);
        let me = Portfwd { proc, exit_w: Some(exit_w), log: PathBuf::from(log) };
        if n == 0 {
            return Err(format!("portfwd not ready: {}", me.log_text()));
        }
        assert_eq!(&b[..n], b"1");
        Ok(me)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The guest-side probe (python3): tcp/udp clients and servers with deadlines.
pub const PROBE: &str = r#"
import socket, sys, time, resource
def fam(h): return socket.AF_INET6 if ':' in h else socket.AF_INET
cmd = sys.argv[1]
if cmd == 'tcp':
    h, p, msg = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    try:
        s = socket.create_connection((h, p), timeout=5)
    except ConnectionRefusedError:
        print('refused'); sys.exit(0)
    except OSError as e:
        print('error', e.errno); sys.exit(0)
    s.sendall(msg.encode()); s.shutdown(socket.SHUT_WR)
    out = b''
    while True:
        d = s.recv(65536)
        if not d: break
        out += d
    print(out.decode())
elif cmd == 'big':
    h, p, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s = socket.create_connection((h, p), timeout=10)
    blk = bytes(range(256)) * 256
    sent = 0
    while sent < n:
        s.sendall(blk); sent += len(blk)
    s.shutdown(socket.SHUT_WR)
    got = 0
    while True:
        d = s.recv(1 << 20)
        if not d: break
        got += len(d)
    print('sent', sent, 'got', got)
elif cmd == 'udp':
    h, p, msg = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    s = socket.socket(fam(h), socket.SOCK_DGRAM); s.settimeout(1); s.connect((h, p))
    for _ in range(5):
        try:
            s.send(msg.encode())
            print(s.recv(65536).decode()); break
        except socket.timeout:
            pass
        except OSError as e:
            print('error', e.errno); break
    else:
        print('timeout')
elif cmd == 'many':
    h, p, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    for i in range(n):
        s = socket.socket(fam(h)); s.settimeout(10); s.connect((h, p)); socks.append(s)
    for i, s in enumerate(socks):
        s.sendall(('m%d' % i).encode()); s.shutdown(socket.SHUT_WR)
    ok = 0
    for i, s in enumerate(socks):
        out = b''
        while True:
            d = s.recv(100)
            if not d: break
            out += d
        if out == ('m%d' % i).encode(): ok += 1
        s.close()
    print('ok', ok)
elif cmd == 'flood':
    # UDP datagrams as fast as possible for N seconds, to many ports (many flows)
    h, p, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    s = socket.socket(fam(h), socket.SOCK_DGRAM); s.setblocking(False)
    b = b'f' * 1400; end = time.time() + secs; n = 0
    while time.time() < end:
        try:
            s.sendto(b, (h, p + (n % 2000))); n += 1
        except BlockingIOError:
            pass
    print('sent', n)
elif cmd == 'serve':
    # TCP echo-until-EOF server and UDP echo server on the same port, for N seconds
    p, secs = int(sys.argv[2]), float(sys.argv[3])
    import threading
    fam6 = len(sys.argv) > 4
    af = socket.AF_INET6 if fam6 else socket.AF_INET
    t = socket.socket(af); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(('', p)); t.listen(128)
    u = socket.socket(af, socket.SOCK_DGRAM); u.bind(('', p))
    def udp():
        while True:
            d, a = u.recvfrom(65536); u.sendto(b'guest:' + d, a)
    def conn(c):
        out = b''
        while True:
            d = c.recv(65536)
            if not d: break
            out += d
        c.sendall(b'guest:' + out); c.close()
    def tcp():
        while True:
            c, a = t.accept(); threading.Thread(target=conn, args=(c,), daemon=True).start()
    threading.Thread(target=udp, daemon=True).start()
    threading.Thread(target=tcp, daemon=True).start()
    print('listening', flush=True)
    time.sleep(secs)
"#;

/// Writes the probe into `dir` and returns its path.
pub fn probe(dir: &TempDir) -> String {
    let p = dir.join("probe.py");
    std::fs::write(&p, PROBE).expect("probe");
    p
}

/// Output of a command as trimmed stdout (stderr appended on failure).
pub fn out(mut c: Command) -> String {
    let o: Output = c.output().expect("run");
    let mut s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !o.status.success() {
        s.push_str(&format!(" [exit {:?}: {}]", o.status.code(), String::from_utf8_lossy(&o.stderr).trim()));
    }
    s
}

/// Host TCP server on `addr`: reads until EOF, answers `host:` + data, closes. One thread per
/// connection. The listener lives as long as the process (tests use port 0).
pub fn tcp_echo(addr: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).expect("bind tcp");
    let a = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = c.read_to_end(&mut v);
                let mut r = b"host:".to_vec();
                r.extend_from_slice(&v);
                let _ = c.write_all(&r);
            });
        }
    });
    a
}

/// Host TCP sink: counts bytes until EOF, answers with the count.
pub fn tcp_count(addr: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).expect("bind tcp");
    let a = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut b = vec![0u8; 1 << 16];
                let mut n = 0usize;
                loop {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
                let _ = c.write_all(format!("{n}").as_bytes());
            });
        }
    });
    a
}

/// Host UDP server: answers `host:` + datagram.
pub fn udp_echo(addr: &str) -> SocketAddr {
    let s = UdpSocket::bind(addr).expect("bind udp");
    let a = s.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut b = [0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut b) {
            let mut r = b"host:".to_vec();
            r.extend_from_slice(&b[..n]);
            let _ = s.send_to(&r, from);
        }
    });
    a
}

/// One API request over the unix socket; returns the reply.
pub fn api(sock: &str, req: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect api");
    // a too-large request is cut short by the server: write errors are expected then
    let _ = s.write_all(req.as_bytes()).and_then(|_| s.write_all(b"\n"));
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r
}

/// TCP request to a host address: send, half-close, read to EOF.
pub fn tcp_req(addr: &str, msg: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(msg.as_bytes())?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r)
        })();
        match r {
            Ok(s) if !s.is_empty() || Instant::now() > deadline => return s,
            Err(e) if Instant::now() > deadline => return format!("error {e}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// UDP request to a host address.
pub fn udp_req(addr: &str, msg: &str) -> String {
    let s = UdpSocket::bind(if addr.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" }).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let mut b = [0u8; 65536];
    for _ in 0..10 {
        s.send_to(msg.as_bytes(), addr).expect("send");
        if let Ok(n) = s.recv(&mut b) {
            return String::from_utf8_lossy(&b[..n]).into_owned();
        }
    }
    "timeout".into()
}

/// Waits until `f` is true (max `secs`).
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A free port on the host (bound and released; a race is possible but unlikely).
/// A loopback port free for both TCP and UDP just now (tests publish both protocols on one port,
/// and other tests running in parallel take ephemeral UDP ports).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
