//! `pull`: manifest resolution, parallel verified downloads, layer extraction, import.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;

use crate::digest::Digest;
use crate::store::{media, Created, Store};

use super::auth::lookup_credentials;
use super::blob::fetch_blob;
use super::client::{error_message, Client};
use super::{PullOptions, Reference, RegistryError};

/// Manifests larger than this are refused.
const MANIFEST_MAX: u64 = 4 << 20;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
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

/// The GOARCH name of the host architecture.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn bad_manifest(what: impl Into<String>, message: impl Into<String>) -> RegistryError {
    RegistryError::BadManifest { what: what.into(), message: message.into() }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| bad_manifest(what, e.to_string()))
}

/// Fetches a manifest by tag or digest; returns its bytes, media type and digest (verified
/// against `expected` and against the registry's `Docker-Content-Digest`).
fn fetch_manifest(
    client: &Client,
    r: &Reference,
    reference: &str,
    scope: &str,
    expected: Option<&Digest>,
) -> Result<(Vec<u8>, String, Digest), RegistryError> {
    let path = format!("/v2/{}/manifests/{reference}", r.repository);
    let url = format!("{}{path}", client.base());
    let resp = client.get(&path, Some(scope), &[("Accept", ACCEPT.to_owned())])?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Err(RegistryError::NotFound(format!("{}/{}:{reference}", r.registry, r.repository)));
    }
    if !(200..300).contains(&status) {
        return Err(RegistryError::Http { url, status, message: error_message(resp) });
    }
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let header_digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = Client::read_small(resp, &url, MANIFEST_MAX)?;
    let digest = Digest::of(&bytes);
    if let Some(e) = expected {
        e.verify(&digest, || format!("manifest {e}"))?;
    }
    if let Some(h) = header_digest.as_deref().and_then(|h| Digest::parse(h).ok()) {
        h.verify(&digest, || format!("manifest {reference} (Docker-Content-Digest)"))?;
    }
    let media_type = match ctype.as_str() {
        media::OCI_MANIFEST | media::OCI_INDEX | media::DOCKER_MANIFEST | media::DOCKER_LIST => ctype,
        _ => {
            // Fall back to the document itself.
            let v: serde_json::Value = parse(&bytes, &url)?;
            match v.get("mediaType").and_then(|m| m.as_str()) {
                Some(m) => m.to_owned(),
                None if v.get("manifests").is_some() => media::OCI_INDEX.to_owned(),
                None if v.get("config").is_some() => media::OCI_MANIFEST.to_owned(),
                None => {
                    return Err(crate::Error::UnknownMediaType(if ctype.is_empty() {
                        "(none)".to_owned()
                    } else {
                        ctype
                    })
                    .into())
                }
            }
        }
    };
    Ok((bytes, media_type, digest))
}

fn choose<'a>(
    index: &'a Index,
    r: &Reference,
    arch: &str,
    variant: Option<&str>,
) -> Result<&'a Descriptor, RegistryError> {
    let matching: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
        .collect();
    let want_variant = variant.or(if arch == "arm64" { Some("v8") } else { None });
    fn var<'a>(m: &&'a Descriptor) -> Option<&'a str> {
        m.platform.as_ref().and_then(|p| p.variant.as_deref())
    }
    let pick = matching
        .iter()
        .find(|m| want_variant.is_some() && var(m) == want_variant)
        .or_else(|| if variant.is_some() { None } else { matching.iter().find(|m| var(m).is_none()) })
        .or_else(|| if variant.is_some() { None } else { matching.first() });
    pick.copied().ok_or_else(|| {
        let available: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|m| m.platform.as_ref())
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            })
            .collect();
        RegistryError::NoMatchingPlatform {
            reference: r.to_string(),
            platform: match variant {
                Some(v) => format!("linux/{arch}/{v}"),
                None => format!("linux/{arch}"),
            },
            available: if available.is_empty() { "none".to_owned() } else { available.join(", ") },
        }
    })
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

const BAR_TEMPLATE: &str = "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}";

struct Progress {
    multi: Option<MultiProgress>,
    style: ProgressStyle,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let show = enabled && std::io::stderr().is_terminal();
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        Progress { multi: show.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())), style }
    }

    fn bar(&self, what: &str, d: &Digest) -> ProgressBar {
        match &self.multi {
            Some(m) => {
                let b = m.add(ProgressBar::new(0));
                b.set_style(self.style.clone());
                b.set_prefix(format!("Copying {what} {}", short(d)));
                b
            }
            None => ProgressBar::hidden(),
        }
    }
}

/// Pulls `reference` into `store` and returns the image ID (the config digest's hex). The
/// image gets the name `registry/repo:tag` (see [`Reference::store_name`]).
///
/// Every blob is verified against its digest before it enters the store; layers are
/// extracted as soon as they are downloaded; the image record is written last. On an error
/// what this pull added is removed again, except after a transient error
/// ([`RegistryError::is_transient`]), when the verified blobs are kept for the next try
/// (partially downloaded blobs are always kept, to be resumed).
pub fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<String, RegistryError> {
    let r = Reference::parse(reference)?;
    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => lookup_credentials(opts.auth_file.as_deref(), &r.registry)?,
    };
    let client = Client::connect(&r.registry, r.api_host(), opts.tls_verify, creds)?;
    let scope = format!("repository:{}:pull", r.repository);
    let mut created = Created::default();
    let res = {
        // Shared GC lock: a concurrent prune/rmi cannot remove what this pull adds.
        let _gc = store.gc_lock(false)?;
        pull_locked(store, &client, &r, &scope, opts, &mut created)
    };
    if let Err(e) = &res {
        if !e.is_transient() {
            if let Err(u) = store.undo(&created) {
                tracing::warn!(error = %u, "cleaning up after a failed pull");
            }
        }
    }
    res
}

fn pull_locked(
    store: &Store,
    client: &Client,
    r: &Reference,
    scope: &str,
    opts: &PullOptions,
    created: &mut Created,
) -> Result<String, RegistryError> {
    let (mut bytes, mut mt, mut digest) = fetch_manifest(client, r, &r.manifest_ref(), scope, r.digest.as_ref())?;
    if mt == media::OCI_INDEX || mt == media::DOCKER_LIST {
        let index: Index = parse(&bytes, &format!("index {digest}"))?;
        let arch = opts.arch.as_deref().unwrap_or(host_arch());
        let d = choose(&index, r, arch, opts.variant.as_deref())?;
        tracing::debug!(index = %digest, manifest = %d.digest, arch, "chose a manifest from the index");
        let want = d.digest.clone();
        (bytes, mt, digest) = fetch_manifest(client, r, &want.to_string(), scope, Some(&want))?;
    }
    if mt != media::OCI_MANIFEST && mt != media::DOCKER_MANIFEST {
        return Err(crate::Error::UnknownMediaType(mt).into());
    }
    let what = format!("{r} ({digest})");
    let m: Manifest = parse(&bytes, &what)?;
    match m.config.media_type.as_str() {
        media::OCI_CONFIG | media::DOCKER_CONFIG => {}
        other => return Err(crate::Error::UnknownMediaType(other.to_owned()).into()),
    }
    for l in &m.layers {
        if !media::is_layer(&l.media_type) {
            return Err(crate::Error::UnknownMediaType(l.media_type.clone()).into());
        }
    }
    let progress = Progress::new(opts.progress);

    // The config first: it names the layers' diff IDs.
    let bar = progress.bar("config", &m.config.digest);
    if fetch_blob(client, store, &r.repository, scope, &m.config.digest, m.config.size, &bar)? {
        created.blobs.push(m.config.digest.clone());
    }
    let cfg: ImageConfig = parse(&store.read_blob(&m.config.digest)?, &format!("config {}", m.config.digest))?;
    if cfg.rootfs.diff_ids.len() != m.layers.len() {
        return Err(bad_manifest(
            &what,
            format!(
                "the config lists {} diff IDs but the manifest {} layers",
                cfg.rootfs.diff_ids.len(),
                m.layers.len()
            ),
        ));
    }

    // Layers: downloaded by `parallelism` workers, each extracted once complete.
    let bars: Vec<ProgressBar> = m.layers.iter().map(|l| progress.bar("blob", &l.digest)).collect();
    let queue: Mutex<VecDeque<usize>> = Mutex::new((0..m.layers.len()).collect());
    let failed = AtomicBool::new(false);
    let errors: Mutex<Vec<(usize, RegistryError)>> = Mutex::new(Vec::new());
    let shared_created: Mutex<Created> = Mutex::new(Created::default());
    let workers = opts.parallelism.clamp(1, 16).min(m.layers.len().max(1));
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    break;
                }
                let Some(i) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else { break };
                let l = &m.layers[i];
                let res =
                    fetch_blob(client, store, &r.repository, scope, &l.digest, l.size, &bars[i]).and_then(|fresh| {
                        if fresh {
                            shared_created.lock().unwrap_or_else(|e| e.into_inner()).blobs.push(l.digest.clone());
                        }
                        let diff_id = &cfg.rootfs.diff_ids[i];
                        if store.ensure_layer(diff_id, &l.digest)? {
                            shared_created.lock().unwrap_or_else(|e| e.into_inner()).layers.push(diff_id.clone());
                        }
                        Ok(())
                    });
                if let Err(e) = res {
                    bars[i].abandon_with_message("failed");
                    failed.store(true, Ordering::SeqCst);
                    errors.lock().unwrap_or_else(|e| e.into_inner()).push((i, e));
                }
            });
        }
    });
    let c = shared_created.into_inner().unwrap_or_else(|e| e.into_inner());
    created.blobs.extend(c.blobs);
    created.layers.extend(c.layers);
    let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if !errors.is_empty() {
        errors.sort_by_key(|(i, _)| *i);
        // A non-transient error explains more than the others.
        let pos = errors.iter().position(|(_, e)| !e.is_transient()).unwrap_or(0);
        return Err(errors.swap_remove(pos).1);
    }

    // The manifest last, then the record (the import re-checks everything it points to).
    let (_, fresh) = store.put_blob_bytes(&bytes, Some(&digest))?;
    if fresh {
        created.blobs.push(digest.clone());
    }
    let id = store.import_stored_manifest(&digest, &mt, vec![r.store_name()], created)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bar_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn platform_choice() {
        let d = |n: u8| Digest::of(&[n]);
        let idx = Index {
            manifests: vec![
                Descriptor {
                    media_type: media::OCI_MANIFEST.to_owned(),
                    digest: d(1),
                    size: 1,
                    platform: Some(Platform { architecture: "amd64".into(), os: "linux".into(), variant: None }),
                },
                Descriptor {
                    media_type: media::OCI_MANIFEST.to_owned(),
                    digest: d(2),
                    size: 1,
                    platform: Some(Platform {
                        architecture: "arm64".into(),
                        os: "linux".into(),
                        variant: Some("v8".into()),
                    }),
                },
            ],
        };
        let r = Reference::parse("x/y").unwrap();
        assert_eq!(choose(&idx, &r, "amd64", None).unwrap().digest, d(1));
        assert_eq!(choose(&idx, &r, "arm64", None).unwrap().digest, d(2));
        let e = choose(&idx, &r, "s390x", None).unwrap_err().to_string();
        assert!(e.contains("linux/s390x") && e.contains("linux/arm64/v8"), "{e}");
    }
}
