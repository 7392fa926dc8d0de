//! FUSE over io_uring in `fuse-overlay`: with the kernel's `enable_uring` switched on (and
//! restored afterwards) the daemon registers one queue per possible CPU and serves requests
//! from its queue threads; with `FUSE_OVERLAY_URING=0` or `enable_uring=N` it serves
//! `/dev/fuse` as before. Each test mounts in its own temporary tree, runs an untar and a few
//! file operations, checks the content, and unmounts; the daemon must exit by itself.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;

use common::{lazy_unmount, mounted, Daemon, BIN};

const ENABLE: &str = "/sys/module/fuse/parameters/enable_uring";
const FILES: usize = 300;

/// `enable_uring` is global: the tests of this file take turns.
static LOCK: Mutex<()> = Mutex::new(());

fn required() -> bool {
    std::env::var_os("RPOD_REQUIRE_ROOT").is_some_and(|v| v == "1")
}

/// Root and a kernel with FUSE over io_uring; skips loudly otherwise (fails with
/// RPOD_REQUIRE_ROOT=1).
fn can_run(test: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        "needs root (FUSE mounts of test layers, writing the fuse module's enable_uring)"
    } else if !Path::new(ENABLE).exists() {
        "the kernel has no FUSE over io_uring (no /sys/module/fuse/parameters/enable_uring; Linux 6.14+)"
    } else {
        return true;
    };
    if required() {
        panic!("{test}: {why} (RPOD_REQUIRE_ROOT=1)");
    }
    eprintln!("SKIPPED {test}: {why} (set RPOD_REQUIRE_ROOT=1 to fail instead)");
    false
}

/// Sets `enable_uring` and restores the previous value on drop.
struct EnableUring {
    old: String,
}

impl EnableUring {
    fn set(v: &str) -> EnableUring {
        let old = fs::read_to_string(ENABLE).unwrap().trim().to_owned();
        fs::write(ENABLE, v).unwrap();
        EnableUring { old }
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        let _ = fs::write(ENABLE, &self.old);
    }
}

/// A temporary tree: source files and their tar, layers, mount point, daemon log.
struct Tree {
    t: tempfile::TempDir,
}

impl Tree {
    fn new(tag: &str) -> Tree {
        let t = tempfile::Builder::new().prefix(&format!("fuse-uring-{tag}-")).tempdir().unwrap();
        for d in ["l", "u", "w", "m", "src"] {
            fs::create_dir(t.path().join(d)).unwrap();
        }
        let tree = Tree { t };
        fs::write(tree.p("l/lower"), "from the lower layer\n").unwrap();
        for i in 0..FILES {
            let d = tree.p(&format!("src/tree/d{:02}", i / 50));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(format!("f{i:03}")), content(i)).unwrap();
        }
        let st =
            Command::new("tar").arg("-cf").arg(tree.p("tree.tar")).arg("-C").arg(tree.p("src")).arg("tree").status();
        assert!(st.unwrap().success(), "tar -c failed");
        tree
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.t.path().join(rel)
    }
    fn opts(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            self.p("l").display(),
            self.p("u").display(),
            self.p("w").display()
        )
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        lazy_unmount(&self.p("m"));
    }
}

fn content(i: usize) -> String {
    format!("file {i}\n").repeat(i % 97 + 1)
}

/// A foreground `fuse-overlay -d` with its log in the tree; unmounted and killed on drop.
impl Daemon {
    fn start(t: &Tree, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.arg("-d").arg("-f").arg("-o").arg(t.opts()).arg(t.p("m"));
        cmd.env_remove("FUSE_OVERLAY_URING").env("NO_COLOR", "1");
        Daemon::spawn(cmd, &t.p("m"), env, Some(&t.p("daemon.log")))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log.as_ref().unwrap()).unwrap_or_default()
    }

    /// io_uring instances the daemon holds open.
    fn uring_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .flatten()
            .filter(|e| fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("io_uring")))
            .count()
    }

    /// Waits for `n` "queue registered" lines in the log.
    fn wait_registered(&self, n: usize) {
        let t0 = Instant::now();
        loop {
            let got = self.log().matches("FUSE over io_uring: queue").count();
            if got >= n {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "{got} of {n} queues registered:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn possible_cpus() -> usize {
    let s = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    s.trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// Untar, create, read, write, rename and unlink through the mount; checks what the mount
/// and the upper layer then hold.
fn workload(t: &Tree) {
    let m = t.p("m");
    let st = Command::new("tar").arg("-xf").arg(t.p("tree.tar")).arg("-C").arg(&m).status().unwrap();
    assert!(st.success(), "tar -x into the mount failed");
    for i in 0..FILES {
        let rel = format!("tree/d{:02}/f{i:03}", i / 50);
        assert_eq!(fs::read_to_string(m.join(&rel)).unwrap(), content(i), "{rel}");
    }
    assert_eq!(fs::read_to_string(m.join("lower")).unwrap(), "from the lower layer\n");
    // Write a bigger file in pieces (several WRITE requests) and read it back.
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    fs::write(m.join("big"), &big).unwrap();
    assert_eq!(fs::read(m.join("big")).unwrap(), big);
    // Copy-up of a lower file by appending.
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(m.join("lower")).unwrap();
        f.write_all(b"appended\n").unwrap();
    }
    assert_eq!(fs::read_to_string(m.join("lower")).unwrap(), "from the lower layer\nappended\n");
    // Renames and unlinks of half the untarred files.
    for i in (0..FILES).step_by(2) {
        let rel = format!("tree/d{:02}/f{i:03}", i / 50);
        if i % 4 == 0 {
            fs::rename(m.join(&rel), m.join(format!("{rel}.moved"))).unwrap();
        } else {
            fs::remove_file(m.join(&rel)).unwrap();
        }
    }
    let mut count = 0;
    for d in fs::read_dir(m.join("tree")).unwrap() {
        count += fs::read_dir(d.unwrap().path()).unwrap().count();
    }
    assert_eq!(count, FILES - FILES / 4, "files left after renames and unlinks");
    assert_eq!(fs::read_to_string(m.join("tree/d00/f004.moved")).unwrap(), content(4));
    assert!(!m.join("tree/d00/f002").exists());
    assert_eq!(fs::read_to_string(t.p("u/tree/d05/f299")).unwrap(), content(299), "upper layer");
}

#[test]
fn uring_serves_requests() {
    if !can_run("uring_serves_requests") {
        return;
    }
    let _l = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _e = EnableUring::set("Y");
    let t = Tree::new("on");
    let d = Daemon::start(&t, &[]);
    let n = possible_cpus();
    d.wait_registered(n);
    assert!(d.uring_fds() >= n, "expected {n} io_uring instances in the daemon, found {}", d.uring_fds());
    workload(&t);
    let log = d.log();
    let by_ring = log.matches("thread=fuser-uring-").count();
    assert!(by_ring >= FILES, "only {by_ring} requests were served from io_uring queues:\n{log}");
    assert!(!log.contains("not used"), "{log}");
    assert!(d.stop(), "the daemon did not exit cleanly after unmount");
}

#[test]
fn classic_when_off() {
    if !can_run("classic_when_off") {
        return;
    }
    let _l = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Kernel offers it, the daemon is told not to use it.
    {
        let _e = EnableUring::set("Y");
        let t = Tree::new("env-off");
        let d = Daemon::start(&t, &[("FUSE_OVERLAY_URING", "0")]);
        workload(&t);
        let log = d.log();
        assert_eq!(d.uring_fds(), 0, "io_uring instances with FUSE_OVERLAY_URING=0");
        assert!(!log.contains("thread=fuser-uring-"), "served from io_uring with FUSE_OVERLAY_URING=0");
        assert!(log.contains("thread=fuser-"), "no classic request served:\n{log}");
        assert!(d.stop(), "the daemon did not exit cleanly after unmount");
    }
    // The kernel does not offer it: one info line says why.
    {
        let _e = EnableUring::set("N");
        let t = Tree::new("kernel-off");
        let d = Daemon::start(&t, &[]);
        workload(&t);
        let log = d.log();
        assert!(log.contains("FUSE over io_uring not used") && log.contains("enable_uring is N"), "{log}");
        assert_eq!(d.uring_fds(), 0);
        assert!(!log.contains("thread=fuser-uring-"));
        assert!(d.stop(), "the daemon did not exit cleanly after unmount");
    }
}

/// SIGTERM right after the mount (while the queues register) unmounts and exits 0. The
/// daemon holds a file on its mount across the unmount; closing it only at exit once left a
/// queue thread waiting forever in the kernel's connection teardown (6.18).
#[test]
fn uring_sigterm_exits() {
    if !can_run("uring_sigterm_exits") {
        return;
    }
    let _l = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _e = EnableUring::set("Y");
    for round in 0..5 {
        let t = Tree::new("term");
        let mut d = Daemon::start(&t, &[]);
        nix::sys::signal::kill(d.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut c = d.child.take().unwrap();
        let t0 = Instant::now();
        let st = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                let tasks: Vec<String> = fs::read_dir(format!("/proc/{}/task", c.id()))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| {
                        let rd = |f: &str| fs::read_to_string(e.path().join(f)).unwrap_or_default();
                        format!("{} {}", rd("comm").trim(), rd("wchan"))
                    })
                    .collect();
                let _ = c.kill();
                panic!("round {round}: no exit 5 s after SIGTERM; threads: {tasks:?}\n{}", d.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(st.success(), "round {round}: exit status after SIGTERM: {st}\n{}", d.log());
        assert!(!mounted(&t.p("m")));
    }
}
