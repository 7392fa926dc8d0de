//! Applies a batch with `nft -f -`: the whole batch is one netlink transaction, so it either
//! all takes effect or none of it does.

use std::io::Write;
use std::process::{Command, Stdio};

use super::Firewall;
use crate::error::{NetdError, Result};

/// The `nft` command-line tool.
#[derive(Debug)]
pub struct NftCli {
    pub binary: String,
}

impl Default for NftCli {
    fn default() -> Self {
        let binary = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nft")
            .to_string();
        NftCli { binary }
    }
}

impl NftCli {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut child = Command::new(&self.binary)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetdError::Nft(format!("cannot run {}: {e}", self.binary)))?;
        if let Some(input) = stdin {
            let mut w = child.stdin.take().ok_or_else(|| NetdError::Nft("no stdin".into()))?;
            w.write_all(input.as_bytes()).map_err(|e| NetdError::Nft(format!("write to nft: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| NetdError::Nft(e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().find(|l| l.contains("Error")).unwrap_or(err.trim()).trim().to_string();
            tracing::debug!("nft failed: {err}\nbatch:\n{}", stdin.unwrap_or(""));
            return Err(NetdError::Nft(first));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Firewall for NftCli {
    fn apply(&self, batch: &str) -> Result<()> {
        tracing::debug!("nft batch:\n{batch}");
        self.run(&["-f", "-"], Some(batch)).map(|_| ())
    }

    fn list_map(&self, map: &str) -> Result<String> {
        self.run(&["list", "map", "inet", super::rules::TABLE, map], None)
    }
}
