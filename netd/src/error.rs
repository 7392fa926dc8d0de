//! netd's typed errors. Messages follow netavark's "context: inner" chains, because users and
//! tests compare them (`invalid namespace path: IO error: ...`).

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum NetdError {
    /// A plain message (validation failures and the like).
    #[error("{0}")]
    Msg(String),
    /// An error with what was being done when it happened.
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<NetdError> },
    #[error("IO error: {0}")]
    Io(#[from] std::io::Error),
    #[error("Netlink error: {0}")]
    Netlink(String),
    #[error("JSON Decoding error: {0}")]
    Json(#[from] serde_json::Error),
    #[error("Sysctl error: {0}")]
    Sysctl(String),
    #[error("nftables error: {0}")]
    Nft(String),
    /// Several errors (teardown carries on and reports them all).
    #[error("{}", Multi(.0))]
    Multiple(Vec<NetdError>),
}

struct Multi<'a>(&'a [NetdError]);
impl fmt::Display for Multi<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "netd encountered multiple errors:")?;
        for e in self.0 {
            write!(f, "\n\t- {e}")?;
        }
        Ok(())
    }
}

impl From<rtnetlink::Error> for NetdError {
    fn from(e: rtnetlink::Error) -> Self {
        match e {
            rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => NetdError::Netlink(m.to_io().to_string()),
            other => NetdError::Netlink(other.to_string()),
        }
    }
}

impl From<nix::Error> for NetdError {
    fn from(e: nix::Error) -> Self {
        NetdError::Io(std::io::Error::from(e))
    }
}

pub type Result<T, E = NetdError> = std::result::Result<T, E>;

/// Shorthand for a message error.
pub fn msg(s: impl Into<String>) -> NetdError {
    NetdError::Msg(s.into())
}

/// Adds context to an error, netavark style.
pub trait Context<T> {
    fn ctx(self, context: impl fmt::Display) -> Result<T>;
    fn with_ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: Into<NetdError>> Context<T> for std::result::Result<T, E> {
    fn ctx(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| NetdError::Context { context: context.to_string(), inner: Box::new(e.into()) })
    }
    fn with_ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| NetdError::Context { context: f(), inner: Box::new(e.into()) })
    }
}

/// Collects errors from steps that must all run (teardown).
#[derive(Default)]
pub struct Errors(Vec<NetdError>);

impl Errors {
    pub fn push(&mut self, e: NetdError) {
        tracing::warn!("{e}");
        self.0.push(e);
    }
    pub fn check<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }
    pub fn into_result(mut self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(NetdError::Multiple(self.0)),
        }
    }
}
