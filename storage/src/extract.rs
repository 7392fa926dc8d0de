//! Layer extraction: a (possibly compressed) OCI layer tar becomes an overlay lower directory.
//!
//! Theory of operation: the compressed stream is sniffed for gzip/zstd magic, decompressed,
//! and hashed (the diff ID is the sha256 of the uncompressed tar) while the `tar` crate parses
//! it. Each entry path is normalized (no `..`, no absolute paths) and its parent directories
//! are opened one component at a time with `O_NOFOLLOW`, so nothing is ever written through a
//! symlink. OCI whiteouts are translated to the overlay format through the [`Whiteouts`]
//! trait: `.wh.NAME` becomes a 0/0 character device `NAME`, and `.wh..wh..opq` marks its
//! directory opaque with an xattr. Directory times are set last, deepest first, since
//! creating children changes them.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::safefs;

/// The prefix of OCI whiteout entries.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Layer compression, detected from the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Detects the compression from a stream's first bytes.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `input` in the decompressor its magic bytes call for.
pub fn decompress<'a, R: Read + 'a>(input: R) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut br = BufReader::with_capacity(256 * 1024, input);
    let head = br.fill_buf().ctx(|| "reading layer".to_owned())?;
    let c = Compression::detect(head);
    let r: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(br),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br).ctx(|| "starting zstd".to_owned())?),
    };
    Ok((c, r))
}

/// Which xattr marks an opaque directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueXattr {
    /// `trusted.overlay.opaque` (kernel overlay as root).
    Trusted,
    /// `user.overlay.opaque` (kernel overlay with `userxattr`, rootless).
    User,
}

impl OpaqueXattr {
    /// The xattr name.
    pub fn name(self) -> &'static str {
        match self {
            OpaqueXattr::Trusted => "trusted.overlay.opaque",
            OpaqueXattr::User => "user.overlay.opaque",
        }
    }
}

/// The two file system effects of OCI whiteouts. The real implementation is
/// [`OverlayWhiteouts`]; tests substitute a recorder.
pub trait Whiteouts {
    /// Records that `name` in directory `dir` (at `dir_path` inside the layer) hides the
    /// lower layers' entry of that name.
    fn whiteout(&mut self, dir: BorrowedFd<'_>, dir_path: &Path, name: &OsStr, owner: (u32, u32)) -> io::Result<()>;
    /// Marks directory `dir` (at `dir_path`) opaque: the lower layers' children are hidden.
    fn opaque(&mut self, dir: BorrowedFd<'_>, dir_path: &Path) -> io::Result<()>;
}

/// Overlayfs whiteouts: 0/0 character devices and an opaque xattr.
#[derive(Debug, Clone, Copy)]
pub struct OverlayWhiteouts {
    /// The opaque xattr to set.
    pub opaque_xattr: OpaqueXattr,
    /// Whether to chown whiteout devices to the tar header's owner.
    pub chown: bool,
}

impl Whiteouts for OverlayWhiteouts {
    fn whiteout(
        &mut self,
        dir: BorrowedFd<'_>,
        _dir_path: &Path,
        name: &OsStr,
        (uid, gid): (u32, u32),
    ) -> io::Result<()> {
        match mknodat(dir, name, SFlag::S_IFCHR, Mode::empty(), nix::sys::stat::makedev(0, 0)) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                // Not permitted to make the device (unprivileged, with or without a user
                // namespace): keep the OCI form, which fuse-overlayfs (and our fuse-overlay)
                // understand.
                let mut wh = OsString::from(WHITEOUT_PREFIX);
                wh.push(name);
                let fd = openat(
                    dir,
                    wh.as_os_str(),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o700),
                )?;
                drop(fd);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        if self.chown {
            tolerate_unmapped(fchownat(
                dir,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ))?;
        }
        Ok(())
    }

    fn opaque(&mut self, dir: BorrowedFd<'_>, _dir_path: &Path) -> io::Result<()> {
        safefs::fsetxattr(dir, self.opaque_xattr.name(), b"y")
    }
}

/// How to extract.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Apply the tar's ownership (needs root or a user namespace mapping it). An owner the
    /// user namespace does not map (EINVAL) is left as it is, with a warning.
    pub chown: bool,
}

/// A chown to an ID the current user namespace does not map fails with EINVAL: the file keeps
/// the extracting user's ownership (as podman does with `ignore_chown_errors`).
fn tolerate_unmapped(r: nix::Result<()>) -> nix::Result<()> {
    match r {
        Err(Errno::EINVAL) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("a layer has owners outside this user namespace's ID mapping: those files keep the user's ownership");
            });
            Ok(())
        }
        other => other,
    }
}

/// The result of extracting a layer.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Length of the uncompressed tar stream.
    pub diff_size: u64,
    /// The compression found.
    pub compression: Compression,
}

/// What a tar entry name means under the OCI whiteout rules.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryKind<'a> {
    /// An ordinary entry.
    Normal,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.NAME`: NAME is deleted from the lower layers.
    Whiteout(&'a OsStr),
}

/// Classifies an entry by its last path component.
pub fn classify(last: &OsStr) -> Result<EntryKind<'_>> {
    let b = last.as_bytes();
    if b == OPAQUE_MARKER.as_bytes() {
        return Ok(EntryKind::Opaque);
    }
    if let Some(rest) = b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if rest.is_empty() || rest == b"." || rest == b".." || rest.contains(&b'/') {
            return Err(Error::UnsafePath { path: PathBuf::from(last), reason: "invalid whiteout name" });
        }
        return Ok(EntryKind::Whiteout(OsStr::from_bytes(rest)));
    }
    Ok(EntryKind::Normal)
}

/// Extracts a layer stream (plain, gzip or zstd tar) into the existing empty directory
/// `dest`, returning its diff ID. The whole stream is read, so the diff ID covers the tar's
/// trailing padding too.
pub fn extract_layer<R: Read + Send>(
    input: R,
    dest: &Path,
    opts: &ExtractOptions,
    wh: &mut dyn Whiteouts,
) -> Result<Extracted> {
    // Two stages on two threads, like `tar -xzf` with its gzip process: one decompresses
    // and hashes (the diff ID), the other parses the tar and writes files. Chunks travel
    // over a small bounded channel, so memory stays bounded.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
        let producer = scope.spawn(move || -> Result<(Compression, Digest, u64)> {
            let (compression, reader) = decompress(input)?;
            let mut hashing = HashingReader::new(reader);
            loop {
                let mut buf = vec![0u8; 256 * 1024];
                match hashing.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            break; // the extractor stopped (an error): nothing more to do
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
            let (diff_id, diff_size) = hashing.finish();
            Ok((compression, diff_id, diff_size))
        });
        let mut chan = ChanReader { rx, cur: Vec::new(), pos: 0 };
        let r = (|| -> Result<()> {
            let root = safefs::open_dir(dest)?;
            let mut ex = Extractor { root, opts, wh, dir_times: Vec::new(), cached_parent: None };
            let mut archive = tar::Archive::new(&mut chan);
            let entries = archive.entries().map_err(|e| Error::BadArchive(format!("reading layer tar: {e}")))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::BadArchive(format!("reading layer tar: {e}")))?;
                ex.entry(entry)?;
            }
            ex.finish()?;
            io::copy(&mut chan, &mut io::sink())
                .map_err(|e| Error::BadArchive(format!("reading the end of the layer stream: {e}")))?;
            Ok(())
        })();
        drop(chan);
        let produced = producer.join().map_err(|_| Error::BadArchive("the decompression thread panicked".into()))?;
        // A decompression error explains an extraction failure better than its symptom.
        let (compression, diff_id, diff_size) = produced?;
        r?;
        Ok(Extracted { diff_id, diff_size, compression })
    })
}

/// Reads the chunks the decompression thread sends; a closed channel is the end.
struct ChanReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Sets the owner (when `chown`) and the mtime of `name` in `dir`, never following a symlink.
fn owner_and_time(dir: BorrowedFd<'_>, name: &OsStr, meta: &Meta, chown: bool) -> nix::Result<()> {
    if chown {
        tolerate_unmapped(fchownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ))?;
    }
    let t = TimeSpec::new(meta.mtime, 0);
    utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
}

struct Extractor<'o, 'w> {
    root: OwnedFd,
    opts: &'o ExtractOptions,
    wh: &'w mut dyn Whiteouts,
    /// Directories whose mtime is set at the end.
    dir_times: Vec<(Vec<OsString>, i64)>,
    cached_parent: Option<(Vec<OsString>, OwnedFd)>,
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn bad(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::BadArchive(format!("layer entry {}: {e}", path.display()))
}

impl Extractor<'_, '_> {
    fn parent(&mut self, comps: &[OsString], whole: &Path) -> Result<BorrowedFd<'_>> {
        let hit = matches!(&self.cached_parent, Some((p, _)) if p.as_slice() == comps);
        if !hit {
            let fd = safefs::walk_dirs(self.root.as_fd(), comps, true, whole)?;
            self.cached_parent = Some((comps.to_vec(), fd));
        }
        match &self.cached_parent {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(bad(whole, "internal: no parent")),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path().map_err(|e| Error::BadArchive(format!("bad entry path: {e}")))?.into_owned();
        let comps = safefs::normalize(&raw_path)?;
        let Some((last, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./"): nothing to create.
            return Ok(());
        };
        let header = entry.header().clone();
        let etype = header.entry_type();
        let meta = Meta {
            mode: header.mode().map_err(|e| bad(&raw_path, e))? & 0o7777,
            uid: header.uid().map_err(|e| bad(&raw_path, e))? as u32,
            gid: header.gid().map_err(|e| bad(&raw_path, e))? as u32,
            mtime: header.mtime().map_err(|e| bad(&raw_path, e))? as i64,
            xattrs: xattrs(&mut entry, &raw_path)?,
        };
        let kind = classify(last)?;
        let chown = self.opts.chown;
        match kind {
            EntryKind::Opaque => {
                let dir_path: PathBuf = parent_comps.iter().collect();
                let dir = self.parent(parent_comps, &raw_path)?;
                let dir = dir.try_clone_to_owned().ctx(|| "dup".to_owned())?;
                return self.wh.opaque(dir.as_fd(), &dir_path).ctx(|| format!("marking {} opaque", dir_path.display()));
            }
            EntryKind::Whiteout(name) => {
                let dir_path: PathBuf = parent_comps.iter().collect();
                let dir = self.parent(parent_comps, &raw_path)?.try_clone_to_owned().ctx(|| "dup".to_owned())?;
                if safefs::kind_at(dir.as_fd(), name)?.is_some() {
                    // This layer has its own entry of that name, which hides the lower one.
                    return Ok(());
                }
                return self
                    .wh
                    .whiteout(dir.as_fd(), &dir_path, name, (meta.uid, meta.gid))
                    .ctx(|| format!("creating whiteout for {}", dir_path.join(name).display()));
            }
            EntryKind::Normal => {}
        }
        let dir = self.parent(parent_comps, &raw_path)?.try_clone_to_owned().ctx(|| "dup".to_owned())?;
        let dir = dir.as_fd();
        let name = last.as_os_str();
        let existing = safefs::kind_at(dir, name)?;
        let ctx = || format!("extracting {}", raw_path.display());
        match etype {
            tar::EntryType::Directory => {
                if existing != Some(SFlag::S_IFDIR) {
                    if existing.is_some() {
                        safefs::remove_at(dir, name)?;
                    }
                    mkdirat(dir, name, Mode::from_bits_truncate(0o700)).ctx(ctx)?;
                }
                let fd = safefs::open_dir_at(dir, name).ctx(ctx)?;
                apply_fd_meta(fd.as_fd(), &meta, chown, &raw_path)?;
                self.dir_times.push((comps.clone(), meta.mtime));
                // A directory replaced by a file later would invalidate a cached fd.
                self.cached_parent = None;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if existing.is_some() {
                    safefs::remove_at(dir, name)?;
                    self.cached_parent = None;
                }
                let fd = openat(
                    dir,
                    name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .ctx(ctx)?;
                let mut f = File::from(fd);
                let want = entry.size();
                // An OS error here is the write side (ENOSPC, EDQUOT, EIO): report it as I/O,
                // not as a bad archive; the reader's errors (corrupt or truncated) carry none.
                let n = io::copy(&mut entry, &mut f).map_err(|e| match e.raw_os_error() {
                    Some(_) => Error::Io { context: format!("extracting {}", raw_path.display()), source: e },
                    None => bad(&raw_path, e),
                })?;
                if n != want {
                    return Err(bad(&raw_path, format!("truncated: {n} of {want} bytes")));
                }
                apply_fd_meta(f.as_fd(), &meta, chown, &raw_path)?;
                let t = TimeSpec::new(meta.mtime, 0);
                futimens(f.as_fd(), &t, &t).ctx(ctx)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(&raw_path, e))?
                    .ok_or_else(|| bad(&raw_path, "symlink without target"))?
                    .into_owned();
                if existing.is_some() {
                    safefs::remove_at(dir, name)?;
                    self.cached_parent = None;
                }
                symlinkat(&target, dir, name).ctx(ctx)?;
                owner_and_time(dir, name, &meta, chown).ctx(ctx)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(&raw_path, e))?
                    .ok_or_else(|| bad(&raw_path, "hard link without target"))?
                    .into_owned();
                let tcomps = safefs::normalize(&target)?;
                let Some((tlast, tparent)) = tcomps.split_last() else {
                    return Err(bad(&raw_path, "hard link to the layer root"));
                };
                let tdir = safefs::walk_dirs(self.root.as_fd(), tparent, false, &target)?;
                match safefs::kind_at(tdir.as_fd(), tlast)? {
                    None => {
                        return Err(bad(&raw_path, format!("hard link target {} not in this layer", target.display())))
                    }
                    Some(SFlag::S_IFDIR) => {
                        return Err(bad(&raw_path, "hard link to a directory"));
                    }
                    Some(_) => {}
                }
                if tcomps == comps {
                    return Ok(());
                }
                if existing.is_some() {
                    safefs::remove_at(dir, name)?;
                    self.cached_parent = None;
                }
                // Flags 0: a symlink target is linked itself, never followed.
                linkat(tdir.as_fd(), tlast.as_os_str(), dir, name, AtFlags::empty()).ctx(ctx)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                if existing.is_some() {
                    safefs::remove_at(dir, name)?;
                    self.cached_parent = None;
                }
                let kind = match etype {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let dev = nix::sys::stat::makedev(major.into(), minor.into());
                match mknodat(dir, name, kind, Mode::from_bits_truncate(meta.mode), dev) {
                    Ok(()) => {}
                    Err(Errno::EPERM) => {
                        // Unprivileged, also inside a user namespace: no device nodes.
                        tracing::warn!(path = %raw_path.display(), "skipping device node: not permitted");
                        return Ok(());
                    }
                    Err(e) => return Err(e).ctx(ctx),
                }
                owner_and_time(dir, name, &meta, chown).ctx(ctx)?;
            }
            other => {
                tracing::debug!(path = %raw_path.display(), ?other, "skipping tar entry type");
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.cached_parent = None;
        // Deepest first, so setting a child's time does not disturb its parent's.
        self.dir_times.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        let mut seen = HashMap::new();
        for (comps, mtime) in &self.dir_times {
            seen.insert(comps.clone(), *mtime);
        }
        let times = std::mem::take(&mut self.dir_times);
        for (comps, _) in times {
            let Some(mtime) = seen.remove(&comps) else {
                continue;
            };
            let Some((last, parent)) = comps.split_last() else {
                continue;
            };
            let whole: PathBuf = comps.iter().collect();
            let Ok(dir) = safefs::walk_dirs(self.root.as_fd(), parent, false, &whole) else {
                continue; // replaced later in the tar
            };
            let t = TimeSpec::new(mtime, 0);
            match utimensat(dir.as_fd(), last.as_os_str(), &t, &t, UtimensatFlags::NoFollowSymlink) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e).ctx(|| format!("setting time of {}", whole.display())),
            }
        }
        Ok(())
    }
}

fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(|e| bad(path, e))? {
        for ext in exts {
            let ext = ext.map_err(|e| bad(path, e))?;
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

fn apply_fd_meta(fd: BorrowedFd<'_>, meta: &Meta, chown: bool, path: &Path) -> Result<()> {
    let ctx = || format!("setting metadata of {}", path.display());
    if chown {
        tolerate_unmapped(fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))).ctx(ctx)?;
    }
    // After chown, which clears set-id bits.
    fchmod(fd, Mode::from_bits_truncate(meta.mode)).ctx(ctx)?;
    for (name, value) in &meta.xattrs {
        if let Err(e) = safefs::fsetxattr(fd, name, value) {
            // Rootless stores cannot set trusted.*/security.* xattrs; the file stays usable.
            tracing::warn!(path = %path.display(), xattr = %name, error = %e, "xattr not kept");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[derive(Default)]
    struct Recorder {
        events: Vec<String>,
    }

    impl Whiteouts for Recorder {
        fn whiteout(
            &mut self,
            _dir: BorrowedFd<'_>,
            dir_path: &Path,
            name: &OsStr,
            _owner: (u32, u32),
        ) -> io::Result<()> {
            self.events.push(format!("whiteout {}", dir_path.join(name).display()));
            Ok(())
        }
        fn opaque(&mut self, _dir: BorrowedFd<'_>, dir_path: &Path) -> io::Result<()> {
            self.events.push(format!("opaque {}", dir_path.display()));
            Ok(())
        }
    }

    /// Appends an entry with a raw name (bypassing the tar crate's own path checks).
    fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name[..name.len()].copy_from_slice(name.as_bytes());
            g.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn run(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> (tempfile::TempDir, Result<Extracted>, Recorder) {
        let mut b = tar::Builder::new(Vec::new());
        for (n, k, l, d) in entries {
            raw(&mut b, n, *k, l, d);
        }
        let bytes = b.into_inner().unwrap();
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("layer")).unwrap();
        let mut rec = Recorder::default();
        let r = extract_layer(&bytes[..], &t.path().join("layer"), &ExtractOptions { chown: false }, &mut rec);
        (t, r, rec)
    }

    use tar::EntryType as E;

    #[test]
    fn classify_names() {
        assert_eq!(classify(OsStr::new("a")).unwrap(), EntryKind::Normal);
        assert_eq!(classify(OsStr::new(".wh..wh..opq")).unwrap(), EntryKind::Opaque);
        assert_eq!(classify(OsStr::new(".wh.foo")).unwrap(), EntryKind::Whiteout(OsStr::new("foo")));
        assert!(classify(OsStr::new(".wh.")).is_err());
        assert!(classify(OsStr::new(".wh...")).is_err());
    }

    #[test]
    fn whiteouts_and_opaque_are_translated() {
        let (t, r, rec) = run(&[
            ("etc/", E::Directory, "", b""),
            ("etc/.wh.passwd", E::Regular, "", b""),
            ("var/cache/.wh..wh..opq", E::Regular, "", b""),
            ("var/cache/keep", E::Regular, "", b"k"),
            ("a/.wh.x", E::Regular, "", b""),
            ("a/x", E::Regular, "", b"same layer wins"),
            ("b/y", E::Regular, "", b"y"),
            ("b/.wh.y", E::Regular, "", b""),
        ]);
        r.unwrap();
        assert_eq!(rec.events, vec!["whiteout etc/passwd", "opaque var/cache", "whiteout a/x"]);
        let l = t.path().join("layer");
        assert!(!l.join("etc/.wh.passwd").exists());
        assert!(!l.join("var/cache/.wh..wh..opq").exists());
        assert_eq!(std::fs::read(l.join("var/cache/keep")).unwrap(), b"k");
        // The whiteout's device would be replaced by the later entry of the same name.
        assert_eq!(std::fs::read(l.join("b/y")).unwrap(), b"y");
    }

    #[test]
    fn files_links_modes_times() {
        let (t, r, _) = run(&[
            ("d/", E::Directory, "", b""),
            ("d/f", E::Regular, "", b"hello"),
            ("d/hl", E::Link, "d/f", b""),
            ("d/sl", E::Symlink, "/etc/shadow", b""),
        ]);
        let ex = r.unwrap();
        assert_eq!(ex.compression, Compression::None);
        let l = t.path().join("layer");
        let m1 = std::fs::metadata(l.join("d/f")).unwrap();
        let m2 = std::fs::metadata(l.join("d/hl")).unwrap();
        assert_eq!(m1.ino(), m2.ino());
        assert_eq!(m1.mode() & 0o7777, 0o644);
        assert_eq!(m1.mtime(), 1_600_000_000);
        assert_eq!(std::fs::metadata(l.join("d")).unwrap().mtime(), 1_600_000_000);
        assert_eq!(std::fs::read_link(l.join("d/sl")).unwrap(), Path::new("/etc/shadow"));
    }

    #[test]
    fn traversal_is_refused() {
        for entries in [
            vec![("../evil", E::Regular, "", &b"x"[..])],
            vec![("a/../../evil", E::Regular, "", &b"x"[..])],
            vec![("/evil", E::Regular, "", &b"x"[..])],
            vec![("hl", E::Link, "../outside", &b""[..])],
            vec![("hl", E::Link, "/etc/passwd", &b""[..])],
        ] {
            let (t, r, _) = run(&entries);
            let e = r.unwrap_err();
            assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
            assert!(!t.path().join("evil").exists());
        }
    }

    #[test]
    fn symlink_parent_is_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_owned();
        let (_t, r, _) = run(&[("link", E::Symlink, &target, b""), ("link/pwned", E::Regular, "", b"x")]);
        let e = r.unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        assert!(!outside.path().join("pwned").exists());
        // A symlink as the final component is replaced, not written through.
        let (t, r, _) = run(&[("f", E::Symlink, &format!("{target}/f2"), b""), ("f", E::Regular, "", b"x")]);
        r.unwrap();
        assert!(!outside.path().join("f2").exists());
        assert_eq!(std::fs::read(t.path().join("layer/f")).unwrap(), b"x");
    }

    #[test]
    fn gzip_and_zstd_give_the_same_diff_id() {
        let mut b = tar::Builder::new(Vec::new());
        raw(&mut b, "f", E::Regular, "", b"data");
        let plain = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&plain[..], 3).unwrap();
        for (bytes, c) in [(plain.clone(), Compression::None), (gz, Compression::Gzip), (zs, Compression::Zstd)] {
            let t = tempfile::tempdir().unwrap();
            let ex = extract_layer(&bytes[..], t.path(), &ExtractOptions { chown: false }, &mut Recorder::default())
                .unwrap();
            assert_eq!(ex.compression, c);
            assert_eq!(ex.diff_id, Digest::of(&plain));
            assert_eq!(ex.diff_size, plain.len() as u64);
        }
    }
}
