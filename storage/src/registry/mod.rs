//! Pulling images from registries that speak the OCI distribution API, and `login`/`logout`.
//!
//! * [`pull`] resolves a reference (`[registry[:port]/]repo[:tag|@digest]`), fetches its
//!   manifest (OCI or Docker schema 2; an image index or manifest list picks linux and the
//!   host architecture), downloads the config and the layers in parallel into the blob
//!   store (every blob verified against its digest), extracts each layer as soon as it is
//!   complete, and records the image last.
//! * Authentication: anonymous, Basic, and the Bearer token flow, with credentials from
//!   [`PullOptions::credentials`] or podman's `auth.json` ([`auth::default_auth_file`]).
//! * Resumable: a blob being downloaded lives in `<store>/blobs/partial/<hex>` (flocked by
//!   its downloader); after an interruption (even kill -9) the next pull continues it with
//!   an HTTP `Range` request and verifies the whole blob before it enters the store.
//!   Completed blobs are never downloaded again.

pub mod auth;
mod blob;
mod client;
mod pull;
pub mod reference;

use std::path::{Path, PathBuf};

pub use auth::{default_auth_file, Credentials};
pub use pull::pull;
pub use reference::Reference;

use client::Client;

/// Everything pulling, login and logout can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not be reached or the connection broke.
    #[error("{url}: {message}")]
    Transport {
        /// The URL being fetched.
        url: String,
        /// The error.
        message: String,
    },
    /// An unexpected HTTP status.
    #[error("{url}: HTTP {status}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The registry's error message.
        message: String,
    },
    /// Authentication was required or refused.
    #[error("authenticating to {registry}: {message}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// What happened.
        message: String,
    },
    /// The manifest or image is not in the registry.
    #[error("{0}: manifest unknown (no such image or tag)")]
    NotFound(String),
    /// An image index without a manifest for this platform.
    #[error("{reference}: no image for {platform} in the image index (it has: {available})")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// The wanted `os/arch`.
        platform: String,
        /// The platforms listed.
        available: String,
    },
    /// A manifest that is malformed or inconsistent.
    #[error("bad manifest {what}: {message}")]
    BadManifest {
        /// Which manifest.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A blob that does not match its descriptor (other than a digest mismatch, which is a
    /// [`crate::Error::DigestMismatch`] inside [`RegistryError::Store`]).
    #[error("bad blob {digest}: {message}")]
    BadBlob {
        /// The blob's digest.
        digest: String,
        /// What is wrong.
        message: String,
    },
    /// An auth file that cannot be read or written.
    #[error("auth file {path}: {message}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An error of the store (includes digest mismatches and I/O errors).
    #[error(transparent)]
    Store(#[from] crate::Error),
}

impl RegistryError {
    /// Whether retrying may help (network trouble, a server error): after such an error
    /// the blobs downloaded so far are kept, so the next pull continues where this stopped.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Options of [`pull`].
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Verify TLS certificates (default). When false, https without verification is tried
    /// first and then plain http, like podman's `--tls-verify=false`.
    pub tls_verify: bool,
    /// Credentials to use instead of the auth file's (podman's `--creds`).
    pub credentials: Option<Credentials>,
    /// The auth file (`--authfile`); None: [`default_auth_file`].
    pub auth_file: Option<PathBuf>,
    /// Show a progress bar per blob when stderr is a terminal (false: always quiet).
    pub progress: bool,
    /// How many blobs are downloaded at once (at least 1).
    pub parallelism: usize,
    /// The architecture to pick from an image index (GOARCH names: `amd64`, `arm64`);
    /// None: the host's.
    pub arch: Option<String>,
    /// The architecture variant (`v8`, `v7`), if one is wanted.
    pub variant: Option<String>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            tls_verify: true,
            credentials: None,
            auth_file: None,
            progress: true,
            parallelism: 3,
            arch: None,
            variant: None,
        }
    }
}

/// Options of [`login`].
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// As [`PullOptions::tls_verify`].
    pub tls_verify: bool,
    /// The auth file to write; None: [`default_auth_file`].
    pub auth_file: Option<PathBuf>,
}

impl Default for LoginOptions {
    fn default() -> Self {
        LoginOptions { tls_verify: true, auth_file: None }
    }
}

/// The `host[:port]` a login names (a scheme or path given with it is dropped; Docker Hub
/// aliases become `docker.io`).
pub fn normalize_registry(registry: &str) -> Result<String, RegistryError> {
    let r = registry.strip_prefix("https://").or_else(|| registry.strip_prefix("http://")).unwrap_or(registry);
    let host = r.split('/').next().unwrap_or(r);
    let bad = || RegistryError::InvalidReference {
        reference: registry.to_owned(),
        reason: "not a registry host[:port]".to_owned(),
    };
    if !(host == "localhost" || host.contains(['.', ':']) || host.starts_with('[')) {
        return Err(bad());
    }
    // Reuse the reference parser's host rules.
    Reference::parse(&format!("{host}/x")).map(|p| p.registry).map_err(|_| bad())
}

/// Checks `username`/`password` against the registry's `/v2/` (Basic, or the Bearer token
/// flow) and stores them in the auth file (podman's format). Returns the file written.
pub fn login(registry: &str, username: &str, password: &str, opts: &LoginOptions) -> Result<PathBuf, RegistryError> {
    let reg = normalize_registry(registry)?;
    let api = Reference::parse(&format!("{reg}/x"))?;
    let creds = Credentials::new(username, password);
    let client = Client::connect(&reg, api.api_host(), opts.tls_verify, Some(creds.clone()))?;
    client.check_login()?;
    let path = opts.auth_file.clone().unwrap_or_else(default_auth_file);
    auth::store_credentials(&path, &reg, &creds)?;
    Ok(path)
}

/// Removes the stored credentials of `registry` (of every registry when None) from the
/// auth file (`auth_file`, or [`default_auth_file`]). Returns how many entries went.
pub fn logout(registry: Option<&str>, auth_file: Option<&Path>) -> Result<usize, RegistryError> {
    let path = auth_file.map(Path::to_owned).unwrap_or_else(default_auth_file);
    let reg = registry.map(normalize_registry).transpose()?;
    auth::remove_credentials(&path, reg.as_deref())
}
