//! Image import (`load`) from docker-archive and OCI archives/layouts, and export (`save`).
//!
//! A tar archive is read once, front to back (it may be a pipe): every member that names a
//! blob (`blobs/sha256/<hex>`) is verified into the blob store as it streams past; other
//! large members (docker-archive `layer.tar`s) are stored as blobs keyed by their content;
//! small members (JSON) are kept in memory. The metadata is then interpreted, each layer
//! is extracted once (checked against the config's diff IDs), and the image record is
//! written last. On any error, what this load created and no image uses is removed again.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::extract::{self, Compression};
use crate::store::{self, media, Created, ImageLayer, ImageRecord, Store};

/// Members up to this size are kept in memory while reading an archive.
const INLINE_MAX: u64 = 4 << 20;

enum Member {
    Inline(Vec<u8>),
    Stored(Digest, u64),
}

/// Where the files of an archive or layout come from.
trait Source {
    /// A small file's contents.
    fn read_small(&mut self, path: &str) -> Result<Vec<u8>>;
    /// Puts a file into the blob store (verified against `expected`) and returns its digest.
    fn blob(&mut self, store: &Store, path: &str, expected: Option<&Digest>, created: &mut Created) -> Result<Digest>;
}

fn clean(path: &str) -> Result<String> {
    let comps = crate::safefs::normalize(Path::new(path))
        .map_err(|e| Error::BadArchive(format!("archive member {path:?}: {e}")))?;
    Ok(comps.iter().map(|c| c.to_string_lossy().into_owned()).collect::<Vec<_>>().join("/"))
}

fn blob_path_digest(path: &str) -> Option<Digest> {
    path.strip_prefix("blobs/sha256/").and_then(|h| Digest::from_hex(h).ok())
}

struct TarSource {
    members: HashMap<String, Member>,
    links: HashMap<String, String>,
}

impl TarSource {
    fn read<R: Read>(store: &Store, r: R, created: &mut Created) -> Result<TarSource> {
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        let mut ar = tar::Archive::new(r);
        let bad = |e: io::Error| Error::BadArchive(format!("reading archive: {e}"));
        let mut any = false;
        for entry in ar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            any = true;
            let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let path = clean(&raw)?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    let m = if let Some(d) = blob_path_digest(&path) {
                        let (d, n, fresh) = store.put_blob(Exact::new(&mut entry, size), Some(&d))?;
                        if fresh {
                            created.blobs.push(d.clone());
                        }
                        Member::Stored(d, n)
                    } else if size <= INLINE_MAX {
                        let mut v = Vec::with_capacity(size as usize);
                        entry.read_to_end(&mut v).map_err(bad)?;
                        Member::Inline(v)
                    } else {
                        let (d, n, fresh) = store.put_blob(Exact::new(&mut entry, size), None)?;
                        if fresh {
                            created.blobs.push(d.clone());
                        }
                        Member::Stored(d, n)
                    };
                    let got = match &m {
                        Member::Inline(v) => v.len() as u64,
                        Member::Stored(_, n) => *n,
                    };
                    if got != size {
                        return Err(Error::BadArchive(format!(
                            "archive member {path} is truncated ({got} of {size} bytes)"
                        )));
                    }
                    members.insert(path, m);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(t) = entry.link_name().map_err(bad)? {
                        let t = t.to_string_lossy().into_owned();
                        let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                            let base = Path::new(&path).parent().unwrap_or(Path::new(""));
                            resolve_rel(base, &t)
                        } else {
                            clean(&t)?
                        };
                        links.insert(path, target);
                    }
                }
                _ => {}
            }
        }
        if !any {
            return Err(Error::BadArchive("empty or not a tar archive".to_owned()));
        }
        Ok(TarSource { members, links })
    }

    fn resolve<'a>(&'a self, path: &str) -> Result<&'a Member> {
        let mut p = path.to_owned();
        for _ in 0..16 {
            if let Some(m) = self.members.get(&p) {
                return Ok(m);
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(Error::BadArchive(format!("archive has no file {path}")))
    }
}

/// Joins a relative symlink target to its directory, lexically (`..` cannot leave the root).
fn resolve_rel(base: &Path, target: &str) -> String {
    let mut out: Vec<String> = if target.starts_with('/') {
        Vec::new()
    } else {
        base.iter().map(|c| c.to_string_lossy().into_owned()).collect()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_owned()),
        }
    }
    out.join("/")
}

impl Source for TarSource {
    fn read_small(&mut self, path: &str) -> Result<Vec<u8>> {
        match self.resolve(path)? {
            Member::Inline(v) => Ok(v.clone()),
            Member::Stored(..) => Err(Error::BadArchive(format!("{path} is too large"))),
        }
    }

    fn blob(&mut self, store: &Store, path: &str, expected: Option<&Digest>, created: &mut Created) -> Result<Digest> {
        match self.resolve(path)? {
            Member::Inline(v) => {
                let (d, fresh) = store.put_blob_bytes(v, expected)?;
                if fresh {
                    created.blobs.push(d.clone());
                }
                Ok(d)
            }
            Member::Stored(d, _) => {
                if let Some(e) = expected {
                    e.verify(d, || format!("archive member {path}"))?;
                }
                Ok(d.clone())
            }
        }
    }
}

struct DirSource {
    root: PathBuf,
}

impl Source for DirSource {
    fn read_small(&mut self, path: &str) -> Result<Vec<u8>> {
        let p = self.root.join(clean(path)?);
        let f = File::open(&p).ctx(|| format!("opening {}", p.display()))?;
        let mut v = Vec::new();
        f.take(INLINE_MAX + 1).read_to_end(&mut v).ctx(|| format!("reading {}", p.display()))?;
        if v.len() as u64 > INLINE_MAX {
            return Err(Error::BadArchive(format!("{} is too large", p.display())));
        }
        Ok(v)
    }

    fn blob(&mut self, store: &Store, path: &str, expected: Option<&Digest>, created: &mut Created) -> Result<Digest> {
        let p = self.root.join(clean(path)?);
        let f = File::open(&p).ctx(|| format!("opening {}", p.display()))?;
        let (d, _, fresh) = store.put_blob(f, expected)?;
        if fresh {
            created.blobs.push(d.clone());
        }
        Ok(d)
    }
}

/// Blobs already in the store (a registry pull downloaded and verified them).
struct StoreSource;

impl Source for StoreSource {
    fn read_small(&mut self, path: &str) -> Result<Vec<u8>> {
        Err(Error::BadArchive(format!("{path}: not in the blob store")))
    }

    fn blob(&mut self, store: &Store, path: &str, expected: Option<&Digest>, _created: &mut Created) -> Result<Digest> {
        let d = blob_path_digest(path).ok_or_else(|| Error::BadArchive(format!("{path} names no blob")))?;
        if let Some(e) = expected {
            e.verify(&d, || path.to_owned())?;
        }
        if !store.has_blob(&d) {
            return Err(Error::BadArchive(format!("blob {d} is not in the store")));
        }
        Ok(d)
    }
}

// ------------------------------------------------------------------ JSON shapes

#[derive(Debug, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

/// An OCI descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    annotations: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json { context: what.to_owned(), source })
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => media::OCI_LAYER,
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => media::OCI_LAYER_ZSTD,
    }
}

impl Store {
    /// Loads every image of a docker-archive or OCI archive tar (from a file or a pipe).
    /// Returns the loaded image IDs.
    pub fn load_archive<R: Read>(&self, r: R) -> Result<Vec<String>> {
        self.with_undo(|s, created| {
            let mut src = TarSource::read(s, r, created)?;
            if src.members.contains_key("manifest.json") {
                s.load_docker(&mut src, created)
            } else if src.members.contains_key("index.json") {
                s.load_oci(&mut src, created)
            } else {
                Err(Error::BadArchive("neither manifest.json (docker-archive) nor index.json (OCI) found".to_owned()))
            }
        })
    }

    /// Loads every image of an OCI image-layout directory.
    pub fn load_oci_dir(&self, dir: &Path) -> Result<Vec<String>> {
        self.with_undo(|s, created| {
            let mut src = DirSource { root: dir.to_owned() };
            s.load_oci(&mut src, created)
        })
    }

    /// Records the image whose manifest (`manifest`, of `media_type`), config and layer
    /// blobs are all in the blob store already (used by a registry pull): layers not yet
    /// extracted are extracted (and added to `created`), then the image record is written
    /// with `names`. The caller holds the GC lock (shared) and undoes `created` on error.
    /// Returns the image ID.
    pub(crate) fn import_stored_manifest(
        &self,
        manifest: &Digest,
        media_type: &str,
        names: Vec<String>,
        created: &mut Created,
    ) -> Result<String> {
        let size = fs::metadata(self.blob_path(manifest)).ctx(|| format!("stat blob {manifest}"))?.len();
        let desc = Descriptor {
            media_type: media_type.to_owned(),
            digest: manifest.clone(),
            size,
            annotations: HashMap::new(),
            platform: None,
        };
        let rec = self.load_oci_manifest(&mut StoreSource, &desc, names, created)?;
        Ok(self.commit_image(rec)?.id)
    }

    fn with_undo(&self, f: impl FnOnce(&Store, &mut Created) -> Result<Vec<String>>) -> Result<Vec<String>> {
        let mut created = Created::default();
        let res = {
            let _gc = self.gc_lock(false)?;
            f(self, &mut created)
        };
        if res.is_err() {
            if let Err(e) = self.undo(&created) {
                tracing::warn!(error = %e, "cleaning up after a failed load");
            }
        }
        res
    }

    fn load_docker(&self, src: &mut TarSource, created: &mut Created) -> Result<Vec<String>> {
        let entries: Vec<DockerManifestEntry> = parse(&src.read_small("manifest.json")?, "manifest.json")?;
        if entries.is_empty() {
            return Err(Error::BadArchive("manifest.json lists no image".to_owned()));
        }
        let mut ids = Vec::new();
        let mut records = Vec::new();
        for e in entries {
            let cfg_path = clean(&e.config)?;
            let cfg_bytes = src.read_small(&cfg_path)?;
            let cfg: ImageConfig = parse(&cfg_bytes, &cfg_path)?;
            if cfg.rootfs.diff_ids.len() != e.layers.len() {
                return Err(Error::BadArchive(format!(
                    "{cfg_path} lists {} diff IDs but manifest.json {} layers",
                    cfg.rootfs.diff_ids.len(),
                    e.layers.len()
                )));
            }
            let (cfg_digest, fresh) = self.put_blob_bytes(&cfg_bytes, None)?;
            if fresh {
                created.blobs.push(cfg_digest.clone());
            }
            let mut layers = Vec::new();
            let mut descs = Vec::new();
            for (path, diff_id) in e.layers.iter().zip(&cfg.rootfs.diff_ids) {
                let path = clean(path)?;
                let blob = src.blob(self, &path, None, created)?;
                if self.ensure_layer(diff_id, &blob)? {
                    created.layers.push(diff_id.clone());
                }
                let mt = layer_media_type(self.blob_compression(&blob)?);
                let size = fs::metadata(self.blob_path(&blob)).ctx(|| format!("stat blob {blob}"))?.len();
                descs.push(Descriptor {
                    media_type: mt.to_owned(),
                    digest: blob.clone(),
                    size,
                    annotations: HashMap::new(),
                    platform: None,
                });
                layers.push(ImageLayer { diff_id: diff_id.clone(), blob, media_type: mt.to_owned(), size });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(media::OCI_MANIFEST.to_owned()),
                config: Descriptor {
                    media_type: media::OCI_CONFIG.to_owned(),
                    digest: cfg_digest.clone(),
                    size: cfg_bytes.len() as u64,
                    annotations: HashMap::new(),
                    platform: None,
                },
                layers: descs,
            };
            let mbytes = store::to_json(&manifest)?;
            let (mdigest, fresh) = self.put_blob_bytes(&mbytes, None)?;
            if fresh {
                created.blobs.push(mdigest.clone());
            }
            records.push(ImageRecord {
                id: cfg_digest.hex().to_owned(),
                manifest_digest: mdigest,
                manifest_media_type: media::OCI_MANIFEST.to_owned(),
                config_digest: cfg_digest,
                layers,
                names: e.repo_tags.unwrap_or_default(),
                created: store::now(),
            });
        }
        // Records last: everything they point to is in place.
        for r in records {
            ids.push(self.commit_image(r)?.id);
        }
        Ok(ids)
    }

    fn blob_compression(&self, d: &Digest) -> Result<Compression> {
        let mut head = [0u8; 4];
        let mut f = File::open(self.blob_path(d)).ctx(|| format!("opening blob {d}"))?;
        let n = f.read(&mut head).ctx(|| format!("reading blob {d}"))?;
        Ok(Compression::detect(&head[..n]))
    }

    fn load_oci(&self, src: &mut dyn Source, created: &mut Created) -> Result<Vec<String>> {
        let index: Index = parse(&src.read_small("index.json")?, "index.json")?;
        if index.manifests.is_empty() {
            return Err(Error::BadArchive("index.json lists no manifest".to_owned()));
        }
        let mut records = Vec::new();
        for desc in &index.manifests {
            let names: Vec<String> = desc
                .annotations
                .get(CONTAINERD_NAME)
                .or_else(|| desc.annotations.get(REF_NAME))
                .cloned()
                .into_iter()
                .collect();
            let mdesc = match desc.media_type.as_str() {
                media::OCI_MANIFEST | media::DOCKER_MANIFEST => desc.clone(),
                media::OCI_INDEX | media::DOCKER_LIST => {
                    let d = src.blob(self, &blob_member(&desc.digest), Some(&desc.digest), created)?;
                    let nested: Index = parse(&self.read_blob(&d)?, "nested index")?;
                    nested
                        .manifests
                        .into_iter()
                        .find(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == host_arch()))
                        .ok_or_else(|| {
                            Error::BadArchive(format!(
                                "image index {} has no linux/{} manifest",
                                desc.digest,
                                host_arch()
                            ))
                        })?
                }
                other => return Err(Error::UnknownMediaType(other.to_owned())),
            };
            records.push(self.load_oci_manifest(src, &mdesc, names, created)?);
        }
        let mut ids = Vec::new();
        for r in records {
            ids.push(self.commit_image(r)?.id);
        }
        Ok(ids)
    }

    fn load_oci_manifest(
        &self,
        src: &mut dyn Source,
        desc: &Descriptor,
        names: Vec<String>,
        created: &mut Created,
    ) -> Result<ImageRecord> {
        if desc.media_type != media::OCI_MANIFEST && desc.media_type != media::DOCKER_MANIFEST {
            return Err(Error::UnknownMediaType(desc.media_type.clone()));
        }
        let md = src.blob(self, &blob_member(&desc.digest), Some(&desc.digest), created)?;
        let m: Manifest = parse(&self.read_blob(&md)?, &format!("manifest {md}"))?;
        match m.config.media_type.as_str() {
            media::OCI_CONFIG | media::DOCKER_CONFIG => {}
            other => return Err(Error::UnknownMediaType(other.to_owned())),
        }
        for l in &m.layers {
            if !media::is_layer(&l.media_type) {
                return Err(Error::UnknownMediaType(l.media_type.clone()));
            }
        }
        let cd = src.blob(self, &blob_member(&m.config.digest), Some(&m.config.digest), created)?;
        let cfg: ImageConfig = parse(&self.read_blob(&cd)?, &format!("config {cd}"))?;
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            return Err(Error::BadArchive(format!(
                "config lists {} diff IDs but the manifest {} layers",
                cfg.rootfs.diff_ids.len(),
                m.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(&cfg.rootfs.diff_ids) {
            let b = src.blob(self, &blob_member(&l.digest), Some(&l.digest), created)?;
            if self.ensure_layer(diff_id, &b)? {
                created.layers.push(diff_id.clone());
            }
            layers.push(ImageLayer {
                diff_id: diff_id.clone(),
                blob: b,
                media_type: l.media_type.clone(),
                size: l.size,
            });
        }
        Ok(ImageRecord {
            id: cd.hex().to_owned(),
            manifest_digest: md,
            manifest_media_type: desc.media_type.clone(),
            config_digest: cd,
            layers,
            names,
            created: store::now(),
        })
    }

    // ------------------------------------------------------------------ save

    /// Writes images as a docker-archive tar (uncompressed layers, `<diffid>/layer.tar`).
    pub fn save_docker_archive<W: Write>(&self, refs: &[&str], w: W) -> Result<W> {
        let mut b = tar::Builder::new(w);
        let mut manifest = Vec::new();
        let mut written = std::collections::HashSet::new();
        for r in refs {
            let img = self.image(r)?;
            let cfg_name = format!("{}.json", img.config_digest.hex());
            if written.insert(cfg_name.clone()) {
                let f = File::open(self.blob_path(&img.config_digest))
                    .ctx(|| format!("opening config {}", img.config_digest))?;
                let len = f.metadata().ctx(|| "stat config".to_owned())?.len();
                append(&mut b, &cfg_name, len, f)?;
            }
            let mut layer_paths = Vec::new();
            for l in &img.layers {
                let path = format!("{}/layer.tar", l.diff_id.hex());
                if written.insert(path.clone()) {
                    let rec = self.layer(&l.diff_id)?;
                    let f = File::open(self.blob_path(&l.blob)).ctx(|| format!("opening blob {}", l.blob))?;
                    let (_, r) = extract::decompress(f)?;
                    append(&mut b, &path, rec.diff_size, Exact::new(r, rec.diff_size))?;
                }
                layer_paths.push(path);
            }
            let name = store::normalize_name(r);
            let tags: Vec<String> = if img.names.contains(&name) { vec![name] } else { img.names.clone() };
            manifest.push(serde_json::json!({
                "Config": cfg_name,
                "RepoTags": tags,
                "Layers": layer_paths,
            }));
        }
        let mbytes = store::to_json(&manifest)?;
        append(&mut b, "manifest.json", mbytes.len() as u64, &mbytes[..])?;
        b.into_inner().ctx(|| "finishing archive".to_owned())
    }

    /// Writes one image as an OCI archive tar (the blobs as stored).
    pub fn save_oci_archive<W: Write>(&self, reference: &str, w: W) -> Result<W> {
        let img = self.image(reference)?;
        let mut b = tar::Builder::new(w);
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        append(&mut b, "oci-layout", layout.len() as u64, &layout[..])?;
        let mut blobs = vec![img.manifest_digest.clone(), img.config_digest.clone()];
        blobs.extend(img.layers.iter().map(|l| l.blob.clone()));
        let mut seen = std::collections::HashSet::new();
        for d in blobs {
            if seen.insert(d.clone()) {
                let f = File::open(self.blob_path(&d)).ctx(|| format!("opening blob {d}"))?;
                let len = f.metadata().ctx(|| "stat blob".to_owned())?.len();
                append(&mut b, &blob_member(&d), len, f)?;
            }
        }
        let msize = fs::metadata(self.blob_path(&img.manifest_digest)).ctx(|| "stat manifest".to_owned())?.len();
        let mut annotations = HashMap::new();
        if let Some(n) = img.names.first() {
            annotations.insert(REF_NAME.to_owned(), n.clone());
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_owned()),
            manifests: vec![Descriptor {
                media_type: img.manifest_media_type.clone(),
                digest: img.manifest_digest.clone(),
                size: msize,
                annotations,
                platform: None,
            }],
        };
        let ibytes = store::to_json(&index)?;
        append(&mut b, "index.json", ibytes.len() as u64, &ibytes[..])?;
        b.into_inner().ctx(|| "finishing archive".to_owned())
    }
}

fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn append<W: Write>(b: &mut tar::Builder<W>, path: &str, size: u64, data: impl Read) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).ctx(|| format!("writing {path} to the archive"))
}

/// A reader that must yield exactly `n` bytes (a short source is an error, not a short tar
/// member).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, n: u64) -> Self {
        Exact { inner, left: n }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated: the data ends before its recorded size",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
