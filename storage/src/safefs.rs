//! Symlink-safe file system access beneath a directory.
//!
//! Every path taken from untrusted input (a layer tar) is split into normal components
//! (`..` and absolute paths are refused) and walked one component at a time with
//! `openat(O_NOFOLLOW | O_DIRECTORY)`, so a symlink planted by an earlier tar entry can never
//! redirect a write outside the layer directory.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::{Error, IoContext, Result};

/// Splits a tar path into its normal components, refusing `..` and absolute paths.
/// `.` components are dropped; an empty result means the layer root itself.
pub fn normalize(path: &Path) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::UnsafePath { path: path.to_owned(), reason: "contains a `..` component" })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::UnsafePath { path: path.to_owned(), reason: "is an absolute path" })
            }
        }
    }
    Ok(out)
}

/// Opens a directory (read-only, close-on-exec) without following a final symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
}

/// Opens a directory by absolute or relative path (following symlinks: trusted paths only).
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    openat(nix::fcntl::AT_FDCWD, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| format!("opening directory {}", path.display()))
}

/// Walks `components` beneath `root`, never following a symlink, and returns the final
/// directory. With `create`, missing directories are made (mode 0755, like tar does).
pub fn walk_dirs(root: BorrowedFd<'_>, components: &[OsString], create: bool, whole: &Path) -> Result<OwnedFd> {
    let mut cur: OwnedFd = root.try_clone_to_owned().ctx(|| "duplicating a directory descriptor".to_owned())?;
    for c in components {
        let next = match open_dir_at(cur.as_fd(), c) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(cur.as_fd(), c.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e).ctx(|| format!("creating parents of {}", whole.display())),
                }
                open_dir_at(cur.as_fd(), c).map_err(|e| unsafe_or_io(e, whole))?
            }
            Err(e) => return Err(unsafe_or_io(e, whole)),
        };
        cur = next;
    }
    Ok(cur)
}

fn unsafe_or_io(e: Errno, whole: &Path) -> Error {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => Error::UnsafePath {
            path: whole.to_owned(),
            reason: "a parent is a symlink or not a directory (refusing to write through it)",
        },
        e => Error::Io { context: format!("opening parents of {}", whole.display()), source: e.into() },
    }
}

/// What (if anything) is at `name` in `dir`, without following symlinks.
pub fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<SFlag>> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e).ctx(|| format!("stat {name:?}")),
    }
}

/// Removes whatever is at `name` in `dir` (recursively for a directory), never following
/// symlinks.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
    match kind_at(dir, name)? {
        None => Ok(()),
        Some(SFlag::S_IFDIR) => {
            // std's remove_dir_all does not follow symlinks inside the tree; the /proc path
            // pins the parent directory we already resolved safely.
            let p = proc_fd_path(dir).join(name);
            std::fs::remove_dir_all(&p).ctx(|| format!("removing directory {name:?}"))
        }
        Some(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).ctx(|| format!("removing {name:?}")),
    }
}

/// `/proc/self/fd/<fd>`: a path naming an open directory.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Sets an extended attribute on an open file or directory.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> std::io::Result<()> {
    let cname = std::ffi::CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: fd is a valid open descriptor for the duration of the borrow; cname is a valid
    // NUL-terminated string and value points to value.len() readable bytes.
    let rc = unsafe { libc::fsetxattr(fd.as_raw_fd(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads an extended attribute of an open file or directory (None when absent).
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let cname = std::ffi::CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: fd is valid for the borrow; cname is NUL-terminated; buf has buf.len() writable
    // bytes.
    let rc = unsafe { libc::fgetxattr(fd.as_raw_fd(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODATA) {
            return Ok(None);
        }
        return Err(e);
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_refuses_escapes() {
        assert_eq!(normalize(Path::new("./a/b/")).unwrap(), vec!["a", "b"]);
        assert!(normalize(Path::new("a/../../etc")).is_err());
        assert!(normalize(Path::new("/etc/passwd")).is_err());
        assert!(normalize(Path::new(".")).unwrap().is_empty());
    }

    #[test]
    fn walk_refuses_symlink_parent() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/tmp", t.path().join("link")).unwrap();
        let root = open_dir(t.path()).unwrap();
        let comps = normalize(Path::new("link/sub")).unwrap();
        let err = walk_dirs(root.as_fd(), &comps, true, Path::new("link/sub/x")).unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
        let ok = walk_dirs(root.as_fd(), &normalize(Path::new("a/b")).unwrap(), true, Path::new("a/b"));
        assert!(ok.is_ok());
        assert!(t.path().join("a/b").is_dir());
    }
}
