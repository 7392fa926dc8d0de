//! The store's error type: one enum, each variant a message a user can act on.

use std::path::PathBuf;

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with what was being done (includes ENOSPC: "No space left on device").
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob or layer.
        what: String,
        /// The announced digest.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A digest string that is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {0:?} (only sha256:<64 hex> is supported)")]
    InvalidDigest(String),
    /// A corrupt, truncated or inconsistent archive or layer.
    #[error("bad archive: {0}")]
    BadArchive(String),
    /// A tar entry whose path would leave the layer directory.
    #[error("unsafe path in layer tar: {path:?}: {reason}")]
    UnsafePath {
        /// The path as found in the tar.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A media type the store does not handle.
    #[error("unsupported media type {0:?}")]
    UnknownMediaType(String),
    /// Malformed JSON metadata.
    #[error("invalid JSON in {context}: {source}")]
    Json {
        /// Which document.
        context: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// No image matches the reference.
    #[error("image not known: {0}")]
    ImageNotFound(String),
    /// A short ID prefix matched several images.
    #[error("image ID prefix {0:?} is ambiguous")]
    AmbiguousImage(String),
    /// `rmi` of an image a container still uses.
    #[error("image {image} is in use by container {container} (use force to remove it anyway)")]
    ImageInUse {
        /// The image ID.
        image: String,
        /// A container using it.
        container: String,
    },
    /// No container with that ID.
    #[error("container not known: {0}")]
    ContainerNotFound(String),
    /// A layer the image needs is missing from the store.
    #[error("layer {0} is not in the store")]
    LayerNotFound(String),
    /// The overlay mount failed or is impossible.
    #[error("mount: {0}")]
    Mount(String),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to I/O and nix errors.
pub(crate) trait IoContext<T> {
    /// Wraps the error with a description of what was being done.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { context: context(), source })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Io { context: context(), source: std::io::Error::from(e) })
    }
}
