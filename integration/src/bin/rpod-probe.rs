//! `rpod-probe`: the tiny traffic tool the integration tests run inside namespaces.
//!
//! It exists so that every check of "can X reach Y" has one precise, fast, scriptable
//! answer, including the address the server saw the client come from (which is how the
//! tests see masquerade and port-forwarding at work).
//!
//! ```text
//! rpod-probe serve NAME [--bind IP] [tcp:PORT]... [udp:PORT]...
//!     Listens on every given port (default bind address `::`, dual stack) and answers each
//!     TCP connection and each UDP datagram with one line
//!     `name=NAME local=IP:PORT peer=IP:PORT`, then closes (TCP). It logs the same line,
//!     prefixed with `tcp ` or `udp `, to stdout. It prints `READY` once every socket is
//!     bound, so a caller can wait for that instead of sleeping.
//! rpod-probe tcp ADDR:PORT [TIMEOUT_MS]
//!     Connects, prints the server's line, exits 0; on any failure prints `error: ...` to
//!     stderr and exits 1. The timeout (default 2000 ms) covers connect and read.
//! rpod-probe udp ADDR:PORT [TIMEOUT_MS]
//!     Sends a datagram every 200 ms until an answer arrives or the timeout ends.
//! ```
//! IPv4-mapped IPv6 addresses are printed as plain IPv4, so a dual-stack listener reports
//! `peer=198.18.0.2:40000`, not `peer=::ffff:198.18.0.2:40000`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn canon(a: SocketAddr) -> String {
    let ip = a.ip().to_canonical();
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{}", a.port()),
        IpAddr::V6(v6) => format!("[{v6}]:{}", a.port()),
    }
}

fn line(name: &str, local: SocketAddr, peer: SocketAddr) -> String {
    format!("name={name} local={} peer={}", canon(local), canon(peer))
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the harness went away) is not a reason to stop serving.
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

fn serve(args: &[String]) -> Result<(), String> {
    let name = args.first().ok_or("serve needs a NAME")?.clone();
    let mut bind: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        if a == "--bind" {
            let v = it.next().ok_or("--bind needs an address")?;
            bind = v.parse().map_err(|e| format!("bad --bind {v}: {e}"))?;
        } else if let Some(p) = a.strip_prefix("tcp:") {
            tcp.push(p.parse::<u16>().map_err(|e| format!("bad port {a}: {e}"))?);
        } else if let Some(p) = a.strip_prefix("udp:") {
            udp.push(p.parse::<u16>().map_err(|e| format!("bad port {a}: {e}"))?);
        } else {
            return Err(format!("unknown serve argument {a}"));
        }
    }
    if tcp.is_empty() && udp.is_empty() {
        return Err("serve needs at least one tcp:PORT or udp:PORT".into());
    }
    let mut threads = Vec::new();
    for port in tcp {
        let l = TcpListener::bind(SocketAddr::new(bind, port)).map_err(|e| format!("bind tcp {bind} {port}: {e}"))?;
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let (Ok(local), Ok(peer)) = (s.local_addr(), s.peer_addr()) else { continue };
                let l = line(&name, local, peer);
                say(&format!("tcp {l}"));
                let _ = s.write_all(format!("{l}\n").as_bytes());
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }));
    }
    for port in udp {
        let s = UdpSocket::bind(SocketAddr::new(bind, port)).map_err(|e| format!("bind udp {bind} {port}: {e}"))?;
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let local = s.local_addr().ok();
            loop {
                let Ok((_, peer)) = s.recv_from(&mut buf) else { continue };
                let Some(local) = local else { continue };
                let l = line(&name, local, peer);
                say(&format!("udp {l}"));
                let _ = s.send_to(format!("{l}\n").as_bytes(), peer);
            }
        }));
    }
    say("READY");
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn target(args: &[String]) -> Result<(SocketAddr, Duration), String> {
    let a = args.first().ok_or("needs ADDR:PORT")?;
    let addr = a
        .to_socket_addrs()
        .map_err(|e| format!("bad address {a}: {e}"))?
        .next()
        .ok_or_else(|| format!("bad address {a}"))?;
    let ms = match args.get(1) {
        Some(t) => t.parse::<u64>().map_err(|e| format!("bad timeout {t}: {e}"))?,
        None => 2000,
    };
    Ok((addr, Duration::from_millis(ms.max(1))))
}

fn tcp(args: &[String]) -> Result<(), String> {
    let (addr, timeout) = target(args)?;
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    let left = timeout.saturating_sub(start.elapsed()).max(Duration::from_millis(10));
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| format!("read from {addr}: {e}"))?;
    if buf.is_empty() {
        return Err(format!("{addr}: connection closed without an answer"));
    }
    print!("{buf}");
    Ok(())
}

fn udp(args: &[String]) -> Result<(), String> {
    let (addr, timeout) = target(args)?;
    let local: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|e| format!("{e}"))?;
    let s = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    s.connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    let mut last_err = String::from("no answer");
    while Instant::now() < deadline {
        // A send error (ECONNREFUSED from an earlier ICMP port unreachable) is kept only
        // if nothing better comes: keep trying until the deadline.
        let sent = s.send(b"ping\n").map_err(|e| format!("send: {e}"));
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200))
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
        match s.recv(&mut buf) {
            Ok(n) => {
                print!("{}", String::from_utf8_lossy(&buf[..n]));
                return Ok(());
            }
            Err(e) => last_err = sent.err().unwrap_or_else(|| format!("recv: {e}")),
        }
    }
    Err(format!("udp {addr}: {last_err}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("tcp") => tcp(&args[1..]),
        Some("udp") => udp(&args[1..]),
        _ => Err("usage: rpod-probe serve NAME [--bind IP] [tcp:PORT]... [udp:PORT]... | tcp ADDR:PORT [MS] | udp ADDR:PORT [MS]".into()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
