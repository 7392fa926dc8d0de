//! Resumable, verified blob downloads into the store.
//!
//! A blob being downloaded is `<store>/blobs/partial/<hex>`, flocked by its downloader
//! (a second process wanting the same blob waits, then finds it in the store). Bytes are
//! written straight to the file, so after an interruption (even kill -9) what arrived is
//! there; the next download hashes that prefix again and asks for the rest with `Range`.
//! The whole blob is verified before it is renamed into `blobs/sha256/`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use indicatif::ProgressBar;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, IoContext};
use crate::store::Store;

use super::client::{error_message, Client};
use super::RegistryError;

/// Tries per blob when the connection breaks (each continues where the last stopped).
const ATTEMPTS: u32 = 4;

pub(crate) fn partial_dir(store: &Store) -> PathBuf {
    store.root().join("blobs/partial")
}

fn io_err(what: &str, e: std::io::Error) -> RegistryError {
    RegistryError::Store(Error::Io { context: what.to_owned(), source: e })
}

/// Hashes the first `len` bytes of `f`.
fn hash_prefix(f: &File, len: u64) -> Result<Sha256, RegistryError> {
    let mut h = Sha256::new();
    let mut r: &File = f;
    r.seek(SeekFrom::Start(0)).map_err(|e| io_err("reading partial blob", e))?;
    let mut r = r.take(len);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf).map_err(|e| io_err("reading partial blob", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h)
}

/// Downloads blob `digest` (`size` bytes) of `repo` into the store unless it is there.
/// Returns whether this call stored it.
pub(crate) fn fetch_blob(
    client: &Client,
    store: &Store,
    repo: &str,
    scope: &str,
    digest: &Digest,
    size: u64,
    bar: &ProgressBar,
) -> Result<bool, RegistryError> {
    bar.set_length(size);
    if store.has_blob(digest) {
        bar.set_position(size);
        bar.finish_with_message("already exists");
        return Ok(false);
    }
    let dir = partial_dir(store);
    fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let path = dir.join(digest.hex());
    let f = loop {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        // Blocks while another process downloads the same blob.
        let f = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::Io { context: format!("locking {}", path.display()), source: e.into() })?;
        // The holder before us may have renamed or removed the file: lock the current one.
        let ours = f.metadata().ctx(|| "stat partial blob".to_owned())?.ino();
        match fs::metadata(&path) {
            Ok(m) if m.ino() == ours => break f,
            _ => continue,
        }
    };
    if store.has_blob(digest) {
        let _ = fs::remove_file(&path);
        bar.set_position(size);
        bar.finish_with_message("already exists");
        return Ok(false);
    }
    let url_path = format!("/v2/{repo}/blobs/{digest}");
    let url = format!("{}{url_path}", client.base());
    let mut attempt = 0;
    let mut last_err = None;
    let hasher = loop {
        attempt += 1;
        if attempt > ATTEMPTS {
            return Err(last_err.unwrap_or_else(|| RegistryError::Transport {
                url: url.clone(),
                message: "download failed".to_owned(),
            }));
        }
        let mut len = f.metadata().ctx(|| "stat partial blob".to_owned())?.len();
        if len > size {
            f.set_len(0).ctx(|| "truncating partial blob".to_owned())?;
            len = 0;
        }
        let mut h = hash_prefix(&f, len)?;
        bar.set_position(len);
        if len == size {
            break h;
        }
        let mut headers = Vec::new();
        if len > 0 {
            headers.push(("Range", format!("bytes={len}-")));
            tracing::debug!(%digest, offset = len, "resuming blob download");
        }
        let resp = match client.get(&url_path, Some(scope), &headers) {
            Ok(r) => r,
            Err(e) if e.is_transient() => {
                last_err = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)));
                continue;
            }
            Err(e) => return Err(e),
        };
        let status = resp.status().as_u16();
        match status {
            206 if len > 0 => {
                // Content-Range must start where we are.
                let start = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(len) {
                    f.set_len(0).ctx(|| "truncating partial blob".to_owned())?;
                    last_err = Some(RegistryError::BadBlob {
                        digest: digest.to_string(),
                        message: "the registry answered the range request with another range".to_owned(),
                    });
                    continue;
                }
            }
            200 => {
                if len > 0 {
                    // The server ignored the range: start over.
                    f.set_len(0).ctx(|| "truncating partial blob".to_owned())?;
                    len = 0;
                    h = Sha256::new();
                    bar.set_position(0);
                }
            }
            416 => {
                f.set_len(0).ctx(|| "truncating partial blob".to_owned())?;
                continue;
            }
            404 => {
                return Err(RegistryError::Http { url, status, message: error_message(resp) });
            }
            s if s >= 500 || s == 429 => {
                last_err = Some(RegistryError::Http { url: url.clone(), status, message: error_message(resp) });
                std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)));
                continue;
            }
            _ => return Err(RegistryError::Http { url, status, message: error_message(resp) }),
        }
        (&*f).seek(SeekFrom::Start(len)).map_err(|e| io_err("writing partial blob", e))?;
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let broke = loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) => break Some(e),
            };
            if len + n as u64 > size {
                drop(f);
                let _ = fs::remove_file(&path);
                return Err(RegistryError::BadBlob {
                    digest: digest.to_string(),
                    message: format!("the registry sent more than its size of {size} bytes"),
                });
            }
            (&*f).write_all(&buf[..n]).map_err(|e| io_err("writing partial blob", e))?;
            h.update(&buf[..n]);
            len += n as u64;
            bar.set_position(len);
        };
        if let Some(e) = broke {
            last_err = Some(RegistryError::Transport { url: url.clone(), message: e.to_string() });
            continue;
        }
        if len < size {
            last_err = Some(RegistryError::Transport {
                url: url.clone(),
                message: format!("the body ended after {len} of {size} bytes"),
            });
            continue;
        }
        break h;
    };
    let got = Digest::from_hex(&hex::encode(hasher.finalize()))?;
    if got != *digest {
        drop(f);
        let _ = fs::remove_file(&path);
        return Err(RegistryError::Store(Error::DigestMismatch {
            what: format!("blob {digest} from {url}"),
            expected: digest.to_string(),
            actual: got.to_string(),
        }));
    }
    f.sync_all().ctx(|| "syncing blob".to_owned())?;
    fs::rename(&path, store.blob_path(digest)).ctx(|| format!("storing blob {digest}"))?;
    drop(f);
    bar.finish_with_message("done");
    Ok(true)
}
