//! Listeners (one hickory `Server` per bind address, UDP and TCP) and reloading.
//!
//! A reload builds a new [`Table`] and swaps it in; listeners of unchanged addresses keep
//! their sockets (they read the shared table on every query), listeners of addresses that
//! are gone are shut down, new addresses get new listeners.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use hickory_server::Server;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use tracing::{debug, info, warn};

use crate::config::load_dir;
use crate::handler::{Handler, Settings, SharedTable};
use crate::table::{parse_resolv_conf, Network, Table};

/// Idle timeout of a TCP connection (aardvark-dns HEAD: 3 s).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// The host resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Binds a UDP socket; IPv6 addresses are bound with IP_FREEBIND so that a gateway address
/// still in duplicate address detection can be used.
fn bind_udp(addr: SocketAddr) -> Result<tokio::net::UdpSocket> {
    let fam = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(fam, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .context("creating udp socket")?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::IpFreebind, &true).context("IP_FREEBIND")?;
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true).context("IPV6_V6ONLY")?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).with_context(|| format!("binding udp {addr}"))?;
    let std_sock = std::net::UdpSocket::from(fd);
    tokio::net::UdpSocket::from_std(std_sock).with_context(|| format!("registering udp {addr}"))
}

fn bind_tcp(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .context("creating tcp socket")?;
    sock.set_reuseaddr(true).context("SO_REUSEADDR")?;
    if addr.is_ipv6() {
        socket::setsockopt(&sock, sockopt::IpFreebind, &true).context("IP_FREEBIND")?;
        socket::setsockopt(&sock, sockopt::Ipv6V6Only, &true).context("IPV6_V6ONLY")?;
    }
    sock.bind(addr).with_context(|| format!("binding tcp {addr}"))?;
    sock.listen(1024).with_context(|| format!("listening on tcp {addr}"))
}

/// Starts a server for one address (UDP and TCP).
fn listen(ip: IpAddr, port: u16, table: &SharedTable, settings: Settings) -> Result<Server<Handler>> {
    let addr = SocketAddr::new(ip, port);
    let udp = bind_udp(addr)?;
    let tcp = bind_tcp(addr)?;
    let mut server = Server::new(Handler::new(ip, table.clone(), settings));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64);
    Ok(server)
}

/// A fingerprint of the inputs (config files and resolv.conf): names, sizes, mtimes.
type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path, resolv: &Path) -> Fingerprint {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                out.push((e.file_name().to_string_lossy().into_owned(), m.len(), m.modified().ok()));
            }
        }
    }
    if let Ok(m) = std::fs::metadata(resolv) {
        out.push((String::from("\0resolv"), m.len(), m.modified().ok()));
    }
    out.sort();
    out
}

/// The running name server: the shared table and one listener per bind address.
pub struct Daemon {
    dir: PathBuf,
    resolv: PathBuf,
    port: u16,
    settings: Settings,
    table: SharedTable,
    listeners: HashMap<IpAddr, Server<Handler>>,
    /// last good version of every network file, kept when a file fails to parse on reload
    /// (e.g. read while being rewritten)
    good: BTreeMap<String, Network>,
    no_proxy: bool,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("dir", &self.dir).field("port", &self.port).finish_non_exhaustive()
    }
}

impl Daemon {
    /// Loads the config directory and binds every address. Fails if no network could be
    /// loaded or an address cannot be bound. Must run inside a tokio runtime.
    pub fn start(dir: &Path, port: u16, settings: Settings) -> Result<Self> {
        Self::start_with(dir, Path::new(RESOLV_CONF), port, settings)
    }

    /// As [`Daemon::start`], with another resolv.conf (tests).
    pub fn start_with(dir: &Path, resolv: &Path, port: u16, settings: Settings) -> Result<Self> {
        let mut d = Daemon {
            dir: dir.to_path_buf(),
            resolv: resolv.to_path_buf(),
            port,
            settings,
            table: Arc::new(RwLock::new(Arc::new(Table::default()))),
            listeners: HashMap::new(),
            good: BTreeMap::new(),
            no_proxy: std::env::var_os("AARDVARK_NO_PROXY").is_some(),
            fingerprint: Vec::new(),
        };
        let errors = d.load()?;
        let ips = d.current().bind_ips();
        if ips.is_empty() {
            if errors.is_empty() {
                bail!("no network config in {}", dir.display());
            }
            bail!("no usable network config: {}", errors.join("; "));
        }
        for ip in ips {
            let server = listen(ip, port, &d.table, settings)?;
            d.listeners.insert(ip, server);
        }
        info!("listening on {} address(es), port {port}", d.listeners.len());
        Ok(d)
    }

    /// The current table.
    pub fn current(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The addresses listened on.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.listeners.keys().copied().collect();
        v.sort();
        v
    }

    /// Reads the config directory and resolv.conf and swaps the table in; returns the error
    /// messages of the files that were skipped.
    fn load(&mut self) -> Result<Vec<String>> {
        self.fingerprint = fingerprint(&self.dir, &self.resolv);
        let loaded = load_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))?;
        let mut good: BTreeMap<String, Network> = loaded.networks.into_iter().collect();
        let mut errors = Vec::new();
        for (file, msg) in loaded.errors {
            warn!("skipping network config {msg}");
            if let Some(old) = self.good.get(&file) {
                warn!("keeping the previous version of {file}");
                good.insert(file, old.clone());
            }
            errors.push(msg);
        }
        let host = std::fs::read_to_string(&self.resolv).map(|t| parse_resolv_conf(&t)).unwrap_or_default();
        let table = Table::new(good.values().cloned().collect(), host).with_no_proxy(self.no_proxy);
        self.good = good;
        match self.table.write() {
            Ok(mut g) => *g = Arc::new(table),
            Err(p) => *p.into_inner() = Arc::new(table),
        }
        Ok(errors)
    }

    /// True when the config files or resolv.conf changed since the last load.
    pub fn inputs_changed(&self) -> bool {
        fingerprint(&self.dir, &self.resolv) != self.fingerprint
    }

    /// Reloads: swaps the table, stops listeners of addresses that are gone, starts
    /// listeners for new addresses. Returns false when no address is left (the daemon
    /// should exit).
    pub async fn reload(&mut self) -> Result<bool> {
        debug!("reloading {}", self.dir.display());
        self.load()?;
        let ips = self.current().bind_ips();
        let gone: Vec<IpAddr> = self.listeners.keys().filter(|ip| !ips.contains(ip)).copied().collect();
        for ip in gone {
            if let Some(mut server) = self.listeners.remove(&ip) {
                info!("stopping listener on {ip}");
                if let Err(e) = server.shutdown_gracefully().await {
                    warn!("stopping listener on {ip}: {e}");
                }
            }
        }
        for ip in ips {
            if self.listeners.contains_key(&ip) {
                continue;
            }
            match listen(ip, self.port, &self.table, self.settings) {
                Ok(server) => {
                    info!("listening on {ip}:{}", self.port);
                    self.listeners.insert(ip, server);
                }
                Err(e) => warn!("cannot listen on {ip}:{}: {e:#}", self.port),
            }
        }
        debug!("reloaded: listening on {} address(es)", self.listeners.len());
        Ok(!self.current().bind_ips().is_empty())
    }

    /// Stops every listener.
    pub async fn shutdown(&mut self) {
        for (_, mut server) in self.listeners.drain() {
            let _ = server.shutdown_gracefully().await;
        }
    }
}
