//! Runs without root: listeners on 127.0.0.x and a high port, a fake upstream on 127.0.0.2.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use dnsd::handler::Settings;
use dnsd::server::Daemon;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port(ip: &str) -> u16 {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    let t = std::net::TcpListener::bind((ip, s.local_addr().unwrap().port()));
    let port = s.local_addr().unwrap().port();
    drop(t);
    port
}

fn query_msg(name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

async fn udp(from: &str, to: SocketAddr, m: &Message) -> Option<Message> {
    let s = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
    s.send_to(&m.to_vec().unwrap(), to).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(3), s.recv(&mut buf)).await.ok()?.unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

async fn udp_raw(to: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(bytes, to).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await.ok()?.unwrap();
    Some(buf[..n].to_vec())
}

async fn tcp(to: SocketAddr, m: &Message) -> Message {
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    let b = m.to_vec().unwrap();
    let mut out = (b.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    s.write_all(&out).await.unwrap();
    let mut l = [0u8; 2];
    s.read_exact(&mut l).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(l) as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// A fake upstream: answers every A query with 1.2.3.4 over TCP, and over UDP either the
/// same or (when `truncate`) an empty truncated answer.
async fn fake_upstream(ip: &str, port: u16, truncate: bool) {
    let u = tokio::net::UdpSocket::bind((ip, port)).await.unwrap();
    let t = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let answer = |q: &Message, full: bool| {
        let mut r = q.clone();
        r.metadata.message_type = hickory_proto::op::MessageType::Response;
        r.metadata.recursion_available = true;
        if full {
            let name = q.queries[0].name().clone();
            r.add_answer(Record::from_rdata(
                name,
                300,
                RData::A(hickory_proto::rr::rdata::A("1.2.3.4".parse().unwrap())),
            ));
        } else {
            r.metadata.truncation = true;
        }
        r.to_vec().unwrap()
    };
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = u.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            u.send_to(&answer(&q, !truncate), from).await.unwrap();
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut s, _) = t.accept().await.unwrap();
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.unwrap();
            let mut buf = vec![0u8; u16::from_be_bytes(l) as usize];
            s.read_exact(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf).unwrap();
            let r = answer(&q, true);
            let mut out = (r.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&r);
            s.write_all(&out).await.unwrap();
        }
    });
}

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_forward_reload() {
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf.ignored");
    std::fs::write(&resolv, "nameserver 127.0.0.2\n").unwrap();
    let confdir = dir.path().join("conf");
    std::fs::create_dir(&confdir).unwrap();
    let port = free_port("127.0.0.1");
    let up_port = free_port("127.0.0.2");
    fake_upstream("127.0.0.2", up_port, true).await;
    // 127.0.0.1 is the gateway; 127.0.0.5 is a container; a bad file is skipped
    write(&confdir, "net1", "127.0.0.1\nc1 127.0.0.5 fd00::5 web,Alias\nc2 127.0.0.6  db\n");
    write(&confdir, "broken", "127.0.0.9\nc9 127.0.0.10\n");
    write(&confdir, "priv%int", "127.0.0.4\nc4 127.0.0.44  secret\n");
    let settings = Settings { ttl: 7, upstream_port: up_port, upstream_timeout: Duration::from_secs(2) };
    let mut d = Daemon::start_with(&confdir, &resolv, port, settings).unwrap();
    let gw: SocketAddr = ([127, 0, 0, 1], port).into();

    // A from the host (in no network): sees the network asked
    let r = udp("127.0.0.1", gw, &query_msg("WEB.dns.podman.", RecordType::A)).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&r), vec!["127.0.0.5".parse::<IpAddr>().unwrap()]);
    assert_eq!(r.answers[0].ttl, 7);
    assert!(r.metadata.recursion_available);
    // AAAA and PTR from a container
    let r = udp("127.0.0.6", gw, &query_msg("alias", RecordType::AAAA)).await.unwrap();
    assert_eq!(addrs(&r), vec!["fd00::5".parse::<IpAddr>().unwrap()]);
    let r = udp("127.0.0.6", gw, &query_msg("5.0.0.127.in-addr.arpa.", RecordType::PTR)).await.unwrap();
    let ptrs: Vec<String> = r.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ptrs, vec!["web.", "alias."]);
    // the internal network's name is not visible; the search domain is never forwarded
    let r = udp("127.0.0.6", gw, &query_msg("secret.dns.podman.", RecordType::A)).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // TCP
    let r = tcp(gw, &query_msg("db", RecordType::A)).await;
    assert_eq!(addrs(&r), vec!["127.0.0.6".parse::<IpAddr>().unwrap()]);

    // forwarded (host resolv.conf), truncated over UDP upstream, retried over TCP
    let r = udp("127.0.0.6", gw, &query_msg("example.com.", RecordType::A)).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&r), vec!["1.2.3.4".parse::<IpAddr>().unwrap()]);
    let r = tcp(gw, &query_msg("example.com.", RecordType::A)).await;
    assert_eq!(addrs(&r), vec!["1.2.3.4".parse::<IpAddr>().unwrap()]);
    // with EDNS
    let mut q = query_msg("example.org.", RecordType::A);
    q.set_edns(Edns::new());
    let r = udp("127.0.0.6", gw, &q).await.unwrap();
    assert_eq!(addrs(&r), vec!["1.2.3.4".parse::<IpAddr>().unwrap()]);
    // the internal network does not forward
    let int: SocketAddr = ([127, 0, 0, 4], port).into();
    let r = udp("127.0.0.44", int, &query_msg("example.com.", RecordType::A)).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = udp("127.0.0.44", int, &query_msg("secret", RecordType::A)).await.unwrap();
    assert_eq!(addrs(&r), vec!["127.0.0.44".parse::<IpAddr>().unwrap()]);

    // malformed: garbage after a valid header gets FORMERR; a short packet is dropped
    let mut bad = query_msg("web", RecordType::A).to_vec().unwrap();
    bad.truncate(15);
    let resp = udp_raw(gw, &bad).await.expect("FORMERR");
    assert_eq!(resp[3] & 0x0f, 1, "FORMERR");
    assert!(udp_raw(gw, &[1, 2, 3]).await.is_none());
    let r = udp("127.0.0.6", gw, &query_msg("web", RecordType::A)).await.unwrap();
    assert_eq!(addrs(&r).len(), 1);

    // reload: a new network adds a listener, the old one keeps working
    assert_eq!(d.addresses().len(), 2);
    write(&confdir, "net2", "127.0.0.3\nc3 127.0.0.33  other\n");
    assert!(d.inputs_changed());
    assert!(d.reload().await.unwrap());
    assert_eq!(d.addresses().len(), 3);
    let r = udp("127.0.0.33", ([127, 0, 0, 3], port).into(), &query_msg("other", RecordType::A)).await.unwrap();
    assert_eq!(addrs(&r), vec!["127.0.0.33".parse::<IpAddr>().unwrap()]);
    let r = udp("127.0.0.33", gw, &query_msg("web.dns.podman", RecordType::A)).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "isolation");
    // a file that goes bad keeps its last good version
    write(&confdir, "net2", "127.0.0.3\nc3 bogus  other\n");
    assert!(d.reload().await.unwrap());
    assert_eq!(d.addresses().len(), 3);
    // removal stops the listener
    std::fs::remove_file(confdir.join("net2")).unwrap();
    std::fs::remove_file(confdir.join("priv%int")).unwrap();
    assert!(d.reload().await.unwrap());
    assert_eq!(d.addresses(), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    assert!(udp_raw(([127, 0, 0, 3], port).into(), &query_msg("other", RecordType::A).to_vec().unwrap())
        .await
        .is_none());
    let r = udp("127.0.0.6", gw, &query_msg("web", RecordType::A)).await.unwrap();
    assert_eq!(addrs(&r).len(), 1);
    // nothing left
    std::fs::remove_file(confdir.join("net1")).unwrap();
    std::fs::remove_file(confdir.join("broken")).unwrap();
    assert!(!d.reload().await.unwrap());
    d.shutdown().await;
}

#[tokio::test]
async fn port_taken_fails_start() {
    let dir = tempfile::tempdir().unwrap();
    // Bind first and take the kernel's port: no window for another test to take it.
    let _busy = UdpSocket::bind(("127.0.0.7", 0)).unwrap();
    let port = _busy.local_addr().unwrap().port();
    write(dir.path(), "n", "127.0.0.7\n");
    let e = Daemon::start(dir.path(), port, Settings::default()).unwrap_err();
    assert!(format!("{e:#}").contains("127.0.0.7"), "{e:#}");
    let empty = tempfile::tempdir().unwrap();
    assert!(Daemon::start(empty.path(), port, Settings::default()).is_err());
}

#[test]
fn binary_run_forks_and_exits_on_last_network() {
    let bin = env!("CARGO_BIN_EXE_dnsd");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port("127.0.0.8");
    write(dir.path(), "n", "127.0.0.8\nc 127.0.0.88  box\n");
    let out = std::process::Command::new(bin)
        .args(["--config", dir.path().to_str().unwrap(), "-p", &port.to_string(), "run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid_file = dir.path().join("aardvark.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // answers
    let s = UdpSocket::bind("127.0.0.88:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(&query_msg("box", RecordType::A).to_vec().unwrap(), ("127.0.0.8", port)).unwrap();
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(addrs(&Message::from_vec(&buf[..n]).unwrap()), vec!["127.0.0.88".parse::<IpAddr>().unwrap()]);
    // a second instance on the same port fails with the reason
    let dir2 = tempfile::tempdir().unwrap();
    write(dir2.path(), "n", "127.0.0.8\n");
    let out = std::process::Command::new(bin)
        .args(["--config", dir2.path().to_str().unwrap(), "-p", &port.to_string(), "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.8"), "{err}");
    assert!(!dir2.path().join("aardvark.pid").exists());
    // last network removed + SIGHUP: exits and removes its pid file
    std::fs::remove_file(dir.path().join("n")).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP).unwrap();
    for _ in 0..50 {
        if !pid_file.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!pid_file.exists());
    let out = std::process::Command::new(bin).arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("version"));
}
