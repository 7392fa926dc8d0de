//! portfwd run by the unprivileged user `rpodtest` for a user+network namespace of its own.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

const AS_USER: &[&str] = &["setpriv", "--reuid", "rpodtest", "--regid", "rpodtest", "--init-groups"];

fn user_exists() -> bool {
    Command::new("id").arg("rpodtest").output().map(|o| o.status.success()).unwrap_or(false)
}

fn chown_user(p: &str) {
    let _ = Command::new("chown").args(["-R", "rpodtest:rpodtest", p]).status();
}

#[test]
fn unprivileged_user_namespace() {
    if !can_run("unprivileged_user_namespace", &["setpriv", "unshare", "nsenter", "python3"]) {
        return;
    }
    if !user_exists() {
        if std::env::var("RPOD_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("user rpodtest missing (scripts/setup.sh creates it)");
        }
        eprintln!("SKIP unprivileged_user_namespace: no user rpodtest (scripts/setup.sh creates it)");
        return;
    }
    let p = prefix();
    let dir = TempDir::new(&p);
    let probe = probe(&dir);
    chown_user(&dir.0.to_string_lossy());
    // the "container": a user+network namespace owned by rpodtest
    let mut target = spawn({
        let mut c = Command::new(AS_USER[0]);
        c.args(&AS_USER[1..]).args(["unshare", "-U", "-r", "-n", "sleep", "60"]);
        c
    });
    let pid = target.pid().to_string();
    assert!(wait_for(5, || {
        let a = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
        let b = std::fs::read_link("/proc/self/ns/user").ok();
        a.is_some() && a != b
    }));
    let sock = dir.join("api.sock");
    let mut pf = Portfwd::start(
        AS_USER,
        &["-c", "--enable-sandbox", "--enable-seccomp", "--api-socket", &sock, &pid, "tap0"],
        &dir.join("pf.log"),
    )
    .expect("start as rpodtest");
    let in_ns = |args: &[&str]| {
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid, "-n"]).args(args);
        out(c)
    };
    let a = in_ns(&["ip", "-o", "addr", "show", "tap0"]);
    assert!(a.contains("10.0.2.100/24"), "{a}\n{}", pf.log_text());
    // outbound to the host's loopback
    let t = tcp_echo("127.0.0.1:0");
    assert_eq!(in_ns(&["python3", &probe, "tcp", "10.0.2.2", &t.port().to_string(), "rootless"]), "host:rootless");
    let u = udp_echo("127.0.0.1:0");
    assert_eq!(in_ns(&["python3", &probe, "udp", "10.0.2.2", &u.port().to_string(), "ru"]), "host:ru");
    // a forward through the API into the user-owned namespace (splice path)
    let mut srv = {
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid, "-n", "python3", &probe, "serve", "8080", "60"]).stdout(std::process::Stdio::piped());
        spawn(c)
    };
    let mut line = String::new();
    use std::io::BufRead;
    let _ = std::io::BufReader::new(srv.0.stdout.take().expect("stdout")).read_line(&mut line);
    let hp = free_port();
    let r = api(
        &sock,
        &format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{hp},"guest_addr":"","guest_port":8080}}}}"#
        ),
    );
    assert_eq!(r, r#"{"return":{"id":1}}"#, "{}", pf.log_text());
    assert_eq!(tcp_req(&format!("127.0.0.1:{hp}"), "fwd"), "guest:fwd");
    // the process runs as rpodtest
    let status = std::fs::read_to_string(format!("/proc/{}/status", pf.proc.pid())).unwrap_or_default();
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("1001")), "{status}");
    // the namespace's process goes away: portfwd exits cleanly
    drop(srv);
    // SAFETY: killing our own child.
    unsafe { libc::kill(target.pid(), libc::SIGKILL) };
    let _ = target.0.wait();
    let st = pf.proc.exited_within(Duration::from_secs(5));
    assert!(st.map(|s| s.success()).unwrap_or(false), "{st:?}\n{}", pf.log_text());
}
