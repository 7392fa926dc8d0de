//! Rootless mode: an ordinary user's rpod, in a user namespace of its own.
//!
//! How this works (podman's design):
//!
//! 1. Every rpod command of a non-root user runs inside one long-lived user namespace, with a
//!    mount namespace of its own, held open by a *pause process* (`rpod __pause`). The first
//!    command creates it: the pause process unshares `CLONE_NEWUSER | CLONE_NEWNS` and says so
//!    on its stdout; the command maps it with `newuidmap`/`newgidmap` (the user's UID and GID
//!    become 0, the user's `/etc/subuid` and `/etc/subgid` ranges follow from 1; a user with
//!    no ranges gets the single mapping); the pause process checks it is now root there,
//!    detaches (new session, stdio on `/dev/null`) and sleeps until killed. The command
//!    records its PID and start time in `<run dir>/pause.pid`.
//! 2. Every command joins both namespaces with `setns(2)` first thing in `main` (while the
//!    process is still single-threaded), then returns to its working directory. It is root
//!    there: overlay mounts, network namespaces, netd and the OCI runtime work; on the host
//!    everything is done as the user or one of the user's subordinate IDs. Processes started
//!    inside (the monitor, netd, `rpod unshare`) inherit the namespaces and find the
//!    settings in `_RPOD_ROOTLESS`.
//! 3. A recorded PID is trusted only when that process's start time still matches (a PID
//!    reused by another process is not joined). When the pause process is gone, the next
//!    command rebuilds it: inside the namespaces of a container monitor that is still alive
//!    (its pid files are in `<run dir>/monitors/`, so running containers keep their mounts),
//!    else from scratch. Engine locks are `flock`s, which the kernel drops with a crashed
//!    process, so a crash leaves no stale lock.
//!
//! The run directory is `$XDG_RUNTIME_DIR/rpod`, or `/tmp/rpod-<uid>` without it. It is made
//! with mode 0700 and then checked (a directory, not a symlink, owned by the user, no access
//! for others), so another user cannot pre-create it to watch or steer this user's engine.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use nix::sched::CloneFlags;

/// The environment variable carrying the settings into processes started inside
/// (`uid:gid:run dir`).
pub const ENV: &str = "_RPOD_ROOTLESS";

/// What a rootless engine knows about its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootless {
    /// The user's real UID (outside the user namespace).
    pub uid: u32,
    /// The user's real GID.
    pub gid: u32,
    /// The private run directory.
    pub run_dir: PathBuf,
}

impl Rootless {
    fn encode(&self) -> OsString {
        let mut s = OsString::from(format!("{}:{}:", self.uid, self.gid));
        s.push(self.run_dir.as_os_str());
        s
    }

    fn decode(v: &str) -> Option<Rootless> {
        let mut it = v.splitn(3, ':');
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        let dir = it.next()?;
        dir.starts_with('/').then(|| Rootless { uid, gid, run_dir: PathBuf::from(dir) })
    }
}

static MODE: OnceLock<Option<Rootless>> = OnceLock::new();

/// The rootless settings (None: rootful).
pub fn mode() -> Option<&'static Rootless> {
    MODE.get_or_init(|| None).as_ref()
}

/// Whether the engine runs rootless.
pub fn is_rootless() -> bool {
    mode().is_some()
}

/// Whether this process is in a user namespace other than the initial one.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Sets the mode for this process: rootful for root, already inside for a process started
/// in the user namespace, else joins (creating) the user's namespaces. Must be called while
/// the process is single-threaded.
pub fn init() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        let inside = std::env::var(ENV).ok().and_then(|v| Rootless::decode(&v)).filter(|_| in_user_namespace());
        let _ = MODE.set(inside);
        return Ok(());
    }
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let run_dir = run_dir_for(uid)?;
    enter(&run_dir, uid, gid)?;
    let r = Rootless { uid, gid, run_dir };
    // Single-threaded here (the caller's contract), so changing the environment is sound.
    std::env::set_var(ENV, r.encode());
    let _ = MODE.set(Some(r));
    Ok(())
}

/// The user's run directory: `$XDG_RUNTIME_DIR/rpod`, else `/tmp/rpod-<uid>`; created
/// private (0700) and checked. An `XDG_RUNTIME_DIR` another user owns (left set by `su`) is
/// passed over for `/tmp/rpod-<uid>`, as podman does.
pub fn run_dir_for(uid: u32) -> anyhow::Result<PathBuf> {
    let fallback = PathBuf::from(format!("/tmp/rpod-{uid}"));
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|p| p.is_absolute());
    let dir = match xdg {
        Some(x) => match std::fs::symlink_metadata(&x) {
            Ok(m) if m.file_type().is_dir() && m.uid() != uid => {
                tracing::warn!(
                    "XDG_RUNTIME_DIR {} is owned by {}, not by you: using {}",
                    x.display(),
                    owner_name(m.uid()),
                    fallback.display()
                );
                fallback
            }
            _ => {
                check_private(&x, uid, false).with_context(|| format!("XDG_RUNTIME_DIR {}", x.display()))?;
                x.join("rpod")
            }
        },
        None => fallback,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating the run directory {}", dir.display())),
    }
    if let Ok(m) = std::fs::symlink_metadata(&dir) {
        if m.uid() != uid {
            anyhow::bail!(
                "the run directory {} is owned by {}, not by you (uid {uid}): set XDG_RUNTIME_DIR to a private directory of yours (or have {} removed)",
                dir.display(),
                owner_name(m.uid()),
                dir.display()
            );
        }
    }
    check_private(&dir, uid, true)?;
    Ok(dir)
}

/// A user's name and uid (the uid alone when it has no name).
fn owner_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Checks that `dir` is a real directory owned by `uid` (and, when `strict`, with no access
/// for group or others).
fn check_private(dir: &Path, uid: u32, strict: bool) -> anyhow::Result<()> {
    let m = std::fs::symlink_metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    if !m.file_type().is_dir() {
        anyhow::bail!("{} is not a directory (a symlink?): remove it", dir.display());
    }
    if m.uid() != uid {
        anyhow::bail!("{} is owned by uid {}, not by you (uid {uid}): remove it", dir.display(), m.uid());
    }
    if strict && m.mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} has mode {:o}: it must be private to you (0700); fix it with chmod 0700",
            dir.display(),
            m.mode() & 0o7777
        );
    }
    Ok(())
}

/// A process identity that survives PID reuse: the PID and its start time (in clock ticks
/// since boot, field 22 of `/proc/PID/stat`).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    let state = fields.first()?;
    if *state == "Z" || *state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Writes a `PID STARTTIME` pid file.
pub fn write_pid_file(path: &Path, pid: i32) -> anyhow::Result<()> {
    let st = start_time(pid).ok_or_else(|| anyhow::anyhow!("process {pid} is gone"))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{pid} {st}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The PID of a `PID STARTTIME` pid file when that very process is still alive.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid: i32 = it.next()?.parse().ok()?;
    let st: u64 = it.next()?.parse().ok()?;
    (pid > 0 && start_time(pid) == Some(st)).then_some(pid)
}

/// Stops the process of a pid file (SIGTERM, then SIGKILL after `grace`) and removes the file.
/// (A zero `grace` sends SIGKILL at once: for helpers with nothing to save.)
pub fn kill_pid_file(path: &Path, grace: std::time::Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    if let Some(pid) = read_pid_file(path) {
        let p = nix::unistd::Pid::from_raw(pid);
        let first = if grace.is_zero() { nix::sys::signal::Signal::SIGKILL } else { nix::sys::signal::Signal::SIGTERM };
        let _ = nix::sys::signal::kill(p, first);
        if grace.is_zero() {
            // Not waited for: its exit can take 10-20 ms in the kernel (closing a TAP device
            // unregisters it), and nothing depends on it. Reaped if already gone, else by
            // whoever reaps our orphans (podman does not wait for slirp4netns either).
            let _ = waitpid(p, Some(WaitPidFlag::WNOHANG));
            let _ = std::fs::remove_file(path);
            return;
        }
        let end = std::time::Instant::now() + grace;
        let mut killed = false;
        loop {
            // Our own child (or orphan, as subreaper) is reaped here, or it stays a zombie.
            let gone = match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => false,
                Ok(_) => true,
                Err(_) => start_time(pid).is_none(),
            };
            if gone {
                break;
            }
            if std::time::Instant::now() >= end {
                if killed {
                    break;
                }
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
                killed = true;
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        reap_orphans();
    }
    let _ = std::fs::remove_file(path);
}

/// Reaps children that already exited (helpers' orphans handed to us as subreaper).
pub fn reap_orphans() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    for _ in 0..20 {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            // Children left that have not exited yet (a helper's orphan on its way out).
            Ok(WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_micros(250)),
            Ok(_) => {}
            // No children at all.
            Err(_) => return,
        }
    }
}

fn lock(path: &Path) -> anyhow::Result<Flock<File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
}

/// Where the pause process's pid file is.
pub fn pause_pid_file(run_dir: &Path) -> PathBuf {
    run_dir.join("pause.pid")
}

/// The directory of the monitors' pid files (one per running container, named by its ID).
pub fn monitors_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("monitors")
}

/// Joins the user's namespaces (creating the pause process when needed).
fn enter(run_dir: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    let _l = lock(&run_dir.join("pause.lock"))?;
    let pidfile = pause_pid_file(run_dir);
    if let Some(pid) = read_pid_file(&pidfile) {
        match join(pid) {
            Ok(()) => return Ok(()),
            Err(JoinError::Fatal(e)) => return Err(e),
            Err(JoinError::Retry(e)) => {
                tracing::info!(error = %format!("{e:#}"), "the pause process cannot be joined: rebuilding it")
            }
        }
    }
    // The pause process is gone. A monitor that still runs holds the same namespaces: join
    // them and start a new pause process there, so running containers stay in reach.
    for e in std::fs::read_dir(monitors_dir(run_dir)).into_iter().flatten().flatten() {
        if let Some(pid) = read_pid_file(&e.path()) {
            match join(pid) {
                Ok(()) => {
                    tracing::info!(monitor = pid, "rebuilding the pause process in a monitor's namespaces");
                    let pause = spawn_pause(false, uid, gid)?;
                    return write_pid_file(&pidfile, pause);
                }
                Err(JoinError::Fatal(e)) => return Err(e),
                Err(JoinError::Retry(_)) => {}
            }
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let pause = spawn_pause(true, uid, gid)?;
    write_pid_file(&pidfile, pause)?;
    Ok(join(pause)?)
}

/// Why [`join`] failed.
enum JoinError {
    /// Nothing changed: the caller may try other namespaces.
    Retry(anyhow::Error),
    /// The user namespace was joined but not the mount namespace: this process is half in
    /// and cannot go back (setns to a parent user namespace is not allowed).
    Fatal(anyhow::Error),
}

impl From<JoinError> for anyhow::Error {
    fn from(e: JoinError) -> Self {
        match e {
            JoinError::Retry(e) | JoinError::Fatal(e) => e,
        }
    }
}

/// Joins the user and mount namespaces of `pid`, staying in the same working directory.
fn join(pid: i32) -> Result<(), JoinError> {
    let cwd = std::env::current_dir().ok();
    let user =
        File::open(format!("/proc/{pid}/ns/user")).context("opening the user namespace").map_err(JoinError::Retry)?;
    let mnt =
        File::open(format!("/proc/{pid}/ns/mnt")).context("opening the mount namespace").map_err(JoinError::Retry)?;
    let own = std::fs::metadata("/proc/self/ns/user").map(|m| m.ino()).ok();
    if own.is_some() && own == user.metadata().map(|m| m.ino()).ok() {
        return Err(JoinError::Retry(anyhow::anyhow!("process {pid} is not in a user namespace of its own")));
    }
    nix::sched::setns(user.as_fd(), CloneFlags::CLONE_NEWUSER)
        .context("joining the user namespace")
        .map_err(JoinError::Retry)?;
    if let Err(e) = nix::sched::setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS) {
        return Err(JoinError::Fatal(anyhow::anyhow!(
            "joined the user namespace of process {pid} but not its mount namespace ({e}): cannot go on half inside; run the command again"
        )));
    }
    if let Some(d) = cwd {
        let _ = std::env::set_current_dir(d);
    }
    Ok(())
}

/// One `/etc/subuid`-format range of a user: (first ID, count).
pub fn sub_ranges(file: &Path, user: &str, id: u32) -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    parse_sub_ranges(&text, user, id)
}

fn parse_sub_ranges(text: &str, user: &str, id: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() != 3 || (f[0] != user && f[0] != id.to_string()) {
            continue;
        }
        if let (Ok(start), Ok(count)) = (f[1].parse::<u32>(), f[2].parse::<u32>()) {
            if count > 0 {
                out.push((start, count));
            }
        }
    }
    out
}

/// The `newuidmap`/`newgidmap` arguments after the PID: `0 ID 1` then the ranges from 1.
fn map_args(id: u32, ranges: &[(u32, u32)]) -> Vec<String> {
    let mut args = vec!["0".to_owned(), id.to_string(), "1".to_owned()];
    let mut next = 1u64;
    for (start, count) in ranges {
        args.extend([next.to_string(), start.to_string(), count.to_string()]);
        next += u64::from(*count);
    }
    args
}

fn run_map_tool(tool: &str, pid: i32, args: &[String]) -> anyhow::Result<()> {
    let out = Command::new(tool)
        .arg(pid.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {tool} (Debian package uidmap)"))?;
    if !out.status.success() {
        anyhow::bail!("{tool} {pid} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Maps the user namespace of `pid`: through `newuidmap`/`newgidmap` with the user's
/// subordinate ranges, or the user's own IDs alone when there are none.
fn map_ids(pid: i32, uid: u32, gid: u32) -> anyhow::Result<()> {
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name);
    let name = name.unwrap_or_default();
    let subuid = sub_ranges(Path::new("/etc/subuid"), &name, uid);
    let subgid = sub_ranges(Path::new("/etc/subgid"), &name, uid);
    if subuid.is_empty() || subgid.is_empty() {
        tracing::warn!(
            user = %name,
            "no subordinate ID ranges in /etc/subuid and /etc/subgid: only your own UID and GID are mapped \
             (add ranges with usermod --add-subuids/--add-subgids)"
        );
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").context("writing setgroups")?;
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1\n")).context("writing uid_map")?;
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1\n")).context("writing gid_map")?;
        return Ok(());
    }
    run_map_tool("newuidmap", pid, &map_args(uid, &subuid))?;
    run_map_tool("newgidmap", pid, &map_args(gid, &subgid))
}

/// Starts a pause process: with `unshare`, in new user and mount namespaces that it maps;
/// without, in the caller's (already joined) namespaces. Returns its PID once it is ready.
fn spawn_pause(unshare: bool, uid: u32, gid: u32) -> anyhow::Result<i32> {
    let mut cmd = Command::new("/proc/self/exe");
    std::os::unix::process::CommandExt::arg0(&mut cmd, "rpod");
    cmd.arg("__pause");
    if !unshare {
        cmd.arg("--no-unshare");
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("starting the pause process")?;
    let pid = child.id() as i32;
    let res = (|| -> anyhow::Result<()> {
        let mut out = BufReader::new(child.stdout.take().context("pause stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "unshared" {
            anyhow::bail!("the pause process failed to create its namespaces");
        }
        if unshare {
            map_ids(pid, uid, gid)?;
        }
        let mut input = child.stdin.take().context("pause stdin")?;
        input.write_all(b"go\n")?;
        line.clear();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            anyhow::bail!("the pause process did not start (no ID mapping?)");
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e).context("creating the rootless user namespace");
    }
    // Not waited for: it outlives this command (reparented when we exit).
    std::mem::forget(child);
    Ok(pid)
}

/// The pause process's body (`rpod __pause`): never returns.
pub fn pause_main(unshare: bool) -> ! {
    let fail = |msg: String| -> ! {
        eprintln!("rpod pause: {msg}");
        std::process::exit(1)
    };
    if unshare {
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
            fail(format!("unshare: {e}"));
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "unshared");
    let _ = out.flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() != "go" {
        fail("the caller went away".to_owned());
    }
    if unshare {
        if !nix::unistd::geteuid().is_root() {
            fail("not mapped to root in the user namespace".to_owned());
        }
        // Our mounts never propagate to the host; the host's still reach us.
        if let Err(e) = nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
            None::<&str>,
        ) {
            fail(format!("making / a slave mount: {e}"));
        }
    }
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let _ = nix::sys::prctl::set_name(c"rpod-pause");
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    use nix::sys::signal::{signal, SigHandler, Signal};
    for s in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGPIPE, Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
    loop {
        nix::unistd::pause();
    }
}

/// The host's `net.ipv4.ip_unprivileged_port_start` (1024 when unreadable).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// Makes a file or directory private to the user (mode 0700 for a directory).
pub fn make_private(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_ranges_and_maps() {
        let text = "alice:100000:65536\n1001:300000:10\nbob:200000:65536\nbad\nalice:x:1\n";
        assert_eq!(parse_sub_ranges(text, "alice", 1001), vec![(100000, 65536), (300000, 10)]);
        assert_eq!(parse_sub_ranges(text, "carol", 1003), vec![]);
        assert_eq!(
            map_args(1001, &[(100000, 65536), (300000, 10)]),
            ["0", "1001", "1", "1", "100000", "65536", "65537", "300000", "10"]
        );
    }

    #[test]
    fn encode_decode() {
        let r = Rootless { uid: 1001, gid: 1002, run_dir: PathBuf::from("/run/user/1001/rpod") };
        assert_eq!(Rootless::decode(r.encode().to_str().unwrap_or_default()), Some(r));
        assert_eq!(Rootless::decode("1:2:relative"), None);
        assert_eq!(Rootless::decode("x:2:/a"), None);
    }

    #[test]
    fn pid_files() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().join("x.pid");
        write_pid_file(&p, std::process::id() as i32).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_pid_file(&p), Some(std::process::id() as i32));
        // Same PID, another start time: not trusted.
        std::fs::write(&p, format!("{} 1\n", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_pid_file(&p), None);
    }
}
