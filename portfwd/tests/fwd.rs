//! Host port forwarding: the API socket (add/list/remove, errors) and `--publish`, with the
//! sandbox and seccomp filter on.

use std::process::Command;

use crate::common::*;

fn serve(ns: &Netns, probe: &str, port: u16, v6: bool) -> Proc {
    let mut c = ns.cmd("python3");
    c.arg(probe).args(["serve", &port.to_string(), "60"]);
    if v6 {
        c.arg("6");
    }
    c.stdout(std::process::Stdio::piped());
    let mut p = spawn(c);
    let mut line = String::new();
    use std::io::BufRead;
    let so = p.0.stdout.take().expect("stdout");
    let _ = std::io::BufReader::new(so).read_line(&mut line);
    assert_eq!(line.trim(), "listening");
    p
}

#[test]
fn api_forwards_and_errors() {
    if !can_run("api_forwards_and_errors", &["ip", "python3"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    let sock = dir.join("api.sock");
    let pf = Portfwd::start(
        &[],
        &["-c", "--enable-sandbox", "--enable-seccomp", "--api-socket", &sock, "--netns-type=path", &ns.path(), "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start");
    let _srv = serve(&ns, &probe, 8080, false);
    let hp = free_port();
    let add = |proto: &str, port: u16| {
        api(
            &sock,
            &format!(
                r#"{{"execute":"add_hostfwd","arguments":{{"proto":"{proto}","host_addr":"127.0.0.1","host_port":{port},"guest_addr":"","guest_port":8080}}}}"#
            ),
        )
    };
    assert_eq!(add("tcp", hp), r#"{"return":{"id":1}}"#, "{}", pf.log_text());
    assert_eq!(add("udp", hp), r#"{"return":{"id":2}}"#);
    assert_eq!(tcp_req(&format!("127.0.0.1:{hp}"), "abc"), "guest:abc");
    assert_eq!(udp_req(&format!("127.0.0.1:{hp}"), "u1"), "guest:u1");
    // the same port again: a clear error, and the loop survives
    // (exactly {"error":{"desc":...}}: the reason is in the text, no other key)
    let e = add("tcp", hp);
    let v: serde_json::Value = serde_json::from_str(&e).expect("json reply");
    let o = v.as_object().expect("object");
    assert_eq!(o.len(), 1, "{e}");
    let eo = o.get("error").and_then(|x| x.as_object()).expect("error object");
    assert_eq!(eo.len(), 1, "{e}");
    let desc = eo.get("desc").and_then(|x| x.as_str()).expect("desc");
    assert!(desc.starts_with("bad request: add_hostfwd: slirp_add_hostfwd failed") && desc.contains("in use"), "{e}");
    let l = api(&sock, r#"{"execute":"list_hostfwd"}"#);
    assert_eq!(
        l,
        format!(
            r#"{{"entries":[{{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":{hp},"guest_addr":"10.0.2.100","guest_port":8080}},{{"id":2,"proto":"udp","host_addr":"127.0.0.1","host_port":{hp},"guest_addr":"10.0.2.100","guest_port":8080}}]}}"#
        )
    );
    assert_eq!(api(&sock, r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#), r#"{"return":{}}"#);
    assert_eq!(
        api(&sock, r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#),
        r#"{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}"#
    );
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{hp}")).is_err(), "removed forward still listens");
    // ids are never reused
    assert_eq!(add("tcp", hp), r#"{"return":{"id":3}}"#);
    assert_eq!(tcp_req(&format!("127.0.0.1:{hp}"), "again"), "guest:again");
    // malformed requests
    for (req, desc) in [
        ("not json", "bad request: cannot parse JSON"),
        ("[1,2]", "bad request: json_object() failed"),
        (r#"{"x":1}"#, "bad request: no execute found"),
        (r#"{"execute":"reboot"}"#, "bad request: unknown execute"),
        (r#"{"execute":"add_hostfwd"}"#, "bad request: add_hostfwd: bad arguments.proto"),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":"x","guest_port":1}}"#,
            "bad request: add_hostfwd: bad arguments.host_port",
        ),
    ] {
        assert_eq!(api(&sock, req), format!(r#"{{"error":{{"desc":"{desc}"}}}}"#), "{req}");
    }
    let big = format!(r#"{{"execute":"list_hostfwd","pad":"{}"}}"#, "x".repeat(5000));
    assert_eq!(api(&sock, &big), r#"{"error":{"desc":"bad request: too large message"}}"#);
    // a client that connects and says nothing does not wedge the loop
    let _idle = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    drop(_idle);
    assert_eq!(api(&sock, r#"{"execute":"list_hostfwd"}"#).matches("\"id\"").count(), 2);
    assert!(pf.log_text().contains("api_handler: got request"));
    // --enable-seccomp and --enable-sandbox took effect
    let st = std::fs::read_to_string(format!("/proc/{}/status", pf.proc.pid())).unwrap_or_default();
    assert!(st.lines().any(|l| l.starts_with("Seccomp:") && l.ends_with('2')), "{st}");
    assert!(st.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')), "{st}");
    assert!(st.lines().any(|l| l.starts_with("CapEff:") && l.ends_with("0000000000000400")), "{st}");
    let root = std::fs::read_dir(format!("/proc/{}/root/", pf.proc.pid())).map(|d| d.count()).unwrap_or(99);
    assert_eq!(root, 0, "the sandbox root is not empty");
}

#[test]
fn publish_at_start_and_busy_port() {
    if !can_run("publish_at_start_and_busy_port", &["ip", "python3"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    let hp = free_port();
    let spec_t = format!("127.0.0.1:{hp}:9090");
    let spec_u = format!("127.0.0.1:{hp}:9090/udp");
    let spec_6 = format!("[::1]:{hp}:9090");
    let _pf = Portfwd::start(
        &[],
        &[
            "-c",
            "--enable-ipv6",
            "--publish",
            &spec_t,
            "--publish",
            &spec_u,
            "--publish",
            &spec_6,
            "--netns-type=path",
            &ns.path(),
            "tap0",
        ],
        &dir.join("pf.log"),
    )
    .expect("start");
    let _srv = serve(&ns, &probe, 9090, true);
    assert_eq!(tcp_req(&format!("127.0.0.1:{hp}"), "pub"), "guest:pub");
    assert_eq!(udp_req(&format!("127.0.0.1:{hp}"), "pubu"), "guest:pubu");
    assert_eq!(tcp_req(&format!("[::1]:{hp}"), "pub6"), "guest:pub6");
    // a second instance cannot take the same port: exits 1 before ready, with the reason
    let ns2 = Netns::new(&format!("{p}b"));
    let r = Portfwd::start(
        &[],
        &["-c", "--publish", &spec_t, "--netns-type=path", &ns2.path(), "tap0"],
        &dir.join("pf2.log"),
    );
    let e = r.err().expect("second instance must fail");
    assert!(e.contains("Address already in use"), "{e}");
    // big transfer through the splice path
    let big = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns=socket.create_connection(('127.0.0.1',{hp}))\nb=b'z'*65536\nfor _ in range(64): s.sendall(b)\ns.shutdown(socket.SHUT_WR)\nn=0\nwhile True:\n  d=s.recv(1<<20)\n  if not d: break\n  n+=len(d)\nprint(n)"
            ),
        ])
        .output()
        .expect("python");
    assert_eq!(String::from_utf8_lossy(&big.stdout).trim(), (64 * 65536 + 6).to_string());
}

#[test]
fn a_silent_or_slow_api_client_does_not_stall_the_network() {
    if !can_run("a_silent_or_slow_api_client_does_not_stall_the_network", &["ip", "python3", "timeout"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    let sock = dir.join("api.sock");
    let pf = Portfwd::start(
        &[],
        &["-c", "--api-socket", &sock, "--netns-type=path", &ns.path(), "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start");
    let t = tcp_echo("127.0.0.1:0");
    // one client connects and says nothing; another sends one byte every 200 ms
    let _silent = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribbler = {
        let stop = stop.clone();
        let mut d = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        std::thread::spawn(move || {
            use std::io::Write;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if d.write_all(b" ").is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    // TCP through the TAP keeps flowing, promptly
    let started = std::time::Instant::now();
    for i in 0..3 {
        let mut c = ns.cmd("timeout");
        c.args(["10", "python3", &probe, "tcp", "10.0.2.2", &t.port().to_string(), &format!("m{i}")]);
        assert_eq!(out(c), format!("host:m{i}"), "{}", pf.log_text());
    }
    let took = started.elapsed();
    // and the API still answers
    assert_eq!(api(&sock, r#"{"execute":"list_hostfwd"}"#), r#"{"entries":[]}"#);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = dribbler.join();
    assert!(took < std::time::Duration::from_secs(3), "3 connections took {took:?}");
}

fn rss_kib(pid: i32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    st.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_flooding_guest_does_not_wedge_portfwd() {
    if !can_run("a_flooding_guest_does_not_wedge_portfwd", &["ip", "python3"]) {
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    let ns = Netns::new(&p);
    let sock = dir.join("api.sock");
    let pf = Portfwd::start(
        &[],
        &["-c", "--api-socket", &sock, "--netns-type=path", &ns.path(), "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start");
    // the seccomp filter and no_new_privs are not on here; the flood goes to 2000 UDP flows
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("sink");
    let port = sink.local_addr().expect("addr").port().saturating_sub(1000).max(1024);
    let mut flood = {
        let mut c = ns.cmd("python3");
        c.arg(&probe).args(["flood", "10.0.2.2", &port.to_string(), "3"]);
        c.stdout(std::process::Stdio::piped());
        spawn(c)
    };
    let mut worst = std::time::Duration::ZERO;
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_millis(2500) {
        let t0 = std::time::Instant::now();
        let r = api(&sock, r#"{"execute":"list_hostfwd"}"#);
        assert_eq!(r, r#"{"entries":[]}"#);
        worst = worst.max(t0.elapsed());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = flood.0.wait();
    assert!(worst < std::time::Duration::from_millis(1000), "API took {worst:?} under flood");
    let rss = rss_kib(pf.proc.pid());
    assert!(rss < 256 * 1024, "RSS {rss} KiB");
    // and the guest's traffic still flows afterwards
    let e = tcp_echo("127.0.0.1:0");
    let got = {
        let mut c = ns.cmd("python3");
        c.arg(&probe).args(["tcp", "10.0.2.2", &e.port().to_string(), "after"]);
        out(c)
    };
    assert_eq!(got, "host:after");
    drop(sink);
}
