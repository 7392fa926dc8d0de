//! Thin wrappers over the `*at` system calls and xattr calls the overlay needs. Every
//! `unsafe` block of the file system lives here; callers get `io::Result`s.
//!
//! Paths given to the `*at` wrappers are relative to a layer's root descriptor and may have
//! several components. They are resolved safely: the parent directory is opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` (or, where
//! openat2 is missing, one `O_NOFOLLOW` component at a time), and the call then acts on the
//! last component inside it without following a symlink there. A directory of a layer
//! replaced by a symlink while mounted is "not a directory", never a way out of the layer.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Builds a C string; names with a NUL byte cannot exist, so they become EINVAL.
pub fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `parent/name` (or just `name` when the parent is the root).
pub fn join(parent: &CStr, name: &OsStr) -> io::Result<CString> {
    let p = parent.to_bytes();
    if p == b"." {
        return cstr(name.as_bytes());
    }
    let mut v = Vec::with_capacity(p.len() + 1 + name.len());
    v.extend_from_slice(p);
    v.push(b'/');
    v.extend_from_slice(name.as_bytes());
    cstr(&v)
}

/// Whether openat2(2) is missing (old kernel or a seccomp filter): walk by components then.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Resolves by components only, as on kernels without openat2 (a test hook:
/// `FUSE_OVERLAY_NO_OPENAT2`).
pub fn disable_openat2() {
    NO_OPENAT2.store(true, Ordering::Relaxed);
}

/// Opens the directory `path` (relative, several components) beneath `root`, following no
/// symlink. A symlink or `..` on the way is ENOTDIR/ENOENT.
fn open_dir_beneath(root: BorrowedFd<'_>, path: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        // SAFETY: an all-zero open_how is valid (no flags, no resolve bits).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: `path` is NUL-terminated and `how` is a valid open_how of the given size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            // SAFETY: the kernel just returned this descriptor and nobody else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            Some(libc::ELOOP) => return Err(err(libc::ENOTDIR)),
            Some(libc::EXDEV) => return Err(err(libc::ENOENT)),
            _ => return Err(e),
        }
    }
    let mut cur: Option<OwnedFd> = None;
    for comp in path.to_bytes().split(|b| *b == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." {
            return Err(err(libc::ENOENT));
        }
        let c = cstr(comp)?;
        let dir = cur.as_ref().map(|f| f.as_raw_fd()).unwrap_or(root.as_raw_fd());
        // SAFETY: `c` is NUL-terminated.
        let fd = check(unsafe { libc::openat(dir, c.as_ptr(), flags) }).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                err(libc::ENOTDIR)
            } else {
                e
            }
        })?;
        // SAFETY: the kernel just returned this descriptor and nobody else owns it.
        cur = Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    cur.ok_or_else(|| err(libc::ENOENT))
}

/// Opens the directory `path` (`O_PATH`, relative, one or more components) beneath `root`
/// in one step, following no symlink: a symlink anywhere, the last component included, is
/// ENOTDIR.
pub fn open_dir(root: BorrowedFd<'_>, path: &CStr) -> io::Result<OwnedFd> {
    open_dir_beneath(root, path)
}

/// Splits `path` into its safely opened parent directory (`None`: `dir` itself) and its
/// last component.
fn split<'p>(dir: BorrowedFd<'_>, path: &'p CStr) -> io::Result<(Option<OwnedFd>, &'p CStr)> {
    let b = path.to_bytes();
    let Some(i) = b.iter().rposition(|c| *c == b'/') else { return Ok((None, path)) };
    if i == 0 || i + 1 == b.len() {
        return Err(err(libc::ENOENT));
    }
    let parent = open_dir_beneath(dir, &cstr(&b[..i])?)?;
    let name = CStr::from_bytes_with_nul(&path.to_bytes_with_nul()[i + 1..]).map_err(|_| err(libc::EINVAL))?;
    Ok((Some(parent), name))
}

/// Runs `f` with the raw parent directory and last component of `path` beneath `dir`.
fn at<T>(dir: BorrowedFd<'_>, path: &CStr, f: impl FnOnce(RawFd, &CStr) -> io::Result<T>) -> io::Result<T> {
    let (parent, name) = split(dir, path)?;
    f(parent.as_ref().map(|p| p.as_raw_fd()).unwrap_or(dir.as_raw_fd()), name)
}

/// A path through `/proc/self/fd` naming an object beneath a layer without following any
/// symlink of the layer (for the path-only xattr calls); keeps its parent open.
pub struct ProcPath {
    _parent: Option<OwnedFd>,
    path: CString,
}

impl std::ops::Deref for ProcPath {
    type Target = CStr;
    fn deref(&self) -> &CStr {
        &self.path
    }
}

/// The [`ProcPath`] of `path` beneath `dir` (`.` is `dir` itself).
pub fn proc_path(dir: BorrowedFd<'_>, path: &CStr) -> io::Result<ProcPath> {
    let (parent, name) = split(dir, path)?;
    let fd = parent.as_ref().map(|p| p.as_raw_fd()).unwrap_or(dir.as_raw_fd());
    let mut v = format!("/proc/self/fd/{fd}/").into_bytes();
    v.extend_from_slice(name.to_bytes());
    Ok(ProcPath { _parent: parent, path: cstr(&v)? })
}

/// `lstat` relative to `dir`.
pub fn fstatat(dir: BorrowedFd<'_>, path: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is valid for writes of one `stat`.
    at(dir, path, |d, n| check(unsafe { libc::fstatat(d, n.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) }))?;
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `fstat` of an open file.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for writes of one `stat`.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `openat(2)`; the result is close-on-exec.
pub fn openat(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let fd = at(dir, path, |d, n| {
        // SAFETY: `n` is NUL-terminated; the mode argument is read only with O_CREAT/O_TMPFILE.
        check(unsafe { libc::openat(d, n.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })
    })?;
    // SAFETY: the kernel just returned this descriptor and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open(2)` of an absolute path; the result is close-on-exec.
pub fn open_abs(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; no mode is needed without O_CREAT.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: the kernel just returned this descriptor and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat(2)`.
pub fn mkdirat(dir: BorrowedFd<'_>, path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated.
    at(dir, path, |d, n| check(unsafe { libc::mkdirat(d, n.as_ptr(), mode) })).map(drop)
}

/// `mknodat(2)`.
pub fn mknodat(dir: BorrowedFd<'_>, path: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated.
    at(dir, path, |d, n| check(unsafe { libc::mknodat(d, n.as_ptr(), mode, dev) })).map(drop)
}

/// `symlinkat(2)`.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, path: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated.
    at(dir, path, |d, n| check(unsafe { libc::symlinkat(target.as_ptr(), d, n.as_ptr()) })).map(drop)
}

/// `readlinkat(2)`.
pub fn readlinkat(dir: BorrowedFd<'_>, path: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `path` is NUL-terminated.
    let n = at(dir, path, |d, name| {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `name` is NUL-terminated.
        let n = unsafe { libc::readlinkat(d, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n)
        }
    })?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// `linkat(2)` without following symlinks.
pub fn linkat(odir: BorrowedFd<'_>, old: &CStr, ndir: BorrowedFd<'_>, new: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated.
    at(odir, old, |od, o| at(ndir, new, |nd, n| check(unsafe { libc::linkat(od, o.as_ptr(), nd, n.as_ptr(), 0) })))
        .map(drop)
}

/// `unlinkat(2)`; `dir_flag` removes a directory.
pub fn unlinkat(dir: BorrowedFd<'_>, path: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `path` is NUL-terminated.
    at(dir, path, |d, n| check(unsafe { libc::unlinkat(d, n.as_ptr(), flags) })).map(drop)
}

/// `renameat2(2)`.
pub fn renameat2(odir: BorrowedFd<'_>, old: &CStr, ndir: BorrowedFd<'_>, new: &CStr, flags: u32) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated.
    at(odir, old, |od, o| {
        // SAFETY: both paths are NUL-terminated.
        at(ndir, new, |nd, n| check(unsafe { libc::renameat2(od, o.as_ptr(), nd, n.as_ptr(), flags) }))
    })
    .map(drop)
}

/// `name_to_handle_at(2)` of `path` beneath `dir` (a final symlink is not followed without
/// AT_SYMLINK_FOLLOW): the
/// handle type and bytes (ENOTSUP/EOPNOTSUPP where the file system has no file handles).
pub fn file_handle(dir: BorrowedFd<'_>, path: &CStr) -> io::Result<(i32, Vec<u8>)> {
    /// `struct file_handle` with room for MAX_HANDLE_SZ bytes.
    #[repr(C)]
    struct Fh {
        bytes: u32,
        kind: i32,
        data: [u8; 128],
    }
    let mut fh = Fh { bytes: 128, kind: 0, data: [0; 128] };
    let mut mount_id: libc::c_int = 0;
    at(dir, path, |d, n| {
        // SAFETY: `n` is NUL-terminated, `fh` is a file_handle with `bytes` bytes of room
        // and `mount_id` is valid for writes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                d,
                n.as_ptr(),
                &mut fh as *mut Fh,
                &mut mount_id as *mut libc::c_int,
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    })?;
    let len = (fh.bytes as usize).min(fh.data.len());
    Ok((fh.kind, fh.data[..len].to_vec()))
}

/// `fchownat(2)` without following symlinks.
pub fn lchownat(dir: BorrowedFd<'_>, path: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated.
    at(dir, path, |d, n| check(unsafe { libc::fchownat(d, n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })).map(drop)
}

/// `fchmodat2(2)` without following a symlink (plain `fchmodat` on kernels before 6.6;
/// never called on symlinks).
pub fn fchmodat(dir: BorrowedFd<'_>, path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    at(dir, path, |d, n| {
        // SAFETY: `n` is NUL-terminated.
        let r = unsafe { libc::syscall(libc::SYS_fchmodat2, d, n.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) {
            // SAFETY: `n` is NUL-terminated.
            return check(unsafe { libc::fchmodat(d, n.as_ptr(), mode, 0) }).map(drop);
        }
        Err(e)
    })
}

/// `fchmod(2)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: plain system call on a borrowed descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// `fchown(2)`.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain system call on a borrowed descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// `futimens(2)`.
pub fn futimens(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: `times` points at two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// `utimensat(2)` without following symlinks.
pub fn utimensat(dir: BorrowedFd<'_>, path: &CStr, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and `times` points at two timespecs.
    at(dir, path, |d, n| check(unsafe { libc::utimensat(d, n.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }))
        .map(drop)
}

/// `ftruncate(2)`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    // SAFETY: plain system call on a borrowed descriptor.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) }).map(drop)
}

/// `pread(2)` into `buf`; returns the bytes read.
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `pwrite(2)`; returns the bytes written.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off as libc::off_t) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `fsync(2)` or `fdatasync(2)`.
pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: plain system calls on a borrowed descriptor.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

/// `fallocate(2)`.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain system call on a borrowed descriptor.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) }).map(drop)
}

/// `lseek(2)`.
pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain system call on a borrowed descriptor.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `fstatvfs(2)`.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` is valid for writes of one `statvfs`.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// One `copy_file_range(2)` call; returns the bytes copied (0 at end of file).
pub fn copy_file_range(
    src: BorrowedFd<'_>,
    soff: &mut i64,
    dst: BorrowedFd<'_>,
    doff: &mut i64,
    len: usize,
) -> io::Result<usize> {
    // SAFETY: the offsets are valid `loff_t` pointers for the duration of the call.
    let n = unsafe { libc::copy_file_range(src.as_raw_fd(), soff, dst.as_raw_fd(), doff, len, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Converts a kernel "size or -1" result of an xattr call.
fn xret(n: libc::ssize_t) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Where an xattr call goes: a path (not following a final symlink) or an open file.
#[derive(Clone, Copy)]
pub enum XTarget<'a> {
    /// An absolute path.
    Path(&'a CStr),
    /// An open descriptor (not O_PATH).
    Fd(RawFd),
}

/// `lgetxattr`/`fgetxattr` into a buffer of `size` bytes (0 = ask for the size).
pub fn getxattr(t: XTarget<'_>, name: &CStr, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 { std::ptr::null_mut() } else { buf.as_mut_ptr().cast() };
    // SAFETY: `ptr` is null (size query) or valid for `size` bytes; strings are NUL-terminated.
    let n = xret(unsafe {
        match t {
            XTarget::Path(p) => libc::lgetxattr(p.as_ptr(), name.as_ptr(), ptr, size),
            XTarget::Fd(fd) => libc::fgetxattr(fd, name.as_ptr(), ptr, size),
        }
    })?;
    if size == 0 {
        return Ok(vec![0; n]);
    }
    buf.truncate(n);
    Ok(buf)
}

/// Reads a whole xattr value, growing the buffer as needed. `Ok(None)` when absent.
pub fn getxattr_full(t: XTarget<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut size = 256;
    loop {
        match getxattr(t, name, size) {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && size < 1 << 20 => size *= 8,
            Err(e) => return Err(e),
        }
    }
}

/// `lsetxattr`/`fsetxattr`.
pub fn setxattr(t: XTarget<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    // SAFETY: `value` is valid for reads of its length; strings are NUL-terminated.
    check(unsafe {
        match t {
            XTarget::Path(p) => libc::lsetxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), flags),
            XTarget::Fd(fd) => libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), flags),
        }
    })
    .map(drop)
}

/// `lremovexattr`.
pub fn removexattr(p: &CStr, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::lremovexattr(p.as_ptr(), name.as_ptr()) }).map(drop)
}

/// `llistxattr`: the NUL-separated list of names.
pub fn listxattr(p: &CStr) -> io::Result<Vec<u8>> {
    loop {
        // SAFETY: a null buffer with size 0 asks for the needed size.
        let n = xret(unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) })?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        // SAFETY: `buf` is valid for writes of `n` bytes.
        match xret(unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), n) }) {
            Ok(m) => {
                buf.truncate(m);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The mode bits of a stat, as the `S_IFMT` part.
pub fn fmt(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// Whether a stat is an overlay whiteout (a 0/0 character device).
pub fn is_whiteout(st: &libc::stat) -> bool {
    fmt(st) == libc::S_IFCHR && st.st_rdev == 0
}

/// An errno as an `io::Error`.
pub fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The errno of an error (EIO when it has none).
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}
