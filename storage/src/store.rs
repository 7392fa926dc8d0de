//! The store: content-addressed blobs, extracted layers, image records, and locking.
//!
//! Layout under the root:
//! ```text
//! lock                      flock: metadata changes (images/, containers/)
//! gc.lock                   flock: imports hold it shared, removals (rmi, prune) exclusive
//! blobs/sha256/<hex>        blobs, verified while written (temp file, fsync, rename)
//! layers/<diffid-hex>/      one per layer: diff/ (the overlay lower dir) and layer.json
//! l/<short>                 symlink ../layers/<hex>/diff: short overlay lowerdir names
//! images/<id>.json          one per image (id = config digest hex)
//! containers/<id>/          diff/ work/ merged/ and container.json
//! ```
//! Temporary files and directories are named `.tmp-<random>` and are flocked by their
//! writer; `Store::open` removes the ones whose lock it can take (their writer died).
//! A layer is extracted into `layers/.tmp-*` and renamed into place with
//! `RENAME_NOREPLACE`, so it is either complete or invisible, and two processes extracting
//! the same layer at once both succeed (the loser discards its copy).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{renameat2, Flock, FlockArg, RenameFlags};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::extract::{self, ExtractOptions, OpaqueXattr, OverlayWhiteouts};

/// Media types (OCI and Docker) the store knows.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// Whether a layer media type is one the store can extract.
    pub fn is_layer(m: &str) -> bool {
        matches!(
            m,
            OCI_LAYER
                | OCI_LAYER_GZIP
                | OCI_LAYER_ZSTD
                | DOCKER_LAYER
                | "application/vnd.oci.image.layer.nondistributable.v1.tar"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
                | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        )
    }
}

/// The default store root: `/var/lib/rpod/storage` for root, else
/// `$XDG_DATA_HOME/rpod/storage` or `~/.local/share/rpod/storage`.
pub fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/rpod/storage");
    }
    default_user_root(std::env::var_os("XDG_DATA_HOME").map(PathBuf::from), std::env::var_os("HOME").map(PathBuf::from))
}

/// The rootless default root from `$XDG_DATA_HOME` and `$HOME`.
pub fn default_user_root(xdg_data_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    match xdg_data_home.filter(|p| p.is_absolute()) {
        Some(x) => x.join("rpod/storage"),
        None => home.unwrap_or_else(|| PathBuf::from("/")).join(".local/share/rpod/storage"),
    }
}

/// One layer of an image: the blob it came from and the extracted layer it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageLayer {
    /// sha256 of the uncompressed tar: the key of `layers/`.
    pub diff_id: Digest,
    /// The (possibly compressed) blob as distributed.
    pub blob: Digest,
    /// The blob's media type.
    pub media_type: String,
    /// The blob's size.
    pub size: u64,
}

/// An image record (`images/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The image ID: the config digest's hex.
    pub id: String,
    /// The manifest blob.
    pub manifest_digest: Digest,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The config blob.
    pub config_digest: Digest,
    /// Layers, bottom first.
    pub layers: Vec<ImageLayer>,
    /// Names (`name:tag`), each unique across the store.
    pub names: Vec<String>,
    /// Seconds since the epoch when first stored.
    pub created: u64,
}

/// A layer record (`layers/<hex>/layer.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// The layer's diff ID.
    pub diff_id: Digest,
    /// The uncompressed tar's size.
    pub diff_size: u64,
    /// Its short name under `l/`.
    pub short: String,
}

/// A container record (`containers/<id>/container.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerRecord {
    /// The container ID (64 hex).
    pub id: String,
    /// The image it was created from.
    pub image_id: String,
    /// The image's layers (diff IDs), bottom first: kept even if the image is force-removed.
    pub layers: Vec<Digest>,
    /// Seconds since the epoch.
    pub created: u64,
}

/// What a load wrote that did not exist before (removed again if the load fails).
#[derive(Debug, Default)]
pub(crate) struct Created {
    pub blobs: Vec<Digest>,
    pub layers: Vec<Digest>,
}

/// The image and layer store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    rootless: bool,
    mount_method: MountMethod,
}

/// How container root filesystems are mounted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MountMethod {
    /// Kernel overlayfs (the default).
    #[default]
    Kernel,
    /// A fuse-overlayfs compatible program (`fuse-overlay`, `fuse-overlayfs`), run as
    /// containers/storage runs its `mount_program`.
    Program(PathBuf),
    /// Kernel overlayfs, falling back to the program where the kernel refuses it.
    Auto(PathBuf),
}

const TMP_PREFIX: &str = ".tmp-";

/// Length of the short `l/` names: 10 of `[A-Z0-9]` keeps 200 lowers under the
/// 4096-byte mount option limit ("l/XXXXXXXXXX:" is 13 bytes).
const SHORT_LEN: usize = 10;

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(v)
}

fn random_short() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..SHORT_LEN).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

/// `name` with `:latest` added when it has no tag.
pub fn normalize_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!("{TMP_PREFIX}{}", random_hex(8)));
    let ctx = || format!("writing {}", path.display());
    let res = (|| {
        let f = File::create(&tmp).ctx(ctx)?;
        // Locked so a concurrent `Store::open` does not take it for a stale temporary.
        let mut f = Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| Error::Io { context: ctx(), source: e.into() })?;
        f.write_all(bytes).ctx(ctx)?;
        f.sync_all().ctx(ctx)?;
        fs::rename(&tmp, path).ctx(ctx)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json { context: path.display().to_string(), source })
}

/// Whether this process is uid 0 of a user namespace that maps more than one user ID, so
/// that chown to a layer's owners can work (IDs outside the mapping are left as they are).
fn userns_maps_other_ids() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    let Ok(map) = fs::read_to_string("/proc/self/uid_map") else { return false };
    let mapped: u64 = map.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()).sum();
    mapped > 1
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|source| Error::Json { context: "serializing".to_owned(), source })
}

impl Store {
    /// Opens (creating if needed) the store at `root`. Rootless mode (non-root euid) uses
    /// `user.overlay.opaque` and no chown during extraction, and mounts with `userxattr`.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(root, !nix::unistd::geteuid().is_root())
    }

    /// Opens the store with an explicit rootless setting.
    pub fn open_with(root: impl AsRef<Path>, rootless: bool) -> Result<Store> {
        let root = root.as_ref();
        fs::create_dir_all(root).ctx(|| format!("creating store {}", root.display()))?;
        let root = fs::canonicalize(root).ctx(|| format!("resolving {}", root.display()))?;
        for d in ["blobs/sha256", "layers", "l", "images", "containers"] {
            fs::create_dir_all(root.join(d)).ctx(|| format!("creating {}", root.join(d).display()))?;
        }
        let s = Store { root, rootless, mount_method: MountMethod::Kernel };
        s.clean_stale()?;
        Ok(s)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the store runs rootless.
    pub fn rootless(&self) -> bool {
        self.rootless
    }

    /// The store with another way of mounting container root filesystems.
    pub fn with_mount_method(mut self, m: MountMethod) -> Store {
        self.mount_method = m;
        self
    }

    /// How container root filesystems are mounted.
    pub fn mount_method(&self) -> &MountMethod {
        &self.mount_method
    }

    fn flock(&self, name: &str, arg: FlockArg) -> Result<Flock<File>> {
        let path = self.root.join(name);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        Flock::lock(f, arg)
            .map_err(|(_, e)| Error::Io { context: format!("locking {}", path.display()), source: e.into() })
    }

    /// The metadata lock (exclusive).
    pub(crate) fn lock(&self) -> Result<Flock<File>> {
        self.flock("lock", FlockArg::LockExclusive)
    }

    /// The GC lock: shared for imports, exclusive for removals.
    pub(crate) fn gc_lock(&self, exclusive: bool) -> Result<Flock<File>> {
        self.flock("gc.lock", if exclusive { FlockArg::LockExclusive } else { FlockArg::LockShared })
    }

    /// Removes temp files and directories whose writer is gone, and dangling `l/` links.
    fn clean_stale(&self) -> Result<()> {
        for dir in ["blobs", "layers", "images", "containers"] {
            let d = self.root.join(dir);
            let rd = fs::read_dir(&d).ctx(|| format!("reading {}", d.display()))?;
            for e in rd.flatten() {
                if !e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    continue;
                }
                let p = e.path();
                let Ok(f) = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&p) else {
                    continue;
                };
                if let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                    tracing::info!(path = %p.display(), "removing stale temporary");
                    let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                    drop(lock);
                }
            }
        }
        let l = self.root.join("l");
        for e in fs::read_dir(&l).ctx(|| "reading l/".to_owned())?.flatten() {
            if fs::metadata(e.path()).is_err() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- blobs

    /// The path of a blob (which may not exist).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Whether a blob is stored.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Reads a (small) blob into memory.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        fs::read(self.blob_path(d)).ctx(|| format!("reading blob {d}"))
    }

    /// Stores a blob from a reader, hashing while writing. With `expected`, a mismatch is
    /// an error and nothing is kept; an already stored blob is not rewritten. Returns the
    /// digest, the size, and whether it was newly written.
    pub fn put_blob(&self, r: impl Read, expected: Option<&Digest>) -> Result<(Digest, u64, bool)> {
        if let Some(d) = expected {
            if let Ok(m) = fs::metadata(self.blob_path(d)) {
                return Ok((d.clone(), m.len(), false));
            }
        }
        let tmp = self.root.join("blobs").join(format!("{TMP_PREFIX}{}", random_hex(8)));
        let res = self.put_blob_tmp(r, expected, &tmp);
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    fn put_blob_tmp(&self, mut r: impl Read, expected: Option<&Digest>, tmp: &Path) -> Result<(Digest, u64, bool)> {
        let ctx = || "writing blob".to_owned();
        let f = OpenOptions::new().write(true).create_new(true).open(tmp).ctx(ctx)?;
        let f = Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| Error::Io { context: "locking temporary blob".to_owned(), source: e.into() })?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, &*f));
        io::copy(&mut r, &mut w).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
                Error::BadArchive(format!("reading blob: {e}"))
            }
            _ => Error::Io { context: "writing blob".to_owned(), source: e },
        })?;
        let (bw, digest, size) = w.finish();
        bw.into_inner()
            .map_err(|e| Error::Io { context: "writing blob".to_owned(), source: e.into_error() })?
            .sync_all()
            .ctx(ctx)?;
        if let Some(exp) = expected {
            exp.verify(&digest, || format!("blob {exp}"))?;
        }
        let dest = self.blob_path(&digest);
        let fresh = !dest.exists();
        fs::rename(tmp, &dest).ctx(ctx)?;
        Ok((digest, size, fresh))
    }

    /// Stores an in-memory blob.
    pub fn put_blob_bytes(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<(Digest, bool)> {
        let (d, _, fresh) = self.put_blob(bytes, expected)?;
        Ok((d, fresh))
    }

    // --------------------------------------------------------------- layers

    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// The extracted contents of a layer.
    pub fn layer_diff(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id).join("diff")
    }

    /// Whether a layer is extracted and complete.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).join("layer.json").is_file()
    }

    /// A layer's record.
    pub fn layer(&self, diff_id: &Digest) -> Result<LayerRecord> {
        let p = self.layer_dir(diff_id).join("layer.json");
        if !p.exists() {
            return Err(Error::LayerNotFound(diff_id.to_string()));
        }
        read_json(&p)
    }

    /// All complete layers.
    pub fn layers(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let d = self.root.join("layers");
        for e in fs::read_dir(&d).ctx(|| format!("reading {}", d.display()))?.flatten() {
            if let Some(n) = e.file_name().to_str() {
                if let Ok(dg) = Digest::from_hex(n) {
                    if self.has_layer(&dg) {
                        out.push(dg);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Extracts the blob `blob` as layer `diff_id` unless it is already there. The computed
    /// diff ID must equal `diff_id`. Returns whether this call created it.
    pub fn ensure_layer(&self, diff_id: &Digest, blob: &Digest) -> Result<bool> {
        if self.has_layer(diff_id) {
            self.ensure_link(diff_id)?;
            return Ok(false);
        }
        let f = File::open(self.blob_path(blob)).ctx(|| format!("opening blob {blob}"))?;
        self.extract_new_layer(f, Some(diff_id)).map(|(_, fresh)| fresh)
    }

    /// Extracts a layer stream into the store, keyed by its computed diff ID (checked against
    /// `expected` if given). Returns the diff ID and whether this call created the layer.
    pub fn extract_new_layer(&self, r: impl Read + Send, expected: Option<&Digest>) -> Result<(Digest, bool)> {
        let tmp = self.root.join("layers").join(format!("{TMP_PREFIX}{}", random_hex(8)));
        fs::create_dir(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        let res = (|| {
            let lock = File::open(&tmp).ctx(|| "opening layer temp dir".to_owned())?;
            let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, e)| Error::Io { context: "locking layer temp dir".to_owned(), source: e.into() })?;
            let diff = tmp.join("diff");
            fs::create_dir(&diff).ctx(|| "creating diff".to_owned())?;
            fs::set_permissions(&diff, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .ctx(|| "chmod diff".to_owned())?;
            // Rootless inside a user namespace that maps a range of IDs (rpod's pause
            // namespace from /etc/subuid): files keep the layer's owners through the mapping.
            let chown = !self.rootless || userns_maps_other_ids();
            let mut wh = OverlayWhiteouts {
                opaque_xattr: if self.rootless { OpaqueXattr::User } else { OpaqueXattr::Trusted },
                chown,
            };
            let ex = extract::extract_layer(r, &diff, &ExtractOptions { chown }, &mut wh)?;
            if let Some(exp) = expected {
                exp.verify(&ex.diff_id, || "layer diff ID".to_owned())?;
            }
            let rec = LayerRecord { diff_id: ex.diff_id.clone(), diff_size: ex.diff_size, short: random_short() };
            write_atomic(&tmp.join("layer.json"), &to_json(&rec)?)?;
            let layers = crate::safefs::open_dir(&self.root.join("layers"))?;
            let fresh = match renameat2(
                layers.as_fd(),
                tmp.file_name().unwrap_or_default(),
                layers.as_fd(),
                ex.diff_id.hex(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => true,
                // Another process finished the same layer first: keep theirs.
                Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => false,
                Err(e) => return Err(e).ctx(|| format!("renaming layer {}", ex.diff_id)),
            };
            drop(lock);
            Ok((ex.diff_id, fresh))
        })();
        if tmp.exists() {
            let _ = fs::remove_dir_all(&tmp);
        }
        let (d, fresh) = res?;
        self.ensure_link(&d)?;
        Ok((d, fresh))
    }

    /// Makes sure `l/<short>` points at the layer's diff (repairs a crash between the
    /// rename and the link).
    pub fn ensure_link(&self, diff_id: &Digest) -> Result<String> {
        let rec = self.layer(diff_id)?;
        let link = self.root.join("l").join(&rec.short);
        let target = format!("../layers/{}/diff", diff_id.hex());
        match fs::read_link(&link) {
            Ok(t) if t == Path::new(&target) => return Ok(rec.short),
            Ok(t) => {
                return Err(Error::BadArchive(format!("short link {} already points to {}", rec.short, t.display())))
            }
            Err(_) => {}
        }
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => Ok(rec.short),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::read_link(&link) {
                Ok(t) if t == Path::new(&target) => Ok(rec.short),
                _ => Err(Error::BadArchive(format!("short link {} is taken", rec.short))),
            },
            Err(e) => Err(e).ctx(|| format!("creating {}", link.display())),
        }
    }

    fn remove_layer(&self, diff_id: &Digest) -> Result<()> {
        if let Ok(rec) = self.layer(diff_id) {
            let _ = fs::remove_file(self.root.join("l").join(&rec.short));
        }
        let dir = self.layer_dir(diff_id);
        if !dir.exists() {
            return Ok(());
        }
        // Rename first so the layer disappears atomically; a crash leaves only a temp dir.
        let tmp = self.root.join("layers").join(format!("{TMP_PREFIX}{}", random_hex(8)));
        fs::rename(&dir, &tmp).ctx(|| format!("removing layer {diff_id}"))?;
        fs::remove_dir_all(&tmp).ctx(|| format!("removing layer {diff_id}"))
    }

    // --------------------------------------------------------------- images

    fn image_path(&self, id: &str) -> PathBuf {
        self.root.join("images").join(format!("{id}.json"))
    }

    /// All images, sorted by ID.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let d = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&d).ctx(|| format!("reading {}", d.display()))?.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(TMP_PREFIX) || !n.ends_with(".json") {
                continue;
            }
            out.push(read_json::<ImageRecord>(&e.path())?);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Finds an image by ID, unique ID prefix (at least 3 hex digits), `sha256:` ID, or name
    /// (with `:latest` implied).
    pub fn image(&self, reference: &str) -> Result<ImageRecord> {
        let images = self.images()?;
        let r = reference.strip_prefix("sha256:").unwrap_or(reference);
        if let Some(i) = images.iter().find(|i| i.id == r) {
            return Ok(i.clone());
        }
        let name = normalize_name(reference);
        if let Some(i) = images.iter().find(|i| i.names.contains(&name)) {
            return Ok(i.clone());
        }
        if r.len() >= 3 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
            let m: Vec<_> = images.iter().filter(|i| i.id.starts_with(r)).collect();
            match m.len() {
                1 => return Ok(m[0].clone()),
                0 => {}
                _ => return Err(Error::AmbiguousImage(reference.to_owned())),
            }
        }
        Err(Error::ImageNotFound(reference.to_owned()))
    }

    /// Records an image (merging names if it exists); names move from other images.
    /// Caller holds the GC lock (shared); this takes the metadata lock.
    pub(crate) fn commit_image(&self, mut rec: ImageRecord) -> Result<ImageRecord> {
        let _lock = self.lock()?;
        rec.names = rec.names.iter().map(|n| normalize_name(n)).collect();
        if let Ok(old) = read_json::<ImageRecord>(&self.image_path(&rec.id)) {
            let mut names = old.names.clone();
            for n in &rec.names {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
            rec.names = names;
            rec.created = old.created;
        }
        self.take_names(&rec.id, &rec.names)?;
        write_atomic(&self.image_path(&rec.id), &to_json(&rec)?)?;
        Ok(rec)
    }

    fn take_names(&self, keep_id: &str, names: &[String]) -> Result<()> {
        for mut other in self.images()? {
            if other.id == keep_id {
                continue;
            }
            let before = other.names.len();
            other.names.retain(|n| !names.contains(n));
            if other.names.len() != before {
                write_atomic(&self.image_path(&other.id), &to_json(&other)?)?;
            }
        }
        Ok(())
    }

    /// Adds a name to an image (taking it from any other image).
    pub fn tag(&self, reference: &str, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut img = self.image(reference)?;
        let name = normalize_name(name);
        self.take_names(&img.id, std::slice::from_ref(&name))?;
        if !img.names.contains(&name) {
            img.names.push(name);
        }
        write_atomic(&self.image_path(&img.id), &to_json(&img)?)
    }

    /// Removes an image. When `reference` is one of several names, only that name goes.
    /// Refused while a container uses the image unless `force`. Layers and blobs no longer
    /// used are removed. Returns the removed image ID, or None when only untagged.
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<Option<String>> {
        let _gc = self.gc_lock(true)?;
        {
            let _lock = self.lock()?;
            let mut img = self.image(reference)?;
            let name = normalize_name(reference);
            if img.names.len() > 1 && img.names.contains(&name) {
                img.names.retain(|n| *n != name);
                write_atomic(&self.image_path(&img.id), &to_json(&img)?)?;
                return Ok(None);
            }
            if !force {
                if let Some(c) = self.containers()?.into_iter().find(|c| c.image_id == img.id) {
                    return Err(Error::ImageInUse { image: img.id, container: c.id });
                }
            }
            fs::remove_file(self.image_path(&img.id)).ctx(|| format!("removing image {}", img.id))?;
            self.gc_locked()?;
            Ok(Some(img.id))
        }
    }

    /// Removes layers and blobs that no image or container uses. Returns the removed layers.
    pub fn prune(&self) -> Result<Vec<Digest>> {
        let _gc = self.gc_lock(true)?;
        let _lock = self.lock()?;
        self.gc_locked()
    }

    fn gc_locked(&self) -> Result<Vec<Digest>> {
        let (used_layers, used_blobs) = self.used()?;
        let mut removed = Vec::new();
        for l in self.layers()? {
            if !used_layers.contains(&l) {
                self.remove_layer(&l)?;
                removed.push(l);
            }
        }
        let d = self.root.join("blobs/sha256");
        for e in fs::read_dir(&d).ctx(|| format!("reading {}", d.display()))?.flatten() {
            if let Some(dg) = e.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) {
                if !used_blobs.contains(&dg) {
                    fs::remove_file(e.path()).ctx(|| format!("removing blob {dg}"))?;
                }
            }
        }
        Ok(removed)
    }

    fn used(&self) -> Result<(std::collections::HashSet<Digest>, std::collections::HashSet<Digest>)> {
        let mut layers = std::collections::HashSet::new();
        let mut blobs = std::collections::HashSet::new();
        for i in self.images()? {
            blobs.insert(i.manifest_digest.clone());
            blobs.insert(i.config_digest.clone());
            for l in i.layers {
                layers.insert(l.diff_id);
                blobs.insert(l.blob);
            }
        }
        for c in self.containers()? {
            layers.extend(c.layers);
        }
        Ok((layers, blobs))
    }

    /// After a failed import: removes what it created unless an image now uses it.
    pub(crate) fn undo(&self, created: &Created) -> Result<()> {
        if created.blobs.is_empty() && created.layers.is_empty() {
            return Ok(());
        }
        let _gc = self.gc_lock(true)?;
        let _lock = self.lock()?;
        let (used_layers, used_blobs) = self.used()?;
        for l in &created.layers {
            if !used_layers.contains(l) {
                self.remove_layer(l)?;
            }
        }
        for b in &created.blobs {
            if !used_blobs.contains(b) {
                let _ = fs::remove_file(self.blob_path(b));
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------- containers

    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// All containers.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let d = self.root.join("containers");
        let mut out = Vec::new();
        for e in fs::read_dir(&d).ctx(|| format!("reading {}", d.display()))?.flatten() {
            let p = e.path().join("container.json");
            if p.is_file() {
                out.push(read_json(&p)?);
            }
        }
        out.sort_by(|a: &ContainerRecord, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// A container's record.
    pub fn container(&self, id: &str) -> Result<ContainerRecord> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::ContainerNotFound(id.to_owned()));
        }
        let p = self.container_dir(id).join("container.json");
        if !p.is_file() {
            return Err(Error::ContainerNotFound(id.to_owned()));
        }
        read_json(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roots() {
        assert_eq!(default_user_root(Some("/x".into()), Some("/home/u".into())), Path::new("/x/rpod/storage"));
        assert_eq!(default_user_root(None, Some("/home/u".into())), Path::new("/home/u/.local/share/rpod/storage"));
        assert_eq!(default_user_root(Some("rel".into()), Some("/h".into())), Path::new("/h/.local/share/rpod/storage"));
    }

    #[test]
    fn names() {
        assert_eq!(normalize_name("busybox"), "busybox:latest");
        assert_eq!(normalize_name("localhost:5000/a"), "localhost:5000/a:latest");
        assert_eq!(normalize_name("a:1"), "a:1");
    }

    #[test]
    fn blob_mismatch_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open_with(t.path(), true).unwrap();
        let wrong = Digest::of(b"other");
        let e = s.put_blob(&b"data"[..], Some(&wrong)).unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert_eq!(fs::read_dir(s.root().join("blobs/sha256")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(s.root().join("blobs")).unwrap().count(), 1);
        let (d, n, fresh) = s.put_blob(&b"data"[..], None).unwrap();
        assert_eq!((d, n, fresh), (Digest::of(b"data"), 4, true));
    }

    #[test]
    fn stale_temps_are_cleaned() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open_with(t.path(), true).unwrap();
        fs::create_dir_all(s.root().join("layers/.tmp-dead/diff")).unwrap();
        fs::write(s.root().join("blobs/.tmp-dead"), b"x").unwrap();
        let live = s.root().join("layers/.tmp-live");
        fs::create_dir(&live).unwrap();
        let held = Flock::lock(File::open(&live).unwrap(), FlockArg::LockExclusive).unwrap();
        let s = Store::open_with(t.path(), true).unwrap();
        assert!(!s.root().join("layers/.tmp-dead").exists());
        assert!(!s.root().join("blobs/.tmp-dead").exists());
        assert!(live.exists(), "a temp dir whose writer lives is kept");
        drop(held);
    }
}
