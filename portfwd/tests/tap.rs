//! The TAP path as root: outbound TCP/UDP/ping/DNS through the userspace stack, host
//! loopback allowed and refused, IPv6, many connections, exit conditions.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn python_in(ns: &Netns, probe: &str, args: &[&str]) -> String {
    let mut c = ns.cmd("python3");
    c.arg(probe).args(args);
    out(c)
}

#[test]
fn tcp_udp_ping_dns_through_the_gateway() {
    if !can_run("tcp_udp_ping_dns_through_the_gateway", &["ip", "python3", "busybox", "dnsmasq"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    // a resolver on a host loopback address the guest cannot reach directly
    let dport = free_port();
    let dns = spawn({
        let mut c = Command::new("dnsmasq");
        c.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            &format!("--port={dport}"),
            "--address=/pftest.example/192.0.2.7",
            &format!("--pid-file={}", dir.join("dnsmasq.pid")),
        ]);
        c
    });
    let up = format!("127.0.0.1:{dport}");
    let pf = Portfwd::start(
        &[],
        &["-c", "--dns-upstream", &up, "--netns-type=path", &ns.path(), "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start");
    let t = tcp_echo("127.0.0.1:0");
    let u = udp_echo("127.0.0.1:0");
    // configuration
    let a = out({
        let mut c = ns.cmd("ip");
        c.args(["-o", "addr", "show", "tap0"]);
        c
    });
    assert!(a.contains("10.0.2.100/24"), "{a}");
    let l = out({
        let mut c = ns.cmd("ip");
        c.args(["link", "show", "tap0"]);
        c
    });
    assert!(l.contains("mtu 65520") && l.contains("UP"), "{l}");
    let r = out({
        let mut c = ns.cmd("ip");
        c.args(["route"]);
        c
    });
    assert!(r.contains("default via 10.0.2.2 dev tap0"), "{r}");
    // TCP with half-close, both directions of data
    let got = python_in(&ns, &probe, &["tcp", "10.0.2.2", &t.port().to_string(), "hello"]);
    assert_eq!(got, "host:hello", "{}", pf.log_text());
    // bulk both ways (4 MiB) through the stack
    let c = tcp_count("127.0.0.1:0");
    let got = python_in(&ns, &probe, &["big", "10.0.2.2", &c.port().to_string(), "4194304"]);
    assert_eq!(got, "sent 4194304 got 7", "{got}");
    // refused port -> reset
    let closed = free_port();
    assert_eq!(python_in(&ns, &probe, &["tcp", "10.0.2.2", &closed.to_string(), "x"]), "refused");
    // UDP
    assert_eq!(python_in(&ns, &probe, &["udp", "10.0.2.2", &u.port().to_string(), "dgram"]), "host:dgram");
    // ping the gateway (answered by portfwd)
    let ping = out({
        let mut c = ns.cmd("busybox");
        c.args(["ping", "-c", "2", "-W", "2", "10.0.2.2"]);
        c
    });
    assert!(ping.contains("2 packets received"), "{ping}");
    // DNS through the forwarder to the loopback resolver
    let mut ok = String::new();
    for _ in 0..20 {
        ok = out({
            let mut c = ns.cmd("busybox");
            c.args(["nslookup", "pftest.example", "10.0.2.3"]);
            c
        });
        if ok.contains("192.0.2.7") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok.contains("192.0.2.7"), "{ok}\n{}", pf.log_text());
    drop(dns);
}

#[test]
fn disable_host_loopback_refuses_the_gateway() {
    if !can_run("disable_host_loopback_refuses_the_gateway", &["ip", "python3"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    let _pf = Portfwd::start(
        &[],
        &["-c", "--disable-host-loopback", "--netns-type=path", &ns.path(), "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start");
    let t = tcp_echo("127.0.0.1:0");
    assert_eq!(python_in(&ns, &probe, &["tcp", "10.0.2.2", &t.port().to_string(), "x"]), "refused");
    // a positive control: the guest network works (ping the gateway)
    let ping = out({
        let mut c = ns.cmd("busybox");
        c.args(["ping", "-c", "1", "-W", "2", "10.0.2.2"]);
        c
    });
    assert!(ping.contains("1 packets received"), "{ping}");
}

#[test]
fn ipv6_and_cidr() {
    if !can_run("ipv6_and_cidr", &["ip", "python3"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    let pf = Portfwd::start(
        &[],
        &["-c", "--enable-ipv6", "--cidr=10.11.0.0/16", "--mtu=1500", "--netns-type=path", &ns.path(), "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start");
    let a = out({
        let mut c = ns.cmd("ip");
        c.args(["-o", "addr", "show", "tap0"]);
        c
    });
    assert!(a.contains("10.11.0.100/16") && a.contains("fd00::100/64"), "{a}");
    // router advertisements: a SLAAC address and a default route via fe80::2, as slirp4netns
    let mut seen = String::new();
    let slaac = wait_for(8, || {
        seen = out({
            let mut c = ns.cmd("ip");
            c.args(["-6", "route"]);
            c
        });
        seen.contains("default via fe80::2") && seen.contains("proto ra")
    });
    assert!(slaac, "{seen}");
    let a6 = out({
        let mut c = ns.cmd("ip");
        c.args(["-6", "-o", "addr", "show", "tap0"]);
        c
    });
    assert!(a6.lines().any(|l| l.contains("fd00::") && l.contains("dynamic")), "{a6}");
    let t6 = tcp_echo("[::1]:0");
    let got = python_in(&ns, &probe, &["tcp", "fd00::2", &t6.port().to_string(), "six"]);
    assert_eq!(got, "host:six", "{}", pf.log_text());
    let u6 = udp_echo("[::1]:0");
    assert_eq!(python_in(&ns, &probe, &["udp", "fd00::2", &u6.port().to_string(), "d6"]), "host:d6");
    let t4 = tcp_echo("127.0.0.1:0");
    assert_eq!(python_in(&ns, &probe, &["tcp", "10.11.0.2", &t4.port().to_string(), "four"]), "host:four");
    let ping = out({
        let mut c = ns.cmd("busybox");
        c.args(["ping6", "-c", "1", "-W", "2", "fd00::2"]);
        c
    });
    assert!(ping.contains("1 packets received"), "{ping}");
    // small MTU: bulk still works (segmentation by smoltcp)
    let c = tcp_count("127.0.0.1:0");
    let got = python_in(&ns, &probe, &["big", "10.11.0.2", &c.port().to_string(), "1048576"]);
    assert_eq!(got, "sent 1048576 got 7", "{got}");
}

#[test]
fn a_thousand_concurrent_connections() {
    if !can_run("a_thousand_concurrent_connections", &["ip", "python3"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    let pf = Portfwd::start(&[], &["-c", "--netns-type=path", &ns.path(), "tap0"], &dir.join("pf.log")).expect("start");
    let t = tcp_echo_plain("127.0.0.1:0");
    let got = python_in(&ns, &probe, &["many", "10.0.2.2", &t.port().to_string(), "1000"]);
    assert_eq!(got, "ok 1000", "{}", pf.log_text());
    // memory stays bounded (buffers are touched only as far as data went)
    let st = std::fs::read_to_string(format!("/proc/{}/status", pf.proc.pid())).unwrap_or_default();
    let rss: u64 = st
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    eprintln!("portfwd RSS after 1000 connections: {rss} KiB");
    assert!(rss > 0 && rss < 256 * 1024, "RSS {rss} KiB");
}

/// Echo server answering exactly what it got (for `many`).
fn tcp_echo_plain(addr: &str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(addr).expect("bind");
    let a = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = c.read_to_end(&mut v);
                let _ = c.write_all(&v);
            });
        }
    });
    a
}

#[test]
fn exits_when_the_target_goes_away_or_the_exit_fd_closes() {
    if !can_run("exits_when_the_target_goes_away_or_the_exit_fd_closes", &["unshare"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    // PID mode: the target process exits
    let mut target = spawn({
        let mut c = Command::new("unshare");
        c.args(["-n", "sleep", "60"]);
        c
    });
    let pid = target.pid().to_string();
    std::thread::sleep(Duration::from_millis(200));
    let mut pf = Portfwd::start(&[], &["-c", &pid, "tap0"], &dir.join("pf.log")).expect("start");
    // SAFETY: killing our own child.
    unsafe { libc::kill(target.pid(), libc::SIGKILL) };
    let _ = target.0.wait();
    let st = pf.proc.exited_within(Duration::from_secs(5));
    assert!(st.map(|s| s.success()).unwrap_or(false), "portfwd did not exit cleanly: {st:?}\n{}", pf.log_text());
    // exit fd: closing the write end stops it
    let ns = Netns::new(&p);
    let mut pf =
        Portfwd::start(&[], &["-c", "--netns-type=path", &ns.path(), "tap0"], &dir.join("pf2.log")).expect("start");
    pf.exit_w = None;
    let st = pf.proc.exited_within(Duration::from_secs(5));
    assert!(st.map(|s| s.success()).unwrap_or(false), "{st:?}");
    assert!(pf.log_text().contains("exitfd event"));
}

#[test]
fn help_and_bad_usage() {
    let o = Command::new(BIN).arg("--help").output().expect("run");
    assert!(o.status.success());
    let h = String::from_utf8_lossy(&o.stdout);
    for f in [
        "--disable-host-loopback",
        "--mtu",
        "--enable-sandbox",
        "--enable-seccomp",
        "--cidr",
        "--outbound-addr",
        "--enable-ipv6",
    ] {
        assert!(h.contains(f), "{f}");
    }
    let o = Command::new(BIN).args(["--netns-type=bogus", "x"]).output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--netns-type"));
    let o = Command::new(BIN).args(["--netns-type=path", "/nonexistent/netns", "tap0"]).output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/netns"));
}

#[test]
fn unreachable_destinations_get_icmp_errors() {
    if !can_run("unreachable_destinations_get_icmp_errors", &["ip", "python3"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    // portfwd's "host" is a namespace with only a loopback: nothing outside is routable
    let host = Netns::new(&format!("{p}h"));
    let _ = Command::new("ip").args(["-n", &host.0, "link", "set", "lo", "up"]).status();
    let pf = Portfwd::start(
        &["ip", "netns", "exec", &host.0],
        &["-c", "--netns-type=path", &ns.path(), "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start");
    // TCP to an unroutable address: ICMP network unreachable, not a reset
    let got = python_in(&ns, &probe, &["tcp", "192.0.2.1", "80", "x"]);
    assert_eq!(got, format!("error {}", libc::ENETUNREACH), "{}", pf.log_text());
    // UDP to a closed port of the host: ICMP port unreachable
    let got = python_in(&ns, &probe, &["udp", "10.0.2.2", "9", "x"]);
    assert_eq!(got, format!("error {}", libc::ECONNREFUSED));
    // TCP to a closed port: reset (connection refused)
    assert_eq!(python_in(&ns, &probe, &["tcp", "10.0.2.2", "9", "x"]), "refused");
}

#[test]
fn outbound_nat_to_another_host_with_outbound_addr_and_ping() {
    if !can_run("outbound_nat_to_another_host_with_outbound_addr_and_ping", &["ip", "python3", "busybox"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    // portfwd's "host" and a "remote" machine behind it, linked by a veth pair
    let host = Netns::new(&format!("{p}h"));
    let remote = Netns::new(&format!("{p}r"));
    let sh = |args: &str| {
        let ok = Command::new("sh").args(["-c", args]).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "{args}");
    };
    let (h, r) = (&host.0, &remote.0);
    sh(&format!("ip link add {p}a netns {h} type veth peer name {p}b netns {r}"));
    sh(&format!("ip -n {h} addr add 10.77.0.1/24 dev {p}a && ip -n {h} addr add 10.77.0.5/24 dev {p}a"));
    sh(&format!("ip -n {h} link set {p}a up && ip -n {h} link set lo up"));
    sh(&format!("ip -n {r} addr add 10.77.0.2/24 dev {p}b && ip -n {r} link set {p}b up && ip -n {r} link set lo up"));
    // unprivileged ICMP sockets allowed in portfwd's namespace (a per-namespace setting)
    sh(&format!("ip netns exec {h} sysctl -qw net.ipv4.ping_group_range='0 2147483647'"));
    // the remote server answers with the address it sees
    let mut srv = {
        let mut c = remote.cmd("python3");
        c.args([
            "-c",
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('10.77.0.2', 8000)); s.listen(8); print('listening', flush=True)\nwhile True:\n  c, a = s.accept(); c.recv(100); c.sendall(a[0].encode()); c.close()",
        ]);
        c.stdout(std::process::Stdio::piped());
        spawn(c)
    };
    let mut line = String::new();
    use std::io::BufRead;
    let _ = std::io::BufReader::new(srv.0.stdout.take().expect("stdout")).read_line(&mut line);
    let pf = Portfwd::start(
        &["ip", "netns", "exec", h],
        &["-c", "--outbound-addr=10.77.0.5", "--netns-type=path", &ns.path(), "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start");
    let got = python_in(&ns, &probe, &["tcp", "10.77.0.2", "8000", "x"]);
    assert_eq!(got, "10.77.0.5", "{}", pf.log_text());
    // ping of a remote address goes out through an ICMP datagram socket
    let ping = out({
        let mut c = ns.cmd("busybox");
        c.args(["ping", "-c", "2", "-W", "2", "10.77.0.2"]);
        c
    });
    assert!(ping.contains("2 packets received"), "{ping}\n{}", pf.log_text());
}

/// Open sockets of a process (its other descriptors, e.g. the ready pipe, may still close).
fn socket_count(pid: i32) -> usize {
    let d = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    d.iter().filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))).count()
}

#[test]
fn idle_udp_flows_expire_and_reopen() {
    if !can_run("idle_udp_flows_expire_and_reopen", &["ip", "python3"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    let pf = Portfwd::start(
        &["env", "PORTFWD_UDP_TIMEOUT_MS=700"],
        &["-c", "--netns-type=path", &ns.path(), "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start");
    let u = udp_echo("127.0.0.1:0");
    let pid = pf.proc.pid();
    let before = socket_count(pid);
    let port = u.port().to_string();
    // a flow opens a host socket...
    assert_eq!(python_in(&ns, &probe, &["udp", "10.0.2.2", &port, "one"]), "host:one");
    assert_eq!(socket_count(pid), before + 1, "flow socket open");
    // ...closed once the flow has been idle for the timeout
    assert!(wait_for(5, || socket_count(pid) == before), "flow socket not closed: {} sockets", socket_count(pid));
    // a new datagram opens it again
    assert_eq!(python_in(&ns, &probe, &["udp", "10.0.2.2", &port, "two"]), "host:two");
    assert_eq!(socket_count(pid), before + 1, "flow socket reopened");
    assert!(wait_for(5, || socket_count(pid) == before), "reopened flow socket not closed");
}

#[test]
fn fragmented_udp_from_the_guest_is_reassembled() {
    if !can_run("fragmented_udp_from_the_guest_is_reassembled", &["ip", "python3"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    let _pf = Portfwd::start(&[], &["-c", "--mtu=1500", "--netns-type=path", &ns.path(), "tap0"], &dir.join("pf.log"))
        .expect("start");
    // a host server that answers with the size of what it got
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = s.local_addr().expect("addr").port().to_string();
    std::thread::spawn(move || {
        let mut b = [0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut b) {
            let _ = s.send_to(format!("len:{n}").as_bytes(), from);
        }
    });
    // 4000 bytes over a 1500-byte MTU: the guest's kernel sends three fragments
    let big = "x".repeat(4000);
    assert_eq!(python_in(&ns, &probe, &["udp", "10.0.2.2", &port, &big]), "len:4000");
    assert_eq!(python_in(&ns, &probe, &["udp", "10.0.2.2", &port, "small"]), "len:5");
}
