//! "As a user would": rootless podman 4.3.1 (as `rpodtest`) with `network_cmd_path` = portfwd,
//! running a busybox httpd with a published port, fetched from the host: once with
//! `port_handler=slirp4netns` (the port goes through our API socket) and once with podman's
//! default port handler (rootlessport, with portfwd as the network).

use std::process::Command;
use std::time::Duration;

use crate::common::*;

struct Podman {
    dir: TempDir,
    prefix: String,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path().to_string_lossy().into_owned();
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "rpodtest", "--regid", "rpodtest", "--init-groups", "env", "-i"])
            .arg("HOME=/home/rpodtest")
            .arg("USER=rpodtest")
            .arg(format!("XDG_RUNTIME_DIR={d}/run"))
            .arg(format!("CONTAINERS_CONF={d}/containers.conf"))
            .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("podman")
            .args(["--root", &format!("{d}/root"), "--runroot", &format!("{d}/runroot"), "--storage-driver", "overlay"])
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        let o = self.cmd(args).output().expect("podman");
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-f", "-a", "-t", "0"]);
        // the rootless pause process holds the user and mount namespaces
        let pause = self.dir.path().join("run/libpod/tmp/pause.pid");
        if let Ok(p) = std::fs::read_to_string(pause) {
            if let Ok(pid) = p.trim().parse::<i32>() {
                // SAFETY: kill of a process this test started (through podman).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // stray processes that carry our unique prefix in their command line
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
                let cl = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cl).contains(&self.prefix) && pid != std::process::id() as i32 {
                    // SAFETY: the prefix is unique to this test.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Command lines (space-joined) of processes whose argv[0] is `bin`.
fn procs_with(bin: &str) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cl = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cl = String::from_utf8_lossy(&cl).replace('\0', " ");
        if cl.starts_with(bin) {
            v.push(cl);
        }
    }
    v
}

fn rootfs(dir: &TempDir) -> String {
    let r = dir.join("rootfs");
    for d in ["bin", "www", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(format!("{r}/{d}")).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", format!("{r}/bin/busybox")).expect("busybox");
    for a in ["sh", "httpd", "wget", "cat", "sleep", "ip", "ping", "nslookup"] {
        let _ = std::os::unix::fs::symlink("busybox", format!("{r}/bin/{a}"));
    }
    std::fs::write(format!("{r}/www/index.html"), "hello from the container\n").expect("www");
    r
}

#[test]
fn rootless_podman_with_portfwd() {
    if !can_run("rootless_podman_with_portfwd", &["podman", "setpriv", "runc"]) {
        return;
    }
    if !Command::new("id").arg("rpodtest").output().map(|o| o.status.success()).unwrap_or(false) {
        if std::env::var("RPOD_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("user rpodtest missing (scripts/setup.sh creates it)");
        }
        eprintln!("SKIP rootless_podman_with_portfwd: no user rpodtest");
        return;
    }
    let prefix = prefix();
    // short: the API socket path must stay under 108 bytes
    let dir = TempDir::new(&format!("{prefix}pm"));
    // the binary must be reachable by rpodtest
    let bin = dir.join("portfwd");
    std::fs::copy(BIN, &bin).expect("copy portfwd");
    std::fs::create_dir_all(dir.join("run")).expect("mkdir");
    std::fs::write(
        dir.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nnetwork_cmd_path = \"{bin}\"\n"
        ),
    )
    .expect("conf");
    let rootfs = rootfs(&dir);
    let _ = Command::new("chown").args(["-R", "rpodtest:rpodtest", &dir.0.to_string_lossy()]).status();
    let _ = Command::new("chmod").args(["0700", &dir.join("run")]).status();
    let pm = Podman { dir, prefix: prefix.clone() };

    for (name, network) in [("api", "slirp4netns:port_handler=slirp4netns"), ("rlp", "slirp4netns")] {
        let hp = free_port();
        let cname = format!("{prefix}{name}");
        let (ok, o) = pm.run(&[
            "run",
            "-d",
            "--name",
            &cname,
            "--network",
            network,
            "-p",
            &format!("{hp}:80"),
            "--rootfs",
            &rootfs,
            "/bin/httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ]);
        assert!(ok, "podman run ({network}): {o}");
        let mut got = String::new();
        let fetched = wait_for(10, || {
            got = tcp_req(&format!("127.0.0.1:{hp}"), "GET / HTTP/1.0\r\n\r\n");
            got.contains("hello from the container")
        });
        assert!(fetched, "{network}: {got}");
        // it is our binary that serves the container, with the API socket when asked
        let ours = procs_with(&pm.dir.join("portfwd"));
        assert!(!ours.is_empty(), "portfwd is not running");
        assert_eq!(ours.iter().any(|c| c.contains("--api-socket")), name == "api", "{ours:?}");
        // the container reaches the outside through portfwd (ping of the gateway answered by it)
        let (ok, o) = pm.run(&["exec", &cname, "/bin/ping", "-c", "1", "-W", "2", "10.0.2.2"]);
        assert!(ok && o.contains("1 packets received"), "{o}");
        let (ok, o) = pm.run(&["rm", "-f", "-t", "0", &cname]);
        assert!(ok, "{o}");
    }
}
