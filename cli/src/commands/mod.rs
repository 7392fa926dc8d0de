//! One module per command (or group of related commands).

pub mod container;
pub mod image;
pub mod images;
pub mod inspect;
pub mod load;
pub mod network;
pub mod pod;
pub mod prune;
pub mod pull;
pub mod rmi;
pub mod save;
pub mod system;
pub mod tag;
pub mod version;

use rpod_storage::{ImageRecord, Store};
use serde_json::Value;

/// An image record with what its config says, for listing and inspecting.
#[derive(Debug)]
pub struct ImageInfo {
    /// The store's record.
    pub record: ImageRecord,
    /// The image config (`{}` if unreadable).
    pub config: Value,
    /// Creation time (Unix): the config's `created`, else when it was stored.
    pub created: i64,
    /// Uncompressed size of all layers.
    pub size: u64,
}

impl ImageInfo {
    /// Reads the config and layer sizes of an image.
    pub fn read(store: &Store, record: ImageRecord) -> anyhow::Result<ImageInfo> {
        let config: Value = match store.read_blob(&record.config_digest) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(image = %record.id, error = %e, "image config is not valid JSON");
                Value::Object(Default::default())
            }),
            Err(e) => {
                tracing::warn!(image = %record.id, error = %e, "image config unreadable");
                Value::Object(Default::default())
            }
        };
        let created = config
            .get("created")
            .and_then(Value::as_str)
            .and_then(crate::format::parse_rfc3339)
            .unwrap_or(record.created as i64);
        let size =
            record.layers.iter().map(|l| store.layer(&l.diff_id).map(|r| r.diff_size).unwrap_or(l.size)).sum::<u64>()
                + record_config_size(store, &record);
        Ok(ImageInfo { record, config, created, size })
    }

    /// The config's `config` section's labels (or null).
    pub fn labels(&self) -> Value {
        self.config.pointer("/config/Labels").cloned().unwrap_or(Value::Null)
    }

    /// `name@digest` for each repository the image is named in.
    pub fn repo_digests(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in &self.record.names {
            let (repo, _) = crate::reference::split_name(n);
            let d = format!("{repo}@{}", self.record.manifest_digest);
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }
}

fn record_config_size(store: &Store, record: &ImageRecord) -> u64 {
    std::fs::metadata(store.blob_path(&record.config_digest)).map(|m| m.len()).unwrap_or(0)
}

/// All images with their configs, newest first (then by ID).
pub fn all_images(store: &Store) -> anyhow::Result<Vec<ImageInfo>> {
    let mut v = store.images()?.into_iter().map(|r| ImageInfo::read(store, r)).collect::<anyhow::Result<Vec<_>>>()?;
    v.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.record.id.cmp(&b.record.id)));
    Ok(v)
}

/// Finds an image as podman does for local images: the store's lookup (ID, ID prefix, full
/// name), then a short name matched against the stored names' trailing components, so
/// `demo` finds `docker.io/library/demo:latest` or `localhost/demo:latest`. Returns the
/// record and the reference to hand to the store (the full name, or the ID).
pub fn resolve(store: &Store, reference: &str) -> anyhow::Result<(ImageRecord, String)> {
    match store.image(reference) {
        Ok(r) => return Ok((r, reference.to_owned())),
        Err(rpod_storage::Error::ImageNotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let first = reference.split('/').next().unwrap_or_default();
    let has_domain = reference.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain || reference.contains('@') {
        return Err(rpod_storage::Error::ImageNotFound(reference.to_owned()).into());
    }
    let suffix = format!("/{}", rpod_storage::store::normalize_name(reference));
    let mut found: Vec<(ImageRecord, String)> = Vec::new();
    for img in store.images()? {
        if let Some(n) = img.names.iter().find(|n| n.ends_with(&suffix)).cloned() {
            found.push((img, n));
        }
    }
    match found.len() {
        0 => Err(rpod_storage::Error::ImageNotFound(reference.to_owned()).into()),
        1 => Ok(found.remove(0)),
        _ => Err(anyhow::anyhow!(
            "short name {reference:?} matches several images ({}): use a full name",
            found.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Runs each name through `f`, reporting all errors but the last, which is returned.
pub(crate) fn each(names: &[String], mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut last = None;
    for n in names {
        if let Err(err) = f(n) {
            if let Some(prev) = last.replace(err) {
                eprintln!("Error: {prev:#}");
            }
        }
    }
    last.map_or(Ok(()), Err)
}
