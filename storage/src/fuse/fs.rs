//! The overlay file system: how it works.
//!
//! Layers are directories opened once (`O_PATH`): index 0 is the upper layer when there is
//! one, then the lower layers, top first. Every object in the merged view is a *node*, named
//! by its parent node and a name; a node's path relative to any layer root is the chain of
//! names up to the root, and every system call goes through the layer's descriptor with that
//! relative path (`*at` calls), so nothing depends on the process's working directory.
//!
//! A node remembers the topmost layer holding it (`layer`) and, for directories, the lowest
//! layer merged into it (`bottom`): lookups and listings search `layer..=bottom` of the
//! parent. Deletions below are recorded in the layers in all the forms fuse-overlayfs and
//! OCI layers use: a 0/0 character device named like the entry, an empty `.wh.NAME` file,
//! and for whole directories the opaque xattrs (`trusted.overlay.opaque`,
//! `user.overlay.opaque`, `user.fuseoverlayfs.opaque`) or a `.wh..wh..opq` file inside.
//! New whiteouts are 0/0 devices where mknod is allowed, else `.wh.NAME` files.
//!
//! FUSE node ids are the inode numbers users see (fuser replies with `attr.ino` as the node
//! id): the real inode number when all layers share one device, else the layer's device
//! index in the top bits; a number already taken by another object gets one from a counter.
//!
//! Any change to a lower object first copies it up: a temporary in `<workdir>/work` gets the
//! data (`copy_file_range`, holes kept), owner, mode, xattrs and times, then is renamed into
//! the upper layer, so a crash never leaves a partial file visible. Parent directories are
//! copied up first. Namespace changes run under one lock; reads and writes do not take it.
//! Large regular files opened for writing are copied lazily, in the background (`lazy`).
//!
//! Opened files are served by FUSE passthrough when the kernel grants it (root in the initial
//! user namespace, kernel >= 6.9): the kernel then reads and writes the layer file directly.
//! Otherwise requests are served with `pread`/`pwrite`, with the kernel's writeback cache.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use super::options::{Options, Xino};
use super::sys::{self, XTarget};

mod lazy;
pub use lazy::Copies;
use lazy::{Lazy, Pending};

const ROOT: u64 = 1;
/// Files smaller than this are opened through the page cache, not passthrough.
const PASSTHROUGH_MIN: u64 = 256 * 1024;
const WH_PREFIX: &[u8] = b".wh.";
const OPQ_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTRS: [&CStr; 3] = [c"trusted.overlay.opaque", c"user.overlay.opaque", c"user.fuseoverlayfs.opaque"];
/// Xattr name prefixes that belong to the overlay, hidden from users and never copied up.
const PRIVATE_XATTRS: &[&[u8]] =
    &[b"trusted.overlay.", b"user.overlay.", b"user.fuseoverlayfs.", b"security.fuseoverlayfs.", b"user.containers."];

const CAPS_XATTR: &[u8] = b"security.capability";
/// Written on copy-up (as fuse-overlayfs): the copied object's path in the lower layer.
const ORIGIN_XATTR: &CStr = c"user.fuseoverlayfs.origin";

/// POSIX ACL xattrs: their entries name users and groups, mapped like owners.
fn is_acl_xattr(name: &[u8]) -> bool {
    name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
}

/// POSIX ACL entry tags (`e_tag` of `posix_acl_xattr_entry`).
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// Whether `v` is a POSIX ACL xattr value we can read: `posix_acl_xattr_header` (version 2),
/// then 8-byte entries (tag u16, perm u16, id u32, little endian).
fn acl_valid(v: &[u8]) -> bool {
    v.len() >= 4 && (v.len() - 4).is_multiple_of(8) && v[..4] == 2u32.to_le_bytes()
}

/// Maps the user and group ids inside a POSIX ACL xattr value (`posix_acl_xattr_header`,
/// version 2, then 8-byte entries: tag u16, perm u16, id u32, little endian). `None` when
/// the value is malformed or an id has no mapping.
fn map_acl(v: &[u8], uid: impl Fn(u32) -> Option<u32>, gid: impl Fn(u32) -> Option<u32>) -> Option<Vec<u8>> {
    if !acl_valid(v) {
        return None;
    }
    let mut out = v.to_vec();
    for e in out[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let new = match tag {
            ACL_USER => uid(id)?,
            ACL_GROUP => gid(id)?,
            _ => continue,
        };
        e[4..].copy_from_slice(&new.to_le_bytes());
    }
    Some(out)
}

/// A POSIX access ACL value after `chmod(mode)`, as the kernel's `posix_acl_chmod` makes it:
/// the owner and other entries take the owner and other bits, the mask (or, without one,
/// the owning group entry) the group bits. `None` when the value is malformed.
fn acl_chmod(v: &[u8], mode: u32) -> Option<Vec<u8>> {
    if !acl_valid(v) {
        return None;
    }
    let mut out = v.to_vec();
    let has_mask = out[4..].chunks_exact(8).any(|e| u16::from_le_bytes([e[0], e[1]]) == ACL_MASK);
    for e in out[4..].chunks_exact_mut(8) {
        let perm = match u16::from_le_bytes([e[0], e[1]]) {
            ACL_USER_OBJ => (mode >> 6) & 7,
            ACL_OTHER => mode & 7,
            ACL_MASK => (mode >> 3) & 7,
            ACL_GROUP_OBJ if !has_mask => (mode >> 3) & 7,
            _ => continue,
        };
        e[2..4].copy_from_slice(&(perm as u16).to_le_bytes());
    }
    Some(out)
}

/// The permission bits an access ACL gives the mode (as `posix_acl_equiv_mode`): owner and
/// other from their entries, group from the mask (or the owning group entry without one).
fn acl_mode(v: &[u8]) -> Option<u32> {
    if !acl_valid(v) {
        return None;
    }
    let (mut user, mut group, mut mask, mut other) = (0, 0, None, 0);
    for e in v[4..].chunks_exact(8) {
        let perm = u32::from(u16::from_le_bytes([e[2], e[3]]) & 7);
        match u16::from_le_bytes([e[0], e[1]]) {
            ACL_USER_OBJ => user = perm,
            ACL_GROUP_OBJ => group = perm,
            ACL_MASK => mask = Some(perm),
            ACL_OTHER => other = perm,
            _ => {}
        }
    }
    Some(user << 6 | mask.unwrap_or(group) << 3 | other)
}

fn is_private_xattr(name: &[u8]) -> bool {
    PRIVATE_XATTRS.iter().any(|p| name.starts_with(p))
}

/// Where a layer keeps the ownership and mode it cannot set for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatMode {
    /// Real owner and mode.
    Real,
    /// `security.fuseoverlayfs.override_stat`.
    Privileged,
    /// `user.containers.override_stat`.
    Containers,
    /// `user.fuseoverlayfs.override_stat`.
    User,
}

impl StatMode {
    fn xattr(self) -> Option<&'static CStr> {
        match self {
            StatMode::Real => None,
            StatMode::Privileged => Some(c"security.fuseoverlayfs.override_stat"),
            StatMode::Containers => Some(c"user.containers.override_stat"),
            StatMode::User => Some(c"user.fuseoverlayfs.override_stat"),
        }
    }
}

/// A parsed override-stat value: `UID:GID:MODE[:TYPE]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// File type and device number when TYPE is given.
    pub kind: Option<(u32, u64)>,
}

impl Override {
    /// `self` with a SETATTR's owner (`u32::MAX` = that id unchanged) and mode applied.
    fn with(mut self, owner: Option<(u32, u32)>, mode: Option<u32>) -> Override {
        if let Some((u, g)) = owner {
            if u != u32::MAX {
                self.uid = u;
            }
            if g != u32::MAX {
                self.gid = g;
            }
        }
        if let Some(m) = mode {
            self.mode = m & 0o7777;
        }
        self
    }

    /// Parses the xattr value (the containers/storage and fuse-overlayfs C format).
    pub fn parse(v: &[u8]) -> Option<Override> {
        let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
        let mut it = s.splitn(4, ':');
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        let mode = u32::from_str_radix(it.next()?, 8).ok()? & 0o7777;
        let kind = match it.next() {
            None => None,
            Some(t) => {
                let dev = |rest: &str| -> Option<u64> {
                    let mut p = rest.split(['-', ':']);
                    let maj: u32 = p.next()?.parse().ok()?;
                    let min: u32 = p.next()?.parse().ok()?;
                    Some(libc::makedev(maj, min))
                };
                match t {
                    "dir" => Some((libc::S_IFDIR, 0)),
                    "file" => Some((libc::S_IFREG, 0)),
                    "symlink" => Some((libc::S_IFLNK, 0)),
                    "pipe" => Some((libc::S_IFIFO, 0)),
                    "socket" => Some((libc::S_IFSOCK, 0)),
                    t if t.starts_with("block-") => Some((libc::S_IFBLK, dev(&t[6..])?)),
                    t if t.starts_with("char-") => Some((libc::S_IFCHR, dev(&t[5..])?)),
                    _ => None,
                }
            }
        };
        Some(Override { uid, gid, mode, kind })
    }

    /// Formats the value (`UID:GID:MODE:TYPE`).
    pub fn format(&self, fmt: u32, rdev: u64) -> String {
        let t = match fmt {
            libc::S_IFDIR => "dir".to_owned(),
            libc::S_IFLNK => "symlink".to_owned(),
            libc::S_IFIFO => "pipe".to_owned(),
            libc::S_IFSOCK => "socket".to_owned(),
            libc::S_IFBLK => format!("block-{}-{}", libc::major(rdev), libc::minor(rdev)),
            libc::S_IFCHR => format!("char-{}-{}", libc::major(rdev), libc::minor(rdev)),
            _ => "file".to_owned(),
        };
        format!("{}:{}:0{:o}:{t}", self.uid, self.gid, self.mode & 0o7777)
    }
}

struct Layer {
    fd: OwnedFd,
    dev_idx: u64,
    stat_mode: StatMode,
}

impl Layer {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A path for the path-only xattr calls naming `rel` in this layer, resolved safely.
    fn abs(&self, rel: &CStr) -> io::Result<sys::ProcPath> {
        sys::proc_path(self.fd(), rel)
    }
}

struct Backing {
    id: Arc<BackingId>,
    opens: usize,
    layer: usize,
}

struct Node {
    names: Vec<(u64, OsString)>,
    layer: usize,
    bottom: usize,
    fmt: u32,
    key: (u64, u64),
    lookups: u64,
    backing: Option<Backing>,
    /// Opens served through the page cache while passthrough is on (the kernel does not mix
    /// the two modes on one inode).
    cached_opens: usize,
    /// Known to have no `security.capability` xattr (a file we just created and nobody set
    /// one on since): the kernel's GETXATTR of it before each write and chown is answered
    /// without resolving the path.
    no_caps: bool,
    /// A lazy copy-up in progress (see `lazy`): the node is still the lower file's.
    pending: Option<Arc<Pending>>,
}

#[derive(Default)]
struct Inodes {
    nodes: HashMap<u64, Node>,
    children: HashMap<(u64, OsString), u64>,
    fallback: HashMap<(u64, u64), u64>,
    next_fallback: u64,
}

impl Inodes {
    fn path(&self, id: u64) -> Option<CString> {
        if id == ROOT {
            return Some(c".".to_owned());
        }
        let mut parts: Vec<&OsStr> = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            let (p, name) = self.nodes.get(&cur)?.names.first()?;
            parts.push(name);
            cur = *p;
            if parts.len() > 4096 {
                return None;
            }
        }
        let mut v = Vec::new();
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 {
                v.push(b'/');
            }
            v.extend_from_slice(p.as_bytes());
        }
        CString::new(v).ok()
    }

    fn drop_alias(&mut self, parent: u64, name: &OsStr) {
        if let Some(id) = self.children.remove(&(parent, name.to_owned())) {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.names.retain(|(p, nm)| !(*p == parent && nm == name));
            }
        }
    }

    fn forget(&mut self, id: u64, n: u64) {
        if id == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&id) else { return };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 || node.pending.is_some() {
            return;
        }
        if let Some(node) = self.nodes.remove(&id) {
            for (p, name) in node.names {
                if self.children.get(&(p, name.clone())) == Some(&id) {
                    self.children.remove(&(p, name));
                }
            }
            if self.fallback.get(&node.key) == Some(&id) {
                self.fallback.remove(&node.key);
            }
        }
    }
}

/// A snapshot of a node: its path and layer range.
struct Info {
    path: CString,
    layer: usize,
    bottom: usize,
    fmt: u32,
}

/// What one layer has for a name.
enum Probe {
    /// An object (maybe a whiteout device).
    Found(libc::stat),
    /// A `.wh.NAME` file.
    Whiteout,
    /// Nothing.
    Absent,
}

/// What an object's number is made from: an inode number in a layer, or the hash of a
/// file handle (`xino=auto|on` over several file systems).
struct NumSrc {
    layer: usize,
    ino: u64,
    hash: Option<u64>,
}

/// An object named by its (open) directory in a layer and its name there.
#[derive(Clone, Copy)]
struct At<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
}

/// Where a name was found.
struct Found {
    layer: usize,
    st: libc::stat,
    bottom: usize,
}

struct DirEnt {
    name: OsString,
    layer: usize,
    fmt: u32,
    ino: u64,
}

/// An object copied into the work directory (see `Overlay::make_copy`).
struct Made {
    tmp: CString,
    tmp_abs: CString,
    /// A regular file's copy and the lower file.
    file: Option<OwnedFd>,
    src: Option<OwnedFd>,
    fmt: u32,
    /// The lower object's status.
    st: libc::stat,
}

struct FileH {
    fd: OwnedFd,
    node: u64,
    backed: bool,
    /// Opened while the node's lazy copy-up was pending: reads and writes follow it.
    pending: Option<Arc<Pending>>,
}

/// Counters a test or a debug log can read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Opens served by FUSE passthrough.
    pub passthrough_opens: AtomicU64,
    /// Copy-ups done.
    pub copy_ups: AtomicU64,
}

/// The overlay file system.
pub struct Overlay {
    layers: Vec<Layer>,
    has_upper: bool,
    work: Option<OwnedFd>,
    work_path: Vec<u8>,
    tmp_seq: AtomicU64,
    o: Options,
    ttl: Duration,
    same_dev: bool,
    /// `xino=auto|on` over several file systems that all have file handles: numbers are
    /// hashes of the handles (stable across mounts).
    xino_hash: bool,
    /// Hashed numbers stay below the numbers the counter hands out.
    hash_mask: u64,
    dev_shift: u32,
    /// `ino32_t`: every number the kernel sees fits in 32 bits.
    ino_mask: u64,
    inodes: Arc<RwLock<Inodes>>,
    ns: Arc<Mutex<()>>,
    /// Lazy copy-up of large files (with an upper layer).
    lazy: Option<Arc<Lazy>>,
    files: RwLock<HashMap<u64, Arc<FileH>>>,
    /// Open directories: the merged listing, made at the first read (a directory the kernel
    /// has cached is opened and closed without being listed).
    dirs: Mutex<HashMap<u64, Option<Arc<Vec<DirEnt>>>>>,
    next_fh: AtomicU64,
    mknod_wh: AtomicBool,
    trusted_ok: AtomicBool,
    want_passthrough: bool,
    passthrough: AtomicBool,
    writeback: AtomicBool,
    /// FUSE_POSIX_ACL granted: the kernel enforces ACLs, and with FUSE_DONT_MASK leaves the
    /// umask to us (not applied under a directory with a default ACL).
    posix_acl: AtomicBool,
    stats: Arc<Stats>,
    /// The warm-up worker (see [`Self::warm`]), started at the first large listing.
    warmer: OnceLock<Option<SyncSender<Warm>>>,
}

/// A listed directory's entries for the warm-up worker: the directory opened in one layer
/// (`O_PATH`) and the names found there, in the order to look them up.
struct Warm {
    dir: OwnedFd,
    names: Vec<CString>,
}

/// At most this many entries of a listing's subdirectories are warmed up (per listing).
const WARM_MAX: usize = 1 << 15;

/// The warm-up worker's job (see `Overlay::warm`): each named subdirectory of `w.dir` read
/// and its entries looked up. Errors are ignored (the request threads see their own).
fn warm_subdirs(w: Warm) {
    let mut budget = WARM_MAX;
    for n in &w.names {
        if budget == 0 {
            return;
        }
        // O_NOATIME where allowed: reading ahead is not an access by the user.
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let fd = match sys::openat(w.dir.as_fd(), n, flags | libc::O_NOATIME, 0) {
            Ok(fd) => fd,
            Err(_) => match sys::openat(w.dir.as_fd(), n, flags, 0) {
                Ok(fd) => fd,
                Err(_) => continue,
            },
        };
        let Ok(mut d) = nix::dir::Dir::from_fd(fd) else { continue };
        let mut names = Vec::new();
        for e in d.iter().flatten().take(budget) {
            let b = e.file_name().to_bytes();
            if b != b"." && b != b".." {
                names.push(e.file_name().to_owned());
            }
        }
        // SAFETY: `d` owns this descriptor and outlives the borrow (dropped after the loop).
        let dfd = unsafe { BorrowedFd::borrow_raw(d.as_raw_fd()) };
        budget = budget.saturating_sub(names.len().max(1));
        for c in &names {
            let _ = sys::fstatat(dfd, c);
        }
        drop(d);
    }
}

fn rl<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn wl<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
fn ml<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

fn ioerr(e: io::Error) -> Errno {
    Errno::from_i32(sys::errno(&e))
}

fn no_ent(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

fn systime(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(sec as u64, nsec.clamp(0, 999_999_999) as u32)).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(sec.unsigned_abs())).unwrap_or(UNIX_EPOCH)
    }
}

fn kind_of(fmt: u32) -> FileType {
    match fmt {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn wh_name(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    OsString::from_vec(v)
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long },
            Err(e) => libc::timespec { tv_sec: -(e.duration().as_secs() as libc::time_t), tv_nsec: 0 },
        },
    }
}

/// Whether this process runs as root in the initial user namespace (needed for passthrough).
fn initial_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
        .unwrap_or(false)
}

impl Overlay {
    /// Opens the layers and prepares the work directory.
    pub fn new(o: Options) -> io::Result<Overlay> {
        if std::env::var_os("FUSE_OVERLAY_NO_OPENAT2").is_some() {
            sys::disable_openat2();
        }
        let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
        if let Some(u) = &o.upperdir {
            dirs.push((u.clone(), true));
        }
        dirs.extend(o.lowerdirs.iter().map(|l| (l.clone(), false)));
        let mut devs: Vec<u64> = Vec::new();
        let mut layers = Vec::new();
        for (p, upper) in &dirs {
            let cp = sys::cstr(p.as_os_str().as_bytes())?;
            let fd = sys::open_abs(&cp, libc::O_PATH | libc::O_DIRECTORY)?;
            let st = sys::fstat(fd.as_fd())?;
            let dev_idx = match devs.iter().position(|d| *d == st.st_dev) {
                Some(i) => i,
                None => {
                    devs.push(st.st_dev);
                    devs.len() - 1
                }
            } as u64;
            let mut stat_mode = StatMode::Real;
            for m in [StatMode::Privileged, StatMode::Containers, StatMode::User] {
                if let Some(x) = m.xattr() {
                    if matches!(sys::getxattr_full(XTarget::Path(&cp), x), Ok(Some(_))) {
                        stat_mode = m;
                        break;
                    }
                }
            }
            if *upper && o.xattr_permissions > 0 {
                // 2 is the containers mode (as fuse-overlayfs 2.0); an upper already kept in the
                // legacy user mode stays in it, its files carry that xattr.
                let m = match (o.xattr_permissions, stat_mode) {
                    (1, _) => StatMode::Privileged,
                    (_, StatMode::User) => StatMode::User,
                    _ => StatMode::Containers,
                };
                if stat_mode != m {
                    if let Some(x) = m.xattr() {
                        let ov = Override { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode & 0o7777, kind: None };
                        sys::setxattr(XTarget::Path(&cp), x, ov.format(libc::S_IFDIR, 0).as_bytes(), 0)?;
                    }
                    stat_mode = m;
                }
            }
            layers.push(Layer { fd, dev_idx, stat_mode });
        }
        let mut work = None;
        let mut work_path = Vec::new();
        if let (Some(w), true) = (&o.workdir, o.upperdir.is_some()) {
            let wd = w.join("work");
            match std::fs::create_dir(&wd) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            std::fs::set_permissions(&wd, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
            // Whatever a crash left behind (half-copied files, removed directories) goes.
            for e in std::fs::read_dir(&wd)?.flatten() {
                let p = e.path();
                let _ = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
            let cwd = sys::cstr(wd.as_os_str().as_bytes())?;
            work = Some(sys::open_abs(&cwd, libc::O_PATH | libc::O_DIRECTORY)?);
            work_path = wd.as_os_str().as_bytes().to_vec();
        }
        let mut mknod_wh = std::env::var_os("FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT").is_none();
        if let (true, Some(w)) = (mknod_wh, &work) {
            let probe = c"whiteout-probe";
            mknod_wh = sys::mknodat(w.as_fd(), probe, libc::S_IFCHR, 0).is_ok();
            let _ = sys::unlinkat(w.as_fd(), probe, false);
        }
        let ndev = devs.len() as u64;
        let bits = 64 - (ndev.max(1) - 1).leading_zeros().min(64);
        // Direct numbers use the bits below the top one (device index first when the layers
        // are on several file systems); numbers from the counter start at the top bit.
        let ino_bits: u32 = if o.ino32 { 32 } else { 64 };
        // Over several file systems, xino=auto|on numbers objects by their file handles when
        // every layer has them.
        let mut xino_hash = false;
        if o.xino != Xino::Off && ndev > 1 {
            let missing = dirs.iter().zip(&layers).find_map(|((p, _), l)| match sys::file_handle(l.fd(), c".") {
                Ok(_) => None,
                Err(e) => Some(format!("{}: {e}", p.display())),
            });
            match missing {
                None => xino_hash = true,
                Some(m) if o.xino == Xino::On => {
                    return Err(io::Error::other(format!(
                        "xino=on: the layers are on {ndev} file systems and a layer has no file handles ({m}); \
                         use xino=off or xino=auto"
                    )));
                }
                Some(m) => {
                    tracing::info!("xino=auto: numbers from the node counter, a layer has no file handles ({m})")
                }
            }
        }
        let ttl = o.timeout;
        let want_passthrough = initial_root() && std::env::var_os("FUSE_OVERLAYFS_NO_PASSTHROUGH").is_none() && o.fsync;
        let inodes = Arc::new(RwLock::new(Inodes { next_fallback: 1 << (ino_bits - 1), ..Default::default() }));
        let ns = Arc::new(Mutex::new(()));
        let stats = Arc::new(Stats::default());
        let lazy = match (&work, layers.first(), o.upperdir.is_some()) {
            (Some(w), Some(up), true) => {
                let l = Lazy::new(
                    inodes.clone(),
                    ns.clone(),
                    up.fd.try_clone()?,
                    up.dev_idx,
                    w.try_clone()?,
                    stats.clone(),
                );
                (l.min != u64::MAX).then(|| Arc::new(l))
            }
            _ => None,
        };
        let fs = Overlay {
            has_upper: o.upperdir.is_some(),
            layers,
            work,
            work_path,
            tmp_seq: AtomicU64::new(0),
            ttl,
            same_dev: ndev == 1,
            xino_hash,
            hash_mask: (1u64 << (ino_bits - 1)) - 1,
            dev_shift: (ino_bits - 1).saturating_sub(bits),
            ino_mask: if o.ino32 { u32::MAX as u64 } else { u64::MAX },
            inodes,
            ns,
            lazy,
            files: RwLock::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            mknod_wh: AtomicBool::new(mknod_wh),
            trusted_ok: AtomicBool::new(nix::unistd::geteuid().is_root()),
            want_passthrough,
            passthrough: AtomicBool::new(false),
            writeback: AtomicBool::new(false),
            posix_acl: AtomicBool::new(false),
            stats,
            warmer: OnceLock::new(),
            o,
        };
        let top = 0;
        let st = sys::fstatat(fs.layers[top].fd(), c".")?;
        let bottom = fs.compute_bottom(c".", None, top, fs.layers.len() - 1);
        let key = (fs.layers[top].dev_idx, st.st_ino);
        wl(&fs.inodes).nodes.insert(
            ROOT,
            Node {
                names: Vec::new(),
                layer: top,
                bottom,
                fmt: libc::S_IFDIR,
                key,
                lookups: 1,
                backing: None,
                cached_opens: 0,
                no_caps: false,
                pending: None,
            },
        );
        Ok(fs)
    }

    /// A handle to wait for pending lazy copy-ups (SIGTERM waits for them).
    pub fn copies(&self) -> Copies {
        Copies(self.lazy.clone())
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn upper(&self) -> Result<&Layer, Errno> {
        if self.has_upper {
            Ok(&self.layers[0])
        } else {
            Err(Errno::EROFS)
        }
    }

    fn work(&self) -> Result<BorrowedFd<'_>, Errno> {
        self.work.as_ref().map(|w| w.as_fd()).ok_or(Errno::EROFS)
    }

    fn tmp_name(&self) -> CString {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#{n:x}")).unwrap_or_default()
    }

    fn work_abs(&self, tmp: &CStr) -> io::Result<CString> {
        let mut v = self.work_path.clone();
        v.push(b'/');
        v.extend_from_slice(tmp.to_bytes());
        sys::cstr(&v)
    }

    // ------------------------------------------------------------------ lookups

    fn info(&self, id: u64) -> Result<Info, Errno> {
        let g = rl(&self.inodes);
        let n = g.nodes.get(&id).ok_or(Errno::ENOENT)?;
        let path = g.path(id).ok_or(Errno::ENOENT)?;
        Ok(Info { path, layer: n.layer, bottom: n.bottom, fmt: n.fmt })
    }

    fn wh_exists(&self, l: usize, parent: &CStr, name: &OsStr) -> bool {
        match sys::join(parent, &wh_name(name)) {
            Ok(p) => sys::fstatat(self.layers[l].fd(), &p).is_ok(),
            Err(_) => false,
        }
    }

    fn is_opaque(&self, l: usize, path: &CStr) -> bool {
        let layer = &self.layers[l];
        if let Ok(m) = sys::join(path, OsStr::from_bytes(OPQ_MARKER)) {
            if sys::fstatat(layer.fd(), &m).is_ok() {
                return true;
            }
        }
        let Ok(abs) = layer.abs(path) else { return false };
        OPAQUE_XATTRS.iter().any(|x| matches!(sys::getxattr(XTarget::Path(&abs), x, 8), Ok(v) if v.starts_with(b"y")))
    }

    /// The lowest layer merged into the directory at `path` found in layer `top`.
    fn compute_bottom(&self, path: &CStr, parent_name: Option<(&CStr, &OsStr)>, top: usize, limit: usize) -> usize {
        // Nothing below to hide: whether the directory is opaque cannot change the answer.
        if top >= limit || self.is_opaque(top, path) {
            return top;
        }
        let mut b = top;
        for m in top + 1..=limit {
            match sys::fstatat(self.layers[m].fd(), path) {
                Ok(st) if sys::fmt(&st) == libc::S_IFDIR => {
                    b = m;
                    if self.is_opaque(m, path) {
                        break;
                    }
                }
                Ok(_) => break,
                Err(_) => {
                    if let Some((pp, name)) = parent_name {
                        if self.wh_exists(m, pp, name) {
                            break;
                        }
                    }
                }
            }
        }
        b
    }

    /// What layer `l` has for `name` (C string `cname`, whiteout file `whname`) in directory
    /// `dir`: the directory is opened once for both questions. Without `whname` a whiteout
    /// file is not looked for (reported as absent).
    fn probe(&self, l: usize, dir: &CStr, cname: &CStr, whname: Option<&CStr>) -> Result<Probe, Errno> {
        let look = |d: BorrowedFd<'_>| match sys::fstatat(d, cname) {
            Ok(st) => Ok(Probe::Found(st)),
            Err(e) if no_ent(&e) => {
                Ok(if whname.is_some_and(|w| sys::fstatat(d, w).is_ok()) { Probe::Whiteout } else { Probe::Absent })
            }
            Err(e) => Err(ioerr(e)),
        };
        if dir.to_bytes() == b"." {
            return look(self.layers[l].fd());
        }
        // One openat2 for the whole path; on ENOTDIR (a symlink or file on the way, rare)
        // the component walk below sorts out which answer that is.
        if let Ok(d) = sys::open_dir(self.layers[l].fd(), dir) {
            return look(d.as_fd());
        }
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        match sys::openat(self.layers[l].fd(), dir, flags, 0) {
            Ok(d) => look(d.as_fd()),
            Err(e) if no_ent(&e) || e.raw_os_error() == Some(libc::ELOOP) => Ok(Probe::Absent),
            Err(e) => Err(ioerr(e)),
        }
    }

    /// Finds `name` in the directory `p`.
    fn find_child(&self, p: &Info, name: &OsStr) -> Result<Option<Found>, Errno> {
        if p.fmt != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        if name.as_bytes().starts_with(WH_PREFIX) {
            return Ok(None);
        }
        let path = sys::join(&p.path, name).map_err(ioerr)?;
        let cname = sys::cstr(name.as_bytes()).map_err(ioerr)?;
        let whname = sys::cstr(wh_name(name).as_bytes()).map_err(ioerr)?;
        for l in p.layer..=p.bottom {
            // In the last layer a whiteout file and nothing both mean "not there".
            let wh = (l < p.bottom).then_some(whname.as_c_str());
            match self.probe(l, &p.path, &cname, wh)? {
                Probe::Found(st) => {
                    if sys::is_whiteout(&st) {
                        return Ok(None);
                    }
                    let bottom = if sys::fmt(&st) == libc::S_IFDIR {
                        self.compute_bottom(&path, Some((&p.path, name)), l, p.bottom)
                    } else {
                        l
                    };
                    return Ok(Some(Found { layer: l, st, bottom }));
                }
                Probe::Whiteout => return Ok(None),
                Probe::Absent => {}
            }
        }
        Ok(None)
    }

    /// Whether any layer below the upper one has something named `name` in `p`.
    fn lower_has(&self, p: &Info, name: &OsStr) -> bool {
        let Ok(path) = sys::join(&p.path, name) else { return false };
        (p.layer.max(1)..=p.bottom).any(|l| sys::fstatat(self.layers[l].fd(), &path).is_ok())
    }

    /// The number an object (identified by `key`, its layer's device index and inode
    /// number) would get without taking one from the counter: `Err` carries a best guess
    /// when it needs one. The number is made from `src`.
    fn ino_peek(&self, g: &Inodes, key: (u64, u64), src: &NumSrc) -> Result<u64, u64> {
        let (ino, hash) = (src.ino, src.hash);
        let dev = self.layers[src.layer].dev_idx;
        let direct = if self.same_dev && ino & !self.ino_mask == 0 {
            Some(ino)
        } else if self.same_dev {
            None
        } else if self.xino_hash {
            hash
        } else if ino >> self.dev_shift == 0 {
            Some((dev << self.dev_shift) | ino)
        } else {
            None
        };
        if let Some(id) = direct {
            if id != ROOT && id != 0 && g.nodes.get(&id).is_none_or(|n| n.key == key) {
                return Ok(id);
            }
        }
        if let Some(&id) = g.fallback.get(&key) {
            return Ok(id);
        }
        Err((direct.unwrap_or(ino) & self.ino_mask).max(2))
    }

    fn ino_for(&self, g: &mut Inodes, key: (u64, u64), src: &NumSrc) -> u64 {
        if let Ok(id) = self.ino_peek(g, key, src) {
            return id;
        }
        let mut id = g.next_fallback & self.ino_mask;
        // Skip numbers a node holds directly (possible with ino32_t) and 0/1.
        while id <= ROOT || g.nodes.contains_key(&id) {
            id = (id + 1) & self.ino_mask;
        }
        g.next_fallback = id.wrapping_add(1);
        g.fallback.insert(key, id);
        id
    }

    /// The number of the object at `path` in layer `l` made from its file handle (with
    /// `xino=auto|on` over several file systems): a hash of the layer's file system index
    /// and the handle, so the same object gets the same number at every mount. Below the
    /// counter's range; never 0 or 1.
    fn handle_number(&self, dir: BorrowedFd<'_>, l: usize, path: &CStr) -> Option<u64> {
        let (kind, bytes) = sys::file_handle(dir, path).ok()?;
        // FNV-1a over (device index, handle type, handle), then a 64-bit finaliser
        // (splitmix64) so that nearby handles spread over all bits.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let dev = self.layers[l].dev_idx.to_le_bytes();
        for b in dev.iter().chain(kind.to_le_bytes().iter()).chain(bytes.iter()) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        Some((h & self.hash_mask).max(2))
    }

    /// Whether the number of an object in `layer` of type `fmt` may come from its origin
    /// (a copied-up regular file with lower layers to look in). Callers only ask for files in
    /// directories that lower layers are merged into (a directory made in the upper layer
    /// holds files made there, which have no origin; a copied-up file renamed into one keeps
    /// its own number).
    fn origin_candidate(&self, layer: usize, fmt: u32) -> bool {
        layer == 0 && self.has_upper && self.layers.len() > 1 && fmt == libc::S_IFREG
    }

    /// The lower object an upper file was copied from, by its origin xattr (ours, else
    /// `trusted.overlay.origin` as fuse-overlayfs reads it): the topmost lower layer with a
    /// regular file at that path, with the path. A kernel overlayfs origin (a binary file
    /// handle) or a path that is not plainly relative is ignored.
    /// `dir` is the upper directory holding the file, `name` its name there.
    fn origin_of(&self, dir: BorrowedFd<'_>, name: &CStr) -> Option<(usize, CString, libc::stat)> {
        let abs = sys::proc_path(dir, name).ok()?;
        // One listxattr answers the common case (a file made in the upper layer: no origin).
        let names = sys::listxattr(&abs).ok()?;
        let has = |x: &CStr| names.split(|b| *b == 0).any(|n| n == x.to_bytes());
        let name = [ORIGIN_XATTR, c"trusted.overlay.origin"].into_iter().find(|x| has(x))?;
        let v = sys::getxattr(XTarget::Path(&abs), name, 4096).ok()?;
        let v = v.strip_suffix(b"\0").unwrap_or(&v);
        let plain = |c: &[u8]| !c.is_empty() && c != b"." && c != b"..";
        if v.is_empty() || v.starts_with(b"/") || v.contains(&0) || !v.split(|b| *b == b'/').all(plain) {
            return None;
        }
        let opath = sys::cstr(v).ok()?;
        (1..self.layers.len()).find_map(|l| match sys::fstatat(self.layers[l].fd(), &opath) {
            Ok(st) if sys::fmt(&st) == libc::S_IFREG => Some((l, opath.clone(), st)),
            _ => None,
        })
    }

    /// Where the number of an object in `layer` (inode `ino`, type `fmt`) comes from: the
    /// object itself, or with `origin` for a copied-up regular file the lower file it came
    /// from (as fuse-overlayfs: a file keeps its number across copy-up and remounts). `at`
    /// names the object (its directory in the layer, opened, and its name), or `path` does.
    fn num_src(
        &self,
        layer: usize,
        at: Option<At<'_>>,
        path: Option<&CStr>,
        ino: u64,
        fmt: u32,
        origin: bool,
    ) -> NumSrc {
        let need = self.xino_hash || (origin && self.origin_candidate(layer, fmt));
        if !need {
            return NumSrc { layer, ino, hash: None };
        }
        // The directory resolved once for both questions.
        let split;
        let at = match (at, path) {
            (Some(a), _) => a,
            (None, Some(p)) => match self.split_path(layer, p) {
                Ok(sp) => {
                    split = sp;
                    At { dir: split.0.as_ref().map(|d| d.as_fd()).unwrap_or(self.layers[layer].fd()), name: &split.1 }
                }
                Err(_) => return NumSrc { layer, ino, hash: None },
            },
            (None, None) => return NumSrc { layer, ino, hash: None },
        };
        if origin && self.origin_candidate(layer, fmt) {
            if let Some((l, opath, st)) = self.origin_of(at.dir, at.name) {
                let hash = if self.xino_hash { self.handle_number(self.layers[l].fd(), l, &opath) } else { None };
                return NumSrc { layer: l, ino: st.st_ino, hash };
            }
        }
        let hash = if self.xino_hash { self.handle_number(at.dir, layer, at.name) } else { None };
        NumSrc { layer, ino, hash }
    }

    /// Records a looked-up child (one more kernel reference) and returns its node id. With
    /// `origin`, a copied-up file gets the number of the lower file it came from.
    /// `at` names the object when its directory is open already.
    fn remember(&self, parent: u64, name: &OsStr, f: &Found, origin: bool, at: Option<At<'_>>) -> u64 {
        let fmt = sys::fmt(&f.st);
        let key = (self.layers[f.layer].dev_idx, f.st.st_ino);
        let origin = origin && rl(&self.inodes).nodes.get(&parent).is_some_and(|n| n.bottom > 0);
        let known = {
            let g = rl(&self.inodes);
            g.children
                .get(&(parent, name.to_owned()))
                .copied()
                .filter(|id| g.nodes.get(id).is_some_and(|n| n.key == key && n.fmt == fmt))
        };
        let src = match known {
            Some(_) => None,
            None => {
                let want_path = at.is_none() && (self.xino_hash || (origin && self.origin_candidate(f.layer, fmt)));
                let path =
                    if want_path { rl(&self.inodes).path(parent).and_then(|p| sys::join(&p, name).ok()) } else { None };
                Some(self.num_src(f.layer, at, path.as_deref(), f.st.st_ino, fmt, origin))
            }
        };
        let mut g = wl(&self.inodes);
        let k = (parent, name.to_owned());
        let id = match g.children.get(&k) {
            Some(&id) if g.nodes.get(&id).is_some_and(|n| n.key == key && n.fmt == fmt) => id,
            _ => {
                let src = src.unwrap_or(NumSrc { layer: f.layer, ino: f.st.st_ino, hash: None });
                self.ino_for(&mut g, key, &src)
            }
        };
        if let Some(old) = g.children.insert(k.clone(), id) {
            if old != id {
                if let Some(n) = g.nodes.get_mut(&old) {
                    n.names.retain(|x| *x != k);
                }
            }
        }
        let mut stale: Vec<(u64, OsString)> = Vec::new();
        {
            let n = g.nodes.entry(id).or_insert_with(|| Node {
                names: Vec::new(),
                layer: f.layer,
                bottom: f.bottom,
                fmt,
                key,
                lookups: 0,
                backing: None,
                cached_opens: 0,
                no_caps: false,
                pending: None,
            });
            n.layer = f.layer;
            n.bottom = f.bottom;
            n.fmt = fmt;
            n.key = key;
            n.lookups += 1;
            if !n.names.contains(&k) {
                if fmt == libc::S_IFDIR {
                    stale = std::mem::take(&mut n.names);
                }
                n.names.insert(0, k);
            }
        }
        for s in stale {
            if g.children.get(&s) == Some(&id) {
                g.children.remove(&s);
            }
        }
        id
    }

    fn attr(&self, id: u64, layer: usize, path: &CStr, st: &libc::stat) -> FileAttr {
        let fmt = sys::fmt(st);
        if self.layers[layer].stat_mode.xattr().is_none() || (fmt != libc::S_IFREG && fmt != libc::S_IFDIR) {
            // No override xattr to read: no path to resolve.
            return self.attr_at(id, layer, XTarget::Fd(-1), st);
        }
        match self.layers[layer].abs(path) {
            Ok(abs) => self.attr_at(id, layer, XTarget::Path(&abs), st),
            Err(_) => self.attr_at(id, layer, XTarget::Fd(-1), st),
        }
    }

    /// [`Self::attr`] with the override xattr read from `t`.
    fn attr_at(&self, id: u64, layer: usize, t: XTarget<'_>, st: &libc::stat) -> FileAttr {
        let mut uid = st.st_uid;
        let mut gid = st.st_gid;
        let mut perm = st.st_mode & 0o7777;
        let mut fmt = sys::fmt(st);
        let mut rdev = st.st_rdev;
        let l = &self.layers[layer];
        if let (Some(x), true) = (l.stat_mode.xattr(), fmt == libc::S_IFREG || fmt == libc::S_IFDIR) {
            if let Ok(Some(v)) = sys::getxattr_full(t, x) {
                if let Some(ov) = Override::parse(&v) {
                    uid = ov.uid;
                    gid = ov.gid;
                    perm = ov.mode;
                    if let Some((f, r)) = ov.kind {
                        fmt = f;
                        rdev = r;
                    }
                }
            }
        }
        uid = self.o.uid_map.to_shown(uid);
        gid = self.o.gid_map.to_shown(gid);
        if self.o.squash_to_root {
            uid = 0;
            gid = 0;
        }
        if let Some(u) = self.o.squash_uid {
            uid = u;
        }
        if let Some(g) = self.o.squash_gid {
            gid = g;
        }
        let nlink = if fmt == libc::S_IFDIR && self.o.static_nlink { 1 } else { st.st_nlink as u32 };
        FileAttr {
            ino: INodeNo(id),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: systime(st.st_atime, st.st_atime_nsec),
            mtime: systime(st.st_mtime, st.st_mtime_nsec),
            ctime: systime(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind_of(fmt),
            perm: perm as u16,
            nlink,
            uid,
            gid,
            rdev: rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    fn do_lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let p = self.info(parent)?;
        let f = self.find_child(&p, name)?.ok_or(Errno::ENOENT)?;
        let id = self.remember(parent, name, &f, true, None);
        if let Some(p) = self.pending(id) {
            return self.pending_attr(id, &p);
        }
        let path = sys::join(&p.path, name).map_err(ioerr)?;
        Ok(self.attr(id, f.layer, &path, &f.st))
    }

    fn do_getattr(&self, id: u64, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        if let Some(p) = self.pending(id) {
            return self.pending_attr(id, &p);
        }
        let e = match self.info(id) {
            Ok(i) => match sys::fstatat(self.layers[i.layer].fd(), &i.path) {
                Ok(st) => return Ok(self.attr(id, i.layer, &i.path, &st)),
                Err(e) => ioerr(e),
            },
            Err(e) => e,
        };
        // Removed (or changed underneath) while open: the open file still answers.
        match self.open_handle(id, fh) {
            Some((h, layer)) => {
                let st = sys::fstat(h.fd.as_fd()).map_err(ioerr)?;
                Ok(self.attr_at(id, layer, XTarget::Fd(h.fd.as_raw_fd()), &st))
            }
            None => Err(e),
        }
    }

    /// An open file of node `id` (handle `fh` when it is one), with the node's layer.
    fn open_handle(&self, id: u64, fh: Option<FileHandle>) -> Option<(Arc<FileH>, usize)> {
        let layer = rl(&self.inodes).nodes.get(&id)?.layer;
        let files = rl(&self.files);
        let h = fh
            .and_then(|fh| files.get(&fh.0).filter(|h| h.node == id))
            .or_else(|| files.values().find(|h| h.node == id))?
            .clone();
        Some((h, layer))
    }

    /// Whether node `id` has lost all its names (removed while open).
    fn unlinked(&self, id: u64) -> bool {
        id != ROOT && rl(&self.inodes).nodes.get(&id).is_none_or(|n| n.names.is_empty())
    }

    /// Setattr on a removed file through one of its open descriptors.
    #[allow(clippy::too_many_arguments)]
    fn setattr_open(
        &self,
        id: u64,
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let (h, layer) = self.open_handle(id, fh).ok_or(Errno::ENOENT)?;
        if !self.has_upper || layer != 0 {
            // A removed lower file cannot be copied up any more.
            return Err(Errno::EROFS);
        }
        let fd = h.fd.as_fd();
        let st = sys::fstat(fd).map_err(ioerr)?;
        let fmt = sys::fmt(&st);
        let sm = self.layers[0].stat_mode;
        if owner.is_some() || mode.is_some() {
            if let (Some(x), true) = (sm.xattr(), fmt == libc::S_IFREG || fmt == libc::S_IFDIR) {
                let t = XTarget::Fd(h.fd.as_raw_fd());
                let cur = sys::getxattr_full(t, x).map_err(ioerr)?.and_then(|v| Override::parse(&v));
                let ov = cur
                    .unwrap_or(Override { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode & 0o7777, kind: None })
                    .with(owner, mode);
                let (kf, kr) = ov.kind.unwrap_or((fmt, st.st_rdev));
                sys::setxattr(t, x, ov.format(kf, kr).as_bytes(), 0).map_err(ioerr)?;
            } else {
                if let Some((u, g)) = owner {
                    match sys::fchown(fd, u, g) {
                        Err(e) if !nix::unistd::geteuid().is_root() || self.squashing() => {
                            tracing::debug!("chown ignored: {e}")
                        }
                        r => r.map_err(ioerr)?,
                    }
                }
                if let Some(m) = mode {
                    sys::fchmod(fd, m & 0o7777).map_err(ioerr)?;
                }
            }
        }
        if let Some(sz) = size {
            sys::ftruncate(fd, sz).map_err(ioerr)?;
        }
        if atime.is_some() || mtime.is_some() {
            sys::futimens(fd, &[timespec(atime), timespec(mtime)]).map_err(ioerr)?;
        }
        let st = sys::fstat(fd).map_err(ioerr)?;
        Ok(self.attr_at(id, layer, XTarget::Fd(h.fd.as_raw_fd()), &st))
    }

    /// Whether `uidmapping=`/`gidmapping=` translate ids.
    fn maps_ids(&self) -> bool {
        !self.o.uid_map.0.is_empty() || !self.o.gid_map.0.is_empty()
    }

    fn squashing(&self) -> bool {
        self.o.squash_to_root || self.o.squash_uid.is_some() || self.o.squash_gid.is_some()
    }

    /// The merged listing of a directory (without `.` and `..`).
    fn list(&self, i: &Info) -> Result<Vec<DirEnt>, Errno> {
        let mut out = Vec::new();
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut hidden: HashSet<OsString> = HashSet::new();
        for l in i.layer..=i.bottom {
            let layer = &self.layers[l];
            let dfd = match sys::openat(layer.fd(), &i.path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
                Ok(fd) => fd,
                Err(e) if no_ent(&e) || e.raw_os_error() == Some(libc::ELOOP) => continue,
                Err(e) => return Err(ioerr(e)),
            };
            let rd = nix::dir::Dir::from_fd(dfd).map_err(|e| Errno::from_i32(e as i32))?;
            let mut new_hidden = Vec::new();
            for e in rd.into_iter().flatten() {
                let name = OsStr::from_bytes(e.file_name().to_bytes()).to_owned();
                let b = name.as_bytes();
                if b == b"." || b == b".." {
                    continue;
                }
                if b.starts_with(WH_PREFIX) {
                    if b != OPQ_MARKER {
                        new_hidden.push(OsStr::from_bytes(&b[WH_PREFIX.len()..]).to_owned());
                    }
                    continue;
                }
                if seen.contains(&name) || hidden.contains(&name) {
                    continue;
                }
                use nix::dir::Type;
                let fmt = match e.file_type() {
                    Some(Type::Directory) => libc::S_IFDIR,
                    Some(Type::File) => libc::S_IFREG,
                    Some(Type::Symlink) => libc::S_IFLNK,
                    Some(Type::CharacterDevice) => libc::S_IFCHR,
                    Some(Type::BlockDevice) => libc::S_IFBLK,
                    Some(Type::Fifo) => libc::S_IFIFO,
                    Some(Type::Socket) => libc::S_IFSOCK,
                    None => {
                        let p = sys::join(&i.path, &name).map_err(ioerr)?;
                        match sys::fstatat(layer.fd(), &p) {
                            Ok(st) => sys::fmt(&st),
                            Err(_) => continue,
                        }
                    }
                };
                if fmt == libc::S_IFCHR {
                    let p = sys::join(&i.path, &name).map_err(ioerr)?;
                    if sys::fstatat(layer.fd(), &p).map(|st| sys::is_whiteout(&st)).unwrap_or(false) {
                        new_hidden.push(name);
                        continue;
                    }
                }
                seen.insert(name.clone());
                let ino = e.ino();
                out.push(DirEnt { name, layer: l, fmt, ino });
            }
            hidden.extend(new_hidden);
        }
        Ok(out)
    }

    // ------------------------------------------------------------------ copy-up

    /// [`Self::copy_up`] taking the namespace lock, unless the node is in the upper layer.
    fn copy_up_locked(&self, id: u64, with_data: bool) -> Result<(), Errno> {
        if self.has_upper && rl(&self.inodes).nodes.get(&id).is_some_and(|n| n.layer == 0) {
            return Ok(());
        }
        let _ns = ml(&self.ns);
        self.copy_up(id, with_data)
    }

    /// Copies node `id` (and its parents) into the upper layer. Caller holds `ns`.
    fn copy_up(&self, id: u64, with_data: bool) -> Result<(), Errno> {
        self.upper()?;
        self.settle(id)?;
        let (parent, layer) = {
            let g = rl(&self.inodes);
            let n = g.nodes.get(&id).ok_or(Errno::ENOENT)?;
            if n.layer == 0 && self.has_upper {
                return Ok(());
            }
            let parent = n.names.first().map(|x| x.0).ok_or(Errno::ENOENT)?;
            (parent, n.layer)
        };
        self.upper()?;
        self.copy_up(parent, true)?;
        let i = self.info(id)?;
        let st = self.copy_object(layer, &i.path, with_data).map_err(|e| {
            tracing::warn!("copy-up of {:?} failed: {e}", i.path);
            ioerr(e)
        })?;
        self.stats.copy_ups.fetch_add(1, Ordering::Relaxed);
        let mut g = wl(&self.inodes);
        let key = (self.layers[0].dev_idx, st.st_ino);
        let mut extra = Vec::new();
        if let Some(n) = g.nodes.get_mut(&id) {
            n.layer = 0;
            n.key = key;
            // Other names of a lower hard link keep the lower file.
            extra = n.names.split_off(1.min(n.names.len()));
        }
        for k in extra {
            if g.children.get(&k) == Some(&id) {
                g.children.remove(&k);
            }
        }
        Ok(())
    }

    /// Owner, mode and (from an override xattr) the file type an object shows.
    fn effective_owner(&self, layer: usize, path: &CStr, st: &libc::stat) -> Override {
        let l = &self.layers[layer];
        if let Some(x) = l.stat_mode.xattr() {
            if let Ok(abs) = l.abs(path) {
                if let Ok(Some(v)) = sys::getxattr_full(XTarget::Path(&abs), x) {
                    if let Some(ov) = Override::parse(&v) {
                        return ov;
                    }
                }
            }
        }
        Override { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode & 0o7777, kind: None }
    }

    /// Sets owner and mode of a fresh upper object at `dir`/`rel` (absolute path `abs`).
    #[allow(clippy::too_many_arguments)]
    fn set_owner(
        &self,
        dir: BorrowedFd<'_>,
        rel: &CStr,
        abs: &CStr,
        fmt: u32,
        rdev: u64,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
    ) -> io::Result<()> {
        let sm = self.layers[0].stat_mode;
        if let (Some(x), true) = (sm.xattr(), fmt == libc::S_IFREG || fmt == libc::S_IFDIR) {
            if owner.is_none() && mode.is_none() {
                return Ok(());
            }
            let st = sys::fstatat(dir, rel)?;
            let cur = match sys::getxattr_full(XTarget::Path(abs), x)?.and_then(|v| Override::parse(&v)) {
                Some(o) => o,
                None => Override { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode & 0o7777, kind: None },
            };
            let ov = cur.with(owner, mode);
            let kfmt = cur.kind.map(|k| k.0).unwrap_or(fmt);
            let krdev = cur.kind.map(|k| k.1).unwrap_or(rdev);
            sys::setxattr(XTarget::Path(abs), x, ov.format(kfmt, krdev).as_bytes(), 0)?;
            // The real mode stays, so its ACL is updated here as chmod would (the kernel
            // checks access with the ACL's mask, not the mode we show).
            if let (Some(m), false) = (mode, self.o.noacl) {
                let acl = c"system.posix_acl_access";
                if let Ok(Some(v)) = sys::getxattr_full(XTarget::Path(abs), acl) {
                    if let Some(nv) = acl_chmod(&v, m) {
                        sys::setxattr(XTarget::Path(abs), acl, &nv, 0)?;
                    }
                }
            }
            return Ok(());
        }
        if let Some((u, g)) = owner {
            match sys::lchownat(dir, rel, u, g) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EINVAL)) => {
                    if self.o.squash_to_root || self.o.squash_uid.is_some() || self.o.squash_gid.is_some() {
                        tracing::debug!("chown ignored: {e}");
                    } else if !nix::unistd::geteuid().is_root() {
                        tracing::debug!("chown to {u}:{g} not possible: {e}");
                    } else {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if let (Some(m), true) = (mode, fmt != libc::S_IFLNK) {
            sys::fchmodat(dir, rel, m & 0o7777)?;
        }
        Ok(())
    }

    /// After an access ACL is set on an upper object whose mode is kept in the override xattr:
    /// the mode shows the ACL's bits, as the file system would set the real mode (the kernel
    /// consults the ACL only when the mode's group bits are not all clear).
    fn acl_sets_override_mode(&self, abs: &CStr, fmt: u32, v: &[u8]) -> io::Result<()> {
        let Some(x) = self.layers[0].stat_mode.xattr() else { return Ok(()) };
        let Some(bits) = acl_mode(v) else { return Ok(()) };
        let Some(cur) = sys::getxattr_full(XTarget::Path(abs), x)?.and_then(|o| Override::parse(&o)) else {
            return Ok(());
        };
        let ov = cur.with(None, Some((cur.mode & !0o777) | bits));
        let (kf, kr) = cur.kind.unwrap_or((fmt, 0));
        sys::setxattr(XTarget::Path(abs), x, ov.format(kf, kr).as_bytes(), 0)
    }

    fn copy_xattrs(&self, src: &CStr, dst: XTarget<'_>) -> io::Result<()> {
        if self.o.noxattrs {
            return Ok(());
        }
        let names = match sys::listxattr(src) {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if is_private_xattr(name) {
                continue;
            }
            let cname = sys::cstr(name)?;
            let Some(v) = sys::getxattr_full(XTarget::Path(src), &cname)? else { continue };
            if let Err(e) = sys::setxattr(dst, &cname, &v, 0) {
                if !matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::EACCES)) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Copies one object from layer `src` at `path` to the upper layer, atomically.
    fn copy_object(&self, src: usize, path: &CStr, with_data: bool) -> io::Result<libc::stat> {
        let work = self.work().map_err(|_| sys::err(libc::EROFS))?;
        let m = self.make_copy(src, path, with_data)?;
        drop(m.file);
        drop(m.src);
        let flags = if m.fmt == libc::S_IFDIR { libc::RENAME_NOREPLACE } else { 0 };
        if let Err(e) = sys::renameat2(work, &m.tmp, self.layers[0].fd(), path, flags) {
            discard_tmp(work, &m.tmp, &m.tmp_abs, m.fmt);
            return Err(e);
        }
        sys::fstatat(self.layers[0].fd(), path)
    }

    /// The copy of one object from layer `src` at `path`, made in the work directory with
    /// owner, mode, xattrs and times (and, with `with_data`, a regular file's data), for the
    /// caller to rename into the upper layer. A regular file comes open (read-write), with
    /// the lower file (read-only).
    fn make_copy(&self, src: usize, path: &CStr, with_data: bool) -> io::Result<Made> {
        let work = self.work().map_err(|_| sys::err(libc::EROFS))?;
        let sl = &self.layers[src];
        let st = sys::fstatat(sl.fd(), path)?;
        let fmt = sys::fmt(&st);
        let src_abs = sl.abs(path)?;
        let tmp = self.tmp_name();
        let tmp_abs = self.work_abs(&tmp)?;
        let ov = self.effective_owner(src, path, &st);
        let (uid, gid, mode) = (ov.uid, ov.gid, ov.mode);
        let mut file: Option<OwnedFd> = None;
        let mut lower: Option<OwnedFd> = None;
        match fmt {
            libc::S_IFDIR => sys::mkdirat(work, &tmp, 0o700)?,
            libc::S_IFREG => {
                let s = sys::openat(sl.fd(), path, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
                let d = sys::openat(work, &tmp, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600)?;
                if with_data {
                    if let Err(e) = copy_data(s.as_fd(), d.as_fd(), &st) {
                        let _ = sys::unlinkat(work, &tmp, false);
                        return Err(e);
                    }
                }
                // Where the copy came from, as fuse-overlayfs writes it (regular files only,
                // the path relative to the layer root with its NUL; hidden from users).
                let mut origin = path.to_bytes_with_nul().to_vec();
                if origin.starts_with(b"./") {
                    origin.drain(..2);
                }
                if let Err(e) = sys::setxattr(XTarget::Fd(d.as_raw_fd()), ORIGIN_XATTR, &origin, 0) {
                    tracing::debug!("{ORIGIN_XATTR:?} not written: {e}");
                }
                file = Some(d);
                lower = Some(s);
            }
            libc::S_IFLNK => {
                let t = sys::readlinkat(sl.fd(), path)?;
                sys::symlinkat(&sys::cstr(&t)?, work, &tmp)?;
            }
            _ => sys::mknodat(work, &tmp, st.st_mode, st.st_rdev)?,
        }
        let res = (|| -> io::Result<()> {
            if fmt != libc::S_IFLNK {
                let t = match &file {
                    Some(f) => XTarget::Fd(f.as_raw_fd()),
                    None => XTarget::Path(&tmp_abs),
                };
                self.copy_xattrs(&src_abs, t)?;
            }
            // The file type an override shows (a device kept as a regular file) stays.
            if let (Some((kf, kr)), Some(x)) = (ov.kind, self.layers[0].stat_mode.xattr()) {
                if fmt == libc::S_IFREG || fmt == libc::S_IFDIR {
                    sys::setxattr(XTarget::Path(&tmp_abs), x, ov.format(kf, kr).as_bytes(), 0)?;
                }
            }
            self.set_owner(work, &tmp, &tmp_abs, fmt, st.st_rdev, Some((uid, gid)), Some(mode))?;
            let times = [
                libc::timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec },
                libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec },
            ];
            sys::utimensat(work, &tmp, &times)
        })();
        if let Err(e) = res {
            discard_tmp(work, &tmp, &tmp_abs, fmt);
            return Err(e);
        }
        Ok(Made { tmp, tmp_abs, file, src: lower, fmt, st })
    }

    // ------------------------------------------------------------------ lazy copy-up

    /// Node `id`'s pending lazy copy-up, if any.
    fn pending(&self, id: u64) -> Option<Arc<Pending>> {
        rl(&self.inodes).nodes.get(&id).and_then(|n| n.pending.clone())
    }

    /// Completes node `id`'s pending copy-up, if any (waits for its data). Caller holds `ns`.
    fn settle(&self, id: u64) -> Result<(), Errno> {
        match (self.pending(id), &self.lazy) {
            (Some(p), Some(l)) => l.finish(id, &p),
            _ => Ok(()),
        }
    }

    /// [`Self::settle`] for the node the kernel knows as `name` in `parent`.
    fn settle_child(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let id = rl(&self.inodes).children.get(&(parent, name.to_owned())).copied();
        id.map_or(Ok(()), |id| self.settle(id))
    }

    /// Open file `fh`, its node's pending copy-up (if any) completed first (takes `ns`).
    fn settled_handle(&self, fh: FileHandle) -> Result<Arc<FileH>, Errno> {
        let h = self.handle(fh)?;
        if let Some(p) = &h.pending {
            if !p.lock().finished {
                let _ns = ml(&self.ns);
                self.settle(h.node)?;
            }
        }
        Ok(h)
    }

    /// Starts a lazy copy-up of node `id` for an open for writing, when it is a large enough
    /// regular file of a lower layer (not sparse, one link, not open in passthrough mode);
    /// `None`: copy it up the usual way.
    fn start_lazy(&self, id: u64) -> Result<Option<Arc<Pending>>, Errno> {
        let Some(lazy) = &self.lazy else { return Ok(None) };
        let eligible = |n: &Node| n.layer != 0 && n.fmt == libc::S_IFREG && n.backing.is_none();
        if !rl(&self.inodes).nodes.get(&id).is_some_and(eligible) {
            return Ok(None);
        }
        let i = self.info(id)?;
        let st = sys::fstatat(self.layers[i.layer].fd(), &i.path).map_err(ioerr)?;
        let size = st.st_size as u64;
        if size < lazy.min || st.st_nlink != 1 || (st.st_blocks as u64) * 512 < size {
            return Ok(None);
        }
        let ns = ml(&self.ns);
        {
            let g = rl(&self.inodes);
            let Some(n) = g.nodes.get(&id) else { return Ok(None) };
            if let Some(p) = &n.pending {
                return Ok(Some(p.clone()));
            }
            if !eligible(n) || n.layer != i.layer {
                return Ok(None);
            }
        }
        let parent = rl(&self.inodes).nodes.get(&id).and_then(|n| n.names.first().map(|x| x.0)).ok_or(Errno::ENOENT)?;
        self.copy_up(parent, true)?;
        let i = self.info(id)?;
        let m = self.make_copy(i.layer, &i.path, false).map_err(ioerr)?;
        let (Some(fd), Some(src)) = (m.file, m.src) else { return Err(Errno::EIO) };
        if let Err(e) = sys::ftruncate(fd.as_fd(), size) {
            let _ = sys::unlinkat(self.work()?, &m.tmp, false);
            return Err(ioerr(e));
        }
        let mtime = libc::timespec { tv_sec: m.st.st_mtime, tv_nsec: m.st.st_mtime_nsec };
        let p = Arc::new(Pending::new(fd, src, m.tmp, size, mtime));
        if let Some(n) = wl(&self.inodes).nodes.get_mut(&id) {
            n.pending = Some(p.clone());
        }
        // Unlocked first: without a thread, the copy runs here and takes the lock at its end.
        drop(ns);
        lazy.start(id, p.clone());
        Ok(Some(p))
    }

    /// The attributes of a node whose copy-up is pending: the copy's, with the modification
    /// time users see.
    fn pending_attr(&self, id: u64, p: &Pending) -> Result<FileAttr, Errno> {
        let mut st = sys::fstat(p.fd.as_fd()).map_err(ioerr)?;
        {
            let s = p.lock();
            if !s.finished {
                st.st_mtime = s.mtime.tv_sec;
                st.st_mtime_nsec = s.mtime.tv_nsec;
            }
        }
        Ok(self.attr_at(id, 0, XTarget::Fd(p.fd.as_raw_fd()), &st))
    }

    // ------------------------------------------------------------------ whiteouts

    /// Records that `name` in upper directory `ppath` is deleted (nothing is there now).
    fn create_whiteout(&self, ppath: &CStr, name: &OsStr) -> io::Result<()> {
        let up = self.layers[0].fd();
        if self.mknod_wh.load(Ordering::Relaxed) {
            let p = sys::join(ppath, name)?;
            match sys::mknodat(up, &p, libc::S_IFCHR, 0) {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::EINVAL)) => {
                    self.mknod_wh.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let p = sys::join(ppath, &wh_name(name))?;
        sys::openat(up, &p, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC | libc::O_NOFOLLOW, 0o700).map(drop)
    }

    /// Removes whiteouts of `name` from upper directory `ppath`.
    fn clear_whiteout(&self, ppath: &CStr, name: &OsStr) -> io::Result<()> {
        let up = self.layers[0].fd();
        let p = sys::join(ppath, name)?;
        if let Ok(st) = sys::fstatat(up, &p) {
            if sys::is_whiteout(&st) {
                sys::unlinkat(up, &p, false)?;
            }
        }
        let w = sys::join(ppath, &wh_name(name))?;
        match sys::unlinkat(up, &w, false) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    fn make_opaque(&self, dir: BorrowedFd<'_>, rel: &CStr, abs: &CStr) -> io::Result<()> {
        if self.trusted_ok.load(Ordering::Relaxed) {
            match sys::setxattr(XTarget::Path(abs), OPAQUE_XATTRS[0], b"y", 0) {
                Ok(()) => {}
                Err(_) => self.trusted_ok.store(false, Ordering::Relaxed),
            }
        }
        if !self.trusted_ok.load(Ordering::Relaxed) {
            let _ = sys::setxattr(XTarget::Path(abs), OPAQUE_XATTRS[2], b"y", 0);
        }
        let m = sys::join(rel, OsStr::from_bytes(OPQ_MARKER))?;
        sys::openat(dir, &m, libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW, 0o700).map(drop)
    }

    /// Moves an upper directory out of the way into the work dir and deletes it there.
    fn remove_upper_dir(&self, path: &CStr) -> io::Result<()> {
        let up = self.layers[0].fd();
        match sys::unlinkat(up, path, true) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {}
            Err(e) => return Err(e),
        }
        let work = self.work().map_err(|_| sys::err(libc::EROFS))?;
        let tmp = self.tmp_name();
        sys::renameat2(up, path, work, &tmp, 0)?;
        let _ = std::fs::remove_dir_all(OsStr::from_bytes(self.work_abs(&tmp)?.to_bytes()));
        Ok(())
    }

    // ------------------------------------------------------------------ creation

    /// Caller's owner, as on-disk ids.
    fn owner_for(&self, req: &Request, parent_upper: &CStr) -> (u32, u32) {
        self.owner_in(req, sys::fstatat(self.layers[0].fd(), parent_upper).ok())
    }

    /// [`Self::owner_for`] given the parent directory's stat.
    fn owner_in(&self, req: &Request, parent: Option<libc::stat>) -> (u32, u32) {
        let uid = self.o.uid_map.to_disk(req.uid()).unwrap_or(u32::MAX);
        let mut gid = self.o.gid_map.to_disk(req.gid()).unwrap_or(u32::MAX);
        if let Some(st) = parent {
            if st.st_mode & libc::S_ISGID != 0 {
                gid = st.st_gid;
            }
        }
        (uid, gid)
    }

    /// Prepares `name` in `parent` for creation: parent in upper, name free, whiteouts gone.
    /// Returns the parent info and whether a lower layer has the name.
    fn prepare_create(&self, parent: u64, name: &OsStr) -> Result<(Info, bool), Errno> {
        if name.as_bytes().starts_with(WH_PREFIX) {
            return Err(Errno::EINVAL);
        }
        self.copy_up(parent, true)?;
        let p = self.info(parent)?;
        if p.fmt != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        // One pass over the layers: is the name visible, is it in a lower layer, and is
        // there a whiteout in the upper layer to remove.
        let cname = sys::cstr(name.as_bytes()).map_err(ioerr)?;
        let whname = sys::cstr(wh_name(name).as_bytes()).map_err(ioerr)?;
        let (mut hidden, mut below, mut upper_wh) = (false, false, false);
        for l in p.layer..=p.bottom {
            match self.probe(l, &p.path, &cname, Some(&whname))? {
                Probe::Found(st) => {
                    below |= l > 0;
                    if sys::is_whiteout(&st) {
                        upper_wh |= l == 0;
                        hidden = true;
                    } else if !hidden {
                        return Err(Errno::EEXIST);
                    }
                }
                Probe::Whiteout => {
                    if !hidden {
                        upper_wh |= l == 0;
                        hidden = true;
                    }
                }
                Probe::Absent => {}
            }
        }
        if upper_wh {
            self.clear_whiteout(&p.path, name).map_err(ioerr)?;
        }
        Ok((p, below))
    }

    /// Records a new upper object and returns its attributes.
    fn finish_create(&self, parent: u64, name: &OsStr, path: &CStr, st: &libc::stat) -> FileAttr {
        let f = Found { layer: 0, st: *st, bottom: 0 };
        let id = self.remember(parent, name, &f, false, None);
        self.attr(id, 0, path, st)
    }

    fn finish_create_at(&self, parent: u64, name: &OsStr, path: &CStr) -> Result<FileAttr, Errno> {
        let st = sys::fstatat(self.layers[0].fd(), path).map_err(ioerr)?;
        Ok(self.finish_create(parent, name, path, &st))
    }

    fn do_mkdir(&self, req: &Request, parent: u64, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        let _ns = ml(&self.ns);
        let (p, below) = self.prepare_create(parent, name)?;
        let up = self.upper()?;
        let path = sys::join(&p.path, name).map_err(ioerr)?;
        let owner = self.owner_for(req, &p.path);
        if below {
            // A lower directory of that name must stay hidden: build it opaque, then rename.
            let work = self.work()?;
            let tmp = self.tmp_name();
            let tabs = self.work_abs(&tmp).map_err(ioerr)?;
            let r = (|| -> io::Result<()> {
                sys::mkdirat(work, &tmp, mode & 0o7777)?;
                self.make_opaque(work, &tmp, &tabs)?;
                self.set_owner(work, &tmp, &tabs, libc::S_IFDIR, 0, Some(owner), None)?;
                sys::renameat2(work, &tmp, up.fd(), &path, libc::RENAME_NOREPLACE)
            })();
            if let Err(e) = r {
                let _ = std::fs::remove_dir_all(OsStr::from_bytes(tabs.to_bytes()));
                return Err(ioerr(e));
            }
        } else {
            sys::mkdirat(up.fd(), &path, mode & 0o7777).map_err(ioerr)?;
            let abs = up.abs(&path).map_err(ioerr)?;
            if let Err(e) = self.set_owner(up.fd(), &path, &abs, libc::S_IFDIR, 0, Some(owner), None) {
                let _ = sys::unlinkat(up.fd(), &path, true);
                return Err(ioerr(e));
            }
        }
        self.finish_create_at(parent, name, &path)
    }

    fn do_mknod(&self, req: &Request, parent: u64, name: &OsStr, mode: u32, rdev: u32) -> Result<FileAttr, Errno> {
        let _ns = ml(&self.ns);
        let (p, _) = self.prepare_create(parent, name)?;
        let up = self.upper()?;
        let path = sys::join(&p.path, name).map_err(ioerr)?;
        sys::mknodat(up.fd(), &path, mode, rdev as libc::dev_t).map_err(ioerr)?;
        let abs = up.abs(&path).map_err(ioerr)?;
        let owner = self.owner_for(req, &p.path);
        if let Err(e) = self.set_owner(up.fd(), &path, &abs, mode & libc::S_IFMT, rdev as u64, Some(owner), None) {
            let _ = sys::unlinkat(up.fd(), &path, false);
            return Err(ioerr(e));
        }
        self.finish_create_at(parent, name, &path)
    }

    fn do_symlink(&self, req: &Request, parent: u64, name: &OsStr, target: &Path) -> Result<FileAttr, Errno> {
        let _ns = ml(&self.ns);
        let (p, _) = self.prepare_create(parent, name)?;
        let up = self.upper()?;
        let path = sys::join(&p.path, name).map_err(ioerr)?;
        let t = sys::cstr(target.as_os_str().as_bytes()).map_err(ioerr)?;
        sys::symlinkat(&t, up.fd(), &path).map_err(ioerr)?;
        let abs = up.abs(&path).map_err(ioerr)?;
        let owner = self.owner_for(req, &p.path);
        if let Err(e) = self.set_owner(up.fd(), &path, &abs, libc::S_IFLNK, 0, Some(owner), None) {
            let _ = sys::unlinkat(up.fd(), &path, false);
            return Err(ioerr(e));
        }
        self.finish_create_at(parent, name, &path)
    }

    fn do_link(&self, id: u64, newparent: u64, newname: &OsStr) -> Result<FileAttr, Errno> {
        let _ns = ml(&self.ns);
        self.copy_up(id, true)?;
        let (p, _) = self.prepare_create(newparent, newname)?;
        let src = self.info(id)?;
        if src.fmt == libc::S_IFDIR {
            return Err(Errno::EPERM);
        }
        let up = self.upper()?;
        let path = sys::join(&p.path, newname).map_err(ioerr)?;
        sys::linkat(up.fd(), &src.path, up.fd(), &path).map_err(ioerr)?;
        let st = sys::fstatat(up.fd(), &path).map_err(ioerr)?;
        {
            let mut g = wl(&self.inodes);
            let k = (newparent, newname.to_owned());
            g.children.insert(k.clone(), id);
            if let Some(n) = g.nodes.get_mut(&id) {
                n.names.push(k);
                n.lookups += 1;
            }
        }
        Ok(self.attr(id, 0, &path, &st))
    }

    fn do_create(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, OwnedFd, u64), Errno> {
        let _ns = ml(&self.ns);
        let (p, _) = self.prepare_create(parent, name)?;
        let up = self.upper()?;
        let path = sys::join(&p.path, name).map_err(ioerr)?;
        let cname = sys::cstr(name.as_bytes()).map_err(ioerr)?;
        // The upper parent is resolved (safely) once: the file is made, owned and looked at
        // through that descriptor and its one-component name.
        let pfd = if p.path.to_bytes() == b"." { None } else { Some(sys::open_dir(up.fd(), &p.path).map_err(ioerr)?) };
        let dir = pfd.as_ref().map(|d| d.as_fd()).unwrap_or(up.fd());
        let fl = self.open_flags(flags) | libc::O_CREAT | libc::O_EXCL;
        let fd = sys::openat(dir, &cname, fl, mode & 0o7777).map_err(ioerr)?;
        let owner = self.owner_in(req, sys::fstat(dir).ok());
        let mut st = sys::fstat(fd.as_fd()).map_err(ioerr)?;
        if (st.st_uid, st.st_gid) != owner || up.stat_mode != StatMode::Real {
            let abs = sys::proc_path(dir, &cname).map_err(ioerr)?;
            if let Err(e) = self.set_owner(dir, &cname, &abs, libc::S_IFREG, 0, Some(owner), None) {
                let _ = sys::unlinkat(dir, &cname, false);
                return Err(ioerr(e));
            }
            st = sys::fstat(fd.as_fd()).map_err(ioerr)?;
        }
        let attr = self.finish_create(parent, name, &path, &st);
        let id = attr.ino.0;
        if let Some(n) = wl(&self.inodes).nodes.get_mut(&id) {
            n.no_caps = true;
        }
        Ok((attr, fd, id))
    }

    /// The mode to create an object with in directory `parent`: the caller's umask applied,
    /// except under a directory with a default ACL while the kernel enforces ACLs: the layer
    /// then applies that ACL (the daemon's own umask is 0), as a local file system would.
    fn create_mode(&self, parent: u64, mode: u32, umask: u32) -> u32 {
        if self.posix_acl.load(Ordering::Relaxed) {
            let has_default = self
                .info(parent)
                .ok()
                .and_then(|i| self.layers[i.layer].abs(&i.path).ok())
                .is_some_and(|abs| sys::getxattr(XTarget::Path(&abs), c"system.posix_acl_default", 0).is_ok());
            if has_default {
                return mode;
            }
        }
        mode & !(umask & 0o777)
    }

    fn open_flags(&self, flags: i32) -> i32 {
        let mut f = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC);
        if self.writeback.load(Ordering::Relaxed) {
            // The kernel sends absolute offsets and may read to fill pages of a written file.
            f &= !libc::O_APPEND;
            if f & libc::O_ACCMODE == libc::O_WRONLY {
                f = (f & !libc::O_ACCMODE) | libc::O_RDWR;
            }
        }
        f | libc::O_NOFOLLOW
    }

    // ------------------------------------------------------------------ removal

    fn do_remove(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let _ns = ml(&self.ns);
        self.settle_child(parent, name)?;
        let p = self.info(parent)?;
        let f = self.find_child(&p, name)?.ok_or(Errno::ENOENT)?;
        let is_dir = sys::fmt(&f.st) == libc::S_IFDIR;
        if dir && !is_dir {
            return Err(Errno::ENOTDIR);
        }
        if !dir && is_dir {
            return Err(Errno::EISDIR);
        }
        let path = sys::join(&p.path, name).map_err(ioerr)?;
        if is_dir {
            let ci = Info { path: path.clone(), layer: f.layer, bottom: f.bottom, fmt: libc::S_IFDIR };
            if !self.list(&ci)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
        }
        self.copy_up(parent, true)?;
        let p = self.info(parent)?;
        let up = self.upper()?;
        let below = self.lower_has(&p, name);
        if f.layer == 0 {
            if is_dir {
                self.remove_upper_dir(&path).map_err(ioerr)?;
            } else if below && self.mknod_wh.load(Ordering::Relaxed) {
                // Replace the file by a whiteout in one rename.
                let work = self.work()?;
                let tmp = self.tmp_name();
                match sys::mknodat(work, &tmp, libc::S_IFCHR, 0) {
                    Ok(()) => {
                        if let Err(e) = sys::renameat2(work, &tmp, up.fd(), &path, 0) {
                            let _ = sys::unlinkat(work, &tmp, false);
                            return Err(ioerr(e));
                        }
                        self.forget_name(parent, name);
                        return Ok(());
                    }
                    Err(_) => sys::unlinkat(up.fd(), &path, false).map_err(ioerr)?,
                }
            } else {
                sys::unlinkat(up.fd(), &path, false).map_err(ioerr)?;
            }
        }
        if below {
            self.create_whiteout(&p.path, name).map_err(ioerr)?;
        }
        self.forget_name(parent, name);
        Ok(())
    }

    fn forget_name(&self, parent: u64, name: &OsStr) {
        wl(&self.inodes).drop_alias(parent, name);
    }

    // ------------------------------------------------------------------ rename

    /// Copies the object `name` of `parent` (found as `f`, at `path`) into the upper layer:
    /// through its node when the kernel knows it, else directly. Caller holds `ns`.
    fn copy_up_child(&self, parent: u64, name: &OsStr, f: &Found, path: &CStr) -> Result<(), Errno> {
        let id = rl(&self.inodes).children.get(&(parent, name.to_owned())).copied();
        match id {
            Some(id) => self.copy_up(id, true),
            None => {
                self.copy_up(parent, true)?;
                if f.layer != 0 {
                    self.copy_object(f.layer, path, true).map_err(ioerr)?;
                }
                Ok(())
            }
        }
    }

    /// renameat2(RENAME_EXCHANGE): both names stay, their objects swap. Objects in lower
    /// layers are copied up first (directories must be wholly in the upper layer, else
    /// EXDEV, as for rename); a directory that lands on a name a lower layer has becomes
    /// opaque. No whiteout is needed: both names still exist.
    fn do_exchange(&self, parent: u64, name: &OsStr, np: u64, nn: &OsStr) -> Result<(), Errno> {
        let _ns = ml(&self.ns);
        self.settle_child(parent, name)?;
        self.settle_child(np, nn)?;
        let p = self.info(parent)?;
        let q = self.info(np)?;
        let a = self.find_child(&p, name)?.ok_or(Errno::ENOENT)?;
        let b = self.find_child(&q, nn)?.ok_or(Errno::ENOENT)?;
        let adir = sys::fmt(&a.st) == libc::S_IFDIR;
        let bdir = sys::fmt(&b.st) == libc::S_IFDIR;
        if (adir && (a.layer != 0 || a.bottom != 0)) || (bdir && (b.layer != 0 || b.bottom != 0)) {
            return Err(Errno::EXDEV);
        }
        if parent == np && name == nn {
            return Ok(());
        }
        let apath = sys::join(&p.path, name).map_err(ioerr)?;
        let bpath = sys::join(&q.path, nn).map_err(ioerr)?;
        self.copy_up_child(parent, name, &a, &apath)?;
        self.copy_up_child(np, nn, &b, &bpath)?;
        self.copy_up(np, true)?;
        let p = self.info(parent)?;
        let q = self.info(np)?;
        let up = self.upper()?;
        // Directories moving onto a name that lower layers have must hide them there.
        if adir && self.lower_has(&q, nn) {
            let abs = up.abs(&apath).map_err(ioerr)?;
            self.make_opaque(up.fd(), &apath, &abs).map_err(ioerr)?;
        }
        if bdir && self.lower_has(&p, name) {
            let abs = up.abs(&bpath).map_err(ioerr)?;
            self.make_opaque(up.fd(), &bpath, &abs).map_err(ioerr)?;
        }
        sys::renameat2(up.fd(), &apath, up.fd(), &bpath, libc::RENAME_EXCHANGE).map_err(ioerr)?;
        let mut g = wl(&self.inodes);
        let ka = (parent, name.to_owned());
        let kb = (np, nn.to_owned());
        let ia = g.children.remove(&ka);
        let ib = g.children.remove(&kb);
        for (id, from, to) in [(ia, &ka, &kb), (ib, &kb, &ka)] {
            let Some(id) = id else { continue };
            g.children.insert(to.clone(), id);
            if let Some(n) = g.nodes.get_mut(&id) {
                for x in n.names.iter_mut().filter(|x| *x == from) {
                    *x = to.clone();
                }
                n.layer = 0;
            }
        }
        Ok(())
    }

    fn do_rename(&self, parent: u64, name: &OsStr, np: u64, nn: &OsStr, flags: RenameFlags) -> Result<(), Errno> {
        if nn.as_bytes().starts_with(WH_PREFIX) {
            return Err(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            if flags.intersects(RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::EINVAL);
            }
            return self.do_exchange(parent, name, np, nn);
        }
        // RENAME_WHITEOUT: the source name is left deleted (a whiteout in the upper layer)
        // even when no lower layer has it.
        let keep_wh = flags.contains(RenameFlags::RENAME_WHITEOUT);
        let _ns = ml(&self.ns);
        self.settle_child(parent, name)?;
        self.settle_child(np, nn)?;
        let p = self.info(parent)?;
        let src = self.find_child(&p, name)?.ok_or(Errno::ENOENT)?;
        let sdir = sys::fmt(&src.st) == libc::S_IFDIR;
        let q = self.info(np)?;
        let dst = self.find_child(&q, nn)?;
        if sdir && (src.layer != 0 || src.bottom != 0) {
            return Err(Errno::EXDEV);
        }
        let spath = sys::join(&p.path, name).map_err(ioerr)?;
        let dpath = sys::join(&q.path, nn).map_err(ioerr)?;
        if let Some(d) = &dst {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            let ddir = sys::fmt(&d.st) == libc::S_IFDIR;
            if sdir && !ddir {
                return Err(Errno::ENOTDIR);
            }
            if !sdir && ddir {
                return Err(Errno::EISDIR);
            }
            if d.layer == src.layer && d.st.st_ino == src.st.st_ino && d.st.st_dev == src.st.st_dev {
                return Ok(());
            }
            if ddir {
                let di = Info { path: dpath.clone(), layer: d.layer, bottom: d.bottom, fmt: libc::S_IFDIR };
                if !self.list(&di)?.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
            }
        }
        // The source node (the kernel looked it up before renaming).
        self.copy_up_child(parent, name, &src, &spath)?;
        self.copy_up(np, true)?;
        let p = self.info(parent)?;
        let q = self.info(np)?;
        let up = self.upper()?;
        let src_below = keep_wh || self.lower_has(&p, name);
        let dst_below = self.lower_has(&q, nn);
        // Clear the destination in the upper layer.
        if let Ok(st) = sys::fstatat(up.fd(), &dpath) {
            if sys::fmt(&st) == libc::S_IFDIR {
                self.remove_upper_dir(&dpath).map_err(ioerr)?;
            } else if sys::is_whiteout(&st) || sdir {
                sys::unlinkat(up.fd(), &dpath, false).map_err(ioerr)?;
            }
        }
        let _ = sys::unlinkat(up.fd(), &sys::join(&q.path, &wh_name(nn)).map_err(ioerr)?, false);
        if sdir && dst_below {
            let abs = up.abs(&spath).map_err(ioerr)?;
            self.make_opaque(up.fd(), &spath, &abs).map_err(ioerr)?;
        }
        let mut done = false;
        if src_below && self.mknod_wh.load(Ordering::Relaxed) {
            done = sys::renameat2(up.fd(), &spath, up.fd(), &dpath, libc::RENAME_WHITEOUT).is_ok();
        }
        if !done {
            sys::renameat2(up.fd(), &spath, up.fd(), &dpath, 0).map_err(ioerr)?;
            if src_below {
                self.create_whiteout(&p.path, name).map_err(ioerr)?;
            }
        }
        let mut g = wl(&self.inodes);
        g.drop_alias(np, nn);
        let k = (parent, name.to_owned());
        if let Some(id) = g.children.remove(&k) {
            let nk = (np, nn.to_owned());
            g.children.insert(nk.clone(), id);
            if let Some(n) = g.nodes.get_mut(&id) {
                for x in n.names.iter_mut() {
                    if *x == k {
                        *x = nk.clone();
                    }
                }
                n.layer = 0;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ attributes

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        id: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let owner = if uid.is_some() || gid.is_some() {
            let du = match uid {
                Some(u) => self.o.uid_map.to_disk(u).ok_or(Errno::EINVAL)?,
                None => u32::MAX,
            };
            let dg = match gid {
                Some(g) => self.o.gid_map.to_disk(g).ok_or(Errno::EINVAL)?,
                None => u32::MAX,
            };
            Some((du, dg))
        } else {
            None
        };
        if self.unlinked(id) {
            return self.setattr_open(id, mode, owner, size, atime, mtime, fh);
        }
        if let (Some(p), None, None, None) = (self.pending(id), owner, mode, size) {
            // Times only (as the writeback cache sends at close): no need to wait for the copy.
            let mut st = p.lock();
            if !st.finished {
                let omit = libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT };
                if atime.is_some() {
                    sys::futimens(p.fd.as_fd(), &[timespec(atime), omit]).map_err(ioerr)?;
                }
                if mtime.is_some() {
                    let t = timespec(mtime);
                    st.mtime = if t.tv_nsec == libc::UTIME_NOW { lazy::now() } else { t };
                }
                drop(st);
                return self.pending_attr(id, &p);
            }
        }
        self.copy_up_locked(id, size != Some(0))?;
        let i = self.info(id)?;
        let up = self.upper()?;
        // The parent directory is resolved once for all the changes.
        let (parent, name) = self.split_path(0, &i.path)?;
        let dir = parent.as_ref().map(|p| p.as_fd()).unwrap_or(up.fd());
        let abs = sys::proc_path(dir, &name).map_err(ioerr)?;
        if let Some((du, dg)) = owner {
            if self.squashing() {
                let _ = self.set_owner(dir, &name, &abs, i.fmt, 0, Some((du, dg)), None);
            } else {
                self.set_owner(dir, &name, &abs, i.fmt, 0, Some((du, dg)), None).map_err(ioerr)?;
            }
        }
        if let Some(m) = mode {
            self.set_owner(dir, &name, &abs, i.fmt, 0, None, Some(m)).map_err(ioerr)?;
        }
        if let Some(sz) = size {
            let h = fh.and_then(|fh| rl(&self.files).get(&fh.0).cloned());
            match h {
                Some(h) if h.node == id => sys::ftruncate(h.fd.as_fd(), sz).map_err(ioerr)?,
                _ => {
                    let fd = sys::openat(dir, &name, libc::O_WRONLY | libc::O_NOFOLLOW, 0).map_err(ioerr)?;
                    sys::ftruncate(fd.as_fd(), sz).map_err(ioerr)?;
                }
            }
        }
        if atime.is_some() || mtime.is_some() {
            let t = [timespec(atime), timespec(mtime)];
            sys::utimensat(dir, &name, &t).map_err(ioerr)?;
        }
        match sys::fstatat(dir, &name) {
            Ok(st) => Ok(self.attr_at(id, 0, XTarget::Path(&abs), &st)),
            Err(_) => self.do_getattr(id, fh),
        }
    }

    /// The parent directory of `path` in layer `l`, opened beneath the layer root (`None`:
    /// the root itself), and the last component.
    fn split_path(&self, l: usize, path: &CStr) -> Result<(Option<OwnedFd>, CString), Errno> {
        let b = path.to_bytes();
        match b.iter().rposition(|c| *c == b'/') {
            None => Ok((None, path.to_owned())),
            Some(i) => {
                let parent = sys::cstr(&b[..i]).map_err(ioerr)?;
                let fd = sys::open_dir(self.layers[l].fd(), &parent).map_err(ioerr)?;
                Ok((Some(fd), sys::cstr(&b[i + 1..]).map_err(ioerr)?))
            }
        }
    }

    /// Before a change of xattr `name` of node `id`: if it is `security.capability`, no node
    /// of the same file is known to lack one any more.
    fn caps_may_change(&self, id: u64, name: &OsStr) {
        if name.as_bytes() != CAPS_XATTR {
            return;
        }
        let mut g = wl(&self.inodes);
        let Some(key) = g.nodes.get(&id).map(|n| n.key) else { return };
        for n in g.nodes.values_mut().filter(|n| n.key == key) {
            n.no_caps = false;
        }
    }

    fn xattr_target(&self, id: u64) -> Result<(sys::ProcPath, usize), Errno> {
        let i = self.info(id)?;
        Ok((self.layers[i.layer].abs(&i.path).map_err(ioerr)?, i.layer))
    }

    // ------------------------------------------------------------------ open files

    /// Opens node `id`: the file, its layer, and the pending lazy copy-up it belongs to.
    fn do_open(&self, id: u64, flags: i32) -> Result<(OwnedFd, usize, Option<Arc<Pending>>), Errno> {
        let acc = flags & libc::O_ACCMODE;
        let trunc = flags & libc::O_TRUNC != 0;
        let write = acc != libc::O_RDONLY || trunc;
        let mut pending = if trunc { None } else { self.pending(id) };
        if write && !trunc && pending.is_none() {
            pending = self.start_lazy(id)?;
        }
        if let Some(p) = pending {
            // The copy in the work directory, by its descriptor (it may be renamed meanwhile).
            let path = sys::cstr(format!("/proc/self/fd/{}", p.fd.as_raw_fd()).as_bytes()).map_err(ioerr)?;
            let f = self.open_flags(flags) & !libc::O_NOFOLLOW;
            let fd = sys::open_abs(&path, f).map_err(ioerr)?;
            return Ok((fd, 0, Some(p)));
        }
        if write {
            self.copy_up_locked(id, !trunc)?;
        }
        let i = self.info(id)?;
        let fd = sys::openat(self.layers[i.layer].fd(), &i.path, self.open_flags(flags), 0).map_err(ioerr)?;
        if trunc {
            sys::ftruncate(fd.as_fd(), 0).map_err(ioerr)?;
        }
        Ok((fd, i.layer, None))
    }

    fn add_handle(&self, h: Arc<FileH>) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        wl(&self.files).insert(fh, h);
        fh
    }

    /// A backing id for passthrough of `fd` (node `id`, file in `layer`), shared per node.
    /// `None` serves the open through the page cache: small files (the per-open cost of a
    /// backing file is larger than what it saves on them), and any open of a node that
    /// already has cached opens.
    fn backing_for(
        &self,
        id: u64,
        layer: usize,
        fd: BorrowedFd<'_>,
        open: impl FnOnce(BorrowedFd<'_>) -> io::Result<BackingId>,
    ) -> Result<Option<Arc<BackingId>>, Errno> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let size = sys::fstat(fd).map(|st| st.st_size as u64).unwrap_or(0);
        let mut g = wl(&self.inodes);
        let Some(n) = g.nodes.get_mut(&id) else { return Ok(None) };
        if let Some(b) = &mut n.backing {
            if b.layer == layer {
                b.opens += 1;
                return Ok(Some(b.id.clone()));
            }
            // The node was copied up while the lower file is open in passthrough mode; the
            // kernel allows one backing file per inode.
            tracing::warn!("open of a copied-up file while its lower copy is open: EBUSY");
            return Err(Errno::EBUSY);
        }
        if n.cached_opens > 0 || size < PASSTHROUGH_MIN {
            n.cached_opens += 1;
            return Ok(None);
        }
        match open(fd) {
            Ok(b) => {
                let b = Arc::new(b);
                n.backing = Some(Backing { id: b.clone(), opens: 1, layer });
                Ok(Some(b))
            }
            Err(e) => {
                tracing::info!("passthrough disabled: {e}");
                self.passthrough.store(false, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// The listing of open directory `fh` (node `id`), made on first use.
    fn dir_list(&self, id: u64, fh: u64) -> Result<Arc<Vec<DirEnt>>, Errno> {
        match ml(&self.dirs).get(&fh) {
            None => return Err(Errno::EBADF),
            Some(Some(l)) => return Ok(l.clone()),
            Some(None) => {}
        }
        let info = self.info(id)?;
        let list = Arc::new(self.list(&info)?);
        self.warm(&info, &list);
        if let Some(slot) = ml(&self.dirs).get_mut(&fh) {
            *slot = Some(list.clone());
        }
        Ok(list)
    }

    fn release_backing(&self, id: u64, backed: bool) {
        let mut g = wl(&self.inodes);
        if let Some(n) = g.nodes.get_mut(&id) {
            if !backed {
                n.cached_opens = n.cached_opens.saturating_sub(1);
            } else if let Some(b) = &mut n.backing {
                b.opens = b.opens.saturating_sub(1);
                if b.opens == 0 {
                    n.backing = None;
                }
            }
        }
    }

    /// Has the warm-up worker read the subdirectories of a fresh listing and look up their
    /// entries in the layer, in listing order, while the request threads answer for the
    /// directory itself: a walk (find, du, ls -R) goes into those subdirectories next, and on
    /// a cold cache most of it is the layer file system's name lookups and inode reads, which
    /// this takes off the request path. Only the kernel's caches are filled; every answer
    /// still comes from the request thread's own calls. Best effort: a busy worker (queue
    /// full) or an error skips the warm-up.
    fn warm(&self, i: &Info, list: &[DirEnt]) {
        if !list.iter().any(|e| e.fmt == libc::S_IFDIR) {
            return;
        }
        let tx = self.warmer.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Warm>(4);
            std::thread::Builder::new()
                .name("fuse-warm".into())
                .spawn(move || rx.iter().for_each(warm_subdirs))
                .ok()
                .map(|_| tx)
        });
        let Some(tx) = tx else { return };
        for l in i.layer..=i.bottom {
            let names: Vec<CString> = list
                .iter()
                .filter(|e| e.layer == l && e.fmt == libc::S_IFDIR)
                .take(WARM_MAX)
                .filter_map(|e| sys::cstr(e.name.as_bytes()).ok())
                .collect();
            if names.is_empty() {
                continue;
            }
            let Some(dir) = self.open_layer_dir(l, &i.path) else { continue };
            if tx.try_send(Warm { dir, names }).is_err() {
                return;
            }
        }
    }

    /// The directory `path` of layer `l` (`O_PATH`, no symlink followed); `None` if absent.
    fn open_layer_dir(&self, l: usize, path: &CStr) -> Option<OwnedFd> {
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        sys::openat(self.layers[l].fd(), path, flags, 0).ok()
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<FileH>, Errno> {
        rl(&self.files).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }
}

/// Copies the data of a regular file, keeping holes, with `copy_file_range` where it works.
fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, st: &libc::stat) -> io::Result<()> {
    let size = st.st_size as u64;
    if size == 0 {
        return Ok(());
    }
    let sparse = (st.st_blocks as u64) * 512 < size;
    if sparse {
        let mut pos: i64 = 0;
        loop {
            let start = match sys::lseek(src, pos, libc::SEEK_DATA) {
                Ok(s) => s,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                Err(_) => {
                    copy_range(src, dst, 0, size)?;
                    break;
                }
            };
            let end = sys::lseek(src, start, libc::SEEK_HOLE)?;
            copy_range(src, dst, start as u64, end as u64)?;
            pos = end;
            if end as u64 >= size {
                break;
            }
        }
        sys::ftruncate(dst, size)
    } else {
        copy_range(src, dst, 0, size)
    }
}

/// Removes a copy that will not be renamed into place: `tmp` in the work directory `work`
/// (`tmp_abs`, its absolute path, for a directory tree).
fn discard_tmp(work: BorrowedFd<'_>, tmp: &CStr, tmp_abs: &CStr, fmt: u32) {
    let _ = if fmt == libc::S_IFDIR {
        std::fs::remove_dir_all(OsStr::from_bytes(tmp_abs.to_bytes()))
    } else {
        sys::unlinkat(work, tmp, false)
    };
}

/// `pread` until `buf` is full or the end of the file.
fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match sys::pread(fd, &mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A read through a handle whose copy-up is pending: each range from the copy or from the
/// lower file (see `lazy`), under the pending copy's lock.
fn read_pending(p: &Pending, fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let st = p.lock();
    if st.failed {
        return Err(sys::err(libc::EIO));
    }
    let end = off + buf.len() as u64;
    let mut pos = off;
    while pos < end {
        let (lower, upto) = st.source(p.size, pos, end);
        let from = if lower { p.src.as_fd() } else { fd };
        let want = (upto - pos) as usize;
        let at = (pos - off) as usize;
        let n = pread_full(from, &mut buf[at..at + want], pos)?;
        pos += n as u64;
        if n < want {
            break;
        }
    }
    Ok((pos - off) as usize)
}

fn copy_range(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, start: u64, end: u64) -> io::Result<()> {
    let mut so = start as i64;
    let mut d_o = start as i64;
    while (so as u64) < end {
        let len = ((end - so as u64) as usize).min(1 << 30);
        match sys::copy_file_range(src, &mut so, dst, &mut d_o, len) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV)
                        | Some(libc::EINVAL)
                        | Some(libc::ENOSYS)
                        | Some(libc::EOPNOTSUPP)
                        | Some(libc::EPERM)
                ) =>
            {
                let mut buf = vec![0u8; 1 << 20];
                while (so as u64) < end {
                    let want = ((end - so as u64) as usize).min(buf.len());
                    let n = sys::pread(src, &mut buf[..want], so as u64)?;
                    if n == 0 {
                        return Ok(());
                    }
                    let mut w = 0;
                    while w < n {
                        w += sys::pwrite(dst, &buf[w..n], (d_o as u64) + w as u64)?;
                    }
                    so += n as i64;
                    d_o += n as i64;
                }
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

macro_rules! reply_err {
    ($reply:expr, $res:expr, $ok:ident => $body:expr) => {
        match $res {
            Ok($ok) => $body,
            Err(e) => $reply.error(e),
        }
    };
}

impl Filesystem for Overlay {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let caps = config.capabilities();
        let mut want = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_SPLICE_READ
            | InitFlags::FUSE_SPLICE_WRITE
            | InitFlags::FUSE_SPLICE_MOVE
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_MAX_PAGES
            // We drop setuid/setgid ourselves (below in write, and chown does it in the
            // layer): saves the kernel's GETATTR and GETXATTR(security.capability) rounds
            // before writes and chown.
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if !self.same_dev && !self.xino_hash {
            want |= InitFlags::FUSE_NO_EXPORT_SUPPORT;
        }
        // POSIX ACLs (as fuse-overlayfs, unless noacl): the kernel enforces them and passes
        // system.posix_acl_* through; with DONT_MASK it leaves the umask to us, which is
        // not applied under a directory with a default ACL (the layer applies that ACL).
        let acl = !self.o.noacl && !self.o.noxattrs && caps.contains(InitFlags::FUSE_POSIX_ACL);
        if acl {
            want |= InitFlags::FUSE_POSIX_ACL;
            if caps.contains(InitFlags::FUSE_DONT_MASK) {
                want |= InitFlags::FUSE_DONT_MASK;
            }
        }
        let mut passthrough = false;
        if self.want_passthrough && caps.contains(InitFlags::FUSE_PASSTHROUGH) && config.set_max_stack_depth(2).is_ok()
        {
            want |= InitFlags::FUSE_PASSTHROUGH;
            passthrough = true;
        }
        // The kernel refuses backing files on a connection with the writeback cache.
        if !passthrough && self.o.writeback && caps.contains(InitFlags::FUSE_WRITEBACK_CACHE) {
            want |= InitFlags::FUSE_WRITEBACK_CACHE;
            self.writeback.store(true, Ordering::Relaxed);
        }
        let _ = config.add_capabilities(want & caps);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        self.passthrough.store(passthrough, Ordering::Relaxed);
        self.posix_acl.store(acl, Ordering::Relaxed);
        tracing::info!(
            passthrough,
            acl,
            writeback = self.writeback.load(Ordering::Relaxed),
            "FUSE session initialised"
        );
        Ok(())
    }

    fn destroy(&mut self) {
        self.copies().wait();
        tracing::debug!(
            passthrough_opens = self.stats.passthrough_opens.load(Ordering::Relaxed),
            copy_ups = self.stats.copy_ups.load(Ordering::Relaxed),
            "unmounted"
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent.0, name) {
            Ok(a) => reply.entry(&self.ttl, &a, Generation(0)),
            // A negative entry (node id 0) the kernel may cache: every change goes through us.
            Err(e) if e.code() == libc::ENOENT => reply.entry(&self.ttl, &negative_attr(), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        wl(&self.inodes).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_err!(reply, self.do_getattr(ino.0, fh), a => reply.attr(&self.ttl, &a))
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.do_setattr(ino.0, mode, uid, gid, size, atime, mtime, fh);
        reply_err!(reply, r, a => reply.attr(&self.ttl, &a))
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.info(ino.0).and_then(|i| sys::readlinkat(self.layers[i.layer].fd(), &i.path).map_err(ioerr));
        reply_err!(reply, r, t => reply.data(&t))
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let r = self.do_mknod(req, parent.0, name, self.create_mode(parent.0, mode, umask), rdev);
        reply_err!(reply, r, a => reply.entry(&self.ttl, &a, Generation(0)))
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let r = self.do_mkdir(req, parent.0, name, self.create_mode(parent.0, mode, umask));
        reply_err!(reply, r, a => reply.entry(&self.ttl, &a, Generation(0)))
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_err!(reply, self.do_remove(parent.0, name, false), _x => reply.ok())
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_err!(reply, self.do_remove(parent.0, name, true), _x => reply.ok())
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let r = self.do_symlink(req, parent.0, link_name, target);
        reply_err!(reply, r, a => reply.entry(&self.ttl, &a, Generation(0)))
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_err!(reply, self.do_rename(parent.0, name, newparent.0, newname, flags), _x => reply.ok())
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let r = self.do_link(ino.0, newparent.0, newname);
        reply_err!(reply, r, a => reply.entry(&self.ttl, &a, Generation(0)))
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let id = ino.0;
        let (fd, layer, pending) = match self.do_open(id, flags.0) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        if pending.is_some() {
            // Served here while the copy is made (the kernel must not write it directly).
            if let Some(n) = wl(&self.inodes).nodes.get_mut(&id) {
                n.cached_opens += 1;
            }
            let fh = self.add_handle(Arc::new(FileH { fd, node: id, backed: false, pending }));
            return reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH);
        }
        match self.backing_for(id, layer, fd.as_fd(), |fd| reply.open_backing(fd)) {
            Ok(Some(b)) => {
                let fh = self.add_handle(Arc::new(FileH { fd, node: id, backed: true, pending: None }));
                self.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
                reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &b);
            }
            Ok(None) => {
                let fh = self.add_handle(Arc::new(FileH { fd, node: id, backed: false, pending: None }));
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0u8; size as usize];
        let r = match &h.pending {
            Some(p) => read_pending(p, h.fd.as_fd(), &mut buf, offset),
            None => pread_full(h.fd.as_fd(), &mut buf, offset),
        };
        match r {
            Ok(got) => reply.data(&buf[..got]),
            Err(e) => reply.error(ioerr(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Ok(st) = sys::fstat(h.fd.as_fd()) {
                let mut m = st.st_mode & 0o7777 & !libc::S_ISUID;
                if m & libc::S_IXGRP != 0 {
                    m &= !libc::S_ISGID;
                }
                if m != st.st_mode & 0o7777 {
                    let _ = sys::fchmod(h.fd.as_fd(), m);
                }
            }
        }
        // A pending copy-up must not copy the lower data over this write (see `lazy`).
        let mut pst = h.pending.as_ref().map(|p| (p.lock(), p.size));
        if let Some((st, size)) = &mut pst {
            if st.failed {
                return reply.error(Errno::EIO);
            }
            st.will_write(*size, offset, offset + data.len() as u64);
        }
        let mut done = 0;
        while done < data.len() {
            match sys::pwrite(h.fd.as_fd(), &data[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return reply.error(ioerr(e)),
            }
        }
        drop(pst);
        reply.written(done as u32);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = wl(&self.files).remove(&fh.0);
        if let Some(h) = h {
            self.release_backing(h.node, h.backed);
        }
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        // A pending copy-up is completed first: synced data is in the upper layer.
        let h = match self.settled_handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        if !self.o.fsync {
            return reply.ok();
        }
        let r = sys::fsync(h.fd.as_fd(), datasync).map_err(ioerr);
        reply_err!(reply, r, _x => reply.ok())
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.info(ino.0) {
            Ok(i) if i.fmt != libc::S_IFDIR => reply.error(Errno::ENOTDIR),
            Ok(_) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                ml(&self.dirs).insert(fh, None);
                // The kernel may keep listings: every change of a directory goes through it.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let list = match self.dir_list(ino.0, fh.0) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        // Numbers from file handles or origins need the entries' directories, opened once
        // per layer.
        let (dir_path, merged) = if self.xino_hash || (self.has_upper && self.layers.len() > 1) {
            self.info(ino.0).ok().map(|i| (Some(i.path), i.bottom > 0)).unwrap_or((None, false))
        } else {
            (None, false)
        };
        let mut dirfds: HashMap<usize, Option<OwnedFd>> = HashMap::new();
        let mut off = offset;
        if off == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            if reply.add(ino, 2, FileType::Directory, "..") {
                return reply.ok();
            }
            off = 2;
        }
        for (i, e) in list.iter().enumerate().skip((off - 2) as usize) {
            // The number stat shows: the node's when the kernel knows the entry (it keeps its
            // number across a copy-up); else one that takes no counter entry (which only a
            // node's FORGET would free).
            let known = {
                let g = rl(&self.inodes);
                g.children.get(&(ino.0, e.name.clone())).filter(|id| g.nodes.contains_key(id)).copied()
            };
            let ino = match known {
                Some(id) => id,
                None => {
                    let name = sys::cstr(e.name.as_bytes()).ok();
                    let dfd = match (&dir_path, &name) {
                        (Some(dp), Some(_)) if self.xino_hash || (merged && self.origin_candidate(e.layer, e.fmt)) => {
                            dirfds.entry(e.layer).or_insert_with(|| self.open_layer_dir(e.layer, dp)).as_ref()
                        }
                        _ => None,
                    };
                    let at = dfd.zip(name.as_deref()).map(|(d, n)| At { dir: d.as_fd(), name: n });
                    let src = self.num_src(e.layer, at, None, e.ino, e.fmt, merged);
                    let key = (self.layers[e.layer].dev_idx, e.ino);
                    let g = rl(&self.inodes);
                    self.ino_peek(&g, key, &src).unwrap_or_else(|guess| guess)
                }
            };
            if reply.add(INodeNo(ino), i as u64 + 3, kind_of(e.fmt), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let list = match self.dir_list(ino.0, fh.0) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let dir = match self.info(ino.0) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let mut off = offset;
        if off < 2 {
            if let Ok(a) = self.do_getattr(ino.0, None) {
                if off == 0 && reply.add(ino, 1, ".", &self.ttl, &a, Generation(0)) {
                    return reply.ok();
                }
                if reply.add(ino, 2, "..", &self.ttl, &a, Generation(0)) {
                    return reply.ok();
                }
            }
            off = 2;
        }
        // The directory opened once per layer (resolving its path costs an openat2 each time).
        let mut dirfds: HashMap<usize, Option<OwnedFd>> = HashMap::new();
        for (i, e) in list.iter().enumerate().skip((off - 2) as usize) {
            let Ok(path) = sys::join(&dir.path, &e.name) else { continue };
            let dfd = dirfds.entry(e.layer).or_insert_with(|| self.open_layer_dir(e.layer, &dir.path));
            let Some(dfd) = dfd else { continue };
            let Ok(name) = sys::cstr(e.name.as_bytes()) else { continue };
            let Ok(st) = sys::fstatat(dfd.as_fd(), &name) else { continue };
            let bottom = if sys::fmt(&st) == libc::S_IFDIR {
                self.compute_bottom(&path, Some((&dir.path, &e.name)), e.layer, dir.bottom)
            } else {
                e.layer
            };
            let f = Found { layer: e.layer, st, bottom };
            let id = self.remember(ino.0, &e.name, &f, true, Some(At { dir: dfd.as_fd(), name: &name }));
            let a = match self.pending(id) {
                Some(p) => match self.pending_attr(id, &p) {
                    Ok(a) => a,
                    Err(_) => {
                        // Not handed to the kernel: no FORGET will come for this lookup.
                        wl(&self.inodes).forget(id, 1);
                        continue;
                    }
                },
                None => self.attr(id, e.layer, &path, &st),
            };
            if reply.add(INodeNo(id), i as u64 + 3, &e.name, &self.ttl, &a, Generation(0)) {
                wl(&self.inodes).forget(id, 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        ml(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match sys::fstatvfs(self.layers[0].fd()) {
            Ok(s) => {
                let namemax =
                    if self.mknod_wh.load(Ordering::Relaxed) { s.f_namemax } else { s.f_namemax.saturating_sub(4) };
                reply.statfs(
                    s.f_blocks,
                    s.f_bfree,
                    s.f_bavail,
                    s.f_files,
                    s.f_ffree,
                    s.f_bsize as u32,
                    namemax as u32,
                    s.f_frsize as u32,
                )
            }
            Err(e) => reply.error(ioerr(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if self.o.noxattrs {
            // ENOSYS: the kernel stops asking (no GETXATTR round trips before writes).
            return reply.error(Errno::ENOSYS);
        }
        if is_private_xattr(name.as_bytes()) {
            return reply.error(Errno::EPERM);
        }
        self.caps_may_change(ino.0, name);
        let r = (|| {
            // ACL entries name shown ids: stored as on-disk ids under uidmapping/gidmapping.
            let mapped;
            let value = if is_acl_xattr(name.as_bytes()) && self.maps_ids() {
                let (u, g) = (&self.o.uid_map, &self.o.gid_map);
                mapped = map_acl(value, |i| u.to_disk(i), |i| g.to_disk(i)).ok_or(Errno::EINVAL)?;
                &mapped[..]
            } else {
                value
            };
            self.copy_up_locked(ino.0, true)?;
            let (abs, _) = self.xattr_target(ino.0)?;
            let n = sys::cstr(name.as_bytes()).map_err(ioerr)?;
            sys::setxattr(XTarget::Path(&abs), &n, value, flags).map_err(ioerr)?;
            if name.as_bytes() == b"system.posix_acl_access" {
                let fmt = self.info(ino.0)?.fmt;
                self.acl_sets_override_mode(&abs, fmt, value).map_err(ioerr)?;
            }
            Ok(())
        })();
        reply_err!(reply, r, _x => reply.ok())
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if self.o.noxattrs {
            // ENOSYS: the kernel stops asking (no GETXATTR round trips before writes).
            return reply.error(Errno::ENOSYS);
        }
        if is_private_xattr(name.as_bytes()) {
            return reply.error(Errno::ENODATA);
        }
        if name.as_bytes() == CAPS_XATTR && rl(&self.inodes).nodes.get(&ino.0).is_some_and(|n| n.no_caps) {
            return reply.error(Errno::ENODATA);
        }
        let r = (|| {
            let (abs, _) = self.xattr_target(ino.0)?;
            let n = sys::cstr(name.as_bytes()).map_err(ioerr)?;
            if is_acl_xattr(name.as_bytes()) && self.maps_ids() {
                // Same size either way: the ids inside are mapped to the shown ones.
                let v = sys::getxattr_full(XTarget::Path(&abs), &n).map_err(ioerr)?.ok_or(Errno::ENODATA)?;
                let (u, g) = (&self.o.uid_map, &self.o.gid_map);
                let v = map_acl(&v, |i| Some(u.to_shown(i)), |i| Some(g.to_shown(i))).ok_or(Errno::EIO)?;
                if size != 0 && v.len() > size as usize {
                    return Err(Errno::ERANGE);
                }
                return Ok(v);
            }
            sys::getxattr(XTarget::Path(&abs), &n, size as usize).map_err(ioerr)
        })();
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if self.o.noxattrs {
            // ENOSYS: the kernel stops asking (no GETXATTR round trips before writes).
            return reply.error(Errno::ENOSYS);
        }
        let r = (|| {
            let (abs, _) = self.xattr_target(ino.0)?;
            sys::listxattr(&abs).map_err(ioerr)
        })();
        match r {
            Ok(list) => {
                let mut out = Vec::new();
                for n in list.split(|b| *b == 0).filter(|n| !n.is_empty() && !is_private_xattr(n)) {
                    out.extend_from_slice(n);
                    out.push(0);
                }
                if size == 0 {
                    reply.size(out.len() as u32)
                } else if out.len() > size as usize {
                    reply.error(Errno::ERANGE)
                } else {
                    reply.data(&out)
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.o.noxattrs {
            // ENOSYS: the kernel stops asking (no GETXATTR round trips before writes).
            return reply.error(Errno::ENOSYS);
        }
        if is_private_xattr(name.as_bytes()) {
            return reply.error(Errno::ENODATA);
        }
        self.caps_may_change(ino.0, name);
        let r = (|| {
            self.copy_up_locked(ino.0, true)?;
            let (abs, _) = self.xattr_target(ino.0)?;
            let n = sys::cstr(name.as_bytes()).map_err(ioerr)?;
            sys::removexattr(&abs, &n).map_err(ioerr)
        })();
        reply_err!(reply, r, _x => reply.ok())
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (a, fd, id) = match self.do_create(req, parent.0, name, self.create_mode(parent.0, mode, umask), flags) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        match self.backing_for(id, 0, fd.as_fd(), |fd| reply.open_backing(fd)) {
            Ok(Some(b)) => {
                let fh = self.add_handle(Arc::new(FileH { fd, node: id, backed: true, pending: None }));
                self.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
                reply.created_passthrough(&self.ttl, &a, Generation(0), FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &b);
            }
            Ok(None) => {
                let fh = self.add_handle(Arc::new(FileH { fd, node: id, backed: false, pending: None }));
                reply.created(
                    &self.ttl,
                    &a,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.settled_handle(fh).and_then(|h| sys::fallocate(h.fd.as_fd(), mode, offset, length).map_err(ioerr));
        reply_err!(reply, r, _x => reply.ok())
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        let r = self.settled_handle(fh).and_then(|h| sys::lseek(h.fd.as_fd(), offset, whence).map_err(ioerr));
        reply_err!(reply, r, o => reply.offset(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_updates_acl_mask() {
        let ent = |tag: u16, perm: u16, id: u32| -> Vec<u8> {
            let mut e = tag.to_le_bytes().to_vec();
            e.extend(perm.to_le_bytes());
            e.extend(id.to_le_bytes());
            e
        };
        let acl = |ents: &[Vec<u8>]| -> Vec<u8> {
            let mut v = 2u32.to_le_bytes().to_vec();
            ents.iter().for_each(|e| v.extend(e));
            v
        };
        let u = u32::MAX;
        let with_mask = acl(&[ent(1, 7, u), ent(2, 6, 1001), ent(4, 4, u), ent(0x10, 6, u), ent(0x20, 4, u)]);
        let want = acl(&[ent(1, 6, u), ent(2, 6, 1001), ent(4, 4, u), ent(0x10, 4, u), ent(0x20, 0, u)]);
        assert_eq!(acl_chmod(&with_mask, 0o640).unwrap(), want);
        let minimal = acl(&[ent(1, 6, u), ent(4, 4, u), ent(0x20, 4, u)]);
        assert_eq!(acl_chmod(&minimal, 0o750).unwrap(), acl(&[ent(1, 7, u), ent(4, 5, u), ent(0x20, 0, u)]));
        assert!(acl_chmod(b"bad", 0o644).is_none());
        assert_eq!(acl_mode(&with_mask), Some(0o764));
        assert_eq!(acl_mode(&minimal), Some(0o644));
    }

    #[test]
    fn override_values() {
        let o = Override::parse(b"1000:1011:0644:file").unwrap();
        assert_eq!((o.uid, o.gid, o.mode, o.kind), (1000, 1011, 0o644, Some((libc::S_IFREG, 0))));
        let o = Override::parse(b"1005:1016:0600:block-8-0").unwrap();
        assert_eq!(o.kind, Some((libc::S_IFBLK, libc::makedev(8, 0))));
        let o = Override::parse(b"0:0:4755").unwrap();
        assert_eq!((o.mode, o.kind), (0o4755, None));
        assert_eq!(
            Override::parse(b"1006:1017:0600:char-1-3").unwrap().format(libc::S_IFCHR, libc::makedev(1, 3)),
            "1006:1017:0600:char-1-3"
        );
        assert!(Override::parse(b"x:0:0").is_none());
    }

    #[test]
    fn acl_ids_are_mapped() {
        // version 2; USER_OBJ rw; USER 1500 r; GROUP 77 r; MASK r; OTHER none
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in
            [(1u16, 6u16, u32::MAX), (2, 4, 1500), (8, 4, 77), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)]
        {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let m = map_acl(&v, |u| u.checked_sub(1000), |g| Some(g + 1)).unwrap();
        assert_eq!(&m[4 + 8 + 4..4 + 8 + 8], &500u32.to_le_bytes());
        assert_eq!(&m[4 + 16 + 4..4 + 16 + 8], &78u32.to_le_bytes());
        assert_eq!(&m[4..12], &v[4..12], "USER_OBJ untouched");
        assert!(map_acl(&v, |_| None, Some).is_none(), "an unmapped id is refused");
        assert!(map_acl(&v[..7], Some, Some).is_none());
    }
}
