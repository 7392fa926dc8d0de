//! Terminals for `run -t`: the runtime's `--console-socket` (the pty master arrives over a
//! unix socket with `SCM_RIGHTS`), copying between our stdio and the master, and raw mode.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

/// A listening console socket (removed on drop).
#[derive(Debug)]
pub struct ConsoleSocket {
    /// Its path (short: socket paths are limited to 108 bytes).
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens on a fresh socket under the run directory.
    pub fn new() -> anyhow::Result<ConsoleSocket> {
        let dir = super::run_base().join("console");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.sock", &super::random_id()[..16]));
        let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// The pty master the runtime sent (after `create` returned: the message waits in the
    /// socket's queue).
    pub fn receive(&self) -> anyhow::Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let (stream, _) = self.listener.accept().context("the runtime sent no terminal")?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        recv_fd(&stream).context("receiving the terminal from the runtime")
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives one file descriptor (`SCM_RIGHTS`).
fn recv_fd(stream: &UnixStream) -> std::io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // Room for a few descriptors, aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found: Option<OwnedFd> = None;
    // SAFETY: walking the control messages the kernel filled in, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    // Keep the first; close any others.
                    let owned = OwnedFd::from_raw_fd(fd);
                    if found.is_none() {
                        found = Some(owned);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    found.ok_or_else(|| std::io::Error::other("no file descriptor in the message"))
}

/// Whether a descriptor is a terminal.
pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Puts a terminal in raw mode; restores the saved mode on drop.
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Raw mode on `fd` (None when it is not a terminal).
    pub fn enter(fd: RawFd) -> Option<RawMode> {
        if !isatty(fd) {
            return None;
        }
        // SAFETY: termios is plain data, filled in by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: t is a valid termios to write into.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: t is a valid termios.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: t is a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
            return None;
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the mode saved by tcgetattr.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// The window size (rows, cols) of the terminal `fd` (None when it is not one).
pub fn winsize(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into ws.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 {
        Some((ws.ws_row, ws.ws_col))
    } else {
        None
    }
}

/// Copies our terminal's window size (from `from`) to the pty master.
pub fn copy_winsize(from: RawFd, master: &OwnedFd) {
    // SAFETY: winsize is plain data.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into ws.
    if unsafe { libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) } == 0 {
        // SAFETY: TIOCSWINSZ reads a winsize from ws.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

/// The copies between a pty master and our side.
#[derive(Debug)]
pub struct Relay {
    done: mpsc::Receiver<()>,
}

impl Relay {
    /// Starts copying the master's output to `sink`, and (when `stdin`) our stdin to the
    /// master (sending end-of-file, ^D, when our stdin ends).
    pub fn start(master: OwnedFd, sink: Box<dyn Write + Send>, stdin: bool) -> anyhow::Result<Relay> {
        let mut reader = File::from(master);
        if stdin {
            let mut writer = reader.try_clone().context("duplicating the terminal")?;
            // Never joined: a read of our stdin may block until we exit.
            std::thread::spawn(move || {
                let mut input = std::io::stdin().lock();
                let mut buf = [0u8; 4096];
                loop {
                    match input.read(&mut buf) {
                        Ok(0) => {
                            let _ = writer.write_all(&[4]);
                            break;
                        }
                        Ok(n) => {
                            if writer.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            });
        }
        let (tx, done) = mpsc::channel();
        let mut sink = sink;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    // EIO once every slave descriptor is closed.
                    Ok(0) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Ok(n) => {
                        if sink.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let _ = sink.flush();
                    }
                    Err(_) => break,
                }
            }
            let _ = sink.flush();
            let _ = tx.send(());
        });
        Ok(Relay { done })
    }

    /// Waits (a bounded time) for the output copy to drain after the container exited.
    pub fn finish(self) {
        let _ = self.done.recv_timeout(Duration::from_secs(5));
    }
}

/// The descriptors the SIGWINCH handler copies the window size between (-1: none).
static WINCH_FROM: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
static WINCH_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    use std::sync::atomic::Ordering;
    let (from, to) = (WINCH_FROM.load(Ordering::SeqCst), WINCH_TO.load(Ordering::SeqCst));
    if from < 0 || to < 0 {
        return;
    }
    // SAFETY: winsize is plain data; ioctl is async-signal-safe.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into ws; TIOCSWINSZ reads it.
    unsafe {
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Forwards our terminal's window size changes (SIGWINCH) to a pty master while it lives.
#[derive(Debug)]
pub struct WinchForward {
    /// Our own copy of the master (closed after the handler stops using it).
    _master: OwnedFd,
}

impl WinchForward {
    /// Copies the size of `from` (our terminal) to `master` now and on every SIGWINCH
    /// (None when `from` is not a terminal).
    pub fn start(from: RawFd, master: &OwnedFd) -> Option<WinchForward> {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        use std::sync::atomic::Ordering;
        copy_winsize(from, master);
        if !isatty(from) {
            return None;
        }
        let master = master.try_clone().ok()?;
        WINCH_FROM.store(from, Ordering::SeqCst);
        WINCH_TO.store(master.as_raw_fd(), Ordering::SeqCst);
        let action = SigAction::new(SigHandler::Handler(on_winch), SaFlags::SA_RESTART, SigSet::empty());
        // SAFETY: the handler only reads atomics and makes ioctl calls (async-signal-safe).
        if let Err(e) = unsafe { sigaction(Signal::SIGWINCH, &action) } {
            tracing::warn!(error = %e, "cannot forward window size changes");
        }
        Some(WinchForward { _master: master })
    }
}

impl Drop for WinchForward {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        // Stop forwarding before our copy of the master is closed.
        WINCH_TO.store(-1, Ordering::SeqCst);
        WINCH_FROM.store(-1, Ordering::SeqCst);
    }
}
