//! Mounting, daemonizing and the request loop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use fuser::{Config, MountOption, Session, SessionACL};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{SigSet, Signal};

use super::fs::Overlay;
use super::options::Options;
use super::sys;

/// Why the file system could not be mounted or served.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Preparing the layers failed.
    #[error("cannot use the layers: {0}")]
    Layers(#[source] io::Error),
    /// The mount itself failed.
    #[error("cannot mount {path}: {source}")]
    Mount {
        /// The mount point.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The session ended with an error.
    #[error("FUSE session: {0}")]
    Session(#[source] io::Error),
}

const FSNAME: &str = "fuse-overlay";

fn flags(o: &Options) -> MsFlags {
    let has = |k: &str| o.kernel.iter().any(|x| x == k);
    let mut f = MsFlags::empty();
    if !has("dev") {
        f |= MsFlags::MS_NODEV;
    }
    if !has("suid") && !nix::unistd::geteuid().is_root() {
        f |= MsFlags::MS_NOSUID;
    }
    if has("nosuid") {
        f |= MsFlags::MS_NOSUID;
    }
    if has("nodev") {
        f |= MsFlags::MS_NODEV;
    }
    if has("ro") {
        f |= MsFlags::MS_RDONLY;
    }
    if has("noexec") {
        f |= MsFlags::MS_NOEXEC;
    }
    if !has("atime") {
        f |= MsFlags::MS_NOATIME;
    }
    if has("sync") {
        f |= MsFlags::MS_SYNCHRONOUS;
    }
    if has("dirsync") {
        f |= MsFlags::MS_DIRSYNC;
    }
    f
}

fn allow_other(o: &Options) -> bool {
    nix::unistd::geteuid().is_root() || o.kernel.iter().any(|x| x == "allow_other")
}

/// mount(2) of a fresh `/dev/fuse` connection; `Ok(None)` when not permitted here.
fn mount_direct(o: &Options) -> io::Result<Option<OwnedFd>> {
    let dev = sys::open_abs(c"/dev/fuse", libc::O_RDWR)?;
    let st = std::fs::metadata(&o.mountpoint)?;
    use std::os::unix::fs::MetadataExt;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        st.mode() & libc::S_IFMT,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if allow_other(o) {
        data.push_str(",allow_other");
    }
    match mount(Some(FSNAME), &o.mountpoint, Some("fuse.fuse-overlay"), flags(o), Some(data.as_str())) {
        Ok(()) => Ok(Some(dev)),
        Err(nix::errno::Errno::EPERM) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn fuser_options(o: &Options) -> Vec<MountOption> {
    let f = flags(o);
    let mut v = vec![
        MountOption::FSName(FSNAME.to_owned()),
        MountOption::Subtype(FSNAME.to_owned()),
        MountOption::DefaultPermissions,
    ];
    v.push(if f.contains(MsFlags::MS_NODEV) { MountOption::NoDev } else { MountOption::Dev });
    v.push(if f.contains(MsFlags::MS_NOSUID) { MountOption::NoSuid } else { MountOption::Suid });
    if f.contains(MsFlags::MS_RDONLY) {
        v.push(MountOption::RO);
    }
    if f.contains(MsFlags::MS_NOEXEC) {
        v.push(MountOption::NoExec);
    }
    if f.contains(MsFlags::MS_NOATIME) {
        v.push(MountOption::NoAtime);
    }
    v
}

/// Unmounts `path`: umount2 where permitted, else `fusermount3 -u -z`.
pub fn unmount(path: &Path) {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) => {}
        Err(_) => {
            let _ = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg("--")
                .arg(path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Detaches from the caller: the parent exits 0 (the mount is in place), the child goes on
/// in a new session with stdio on /dev/null.
fn daemonize(keep_stderr: bool) -> io::Result<()> {
    // SAFETY: called while the process has a single thread, so the child may run anything.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        // SAFETY: _exit skips atexit handlers and buffered streams of the parent copy.
        nix::unistd::ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        nix::unistd::ForkResult::Child => {}
    }
    let _ = nix::unistd::setsid();
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    let fds: &[i32] = if keep_stderr { &[0, 1] } else { &[0, 1, 2] };
    for &fd in fds {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    Ok(())
}

/// Mounts the overlay described by `o` and serves it until it is unmounted.
pub fn run(o: Options) -> Result<(), RunError> {
    for i in &o.ignored {
        eprintln!("unknown argument ignored: {i}");
    }
    // Raise the open file limit to the hard limit, as fuse-overlayfs does.
    if let Ok((_, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    // Modes from the kernel already carry the caller's umask: ours must not mask them again.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let mountpoint = o.mountpoint.clone();
    let foreground = o.foreground;
    let debug = o.debug;
    let fs = Overlay::new(o.clone()).map_err(RunError::Layers)?;
    let copies = fs.copies();
    let mut config = Config::default();
    let threads = std::env::var("FUSE_OVERLAY_THREADS").ok().and_then(|v| v.parse::<usize>().ok());
    config.n_threads = Some(
        threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)).clamp(1, 64),
    );
    config.clone_fd = true;
    // FUSE over io_uring (Linux 6.14+ with fuse.enable_uring=Y): one queue per CPU, served on
    // that CPU. Off with FUSE_OVERLAY_URING=0; without kernel support fuser falls back to
    // /dev/fuse and says why at info level (visible with -d).
    config.io_uring = std::env::var("FUSE_OVERLAY_URING").map_or(true, |v| v.trim() != "0");
    config.acl = SessionACL::All;
    let merr = |source: io::Error| RunError::Mount { path: mountpoint.display().to_string(), source };
    let session = match mount_direct(&o).map_err(merr)? {
        Some(fd) => {
            let fd_copy = fd.try_clone().map_err(merr)?;
            match Session::from_fd(fs, fd, SessionACL::All, config) {
                Ok(s) => {
                    drop(fd_copy);
                    s
                }
                Err(e) => {
                    unmount(&mountpoint);
                    return Err(merr(e));
                }
            }
        }
        None => {
            config.mount_options = fuser_options(&o);
            // fusermount3 adds allow_other for SessionACL::All; otherwise only the owner.
            config.acl = if allow_other(&o) { SessionACL::All } else { SessionACL::Owner };
            Session::new(fs, &mountpoint, &config).map_err(merr)?
        }
    };
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    if !foreground {
        if let Err(e) = daemonize(debug) {
            unmount(&mountpoint);
            return Err(merr(e));
        }
    }
    // Signals are handled by one thread, which unmounts; the session then ends by itself.
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    let _ = set.thread_block();
    let mp = mountpoint.clone();
    let _ = std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Ok(sig) = set.wait() {
            tracing::info!("{sig:?}: unmounting");
            // Dirty pages of the kernel's writeback cache reach the layers only through us:
            // write them back while we still serve, and again just before leaving (files
            // still open keep the detached mount in use).
            let root = std::fs::File::open(&mp).ok();
            if let Some(r) = &root {
                let _ = nix::unistd::syncfs(r);
            }
            unmount(&mp);
            // A copy of the mount in another mount namespace keeps the connection alive;
            // exiting closes /dev/fuse, which ends it there too.
            std::thread::sleep(std::time::Duration::from_millis(500));
            // Lazy copy-ups still copying finish and move into the upper layer.
            copies.wait();
            if let Some(r) = &root {
                let _ = nix::unistd::syncfs(r);
            }
            // Close our file on the detached mount while the request threads still run: if
            // it holds the mount's last reference, the kernel tears the connection down in
            // this close and waits for requests in flight. Left to exit(), that teardown runs
            // in our last exiting thread, where with FUSE over io_uring it can wait forever
            // for ring work queued behind it (seen on 6.18: a D-state thread, and sync(2)
            // blocked on the superblock for good).
            drop(root);
            std::process::exit(0);
        }
    });
    let bg = session.spawn().map_err(RunError::Session)?;
    bg.join().map_err(RunError::Session)
}
