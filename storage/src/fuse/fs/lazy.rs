//! Lazy copy-up of large files: how it works.
//!
//! Opening a large lower file for writing does not copy its data before the open returns.
//! The copy is made in the work directory as for any copy-up (owner, mode, xattrs, times and
//! the origin xattr; the file sized to the lower file's size) and a `fuse-copyup` thread
//! copies the data into it in chunks, from the start, while the opener already writes.
//!
//! Invariants, all under the pending copy's lock ([`Pending::st`]):
//! - `copied`: every byte below it is in the copy (the lower data or a newer write);
//! - `written`: ranges at or above `copied` that users wrote into the copy, sorted and
//!   disjoint; the copier never copies over them;
//! - the copier copies one chunk while holding the lock, so a write is either recorded
//!   before the chunk is copied (and skipped) or lands after it;
//! - a read takes each range from the copy when it is below `copied`, written, or beyond the
//!   lower file's size, and from the lower file otherwise.
//!
//! When the data is complete, the copy gets its modification time (the lower file's, or the
//! time of the last write) and is renamed into the upper layer under the namespace lock,
//! which is when the upper layer shows it: a crash or `kill -9` before that leaves the lower
//! file as it was and the copy in the work directory (removed at the next mount), so only
//! writes that were never synced are lost, as with the kernel's writeback cache. Whoever
//! needs the file in the upper layer first (rename, unlink, link, chmod, truncate, fsync,
//! xattr changes) waits for the data while holding the namespace lock and renames it
//! itself; the copier never waits for that lock while holding the pending copy's lock, so
//! neither waits for the other. The node is kept while its copy is pending (a FORGET does
//! not drop it) so its path is known at the rename. Unmounting and SIGTERM wait for pending
//! copies.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use fuser::Errno;

use super::{copy_range, ioerr, ml, rl, wl, Inodes, Stats};
use crate::fuse::sys;

/// Files at least this large are copied up lazily (`FUSE_OVERLAY_LAZY_COPYUP` sets another
/// size in bytes; 0 turns it off).
pub(super) const LAZY_MIN: u64 = 16 << 20;
/// The copier copies this much per step (the longest a write waits for it).
const CHUNK: u64 = 2 << 20;

/// One file's copy-up in progress.
pub(super) struct Pending {
    /// The copy in the work directory, read-write.
    pub(super) fd: OwnedFd,
    /// The lower file, read-only.
    pub(super) src: OwnedFd,
    /// The copy's name in the work directory.
    tmp: CString,
    /// The lower file's size: the copier copies `0..size`.
    pub(super) size: u64,
    pub(super) st: Mutex<PState>,
    cv: Condvar,
    /// Requests waiting for `st`: the copier lets them in between chunks.
    waiting: AtomicUsize,
}

pub(super) struct PState {
    pub(super) copied: u64,
    pub(super) written: Vec<(u64, u64)>,
    /// The modification time the file shows (the copier's writes move the real one).
    pub(super) mtime: libc::timespec,
    /// The data copy's end: `None` while copying.
    data: Option<Result<(), i32>>,
    /// Renamed into the upper layer, or given up (`failed`).
    pub(super) finished: bool,
    pub(super) failed: bool,
}

impl Pending {
    pub(super) fn new(fd: OwnedFd, src: OwnedFd, tmp: CString, size: u64, mtime: libc::timespec) -> Pending {
        Pending {
            fd,
            src,
            tmp,
            size,
            st: Mutex::new(PState {
                copied: 0,
                written: Vec::new(),
                mtime,
                data: None,
                finished: false,
                failed: false,
            }),
            cv: Condvar::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The state lock for a request: the copier yields it to requests between chunks (a
    /// plain mutex would let the copier take it again at once, for the whole copy).
    pub(super) fn lock(&self) -> MutexGuard<'_, PState> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let g = ml(&self.st);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        g
    }
}

impl PState {
    /// Before a user's write of `off..end` into the copy (under the lock, held through the
    /// write): the copier must not copy the lower data over it.
    pub(super) fn will_write(&mut self, size: u64, off: u64, end: u64) {
        if self.finished {
            return;
        }
        let a = off.max(self.copied);
        let b = end.min(size);
        if a < b {
            add_range(&mut self.written, a, b);
        }
        self.mtime = now();
    }

    /// Where the bytes from `pos` (below `end`) come from: `(from the lower file, up to)`.
    pub(super) fn source(&self, size: u64, pos: u64, end: u64) -> (bool, u64) {
        if self.finished || pos < self.copied {
            return (false, if self.finished { end } else { end.min(self.copied) });
        }
        if pos >= size {
            return (false, end);
        }
        for &(a, b) in &self.written {
            if b <= pos {
                continue;
            }
            if a <= pos {
                return (false, end.min(b));
            }
            return (true, end.min(a));
        }
        (true, end.min(size))
    }
}

/// Adds `a..b` to sorted disjoint ranges `v`, merging what touches it.
pub(super) fn add_range(v: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    let (mut a, mut b) = (a, b);
    let mut out = Vec::with_capacity(v.len() + 1);
    let mut placed = false;
    for &(x, y) in v.iter() {
        if y < a {
            out.push((x, y));
        } else if x > b {
            if !placed {
                out.push((a, b));
                placed = true;
            }
            out.push((x, y));
        } else {
            a = a.min(x);
            b = b.max(y);
        }
    }
    if !placed {
        out.push((a, b));
    }
    *v = out;
}

pub(super) fn now() -> libc::timespec {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long }
}

/// What the copiers share with the file system: the node table and namespace lock, the
/// upper layer and work directory, and the count of copies pending.
pub(super) struct Lazy {
    pub(super) inodes: Arc<RwLock<Inodes>>,
    pub(super) ns: Arc<Mutex<()>>,
    upper: OwnedFd,
    upper_dev: u64,
    work: OwnedFd,
    stats: Arc<Stats>,
    active: Mutex<usize>,
    idle: Condvar,
    /// Files at least this large are copied lazily; `u64::MAX`: never.
    pub(super) min: u64,
}

impl Lazy {
    pub(super) fn new(
        inodes: Arc<RwLock<Inodes>>,
        ns: Arc<Mutex<()>>,
        upper: OwnedFd,
        upper_dev: u64,
        work: OwnedFd,
        stats: Arc<Stats>,
    ) -> Lazy {
        let min = match std::env::var("FUSE_OVERLAY_LAZY_COPYUP").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(0) => u64::MAX,
            Some(n) => n,
            None => LAZY_MIN,
        };
        Lazy { inodes, ns, upper, upper_dev, work, stats, active: Mutex::new(0), idle: Condvar::new(), min }
    }

    /// Starts the copier of node `id`'s pending copy `p` (already recorded in the node).
    pub(super) fn start(self: &Arc<Self>, id: u64, p: Arc<Pending>) {
        *ml(&self.active) += 1;
        let lazy = self.clone();
        let p2 = p.clone();
        let spawned = std::thread::Builder::new().name("fuse-copyup".into()).spawn(move || lazy.copier(id, p2));
        if let Err(e) = spawned {
            // No thread: copy now, in this request (the namespace lock is not held here).
            tracing::warn!("copy-up thread not started ({e}); copying in the request");
            self.copier(id, p);
        }
    }

    /// The copier: the data chunk by chunk, then the rename (unless a request did it).
    fn copier(&self, id: u64, p: Arc<Pending>) {
        // Not on the CPU of the queue thread that started it (io_uring queue threads are
        // pinned): the copy runs beside the writer.
        let mut all = nix::sched::CpuSet::new();
        for c in 0..nix::sched::CpuSet::count() {
            let _ = all.set(c);
        }
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all);
        let mut pos = 0u64;
        let res = loop {
            if pos >= p.size {
                break Ok(());
            }
            let mut st = ml(&p.st);
            let end = (pos + CHUNK).min(p.size);
            let mut a = pos;
            let mut r = Ok(());
            for &(x, y) in &st.written {
                if y <= a {
                    continue;
                }
                if x >= end {
                    break;
                }
                if x > a {
                    r = copy_range(p.src.as_fd(), p.fd.as_fd(), a, x);
                    if r.is_err() {
                        break;
                    }
                }
                a = a.max(y);
                if a >= end {
                    break;
                }
            }
            if r.is_ok() && a < end {
                r = copy_range(p.src.as_fd(), p.fd.as_fd(), a, end);
            }
            if let Err(e) = r {
                break Err(e.raw_os_error().unwrap_or(libc::EIO));
            }
            st.copied = end;
            pos = end;
            drop(st);
            while p.waiting.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
        };
        if let Err(e) = res {
            tracing::warn!("lazy copy-up of node {id} failed: {}", std::io::Error::from_raw_os_error(e));
        }
        {
            let mut st = ml(&p.st);
            st.data = Some(res);
            st.written.clear();
        }
        p.cv.notify_all();
        let _ns = ml(&self.ns);
        let _ = self.finish(id, &p);
    }

    /// Waits for `p`'s data and moves the copy into the upper layer (once). Caller holds the
    /// namespace lock.
    pub(super) fn finish(&self, id: u64, p: &Pending) -> Result<(), Errno> {
        let mut st = ml(&p.st);
        while st.data.is_none() {
            st = p.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.finished {
            return if st.failed { Err(Errno::EIO) } else { Ok(()) };
        }
        st.finished = true;
        let data = st.data.unwrap_or(Ok(()));
        let res = (|| -> Result<libc::stat, Errno> {
            data.map_err(Errno::from_i32)?;
            let path = rl(&self.inodes).path(id).ok_or(Errno::ENOENT)?;
            let omit = libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT };
            sys::futimens(p.fd.as_fd(), &[omit, st.mtime]).map_err(ioerr)?;
            sys::renameat2(self.work.as_fd(), &p.tmp, self.upper.as_fd(), &path, 0).map_err(ioerr)?;
            sys::fstat(p.fd.as_fd()).map_err(ioerr)
        })();
        if let Err(e) = &res {
            tracing::warn!("lazy copy-up of node {id} not completed: {e:?}; the lower file stays");
            st.failed = true;
            let _ = sys::unlinkat(self.work.as_fd(), &p.tmp, false);
        }
        drop(st);
        {
            let mut g = wl(&self.inodes);
            if let Some(n) = g.nodes.get_mut(&id) {
                n.pending = None;
                if let Ok(s) = &res {
                    n.layer = 0;
                    n.key = (self.upper_dev, s.st_ino);
                }
            }
            // A node the kernel forgot while its copy was pending goes now.
            g.forget(id, 0);
        }
        if res.is_ok() {
            self.stats.copy_ups.fetch_add(1, Ordering::Relaxed);
        }
        let mut a = ml(&self.active);
        *a = a.saturating_sub(1);
        self.idle.notify_all();
        res.map(|_| ())
    }

    /// Waits until no copy is pending (unmount, SIGTERM).
    pub(super) fn wait_idle(&self) {
        let mut a = ml(&self.active);
        while *a > 0 {
            a = self.idle.wait(a).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A handle to wait for pending lazy copy-ups (see [`super::Overlay::copies`]).
pub struct Copies(pub(super) Option<Arc<Lazy>>);

impl Copies {
    /// Returns when no lazy copy-up is pending.
    pub fn wait(&self) {
        if let Some(l) = &self.0 {
            l.wait_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        let mut v = Vec::new();
        add_range(&mut v, 10, 20);
        add_range(&mut v, 30, 40);
        assert_eq!(v, [(10, 20), (30, 40)]);
        add_range(&mut v, 0, 5);
        assert_eq!(v, [(0, 5), (10, 20), (30, 40)]);
        add_range(&mut v, 20, 30);
        assert_eq!(v, [(0, 5), (10, 40)]);
        add_range(&mut v, 3, 12);
        assert_eq!(v, [(0, 40)]);
        add_range(&mut v, 50, 60);
        add_range(&mut v, 45, 46);
        assert_eq!(v, [(0, 40), (45, 46), (50, 60)]);
    }

    #[test]
    fn read_sources() {
        let mtime = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let mut s = PState { copied: 100, written: vec![], mtime, data: None, finished: false, failed: false };
        // Below `copied`: the copy; then the lower file up to its size; beyond: the copy.
        assert_eq!(s.source(1000, 0, 500), (false, 100));
        assert_eq!(s.source(1000, 100, 500), (true, 500));
        assert_eq!(s.source(1000, 900, 1200), (true, 1000));
        assert_eq!(s.source(1000, 1000, 1200), (false, 1200));
        s.will_write(1000, 300, 400);
        assert_eq!(s.written, [(300, 400)]);
        assert_eq!(s.source(1000, 100, 500), (true, 300));
        assert_eq!(s.source(1000, 300, 500), (false, 400));
        assert_eq!(s.source(1000, 400, 500), (true, 500));
        // A write below `copied` or beyond the size records nothing.
        s.will_write(1000, 0, 50);
        s.will_write(1000, 1000, 1100);
        assert_eq!(s.written, [(300, 400)]);
        s.finished = true;
        assert_eq!(s.source(1000, 100, 500), (false, 500));
    }
}
