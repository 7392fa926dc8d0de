//! netd's state under `<config>/netd/`: what `firewall-reload` needs to rebuild every rule,
//! in rootful and rootless mode alike.
//!
//! - `netd.lock`: one exclusive flock, held by each setup, teardown and reload while it runs;
//!   netd processes on the same config directory are serialised by it.
//! - `networks/<network id>.json`: the firewall view of each bridge network in use.
//! - `ports/<network id>_<container id>.json`: a container's published ports on a network.
//! - `members/<network id>/<container id>`: which containers are attached to a bridge network,
//!   so a teardown knows whether it is the last one without listing the bridge's ports (a
//!   netlink dump that grows with the number of containers).
//! - `skeleton.nft`: the per-network rules last applied, so that a change which leaves them
//!   as they are only touches map elements.
//!
//! Files are written to a temporary name and renamed, so a crash never leaves half a file.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{msg, Context, Result};
use crate::firewall::rules::{NetRules, PortRules};

pub struct State {
    dir: PathBuf,
}

/// The held lock; released on drop.
pub struct Lock {
    _f: Flock<File>,
}

fn safe_component(s: &str) -> Result<&str> {
    if s.is_empty() || s.contains(['/', '\0']) || s == "." || s == ".." {
        return Err(msg(format!("invalid id {s:?}")));
    }
    Ok(s)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data).with_ctx(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_ctx(|| format!("rename {}", path.display()))
}

fn read_dir_json<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_ctx(|| format!("read {}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = fs::read_to_string(&p).with_ctx(|| format!("read {}", p.display()))?;
        match serde_json::from_str(&text) {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!("ignoring corrupt state file {}: {e}", p.display()),
        }
    }
    Ok(out)
}

impl State {
    pub fn new(config: &Path) -> Result<State> {
        let dir = config.join("netd");
        for sub in ["networks", "ports"] {
            fs::create_dir_all(dir.join(sub)).with_ctx(|| format!("create {}", dir.join(sub).display()))?;
        }
        Ok(State { dir })
    }

    pub fn lock(&self) -> Result<Lock> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("netd.lock"))
            .ctx("open lock file")?;
        let f = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e).ctx("lock")?;
        Ok(Lock { _f: f })
    }

    fn net_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self.dir.join("networks").join(format!("{}.json", safe_component(id)?)))
    }

    fn port_path(&self, net: &str, ctr: &str) -> Result<PathBuf> {
        Ok(self.dir.join("ports").join(format!("{}_{}.json", safe_component(net)?, safe_component(ctr)?)))
    }

    /// The per-network rules last applied, if known.
    pub fn skeleton(&self) -> Option<String> {
        fs::read_to_string(self.dir.join("skeleton.nft")).ok()
    }

    /// Records the rules just applied (None: the table was deleted).
    pub fn put_skeleton(&self, sk: Option<&str>) -> Result<()> {
        let p = self.dir.join("skeleton.nft");
        match sk {
            Some(s) => write_atomic(&p, s.as_bytes()),
            None => remove(&p),
        }
    }

    fn member_dir(&self, net: &str) -> Result<PathBuf> {
        Ok(self.dir.join("members").join(safe_component(net)?))
    }

    pub fn add_member(&self, net: &str, ctr: &str) -> Result<()> {
        let d = self.member_dir(net)?;
        fs::create_dir_all(&d).with_ctx(|| format!("create {}", d.display()))?;
        fs::write(d.join(safe_component(ctr)?), b"").with_ctx(|| format!("write {}", d.display()))
    }

    pub fn remove_member(&self, net: &str, ctr: &str) -> Result<()> {
        remove(&self.member_dir(net)?.join(safe_component(ctr)?))
    }

    /// True when some container is recorded on the network.
    pub fn has_members(&self, net: &str) -> Result<bool> {
        let d = self.member_dir(net)?;
        match fs::read_dir(&d) {
            Ok(mut rd) => Ok(rd.next().is_some()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_ctx(|| format!("read {}", d.display())),
        }
    }

    pub fn networks(&self) -> Result<Vec<NetRules>> {
        read_dir_json(&self.dir.join("networks"))
    }

    pub fn has_network(&self, id: &str) -> Result<bool> {
        Ok(self.net_path(id)?.exists())
    }

    pub fn put_network(&self, n: &NetRules) -> Result<()> {
        write_atomic(&self.net_path(&n.id)?, &serde_json::to_vec(n)?)
    }

    pub fn remove_network(&self, id: &str) -> Result<()> {
        remove(&self.net_path(id)?)
    }

    pub fn ports(&self) -> Result<Vec<PortRules>> {
        read_dir_json(&self.dir.join("ports"))
    }

    pub fn get_ports(&self, net: &str, ctr: &str) -> Result<Option<PortRules>> {
        let p = self.port_path(net, ctr)?;
        match fs::read_to_string(&p) {
            Ok(t) => Ok(serde_json::from_str(&t).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_ctx(|| format!("read {}", p.display())),
        }
    }

    pub fn put_ports<T: Serialize>(&self, net: &str, ctr: &str, p: &T) -> Result<()> {
        write_atomic(&self.port_path(net, ctr)?, &serde_json::to_vec(p)?)
    }

    pub fn remove_ports(&self, net: &str, ctr: &str) -> Result<()> {
        remove(&self.port_path(net, ctr)?)
    }
}

fn remove(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_ctx(|| format!("remove {}", p.display())),
    }
}
