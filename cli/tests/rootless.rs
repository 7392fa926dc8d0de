//! Rootless engine tests: rpod run by the unprivileged users `rpodtest` and `rpodtest2`
//! (made by `scripts/setup.sh`, with subordinate ID ranges and /dev/net/tun, /dev/fuse open
//! to them).
//!
//! Each test makes, as root, a private network + mount + PID namespace (`unshare`, `lo` up, a
//! tmpfs on /tmp) that stands in for the machine: every user command runs in it through
//! `nsenter` and `setpriv` (`env -i HOME=<test home> XDG_RUNTIME_DIR=<short private dir>`),
//! and the host-side probes (curl) too. So published ports never touch the real host, PID 1
//! of that namespace reaps the helpers' orphans, and everything the users started (pause
//! processes, monitors, portfwd, dnsd, FUSE daemons) dies with it. The drop guard also runs
//! `rpod system reset -f` as each user first, then removes the test's folder as root.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Out, IMG};
const USERS: [&str; 2] = ["rpodtest", "rpodtest2"];

/// Whether the test can run here; loud skip (or failure under RPOD_REQUIRE_ROOT=1).
fn skip(test: &str) -> bool {
    let required = common::required();
    let why = if !nix::unistd::geteuid().is_root() {
        Some("needs root (to make the test namespaces and switch users)".to_owned())
    } else if let Some(u) = USERS.iter().find(|u| nix::unistd::User::from_name(u).ok().flatten().is_none()) {
        Some(format!("user {u} does not exist (run scripts/setup.sh)"))
    } else if let Some(t) =
        ["newuidmap", "newgidmap", "runc", "setpriv", "nsenter", "unshare", "curl"].iter().find(|t| !common::in_path(t))
    {
        Some(format!("`{t}` is not installed"))
    } else if ["/dev/net/tun", "/dev/fuse"]
        .iter()
        .any(|d| std::fs::metadata(d).map(|m| m.mode() & 0o006 != 0o006).unwrap_or(true))
    {
        Some("/dev/net/tun or /dev/fuse is not open to users (chmod 0666, see scripts/setup.sh)".to_owned())
    } else if common::busybox().is_none() {
        Some("no static busybox (Debian busybox-static)".to_owned())
    } else {
        None
    };
    match why {
        Some(w) => {
            assert!(!required, "{test}: {w} (RPOD_REQUIRE_ROOT=1)");
            eprintln!("SKIPPED {test}: {w}");
            true
        }
        None => false,
    }
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user).unwrap().unwrap().uid.as_raw()
}

fn chown_r(p: &Path, user: &str) {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    nix::unistd::chown(p, Some(u.uid), Some(u.gid)).unwrap();
}

/// The test's stand-in machine and its users.
struct World {
    holder: Child,
    pid: u32,
    dir: tempfile::TempDir,
    bin: PathBuf,
    archive: PathBuf,
    /// Servers the test started in its namespaces (killed with them, reaped on drop).
    servers: std::sync::Mutex<Vec<Child>>,
}

impl World {
    fn new(test: &str) -> World {
        let dir = tempfile::Builder::new().prefix(&format!("rpod-rl-{test}-")).tempdir_in("/var/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // The binaries, where the users can run them (a copy when the build folder is not
        // traversable for them).
        let built = PathBuf::from(env!("CARGO_BIN_EXE_rpod")).parent().unwrap().to_path_buf();
        for b in ["netd", "dnsd"] {
            assert!(built.join(b).is_file(), "{b} is not built: run `cargo build --workspace` first");
        }
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        for b in ["rpod", "netd", "dnsd", "portfwd", "fuse-overlay"] {
            if built.join(b).is_file() {
                std::fs::copy(built.join(b), bin.join(b)).unwrap();
                std::fs::set_permissions(bin.join(b), std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let archive = dir.path().join("bb.tar");
        std::fs::write(&archive, common::image_archive(&common::busybox().unwrap(), IMG)).unwrap();
        std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();
        for u in USERS {
            for d in [format!("home-{u}"), format!("rt-{u}")] {
                let p = dir.path().join(d);
                std::fs::create_dir(&p).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
                chown_r(&p, u);
            }
        }
        let (holder, pid) = common::ns_holder("mount -t tmpfs -o mode=1777 none /tmp");
        let w = World { holder, pid, dir, bin, archive, servers: std::sync::Mutex::new(Vec::new()) };
        // Our portfwd when it works, else Debian's slirp4netns (same contract).
        let pf = w.bin.join("portfwd");
        let works = Command::new(&pf)
            .arg("--help")
            .output()
            .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("--api-socket"))
            .unwrap_or(false);
        if !works {
            eprintln!("{test}: portfwd is not usable here, using /usr/bin/slirp4netns");
            let _ = std::fs::remove_file(&pf);
            std::os::unix::fs::symlink("/usr/bin/slirp4netns", &pf).unwrap();
        }
        w
    }

    fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("home-{user}"))
    }

    fn rt(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("rt-{user}"))
    }

    /// The user's run directory.
    fn run_dir(&self, user: &str) -> PathBuf {
        self.rt(user).join("rpod")
    }

    fn store(&self, user: &str) -> PathBuf {
        self.home(user).join(".local/share/rpod/storage")
    }

    /// Runs a program inside the namespaces, as root (`user` None) or as a user (with
    /// `XDG_RUNTIME_DIR` unless `no_xdg`).
    fn exec(&self, user: Option<&str>, no_xdg: bool, prog: &str, args: &[&str]) -> Out {
        let pid = self.pid.to_string();
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid, "-n", "-m", "-p", "--"]);
        if let Some(u) = user {
            let home = format!("HOME={}", self.home(u).display());
            let rt = format!("XDG_RUNTIME_DIR={}", self.rt(u).display());
            c.args(["setpriv", "--reuid", u, "--regid", u, "--init-groups", "env", "-i", &home]);
            if !no_xdg {
                c.arg(&rt);
            }
            c.arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
        }
        c.arg(prog).args(args);
        common::output_within_60s(&mut c, &format!("{user:?} {prog} {args:?}"))
    }

    fn rpod(&self, user: &str, args: &[&str]) -> Out {
        self.exec(Some(user), false, self.bin.join("rpod").to_str().unwrap(), args)
    }

    fn ok(&self, user: &str, args: &[&str]) -> String {
        let o = self.rpod(user, args);
        assert_eq!(o.code, 0, "{user}: rpod {args:?} failed: {o:?}");
        o.stdout
    }

    fn fails(&self, user: &str, args: &[&str]) -> String {
        let o = self.rpod(user, args);
        assert_eq!(o.code, 125, "{user}: rpod {args:?}: {o:?}");
        assert!(o.stderr.starts_with("Error: "), "{o:?}");
        o.stderr
    }

    /// A shell command as the user.
    fn user_sh(&self, user: &str, script: &str) -> Out {
        self.exec(Some(user), false, "sh", &["-c", script])
    }

    fn load(&self, user: &str) {
        self.ok(user, &["load", "-q", "-i", self.archive.to_str().unwrap()]);
    }

    /// Fetches a URL from the stand-in host (as root, in the test's network namespace).
    fn curl(&self, url: &str) -> Out {
        self.exec(None, false, "curl", &["-s", "--max-time", "5", url])
    }

    /// Waits until a URL answers with `want` (a server in a container takes a moment).
    fn curl_until(&self, url: &str, want: &str) {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let o = self.curl(url);
            if o.stdout == want {
                return;
            }
            assert!(Instant::now() < end, "{url}: {o:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The processes of a user in the test's PID namespace: (pid, command).
    fn procs_of(&self, uid: u32) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for (pid, real_uid, comm) in self.procs() {
            if real_uid == uid {
                out.push((pid, comm));
            }
        }
        out
    }

    /// Every process of the test's PID namespace but its holder: (pid, real uid, command).
    fn procs(&self) -> Vec<(u32, u32, String)> {
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.pid)).unwrap();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            if pid == self.pid || std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() != Some(&ns) {
                continue;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.contains("State:\tZ") {
                continue;
            }
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse().ok())
                .unwrap_or(u32::MAX);
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned();
            let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(str::trim).unwrap_or_default();
            if (comm == "sleep" && ppid == self.pid.to_string()) || comm == "docker-registry" {
                // The holder's own, and the test's registry.
                continue;
            }
            out.push((pid, uid, comm));
        }
        out
    }

    /// The user's helper processes still running (portfwd, dnsd, monitors).
    fn helpers(&self, user: &str) -> Vec<(u32, String)> {
        self.procs_of(uid_of(user))
            .into_iter()
            .filter(|(_, c)| matches!(c.as_str(), "portfwd" | "slirp4netns" | "dnsd" | "netd" | "httpd"))
            .collect()
    }

    fn wait_no_helpers(&self, user: &str) {
        let end = Instant::now() + Duration::from_secs(5);
        while !self.helpers(user).is_empty() {
            assert!(Instant::now() < end, "{user} still runs {:?}", self.helpers(user));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts Debian's docker-registry on 127.0.0.1:5000 in the test's namespaces (it dies
    /// with them) and pushes the test image to it; returns the image's name there.
    fn start_registry(&self) -> String {
        let cfg = self.dir.path().join("registry.yml");
        let data = self.dir.path().join("registry-data");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:5000\n",
                data.display()
            ),
        )
        .unwrap();
        let pid = self.pid.to_string();
        let child = Command::new("nsenter")
            .args(["-t", &pid, "-n", "-m", "-p", "--", "/usr/bin/docker-registry", "serve"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.lock().unwrap().push(child);
        let end = Instant::now() + Duration::from_secs(10);
        while self.curl("http://127.0.0.1:5000/v2/").code != 0 {
            assert!(Instant::now() < end, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let src = format!("docker-archive:{}", self.archive.display());
        let o = self.exec(
            None,
            false,
            "skopeo",
            &["copy", "-q", "--dest-tls-verify=false", &src, "docker://127.0.0.1:5000/test/bb:v1"],
        );
        assert_eq!(o.code, 0, "skopeo copy: {o:?}");
        "127.0.0.1:5000/test/bb:v1".to_owned()
    }

    /// SIGKILL to a PID of the test's PID namespace (as the pid files record them).
    fn kill(&self, pid: u32) {
        let o = self.exec(None, false, "kill", &["-9", &pid.to_string()]);
        assert_eq!(o.code, 0, "kill {pid}: {o:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    fn pause_pid(&self, user: &str) -> Option<u32> {
        let t = std::fs::read_to_string(self.run_dir(user).join("pause.pid")).ok()?;
        t.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for u in USERS {
            if self.run_dir(u).exists() {
                let o = self.rpod(u, &["system", "reset", "-f"]);
                if o.code != 0 {
                    eprintln!("cleanup: rpod system reset as {u}: {o:?}");
                }
            }
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        for mut c in self.servers.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Everything the users ran died with the PID namespace, and their mounts with their
        // mount namespaces; what is left is files.
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

#[test]
fn rootless_containers_ports_pods_and_storage() {
    if skip("rootless_containers_ports_pods_and_storage") {
        return;
    }
    let w = World::new("ctr");
    let u = "rpodtest";
    let uid = uid_of(u);
    w.load(u);
    assert!(w.ok(u, &["images"]).contains("localhost/bb"));
    assert_eq!(w.ok(u, &["run", "--rm", IMG, "echo", "hi"]), "hi\n");
    // The user namespace: root is the user, the subordinate range follows.
    let map = w.ok(u, &["run", "--rm", "--network", "none", IMG, "cat", "/proc/self/uid_map"]);
    let map: Vec<Vec<String>> =
        map.lines().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect::<Vec<_>>();
    assert_eq!(map[0], ["0", &uid.to_string(), "1"], "{map:?}");
    assert_eq!(map[1], ["1", "100000", "65536"], "{map:?}");
    assert_eq!(w.ok(u, &["run", "--rm", IMG, "id", "-u"]), "0\n");
    assert!(w.ok(u, &["info"]).contains("rootless: true"));
    // Ownership through the mapping: root's files are 0 inside, the user's on the host.
    let store = w.store(u);
    let o = w.ok(u, &["unshare", "sh", "-c", &format!("ls -ln {}/layers/*/diff/www/index.html", store.display())]);
    let f: Vec<&str> = o.split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("0", "0"), "{o}");
    let layer =
        std::fs::read_dir(store.join("layers")).unwrap().flatten().map(|e| e.path()).find(|p| p.is_dir()).unwrap();
    assert_eq!(std::fs::metadata(layer.join("diff/www/index.html")).unwrap().uid(), uid);
    assert_eq!(w.ok(u, &["run", "--rm", IMG, "ls", "-ln", "/www/index.html"]).split_whitespace().nth(2), Some("0"));
    // A file of uid 1000 in the image keeps it through the mapping: subordinate ID 100999 on
    // the host, 1000 in the container.
    let bob = std::fs::metadata(layer.join("diff/home/bob")).unwrap().uid();
    assert_eq!(bob, 100_000 + 999, "home/bob is owned by {bob} on the host");
    assert_eq!(w.ok(u, &["run", "--rm", IMG, "ls", "-lnd", "/home/bob"]).split_whitespace().nth(2), Some("1000"));
    // Pulled as the user (from a registry on the stand-in host), then run.
    if Path::new("/usr/bin/docker-registry").exists() && Path::new("/usr/bin/skopeo").exists() {
        let name = w.start_registry();
        assert_eq!(w.ok(u, &["pull", "--tls-verify=false", "-q", &name]).trim().len(), 64);
        assert_eq!(
            w.ok(u, &["run", "--rm", "--network", "none", &name, "cat", "/www/index.html"]),
            "hello-from-rpod\n"
        );
        w.ok(u, &["rmi", &name]);
    } else {
        assert!(!common::required(), "docker-registry or skopeo is missing");
        eprintln!("!!!!!!!! SKIP the pull case: docker-registry or skopeo is missing (scripts/setup.sh) !!!!!!!!");
    }
    // The store and the run directory are private.
    assert_eq!(std::fs::metadata(&store).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(w.run_dir(u)).unwrap().mode() & 0o777, 0o700);

    // portfwd (the rootless default): a published port reached from the host.
    let port = 21080u16;
    let spec = format!("{port}:80");
    w.ok(u, &common::httpd(&["run", "-d", "--name", "web", "-p", &spec]));
    w.curl_until(&format!("http://127.0.0.1:{port}/"), "hello-from-rpod\n");
    assert_eq!(w.ok(u, &["port", "web"]), format!("80/tcp -> 0.0.0.0:{port}\n"));
    assert_eq!(w.ok(u, &["exec", "web", "cat", "/etc/hostname"]).len(), 13);
    assert!(w.ok(u, &["exec", "-t", "web", "tty"]).starts_with("/dev/pts/"));
    // run -d -i and attach (sockets in the private run directory).
    w.ok(u, &["run", "-d", "-i", "--name", "att", "--network", "none", IMG, "sh", "-c", "read x; echo got $x"]);
    let o = w.user_sh(u, &format!("echo hello | {} attach att", w.bin.join("rpod").display()));
    assert_eq!((o.code, o.stdout.as_str()), (0, "got hello\n"), "{o:?}");
    w.ok(u, &["rm", "att"]);
    let resolv = w.ok(u, &["exec", "web", "cat", "/etc/resolv.conf"]);
    assert!(resolv.starts_with("nameserver 10.0.2.3\n"), "{resolv}");
    // The container reaches the host through the gateway's NAT... only its loopback is
    // refused (--disable-host-loopback); a server on the host's lo is not reachable.
    // A low host port: a clear error, nothing created.
    let e = w.fails(u, &["run", "--rm", "-p", "80:80", IMG, "true"]);
    assert!(e.contains("privileged port 80"), "{e}");
    w.fails(u, &["run", "-d", "--name", "dup", "-p", &spec, IMG, "true"]);
    assert_eq!(w.ok(u, &["ps", "-a", "-q"]).lines().count(), 1);

    // Pods share the network namespace and the published port.
    let pport = 21081u16;
    w.ok(u, &["pod", "create", "--name", "p1", "-p", &format!("{pport}:80")]);
    w.ok(u, &common::httpd(&["run", "-d", "--pod", "p1", "--name", "p1web"]));
    w.curl_until(&format!("http://127.0.0.1:{pport}/"), "hello-from-rpod\n");
    let o = w.ok(u, &["run", "--rm", "--pod", "p1", IMG, "wget", "-qO-", "http://127.0.0.1:80/"]);
    assert_eq!(o, "hello-from-rpod\n");
    w.ok(u, &["pod", "rm", "-f", "p1"]);
    assert_ne!(w.curl(&format!("http://127.0.0.1:{pport}/")).code, 0);

    // The FUSE overlay program, chosen in the configuration.
    let fo = w.bin.join("fuse-overlay");
    if fo.is_file() {
        let conf = format!("mount_program = \"{}\"", fo.display());
        let o = w.user_sh(u, &format!("mkdir -p ~/.config/rpod && echo '{conf}' > ~/.config/rpod/rpod.conf"));
        assert_eq!(o.code, 0, "{o:?}");
        let o = w.ok(
            u,
            &["run", "--rm", "--network", "none", IMG, "sh", "-c", "grep -c 'fuse' /proc/mounts; cat /www/index.html"],
        );
        assert!(o.ends_with("hello-from-rpod\n") && !o.starts_with('0'), "{o}");
        let o = w.user_sh(u, "rm ~/.config/rpod/rpod.conf");
        assert_eq!(o.code, 0, "{o:?}");
    } else {
        eprintln!("fuse-overlay is not built: skipping the mount_program case");
    }

    // The monitor killed: its portfwd (which holds no copy of its own exit pipe) ends too.
    let id = w.ok(u, &["inspect", "-f", "{{.Id}}", "web"]).trim().to_owned();
    // Host PIDs of the user's processes whose command line has all of `words`.
    let find = |words: &[&str]| -> Vec<u32> {
        w.procs_of(uid)
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).into_owned();
                words.iter().all(|x| cmd.contains(x))
            })
            .collect()
    };
    let short = &id[..16];
    assert!(!find(&["portfwd", short]).is_empty(), "web's portfwd: {:?}", w.procs_of(uid));
    let mon = find(&["__monitor", &id]);
    assert_eq!(mon.len(), 1, "web's monitor: {:?}", w.procs_of(uid));
    let o = Command::new("kill").args(["-9", &mon[0].to_string()]).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let end = Instant::now() + Duration::from_secs(3);
    while !find(&["portfwd", short]).is_empty() {
        assert!(Instant::now() < end, "web's portfwd still runs after its monitor was killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(w.curl(&format!("http://127.0.0.1:{port}/")).code, 0);

    // Stop: portfwd ends with the container.
    w.ok(u, &["rm", "-f", "-t", "0", "web"]);
    assert_ne!(w.curl(&format!("http://127.0.0.1:{port}/")).code, 0);
    w.wait_no_helpers(u);
    // Nothing runs with real root: every process of the namespace is a user's.
    for (pid, real, comm) in w.procs() {
        assert_ne!(real, 0, "process {pid} ({comm}) runs as root");
    }
    // reset: no containers, images or processes left but nothing (the pause process goes too).
    w.ok(u, &["system", "reset", "-f"]);
    assert!(w.procs_of(uid).is_empty(), "{:?}", w.procs_of(uid));
    assert_eq!(w.ok(u, &["ps", "-a", "-q"]), "");
    assert_eq!(w.ok(u, &["images", "-q"]), "");
}

#[test]
fn rootless_bridge_networks() {
    if skip("rootless_bridge_networks") {
        return;
    }
    let w = World::new("net");
    let u = "rpodtest";
    w.load(u);
    w.ok(u, &["network", "create", "n1"]);
    let port = 22080u16;
    let url = format!("http://127.0.0.1:{port}/");
    w.ok(u, &common::httpd(&["run", "-d", "--name", "web", "--network", "n1", "-p", &format!("{port}:80")]));
    w.curl_until(&url, "hello-from-rpod\n");
    // By name, through dnsd in the rootless netns.
    assert_eq!(w.ok(u, &["run", "--rm", "--network", "n1", IMG, "wget", "-qO-", "http://web/"]), "hello-from-rpod\n");
    // The rootless netns, entered to look: the bridge and netd's table.
    let o = w.ok(u, &["unshare", "--rootless-netns", "ip", "-o", "link", "show"]);
    assert!(o.contains("podman1") && o.contains("tap0"), "{o}");
    assert!(w.ok(u, &["unshare", "--rootless-netns", "nft", "list", "tables"]).contains("inet netd"));
    // network reload after the rules are flushed.
    w.ok(u, &["unshare", "--rootless-netns", "nft", "flush", "ruleset"]);
    assert_ne!(w.curl(&url).stdout, "hello-from-rpod\n");
    w.ok(u, &["network", "reload", "--all"]);
    w.curl_until(&url, "hello-from-rpod\n");
    // Its port forwarder killed: the next command restarts it with the ports.
    let pf = std::fs::read_to_string(w.run_dir(u).join("rootless-netns/portfwd.pid")).unwrap();
    w.kill(pf.split_whitespace().next().unwrap().parse().unwrap());
    assert_eq!(w.ok(u, &["run", "--rm", "--network", "n1", IMG, "wget", "-qO-", "http://web/"]), "hello-from-rpod\n");
    w.curl_until(&url, "hello-from-rpod\n");
    // A pod on the bridge network: reached by its name and through its port.
    let pport = 22081u16;
    w.ok(u, &["pod", "create", "--name", "p2", "--network", "n1", "-p", &format!("127.0.0.2:{pport}:80")]);
    w.ok(u, &common::httpd(&["run", "-d", "--pod", "p2"]));
    let purl = format!("http://127.0.0.2:{pport}/");
    w.curl_until(&purl, "hello-from-rpod\n");
    // The same port on another address, refused for another container: what it undoes
    // leaves the pod's forward in the shared forwarder alone.
    let other = format!("127.0.0.1:{pport}:80");
    w.fails(u, &["run", "--rm", "--network", "n1", "-p", &other, IMG, "true"]);
    w.curl_until(&purl, "hello-from-rpod\n");
    assert_eq!(w.ok(u, &["run", "--rm", "--network", "n1", IMG, "wget", "-qO-", "http://p2/"]), "hello-from-rpod\n");
    w.ok(u, &["pod", "rm", "-f", "p2"]);
    // The last user leaves: the rootless netns and its helpers go.
    w.ok(u, &["rm", "-f", "-t", "0", "web"]);
    w.wait_no_helpers(u);
    let ns = w.run_dir(u).join("rootless-netns/netns");
    assert!(!ns.exists(), "{} is left", ns.display());
    // A start that fails after the rootless netns was made for it (an IPv6 host address
    // cannot be published): the netns and its forwarder go again.
    w.ok(u, &["create", "--name", "v6", "--network", "n1", "-p", "[::1]:22090:80", IMG, "true"]);
    let e = w.fails(u, &["start", "v6"]);
    assert!(e.contains("IPv4"), "{e}");
    w.wait_no_helpers(u);
    assert!(!ns.exists(), "{} is left after a failed start", ns.display());
    w.ok(u, &["rm", "v6"]);
    // Gone while in use (unmounted under it): detected and rebuilt by the next command.
    w.ok(u, &common::httpd(&["run", "-d", "--name", "web2", "--network", "n1", "-p", &format!("{port}:80")]));
    w.curl_until(&url, "hello-from-rpod\n");
    w.ok(u, &["unshare", "umount", ns.to_str().unwrap()]);
    w.ok(u, &["rm", "-f", "-t", "0", "web2"]);
    w.ok(u, &common::httpd(&["run", "-d", "--name", "web3", "--network", "n1", "-p", &format!("{port}:80")]));
    w.curl_until(&url, "hello-from-rpod\n");
    w.ok(u, &["rm", "-f", "-t", "0", "web3"]);
    w.ok(u, &["network", "rm", "n1"]);
    w.wait_no_helpers(u);
}

#[test]
fn rootless_faults_and_isolation() {
    if skip("rootless_faults_and_isolation") {
        return;
    }
    let w = World::new("iso");
    let (a, b) = ("rpodtest", "rpodtest2");
    // Concurrent first commands: one pause process.
    let rpod = w.bin.join("rpod");
    let o =
        w.user_sh(b, &format!("{0} ps >/dev/null & {0} ps >/dev/null & {0} images >/dev/null & wait", rpod.display()));
    assert_eq!(o.code, 0, "{o:?}");
    let pauses = w.procs_of(uid_of(b)).into_iter().filter(|(_, c)| c == "rpod-pause").count();
    assert_eq!(pauses, 1, "{:?}", w.procs_of(uid_of(b)));
    w.load(a);
    w.load(b);
    let port = 23080u16;
    let url = format!("http://127.0.0.1:{port}/");
    w.ok(a, &common::httpd(&["run", "-d", "--name", "web", "-p", &format!("{port}:80")]));
    w.curl_until(&url, "hello-from-rpod\n");
    // The pause process killed: rebuilt in the namespaces the running container's monitor
    // still holds, so the container stays in reach.
    let p1 = w.pause_pid(a).unwrap();
    w.kill(p1);
    let ps = w.ok(a, &["ps"]);
    assert!(ps.contains("web") && ps.contains("Up"), "{ps}");
    let p2 = w.pause_pid(a).unwrap();
    assert_ne!(p1, p2);
    assert_eq!(w.ok(a, &["exec", "web", "cat", "/www/index.html"]), "hello-from-rpod\n");
    w.curl_until(&url, "hello-from-rpod\n");
    // Isolation: the other user sees none of it and cannot reach it.
    assert_eq!(w.ok(b, &["ps", "-a", "-q"]), "");
    w.fails(b, &["stop", "web"]);
    let e = w.fails(b, &["--root", w.store(a).to_str().unwrap(), "ps"]);
    assert!(e.to_lowercase().contains("permission denied"), "{e}");
    let o = w.exec(Some(b), false, "ls", &[w.run_dir(a).to_str().unwrap()]);
    assert_ne!(o.code, 0, "{o:?}");
    // Each user has a pause process of their own.
    w.ok(b, &["run", "--rm", IMG, "true"]);
    assert_ne!(w.pause_pid(b), w.pause_pid(a));
    w.ok(a, &["rm", "-f", "-t", "0", "web"]);
    w.wait_no_helpers(a);
    // Killed with nothing running: made anew.
    w.kill(p2);
    assert_eq!(w.ok(a, &["run", "--rm", "--network", "none", IMG, "echo", "fresh"]), "fresh\n");
    assert_ne!(w.pause_pid(a), Some(p2));
    // A stale pid file (a reused PID: another process, another start time) is not joined.
    std::fs::write(w.run_dir(a).join("pause.pid"), "1 1\n").unwrap();
    assert_eq!(w.ok(a, &["run", "--rm", "--network", "none", IMG, "echo", "again"]), "again\n");
    assert_ne!(w.pause_pid(a), Some(1));
    // A crash (or a reboot): every process of the user killed at once, with a container on
    // portfwd and one on a bridge network running. The next commands recover: the
    // containers are marked exited and cleaned, namespaces and helpers are made anew.
    w.ok(a, &["network", "create", "n1"]);
    w.ok(a, &common::httpd(&["run", "-d", "--name", "c1", "-p", &format!("{port}:80")]));
    w.ok(a, &["run", "-d", "--name", "c2", "--network", "n1", IMG, "sleep", "1000"]);
    // And a pod on the bridge network: its namespace file outlives the mount (a plain file).
    w.ok(a, &["pod", "create", "--name", "pc", "--network", "n1"]);
    w.ok(a, &["run", "-d", "--pod", "pc", "--name", "c3", IMG, "sleep", "1000"]);
    let o = w.exec(Some(a), false, "kill", &["-9", "-1"]);
    assert_ne!(o.code, -1, "{o:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(w.procs_of(uid_of(a)).is_empty(), "{:?}", w.procs_of(uid_of(a)));
    let ps = w.ok(a, &["ps", "-a"]);
    assert!(ps.contains("c1") && ps.contains("c2") && !ps.contains("Up "), "{ps}");
    w.ok(a, &["start", "c1", "c2", "c3"]);
    w.curl_until(&url, "hello-from-rpod\n");
    let o = w.ok(a, &["exec", "c2", "cat", "/etc/hosts"]);
    assert!(o.contains("10.89.0."), "{o}");
    let o = w.ok(a, &["exec", "c3", "cat", "/etc/hosts"]);
    assert!(o.contains("10.89.0."), "{o}");
    w.ok(a, &["rm", "-f", "-t", "0", "c1", "c2", "c3"]);
    w.ok(a, &["pod", "rm", "-f", "pc"]);
    w.ok(a, &["network", "rm", "n1"]);
    w.wait_no_helpers(a);
    // Without XDG_RUNTIME_DIR: /tmp/rpod-<uid>, which another user cannot plant.
    let planted = format!("/tmp/rpod-{}", uid_of(b));
    let o = w.exec(Some(a), true, "mkdir", &["-m", "0777", &planted]);
    assert_eq!(o.code, 0, "{o:?}");
    let o = w.exec(Some(b), true, w.bin.join("rpod").to_str().unwrap(), &["ps"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("not by you"), "{o:?}");
    assert!(o.stderr.contains(&format!("owned by {a} ")) && o.stderr.contains("XDG_RUNTIME_DIR"), "{o:?}");
    let o = w.exec(None, false, "rmdir", &[&planted]);
    assert_eq!(o.code, 0, "{o:?}");
    let o = w.exec(Some(b), true, w.bin.join("rpod").to_str().unwrap(), &["ps", "-a"]);
    assert_eq!(o.code, 0, "{o:?}");
    let o = w.exec(None, false, "stat", &["-c", "%U %a", &planted]);
    assert_eq!(o.stdout, format!("{b} 700\n"), "{o:?}");
    // XDG_RUNTIME_DIR left pointing at another user's (after su): /tmp/rpod-<uid> instead.
    let xdg = format!("XDG_RUNTIME_DIR={}", w.rt(a).display());
    let o = w.exec(Some(b), true, "env", &[&xdg, w.bin.join("rpod").to_str().unwrap(), "ps", "-a"]);
    assert_eq!(o.code, 0, "{o:?}");
    // Nothing runs with real root.
    for (pid, real, comm) in w.procs() {
        assert_ne!(real, 0, "process {pid} ({comm}) runs as root");
    }
}
