//! Integration tests of the container engine (`rpod run`, `ps`, `network`...): real
//! containers with runc, real traffic through netd.
//!
//! Root only. Each test gets a private network + mount + PID namespace made by `unshare`
//! (with a tmpfs on /run and a fresh /proc) that lives while the test runs; every `rpod`
//! command and host-side probe is run inside it with `nsenter`, so nothing touches the host's
//! networking, and everything (monitors, dnsd, mounts, bridges, nft tables) vanishes with it.
//! The image is a docker-archive the test builds from the host's static busybox.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{Out, IMG};

fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        for tool in ["runc", "unshare", "nsenter", "nft", "ip"] {
            if !common::in_path(tool) {
                assert!(!common::required(), "{test}: `{tool}` is missing");
                eprintln!("SKIPPED {test}: `{tool}` is not installed");
                return true;
            }
        }
        return false;
    }
    assert!(!common::required(), "{test}: needs root (RPOD_REQUIRE_ROOT=1)");
    eprintln!("SKIPPED {test}: needs root");
    true
}

/// A private net + mount + PID namespace holding one test's rpod world.
struct World {
    holder: Child,
    pid: u32,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let rpod = PathBuf::from(env!("CARGO_BIN_EXE_rpod"));
        let netd = rpod.with_file_name("netd");
        assert!(
            netd.is_file() && rpod.with_file_name("dnsd").is_file(),
            "{} or dnsd is not built: run `cargo build -p netd -p dnsd` first",
            netd.display()
        );
        let dir = tempfile::Builder::new().prefix("rpod-engine-").tempdir().unwrap();
        let (holder, pid) = common::ns_holder("mount -t tmpfs none /run");
        let w = World { holder, pid, dir };
        let archive = w.dir.path().join("bb.tar");
        std::fs::write(&archive, common::image_archive(&common::busybox().unwrap(), IMG)).unwrap();
        w.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
        w
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs a program inside the namespaces.
    fn exec(&self, prog: &str, args: &[&str]) -> Out {
        let pid = self.pid.to_string();
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid, "-n", "-m", "-p", "--", prog]).args(args);
        common::output_within_60s(&mut c, &format!("{prog} {args:?}"))
    }

    fn sh(&self, script: &str) -> Out {
        self.exec("bash", &["-c", script])
    }

    fn rpod(&self, args: &[&str]) -> Out {
        let root = self.root();
        let mut all = vec!["--root", root.to_str().unwrap()];
        all.extend_from_slice(args);
        self.exec(env!("CARGO_BIN_EXE_rpod"), &all)
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.rpod(args);
        assert_eq!(o.code, 0, "rpod {args:?} failed: {o:?}");
        o.stdout
    }

    fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.rpod(args);
        assert_eq!(o.code, code, "rpod {args:?}: {o:?}");
        assert!(o.stderr.starts_with("Error: ") || code != 125, "{o:?}");
        o.stderr
    }

    fn ps_all(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["ps", "-a", "--format", "json"])).unwrap()
    }

    /// What is left in the namespace: overlay mounts under the root, network namespaces,
    /// nft tables, bridges.
    fn leftovers(&self) -> String {
        let script = format!(
            "echo mounts=$(grep -c ' {}' /proc/self/mounts); echo netns=$(ls /run/rpod/netns 2>/dev/null | wc -l); \
             echo nft=$(nft list tables | wc -l); echo bridges=$(ip -br link show type bridge | wc -l)",
            self.root().join("containers").display()
        );
        self.sh(&script).stdout
    }

    fn assert_clean(&self) {
        let l = self.leftovers();
        assert_eq!(l, "mounts=0\nnetns=0\nnft=0\nbridges=0\n", "something was left behind");
    }

    fn fetch(&self, url: &str) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let o = self.exec("busybox", &["wget", "-qO-", url]);
            if o.code == 0 {
                return Some(o.stdout);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn run_output_and_exit_codes() {
    if skip_unless_root("run_output_and_exit_codes") {
        return;
    }
    let w = World::new();
    let o = w.rpod(&["run", "--rm", IMG, "echo", "hi"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "hi\n"), "{o:?}");
    assert_eq!(w.rpod(&["run", "--rm", "bb", "sh", "-c", "exit 3"]).code, 3);
    w.fails(&["run", "--rm", IMG, "/no/such/command"], 127);
    // Environment, workdir, hostname, entrypoint and the generated /etc files.
    let o = w.ok(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-w",
        "/www",
        "--hostname",
        "box",
        IMG,
        "sh",
        "-c",
        "echo $FOO $(pwd) $(hostname); cat /etc/hostname",
    ]);
    assert_eq!(o, "bar /www box\nbox\n");
    assert_eq!(w.ok(&["run", "--rm", "--entrypoint", "echo", IMG, "a", "b"]), "a b\n");
    let o = w.ok(&["run", "--rm", IMG, "cat", "/etc/hosts"]);
    assert!(o.contains("10.88.0.") && o.contains("host.containers.internal"), "{o}");
    // --network none: only lo.
    let o = w.ok(&["run", "--rm", "--network", "none", IMG, "ls", "/sys/class/net"]);
    assert_eq!(o, "lo\n");
    assert!(w.ps_all().is_empty());
    w.assert_clean();
}

#[test]
fn web_server_by_port_and_by_name() {
    if skip_unless_root("web_server_by_port_and_by_name") {
        return;
    }
    let w = World::new();
    assert_eq!(w.ok(&["network", "create", "n1"]), "n1\n");
    let net: Value = serde_json::from_slice(&std::fs::read(w.root().join("networks/n1.json")).unwrap()).unwrap();
    assert_eq!(net["network_interface"], "podman1");
    assert_eq!(net["subnets"][0]["subnet"], "10.89.0.0/24");
    assert_eq!(net["dns_enabled"], true);
    let ls = w.ok(&["network", "ls"]);
    assert!(ls.contains("podman") && ls.contains("n1"), "{ls}");
    let inspect: Value = serde_json::from_str(&w.ok(&["network", "inspect", "n1"])).unwrap();
    assert_eq!(inspect[0]["name"], "n1");

    let id = w.ok(&common::httpd(&["run", "-d", "--name", "web", "--network", "n1", "-p", "8080:80"]));
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(w.fetch("http://127.0.0.1:8080/").as_deref(), Some("hello-from-rpod\n"));
    let o = w.ok(&["run", "--rm", "--network", "n1", IMG, "wget", "-qO-", "http://web/"]);
    assert_eq!(o, "hello-from-rpod\n");
    let o = w.ok(&["run", "--rm", "--network", "n1", IMG, "cat", "/etc/resolv.conf"]);
    assert_eq!(o, "search dns.podman\nnameserver 10.89.0.1\n");

    let ps = w.ok(&["ps"]);
    assert!(ps.starts_with("CONTAINER ID"), "{ps}");
    assert!(ps.contains(&id[..12]) && ps.contains("0.0.0.0:8080->80/tcp") && ps.contains("web"), "{ps}");
    assert_eq!(w.ok(&["port", "web"]), "80/tcp -> 0.0.0.0:8080\n");
    let v: Value = serde_json::from_str(&w.ok(&["inspect", "web"])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "running");
    assert_eq!(v[0]["NetworkSettings"]["Networks"]["n1"]["IPAddress"], "10.89.0.2");

    // A short-lived container for logs and ps -a.
    w.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "echo one; echo two; echo three >&2; exit 4",
    ]);
    assert_eq!(w.ok(&["wait", "talker"]), "4\n");
    assert_eq!(w.ok(&["logs", "talker"]), "one\ntwo\nthree\n");
    assert_eq!(w.ok(&["logs", "--tail", "1", "talker"]), "three\n");
    let all = w.ps_all();
    assert_eq!(all.len(), 2);
    let talker = all.iter().find(|c| c["Names"][0] == "talker").unwrap();
    assert_eq!((talker["State"].as_str(), talker["ExitCode"].as_i64()), (Some("exited"), Some(4)));
    assert!(!w.ok(&["ps"]).contains("talker"));
    assert!(w.ok(&["ps", "-a"]).contains("Exited (4)"));

    // A running container is not removed without -f; stop, then rm.
    w.fails(&["rm", "web"], 125);
    assert_eq!(w.ok(&["stop", "-t", "1", "web"]), "web\n");
    let v: Value = serde_json::from_str(&w.ok(&["inspect", "web"])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "exited");
    w.ok(&["rm", "web", "talker"]);
    assert!(w.ps_all().is_empty());
    // Start again after a stop works too (and rm -f of a running one).
    w.ok(&common::httpd(&["run", "-d", "--name", "web", "--network", "n1", "-p", "8080:80"]));
    assert_eq!(w.fetch("http://127.0.0.1:8080/").as_deref(), Some("hello-from-rpod\n"));
    w.ok(&["stop", "-t", "0", "web"]);
    w.ok(&["start", "web"]);
    assert_eq!(w.fetch("http://127.0.0.1:8080/").as_deref(), Some("hello-from-rpod\n"));
    w.ok(&["rm", "-f", "-t", "0", "web"]);
    w.fails(&["network", "rm", "podman"], 125);
    assert_eq!(w.ok(&["network", "rm", "n1"]), "n1\n");
    w.assert_clean();
}

#[test]
fn detached_rm_cleans_up() {
    if skip_unless_root("detached_rm_cleans_up") {
        return;
    }
    let w = World::new();
    w.ok(&["network", "create", "n1"]);
    w.ok(&["run", "-d", "--rm", "--name", "brief", "--network", "n1", "-p", "9090:80", IMG, "sleep", "0.3"]);
    let start = Instant::now();
    while !w.ps_all().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(15), "the --rm container was not removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    w.assert_clean();
    assert!(std::fs::read_dir(w.root().join("containers-run")).map(|d| d.count()).unwrap_or(0) == 0);
}

#[test]
fn bad_inputs_leave_nothing() {
    if skip_unless_root("bad_inputs_leave_nothing") {
        return;
    }
    let w = World::new();
    let e = w.fails(&["run", "--rm", "no-such-image", "true"], 125);
    assert!(e.contains("no-such-image"), "{e}");
    w.fails(&["run", "--rm", "--network", "nonet", IMG, "true"], 125);
    w.fails(&["run", "--rm", "-p", "notaport", IMG, "true"], 125);
    w.fails(&["network", "create", "--subnet", "10.88.1.0/24", "clash"], 125);
    assert!(w.ps_all().is_empty());
    let store_containers = || std::fs::read_dir(w.root().join("containers")).unwrap().count();
    assert_eq!(store_containers(), 0);

    w.ok(&common::httpd(&["run", "-d", "--name", "web", "-p", "8080:80"]));
    let e = w.fails(&["run", "-d", "--name", "web", IMG, "true"], 125);
    assert!(e.contains("already in use"), "{e}");
    let e = w.fails(&["run", "-d", "--name", "web2", "-p", "8080:80", IMG, "httpd", "-f", "-p", "80"], 125);
    assert!(e.contains("8080"), "{e}");
    assert_eq!(w.ps_all().len(), 1);
    assert_eq!(store_containers(), 1);
    let l = w.leftovers();
    assert!(l.contains("mounts=1\nnetns=1\n"), "{l}");
    assert_eq!(w.fetch("http://127.0.0.1:8080/").as_deref(), Some("hello-from-rpod\n"));
    w.fails(&["stop", "nosuch"], 125);
    // Pods: a bad network or port fails at create; a port taken by a container fails at the
    // first start, leaving neither the new container nor the pod's namespace.
    w.fails(&["pod", "create", "--network", "nonet"], 125);
    w.fails(&["pod", "create", "-p", "notaport"], 125);
    w.fails(&["pod", "inspect", "nosuch"], 125);
    w.ok(&["pod", "create", "--name", "p", "-p", "8080:80"]);
    let e = w.fails(&["run", "--rm", "--pod", "p", IMG, "true"], 125);
    assert!(e.contains("8080"), "{e}");
    assert_eq!(w.ps_all().len(), 1);
    let l = w.leftovers();
    assert!(l.contains("mounts=1\nnetns=1\n"), "{l}");
    w.ok(&["pod", "rm", "p"]);
    w.ok(&["rm", "-f", "-t", "0", "web"]);
    w.assert_clean();
}

#[test]
fn create_start_and_concurrent_runs() {
    if skip_unless_root("create_start_and_concurrent_runs") {
        return;
    }
    let w = World::new();
    let id = w.ok(&["create", "--name", "c1", "--network", "none", IMG, "sh", "-c", "echo started; exit 7"]);
    let c = &w.ps_all()[0];
    assert_eq!((c["Id"].as_str(), c["State"].as_str()), (Some(id.trim()), Some("created")));
    assert_eq!(w.ok(&["start", "c1"]), "c1\n");
    assert_eq!(w.ok(&["wait", "c1"]), "7\n");
    assert_eq!(w.ok(&["logs", "c1"]), "started\n");
    // Started again: the log grows.
    w.ok(&["start", "c1"]);
    assert_eq!(w.ok(&["wait", "c1"]), "7\n");
    assert_eq!(w.ok(&["logs", "c1"]), "started\nstarted\n");
    w.ok(&["rm", "c1"]);

    // Concurrent runs get distinct addresses (the engine lock around IPAM).
    let rpod = env!("CARGO_BIN_EXE_rpod");
    let root = w.root();
    let script = format!(
        "for i in 1 2 3 4; do {rpod} --root {r} run -d --name p$i {IMG} sleep 30 >/dev/null & done; wait; \
         for i in 1 2 3 4; do {rpod} --root {r} inspect --format '{{{{.NetworkSettings.Networks.podman.IPAddress}}}}' p$i; done",
        r = root.display()
    );
    let o = w.sh(&script);
    let mut ips: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(ips.len(), 4, "{o:?}");
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 4, "{o:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("10.88.0.")), "{ips:?}");
    w.ok(&["rm", "-f", "-t", "0", "p1", "p2", "p3", "p4"]);
    w.assert_clean();
}

#[test]
fn reconcile_after_kill_9() {
    if skip_unless_root("reconcile_after_kill_9") {
        return;
    }
    let w = World::new();
    w.ok(&common::httpd(&["run", "-d", "--name", "victim", "-p", "8081:80"]));
    assert_eq!(w.fetch("http://127.0.0.1:8081/").as_deref(), Some("hello-from-rpod\n"));
    let v: Value = serde_json::from_str(&w.ok(&["inspect", "victim"])).unwrap();
    let (pid, monitor) = (v[0]["State"]["Pid"].as_i64().unwrap(), v[0]["State"]["ConmonPid"].as_i64().unwrap());
    assert!(pid > 0 && monitor > 0, "{v}");
    let o = w.sh(&format!("kill -9 {monitor} {pid}"));
    assert_eq!(o.code, 0, "{o:?}");
    std::thread::sleep(Duration::from_millis(200));
    // Both PIDs reused by another process (as after a reboot): its start time tells it apart.
    let o = w.sh("sleep 20 >/dev/null 2>&1 & echo $!");
    let other: i64 = o.stdout.trim().parse().unwrap();
    let db = rusqlite::Connection::open(w.root().join("rpod.db")).unwrap();
    db.execute("UPDATE containers SET pid = ?1, monitor_pid = ?1", [other]).unwrap();
    drop(db);
    let all = w.ps_all();
    let _ = w.sh(&format!("kill {other}"));
    assert_eq!(all[0]["State"], "exited", "{all:?}");
    let l = w.leftovers();
    assert!(l.starts_with("mounts=0\nnetns=0\nnft=0\n"), "{l}");
    w.ok(&["rm", "victim"]);
    w.assert_clean();
}

#[test]
fn foreground_signals_and_network_rm_force() {
    if skip_unless_root("foreground_signals_and_network_rm_force") {
        return;
    }
    let w = World::new();
    // SIGTERM to a foreground `rpod run` reaches the container.
    let script = format!(
        "{rpod} --root {r} run --rm {IMG} sh -c 'trap \"exit 5\" TERM; echo ready; sleep 30 & wait' > {d}/out & P=$!; \
         for i in $(seq 1 200); do grep -q ready {d}/out 2>/dev/null && break; sleep 0.05; done; \
         kill -TERM $P; wait $P; echo rc=$?",
        rpod = env!("CARGO_BIN_EXE_rpod"),
        r = w.root().display(),
        d = w.dir.path().display()
    );
    let o = w.sh(&script);
    assert!(o.stdout.ends_with("rc=5\n"), "{o:?}");
    assert!(w.ps_all().is_empty());

    w.ok(&["network", "create", "n1"]);
    w.ok(&["run", "-d", "--name", "a", "--network", "n1", IMG, "sleep", "60"]);
    w.ok(&["create", "--name", "b", "--network", "n1", IMG, "true"]);
    let e = w.fails(&["network", "rm", "n1"], 125);
    assert!(e.contains("associated containers"), "{e}");
    assert_eq!(w.ok(&["network", "rm", "-f", "n1"]), "n1\n");
    assert!(w.ps_all().is_empty());
    assert_eq!(w.ok(&["network", "ls", "-q"]), "podman\n");
    w.assert_clean();
}

#[test]
fn run_mounts_env_file_dns_ip_mac() {
    if skip_unless_root("run_mounts_env_file_dns_ip_mac") {
        return;
    }
    let w = World::new();
    let data = w.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "from-host\n").unwrap();
    let d = data.to_str().unwrap();
    // -v HOST:CTR: read and write through; :ro refuses writes.
    let o = w.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{d}:/data"),
        IMG,
        "sh",
        "-c",
        "cat /data/in.txt; echo back > /data/out.txt",
    ]);
    assert_eq!(o, "from-host\n");
    assert_eq!(std::fs::read_to_string(data.join("out.txt")).unwrap(), "back\n");
    let o = w.rpod(&[
        "run",
        "--rm",
        "-v",
        &format!("{d}:/data:ro"),
        IMG,
        "sh",
        "-c",
        "cat /data/in.txt; echo x > /data/ro.txt",
    ]);
    assert_eq!((o.code, o.stdout.as_str()), (1, "from-host\n"), "{o:?}");
    assert!(o.stderr.contains("Read-only file system"), "{o:?}");
    assert!(!data.join("ro.txt").exists());
    let e = w.fails(&["run", "--rm", "-v", "/no/such/dir:/data", IMG, "true"], 125);
    assert!(e.contains("statfs /no/such/dir: "), "{e}");
    w.fails(&["run", "--rm", "-v", "relative:/data", IMG, "true"], 125);
    // --tmpfs.
    let o = w.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch",
        IMG,
        "sh",
        "-c",
        "echo t > /scratch/f && cat /scratch/f && cat /proc/mounts",
    ]);
    assert!(o.starts_with("t\n") && o.contains("tmpfs /scratch tmpfs"), "{o}");
    // --env-file, overridden by -e.
    let env = w.dir.path().join("env");
    std::fs::write(&env, "# comment\nA=1\n\nB=from-file\n").unwrap();
    let o =
        w.ok(&["run", "--rm", "--env-file", env.to_str().unwrap(), "-e", "B=from-flag", IMG, "sh", "-c", "echo $A $B"]);
    assert_eq!(o, "1 from-flag\n");
    w.fails(&["run", "--rm", "--env-file", "/no/such/env", IMG, "true"], 125);
    // --dns goes to resolv.conf.
    let o = w.ok(&["run", "--rm", "--dns", "192.0.2.53", IMG, "cat", "/etc/resolv.conf"]);
    assert!(o.contains("nameserver 192.0.2.53\n") && !o.contains("nameserver 10."), "{o}");
    w.fails(&["run", "--rm", "--dns", "notanip", IMG, "true"], 125);
    // --ip and --mac-address.
    w.ok(&["network", "create", "--subnet", "10.90.0.0/24", "n1"]);
    w.ok(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "n1",
        "--ip",
        "10.90.0.77",
        "--mac-address",
        "92:d0:c6:0a:29:33",
        IMG,
        "sleep",
        "60",
    ]);
    let v: Value = serde_json::from_str(&w.ok(&["inspect", "fixed"])).unwrap();
    assert_eq!(v[0]["NetworkSettings"]["Networks"]["n1"]["IPAddress"], "10.90.0.77");
    let id = w.ok(&["run", "-d", "-v", &format!("{d}:/data:ro"), "--network", "none", IMG, "sleep", "60"]);
    let v: Value = serde_json::from_str(&w.ok(&["inspect", id.trim()])).unwrap();
    assert_eq!(v[0]["Mounts"][0]["Destination"], "/data");
    assert_eq!(v[0]["Mounts"][0]["RW"], false);
    w.ok(&["rm", "-f", "-t", "0", id.trim()]);
    let o = w.ok(&[
        "run",
        "--rm",
        "--network",
        "n1",
        "--ip",
        "10.90.0.78",
        "--mac-address",
        "92:d0:c6:0a:29:34",
        IMG,
        "sh",
        "-c",
        "cat /sys/class/net/eth0/address; wget -qO- http://10.90.0.77:1/ 2>&1; cat /etc/hosts",
    ]);
    assert!(o.starts_with("92:d0:c6:0a:29:34\n") && o.contains("10.90.0.78"), "{o}");
    let e = w.fails(&["run", "--rm", "--network", "n1", "--ip", "10.90.0.77", IMG, "true"], 125);
    assert!(e.contains("already allocated"), "{e}");
    let e = w.fails(&["run", "--rm", "--network", "n1", "--ip", "10.91.0.5", IMG, "true"], 125);
    assert!(e.contains("not in a usable range"), "{e}");
    w.fails(&["run", "--rm", "--network", "n1", "--mac-address", "zz", IMG, "true"], 125);
    assert_eq!(w.ps_all().len(), 1);
    w.ok(&["rm", "-f", "-t", "0", "fixed"]);
    w.ok(&["network", "rm", "n1"]);
    w.assert_clean();
}

/// Waits until `rpod logs NAME` contains `want`.
fn wait_log(w: &World, name: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let l = w.ok(&["logs", name]);
        if l.contains(want) {
            return l;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{name}: no {want:?} in {l:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_of(w: &World, name: &str) -> i64 {
    let v: Value = serde_json::from_str(&w.ok(&["inspect", name])).unwrap();
    v[0]["State"]["Pid"].as_i64().unwrap()
}

#[test]
fn kill_restart_exec_and_logs_follow() {
    if skip_unless_root("kill_restart_exec_and_logs_follow") {
        return;
    }
    let w = World::new();
    // kill -s TERM reaches the container's trap; kill defaults to SIGKILL.
    w.ok(&[
        "run",
        "-d",
        "--name",
        "t",
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "trap 'exit 5' TERM; echo ready; sleep 60 & wait",
    ]);
    wait_log(&w, "t", "ready");
    assert_eq!(w.ok(&["kill", "-s", "TERM", "t"]), "t\n");
    assert_eq!(w.ok(&["wait", "t"]), "5\n");
    let e = w.fails(&["kill", "t"], 125);
    assert!(e.contains("can only kill running containers"), "{e}");
    w.fails(&["kill", "-s", "NOPE", "t"], 125);
    w.ok(&["run", "-d", "--name", "k", "--network", "none", IMG, "sleep", "60"]);
    assert_eq!(w.ok(&["kill", "k"]), "k\n");
    assert_eq!(w.ok(&["wait", "k"]), "137\n");

    // restart: a running container gets a new process; an exited one starts again.
    w.ok(&["run", "-d", "--name", "r", "-p", "8082:80", IMG, "sh", "-c", "echo started; httpd -f -p 80 -h /www"]);
    wait_log(&w, "r", "started");
    let pid = pid_of(&w, "r");
    assert_eq!(w.ok(&["restart", "-t", "0", "r"]), "r\n");
    wait_log(&w, "r", "started\nstarted\n");
    assert_ne!(pid_of(&w, "r"), pid);
    assert_eq!(w.fetch("http://127.0.0.1:8082/").as_deref(), Some("hello-from-rpod\n"));
    assert_eq!(w.ok(&["restart", "k"]), "k\n");
    let v: Value = serde_json::from_str(&w.ok(&["inspect", "k"])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "running");

    // exec: output, exit codes, -e, -w, -i.
    assert_eq!(w.ok(&["exec", "r", "echo", "hi"]), "hi\n");
    assert_eq!(w.rpod(&["exec", "r", "sh", "-c", "exit 3"]).code, 3);
    assert_eq!(w.ok(&["exec", "-e", "FOO=bar", "-w", "/www", "r", "sh", "-c", "echo $FOO $(pwd)"]), "bar /www\n");
    w.fails(&["exec", "r", "/no/such/command"], 127);
    let o = w.sh(&format!("echo piped | {} --root {} exec -i r cat", env!("CARGO_BIN_EXE_rpod"), w.root().display()));
    assert_eq!((o.code, o.stdout.as_str()), (0, "piped\n"), "{o:?}");
    w.fails(&["exec", "t", "true"], 125);
    w.fails(&["exec", "nosuch", "true"], 125);

    // logs -f follows until the container exits.
    w.ok(&["run", "-d", "--name", "f", "--network", "none", IMG, "sh", "-c", "echo a; sleep 1; echo b; exit 2"]);
    let start = Instant::now();
    assert_eq!(w.ok(&["logs", "-f", "f"]), "a\nb\n");
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert_eq!(w.ok(&["logs", "-f", "f"]), "a\nb\n");

    w.ok(&["rm", "-f", "-t", "0", "t", "k", "r", "f"]);
    w.assert_clean();
}

#[test]
fn network_reload_after_flush() {
    if skip_unless_root("network_reload_after_flush") {
        return;
    }
    let w = World::new();
    w.ok(&["network", "create", "n1"]);
    let id = w.ok(&common::httpd(&["run", "-d", "--name", "web", "--network", "n1", "-p", "8080:80"]));
    w.ok(&common::httpd(&["run", "-d", "--name", "other", "-p", "8081:80"]));
    assert_eq!(w.fetch("http://127.0.0.1:8080/").as_deref(), Some("hello-from-rpod\n"));
    assert_eq!(w.fetch("http://127.0.0.1:8081/").as_deref(), Some("hello-from-rpod\n"));
    let pid = pid_of(&w, "web");
    let once = |url: &str| w.exec("busybox", &["wget", "-T", "2", "-qO-", url]);
    let o = w.sh("nft flush ruleset");
    assert_eq!(o.code, 0, "{o:?}");
    assert_ne!(once("http://127.0.0.1:8080/").code, 0);
    assert_ne!(once("http://127.0.0.1:8081/").code, 0);
    let out = w.ok(&["network", "reload", "--all"]);
    assert!(out.contains(id.trim()) && out.lines().count() == 2, "{out}");
    assert_eq!(w.fetch("http://127.0.0.1:8080/").as_deref(), Some("hello-from-rpod\n"));
    assert_eq!(w.fetch("http://127.0.0.1:8081/").as_deref(), Some("hello-from-rpod\n"));
    assert_eq!(pid_of(&w, "web"), pid, "the container was restarted");
    // DNS by name still works on the DNS-enabled network.
    assert_eq!(w.ok(&["run", "--rm", "--network", "n1", IMG, "wget", "-qO-", "http://web/"]), "hello-from-rpod\n");
    // One container by name; bad input.
    w.sh("nft flush ruleset");
    assert_eq!(w.ok(&["network", "reload", "web"]), id);
    assert_eq!(w.fetch("http://127.0.0.1:8080/").as_deref(), Some("hello-from-rpod\n"));
    w.fails(&["network", "reload", "nosuch"], 125);
    assert_eq!(w.rpod(&["network", "reload"]).code, 125);
    w.ok(&["rm", "-f", "-t", "0", "web", "other"]);
    w.ok(&["network", "rm", "n1"]);
    w.assert_clean();
}

#[test]
fn pods_share_localhost_and_ports() {
    if skip_unless_root("pods_share_localhost_and_ports") {
        return;
    }
    let w = World::new();
    let id = w.ok(&["pod", "create", "--name", "p1", "-p", "8081:80"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let ps = w.ok(&["pod", "ps"]);
    assert!(ps.starts_with("POD ID") && ps.contains("p1") && ps.contains("Created"), "{ps}");
    w.fails(&["pod", "create", "--name", "p1"], 125);
    w.fails(&["run", "--rm", "--pod", "nope", IMG, "true"], 125);
    w.fails(&["run", "--rm", "--pod", "p1", "-p", "9000:80", IMG, "true"], 125);
    w.ok(&common::httpd(&["run", "-d", "--pod", "p1", "--name", "web"]));
    // The pod's published port reaches the member's server; members share localhost.
    assert_eq!(w.fetch("http://127.0.0.1:8081/").as_deref(), Some("hello-from-rpod\n"));
    let o = w.ok(&["run", "--rm", "--pod", "p1", IMG, "wget", "-qO-", "http://127.0.0.1:80/"]);
    assert_eq!(o, "hello-from-rpod\n");
    let v: Value = serde_json::from_str(&w.ok(&["pod", "inspect", "p1"])).unwrap();
    assert_eq!(
        (v["Name"].as_str(), v["State"].as_str(), v["NumContainers"].as_u64()),
        (Some("p1"), Some("Running"), Some(1))
    );
    assert_eq!(v["InfraConfig"]["PortBindings"]["80/tcp"][0]["HostPort"], "8081");
    let ps: Value = serde_json::from_str(&w.ok(&["pod", "ps", "--format", "json"])).unwrap();
    assert_eq!(ps[0]["Containers"][0]["Names"], "web");
    let ctrs = w.ps_all();
    assert_eq!((ctrs[0]["PodName"].as_str(), ctrs[0]["Pod"].as_str()), (Some("p1"), Some(id.trim())));
    // Stop and start.
    assert_eq!(w.ok(&["pod", "stop", "-t", "0", "p1"]).trim(), id.trim());
    let v: Value = serde_json::from_str(&w.ok(&["pod", "inspect", "p1"])).unwrap();
    assert_eq!(v["State"], "Exited");
    assert_eq!(w.sh("ls /run/rpod/netns | wc -l").stdout, "0\n");
    w.ok(&["pod", "start", "p1"]);
    assert_eq!(w.fetch("http://127.0.0.1:8081/").as_deref(), Some("hello-from-rpod\n"));
    // rm needs -f while a member runs; -f removes the members and the netns.
    w.fails(&["pod", "rm", "p1"], 125);
    w.ok(&["pod", "rm", "-f", "-t", "0", "p1"]);
    assert!(w.ps_all().is_empty());
    assert_eq!(w.ok(&["pod", "ps", "-q"]), "");
    // A pod on a created network: `network rm -f` removes the pod and its containers.
    w.ok(&["network", "create", "n1"]);
    w.ok(&["pod", "create", "--name", "p2", "--network", "n1"]);
    let o = w.ok(&["run", "--rm", "--pod", "p2", IMG, "cat", "/etc/hosts"]);
    assert!(o.contains("10.89.0.2\tp2"), "{o}");
    w.ok(&["run", "-d", "--pod", "p2", IMG, "sleep", "100"]);
    w.fails(&["network", "rm", "n1"], 125);
    w.ok(&["network", "rm", "-f", "n1"]);
    assert!(w.ps_all().is_empty());
    assert_eq!(w.ok(&["pod", "ps", "-q"]), "");
    w.assert_clean();
}

#[test]
fn network_connect_disconnect_prune() {
    if skip_unless_root("network_connect_disconnect_prune") {
        return;
    }
    let w = World::new();
    w.ok(&["network", "create", "n1"]);
    w.ok(&["network", "create", "n2"]);
    w.ok(&["network", "create", "n3"]);
    w.ok(&common::httpd(&["run", "-d", "--name", "web", "--network", "n1"]));
    assert_eq!(w.ok(&["exec", "web", "ls", "/sys/class/net"]), "eth0\nlo\n");
    w.fails(&["network", "connect", "nope", "web"], 125);
    w.fails(&["network", "connect", "n1", "web"], 125);
    w.fails(&["network", "disconnect", "n2", "web"], 125);
    w.ok(&["network", "connect", "n2", "web"]);
    assert_eq!(w.ok(&["exec", "web", "ls", "/sys/class/net"]), "eth0\neth1\nlo\n");
    let v: Value = serde_json::from_str(&w.ok(&["inspect", "web"])).unwrap();
    assert_eq!(v[0]["NetworkSettings"]["Networks"]["n2"]["IPAddress"], "10.89.1.2");
    let o = w.ok(&["run", "--rm", "--network", "n2", IMG, "wget", "-qO-", "http://web/"]);
    assert_eq!(o, "hello-from-rpod\n");
    // Still reachable on the first network.
    let o = w.ok(&["run", "--rm", "--network", "n1", IMG, "wget", "-qO-", "http://web/"]);
    assert_eq!(o, "hello-from-rpod\n");
    w.ok(&["network", "disconnect", "n2", "web"]);
    assert_eq!(w.ok(&["exec", "web", "ls", "/sys/class/net"]), "eth0\nlo\n");
    let o = w.rpod(&["run", "--rm", "--network", "n2", IMG, "wget", "-T", "2", "-qO-", "http://10.89.1.2/"]);
    assert_ne!(o.code, 0, "{o:?}");
    // A stopped container: connected now, set up at start.
    w.ok(&["create", "--name", "later", "--network", "n1", IMG, "sleep", "100"]);
    w.ok(&["network", "connect", "n3", "later"]);
    w.ok(&["start", "later"]);
    assert_eq!(w.ok(&["exec", "later", "ls", "/sys/class/net"]), "eth0\neth1\nlo\n");
    let o = w.ok(&["exec", "later", "wget", "-qO-", "http://web/"]);
    assert_eq!(o, "hello-from-rpod\n");
    // Prune removes only the unused networks (not the default one).
    assert_eq!(w.ok(&["network", "prune", "-f"]), "n2\n");
    let ls = w.ok(&["network", "ls", "-q"]);
    assert_eq!(ls, "podman\nn1\nn3\n");
    w.ok(&["rm", "-f", "-t", "0", "web", "later"]);
    assert_eq!(w.ok(&["network", "prune", "-f"]), "n1\nn3\n");
    w.assert_clean();
}

#[test]
fn info_and_system_reset() {
    if skip_unless_root("info_and_system_reset") {
        return;
    }
    let w = World::new();
    let v: Value = serde_json::from_str(&w.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(v["host"]["networkBackend"], "netavark");
    assert_eq!(v["host"]["ociRuntime"]["name"], "runc");
    assert_eq!(v["host"]["os"], "linux");
    assert_eq!(v["store"]["imageStore"]["number"], 1);
    assert_eq!(v["store"]["containerStore"]["number"], 0);
    assert!(v["store"]["graphRoot"].as_str().unwrap().ends_with("/root"), "{v}");
    let y = w.ok(&["info"]);
    assert!(y.starts_with("host:\n") && y.contains("  networkBackend: netavark\n") && y.contains("store:\n"), "{y}");
    assert_eq!(w.ok(&["info", "--format", "{{.Host.NetworkBackend}}"]), "netavark\n");

    w.ok(&["network", "create", "n1"]);
    w.ok(&["pod", "create", "--name", "p1", "-p", "8082:80"]);
    w.ok(&common::httpd(&["run", "-d", "--pod", "p1", "--name", "inpod"]));
    w.ok(&common::httpd(&["run", "-d", "--name", "web", "--network", "n1", "-p", "8083:80"]));
    w.ok(&["create", "--name", "idle", IMG, "true"]);
    assert_eq!(w.fetch("http://127.0.0.1:8082/").as_deref(), Some("hello-from-rpod\n"));
    assert_eq!(w.fetch("http://127.0.0.1:8083/").as_deref(), Some("hello-from-rpod\n"));
    let v: Value = serde_json::from_str(&w.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(v["store"]["containerStore"]["running"], 2);
    // Without -f it asks, and a "no" (here: no input) changes nothing.
    w.ok(&["system", "reset"]);
    assert_eq!(w.ps_all().len(), 3);
    w.ok(&["system", "reset", "-f"]);
    assert!(w.ps_all().is_empty());
    assert_eq!(w.ok(&["pod", "ps", "-q"]), "");
    assert_eq!(w.ok(&["network", "ls", "-q"]), "podman\n");
    assert_eq!(w.ok(&["images", "-q"]), "");
    w.assert_clean();
    assert!(std::fs::read_dir(w.root().join("containers-run")).map(|d| d.count()).unwrap_or(0) == 0);
}

#[test]
fn run_user_and_stdin() {
    if skip_unless_root("run_user_and_stdin") {
        return;
    }
    let w = World::new();
    assert_eq!(w.ok(&["run", "--rm", "-u", "1234:5678", IMG, "sh", "-c", "echo $(id -u) $(id -g)"]), "1234 5678\n");
    assert_eq!(
        w.ok(&["run", "--rm", "-u", "bob", IMG, "sh", "-c", "echo $(id -u) $(id -g) $(id -G)"]),
        "1000 1001 1001 10\n"
    );
    assert_eq!(w.ok(&["run", "--rm", "--user", "bob:wheel", IMG, "id", "-g"]), "10\n");
    assert_eq!(w.ok(&["run", "--rm", "-u", "0", IMG, "id", "-u"]), "0\n");
    let e = w.fails(&["run", "--rm", "-u", "nobody", IMG, "true"], 125);
    assert!(e.contains("unable to find user nobody"), "{e}");
    assert!(w.ps_all().is_empty());
    // -i: the container's stdin is rpod's.
    let root = w.root();
    let o =
        w.sh(&format!("echo hello | {} --root {} run --rm -i {IMG} cat", env!("CARGO_BIN_EXE_rpod"), root.display()));
    assert_eq!((o.code, o.stdout.as_str()), (0, "hello\n"), "{o:?}");
    // Without -i the container reads nothing.
    let o = w.sh(&format!("echo hello | {} --root {} run --rm {IMG} cat", env!("CARGO_BIN_EXE_rpod"), root.display()));
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{o:?}");
    w.assert_clean();
}

#[test]
fn run_tty() {
    if skip_unless_root("run_tty") {
        return;
    }
    let w = World::new();
    // -t without a terminal on our side: the container still gets one.
    let o = w.rpod(&["run", "--rm", "-t", IMG, "sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo both; exit 4"]);
    assert_eq!(o.code, 4, "{o:?}");
    assert_eq!(o.stdout.replace('\r', ""), "/dev/pts/0\nboth\n", "{o:?}");
    // -it with piped input: the input reaches the terminal and ^D ends it.
    let root = w.root();
    let rpod = env!("CARGO_BIN_EXE_rpod");
    let o = w.sh(&format!("echo hello | {rpod} --root {} run --rm -i -t {IMG} cat", root.display()));
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.replace('\r', "").starts_with("hello\n"), "{o:?}");
    // Under a real terminal (script's pty), rpod's stdin is a terminal: raw mode, restored.
    let script = ["/usr/bin/script", "/bin/script"].iter().find(|p| Path::new(p).is_file());
    if let Some(script) = script {
        let cmd = format!(
            "a=$(stty -g); {rpod} --root {} run --rm -it {IMG} sh -c 'tty; [ -t 0 ] && echo in-tty'; b=$(stty -g); \
             [ \"$a\" = \"$b\" ] && echo restored",
            root.display()
        );
        let o = w.exec(script, &["-qec", &cmd, "/dev/null"]);
        assert_eq!(o.code, 0, "{o:?}");
        assert!(o.stdout.contains("in-tty") && o.stdout.contains("restored"), "{o:?}");
        assert!(o.stdout.contains("/dev/pts/0"), "{o:?}");
    } else {
        eprintln!("run_tty: `script` is not installed, skipping the terminal case");
    }
    // Detached with -t: the output goes to the log.
    let id = w.ok(&["run", "-d", "-t", IMG, "sh", "-c", "tty"]);
    let id = id.trim();
    w.ok(&["wait", id]);
    let logs = w.ok(&["logs", id]);
    assert!(logs.contains("/dev/pts/0"), "{logs:?}");
    w.ok(&["rm", id]);
    assert!(w.ps_all().is_empty());
    w.assert_clean();
}

#[test]
fn detached_stdin_and_attach() {
    if skip_unless_root("detached_stdin_and_attach") {
        return;
    }
    let w = World::new();
    let rpod = env!("CARGO_BIN_EXE_rpod");
    let root = w.root();
    // run -d -i: stdin stays open for `rpod attach`, which ends with the container.
    w.ok(&["run", "-d", "-i", "--name", "a1", IMG, "sh", "-c", "read x; echo got $x; exit 6"]);
    let o = w.sh(&format!("sleep 0.3; echo hello | {rpod} --root {} attach a1", root.display()));
    assert_eq!((o.code, o.stdout.as_str()), (6, "got hello\n"), "{o:?}");
    // With a terminal too.
    w.ok(&["run", "-d", "-i", "-t", "--name", "a2", IMG, "sh", "-c", "read x; echo got $x"]);
    let o = w.sh(&format!("sleep 0.3; echo hello | {rpod} --root {} attach a2", root.display()));
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("got hello"), "{o:?}");
    // Not running: refused.
    w.fails(&["attach", "a1"], 125);
    w.ok(&["rm", "a1", "a2"]);
    assert!(w.ps_all().is_empty());
    w.assert_clean();
}

#[test]
fn exec_tty() {
    if skip_unless_root("exec_tty") {
        return;
    }
    let w = World::new();
    w.ok(&["run", "-d", "--name", "t1", IMG, "sleep", "1000"]);
    // -t without a terminal on our side: the command still gets one; its exit code passes.
    let o = w.rpod(&["exec", "-t", "t1", "sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo both; exit 3"]);
    assert_eq!(o.code, 3, "{o:?}");
    let out = o.stdout.replace('\r', "");
    assert!(out.starts_with("/dev/pts/") && out.ends_with("\nboth\n"), "{o:?}");
    // -it with piped input: the input reaches the terminal and ^D ends it.
    let root = w.root();
    let rpod = env!("CARGO_BIN_EXE_rpod");
    let o = w.sh(&format!("echo hello | {rpod} --root {} exec -i -t t1 cat", root.display()));
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.replace('\r', "").starts_with("hello\n"), "{o:?}");
    // A missing command: podman's code.
    w.fails(&["exec", "-t", "t1", "/no/such/command"], 127);
    let script = ["/usr/bin/script", "/bin/script"].iter().find(|p| Path::new(p).is_file());
    if let Some(script) = script {
        // Raw mode, restored; the window size is set before the command starts.
        let cmd = format!(
            "stty rows 30 cols 100; a=$(stty -g); {rpod} --root {} exec -it t1 sh -c 'stty size; tty; [ -t 0 ] && \
             echo in-tty'; b=$(stty -g); [ \"$a\" = \"$b\" ] && echo restored; {rpod} --root {} run --rm -it {IMG} \
             stty size",
            root.display(),
            root.display()
        );
        let o = w.exec(script, &["-qec", &cmd, "/dev/null"]);
        assert_eq!(o.code, 0, "{o:?}");
        assert!(o.stdout.contains("in-tty") && o.stdout.contains("restored"), "{o:?}");
        assert!(o.stdout.contains("/dev/pts/") && o.stdout.matches("30 100").count() == 2, "{o:?}");
        // A window size change (SIGWINCH on rpod) reaches the container's terminal, for
        // exec -t and run -t.
        for sub in ["exec -t t1".to_owned(), format!("run --rm -t {IMG}")] {
            let cmd = format!(
                "stty rows 30 cols 100; {rpod} --root {} {sub} sh -c 'sleep 2; stty size' & sleep 1; \
                 stty rows 40 cols 120; wait",
                root.display()
            );
            let o = w.exec(script, &["-qec", &cmd, "/dev/null"]);
            assert_eq!(o.code, 0, "{o:?}");
            assert!(o.stdout.contains("40 120"), "{sub}: {o:?}");
        }
    } else {
        eprintln!("exec_tty: `script` is not installed, skipping the terminal case");
    }
    // Not running: refused.
    w.ok(&["stop", "-t", "0", "t1"]);
    assert_ne!(w.rpod(&["exec", "-t", "t1", "true"]).code, 0);
    w.ok(&["rm", "t1"]);
    assert!(w.ps_all().is_empty());
    w.assert_clean();
}

#[test]
fn runtime_choice() {
    if skip_unless_root("runtime_choice") {
        return;
    }
    if !common::in_path("crun") {
        assert!(!common::required(), "runtime_choice: `crun` is missing");
        eprintln!("SKIPPED runtime_choice: `crun` is not installed");
        return;
    }
    let w = World::new();
    let o = w.rpod(&["--runtime", "crun", "run", "--rm", IMG, "echo", "hi"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "hi\n"), "{o:?}");
    assert_eq!(w.rpod(&["--runtime", "crun", "run", "--rm", IMG, "sh", "-c", "exit 5"]).code, 5);
    w.fails(&["--runtime", "crun", "run", "--rm", IMG, "/no/such/command"], 127);
    let o = w.rpod(&["--runtime", "crun", "run", "--rm", "-t", "-u", "bob", IMG, "sh", "-c", "tty; id -u"]);
    assert_eq!((o.code, o.stdout.replace('\r', "").as_str()), (0, "/dev/pts/0\n1000\n"), "{o:?}");
    // The configuration file chooses; the flag overrides it.
    std::fs::write(w.root().join("rpod.conf"), "# rpod\n[engine]\nruntime = \"crun\"\n").unwrap();
    w.ok(&["create", "--name", "c1", IMG, "sleep", "100"]);
    w.ok(&["--runtime", "runc", "create", "--name", "r1", IMG, "sleep", "100"]);
    let rt = |n: &str| w.ok(&["inspect", "--format", "{{.OCIRuntime}}", n]).trim().to_owned();
    assert_eq!((rt("c1"), rt("r1")), ("crun".to_owned(), "runc".to_owned()));
    // A container keeps its runtime: start, exec, stop and rm work with either default.
    w.ok(&["start", "c1", "r1"]);
    assert_eq!(w.ok(&["--runtime", "runc", "exec", "c1", "echo", "in-crun"]), "in-crun\n");
    assert_eq!(w.ok(&["exec", "r1", "echo", "in-runc"]), "in-runc\n");
    w.ok(&["--runtime", "runc", "stop", "-t", "0", "c1"]);
    w.ok(&["rm", "-f", "-t", "0", "c1", "r1"]);
    // A bad runtime: a clear error, nothing left.
    w.fails(&["--runtime", "/no/such/runtime", "run", "--rm", IMG, "true"], 125);
    assert!(w.ps_all().is_empty());
    w.assert_clean();
}

#[test]
fn portfwd_network() {
    if skip_unless_root("portfwd_network") {
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rpod")).with_file_name("portfwd");
    if !bin.is_file() {
        assert!(!common::required(), "portfwd_network: portfwd is not built");
        eprintln!("SKIPPED portfwd_network: portfwd is not built (cargo build -p portfwd)");
        return;
    }
    let w = World::new();
    // --network portfwd (and its podman name): tap0 with slirp4netns's addresses.
    let o =
        w.ok(&["run", "--rm", "--network", "portfwd", IMG, "sh", "-c", "ip -4 addr show tap0; cat /etc/resolv.conf"]);
    assert!(o.contains("10.0.2.100/24") && o.contains("nameserver 10.0.2.3"), "{o}");
    // A published port, through portfwd's API.
    w.ok(&common::httpd(&["run", "-d", "--name", "pf", "--network", "slirp4netns", "-p", "18090:80"]));
    assert_eq!(w.fetch("http://127.0.0.1:18090/").as_deref(), Some("hello-from-rpod\n"));
    let inspect = w.ok(&["inspect", "--format", "{{.HostConfig.NetworkMode}}", "pf"]);
    assert_eq!(inspect.trim(), "slirp4netns");
    w.ok(&["rm", "-f", "-t", "0", "pf"]);
    assert!(w.exec("busybox", &["wget", "-qO-", "http://127.0.0.1:18090/"]).code != 0);
    // portfwd went with the container: it is killed (SIGKILL, not waited for), so it may be
    // seen for a moment before it dies, and as a zombie until its new parent reaps it.
    let o = w.sh("i=0; while :; do n=0; for p in /proc/[0-9]*; do s=$(cat $p/stat 2>/dev/null) || continue; \
         case \"$s\" in *'(portfwd) Z'*) ;; *'(portfwd) '*) n=$((n+1));; esac; done; \
         [ $n = 0 ] || [ $i -ge 30 ] && break; i=$((i+1)); sleep 0.1; done; echo $n");
    assert_eq!(o.stdout.trim(), "0", "a live portfwd outlived its container: {o:?}");
    assert!(w.ps_all().is_empty());
    w.assert_clean();
}
