//! Network namespaces: open and check a namespace path, and enter one with a guard that
//! always switches the thread back, also on an early return.
//!
//! netd is single-threaded: a netlink socket belongs to the namespace of the thread that
//! created it, so a socket for a container is created while the guard is held and keeps
//! working after the thread has switched back.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::error::{msg, Context, NetdError, Result};

const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
}

impl NetNs {
    /// Opens a namespace path and checks that it is a network namespace.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(NetdError::Io).ctx("invalid namespace path")?;
        let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: fstatfs writes into `st`, a properly sized, writable statfs buffer, and the
        // fd is valid for the life of `file`.
        let rc = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(NetdError::Io(std::io::Error::last_os_error())).ctx("invalid namespace path");
        }
        // SAFETY: fstatfs returned 0, so the buffer is initialised.
        let st = unsafe { st.assume_init() };
        #[allow(clippy::unnecessary_cast)]
        if st.f_type as i64 != NSFS_MAGIC {
            return Err(msg(format!("invalid namespace path: {} is not a namespace", path.display())));
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
        let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if ty != libc::CLONE_NEWNET {
            return Err(msg(format!("invalid namespace path: {} is not a network namespace", path.display())));
        }
        Ok(NetNs { file })
    }

    /// The calling thread's current network namespace.
    pub fn current() -> Result<Self> {
        let file = File::open("/proc/thread-self/ns/net").ctx("open current network namespace")?;
        Ok(NetNs { file })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Moves the calling thread into this namespace until the guard is dropped.
    pub fn enter(&self) -> Result<NsGuard> {
        let back = NetNs::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).ctx("setns")?;
        Ok(NsGuard { back })
    }
}

/// Returns the thread to its previous namespace when dropped.
#[derive(Debug)]
pub struct NsGuard {
    back: NetNs,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.back.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Carrying on in the wrong namespace would change the wrong network: stop here.
            eprintln!("netd: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Runs `f` inside `ns`, switching back afterwards.
pub fn within<T>(ns: &NetNs, f: impl FnOnce() -> T) -> Result<T> {
    let _g = ns.enter()?;
    Ok(f())
}
