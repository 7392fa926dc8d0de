//! "As a user would", rootless: Debian's podman 4.3.1 run as the unprivileged user `rpodtest`
//! with OUR `portfwd` as its slirp4netns (`[engine] network_cmd_path`) and OUR `fuse-overlay`
//! as the overlay driver's `mount_program`. It imports a busybox image, serves a page from a
//! container through a published port (`port_handler=slirp4netns`, so the port goes through
//! portfwd's API socket) and fetches it from the host; it proves the container's `/` is a
//! `fuse.fuse-overlay` mount served by our process and that our portfwd runs for it; a second
//! container writes a file (copy-up), appends to a lower file and deletes one (whiteout); a
//! third sees the image unchanged.
//!
//! How it stays private: everything lives in `/tmp/rp-<prefix>` (short, so podman's socket
//! paths stay under 108 bytes), which is rpodtest's HOME, XDG_RUNTIME_DIR, config and data
//! dirs, storage root and runroot. So this podman has its own rootless pause process (user +
//! mount namespaces), and every process it starts carries that directory in its command line
//! or in `XDG_RUNTIME_DIR`. The [`Rootless`] guard's Drop (also on panic) removes the
//! containers, kills exactly those processes of rpodtest (others may be running rpodtest's
//! tests at the same time), detaches any mount under the directory and deletes it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rpod_integration::cmd::{self, have_tool, Out};
use rpod_integration::{print_skip, random_prefix, require_root, warn_if_stale, workspace_bin};

const USER: &str = "rpodtest";
const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);
/// What the image's web page says.
const PAGE: &str = "hello from busybox on fuse-overlay";

/// One rootless podman world; see the module docs. Drop cleans it up.
struct Rootless {
    test: &'static str,
    dir: PathBuf,
    uid: u32,
}

impl Rootless {
    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    fn run_dir(&self) -> String {
        self.path("run")
    }

    /// `podman ARGS` as rpodtest, with this world's configuration and storage.
    fn podman(&self, args: &[&str]) -> Out {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", USER, "--regid", USER, "--init-groups", "env", "-i"])
            .arg(format!("HOME={}", self.path("home")))
            .arg(format!("USER={USER}"))
            .arg(format!("XDG_RUNTIME_DIR={}", self.run_dir()))
            .arg(format!("XDG_CONFIG_HOME={}", self.path("home/.config")))
            .arg(format!("XDG_DATA_HOME={}", self.path("home/.local/share")))
            .arg(format!("CONTAINERS_CONF={}", self.path("containers.conf")))
            .arg(format!("CONTAINERS_STORAGE_CONF={}", self.path("storage.conf")))
            .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
            .args(["podman", "--root", &self.path("root"), "--runroot", &self.path("runroot")])
            .args(["--storage-driver", "overlay", "--storage-opt"])
            .arg(format!("overlay.mount_program={}", self.path("bin/fuse-overlay")))
            .args(args);
        cmd::run(c, None, PODMAN_TIMEOUT)
    }

    fn podman_ok(&self, what: &str, args: &[&str]) -> String {
        let o = self.podman(args);
        o.expect_ok(&format!("{}: {what}", self.test)).to_string()
    }

    /// rpodtest's live processes that belong to this world: their command line names our
    /// directory, or their XDG_RUNTIME_DIR is ours (the pause process `catatonit -P`).
    fn our_processes(&self) -> Vec<ProcInfo> {
        let xdg = format!("XDG_RUNTIME_DIR={}", self.run_dir());
        let dir = self.dir.to_string_lossy().into_owned();
        processes(self.uid)
            .into_iter()
            .filter(|p| p.cmdline.iter().any(|a| a.contains(&dir)) || p.environ.contains(&xdg))
            .collect()
    }

    fn kill_ours(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.our_processes();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "[{}] processes of {USER} still alive after SIGKILL: {:?}",
                    self.test,
                    left.iter().map(|p| (p.pid, p.cmdline.join(" "))).collect::<Vec<_>>()
                );
                return;
            }
            for p in &left {
                // SAFETY: kill(2) of a process of the test user whose command line or
                // environment names this test's private directory; at worst ESRCH.
                unsafe {
                    libc::kill(p.pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Mount points under our directory in root's mount namespace (normally none: the
    /// rootless mounts live in the pause process's namespace and die with it), deepest first.
    fn host_mounts(&self) -> Vec<String> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut v: Vec<String> = text
            .lines()
            .filter_map(|l| parse_mountinfo(l).map(|m| m.mount_point))
            .filter(|m| m == &dir || m.starts_with(&format!("{dir}/")))
            .collect();
        v.sort_by_key(|m| std::cmp::Reverse(m.len()));
        v
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-f", "-a", "-t", "0"]);
        self.kill_ours();
        for m in self.host_mounts() {
            if let Ok(c) = std::ffi::CString::new(m.clone()) {
                // SAFETY: umount2 of a NUL-terminated path under our own test directory.
                let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                if r != 0 {
                    eprintln!("[{}] umount -l {m}: {}", self.test, std::io::Error::last_os_error());
                }
            }
        }
        if std::thread::panicking() && std::env::var("RPOD_KEEP_ON_FAILURE").is_ok_and(|v| v == "1") {
            eprintln!("[{}] failed; RPOD_KEEP_ON_FAILURE=1 keeps {}", self.test, self.dir.display());
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("[{}] could not remove {}: {e}", self.test, self.dir.display());
            }
        }
    }
}

#[derive(Debug)]
struct ProcInfo {
    pid: i32,
    exe: PathBuf,
    cmdline: Vec<String>,
    environ: Vec<String>,
}

/// Live (not zombie) processes whose effective uid is `uid`.
fn processes(uid: u32) -> Vec<ProcInfo> {
    let split = |b: Vec<u8>| -> Vec<String> {
        b.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
    };
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if e.metadata().ok().map(|m| m.uid()) != Some(uid) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie_or_gone =
            stat.rsplit_once(')').is_none_or(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')));
        if zombie_or_gone {
            continue;
        }
        v.push(ProcInfo {
            pid,
            exe: std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default(),
            cmdline: split(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()),
            environ: split(std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()),
        });
    }
    v
}

struct Mount {
    dev: String,
    mount_point: String,
    fstype: String,
}

/// One line of /proc/PID/mountinfo (paths used here hold no escaped characters).
fn parse_mountinfo(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    Some(Mount {
        dev: l.get(2)?.to_string(),
        mount_point: l.get(4)?.to_string(),
        fstype: right.split(' ').next()?.to_string(),
    })
}

fn mounts_of(pid: i32) -> Vec<Mount> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(parse_mountinfo)
        .collect()
}

/// The uid of `user`, if it exists.
fn uid_of(user: &str) -> Option<u32> {
    let o = Command::new("id").args(["-u", user]).output().ok()?;
    if !o.status.success() {
        return None;
    }
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

/// Why this test cannot run here, if it cannot; and the two binaries under test.
fn preconditions() -> Result<(u32, PathBuf, PathBuf), String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root (the set-up chowns a directory to rpodtest)".into());
    }
    for tool in ["podman", "runc", "conmon", "setpriv", "newuidmap", "tar", "id"] {
        if !have_tool(tool) {
            return Err(format!("`{tool}` is not installed (scripts/setup.sh installs it)"));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err("/bin/busybox is missing (Debian busybox-static)".into());
    }
    let uid = uid_of(USER).ok_or(format!("no user {USER} (scripts/setup.sh creates it)"))?;
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuid.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
        return Err(format!("{USER} has no /etc/subuid range"));
    }
    for dev in ["/dev/fuse", "/dev/net/tun"] {
        let mode = std::fs::metadata(dev).map(|m| m.mode()).unwrap_or(0);
        if mode & 0o006 != 0o006 {
            return Err(format!("{dev} is missing or not 0666 (scripts/setup.sh chmods it)"));
        }
    }
    let hint = "build it with `cargo build --workspace`";
    let portfwd = workspace_bin("PORTFWD_BIN", "portfwd", hint)?;
    let fuse = workspace_bin("FUSE_OVERLAY_BIN", "fuse-overlay", hint)?;
    if std::env::var_os("PORTFWD_BIN").is_none() {
        warn_if_stale(&portfwd, "portfwd", "portfwd");
    }
    if std::env::var_os("FUSE_OVERLAY_BIN").is_none() {
        warn_if_stale(&fuse, "storage", "rpod-storage");
    }
    Ok((uid, portfwd, fuse))
}

fn sh(what: &str, program: &str, args: &[&str]) {
    let mut c = Command::new(program);
    c.args(args);
    cmd::run(c, None, Duration::from_secs(30)).expect_ok(what);
}

/// A free TCP port on 127.0.0.1 (free now; nothing else here binds in that range).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// One HTTP/1.0 GET of `/` on 127.0.0.1:port; the whole answer.
fn http_get(port: u16) -> Result<String, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut v = Vec::new();
    s.read_to_end(&mut v).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&v).into_owned())
}

/// The image's root: busybox with relative applet links, and /www/index.html.
fn image_tar(dir: &Path) -> String {
    let img = dir.join("img");
    for d in ["bin", "www", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(img.join(d)).expect("mkdir image dir");
    }
    std::fs::copy("/bin/busybox", img.join("bin/busybox")).expect("copy busybox");
    let list = Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        // `busybox --list` names busybox itself: a link there would replace the binary.
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            let _ = std::os::unix::fs::symlink("busybox", img.join("bin").join(applet));
        }
    }
    std::fs::write(img.join("www/index.html"), format!("{PAGE}\n")).expect("write index.html");
    let tar = dir.join("img.tar").to_string_lossy().into_owned();
    let img = img.to_string_lossy().into_owned();
    sh("tar the image", "tar", &["--owner=0", "--group=0", "--numeric-owner", "-C", &img, "-cf", &tar, "."]);
    tar
}

#[test]
fn rootless_podman_with_portfwd_and_fuse_overlay() {
    let test = "rootless_podman_with_portfwd_and_fuse_overlay";
    let started = Instant::now();
    let (uid, portfwd_src, fuse_src) = match preconditions() {
        Ok(v) => v,
        Err(reason) if require_root() => panic!("RPOD_REQUIRE_ROOT=1 and {test} cannot run: {reason}"),
        Err(reason) => {
            print_skip(test, &reason);
            return;
        }
    };

    // ---- set-up, as root ----
    let prefix = random_prefix();
    let dir = PathBuf::from(format!("/tmp/rp-{prefix}"));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let w = Rootless { test, dir, uid };
    // podman's longest socket: $XDG_RUNTIME_DIR/libpod/tmp/<64 hex>.net (portfwd's API)
    assert!(w.run_dir().len() + "/libpod/tmp/".len() + 68 < 108, "{} is too long for socket paths", w.run_dir());
    for d in ["bin", "run", "home/.config", "home/.local/share"] {
        std::fs::create_dir_all(w.dir.join(d)).expect("mkdir");
    }
    let portfwd = w.path("bin/portfwd");
    let fuse = w.path("bin/fuse-overlay");
    std::fs::copy(&portfwd_src, &portfwd).expect("copy portfwd");
    std::fs::copy(&fuse_src, &fuse).expect("copy fuse-overlay");
    std::fs::write(
        w.dir.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             network_cmd_path = \"{portfwd}\"\n"
        ),
    )
    .expect("write containers.conf");
    std::fs::write(
        w.dir.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\
             [storage.options.overlay]\nmount_program = \"{fuse}\"\n",
            w.path("root"),
            w.path("runroot")
        ),
    )
    .expect("write storage.conf");
    let tar = image_tar(&w.dir);
    let d = w.dir.to_string_lossy().into_owned();
    sh("chown the test dir", "chown", &["-R", &format!("{USER}:{USER}"), &d]);
    for (p, mode) in [(d.clone(), 0o755), (w.path("bin"), 0o755), (portfwd.clone(), 0o755), (fuse.clone(), 0o755)] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::set_permissions(w.run_dir(), std::fs::Permissions::from_mode(0o700)).expect("chmod run");

    // ---- the image ----
    let image = format!("localhost/{prefix}img:latest");
    w.podman_ok("podman import", &["import", "--change", "ENV PATH=/bin", &tar, &image]);

    // ---- a web server behind a published port through portfwd's API ----
    let name = format!("{prefix}web");
    let mut attempt = 0;
    let port = loop {
        attempt += 1;
        let port = free_port();
        let o = w.podman(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "slirp4netns:port_handler=slirp4netns",
            "-p",
            &format!("127.0.0.1:{port}:80"),
            &image,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ]);
        if o.ok() {
            break port;
        }
        // Another test may have taken the port between free_port() and portfwd's bind.
        if attempt < 3 && format!("{}{}", o.stdout, o.stderr).contains("in use") {
            let _ = w.podman(&["rm", "-f", "-t", "0", &name]);
            continue;
        }
        panic!("{test}: podman run -d (web) failed\n{o}");
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        match http_get(port) {
            Ok(body) if body.contains(PAGE) => break body,
            r if Instant::now() >= deadline => {
                let logs = w.podman(&["logs", &name]);
                panic!("{test}: http://127.0.0.1:{port}/ did not serve the page: {r:?}\n{logs}");
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(page.starts_with("HTTP/1.") && page.contains(" 200 "), "{test}: {page}");

    // ---- it is our fuse-overlay that serves the container's root ----
    let info = w.podman_ok(
        "podman inspect",
        &["inspect", "--format", "{{.Id}} {{.State.Pid}} {{.GraphDriver.Data.MergedDir}}", &name],
    );
    let f: Vec<&str> = info.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{test}: podman inspect said {info:?}");
    let (id, pid, merged) = (f[0], f[1].parse::<i32>().expect("container pid"), f[2]);
    let root = mounts_of(pid).into_iter().find(|m| m.mount_point == "/");
    let root = root.unwrap_or_else(|| panic!("{test}: no / in /proc/{pid}/mountinfo"));
    assert_eq!(root.fstype, "fuse.fuse-overlay", "{test}: the container's / is not our FUSE file system");
    let procs = processes(uid);
    let fuse_proc = procs
        .iter()
        .find(|p| p.exe == Path::new(&fuse) && p.cmdline.last().is_some_and(|a| a == merged))
        .unwrap_or_else(|| panic!("{test}: no {fuse} process mounting {merged}"));
    let served = mounts_of(fuse_proc.pid).into_iter().find(|m| m.mount_point == merged);
    let served = served.unwrap_or_else(|| panic!("{test}: {merged} is not mounted in fuse-overlay's namespace"));
    assert_eq!(
        (served.fstype.as_str(), served.dev.as_str()),
        ("fuse.fuse-overlay", root.dev.as_str()),
        "{test}: the container's / is not the file system our fuse-overlay (pid {}) mounted",
        fuse_proc.pid
    );

    // ---- and our portfwd that serves its network, with the API socket for the port ----
    let pf = procs.iter().filter(|p| p.exe == Path::new(&portfwd)).collect::<Vec<_>>();
    assert!(
        pf.iter().any(|p| p.cmdline.iter().any(|a| a == "--api-socket") && p.cmdline.iter().any(|a| a.contains(id))),
        "{test}: no {portfwd} with --api-socket for container {id}: {:?}",
        pf.iter().map(|p| p.cmdline.join(" ")).collect::<Vec<_>>()
    );

    eprintln!(
        "[{test}] container pid {pid}: / is {} dev {}, mounted at {merged} by {fuse} (pid {}); \
         network by {portfwd} (pids {:?})",
        root.fstype,
        root.dev,
        fuse_proc.pid,
        pf.iter().map(|p| p.pid).collect::<Vec<_>>()
    );

    // ---- copy-up and whiteout through fuse-overlay ----
    let out = w.podman_ok(
        "podman run --rm (copy-up, whiteout)",
        &[
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "echo x > /f && cat /f && echo more >> /www/index.html && cat /www/index.html && \
             rm /bin/ls && ! test -e /bin/ls && ls /bin/cat",
        ],
    );
    assert_eq!(out, format!("x\n{PAGE}\nmore\n/bin/cat\n"), "{test}: copy-up/whiteout run");
    // The image is untouched, and the running container still serves the original page.
    let out = w.podman_ok(
        "podman run --rm (image unchanged)",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "sh",
            "-c",
            "test -e /bin/ls && ! test -e /f && cat /www/index.html",
        ],
    );
    assert_eq!(out, format!("{PAGE}\n"), "{test}: the image changed");
    let again = http_get(port).unwrap_or_else(|e| panic!("{test}: second fetch: {e}"));
    assert!(again.contains(PAGE) && !again.contains("more"), "{test}: {again}");

    // ---- removal stops our helpers ----
    w.podman_ok("podman rm", &["rm", "-f", "-t", "0", &name]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = processes(uid)
            .into_iter()
            .filter(|p| p.exe == Path::new(&portfwd) || p.exe == Path::new(&fuse))
            .map(|p| format!("{} {}", p.pid, p.cmdline.join(" ")))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{test}: still running after podman rm: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // portfwd took the published port with it.
    assert!(http_get(port).is_err(), "{test}: 127.0.0.1:{port} still answers after podman rm");
    drop(w);
    eprintln!("[{test}] passed in {:.1} s", started.elapsed().as_secs_f64());
}
