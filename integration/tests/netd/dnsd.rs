//! dnsd (issue 3) through netd, in namespaces: netd writes the per-network files and starts or
//! SIGHUPs `dnsd` (built beside netd) in the test's host namespace, exactly as it does
//! aardvark-dns; containers ask the gateway.
//!
//! Queries are made by a small DNS client in this file, on a thread that has entered the
//! asking container's network namespace (`setns` is per thread), so the source address is the
//! container's, answers can be checked exactly (rcode, flags, TTL, every record) and TCP is
//! covered too (busybox nslookup is UDP only). One check also uses busybox nslookup, as a user
//! would. Forwarding is checked against Debian's `dnsmasq` started by the test in its upstream
//! namespace; the host's `/etc/resolv.conf` is never touched (its server is unreachable from
//! the test namespaces, so every negative check asks a name that is never forwarded).

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpod_integration::cmd::{self, have_tool};
use rpod_integration::{env_or_skip, Attach, Container, Env, NetdOut, Netns, Network, Opts, Proc, UPSTREAM_IP4};
use serde_json::{json, Value};

use crate::{bridge4, ip4};

const A: u16 = 1;
const PTR: u16 = 12;
const AAAA: u16 = 28;
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;

/// What the forwarding tests' dnsmasq answers for `upstream.test` (and names under it).
const UPSTREAM_ANSWER: &str = "198.18.0.99";

// ---- a tiny DNS client ----

/// A decoded answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Answer {
    rcode: u8,
    aa: bool,
    tc: bool,
    ra: bool,
    /// A and AAAA records, in order.
    addrs: Vec<IpAddr>,
    /// PTR targets, without the trailing dot.
    names: Vec<String>,
    /// The TTL of every answer record.
    ttls: Vec<u32>,
}

impl Answer {
    fn addrs_sorted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.addrs.iter().map(IpAddr::to_string).collect();
        v.sort();
        v
    }
}

fn next_id() -> u16 {
    static ID: AtomicU16 = AtomicU16::new(0x1234);
    ID.fetch_add(7919, Ordering::Relaxed)
}

/// A query with RD set.
fn encode(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&0x0100u16.to_be_bytes());
    v.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        v.push(u8::try_from(label.len()).expect("label under 64 bytes"));
        v.extend_from_slice(label.as_bytes());
    }
    v.push(0);
    v.extend_from_slice(&qtype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v
}

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
fn read_name(buf: &[u8], mut pos: usize) -> Result<(String, usize), String> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = usize::from(*buf.get(pos).ok_or("name runs past the end")?);
        if len & 0xc0 == 0xc0 {
            let lo = usize::from(*buf.get(pos + 1).ok_or("truncated pointer")?);
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3f) << 8) | lo;
            jumps += 1;
            if jumps > 64 {
                return Err("compression loop".into());
            }
            continue;
        }
        if len == 0 {
            return Ok((labels.join("."), end.unwrap_or(pos + 1)));
        }
        let label = buf.get(pos + 1..pos + 1 + len).ok_or("label runs past the end")?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn decode(id: u16, buf: &[u8]) -> Result<Answer, String> {
    if buf.len() < 12 {
        return Err(format!("short answer ({} bytes)", buf.len()));
    }
    if be16(buf, 0) != id {
        return Err(format!("answer id {} for query {id}", be16(buf, 0)));
    }
    let flags = be16(buf, 2);
    if flags & 0x8000 == 0 {
        return Err("not a response".into());
    }
    let mut a = Answer {
        rcode: (flags & 0xf) as u8,
        aa: flags & 0x0400 != 0,
        tc: flags & 0x0200 != 0,
        ra: flags & 0x0080 != 0,
        ..Answer::default()
    };
    let mut pos = 12;
    for _ in 0..be16(buf, 4) {
        pos = read_name(buf, pos)?.1 + 4;
    }
    for _ in 0..be16(buf, 6) {
        let p = read_name(buf, pos)?.1;
        let hdr = buf.get(p..p + 10).ok_or("short record header")?;
        let rtype = be16(hdr, 0);
        let ttl = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let len = usize::from(be16(hdr, 8));
        let rdata = buf.get(p + 10..p + 10 + len).ok_or("short rdata")?;
        match rtype {
            A if len == 4 => a.addrs.push(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]])),
            AAAA if len == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rdata);
                a.addrs.push(IpAddr::from(o));
            }
            PTR => a.names.push(read_name(buf, p + 10)?.0),
            _ => {}
        }
        a.ttls.push(ttl);
        pos = p + 10 + len;
    }
    Ok(a)
}

/// Runs `f` on a new thread that has entered `ns`'s network namespace.
fn spawn_in<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = ns.path();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        // SAFETY: setns(2) with a valid namespace fd; CLONE_NEWNET moves only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {}: {}", path.display(), std::io::Error::last_os_error());
        f()
    })
}

fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(ns, f).join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn udp_exchange(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> Result<Answer, String> {
    let id = next_id();
    let local = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.connect(server).map_err(|e| format!("connect {server}: {e}"))?;
    s.send(&encode(id, name, qtype)).map_err(|e| format!("send to {server}: {e}"))?;
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).map_err(|e| format!("udp {server} {name}: no answer: {e}"))?;
    decode(id, &buf[..n])
}

/// Several queries on one TCP connection (all written first, then every answer read).
fn tcp_exchange(server: SocketAddr, queries: &[(String, u16)], timeout: Duration) -> Result<Vec<Answer>, String> {
    let mut s = TcpStream::connect_timeout(&server, timeout).map_err(|e| format!("tcp connect {server}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut ids = Vec::new();
    let mut out = Vec::new();
    for (name, qtype) in queries {
        let id = next_id();
        let q = encode(id, name, *qtype);
        out.extend_from_slice(&u16::try_from(q.len()).expect("short query").to_be_bytes());
        out.extend_from_slice(&q);
        ids.push(id);
    }
    use std::io::{Read, Write};
    s.write_all(&out).map_err(|e| format!("tcp write {server}: {e}"))?;
    let mut answers = Vec::new();
    for id in ids {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).map_err(|e| format!("tcp read {server}: {e}"))?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
        s.read_exact(&mut buf).map_err(|e| format!("tcp read {server}: {e}"))?;
        answers.push(decode(id, &buf)?);
    }
    Ok(answers)
}

fn server(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")), port)
}

/// One UDP query from `ns` to `ip:53`.
fn query(ns: &Netns, ip: &str, name: &str, qtype: u16) -> Result<Answer, String> {
    let (srv, name) = (server(ip, 53), name.to_string());
    in_ns(ns, move || udp_exchange(srv, &name, qtype, Duration::from_secs(2)))
}

/// One TCP query from `ns` to `ip:53`.
fn query_tcp(ns: &Netns, ip: &str, name: &str, qtype: u16) -> Result<Answer, String> {
    let (srv, q) = (server(ip, 53), vec![(name.to_string(), qtype)]);
    in_ns(ns, move || tcp_exchange(srv, &q, Duration::from_secs(2))).map(|mut v| v.remove(0))
}

/// Retries `f` for a few seconds until it gives Ok.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(150)),
        }
    }
}

/// `name` (type `qtype`) asked from `ns` at `gw` answers exactly `want` (NOERROR), eventually.
fn expect_addrs(ns: &Netns, gw: &str, name: &str, qtype: u16, want: &[&str]) -> Answer {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    eventually(&format!("{} asks {gw} for {name} (type {qtype}), wants {want:?}", ns.name()), || {
        let a = query(ns, gw, name, qtype)?;
        if a.rcode == NOERROR && a.addrs_sorted() == want {
            Ok(a)
        } else {
            Err(format!("got {a:?}"))
        }
    })
}

/// `name` asked from `ns` at `gw` gives `rcode` (one attempt: call it next to a positive check).
fn expect_rcode(ns: &Netns, gw: &str, name: &str, qtype: u16, rcode: u8) -> Answer {
    let a = query(ns, gw, name, qtype).unwrap_or_else(|e| panic!("{} asks {gw} for {name}: {e}", ns.name()));
    assert_eq!(a.rcode, rcode, "{} asks {gw} for {name} (type {qtype}): {a:?}", ns.name());
    assert!(a.addrs.is_empty() && a.names.is_empty(), "{} asks {gw} for {name}: no records wanted: {a:?}", ns.name());
    a
}

/// `name` asked from `ns` at `gw` gets no record, whatever the rcode (a name out of scope is
/// forwarded, and the forward may fail).
fn expect_no_records(ns: &Netns, gw: &str, name: &str, qtype: u16) {
    match query(ns, gw, name, qtype) {
        Ok(a) => assert!(
            a.rcode != NOERROR || (a.addrs.is_empty() && a.names.is_empty()),
            "{} asks {gw} for {name} (type {qtype}): no record wanted: {a:?}",
            ns.name()
        ),
        Err(e) => panic!("{} asks {gw} for {name}: no answer at all: {e}", ns.name()),
    }
}

/// The reverse name of an address.
fn reverse(ip: &str) -> String {
    match ip.parse::<IpAddr>().expect("an IP") {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

// ---- netd with dnsd ----

/// `target/<profile>/dnsd`, beside the netd under test.
fn dnsd_bin(env: &Env) -> String {
    let p = env.netd_bin().with_file_name("dnsd");
    assert!(p.is_file(), "{} not built (cargo build -p dnsd)", p.display());
    p.to_string_lossy().into_owned()
}

/// Kills the dnsd of the pid file when a test ends early (the harness's own pid-file cleanup
/// only kills processes named like aardvark; its namespace sweep would catch dnsd anyway).
struct Dnsd<'a> {
    env: &'a Env,
    bin: String,
}

impl<'a> Dnsd<'a> {
    fn new(env: &'a Env) -> Self {
        Dnsd { env, bin: dnsd_bin(env) }
    }

    fn args(&self) -> [&str; 2] {
        ["--aardvark-binary", self.bin.as_str()]
    }

    fn setup(&self, c: &Container, o: &Opts) {
        self.env.setup_args(c, o, &self.args());
    }

    fn teardown(&self, c: &Container, o: &Opts) {
        self.env.teardown_args(c, o, &self.args());
    }

    /// setup/teardown with a hand-made NetworkOptions document.
    fn raw(&self, cmd: &str, c: &Container, doc: &Value) -> NetdOut {
        let path = c.path_str();
        let [a, b] = self.args();
        self.env.netd(&[a, b, cmd, &path], Some(doc))
    }

    fn pid(&self) -> Option<i32> {
        self.env.aardvark_pid()
    }

    /// The running dnsd's pid (checked to be dnsd).
    fn running(&self) -> i32 {
        let pid = self.pid().expect("dnsd wrote its pid file");
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(comm.trim(), "dnsd", "pid file names a running dnsd (pid {pid})");
        pid
    }

    /// After the last container left: dnsd removed its pid file and exited.
    fn assert_exited(&self, pid: i32) {
        eventually("dnsd exits when no network is left", || {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')));
            if alive || self.pid().is_some() {
                Err(format!("dnsd {pid} alive: {alive}, pid file: {:?}", self.pid()))
            } else {
                Ok(())
            }
        });
    }
}

impl Drop for Dnsd<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var("RPOD_KEEP_ON_FAILURE").is_ok_and(|v| v == "1") {
            return; // as the harness: leave it for inspection
        }
        let Some(pid) = self.pid() else { return };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "dnsd" {
            return;
        }
        // SAFETY: kill(2) on the pid of the dnsd this test started (checked by name above).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Pins the MAC address of `net`'s bridge to its current value.
///
/// netd gives each bridge a MAC of its own (locally administered), so the gateway's MAC does
/// not follow the ports as containers come and go (which would leave the other containers'
/// ARP entries pointing at nobody, and DNS queries lost until ARP re-resolves). Checked here
/// because the reload-under-load test depends on it.
fn pin_bridge_mac(env: &Env, net: &Network) {
    let br = net.interface.as_deref().expect("a bridge network");
    let link = env.link_details(&env.host, br).unwrap_or_else(|| panic!("no bridge {br}"));
    let mac = link["address"].as_str().expect("bridge MAC").to_string();
    let first = u8::from_str_radix(&mac[..2], 16).expect("hex MAC");
    assert_eq!(first & 0x03, 0x02, "bridge {br} has a locally administered unicast MAC of its own: {mac}");
}

/// The NetworkOptions document of `o`, with `network_dns_servers` set on network `net` (the
/// harness's Network builder has no setter for it).
fn with_network_dns(o: &Opts, net: &str, servers: &[&str]) -> Value {
    let mut v = o.to_json();
    v["network_info"][net]["network_dns_servers"] = json!(servers);
    v
}

/// Debian's dnsmasq in the upstream namespace on `addr`:53, answering `answer` for
/// `upstream.test` and the names under it, logging queries to `<test dir>/dnsmasq-<addr>.log`.
/// Returns once it answers.
fn dnsmasq(env: &Env, addr: &str, answer: &str) -> (Proc, PathBuf) {
    let log = env.dir().join(format!("dnsmasq-{addr}.log"));
    let args = [
        // -k, not --no-daemon: the latter also logs every query to stderr
        "--keep-in-foreground".to_string(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--pid-file".into(),
        "--user=root".into(),
        format!("--address=/upstream.test/{answer}"),
        format!("--listen-address={addr}"),
        "--bind-interfaces".into(),
        "--log-queries".into(),
        format!("--log-facility={}", log.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = env.spawn(&env.upstream, "dnsmasq", &args);
    eventually(&format!("dnsmasq on {addr} answers"), || {
        let a = query(&env.host, addr, "ready.upstream.test", A)?;
        if a.addrs_sorted() == [answer] {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    });
    (p, log)
}

/// How many times dnsmasq logged a query for exactly `name`.
fn dnsmasq_queries(log: &PathBuf, name: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| l.contains("query[") && l.contains(&format!("] {name} from "))).count()
}

fn need_dnsmasq(test: &str) -> bool {
    if have_tool("dnsmasq") {
        return true;
    }
    rpod_integration::print_skip(test, "`dnsmasq` is not installed (Debian dnsmasq-base)");
    false
}

// ---- the tests ----

#[test]
fn dnsd_resolves_names_and_aliases_within_a_network() {
    let env = env_or_skip!("dnsd_resolves_names_and_aliases_within_a_network");
    let d = Dnsd::new(&env);
    let net = bridge4(&env, "named", "br0", 71).dns(true);
    let gw = ip4(71, 1);
    let (a, b) = (env.container("a"), env.container("Bee-1"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(71, 2)]));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(71, 3)]).alias("web").alias("b0c1d2e3f4a5"));
    d.setup(&a, &oa);
    pin_bridge_mac(&env, &net);
    let pid = d.running();
    d.setup(&b, &ob);
    assert_eq!(d.running(), pid, "the second setup reloads the same dnsd");

    // names and aliases, any case, with and without the search domain and the root dot
    let ans = expect_addrs(&a.ns, &gw, "bee-1", A, &[&ip4(71, 3)]);
    assert!(ans.aa && ans.ra, "authoritative, recursion available: {ans:?}");
    assert_eq!(ans.ttls, vec![0], "TTL 0 by default (as aardvark-dns 1.13+)");
    for name in ["Bee-1", "BEE-1.dns.podman", "bee-1.dns.podman.", "web", "WEB.Dns.Podman", "b0c1d2e3f4a5"] {
        expect_addrs(&a.ns, &gw, name, A, &[&ip4(71, 3)]);
    }
    expect_addrs(&b.ns, &gw, "a", A, &[&ip4(71, 2)]);
    // its own name, and the host (not a container) asking the gateway sees the network
    expect_addrs(&a.ns, &gw, "a.dns.podman", A, &[&ip4(71, 2)]);
    expect_addrs(&env.host, &gw, "web", A, &[&ip4(71, 3)]);
    // a v4-only name has no AAAA: NOERROR with no record, not NXDOMAIN and not forwarded
    expect_rcode(&a.ns, &gw, "web.dns.podman", AAAA, NOERROR);
    // unknown names under the search domain: NXDOMAIN (never forwarded)
    expect_rcode(&a.ns, &gw, "nobody.dns.podman", A, NXDOMAIN);
    expect_rcode(&a.ns, &gw, "dns.podman", A, NXDOMAIN);

    // as a user would: busybox nslookup (UDP, search domain appended by nothing)
    eventually("busybox nslookup web", || {
        let o = env.run(&a.ns, "busybox", &["nslookup", "web", &gw]);
        let answer = o.stdout.split_once("Name:").map(|(_, r)| r.to_string()).unwrap_or_default();
        if answer.lines().any(|l| l.trim() == format!("Address: {}", ip4(71, 3))) {
            Ok(())
        } else {
            Err(format!("{o}"))
        }
    });

    // b leaves: its names go at once, a's stay
    d.teardown(&b, &ob);
    eventually("b's names are forgotten", || match query(&a.ns, &gw, "web.dns.podman", A)? {
        x if x.rcode == NXDOMAIN => Ok(()),
        x => Err(format!("{x:?}")),
    });
    expect_rcode(&a.ns, &gw, "bee-1.dns.podman", A, NXDOMAIN);
    expect_addrs(&a.ns, &gw, "a", A, &[&ip4(71, 2)]);
    assert_eq!(d.running(), pid, "still the same dnsd");
    d.teardown(&a, &oa);
    d.assert_exited(pid);
}

#[test]
fn dnsd_isolates_networks_and_serves_containers_on_two() {
    let env = env_or_skip!("dnsd_isolates_networks_and_serves_containers_on_two");
    let d = Dnsd::new(&env);
    let nx = bridge4(&env, "netx", "brx", 72).dns(true);
    let ny = bridge4(&env, "nety", "bry", 73).dns(true);
    let (gx, gy) = (ip4(72, 1), ip4(73, 1));
    let (x, y, z) = (env.container("x"), env.container("y"), env.container("z"));
    // x and y forward to an address where nothing listens (port unreachable: a quick
    // SERVFAIL), so that names they cannot see fail fast instead of timing out
    let ox = Opts::new(&x).net(&nx, Attach::eth0(&[&ip4(72, 2)]).alias("xa")).dns_server(UPSTREAM_IP4);
    let oy = Opts::new(&y).net(&ny, Attach::eth0(&[&ip4(73, 2)]).alias("ya")).dns_server(UPSTREAM_IP4);
    let oz =
        Opts::new(&z).net(&nx, Attach::eth0(&[&ip4(72, 3)])).net(&ny, Attach::new("eth1", &[&ip4(73, 3)]).alias("zy"));
    d.setup(&x, &ox);
    d.setup(&y, &oy);
    pin_bridge_mac(&env, &nx);
    pin_bridge_mac(&env, &ny);
    d.setup(&z, &oz);

    // positive controls inside each network
    expect_addrs(&x.ns, &gx, "z", A, &[&ip4(72, 3)]);
    expect_addrs(&y.ns, &gy, "z", A, &[&ip4(73, 3)]);
    // isolation: x cannot see y (nor its alias), y cannot see x, not even asking the other
    // network's gateway
    for (c, gw) in [(&x, &gx), (&x, &gy)] {
        expect_rcode(&c.ns, gw, "y.dns.podman", A, NXDOMAIN);
        expect_rcode(&c.ns, gw, "ya.dns.podman", A, NXDOMAIN);
        expect_no_records(&c.ns, gw, "y", A);
        expect_no_records(&c.ns, gw, &reverse(&ip4(73, 2)), PTR);
    }
    for (c, gw) in [(&y, &gy), (&y, &gx)] {
        expect_rcode(&c.ns, gw, "x.dns.podman", A, NXDOMAIN);
        expect_rcode(&c.ns, gw, "xa.dns.podman", A, NXDOMAIN);
        expect_no_records(&c.ns, gw, &reverse(&ip4(72, 2)), PTR);
    }
    // an alias given on one network only is only visible there
    expect_rcode(&x.ns, &gx, "zy.dns.podman", A, NXDOMAIN);
    expect_addrs(&y.ns, &gy, "zy", A, &[&ip4(73, 3)]);

    // z is on both: it sees both networks, through either gateway
    for gw in [&gx, &gy] {
        expect_addrs(&z.ns, gw, "x", A, &[&ip4(72, 2)]);
        expect_addrs(&z.ns, gw, "ya.dns.podman", A, &[&ip4(73, 2)]);
        expect_addrs(&z.ns, gw, "z", A, &[&ip4(72, 3), &ip4(73, 3)]);
    }
    // the host asking a gateway sees that gateway's network only
    expect_addrs(&env.host, &gx, "x", A, &[&ip4(72, 2)]);
    expect_rcode(&env.host, &gx, "y.dns.podman", A, NXDOMAIN);

    // z leaves network y only (a teardown of the whole container, then a setup on x alone):
    // y no longer sees it, x still does
    d.teardown(&z, &oz);
    let oz1 = Opts::new(&z).net(&nx, Attach::eth0(&[&ip4(72, 3)]));
    d.setup(&z, &oz1);
    expect_addrs(&x.ns, &gx, "z", A, &[&ip4(72, 3)]);
    eventually("y forgets z", || match query(&y.ns, &gy, "z.dns.podman", A)? {
        a if a.rcode == NXDOMAIN => Ok(()),
        a => Err(format!("{a:?}")),
    });
    expect_rcode(&z.ns, &gx, "y.dns.podman", A, NXDOMAIN);
    let pid = d.running();
    for (c, o) in [(&z, &oz1), (&y, &oy), (&x, &ox)] {
        d.teardown(c, o);
    }
    d.assert_exited(pid);
}

#[test]
fn dnsd_answers_aaaa_and_ptr_on_dual_stack() {
    let env = env_or_skip!("dnsd_answers_aaaa_and_ptr_on_dual_stack");
    let d = Dnsd::new(&env);
    let (g4, g6) = (ip4(74, 1), "fd10:89:74::1".to_string());
    let net = Network::bridge("dual", &env.name("br0"))
        .subnet("10.89.74.0/24", Some(&g4))
        .subnet("fd10:89:74::/64", Some(&g6))
        .dns(true);
    let (a, b) = (env.container("a"), env.container("b"));
    let (a6, b6) = ("fd10:89:74::2", "fd10:89:74::3");
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(74, 2), a6]));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(74, 3), b6]).alias("bee"));
    d.setup(&a, &oa);
    d.setup(&b, &ob);

    // A and AAAA are separate (not combined), over v4 and over v6
    for gw in [&g4, &g6] {
        let ans = expect_addrs(&a.ns, gw, "b", AAAA, &[b6]);
        assert_eq!(ans.ttls, vec![0], "{ans:?}");
        expect_addrs(&a.ns, gw, "bee.dns.podman", AAAA, &[b6]);
        expect_addrs(&a.ns, gw, "b", A, &[&ip4(74, 3)]);
        expect_addrs(&b.ns, gw, "A.DNS.PODMAN", AAAA, &[a6]);
    }

    // PTR, v4 and v6, from either family, with the container's names
    for gw in [&g4, &g6] {
        for (ip, want) in
            [(ip4(74, 3), vec!["b", "bee"]), (b6.to_string(), vec!["b", "bee"]), (a6.to_string(), vec!["a"])]
        {
            let name = reverse(&ip);
            let ans = eventually(&format!("PTR {name} at {gw}"), || {
                let r = query(&a.ns, gw, &name, PTR)?;
                if r.rcode == NOERROR && !r.names.is_empty() {
                    Ok(r)
                } else {
                    Err(format!("{r:?}"))
                }
            });
            assert_eq!(ans.names, want, "PTR {name}: {ans:?}");
            assert!(ans.aa, "{ans:?}");
        }
    }
    // upper-case reverse names are the same names
    let ans = query(&b.ns, &g4, &reverse(a6).to_uppercase(), PTR).expect("PTR upper case");
    assert_eq!(ans.names, vec!["a"], "{ans:?}");
    let pid = d.running();
    for (c, o) in [(&a, &oa), (&b, &ob)] {
        d.teardown(c, o);
    }
    d.assert_exited(pid);
}

#[test]
fn dnsd_forwards_to_container_then_network_servers_never_on_internal() {
    let test = "dnsd_forwards_to_container_then_network_servers_never_on_internal";
    let env = env_or_skip!(test);
    if !need_dnsmasq(test) {
        return;
    }
    let d = Dnsd::new(&env);
    // two upstream resolvers in the upstream namespace: .1 answers .99, .3 answers .98
    let lan = env.name("lan");
    env.upstream.ip_ok(&["addr", "add", "198.18.0.3/24", "dev", &lan]);
    let (_m1, log1) = dnsmasq(&env, UPSTREAM_IP4, UPSTREAM_ANSWER);
    let (_m3, log3) = dnsmasq(&env, "198.18.0.3", "198.18.0.98");

    let net = bridge4(&env, "fwd", "br0", 75).dns(true);
    let internal = bridge4(&env, "priv", "br1", 76).dns(true).internal(true);
    let (gw, gi) = (ip4(75, 1), ip4(76, 1));
    let (c, n, i) = (env.container("c"), env.container("n"), env.container("i"));
    // c: its own servers (.1) on a network whose servers are .3; n: no servers of its own
    let oc = Opts::new(&c).net(&net, Attach::eth0(&[&ip4(75, 2)])).dns_server(UPSTREAM_IP4);
    let on = Opts::new(&n).net(&net, Attach::eth0(&[&ip4(75, 3)]));
    let oi = Opts::new(&i).net(&internal, Attach::eth0(&[&ip4(76, 2)])).dns_server(UPSTREAM_IP4);
    let (jc, jn) = (with_network_dns(&oc, "fwd", &["198.18.0.3"]), with_network_dns(&on, "fwd", &["198.18.0.3"]));
    let ji = with_network_dns(&oi, "priv", &[UPSTREAM_IP4]);
    d.raw("setup", &c, &jc).expect_ok("setup c");
    d.raw("setup", &n, &jn).expect_ok("setup n");
    d.raw("setup", &i, &ji).expect_ok("setup i");
    let conf = std::fs::read_to_string(env.config_dir().join("aardvark-dns/fwd")).expect("fwd config");
    assert!(conf.lines().next().is_some_and(|l| l.ends_with(" 198.18.0.3")), "network servers on line 1: {conf}");
    assert!(env.config_dir().join("aardvark-dns/priv%int").is_file(), "the internal network's file is marked %int");

    // internal network first, so that dnsmasq's logs show nothing came from it
    expect_addrs(&i.ns, &gi, "i", A, &[&ip4(76, 2)]);
    let before = dnsmasq_queries(&log1, "upstream.test");
    expect_rcode(&i.ns, &gi, "upstream.test", A, NXDOMAIN);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(dnsmasq_queries(&log1, "upstream.test"), before, "nothing was forwarded from the internal network");

    // the container's own servers win over the network's
    let ans = expect_addrs(&c.ns, &gw, "upstream.test", A, &[UPSTREAM_ANSWER]);
    // (dnsmasq marks its configured answers authoritative; dnsd relays the upstream's flags)
    assert!(ans.ra, "a forwarded answer: RA set: {ans:?}");
    expect_addrs(&c.ns, &gw, "www.UPSTREAM.test", A, &[UPSTREAM_ANSWER]);
    // without its own servers: the network's
    expect_addrs(&n.ns, &gw, "upstream.test", A, &[UPSTREAM_ANSWER.replace("99", "98").as_str()]);
    assert!(dnsmasq_queries(&log1, "upstream.test") > before, "dnsmasq .1 saw c's query");
    assert!(dnsmasq_queries(&log3, "upstream.test") > 0, "dnsmasq .3 saw n's query");
    // container names are still answered locally, and the search domain is never forwarded
    expect_addrs(&c.ns, &gw, "n", A, &[&ip4(75, 3)]);
    expect_rcode(&c.ns, &gw, "upstream.test.dns.podman", A, NXDOMAIN);
    assert_eq!(dnsmasq_queries(&log1, "upstream.test.dns.podman"), 0, "search domain never forwarded");

    let pid = d.running();
    for (ctr, doc) in [(&c, &jc), (&n, &jn), (&i, &ji)] {
        d.raw("teardown", ctr, doc).expect_ok("teardown");
    }
    d.assert_exited(pid);
}

#[test]
fn dnsd_answers_over_tcp() {
    let test = "dnsd_answers_over_tcp";
    let env = env_or_skip!(test);
    if !need_dnsmasq(test) {
        return;
    }
    let d = Dnsd::new(&env);
    let (_m, log) = dnsmasq(&env, UPSTREAM_IP4, UPSTREAM_ANSWER);
    let net = bridge4(&env, "tcpnet", "br0", 77).dns(true);
    let gw = ip4(77, 1);
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(77, 2)])).dns_server(UPSTREAM_IP4);
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(77, 3)]).alias("bee"));
    d.setup(&a, &oa);
    d.setup(&b, &ob);

    // a container name over TCP
    let ans = eventually("TCP query for b", || {
        let r = query_tcp(&a.ns, &gw, "b", A)?;
        if r.addrs_sorted() == [ip4(77, 3)] {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    });
    assert!(ans.aa && !ans.tc && ans.rcode == NOERROR, "{ans:?}");
    // several queries on one connection: names, NXDOMAIN, PTR and a forwarded name
    let queries: Vec<(String, u16)> = vec![
        ("bee.dns.podman".into(), A),
        ("nobody.dns.podman".into(), A),
        (reverse(&ip4(77, 2)), PTR),
        ("upstream.test".into(), A),
        ("b".into(), AAAA),
    ];
    let srv = server(&gw, 53);
    let answers = in_ns(&a.ns, move || tcp_exchange(srv, &queries, Duration::from_secs(4))).expect("tcp exchange");
    assert_eq!(answers[0].addrs_sorted(), [ip4(77, 3)], "{:?}", answers[0]);
    assert_eq!(answers[1].rcode, NXDOMAIN, "{:?}", answers[1]);
    assert_eq!(answers[2].names, vec!["a"], "{:?}", answers[2]);
    assert_eq!(answers[3].addrs_sorted(), [UPSTREAM_ANSWER], "forwarded over TCP: {:?}", answers[3]);
    assert!(answers[3].ra, "{:?}", answers[3]);
    assert_eq!((answers[4].rcode, answers[4].addrs.len()), (NOERROR, 0), "{:?}", answers[4]);
    assert!(dnsmasq_queries(&log, "upstream.test") > 0, "dnsmasq saw the forwarded query");
    // the connection-less UDP path still works alongside
    expect_addrs(&b.ns, &gw, "a", A, &[&ip4(77, 2)]);
    let pid = d.running();
    for (c, o) in [(&a, &oa), (&b, &ob)] {
        d.teardown(c, o);
    }
    d.assert_exited(pid);
}

/// What the querier thread saw.
#[derive(Debug, Default)]
struct Load {
    ok: usize,
    failed: Vec<String>,
}

#[test]
fn dnsd_reload_under_load_loses_no_query() {
    let env = env_or_skip!("dnsd_reload_under_load_loses_no_query");
    let d = Dnsd::new(&env);
    let stable = bridge4(&env, "stable", "br0", 80).dns(true);
    let churn = bridge4(&env, "churn", "br1", 81).dns(true);
    let gw = ip4(80, 1);
    let (q, s) = (env.container("q"), env.container("s"));
    let oq = Opts::new(&q).net(&stable, Attach::eth0(&[&ip4(80, 2)]));
    let os = Opts::new(&s).net(&stable, Attach::eth0(&[&ip4(80, 3)]).alias("target"));
    d.setup(&q, &oq);
    pin_bridge_mac(&env, &stable);
    d.setup(&s, &os);
    let pid = d.running();
    expect_addrs(&q.ns, &gw, "target", A, &[&ip4(80, 3)]);

    // the querier: `target` over and over (every 5th over TCP), no retries
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, gw2, want) = (Arc::clone(&stop), gw.clone(), vec![ip4(80, 3)]);
    let querier = spawn_in(&q.ns, move || {
        let mut load = Load::default();
        let srv = server(&gw2, 53);
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            n += 1;
            let t0 = Instant::now();
            let res = if n.is_multiple_of(5) {
                tcp_exchange(srv, &[("target.dns.podman".into(), A)], Duration::from_secs(2)).map(|mut v| v.remove(0))
            } else {
                udp_exchange(srv, "target", A, Duration::from_secs(2))
            };
            match res {
                Ok(a) if a.rcode == NOERROR && a.addrs_sorted() == want => load.ok += 1,
                Ok(a) => load.failed.push(format!("query {n}: {a:?}")),
                Err(e) => load.failed.push(format!("query {n} after {:?}: {e}", t0.elapsed())),
            }
            std::thread::sleep(Duration::from_millis(4));
        }
        load
    });

    // containers come and go on the stable network, and a whole network (with its
    // listener) comes and goes, while the querier runs
    let start = Instant::now();
    for round in 0..10 {
        let mut added = Vec::new();
        for k in 0..3u8 {
            let c = env.container(&format!("t{round}x{k}"));
            let o = Opts::new(&c).net(&stable, Attach::eth0(&[&ip4(80, 10 + 3 * round + k)]));
            d.setup(&c, &o);
            added.push((c, o));
        }
        let w = env.container(&format!("w{round}"));
        let ow = Opts::new(&w).net(&churn, Attach::eth0(&[&ip4(81, 10 + round)]));
        d.setup(&w, &ow);
        let name = format!("t{round}x1");
        expect_addrs(&q.ns, &gw, &name, A, &[&ip4(80, 10 + 3 * round + 1)]);
        expect_addrs(&w.ns, &ip4(81, 1), &w.name, A, &[&ip4(81, 10 + round)]);
        d.teardown(&w, &ow);
        for (c, o) in &added {
            d.teardown(c, o);
        }
        eventually("a removed container is forgotten", || match query(&q.ns, &gw, &format!("{name}.dns.podman"), A)? {
            a if a.rcode == NXDOMAIN => Ok(()),
            a => Err(format!("{a:?}")),
        });
    }
    // and a few reloads with nothing changed but the signal
    for _ in 0..20 {
        // SAFETY: kill(2) with the pid of the running dnsd (checked just above by running()).
        unsafe {
            libc::kill(pid, libc::SIGHUP);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let load = querier.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    let secs = start.elapsed().as_secs_f64();
    eprintln!("dnsd under reload: {} queries answered in {secs:.1} s, {} failed", load.ok, load.failed.len());
    assert!(load.failed.is_empty(), "{} of {} queries failed: {:#?}", load.failed.len(), load.ok, load.failed);
    assert!(load.ok >= 200, "the querier ran ({} queries in {secs:.1} s)", load.ok);
    assert_eq!(d.running(), pid, "one dnsd all along");
    d.teardown(&s, &os);
    d.teardown(&q, &oq);
    d.assert_exited(pid);
}

#[test]
fn dnsd_start_failure_when_the_port_is_taken() {
    let env = env_or_skip!("dnsd_start_failure_when_the_port_is_taken");
    let d = Dnsd::new(&env);
    let net = bridge4(&env, "busy", "br0", 82).dns(true);
    let gw = ip4(82, 1);
    let c = env.container("c");
    let o = Opts::new(&c).net(&net, Attach::eth0(&[&ip4(82, 2)]));
    let port: u16 = 5354;
    // something else already listens on the port (on every address) in the host namespace
    let squatter = in_ns(&env.host, move || UdpSocket::bind(("0.0.0.0", port)).expect("bind the squatter"));
    let before = env.host_snapshot();

    let netd = |c: &Container, o: &Opts, cmd_: &str| -> NetdOut {
        let mut cmd = std::process::Command::new("ip");
        cmd.env("NETAVARK_DNS_PORT", port.to_string())
            .args(["netns", "exec", env.host.name()])
            .arg(env.netd_bin())
            .arg("--config")
            .arg(env.config_dir())
            .args(d.args())
            .args([cmd_, &c.path_str()]);
        let out = cmd::run(cmd, Some(o.to_json().to_string().as_bytes()), Duration::from_secs(60));
        NetdOut { code: out.code.unwrap_or(-1), stdout: out.stdout, stderr: out.stderr, cmdline: out.cmdline }
    };
    let out = netd(&c, &o, "setup");
    let msg = out.expect_error("setup with the DNS port taken");
    eprintln!("netd's error: {msg}");
    assert!(msg.contains("aardvark-dns failed to start"), "netd names the DNS helper: {msg}");
    assert!(msg.contains(&format!("{gw}:{port}")), "the error names the address dnsd could not bind: {msg}");
    assert!(msg.to_lowercase().contains("in use"), "the error gives dnsd's reason: {msg}");
    assert_eq!(msg.matches(&format!("{gw}:{port}")).count(), 1, "dnsd's reason is given once: {msg}");

    // the host is as before: no bridge, no veth, no rules, no DNS config, no dnsd
    let br = env.name("br0");
    assert!(env.link_details(&env.host, &br).is_none(), "the failed setup removed the bridge it made");
    before.assert_same(&env.host_snapshot(), "after the failed setup");
    assert!(d.pid().is_none(), "no pid file is left");
    let left: Vec<String> = std::fs::read_dir(env.config_dir().join("aardvark-dns"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the DNS config entries are removed again: {left:?}");
    assert_eq!(env.links(&c.ns, None), vec!["lo".to_string()], "the container is left with lo only");

    // positive control: once the port is free the same setup works on it
    drop(squatter);
    netd(&c, &o, "setup").expect_ok("setup with the port free");
    let pid = d.running();
    let (srv, want) = (server(&gw, port), vec![ip4(82, 2)]);
    eventually("c resolves itself on the custom port", || {
        let want = want.clone();
        let a = in_ns(&c.ns, move || udp_exchange(srv, "c", A, Duration::from_secs(2)))?;
        if a.addrs_sorted() == want {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    });
    netd(&c, &o, "teardown").expect_ok("teardown");
    d.assert_exited(pid);
}
