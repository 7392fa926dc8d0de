//! Integration tests of `fuse-overlay`: each test builds small layers in its own temporary
//! directory, mounts the binary (in the foreground, as a child process), and unmounts and
//! kills it on drop, also on failure.

#![allow(clippy::unwrap_used)]

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{lazy_unmount, mounted, Daemon as Fuse, BIN};

fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("RPOD_REQUIRE_ROOT").is_some_and(|v| v == "1") {
        panic!("{test}: needs root (RPOD_REQUIRE_ROOT=1)");
    }
    eprintln!("SKIPPED {test}: FUSE mounts of other users' layers need root (set RPOD_REQUIRE_ROOT=1 to fail instead)");
    false
}

/// Constructors of the daemon guard for this file's tests.
impl Fuse {
    fn start(opts: &str, mnt: &Path) -> Fuse {
        Self::start_env(opts, mnt, &[])
    }

    fn start_env(opts: &str, mnt: &Path, env: &[(&str, &str)]) -> Fuse {
        Self::start_with(Command::new(BIN), opts, mnt, env)
    }

    /// Starts the daemon with umask 077 (it must not mask the modes callers ask for).
    fn start_umask077(opts: &str, mnt: &Path) -> Fuse {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "umask 077; exec \"$0\" \"$@\"", BIN]);
        Self::start_with(cmd, opts, mnt, &[])
    }

    fn start_with(mut cmd: Command, opts: &str, mnt: &Path, env: &[(&str, &str)]) -> Fuse {
        cmd.arg("-f").arg("-o").arg(opts).arg(mnt);
        Fuse::spawn(cmd, mnt, env, None)
    }
}

/// A temporary tree with lower layers, upper, work and mount point.
struct Tree {
    t: tempfile::TempDir,
}

impl Drop for Tree {
    /// Unmounts and ends daemons that went to the background (their command line names this
    /// tree), also when a copy of the mount in another namespace keeps them alive.
    fn drop(&mut self) {
        for d in ["m", "fs"] {
            lazy_unmount(&self.p(d));
        }
        let me = self.t.path().to_string_lossy().into_owned();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmd) = fs::read(e.path().join("cmdline")) else { continue };
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains("fuse-overlay") && cmd.contains(&me) && pid != std::process::id() as i32 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Tree {
    fn new() -> Tree {
        let t = tempfile::Builder::new().prefix("fuse-test-").tempdir().unwrap();
        for d in ["l1", "l2", "u", "w", "m"] {
            fs::create_dir(t.path().join(d)).unwrap();
        }
        Tree { t }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.t.path().join(rel)
    }
    fn opts(&self) -> String {
        format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            self.p("l1").display(),
            self.p("l2").display(),
            self.p("u").display(),
            self.p("w").display()
        )
    }
}

fn cs(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(p: &Path, name: &str, v: &[u8]) {
    let (p, n) = (cs(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings and a valid value buffer.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}: {}", p.to_string_lossy(), std::io::Error::last_os_error());
}

fn get_xattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (p, n) = (cs(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is valid for writes of its length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

fn list_xattr(p: &Path) -> Vec<String> {
    let p = cs(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is valid for writes of its length.
    let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0);
    buf.truncate(r as usize);
    buf.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

fn mknod(p: &Path, mode: u32, dev: u64) {
    let c = cs(p);
    // SAFETY: NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(r, 0, "mknod {}: {}", p.display(), std::io::Error::last_os_error());
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

/// The layer set used by most tests: whiteouts and opaque dirs in every form the
/// reference reads.
fn build_layers(t: &Tree) {
    let (l1, l2) = (t.p("l1"), t.p("l2"));
    fs::write(l2.join("a"), "a-lower").unwrap();
    fs::write(l2.join("chm"), "chmod me").unwrap();
    fs::write(l2.join("own"), "chown me").unwrap();
    fs::write(l2.join("times"), "touch me").unwrap();
    fs::write(l2.join("xa"), "xattr me").unwrap();
    fs::write(l2.join("mv"), "move me").unwrap();
    fs::write(l2.join("rm"), "remove me").unwrap();
    fs::write(l2.join("mm"), "mmap-me-please").unwrap();
    fs::write(l2.join("hl1"), "linked").unwrap();
    fs::hard_link(l2.join("hl1"), l2.join("hl2")).unwrap();
    std::os::unix::fs::symlink("a", l2.join("sym")).unwrap();
    for d in ["d", "op1", "op2", "op3", "op4", "rd", "ren"] {
        fs::create_dir(l2.join(d)).unwrap();
    }
    for f in ["d/x", "d/y", "d/hid", "op1/no", "op2/no", "op3/no", "op4/no", "rd/f", "ren/f"] {
        fs::write(l2.join(f), f).unwrap();
    }
    let f = fs::File::create(l2.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    fs::write(l1.join("b"), "b-top").unwrap();
    for d in ["d", "op1", "op2", "op3", "op4"] {
        fs::create_dir(l1.join(d)).unwrap();
    }
    fs::write(l1.join("d/z"), "z").unwrap();
    mknod(&l1.join("d/x"), libc::S_IFCHR, 0); // whiteout as a 0/0 device
    fs::write(l1.join("d/.wh.y"), "").unwrap(); // whiteout as a .wh. file
    set_xattr(&l1.join("op1"), "trusted.overlay.opaque", b"y");
    set_xattr(&l1.join("op2"), "user.overlay.opaque", b"y");
    set_xattr(&l1.join("op3"), "user.fuseoverlayfs.opaque", b"y");
    fs::write(l1.join("op4/.wh..wh..opq"), "").unwrap();
    for d in ["op1", "op2", "op3", "op4"] {
        fs::write(l1.join(d).join("yes"), "yes").unwrap();
    }
    fs::write(l1.join(".wh.rootgone"), "").unwrap();
    fs::write(l2.join("rootgone"), "hidden").unwrap();
}

#[test]
fn core_overlay_semantics() {
    if !require_root("core_overlay_semantics") {
        return;
    }
    let t = Tree::new();
    build_layers(&t);
    let m = t.p("m");
    let fuse = Fuse::start(&t.opts(), &m);

    // Lookup and listing across layers, whiteouts and opaque dirs in every form.
    let top = names(&m);
    for n in ["a", "b", "d", "op1", "sym", "hl1", "hl2"] {
        assert!(top.contains(&n.to_owned()), "{n} missing from {top:?}");
    }
    assert!(!top.iter().any(|n| n.starts_with(".wh.") || n == "rootgone"), "{top:?}");
    assert_eq!(names(&m.join("d")), ["hid", "z"]);
    assert_eq!(errno(fs::metadata(m.join("d/x"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(m.join("d/y"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(m.join("d/.wh.y"))), libc::ENOENT);
    for d in ["op1", "op2", "op3", "op4"] {
        assert_eq!(names(&m.join(d)), ["yes"], "{d} is opaque");
    }
    assert_eq!(fs::read_to_string(m.join("sym")).unwrap(), "a-lower");
    assert!(!list_xattr(&m.join("op1")).iter().any(|x| x.starts_with("trusted.overlay")));

    // Copy-up on every kind of change.
    let mut f = fs::OpenOptions::new().append(true).open(m.join("a")).unwrap();
    f.write_all(b"+more").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "a-lower+more");
    assert_eq!(fs::read_to_string(t.p("l2/a")).unwrap(), "a-lower", "lower untouched");
    fs::set_permissions(m.join("chm"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(t.p("u/chm")).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(fs::read_to_string(t.p("u/chm")).unwrap(), "chmod me");
    std::os::unix::fs::lchown(m.join("own"), Some(1234), Some(5678)).unwrap();
    let um = fs::metadata(t.p("u/own")).unwrap();
    assert_eq!((um.uid(), um.gid()), (1234, 5678));
    assert_eq!(fs::metadata(m.join("own")).unwrap().uid(), 1234);
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::open(m.join("times")).unwrap().set_modified(when).unwrap();
    assert_eq!(fs::metadata(t.p("u/times")).unwrap().mtime(), 1_500_000_000);
    assert_eq!(fs::metadata(m.join("times")).unwrap().mtime(), 1_500_000_000);
    set_xattr(&m.join("xa"), "user.test", b"value");
    assert_eq!(get_xattr(&m.join("xa"), "user.test").unwrap(), b"value");
    assert_eq!(get_xattr(&t.p("u/xa"), "user.test").unwrap(), b"value");
    assert!(list_xattr(&m.join("xa")).contains(&"user.test".to_owned()));

    // mmap writes.
    {
        let f = fs::OpenOptions::new().read(true).write(true).open(m.join("mm")).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a shared mapping of 14 bytes of an open file, unmapped below.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), 14, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0)
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: `p` maps 14 writable bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(b"MMAP".as_ptr(), p.cast::<u8>(), 4);
            assert_eq!(libc::msync(p, 14, libc::MS_SYNC), 0);
            libc::munmap(p, 14);
        }
    }
    assert_eq!(fs::read_to_string(m.join("mm")).unwrap(), "MMAP-me-please");

    // Sparse copy-up keeps holes.
    fs::OpenOptions::new().write(true).open(m.join("sparse")).unwrap().write_all(b"x").unwrap();
    let sm = fs::metadata(t.p("u/sparse")).unwrap();
    assert_eq!(sm.len(), 64 << 20);
    assert!(sm.blocks() < 1024, "holes kept: {} blocks", sm.blocks());

    // Create, mkdir, unlink, rmdir, rename across layers.
    fs::write(m.join("new"), "new").unwrap();
    fs::create_dir(m.join("newdir")).unwrap();
    fs::write(m.join("newdir/f"), "f").unwrap();
    fs::rename(m.join("newdir"), m.join("newdir2")).unwrap();
    assert_eq!(fs::read_to_string(m.join("newdir2/f")).unwrap(), "f");
    fs::remove_file(m.join("rm")).unwrap();
    assert_eq!(errno(fs::metadata(m.join("rm"))), libc::ENOENT);
    let wh = fs::symlink_metadata(t.p("u/rm")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "whiteout is a 0/0 device");
    fs::remove_file(m.join("rd/f")).unwrap();
    fs::remove_dir(m.join("rd")).unwrap();
    assert_eq!(errno(fs::metadata(m.join("rd"))), libc::ENOENT);
    fs::create_dir(m.join("rd")).unwrap();
    assert!(names(&m.join("rd")).is_empty(), "recreated dir is opaque");
    assert_eq!(get_xattr(&t.p("u/rd"), "trusted.overlay.opaque").unwrap(), b"y");
    assert_eq!(errno(fs::remove_dir(m.join("op1"))), libc::ENOTEMPTY);
    fs::rename(m.join("mv"), m.join("moved")).unwrap();
    assert_eq!(fs::read_to_string(m.join("moved")).unwrap(), "move me");
    assert_eq!(errno(fs::metadata(m.join("mv"))), libc::ENOENT);
    assert_eq!(errno(fs::rename(m.join("ren"), m.join("ren2"))), libc::EXDEV, "lower dirs are not renamed");
    fs::rename(m.join("b"), m.join("d/b")).unwrap();
    assert_eq!(fs::read_to_string(m.join("d/b")).unwrap(), "b-top");
    fs::write(m.join("rm"), "again").unwrap();
    assert_eq!(fs::read_to_string(m.join("rm")).unwrap(), "again", "create over a whiteout");

    // Hard links, symlinks, special files.
    fs::hard_link(m.join("a"), m.join("a2")).unwrap();
    let (a, a2) = (fs::metadata(m.join("a")).unwrap(), fs::metadata(m.join("a2")).unwrap());
    assert_eq!((a.ino(), a.nlink()), (a2.ino(), 2));
    let (h1, h2) = (fs::metadata(m.join("hl1")).unwrap(), fs::metadata(m.join("hl2")).unwrap());
    assert_eq!((h1.ino(), h1.nlink()), (h2.ino(), 2), "lower hard links");
    std::os::unix::fs::symlink("new", m.join("sym2")).unwrap();
    assert_eq!(fs::read_link(m.join("sym2")).unwrap(), Path::new("new"));
    assert_eq!(fs::read_to_string(m.join("sym2")).unwrap(), "new");
    let fifo = cs(&m.join("fifo"));
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(fs::symlink_metadata(m.join("fifo")).unwrap().file_type().is_fifo());
    mknod(&m.join("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    assert_eq!(fs::symlink_metadata(m.join("null")).unwrap().rdev(), libc::makedev(1, 3));

    // statfs and fsync.
    let sv = nix::sys::statvfs::statvfs(&m).unwrap();
    assert!(sv.blocks() > 0);
    let f = fs::OpenOptions::new().write(true).open(m.join("new")).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // Inode numbers are unique (hard links share theirs).
    let mut seen = std::collections::HashMap::new();
    let mut stack = vec![m.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            }
            if md.nlink() > 1 && !md.is_dir() {
                continue;
            }
            if let Some(prev) = seen.insert(md.ino(), e.path()) {
                panic!("inode {} shared by {} and {}", md.ino(), prev.display(), e.path().display());
            }
        }
    }
    assert!(fuse.stop(), "clean exit on unmount");
    assert!(names(&t.p("w/work")).is_empty(), "no leftovers in the work dir");
    // Remount: the changes persist.
    let fuse = Fuse::start(&t.opts(), &m);
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "a-lower+more");
    assert_eq!(names(&m.join("d")), ["b", "hid", "z"]);
    assert!(names(&m.join("rd")).is_empty());
    assert_eq!(errno(fs::metadata(m.join("mv"))), libc::ENOENT);
    drop(fuse);
}

#[test]
fn options_and_errors() {
    if !require_root("options_and_errors") {
        return;
    }
    let t = Tree::new();
    fs::create_dir(t.p("l:3")).unwrap();
    fs::write(t.p("l:3/f"), "f").unwrap();
    fs::write(t.p("l2/g"), "g").unwrap();
    fs::create_dir(t.p("l2/dir")).unwrap();
    std::os::unix::fs::lchown(t.p("l2/g"), Some(5), Some(6)).unwrap();
    set_xattr(&t.p("l2/g"), "user.x", b"1");
    let m = t.p("m");

    // Missing and unusable directories are errors before mounting.
    for (opts, want) in [
        ("lowerdir=/nonexistent-fuse-test".to_owned(), "cannot access lowerdir"),
        (format!("lowerdir={},upperdir={}", t.p("l2").display(), t.p("u").display()), "workdir not specified"),
        (format!("lowerdir={},xattr_permissions=7", t.p("l2").display()), "xattr_permissions"),
        (format!("lowerdir={},uidmapping=0:4294967295:10", t.p("l2").display()), "invalid mapping specified"),
        (format!("lowerdir={},gidmapping=4294967200:0:1000", t.p("l2").display()), "invalid mapping specified"),
    ] {
        let out = Command::new(BIN).arg("-o").arg(&opts).arg(&m).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{opts}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(want), "{opts}: {e}");
        assert!(!mounted(&m));
    }

    // Escaped colon, unknown options, id mapping, static_nlink, read-only without upper.
    let lower = format!("{}:{}", t.p("l\\:3").display(), t.p("l2").display());
    let out = Command::new(BIN)
        .arg("-o")
        .arg(format!("lowerdir={lower},frobnicate=1,uidmapping=0:1000:10,gidmapping=0:2000:10,static_nlink"))
        .arg(&m)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument ignored: frobnicate=1"));
    assert!(mounted(&m), "daemonized and mounted when the command returned");
    assert_eq!(names(&m), ["dir", "f", "g"]);
    let g = fs::metadata(m.join("g")).unwrap();
    assert_eq!((g.uid(), g.gid()), (1005, 2006));
    assert_eq!(fs::metadata(m.join("dir")).unwrap().nlink(), 1);
    assert_eq!(errno(fs::write(m.join("nope"), "x")), libc::EROFS);
    lazy_unmount(&m);
    std::thread::sleep(Duration::from_millis(100));

    let fuse =
        Fuse::start(&format!("lowerdir={},squash_to_uid=77,squash_to_gid=88,noxattrs=1", t.p("l2").display()), &m);
    let g = fs::metadata(m.join("g")).unwrap();
    assert_eq!((g.uid(), g.gid()), (77, 88));
    assert_eq!(get_xattr(&m.join("g"), "user.x"), Err(libc::EOPNOTSUPP));
    drop(fuse);
    let fuse = Fuse::start(&format!("lowerdir={},squash_to_root", t.p("l2").display()), &m);
    assert_eq!(fs::metadata(m.join("g")).unwrap().uid(), 0);
    drop(fuse);

    // Through mount.fuse3, as `mount -t fuse.fuse-overlay SRC MNT` runs it (mount(8) itself
    // looks for the program in the standard PATH only, where the test binary is not).
    let bindir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bindir.display());
    let out = Command::new("mount.fuse3")
        .env("PATH", &path)
        .arg("fuse-overlay")
        .arg(&m)
        .arg("-o")
        .arg(format!("rw,{}", t.opts()))
        .args(["-t", "fuse.fuse-overlay"])
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -t fuse.fuse-overlay: {}", String::from_utf8_lossy(&out.stderr));
    assert!(mounted(&m));
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts.lines().find(|l| l.contains(m.to_str().unwrap())).unwrap().to_owned();
    assert!(line.contains("fuse.fuse-overlay"), "{line}");
    fs::write(m.join("via-mount"), "yes").unwrap();
    assert!(Command::new("umount").arg(&m).status().unwrap().success());
    assert_eq!(fs::read_to_string(t.p("u/via-mount")).unwrap(), "yes");
}

/// Reads `len` bytes from `f` on a thread; `None` if that takes longer than `limit`.
fn read_within(f: fs::File, len: usize, limit: Duration) -> Option<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = f;
        let mut v = vec![0u8; len];
        let r = f.read_exact(&mut v).map(|()| v);
        let _ = tx.send(r);
    });
    rx.recv_timeout(limit).ok().map(|r| r.unwrap())
}

#[test]
fn passthrough_serves_reads_without_the_daemon() {
    if !require_root("passthrough_serves_reads_without_the_daemon") {
        return;
    }
    let t = Tree::new();
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    fs::write(t.p("l2/data"), &data).unwrap();
    fs::write(t.p("l2/data2"), &data).unwrap();
    let m = t.p("m");
    use nix::sys::signal::{kill, Signal};

    // With passthrough the kernel reads the layer file itself: the daemon can be stopped.
    let fuse = Fuse::start(&t.opts(), &m);
    let f = fs::File::open(m.join("data")).unwrap();
    kill(fuse.pid(), Signal::SIGSTOP).unwrap();
    let got = read_within(f, data.len(), Duration::from_secs(10));
    kill(fuse.pid(), Signal::SIGCONT).unwrap();
    assert!(got.as_deref() == Some(&data[..]), "read while the daemon was stopped: passthrough not used");
    drop(fuse);

    // Without it (the fallback), the same read needs the daemon: this proves the test can fail.
    let fuse = Fuse::start_env(&t.opts(), &m, &[("FUSE_OVERLAYFS_NO_PASSTHROUGH", "1")]);
    let f = fs::File::open(m.join("data2")).unwrap();
    kill(fuse.pid(), Signal::SIGSTOP).unwrap();
    let got = read_within(f, data.len(), Duration::from_millis(1500));
    kill(fuse.pid(), Signal::SIGCONT).unwrap();
    assert!(got.is_none(), "without passthrough a read needs the daemon");
    assert_eq!(fs::read(m.join("data2")).unwrap(), data, "fallback reads work");
    drop(fuse);
}

#[test]
fn faults() {
    if !require_root("faults") {
        return;
    }
    let t = Tree::new();
    let m = t.p("m");
    fs::write(t.p("l2/keep"), "keep").unwrap();
    fs::write(t.p("l2/gone"), "gone").unwrap();
    {
        let mut f = fs::File::create(t.p("l2/big")).unwrap();
        let chunk = vec![0xabu8; 1 << 20];
        for _ in 0..256 {
            f.write_all(&chunk).unwrap();
        }
    }
    // SIGTERM unmounts and exits 0.
    let mut fuse = Fuse::start(&t.opts(), &m);
    nix::sys::signal::kill(fuse.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut c = fuse.child.take().unwrap();
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(st.success(), "exit status after SIGTERM: {st}");
    assert!(!mounted(&m));
    drop(fuse);

    // kill -9 during a copy-up never leaves a partial file in the upper layer.
    let fuse = Fuse::start(&t.opts(), &m);
    let target = m.join("big");
    let th = std::thread::spawn(move || fs::set_permissions(target, fs::Permissions::from_mode(0o600)));
    std::thread::sleep(Duration::from_millis(40));
    nix::sys::signal::kill(fuse.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = th.join();
    drop(fuse);
    match fs::metadata(t.p("u/big")) {
        Ok(md) => assert_eq!(md.len(), 256 << 20, "upper file is complete if present"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
    }
    let fuse = Fuse::start(&t.opts(), &m);
    assert!(names(&t.p("w/work")).is_empty(), "the work dir is cleaned at mount");
    assert_eq!(fs::metadata(m.join("big")).unwrap().len(), 256 << 20);

    // A lower layer changed underneath: errors, never a crash.
    assert_eq!(fs::read_to_string(m.join("gone")).unwrap(), "gone");
    fs::remove_file(t.p("l2/gone")).unwrap();
    fs::remove_file(t.p("l2/keep")).unwrap();
    let _ = fs::read_to_string(m.join("gone"));
    let _ = fs::read_to_string(m.join("keep"));
    let _ = fs::set_permissions(m.join("keep"), fs::Permissions::from_mode(0o600));
    fs::create_dir(t.p("l2/newdir")).unwrap();
    let _ = names(&m);
    fs::write(m.join("still-works"), "ok").unwrap();
    assert_eq!(fs::read_to_string(m.join("still-works")).unwrap(), "ok");
    assert!(fuse.stop(), "daemon alive and exits cleanly");
}

/// Runs a shell script as `rpodtest`.
fn as_rpodtest(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid", "rpodtest", "--regid", "rpodtest", "--init-groups", "env", "-i"])
        .args(["HOME=/tmp", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "sh", "-euc", script])
        .output()
        .unwrap()
}

#[test]
fn rootless_user_namespace_and_fusermount() {
    if !require_root("rootless_user_namespace_and_fusermount") {
        return;
    }
    if Command::new("id").arg("rpodtest").output().map(|o| !o.status.success()).unwrap_or(true) {
        if std::env::var_os("RPOD_REQUIRE_ROOT").is_some_and(|v| v == "1") {
            panic!("user rpodtest missing (run scripts/setup.sh)");
        }
        eprintln!("SKIPPED rootless test: no user rpodtest (scripts/setup.sh creates it)");
        return;
    }
    let t = Tree::new();
    fs::write(t.p("l2/lower"), "lower").unwrap();
    fs::write(t.p("l2/gone"), "gone").unwrap();
    fs::write(t.p("l2/ovr"), "override").unwrap();
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 253) as u8).collect();
    fs::write(t.p("l2/big"), &big).unwrap();
    // The lower layer keeps ownership in override xattrs (a layer extracted rootless).
    set_xattr(&t.p("l2"), "user.fuseoverlayfs.override_stat", b"0:0:0755:dir");
    set_xattr(&t.p("l2/ovr"), "user.fuseoverlayfs.override_stat", b"0:0:0640:file");
    let bin = t.p("fuse-overlay");
    fs::copy(BIN, &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(t.t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // Layers extracted for the user are owned by ids mapped in its namespace.
    for d in ["u", "w", "m", "l1", "l2", "l2/lower", "l2/gone", "l2/ovr", "l2/big"] {
        std::os::unix::fs::chown(t.p(d), Some(1001), Some(1001)).unwrap();
    }
    let (b, m, o) = (bin.display(), t.p("m").display().to_string(), t.opts());

    // Inside a user+mount namespace, mounting /dev/fuse directly.
    let script = format!(
        "unshare -U -r -m sh -euc '
         FUSE_OVERLAY_LAZY_COPYUP=1048576 {b} -o {o},xattr_permissions=2 {m}
         printf XY | dd of={m}/big bs=1 seek=1000 conv=notrunc status=none
         grep -q \"{m} fuse.fuse-overlay\" /proc/self/mounts
         cat {m}/lower; echo
         echo new > {m}/new
         chmod 4750 {m}/new
         stat -c %a {m}/new
         stat -c %a {m}/ovr
         rm {m}/gone
         ls {m}
         umount {m}'"
    );
    let out = as_rpodtest(&script);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "userns: {so} {}", String::from_utf8_lossy(&out.stderr));
    assert!(so.contains("lower\n"), "{so}");
    assert!(so.contains("4750\n"), "mode kept in the override xattr: {so}");
    assert!(so.contains("640\n"), "lower override xattr read: {so}");
    assert!(!so.contains("gone"), "{so}");
    let ov = get_xattr(&t.p("u/new"), "user.containers.override_stat").unwrap();
    assert!(String::from_utf8_lossy(&ov).starts_with("0:0:04750"), "{}", String::from_utf8_lossy(&ov));
    assert_eq!(fs::metadata(t.p("u/new")).unwrap().uid(), 1001);
    assert!(fs::symlink_metadata(t.p("u/gone")).is_ok() || t.p("u/.wh.gone").exists(), "whiteout written");
    // The lazy copy-up made in the namespace completes after the unmount.
    assert!(wait_exists(&t.p("u/big")), "lazy copy-up completed");
    assert!(fs::read(t.p("u/big")).unwrap() == patched(&big, &[(1000, b"XY")]), "lazy copy-up in a user namespace");

    // Without a namespace, through fusermount3 (a fresh upper: the first one now keeps its
    // owners in xattrs, as seen from inside the namespace).
    for d in ["u2", "w2"] {
        fs::create_dir(t.p(d)).unwrap();
        std::os::unix::fs::chown(t.p(d), Some(1001), Some(1001)).unwrap();
    }
    let o =
        format!("lowerdir={},upperdir={},workdir={}", t.p("l2").display(), t.p("u2").display(), t.p("w2").display());
    let script = format!("{b} -o {o} {m}; echo hi > {m}/viafm; cat {m}/lower; echo; fusermount3 -u {m}");
    let out = as_rpodtest(&script);
    let so = String::from_utf8_lossy(&out.stdout);
    lazy_unmount(&t.p("m"));
    assert!(out.status.success(), "fusermount3: {so} {}", String::from_utf8_lossy(&out.stderr));
    assert!(so.contains("lower"), "{so}");
    assert_eq!(fs::read_to_string(t.p("u2/viafm")).unwrap(), "hi\n");
    assert_eq!(fs::metadata(t.p("u2/viafm")).unwrap().uid(), 1001);
}

/// Runs a shell script (as root) and returns its stdout; panics on failure.
fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-euc", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn modes_are_not_masked_by_the_daemon() {
    if !require_root("modes_are_not_masked_by_the_daemon") {
        return;
    }
    let t = Tree::new();
    let m = t.p("m");
    let fuse = Fuse::start_umask077(&t.opts(), &m);
    let md = m.display();
    let out = sh(&format!(
        "umask 0; mkdir -m 0777 {md}/d; : > {md}/f; mkfifo -m 0666 {md}/p; mkdir {md}/d/sub
         stat -c '%n %a' {md}/d {md}/f {md}/p {md}/d/sub
         umask 027; mkdir {md}/d2; : > {md}/f2; stat -c '%n %a' {md}/d2 {md}/f2"
    ));
    for (n, mode) in [("d", "777"), ("f", "666"), ("p", "666"), ("d/sub", "777"), ("d2", "750"), ("f2", "640")] {
        assert!(out.contains(&format!("{md}/{n} {mode}\n")), "{n} should be {mode}: {out}");
        assert_eq!(format!("{:o}", fs::symlink_metadata(t.p("u").join(n)).unwrap().mode() & 0o7777), mode);
    }
    drop(fuse);
}

#[test]
fn removed_open_files_keep_working() {
    if !require_root("removed_open_files_keep_working") {
        return;
    }
    let t = Tree::new();
    fs::write(t.p("l2/low"), "lower data").unwrap();
    let m = t.p("m");
    let fuse = Fuse::start(&t.opts(), &m);
    fs::write(m.join("new"), "new data").unwrap();
    for (name, len) in [("new", 8), ("low", 10)] {
        let mut f = fs::OpenOptions::new().read(true).write(true).open(m.join(name)).unwrap();
        fs::remove_file(m.join(name)).unwrap();
        assert_eq!(errno(fs::metadata(m.join(name))), libc::ENOENT);
        let md = f.metadata().unwrap_or_else(|e| panic!("fstat of removed {name}: {e}"));
        assert_eq!(md.len(), len);
        f.write_all(b"0123456789abcdef").unwrap();
        f.set_len(3).unwrap_or_else(|e| panic!("ftruncate of removed {name}: {e}"));
        f.set_permissions(fs::Permissions::from_mode(0o600)).unwrap_or_else(|e| panic!("fchmod {name}: {e}"));
        let when = std::time::UNIX_EPOCH + Duration::from_secs(1_400_000_000);
        f.set_modified(when).unwrap_or_else(|e| panic!("futimens {name}: {e}"));
        let md = f.metadata().unwrap();
        assert_eq!((md.len(), md.mode() & 0o7777, md.mtime()), (3, 0o600, 1_400_000_000), "{name}");
        let mut s = String::new();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "012", "{name}");
    }
    assert_eq!(fs::read_to_string(t.p("l2/low")).unwrap(), "lower data", "lower untouched");
    drop(fuse);
}

/// Every file below `dir` (recursively) with its content, skipping symlinks.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        if md.is_dir() {
            out.extend(contents(&e.path()));
        } else if md.is_file() {
            out.push((e.path(), fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn layer_dirs_swapped_for_symlinks_do_not_escape() {
    if !require_root("layer_dirs_swapped_for_symlinks_do_not_escape") {
        return;
    }
    for env in [&[][..], &[("FUSE_OVERLAY_NO_OPENAT2", "1")][..]] {
        let t = Tree::new();
        let out = t.p("outside");
        fs::create_dir(&out).unwrap();
        for f in ["f", "g", "secret-name"] {
            fs::write(out.join(f), "SECRET").unwrap();
        }
        set_xattr(&out.join("f"), "user.secret", b"SECRET");
        // The layers sit two levels deeper than the mount point: the relative symlinks below
        // lead outside from a layer, and nowhere from the mount (the kernel may follow a
        // symlink it finds in the merged view, as the caller).
        let (l, u, w) = (t.p("x/y/l"), t.p("x/y/u"), t.p("x/y/w"));
        for d in [&l, &u, &w] {
            fs::create_dir_all(d).unwrap();
        }
        let target = "../../../outside";
        assert!(!t.p("m").join(target).exists());
        fs::create_dir(l.join("d")).unwrap();
        fs::write(l.join("d/f"), "lower f").unwrap();
        let m = t.p("m");
        let opts = format!("lowerdir={},upperdir={},workdir={}", l.display(), u.display(), w.display());
        let fuse = Fuse::start_env(&opts, &m, env);
        // The kernel learns the nodes d, d/f, e and e/g.
        assert_eq!(fs::read_to_string(m.join("d/f")).unwrap(), "lower f");
        fs::create_dir(m.join("e")).unwrap();
        fs::write(m.join("e/g"), "upper g").unwrap();
        // A lower and an upper directory become symlinks to a directory outside the layers.
        fs::rename(l.join("d"), l.join("d.old")).unwrap();
        std::os::unix::fs::symlink(target, l.join("d")).unwrap();
        fs::rename(u.join("e"), u.join("e.old")).unwrap();
        std::os::unix::fs::symlink(target, u.join("e")).unwrap();
        assert_eq!(fs::read_to_string(l.join("d/f")).unwrap(), "SECRET", "the symlinks lead outside");

        let secret = |r: std::io::Result<String>| r.map(|s| s.contains("SECRET")).unwrap_or(false);
        assert!(!secret(fs::read_to_string(m.join("d/f"))), "lower read escaped ({env:?})");
        assert!(!secret(fs::read_to_string(m.join("e/g"))), "upper read escaped ({env:?})");
        assert!(!secret(fs::read_to_string(m.join("d/secret-name"))), "lookup escaped ({env:?})");
        for d in ["d", "e"] {
            let l: Vec<String> = fs::read_dir(m.join(d))
                .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            assert!(!l.iter().any(|n| n == "secret-name"), "listing of {d} escaped: {l:?} ({env:?})");
        }
        assert_ne!(get_xattr(&m.join("d/f"), "user.secret").ok(), Some(b"SECRET".to_vec()), "xattr escaped");
        // Changes: copy-up of the lower file, writes, creations, removals in the upper dir.
        let _ = fs::set_permissions(m.join("d/f"), fs::Permissions::from_mode(0o600));
        let _ = fs::OpenOptions::new().write(true).truncate(true).open(m.join("e/g")).map(|mut f| f.write_all(b"x"));
        let _ = fs::write(m.join("e/new"), "new");
        let _ = fs::create_dir(m.join("e/newdir"));
        let _ = std::os::unix::fs::symlink("x", m.join("e/newlink"));
        let _ = set_xattr_res(&m.join("e/g"), "user.planted", b"1");
        let _ = fs::remove_file(m.join("e/f"));
        let _ = fs::remove_file(m.join("e/secret-name"));
        let _ = fs::rename(m.join("e/g"), m.join("e/g2"));
        let _ = std::os::unix::fs::lchown(m.join("e/g"), Some(1234), Some(1234));
        drop(fuse);

        let want: Vec<(PathBuf, Vec<u8>)> =
            ["f", "g", "secret-name"].iter().map(|f| (out.join(f), b"SECRET".to_vec())).collect();
        assert_eq!(contents(&out), want, "outside directory changed ({env:?})");
        assert_eq!(names(&out), ["f", "g", "secret-name"], "({env:?})");
        assert!(get_xattr(&out.join("g"), "user.planted").is_err(), "xattr written outside ({env:?})");
        let md = fs::metadata(out.join("f")).unwrap();
        assert_eq!((md.mode() & 0o7777, md.uid()), (0o644, 0), "({env:?})");
        assert_eq!(fs::metadata(out.join("g")).unwrap().uid(), 0, "({env:?})");
        for (p, c) in contents(&u) {
            assert!(!String::from_utf8_lossy(&c).contains("SECRET"), "{} copied outside data ({env:?})", p.display());
        }
    }
}

fn set_xattr_res(p: &Path, name: &str, v: &[u8]) -> i32 {
    let (p, n) = (cs(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings and a valid value buffer.
    unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) }
}

#[test]
fn override_file_type_survives_copy_up() {
    if !require_root("override_file_type_survives_copy_up") {
        return;
    }
    let t = Tree::new();
    // A rootless-extracted lower layer: a device kept as a regular file with an override.
    set_xattr(&t.p("l2"), "user.containers.override_stat", b"0:0:0755:dir");
    fs::write(t.p("l2/null"), "").unwrap();
    set_xattr(&t.p("l2/null"), "user.containers.override_stat", b"0:0:0644:char-1-3");
    fs::write(t.p("l2/null2"), "").unwrap();
    set_xattr(&t.p("l2/null2"), "user.containers.override_stat", b"0:0:0644:char-1-3");
    let m = t.p("m");
    let opts = format!("{},xattr_permissions=2", t.opts());
    let check = |name: &str, mode: u32, uid: u32| {
        let md = fs::symlink_metadata(m.join(name)).unwrap();
        assert!(md.file_type().is_char_device(), "{name} is a char device: {:?}", md.file_type());
        assert_eq!((md.rdev(), md.mode() & 0o7777, md.uid()), (libc::makedev(1, 3), mode, uid), "{name}");
    };
    let fuse = Fuse::start(&opts, &m);
    check("null", 0o644, 0);
    fs::set_permissions(m.join("null"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(m.join("null2"), Some(5), Some(6)).unwrap();
    assert!(t.p("u/null").exists() && t.p("u/null2").exists(), "copied up");
    // xattr_permissions=2 is the containers mode.
    assert!(get_xattr(&t.p("u"), "user.containers.override_stat").is_ok());
    assert!(get_xattr(&t.p("u/null"), "user.containers.override_stat").is_ok());
    assert_eq!(get_xattr(&t.p("u"), "user.fuseoverlayfs.override_stat"), Err(libc::ENODATA));
    drop(fuse);
    let fuse = Fuse::start(&opts, &m);
    check("null", 0o600, 0);
    check("null2", 0o644, 5);
    std::os::unix::fs::lchown(m.join("null"), Some(7), Some(8)).unwrap();
    drop(fuse);
    let fuse = Fuse::start(&opts, &m);
    check("null", 0o600, 7);
    drop(fuse);
    // An upper already kept in the legacy user mode stays in it.
    for d in ["u2", "w2"] {
        fs::create_dir(t.p(d)).unwrap();
    }
    set_xattr(&t.p("u2"), "user.fuseoverlayfs.override_stat", b"0:0:0755:dir");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},xattr_permissions=2",
        t.p("l2").display(),
        t.p("u2").display(),
        t.p("w2").display()
    );
    let fuse = Fuse::start(&opts, &m);
    fs::write(m.join("legacy"), "x").unwrap();
    fs::set_permissions(m.join("legacy"), fs::Permissions::from_mode(0o4711)).unwrap();
    assert_eq!(fs::metadata(m.join("legacy")).unwrap().mode() & 0o7777, 0o4711);
    drop(fuse);
    assert!(get_xattr(&t.p("u2/legacy"), "user.fuseoverlayfs.override_stat").is_ok());
    assert!(get_xattr(&t.p("u2"), "user.containers.override_stat").is_err());
}

#[test]
fn readdir_inode_numbers_match_stat() {
    if !require_root("readdir_inode_numbers_match_stat") {
        return;
    }
    let t = Tree::new();
    // Enough entries for several READDIR requests: only the first is a READDIRPLUS.
    for i in 0..100 {
        fs::write(t.p("l2").join(format!("f{i}")), "f").unwrap();
    }
    for f in ["a", "b", "c"] {
        fs::write(t.p("l2").join(f), f).unwrap();
    }
    fs::create_dir(t.p("l2/d")).unwrap();
    let m = t.p("m");
    let fuse = Fuse::start(&t.opts(), &m);
    let before: Vec<u64> = ["a", "b"].iter().map(|f| fs::metadata(m.join(f)).unwrap().ino()).collect();
    // Copy-ups: the merged objects keep their numbers while mounted.
    fs::set_permissions(m.join("a"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::OpenOptions::new().append(true).open(m.join("b")).unwrap().write_all(b"+").unwrap();
    fs::write(m.join("d/new"), "n").unwrap();
    fs::write(m.join("new"), "n").unwrap();
    for i in 0..100 {
        fs::set_permissions(m.join(format!("f{i}")), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let after: Vec<u64> = ["a", "b"].iter().map(|f| fs::metadata(m.join(f)).unwrap().ino()).collect();
    assert_eq!(before, after);
    let list = getdents_small(&m);
    assert_eq!(list.len(), 105);
    for (p, ino) in list {
        assert_eq!(ino, fs::symlink_metadata(&p).unwrap().ino(), "d_ino and st_ino of {}", p.display());
    }
    drop(fuse);
}

/// Lists `dir` with getdents64 and a one-page buffer, so that the kernel asks for one page at
/// a time: READDIRPLUS for the first, plain READDIR after. Returns paths and d_ino.
fn getdents_small(dir: &Path) -> Vec<(PathBuf, u64)> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, f.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
        if n == 0 {
            return out;
        }
        let mut off = 0usize;
        while off < n as usize {
            let ino = u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap());
            let reclen = u16::from_ne_bytes(buf[off + 16..off + 18].try_into().unwrap()) as usize;
            let name = &buf[off + 19..off + reclen];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap()];
            if name != b"." && name != b".." {
                out.push((dir.join(std::ffi::OsStr::from_bytes(name)), ino));
            }
            off += reclen;
        }
    }
}

/// A tmpfs mounted for a test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(p: &Path) -> Tmpfs {
        fs::create_dir_all(p).unwrap();
        nix::mount::mount(Some("tmpfs"), p, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=16m")).unwrap();
        Tmpfs(p.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn xino_and_ino32() {
    if !require_root("xino_and_ino32") {
        return;
    }
    let t = Tree::new();
    // A lower layer on another file system: the device index goes into the top bits.
    let other = Tmpfs::mount(&t.p("other"));
    for i in 0..20 {
        fs::write(other.0.join(format!("o{i}")), "o").unwrap();
    }
    fs::write(t.p("l2/same"), "s").unwrap();
    let m = t.p("m");
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        t.p("l2").display(),
        other.0.display(),
        t.p("u").display(),
        t.p("w").display()
    );
    let inos = |m: &Path| -> Vec<u64> {
        let mut v: Vec<u64> = names(m).iter().map(|n| fs::symlink_metadata(m.join(n)).unwrap().ino()).collect();
        v.extend(getdents_small(m).iter().map(|(_, i)| *i));
        v
    };
    let fuse = Fuse::start(&opts, &m);
    assert!(inos(&m).iter().any(|i| *i > u32::MAX as u64), "without ino32_t the device bits are high");
    drop(fuse);
    let fuse = Fuse::start(&format!("{opts},ino32_t,xino=auto"), &m);
    let v = inos(&m);
    assert!(v.iter().all(|i| *i <= u32::MAX as u64 && *i > 1), "ino32_t: {v:?}");
    let mut u: Vec<u64> = names(&m).iter().map(|n| fs::symlink_metadata(m.join(n)).unwrap().ino()).collect();
    let n = u.len();
    u.sort();
    u.dedup();
    assert_eq!(u.len(), n, "numbers stay unique");
    drop(fuse);
    // xino=on needs stable numbers: refused over a layer without file handles (procfs),
    // fine over one file system.
    let noh = opts.replacen(",upperdir", ":/proc/sys/kernel/random,upperdir", 1);
    let out = Command::new(BIN).arg("-o").arg(format!("{noh},xino=on")).arg(&m).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("xino=on"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!mounted(&m));
    let out = Command::new(BIN).arg("-o").arg(format!("{},xino=bogus", t.opts())).arg(&m).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let fuse = Fuse::start(&format!("{},xino=on", t.opts()), &m);
    assert_eq!(fs::read_to_string(m.join("same")).unwrap(), "s");
    drop(fuse);
}

#[test]
fn sigterm_writes_back_dirty_pages() {
    if !require_root("sigterm_writes_back_dirty_pages") {
        return;
    }
    let t = Tree::new();
    let m = t.p("m");
    // Without passthrough the kernel keeps written data in its writeback cache.
    let mut fuse = Fuse::start_env(&t.opts(), &m, &[("FUSE_OVERLAYFS_NO_PASSTHROUGH", "1")]);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut f = fs::File::create(m.join("dirty")).unwrap();
    f.write_all(&data).unwrap();
    // The file stays open (the mount is in use) while the daemon is told to stop.
    nix::sys::signal::kill(fuse.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut c = fuse.child.take().unwrap();
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(5), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(f);
    drop(fuse);
    let got = fs::read(t.p("u/dirty")).unwrap();
    assert!(got == data, "written data reached the upper layer: {} of {} bytes", got.len(), data.len());
}

#[test]
fn podman_uses_fuse_overlay_as_mount_program() {
    if !require_root("podman_uses_fuse_overlay_as_mount_program") {
        return;
    }
    if Command::new("podman").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("SKIPPED podman_uses_fuse_overlay_as_mount_program: podman is not installed");
        return;
    }
    let t = Tree::new();
    // An image from a tarball: Debian's static busybox and relative applet links.
    let rootfs = t.p("rootfs/bin");
    fs::create_dir_all(&rootfs).unwrap();
    fs::copy("/bin/busybox", rootfs.join("busybox")).unwrap();
    for a in ["sh", "echo", "cat", "grep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join(a)).unwrap();
    }
    let tar = t.p("rootfs.tar");
    assert!(Command::new("tar").arg("-C").arg(t.p("rootfs")).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
    let conf = t.p("containers.conf");
    fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    // podman runs in a private mount namespace with its own /run: everything it mounts goes
    // away with the namespace.
    let script = format!(
        "mount -t tmpfs none /run
         export CONTAINERS_CONF={conf}
         P=\"podman --root {root} --runroot {runroot} --storage-driver overlay --storage-opt overlay.mount_program={bin}\"
         $P import {tar} localhost/fuse-overlay-test >/dev/null 2>&1
         $P run --rm --network none localhost/fuse-overlay-test sh -c 'echo hi > /f; cat /f; grep \" / \" /proc/mounts'
         $P run --name keep --network none localhost/fuse-overlay-test sh -c 'cat /g 2>/dev/null; echo kept > /g'
         $P start -a keep
         $P rm keep >/dev/null
         grep -c \"^fuse-overlay {root}/\" /proc/self/mounts || true",
        conf = conf.display(),
        root = t.p("root").display(),
        runroot = t.p("runroot").display(),
        bin = BIN,
        tar = tar.display(),
    );
    let out = Command::new("timeout")
        .args(["120", "unshare", "-m", "--propagation", "private", "sh", "-euc", &script])
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "podman: {so} {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(lines[0], "hi", "{so}");
    assert!(lines[1].starts_with("fuse-overlay / fuse.fuse-overlay "), "container root: {so}");
    assert_eq!(lines[2], "kept", "the upper layer persists between runs: {so}");
    // (Mounts of concurrent tests are copied into the namespace too: only ours count.)
    assert_eq!(lines[3], "0", "every mount is gone after the containers: {so}");
}

/// Inode numbers of every entry of `m` (stat, and d_ino from getdents) by name; asserts that
/// both agree, are unique and never 0 or 1.
fn ino_map(m: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut map = std::collections::BTreeMap::new();
    for dir in [m.to_owned(), m.join("d"), m.join("od")] {
        for (p, d_ino) in getdents_small(&dir) {
            let st = fs::symlink_metadata(&p).unwrap().ino();
            assert_eq!(st, d_ino, "d_ino and st_ino of {}", p.display());
            map.insert(p.strip_prefix(m).unwrap().display().to_string(), st);
        }
    }
    let mut v: Vec<u64> = map.values().copied().collect();
    v.sort();
    v.dedup();
    assert_eq!(v.len(), map.len(), "numbers unique: {map:?}");
    assert!(v.iter().all(|i| *i > 1), "{map:?}");
    map
}

#[test]
fn xino_auto_numbers_from_file_handles() {
    if !require_root("xino_auto_numbers_from_file_handles") {
        return;
    }
    let t = Tree::new();
    // Layers on two file systems (ext4 or whatever holds the temp dir, and a tmpfs), with
    // objects whose inode numbers are small on both (likely equal across the two).
    let other = Tmpfs::mount(&t.p("other"));
    for i in 0..10 {
        fs::write(other.0.join(format!("o{i}")), "o").unwrap();
        fs::write(t.p("l2").join(format!("f{i}")), "f").unwrap();
    }
    fs::create_dir(other.0.join("od")).unwrap();
    fs::write(other.0.join("od/x"), "x").unwrap();
    fs::create_dir(t.p("l2/d")).unwrap();
    fs::write(t.p("l2/d/y"), "y").unwrap();
    fs::write(t.p("u/up"), "u").unwrap();
    let m = t.p("m");
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        t.p("l2").display(),
        other.0.display(),
        t.p("u").display(),
        t.p("w").display()
    );
    for extra in ["xino=auto", "xino=auto,ino32_t", "xino=on"] {
        let o = format!("{opts},{extra}");
        let fuse = Fuse::start(&o, &m);
        let first = ino_map(&m);
        assert_eq!(first.len(), 25, "{first:?}");
        if extra.contains("ino32_t") {
            assert!(first.values().all(|i| *i <= u32::MAX as u64), "{extra}: {first:?}");
        }
        drop(fuse);
        // Remounted: the same numbers (the node counter would hand them out in lookup order,
        // here reversed by looking up a few names first).
        let fuse = Fuse::start(&o, &m);
        for n in ["up", "od/x", "o9", "f9"] {
            fs::symlink_metadata(m.join(n)).unwrap();
        }
        assert_eq!(ino_map(&m), first, "{extra}: stable across mounts");
        drop(fuse);
    }
    // A layer without file handles (procfs): xino=auto falls back to node numbers.
    let noh = opts.replacen(",upperdir", ":/proc/sys/kernel/random,upperdir", 1);
    let fuse = Fuse::start(&format!("{noh},xino=auto"), &m);
    assert!(fs::symlink_metadata(m.join("boot_id")).is_ok());
    ino_map(&m);
    drop(fuse);
}

/// renameat2(2) through libc; the errno on failure.
fn renameat2(a: &Path, b: &Path, flags: u32) -> Result<(), i32> {
    let (a, b) = (cs(a), cs(b));
    // SAFETY: NUL-terminated paths.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

/// Whether the upper layer records `rel` as deleted (either whiteout form).
fn upper_whiteout(t: &Tree, rel: &str) -> bool {
    let p = t.p("u").join(rel);
    let wh = p.parent().unwrap().join(format!(".wh.{}", p.file_name().unwrap().to_string_lossy()));
    fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0) || wh.exists()
}

#[test]
fn rename_exchange_and_whiteout() {
    if !require_root("rename_exchange_and_whiteout") {
        return;
    }
    let t = Tree::new();
    let (l2, m) = (t.p("l2"), t.p("m"));
    fs::write(l2.join("a"), "A").unwrap();
    fs::write(l2.join("b"), "B").unwrap();
    for d in ["ld", "ld2", "sub"] {
        fs::create_dir(l2.join(d)).unwrap();
    }
    fs::write(l2.join("ld/in-lower"), "L").unwrap();
    fs::write(l2.join("ld2/in-lower2"), "L2").unwrap();
    fs::write(l2.join("sub/c"), "C").unwrap();
    fs::write(l2.join("ws"), "W").unwrap();
    fs::write(l2.join("ws2"), "W2").unwrap();
    let fuse = Fuse::start(&t.opts(), &m);
    let read = |p: &str| fs::read_to_string(m.join(p)).unwrap();

    // Two lower files, one in another (lower) directory: both copied up and swapped.
    renameat2(&m.join("a"), &m.join("b"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!((read("a"), read("b")), ("B".into(), "A".into()));
    renameat2(&m.join("a"), &m.join("sub/c"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!((read("a"), read("sub/c")), ("C".into(), "B".into()));
    assert_eq!(fs::read_to_string(l2.join("a")).unwrap(), "A", "lower untouched");
    // A missing name is ENOENT; lower (merged) directories are EXDEV, as for rename.
    assert_eq!(renameat2(&m.join("a"), &m.join("none"), libc::RENAME_EXCHANGE), Err(libc::ENOENT));
    assert_eq!(renameat2(&m.join("ld"), &m.join("ld2"), libc::RENAME_EXCHANGE), Err(libc::EXDEV));
    // A new (upper) directory and a file: the directory lands on the name a lower file has,
    // the file on the directory's name.
    fs::create_dir(m.join("nd")).unwrap();
    fs::write(m.join("nd/new"), "N").unwrap();
    renameat2(&m.join("nd"), &m.join("b"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(read("nd"), "A");
    assert_eq!(names(&m.join("b")), ["new"]);
    // An upper directory swapped onto the name of a lower directory must hide its contents.
    fs::create_dir(m.join("nd2")).unwrap();
    fs::write(m.join("nd2/mine"), "M").unwrap();
    fs::remove_file(m.join("ld2/in-lower2")).unwrap();
    fs::remove_dir(m.join("ld2")).unwrap();
    fs::create_dir(m.join("ld2")).unwrap(); // upper-only again (opaque over the lower one)
    fs::write(m.join("ld2/other"), "O").unwrap();
    fs::rename(m.join("ld2"), m.join("moved")).unwrap();
    fs::create_dir(m.join("plain")).unwrap(); // no lower counterpart: not opaque
    renameat2(&m.join("plain"), &m.join("moved"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(names(&m.join("plain")), ["other"]);
    assert!(names(&m.join("moved")).is_empty());
    renameat2(&m.join("nd2"), &m.join("plain"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(names(&m.join("plain")), ["mine"]);
    assert_eq!(names(&m.join("nd2")), ["other"]);

    // RENAME_WHITEOUT: the source name is gone through the mount and recorded as deleted in
    // the upper layer, whether or not a lower layer has it.
    renameat2(&m.join("ws"), &m.join("wd"), libc::RENAME_WHITEOUT).unwrap();
    assert_eq!(read("wd"), "W");
    assert_eq!(errno(fs::symlink_metadata(m.join("ws"))), libc::ENOENT);
    assert!(upper_whiteout(&t, "ws"));
    fs::write(m.join("fresh"), "F").unwrap();
    renameat2(&m.join("fresh"), &m.join("sub/fresh2"), libc::RENAME_WHITEOUT).unwrap();
    assert_eq!(read("sub/fresh2"), "F");
    assert_eq!(errno(fs::symlink_metadata(m.join("fresh"))), libc::ENOENT);
    assert!(upper_whiteout(&t, "fresh"));
    assert_eq!(
        renameat2(&m.join("ws2"), &m.join("wd"), libc::RENAME_WHITEOUT | libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    let top = names(&m);
    assert!(!top.contains(&"ws".to_owned()) && !top.contains(&"fresh".to_owned()), "{top:?}");
    drop(fuse);

    // The same view after a remount (what is on disk is right, not only the daemon's memory).
    let fuse = Fuse::start(&t.opts(), &m);
    assert_eq!((read("a"), read("sub/c"), read("nd"), read("wd")), ("C".into(), "B".into(), "A".into(), "W".into()));
    assert_eq!(names(&m.join("b")), ["new"]);
    assert_eq!(names(&m.join("plain")), ["mine"]);
    assert_eq!(names(&m.join("nd2")), ["other"]);
    assert!(names(&m.join("moved")).is_empty());
    assert_eq!(errno(fs::symlink_metadata(m.join("ws"))), libc::ENOENT);
    drop(fuse);
}

#[test]
fn copy_up_records_origin() {
    if !require_root("copy_up_records_origin") {
        return;
    }
    let t = Tree::new();
    fs::create_dir_all(t.p("l2/d/e")).unwrap();
    fs::write(t.p("l2/d/e/g"), "g").unwrap();
    fs::write(t.p("l2/f"), "f").unwrap();
    let m = t.p("m");
    let fuse = Fuse::start(&t.opts(), &m);
    fs::set_permissions(m.join("d/e/g"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(m.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(m.join("new"), "n").unwrap();
    // As fuse-overlayfs 1.10 writes it: the lower path with its NUL, on copied-up files only.
    assert_eq!(get_xattr(&t.p("u/d/e/g"), "user.fuseoverlayfs.origin").unwrap(), b"d/e/g\0");
    assert_eq!(get_xattr(&t.p("u/f"), "user.fuseoverlayfs.origin").unwrap(), b"f\0");
    assert_eq!(get_xattr(&t.p("u/new"), "user.fuseoverlayfs.origin"), Err(libc::ENODATA));
    assert_eq!(get_xattr(&t.p("u/d"), "user.fuseoverlayfs.origin"), Err(libc::ENODATA));
    // Hidden through the mount (as fuse-overlayfs hides its own xattrs).
    assert!(list_xattr(&m.join("d/e/g")).is_empty(), "{:?}", list_xattr(&m.join("d/e/g")));
    assert_eq!(get_xattr(&m.join("d/e/g"), "user.fuseoverlayfs.origin"), Err(libc::ENODATA));
    assert_eq!(fs::read_to_string(m.join("d/e/g")).unwrap(), "g");
    drop(fuse);

    // Read back (ours, or trusted.overlay.origin as another fuse-overlayfs wrote it): a
    // copied-up file keeps the number of its lower file after a remount, in stat and readdir.
    fs::write(t.p("l2/r"), "r").unwrap();
    fs::write(t.p("u/r"), "r2").unwrap();
    set_xattr(&t.p("u/r"), "trusted.overlay.origin", b"r\0");
    fs::write(t.p("u/bad"), "b").unwrap();
    set_xattr(&t.p("u/bad"), "user.fuseoverlayfs.origin", b"../r\0");
    let fuse = Fuse::start(&t.opts(), &m);
    let lower_ino = |p: &str| fs::metadata(t.p("l2").join(p)).unwrap().ino();
    for (dir, p) in [("", "f"), ("", "r"), ("d/e", "g")] {
        let got: Vec<u64> = getdents_small(&m.join(dir)).iter().filter(|(n, _)| n.ends_with(p)).map(|x| x.1).collect();
        let rel = if dir.is_empty() { p.to_owned() } else { format!("{dir}/{p}") };
        assert_eq!(got, [lower_ino(&rel)], "d_ino of {rel}");
        assert_eq!(fs::metadata(m.join(&rel)).unwrap().ino(), lower_ino(&rel), "st_ino of {rel}");
    }
    assert_eq!(fs::metadata(m.join("bad")).unwrap().ino(), fs::metadata(t.p("u/bad")).unwrap().ino());
    assert_eq!(fs::read_to_string(m.join("r")).unwrap(), "r2");
    drop(fuse);
}

/// Creates `f` (a file) and `d` (a directory) in `dir` with `umask`, through a shell, and
/// returns their modes.
fn created_modes(dir: &Path, umask: &str) -> (u32, u32) {
    let d = dir.display();
    sh(&format!("umask {umask}; : > {d}/f{umask}; mkdir {d}/d{umask}"));
    let mode = |n: &str| fs::symlink_metadata(dir.join(format!("{n}{umask}"))).unwrap().mode() & 0o7777;
    (mode("f"), mode("d"))
}

/// setfacl and the user rpodtest are there (else skips loudly; fails with RPOD_REQUIRE_ROOT=1).
fn acl_tools(test: &str) -> bool {
    if Command::new("setfacl").arg("--version").output().is_ok()
        && Command::new("id").arg("rpodtest").output().is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var_os("RPOD_REQUIRE_ROOT").is_some_and(|v| v == "1") {
        panic!("{test}: setfacl (package acl) or user rpodtest missing (run scripts/setup.sh)");
    }
    eprintln!("SKIPPED {test}: no setfacl or no user rpodtest (scripts/setup.sh)");
    false
}

#[test]
fn posix_acls_are_enforced_and_inherited() {
    if !require_root("posix_acls_are_enforced_and_inherited") {
        return;
    }
    if !acl_tools("posix_acls_are_enforced_and_inherited") {
        return;
    }
    let t = Tree::new();
    fs::set_permissions(t.t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["secret", "closed", "lsecret"] {
        fs::write(t.p("l2").join(f), f).unwrap();
        fs::set_permissions(t.p("l2").join(f), fs::Permissions::from_mode(0o600)).unwrap();
    }
    // An ACL already in a lower layer counts without a copy-up.
    sh(&format!("setfacl -m u:rpodtest:r {}", t.p("l2/lsecret").display()));
    // The same operations on a plain directory of the layers' file system: what to expect.
    let local = t.p("local");
    fs::create_dir(&local).unwrap();
    sh(&format!("setfacl -d -m u:rpodtest:rwx {}", local.display()));
    let m = t.p("m");
    let md = m.display();
    let fuse = Fuse::start_umask077(&t.opts(), &m);

    // Access ACL set through the mount: copied up with the file and enforced by the kernel.
    sh(&format!("setfacl -m u:rpodtest:r {md}/secret"));
    assert!(sh(&format!("getfacl -c {md}/secret")).contains("user:rpodtest:r--"));
    assert!(sh(&format!("getfacl -c {}", t.p("u/secret").display())).contains("user:rpodtest:r--"));
    assert_eq!(fs::read_to_string(t.p("l2/secret")).unwrap(), "secret", "lower untouched");
    let cat = |f: &str| as_rpodtest(&format!("cat {md}/{f}"));
    let out = cat("secret");
    assert!(out.status.success(), "ACL grants read: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "secret");
    assert!(cat("lsecret").status.success(), "lower ACL grants read");
    assert!(!cat("closed").status.success(), "0600 without an ACL stays closed");
    // Removing the ACL closes the file again (the kernel drops its cached ACL).
    sh(&format!("setfacl -b {md}/secret"));
    assert!(!cat("secret").status.success(), "ACL removed");

    // A default ACL on a directory: inherited by new files and directories, and the umask
    // is not applied under it (as on the layers' own file system).
    fs::create_dir(m.join("dacl")).unwrap();
    sh(&format!("setfacl -d -m u:rpodtest:rwx {md}/dacl"));
    for umask in ["022", "077"] {
        assert_eq!(created_modes(&m.join("dacl"), umask), created_modes(&local, umask), "umask {umask}");
    }
    let acl = sh(&format!("getfacl -c {md}/dacl/f077 {md}/dacl/d077"));
    assert!(acl.matches("user:rpodtest:rwx").count() >= 2, "inherited: {acl}");
    assert!(acl.contains("default:user:rpodtest:rwx"), "directories inherit the default ACL too: {acl}");
    let out = as_rpodtest(&format!("echo hi >> {md}/dacl/f077 && cat {md}/dacl/f077"));
    assert!(out.status.success(), "inherited ACL grants write: {}", String::from_utf8_lossy(&out.stderr));
    // Without a default ACL the caller's umask applies (and never the daemon's 077).
    fs::create_dir(m.join("plain")).unwrap();
    assert_eq!(created_modes(&m.join("plain"), "022"), (0o644, 0o755));
    assert_eq!(created_modes(&m.join("plain"), "077"), (0o600, 0o700));
    drop(fuse);

    // noacl: no ACL enforcement, modes still right.
    let fuse = Fuse::start_umask077(&format!("{},noacl", t.opts()), &m);
    fs::create_dir(m.join("plain2")).unwrap();
    assert_eq!(created_modes(&m.join("plain2"), "022"), (0o644, 0o755));
    assert_eq!(created_modes(&m.join("plain2"), "077"), (0o600, 0o700));
    assert!(!cat("lsecret").status.success(), "noacl: ACLs not enforced");
    drop(fuse);

    // uidmapping/gidmapping: the ids inside ACLs are mapped like owners (disk 0.. shown 1000..).
    fs::write(t.p("l2/mapped"), "m").unwrap();
    let fuse = Fuse::start(&format!("{},uidmapping=0:1000:65536,gidmapping=0:1000:65536", t.opts()), &m);
    sh(&format!("setfacl -m u:1500:r,g:1077:r {md}/mapped"));
    let shown = sh(&format!("getfacl -cn {md}/mapped"));
    assert!(shown.contains("user:1500:r--") && shown.contains("group:1077:r--"), "{shown}");
    let disk = sh(&format!("getfacl -cn {}", t.p("u/mapped").display()));
    assert!(disk.contains("user:500:r--") && disk.contains("group:77:r--"), "{disk}");
    let out = Command::new("setfacl").arg("-m").arg("u:500:r").arg(m.join("mapped")).output().unwrap();
    assert!(!out.status.success(), "an id outside the mapping is refused");
    drop(fuse);
}

/// Python that calls renameat2(argv[1], argv[2], flags=argv[3]) and exits with its errno.
const RENAMEAT2_PY: &str = "import ctypes,sys,os; l=ctypes.CDLL(None,use_errno=True); \
    r=l.renameat2(-100,sys.argv[1].encode(),-100,sys.argv[2].encode(),int(sys.argv[3])); \
    sys.exit(ctypes.get_errno() if r else 0)";

#[test]
fn rootless_acls_and_rename_flags() {
    if !require_root("rootless_acls_and_rename_flags") {
        return;
    }
    let have = |c: &str, a: &str| Command::new(c).arg(a).output().is_ok_and(|o| o.status.success());
    if !have("id", "rpodtest") || !have("setfacl", "--version") || !have("python3", "--version") {
        if std::env::var_os("RPOD_REQUIRE_ROOT").is_some_and(|v| v == "1") {
            panic!("user rpodtest, setfacl or python3 missing (run scripts/setup.sh)");
        }
        eprintln!("SKIPPED rootless_acls_and_rename_flags: no user rpodtest, setfacl or python3 (scripts/setup.sh)");
        return;
    }
    let t = Tree::new();
    fs::write(t.p("l2/a"), "A").unwrap();
    fs::write(t.p("l2/b"), "B").unwrap();
    fs::write(t.p("l2/w"), "W").unwrap();
    let bin = t.p("fuse-overlay");
    fs::copy(BIN, &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(t.t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["u", "w", "m", "l1", "l2", "l2/a", "l2/b", "l2/w"] {
        std::os::unix::fs::chown(t.p(d), Some(1001), Some(1001)).unwrap();
    }
    let (b, m, o) = (bin.display(), t.p("m").display().to_string(), t.opts());
    // In a user namespace with a second user (1000 inside), as podman runs it.
    let script = format!(
        "unshare -U --map-auto --map-root-user -m sh -euc '
         {b} -o {o} {m}
         as1000() {{ setpriv --reuid 1000 --regid 1000 --clear-groups \"$@\"; }}
         echo secret > {m}/sec; chmod 600 {m}/sec
         echo closed > {m}/closed; chmod 600 {m}/closed
         setfacl -m u:1000:r {m}/sec
         as1000 cat {m}/sec
         as1000 cat {m}/closed 2>/dev/null || echo closed-refused
         mkdir -m 700 {m}/dd
         setfacl -m u:1000:rx,d:u:1000:rwx {m}/dd
         (umask 077; : > {m}/dd/x)
         stat -c \"x-mode %a\" {m}/dd/x
         as1000 sh -c \"echo w >> {m}/dd/x\" && echo inherited-write-ok
         python3 -c \"$0\" {m}/a {m}/b 2
         cat {m}/a {m}/b; echo
         python3 -c \"$0\" {m}/w {m}/w2 4
         ls {m}
         umount {m}' '{RENAMEAT2_PY}'"
    );
    let out = as_rpodtest(&script);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "userns: {so} {}", String::from_utf8_lossy(&out.stderr));
    for want in ["secret\n", "closed-refused\n", "x-mode 660\n", "inherited-write-ok\n", "BA\n"] {
        assert!(so.contains(want), "{want:?} missing: {so}");
    }
    assert!(!so.lines().any(|l| l == "w"), "w renamed away with a whiteout: {so}");
    assert!(so.lines().any(|l| l == "w2"), "{so}");
    // On disk: the ACL names the host uid of user 1000 inside (subuid 100000 + 999).
    let acl = sh(&format!("getfacl -cn {}", t.p("u/sec").display()));
    assert!(acl.contains("user:100999:r--"), "{acl}");
    assert!(upper_whiteout(&t, "w"));
}

/// Waits (up to 20 s) until `p` exists.
fn wait_exists(p: &Path) -> bool {
    let t0 = Instant::now();
    while !p.exists() {
        if t0.elapsed() > Duration::from_secs(20) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// `data` with `writes` applied (the file grows where a write goes past its end).
fn patched(data: &[u8], writes: &[(usize, &[u8])]) -> Vec<u8> {
    let mut v = data.to_vec();
    for (off, w) in writes {
        if v.len() < off + w.len() {
            v.resize(off + w.len(), 0);
        }
        v[*off..off + w.len()].copy_from_slice(w);
    }
    v
}

fn write_all_at(f: &fs::File, writes: &[(usize, &[u8])]) {
    use std::os::unix::fs::FileExt;
    for (off, w) in writes {
        f.write_all_at(w, *off as u64).unwrap();
    }
}

#[test]
fn lazy_copy_up_of_large_files() {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    if !require_root("lazy_copy_up_of_large_files") {
        return;
    }
    let t = Tree::new();
    let m = t.p("m");
    // A pattern that differs from page to page, so a misplaced range shows.
    let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| ((i as u64).wrapping_mul(2654435761) >> 11) as u8).collect() };
    let big = pattern(128 << 20);
    let small = pattern(24 << 20);
    fs::write(t.p("l1/big"), &big).unwrap();
    for n in ["c", "d", "e", "g"] {
        fs::write(t.p(&format!("l1/{n}")), &small).unwrap();
    }
    let old = fs::metadata(t.p("l1/big")).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));

    // 1. The first write does not wait for the copy; the file shows up in the upper layer only
    // when complete; reads meanwhile combine the lower file and the writes; unmounting waits.
    let fuse = Fuse::start_env(&t.opts(), &m, &[("FUSE_OVERLAY_LAZY_COPYUP", "1048576")]);
    let n = big.len();
    let writes: [(usize, &[u8]); 4] = [(0, b"HEAD"), (n / 2 + 3, b"MIDDLE"), (n - 2, b"TAIL"), (n + 100, b"EXT")];
    let want = patched(&big, &writes);
    let f = fs::OpenOptions::new().read(true).write(true).open(m.join("big")).unwrap();
    write_all_at(&f, &writes[..1]);
    assert!(!t.p("u/big").exists(), "a 128 MiB copy-up was complete at the first write: not lazy");
    assert_eq!(fs::read_dir(t.p("w/work")).unwrap().count(), 1, "the copy is made in the work directory");
    write_all_at(&f, &writes[1..]);
    // The written pages go to the daemon (without an fsync), the page cache is dropped, and
    // reads come back from the daemon.
    // SAFETY: plain syscalls on a descriptor this test owns.
    unsafe {
        let fd = f.as_raw_fd();
        assert_eq!(
            libc::sync_file_range(
                fd,
                0,
                0,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER
            ),
            0
        );
        assert_eq!(libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED), 0);
    }
    for (off, len) in [(0usize, 1usize << 16), (n / 2 - 8192, 1 << 16), (n - 8192, 8192 + 103), (n / 3, 1 << 20)] {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == want[off..off + len], "read at {off} during the copy");
    }
    assert_eq!(f.metadata().unwrap().len(), want.len() as u64);
    assert!(f.metadata().unwrap().modified().unwrap() > old, "mtime moved by the writes");
    drop(f);
    assert!(fuse.stop(), "the daemon exits cleanly");
    assert!(fs::read(t.p("u/big")).unwrap() == want, "the upper copy after unmount has all writes");
    assert!(fs::read(t.p("l1/big")).unwrap() == big, "the lower file is untouched");
    assert_eq!(fs::read_dir(t.p("w/work")).unwrap().count(), 0, "nothing left in the work directory");

    // 2. Unlink, rename and fsync while the copy is pending; a file opened but not written
    // keeps its times.
    let fuse = Fuse::start_env(&t.opts(), &m, &[("FUSE_OVERLAY_LAZY_COPYUP", "1048576")]);
    let w1: [(usize, &[u8]); 1] = [(5 << 20, b"changed")];
    let f = fs::OpenOptions::new().write(true).open(m.join("c")).unwrap();
    write_all_at(&f, &w1);
    drop(f);
    fs::remove_file(m.join("c")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!m.join("c").exists() && !fs::symlink_metadata(t.p("u/c")).unwrap().file_type().is_file(), "unlinked");
    let f = fs::OpenOptions::new().write(true).open(m.join("d")).unwrap();
    write_all_at(&f, &w1);
    drop(f);
    fs::rename(m.join("d"), m.join("d2")).unwrap();
    assert!(!m.join("d").exists());
    assert!(fs::read(m.join("d2")).unwrap() == patched(&small, &w1), "renamed during the copy");
    assert!(fs::read(t.p("u/d2")).unwrap() == patched(&small, &w1));
    let f = fs::OpenOptions::new().write(true).open(m.join("e")).unwrap();
    write_all_at(&f, &w1);
    f.sync_all().unwrap();
    assert!(fs::read(t.p("u/e")).unwrap() == patched(&small, &w1), "complete in the upper layer after fsync");
    drop(f);
    let lower_mtime = fs::metadata(t.p("l1/g")).unwrap().modified().unwrap();
    drop(fs::OpenOptions::new().write(true).open(m.join("g")).unwrap());
    assert!(wait_exists(&t.p("u/g")));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fs::metadata(m.join("g")).unwrap().modified().unwrap(), lower_mtime, "opened, not written");
    assert!(fs::read(t.p("u/g")).unwrap() == small);
    drop(fuse);

    // 3. kill -9 during a copy: the upper layer has the whole file or none of it, the lower
    // file is intact, and the next mount clears the work directory.
    fs::remove_file(t.p("u/g")).unwrap();
    let fuse = Fuse::start_env(&t.opts(), &m, &[("FUSE_OVERLAY_LAZY_COPYUP", "1048576")]);
    let f = fs::OpenOptions::new().write(true).open(m.join("g")).unwrap();
    write_all_at(&f, &w1);
    nix::sys::signal::kill(fuse.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(f);
    drop(fuse);
    if let Ok(got) = fs::read(t.p("u/g")) {
        assert!(got == small || got == patched(&small, &w1), "no partial copy is visible after kill -9");
    }
    assert!(fs::read(t.p("l1/g")).unwrap() == small, "the lower file is untouched");
    let fuse = Fuse::start(&t.opts(), &m);
    assert_eq!(fs::read_dir(t.p("w/work")).unwrap().count(), 0, "the next mount clears the work directory");
    drop(fuse);
}

#[test]
fn lazy_copy_up_random_writes_and_reads() {
    if !require_root("lazy_copy_up_random_writes_and_reads") {
        return;
    }
    // With passthrough granted (writes go straight to the daemon) and without (the kernel's
    // writeback cache: partial pages read first, times sent at close).
    for no_passthrough in ["", "1"] {
        lazy_random(no_passthrough);
    }
}

fn lazy_random(no_passthrough: &str) {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let t = Tree::new();
    let m = t.p("m");
    let size = 192usize << 20;
    let lower: Vec<u8> = (0..size).map(|i| ((i as u64).wrapping_mul(0x9E37_79B9) >> 7) as u8).collect();
    fs::write(t.p("l1/r"), &lower).unwrap();
    let mut env = vec![("FUSE_OVERLAY_LAZY_COPYUP", "1048576")];
    if !no_passthrough.is_empty() {
        env.push(("FUSE_OVERLAYFS_NO_PASSTHROUGH", no_passthrough));
    }
    let fuse = Fuse::start_env(&t.opts(), &m, &env);
    let mut shadow = lower.clone();
    let f = fs::OpenOptions::new().read(true).write(true).open(m.join("r")).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for k in 0..300 {
        // Writes anywhere (some past the end), reads of ranges dropped from the page cache.
        let len = 1 + rnd(96 << 10);
        let off = rnd(size + (1 << 20));
        let byte = (k % 251) as u8 + 1;
        let data = vec![byte; len];
        f.write_all_at(&data, off as u64).unwrap();
        if shadow.len() < off + len {
            shadow.resize(off + len, 0);
        }
        shadow[off..off + len].copy_from_slice(&data);
        if k % 10 == 0 {
            // SAFETY: plain syscalls on a descriptor this test owns.
            unsafe {
                let fd = f.as_raw_fd();
                libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER);
                libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED);
            }
            let roff = rnd(shadow.len());
            let rlen = (1 + rnd(1 << 20)).min(shadow.len() - roff);
            let mut buf = vec![0u8; rlen];
            f.read_exact_at(&mut buf, roff as u64).unwrap();
            assert!(buf == shadow[roff..roff + rlen], "read {roff}+{rlen} after {k} writes ({env:?})");
        }
    }
    drop(f);
    assert!(fuse.stop(), "the daemon exits cleanly");
    assert!(fs::read(t.p("u/r")).unwrap() == shadow, "every write is in the upper copy");
    assert!(fs::read(t.p("l1/r")).unwrap() == lower, "the lower file is untouched");
}

#[test]
fn chmod_with_xattr_permissions_updates_the_acl_mask() {
    if !require_root("chmod_with_xattr_permissions_updates_the_acl_mask") {
        return;
    }
    if !acl_tools("chmod_with_xattr_permissions_updates_the_acl_mask") {
        return;
    }
    let t = Tree::new();
    fs::set_permissions(t.t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let m = t.p("m");
    let md = m.display();
    // Modes kept in the override xattr: chmod does not reach the real file's mode.
    let fuse = Fuse::start(&format!("{},xattr_permissions=2", t.opts()), &m);
    fs::write(m.join("f"), "data\n").unwrap();
    sh(&format!("chmod 600 {md}/f; setfacl -m u:rpodtest:rw {md}/f"));
    let append = || as_rpodtest(&format!("echo more >> {md}/f")).status.success();
    assert!(append(), "the ACL grants write");
    sh(&format!("chmod 640 {md}/f"));
    let acl = sh(&format!("getfacl -c {md}/f"));
    assert!(acl.contains("mask::r--"), "chmod g=r sets the mask: {acl}");
    assert!(!append(), "the mask now denies write");
    sh(&format!("chmod 660 {md}/f"));
    assert!(append(), "chmod g=rw opens it again");
    assert_eq!(fs::metadata(m.join("f")).unwrap().permissions().mode() & 0o777, 0o660);
    drop(fuse);
}
