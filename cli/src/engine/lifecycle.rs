//! Container lifecycle: create, prepare (mount, netns, netd, files, bundle), run under a
//! monitor, clean up after exit, stop and remove.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rpod_wire::{NetworkOptions, PerNetworkOptions, PortMapping, StatusBlock};
use serde_json::Value;

use super::db::{Container, ContainerConfig, NetMode, State, VolumeMount};
use super::{network, Engine};
use crate::{exit_with, EXIT_ERROR};

/// Exit code when the command cannot be invoked.
pub const EXIT_CANNOT_INVOKE: i32 = 126;
/// Exit code when the command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// What `create` (and `run`) asks for.
#[derive(Debug, Default, Clone)]
pub struct CreateRequest {
    /// `--name`.
    pub name: Option<String>,
    /// The image reference.
    pub image: String,
    /// The command (overrides the image's Cmd).
    pub cmd: Vec<String>,
    /// `--entrypoint`.
    pub entrypoint: Option<String>,
    /// `-e`.
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-p`.
    pub ports: Vec<String>,
    /// `--network`.
    pub network: Option<String>,
    /// `--network-alias`.
    pub aliases: Vec<String>,
    /// `--rm`.
    pub rm: bool,
    /// `-v HOST:CTR[:ro]`.
    pub volumes: Vec<String>,
    /// `--tmpfs PATH[:OPTIONS]`.
    pub tmpfs: Vec<String>,
    /// `--env-file`.
    pub env_files: Vec<String>,
    /// `--dns`.
    pub dns: Vec<String>,
    /// `--ip`.
    pub ip: Option<String>,
    /// `--mac-address`.
    pub mac: Option<String>,
    /// `--pod`.
    pub pod: Option<String>,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
    /// `-i`.
    pub interactive: bool,
    /// `-t`.
    pub tty: bool,
}

/// Parses `-v HOST:CTR[:OPTIONS]` (a bind mount of an existing absolute host path).
pub fn parse_volume(spec: &str) -> anyhow::Result<VolumeMount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => anyhow::bail!("invalid volume {spec:?}: expected HOST-DIR:CONTAINER-DIR[:OPTIONS]"),
    };
    if !src.starts_with('/') {
        anyhow::bail!("invalid volume {spec:?}: named volumes are not supported, the host path must be absolute");
    }
    if !dst.starts_with('/') {
        anyhow::bail!("invalid container path {dst:?}, must be an absolute path");
    }
    let mut readonly = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "z" | "Z" | "rbind" | "bind" | "rprivate" | "private" => {}
            _ => anyhow::bail!("invalid volume option {o:?} in {spec:?}"),
        }
    }
    std::fs::metadata(src).map_err(|e| anyhow::anyhow!("statfs {src}: {}", e.kind().to_string().to_lowercase()))?;
    Ok(VolumeMount { source: src.to_owned(), destination: dst.to_owned(), readonly })
}

/// Reads an `--env-file`: `KEY=VALUE` or `KEY` (taken from the caller) lines; blank lines
/// and `#` comments are skipped.
pub fn read_env_file(path: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading env file {path}"))?;
    Ok(text
        .lines()
        .map(|l| l.trim_start())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Checks a MAC address (`aa:bb:cc:dd:ee:ff`).
fn valid_mac(m: &str) -> bool {
    let p: Vec<&str> = m.split(':').collect();
    p.len() == 6 && p.iter().all(|x| x.len() == 2 && x.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The network mode of `--network`: bridge networks by name, `none`, `host`, or `portfwd`
/// (also `slirp4netns[:OPTIONS]`, whose options are ignored). Unset: the default network
/// `podman` for root, portfwd for a rootless user (as podman).
pub fn parse_network(spec: Option<&str>) -> NetMode {
    match spec {
        None | Some("") if crate::rootless::is_rootless() => NetMode::Portfwd,
        None | Some("") | Some("bridge") => NetMode::Bridge(vec![network::DEFAULT_NETWORK.to_owned()]),
        Some("none") => NetMode::None,
        Some("host") => NetMode::Host,
        Some(x)
            if x == "portfwd" || x == "slirp4netns" || x.starts_with("slirp4netns:") || x.starts_with("portfwd:") =>
        {
            NetMode::Portfwd
        }
        Some(list) => NetMode::Bridge(list.split(',').map(str::to_owned).collect()),
    }
}

/// Descriptors that must stay open while the container runs (the write ends of portfwd's
/// exit pipes): held by this process, handed to the monitor by `start_detached`.
static HELD_FDS: std::sync::Mutex<Vec<OwnedFd>> = std::sync::Mutex::new(Vec::new());

fn hold(fd: OwnedFd) {
    if let Ok(mut v) = HELD_FDS.lock() {
        v.push(fd);
    }
}

/// A container's own portfwd: its pid file and API socket.
fn portfwd_files(id: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let d = super::run_base().join("portfwd");
    let short = &id[..id.len().min(16)];
    (d.join(format!("{short}.pid")), d.join(format!("{short}.sock")))
}

/// Starts portfwd on a sandbox's network namespace and publishes its ports. With
/// `exit_fd`, the exit pipe's write end is held (see [`HELD_FDS`]), so portfwd ends with the
/// container's supervisor.
pub(crate) fn start_portfwd(
    engine: &Engine,
    id: &str,
    netns: &Path,
    ports: &[PortMapping],
    exit_fd: bool,
) -> anyhow::Result<()> {
    let bin = super::portfwd::binary(&engine.root)?;
    let (pidfile, api) = portfwd_files(id);
    let started = super::portfwd::start(&bin, netns, &api, &pidfile, exit_fd)?;
    if let Err(e) = super::portfwd::add_ports(&api, ports, None) {
        super::portfwd::stop(&pidfile, &api);
        return Err(e);
    }
    if let Some(fd) = started.exit {
        hold(fd);
    }
    Ok(())
}

/// Stops a sandbox's portfwd (no-op when there is none).
pub(crate) fn stop_portfwd(id: &str) {
    let (pidfile, api) = portfwd_files(id);
    super::portfwd::stop(&pidfile, &api);
}

/// Parses `[IP:]HOST:CTR[/PROTO]` (and `HOST-HOST:CTR-CTR` ranges).
pub fn parse_port(spec: &str) -> anyhow::Result<Vec<PortMapping>> {
    let bad = || anyhow::anyhow!("invalid port format {spec:?}: expected [IP:]HOST:CONTAINER[/PROTOCOL]");
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p),
        None => (spec, "tcp"),
    };
    let protos: Vec<&str> = proto.split(',').collect();
    if protos.iter().any(|p| !matches!(*p, "tcp" | "udp" | "sctp")) {
        anyhow::bail!("invalid protocol {proto:?} in port {spec:?}: tcp, udp or sctp");
    }
    let (ip, host, ctr) = match rest.rsplit_once(':') {
        Some((left, ctr)) => match left.rsplit_once(':') {
            Some((ip, host)) => (ip.trim_start_matches('[').trim_end_matches(']'), host, ctr),
            None => ("", left, ctr),
        },
        None => return Err(bad()),
    };
    if !ip.is_empty() {
        ip.parse::<IpAddr>().map_err(|_| anyhow::anyhow!("invalid IP address {ip:?} in port {spec:?}"))?;
    }
    let range = |s: &str| -> anyhow::Result<(u16, u16)> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a.parse().map_err(|_| bad())?;
        let b: u16 = b.parse().map_err(|_| bad())?;
        if a == 0 || b < a {
            return Err(bad());
        }
        Ok((a, b))
    };
    let (h0, h1) = range(host)?;
    let (c0, c1) = range(ctr)?;
    if h1 - h0 != c1 - c0 {
        anyhow::bail!("host and container port ranges of {spec:?} differ in size");
    }
    Ok(protos
        .iter()
        .map(|p| PortMapping {
            host_ip: ip.to_owned(),
            container_port: c0,
            host_port: h0,
            range: c1 - c0 + 1,
            protocol: (*p).to_owned(),
        })
        .collect())
}

fn image_config(engine: &Engine, record: &rpod_storage::ImageRecord) -> Value {
    engine
        .store
        .read_blob(&record.config_digest)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("config").cloned())
        .unwrap_or(Value::Null)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

const ADJECTIVES: &[&str] = &["brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry"];
const NOUNS: &[&str] = &["turing", "lovelace", "hopper", "ritchie", "thompson", "knuth", "dijkstra", "hamilton"];

fn random_name(engine: &Engine) -> anyhow::Result<String> {
    loop {
        let n = format!(
            "{}_{}",
            ADJECTIVES[rand::random_range(0..ADJECTIVES.len())],
            NOUNS[rand::random_range(0..NOUNS.len())]
        );
        let n = if rand::random_range(0..4) == 0 { format!("{n}{}", rand::random_range(0..100)) } else { n };
        if !engine.db.name_taken(&n)? {
            return Ok(n);
        }
    }
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Creates a container: the store's writable layer, IP leases and the database row.
/// Nothing is left behind on error.
pub fn create(engine: &Engine, req: &CreateRequest) -> anyhow::Result<String> {
    let mut ports = Vec::new();
    for p in &req.ports {
        ports.extend(parse_port(p)?);
    }
    let pod = match &req.pod {
        Some(name) => {
            let p = engine.db.pod_lookup(name)?;
            if !ports.is_empty() {
                anyhow::bail!("invalid config provided: published or exposed ports must be defined when the pod is created: network cannot be configured when it is shared with a pod");
            }
            if req.network.is_some() || req.ip.is_some() || req.mac.is_some() || !req.aliases.is_empty() {
                anyhow::bail!("invalid config provided: networks must be defined when the pod is created: network cannot be configured when it is shared with a pod");
            }
            Some(p)
        }
        None => None,
    };
    let net = if pod.is_some() { NetMode::None } else { parse_network(req.network.as_deref()) };
    let mut networks = Vec::new();
    if let NetMode::Bridge(names) = &net {
        for n in names {
            networks.push(network::get(&engine.root, n)?);
        }
    } else if !ports.is_empty() && net != NetMode::Portfwd {
        anyhow::bail!("published ports need a bridge network or portfwd: invalid argument");
    }
    if crate::rootless::is_rootless() {
        super::portfwd::check_unprivileged(&ports)?;
    }
    let volumes = req.volumes.iter().map(|v| parse_volume(v)).collect::<anyhow::Result<Vec<_>>>()?;
    for t in &req.tmpfs {
        if !t.starts_with('/') {
            anyhow::bail!("invalid tmpfs path {t:?}, must be an absolute path");
        }
    }
    let dns = req
        .dns
        .iter()
        .map(|d| d.parse::<IpAddr>().map_err(|_| anyhow::anyhow!("{d} is not an ip address: invalid argument")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(m) = &req.mac {
        if !valid_mac(m) {
            anyhow::bail!("invalid MAC address {m:?}: invalid argument");
        }
    }
    let static_ip = match &req.ip {
        Some(ip) => {
            let ip: IpAddr = ip.parse().map_err(|_| anyhow::anyhow!("{ip} is not an ip address: invalid argument"))?;
            if networks.len() != 1 {
                anyhow::bail!("--ip needs exactly one bridge network: invalid argument");
            }
            let n = &networks[0];
            let s = n.subnets().first().cloned().ok_or_else(|| anyhow::anyhow!("network {} has no subnet", n.name))?;
            if !s.subnet.contains(&ip)
                || ip == s.subnet.network()
                || Some(ip) == s.gateway
                || ip == s.subnet.broadcast()
            {
                anyhow::bail!(
                    "requested ip address {ip} is not in a usable range of subnet {} of network {}: invalid argument",
                    s.subnet,
                    n.name
                );
            }
            Some(ip)
        }
        None => None,
    };
    let (record, image_ref) = crate::commands::resolve(&engine.store, &req.image)?;
    let icfg = image_config(engine, &record);
    let entrypoint = match &req.entrypoint {
        Some(e) if e.trim_start().starts_with('[') => {
            serde_json::from_str::<Vec<String>>(e).with_context(|| format!("invalid --entrypoint {e:?}"))?
        }
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => strings(icfg.get("Entrypoint")),
    };
    let cmd = if !req.cmd.is_empty() {
        req.cmd.clone()
    } else if req.entrypoint.is_some() {
        vec![]
    } else {
        strings(icfg.get("Cmd"))
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        anyhow::bail!("no command or entrypoint provided, and no CMD or ENTRYPOINT from image");
    }
    let mut env: Vec<String> = strings(icfg.get("Env"));
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
    }
    let mut set_env = |kv: String| {
        let key = kv.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    set_env("container=podman".to_owned());
    let mut from_files = Vec::new();
    for f in &req.env_files {
        from_files.extend(read_env_file(f)?);
    }
    for e in from_files.iter().chain(&req.env) {
        if e.contains('=') {
            set_env(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            set_env(format!("{e}={v}"));
        }
    }
    let workdir = req
        .workdir
        .clone()
        .or_else(|| icfg.get("WorkingDir").and_then(Value::as_str).map(str::to_owned))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    if !workdir.starts_with('/') {
        anyhow::bail!("workdir {workdir:?} must be an absolute path");
    }

    let _lock = engine.lock()?;
    let name = match &req.name {
        Some(n) => {
            if !valid_name(n) {
                anyhow::bail!("names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*: invalid argument");
            }
            if let Ok(c) = engine.db.lookup(n) {
                if c.name == *n {
                    anyhow::bail!(
                        "creating container storage: the container name \"{n}\" is already in use by {}. You have to remove that container to be able to reuse that name: that name is already in use",
                        c.id
                    );
                }
            }
            n.clone()
        }
        None => random_name(engine)?,
    };
    let id = engine.store.create_container(&image_ref)?;
    let res = (|| -> anyhow::Result<()> {
        let mut ips = BTreeMap::new();
        for n in &networks {
            let leased = engine.db.leased(&n.name)?;
            let ip = match static_ip {
                Some(ip) if leased.contains(&ip) => {
                    anyhow::bail!(
                        "IPAM error: requested ip address {ip} is already allocated to another container on network {}",
                        n.name
                    )
                }
                Some(ip) => ip,
                None => network::next_free(n, &leased)?,
            };
            ips.insert(n.name.clone(), ip);
        }
        let cfg = ContainerConfig {
            image_id: record.id.clone(),
            image_name: image_ref.clone(),
            args,
            env,
            workdir,
            hostname: req
                .hostname
                .clone()
                .or_else(|| pod.as_ref().map(|p| p.config.hostname.clone()))
                .unwrap_or_else(|| id[..12].to_owned()),
            ports,
            net,
            aliases: req.aliases.clone(),
            ips: ips.clone(),
            rm: req.rm,
            stop_timeout: 10,
            volumes: volumes.clone(),
            tmpfs: req.tmpfs.clone(),
            dns: dns.clone(),
            mac: req.mac.clone(),
            pod: pod.as_ref().map(|p| p.id.clone()),
            interfaces: BTreeMap::new(),
            user: req.user.clone(),
            interactive: req.interactive,
            tty: req.tty,
            runtime: Some(engine.runtime.clone()),
        };
        engine.db.insert(&id, &name, crate::format::now(), &cfg)?;
        for (n, ip) in &ips {
            engine.db.lease(n, *ip, &id)?;
        }
        let dir = engine.run_dir(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        File::create(dir.join("ctr.log")).context("creating the log file")?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = engine.db.delete(&id);
        let _ = std::fs::remove_dir_all(engine.run_dir(&id));
        let _ = engine.store.delete_container(&id);
        return Err(e);
    }
    Ok(id)
}

/// The interface name of a container on one of its networks.
pub fn interface_name(c: &Container, net: &str) -> String {
    if let Some(i) = c.config.interfaces.get(net) {
        return i.clone();
    }
    let NetMode::Bridge(names) = &c.config.net else { return "eth0".to_owned() };
    format!("eth{}", names.iter().position(|n| n == net).unwrap_or(0))
}

fn network_options(engine: &Engine, c: &Container) -> anyhow::Result<Option<NetworkOptions>> {
    if c.config.pod.is_some() {
        return Ok(None);
    }
    let NetMode::Bridge(names) = &c.config.net else { return Ok(None) };
    if names.is_empty() {
        return Ok(None);
    }
    let mut aliases = c.config.aliases.clone();
    aliases.push(c.id[..12].to_owned());
    let sandbox =
        Sandbox { id: &c.id, name: &c.name, hostname: &c.config.hostname, ports: &c.config.ports, dns: &c.config.dns };
    sandbox_options(engine, &sandbox, names, |i, n| PerNetworkOptions {
        interface_name: interface_name(c, n),
        static_ips: c.config.ips.get(n).map(|ip| vec![*ip]),
        static_mac: if i == 0 { c.config.mac.clone() } else { None },
        aliases: Some(aliases.clone()),
        options: None,
    })
    .map(Some)
}

/// What netd is told about a network namespace's owner (a container or a pod).
pub(crate) struct Sandbox<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    pub ports: &'a [PortMapping],
    pub dns: &'a [std::net::IpAddr],
}

/// The NetworkOptions for `sandbox` on the bridge networks `names`; `per` gives the options
/// on network number `i` named `n`.
pub(crate) fn sandbox_options(
    engine: &Engine,
    sandbox: &Sandbox,
    names: &[String],
    per: impl Fn(usize, &str) -> PerNetworkOptions,
) -> anyhow::Result<NetworkOptions> {
    let mut networks = Vec::new();
    let mut info = std::collections::HashMap::new();
    for (i, n) in names.iter().enumerate() {
        info.insert(n.clone(), network::get(&engine.root, n)?);
        networks.push((n.clone(), per(i, n)));
    }
    Ok(NetworkOptions {
        container_id: sandbox.id.to_owned(),
        container_name: sandbox.name.to_owned(),
        container_hostname: Some(sandbox.hostname.to_owned()),
        networks,
        network_info: info,
        port_mappings: (!sandbox.ports.is_empty()).then(|| sandbox.ports.to_vec()),
        dns_servers: (!sandbox.dns.is_empty()).then(|| sandbox.dns.to_vec()),
    })
}

fn host_resolv() -> String {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            !(w.next() == Some("nameserver") && w.next().is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

pub(crate) fn write_files(
    engine: &Engine,
    c: &Container,
    status: &BTreeMap<String, StatusBlock>,
    mode: &NetMode,
) -> anyhow::Result<()> {
    let dir = engine.run_dir(&c.id);
    let mut hosts = String::from(
        "127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4\n::1         localhost localhost.localdomain localhost6 localhost6.localdomain6\n",
    );
    let mut search: Vec<String> = Vec::new();
    let mut servers: Vec<IpAddr> = Vec::new();
    let mut gateway = None;
    for s in status.values() {
        for i in s.interfaces.values() {
            for a in &i.subnets {
                hosts.push_str(&format!("{}\t{} {}\n", a.ipnet.addr(), c.config.hostname, c.name));
                gateway = gateway.or(a.gateway);
            }
        }
        for d in &s.dns_search_domains {
            if !search.contains(d) {
                search.push(d.clone());
            }
        }
        for ip in &s.dns_server_ips {
            if !servers.contains(ip) {
                servers.push(*ip);
            }
        }
    }
    if *mode == NetMode::Portfwd {
        // portfwd's fixed addresses: ours, the host's, and its DNS forwarder first.
        hosts.push_str(&format!("{}\t{} {}\n", super::portfwd::GUEST_IP, c.config.hostname, c.name));
        gateway = gateway.or(super::portfwd::GATEWAY_IP.parse().ok());
        if let Ok(dns) = super::portfwd::DNS_IP.parse() {
            servers.push(dns);
        }
        for l in host_resolv().lines() {
            let mut w = l.split_whitespace();
            if w.next() == Some("nameserver") {
                if let Some(ip) = w.next().and_then(|x| x.parse::<IpAddr>().ok()) {
                    if !servers.contains(&ip) {
                        servers.push(ip);
                    }
                }
            } else if w.clone().next().is_some() && l.starts_with("search") {
                search.extend(l.split_whitespace().skip(1).map(str::to_owned));
            }
        }
    }
    if let Some(g) = gateway {
        hosts.push_str(&format!("{g}\thost.containers.internal host.docker.internal\n"));
    }
    if c.config.net == NetMode::Host {
        hosts = std::fs::read_to_string("/etc/hosts").unwrap_or(hosts);
    }
    if !c.config.dns.is_empty() {
        servers.clone_from(&c.config.dns);
    }
    let resolv = if servers.is_empty() {
        host_resolv()
    } else {
        let mut r = String::new();
        if !search.is_empty() {
            r.push_str(&format!("search {}\n", search.join(" ")));
        }
        for s in &servers {
            r.push_str(&format!("nameserver {s}\n"));
        }
        r
    };
    std::fs::write(dir.join("hosts"), hosts).context("writing hosts")?;
    std::fs::write(dir.join("resolv.conf"), resolv).context("writing resolv.conf")?;
    std::fs::write(dir.join("hostname"), format!("{}\n", c.config.hostname)).context("writing hostname")?;
    Ok(())
}

/// Prepares a start: mounts the rootfs, creates the network namespace, runs `netd setup`,
/// writes `/etc` files and the bundle. Undoes what it did on error.
pub fn prepare(engine: &Engine, c: &Container) -> anyhow::Result<()> {
    let rootfs = engine.mount_rootfs(&c.id)?;
    let mut netns = Engine::netns_path(&c.id);
    let mut netns_made = false;
    let res = (|| -> anyhow::Result<()> {
        let opts = network_options(engine, c)?;
        let mut pod_status = None;
        let mut mode = c.config.net.clone();
        if let Some(pod) = &c.config.pod {
            let p = super::pod::up(engine, pod)?;
            netns = Engine::netns_path(&p.id);
            pod_status = Some(p.status);
            mode = p.config.net.clone();
        }
        let ns = match c.config.net {
            _ if pod_status.is_some() => Some(netns.as_path()),
            NetMode::Host => None,
            _ => {
                super::create_netns(&netns, opts.is_none())?;
                netns_made = true;
                Some(netns.as_path())
            }
        };
        if c.config.net == NetMode::Portfwd && pod_status.is_none() {
            start_portfwd(engine, &c.id, &netns, &c.config.ports, true)?;
        }
        let status = match (&opts, pod_status) {
            (_, Some(s)) => s,
            (Some(o), None) => engine.netd_setup(&netns, o)?,
            (None, None) => BTreeMap::new(),
        };
        let res = (|| -> anyhow::Result<()> {
            engine.db.set_status(&c.id, &status)?;
            write_files(engine, c, &status, &mode)?;
            let dir = engine.run_dir(&c.id);
            let mut spec = super::spec::build(&c.config, &rootfs, ns, &dir)?;
            if c.config.tty {
                // Our terminal's size, set on the container's before its process starts.
                let from = if c.config.interactive { 0 } else { 1 };
                if let (Some((rows, cols)), Some(p)) = (super::tty::winsize(from), spec.process_mut()) {
                    if rows > 0 && cols > 0 {
                        p.set_console_size(Some(
                            oci_spec::runtime::BoxBuilder::default()
                                .height(u64::from(rows))
                                .width(u64::from(cols))
                                .build()?,
                        ));
                    }
                }
            }
            let json = serde_json::to_vec_pretty(&spec)?;
            std::fs::write(dir.join("config.json"), json).context("writing config.json")?;
            Ok(())
        })();
        if res.is_err() {
            if let Some(o) = &opts {
                let _ = engine.netd("teardown", &netns, o);
            }
            stop_portfwd(&c.id);
        }
        res
    })();
    if res.is_err() {
        if netns_made {
            super::remove_netns(&netns);
        }
        // The rootless netns, when this setup made it and nothing else uses it.
        if crate::rootless::is_rootless()
            && c.config.pod.is_none()
            && matches!(&c.config.net, NetMode::Bridge(n) if !n.is_empty())
        {
            super::rootless_net::teardown_if_unused(engine, &c.id);
        }
        let _ = engine.store.unmount(&c.id);
    }
    res
}

/// `netd setup|teardown` options for one network of a container (no ports).
fn one_network_options(engine: &Engine, c: &Container, net: &str) -> anyhow::Result<NetworkOptions> {
    let mut o =
        network_options(engine, c)?.ok_or_else(|| anyhow::anyhow!("container {} has no bridge network", c.id))?;
    o.networks.retain(|(n, _)| n == net);
    o.network_info.retain(|n, _| n == net);
    o.port_mappings = None;
    Ok(o)
}

/// `network connect`: adds a network to a container (set up now when it runs), with the
/// next free interface name and address.
pub fn connect(engine: &Engine, net: &str, name: &str, aliases: &[String]) -> anyhow::Result<()> {
    let n = network::get(&engine.root, net)?;
    let _lock = engine.lock()?;
    let mut c = engine.db.lookup(name)?;
    if c.config.pod.is_some() {
        anyhow::bail!(
            "container {} shares the network of its pod: network cannot be configured when it is shared with a pod",
            c.id
        );
    }
    let NetMode::Bridge(names) = c.config.net.clone() else {
        anyhow::bail!(
            "container {} is not connected to bridge networks (network mode none or host): invalid argument",
            c.id
        );
    };
    if names.contains(&n.name) {
        anyhow::bail!("container {} is already connected to network {}: network is already connected", c.id, n.name);
    }
    let used: Vec<String> = names.iter().map(|x| interface_name(&c, x)).collect();
    let iface = (0..).map(|i| format!("eth{i}")).find(|i| !used.contains(i)).unwrap_or_default();
    let ip = network::next_free(&n, &engine.db.leased(&n.name)?)?;
    for x in &names {
        let i = interface_name(&c, x);
        c.config.interfaces.insert(x.clone(), i);
    }
    c.config.interfaces.insert(n.name.clone(), iface);
    c.config.ips.insert(n.name.clone(), ip);
    let mut all = names;
    all.push(n.name.clone());
    c.config.net = NetMode::Bridge(all);
    for a in aliases {
        if !c.config.aliases.contains(a) {
            c.config.aliases.push(a.clone());
        }
    }
    if c.state == State::Running {
        let netns = Engine::netns_path(&c.id);
        let o = one_network_options(engine, &c, &n.name)?;
        let st = engine.netd_setup(&netns, &o)?;
        c.status.extend(st);
        let saved = (|| -> anyhow::Result<()> {
            engine.db.set_status(&c.id, &c.status)?;
            write_files(engine, &c, &c.status, &c.config.net)
        })();
        if let Err(e) = saved {
            let _ = engine.netd("teardown", &netns, &o);
            return Err(e);
        }
    }
    engine.db.lease(&n.name, ip, &c.id)?;
    engine.db.set_config(&c.id, &c.config)?;
    Ok(())
}

/// `network disconnect`: removes a network from a container (torn down now when it runs).
pub fn disconnect(engine: &Engine, net: &str, name: &str) -> anyhow::Result<()> {
    let n = network::get(&engine.root, net)?;
    let _lock = engine.lock()?;
    let mut c = engine.db.lookup(name)?;
    let names = match &c.config.net {
        NetMode::Bridge(v) if c.config.pod.is_none() && v.contains(&n.name) => v.clone(),
        _ => anyhow::bail!("container {} is not connected to network {}: network is not connected", c.id, n.name),
    };
    if c.state == State::Running {
        if !c.config.ports.is_empty() {
            anyhow::bail!(
                "container {} publishes ports: disconnecting a running container with published ports is not supported",
                c.id
            );
        }
        let o = one_network_options(engine, &c, &n.name)?;
        engine.netd("teardown", &Engine::netns_path(&c.id), &o)?;
        c.status.remove(&n.name);
        engine.db.set_status(&c.id, &c.status)?;
        write_files(engine, &c, &c.status, &c.config.net)?;
    }
    for x in &names {
        let i = interface_name(&c, x);
        c.config.interfaces.insert(x.clone(), i);
    }
    c.config.interfaces.remove(&n.name);
    c.config.ips.remove(&n.name);
    c.config.net = NetMode::Bridge(names.into_iter().filter(|x| *x != n.name).collect());
    engine.db.release(&n.name, &c.id)?;
    engine.db.set_config(&c.id, &c.config)?;
    Ok(())
}

/// Undoes `prepare` after the container stopped: the runtime's state, `netd teardown`, the
/// network namespace and the rootfs mount. Safe to call more than once.
pub fn cleanup(engine: &Engine, c: &Container) {
    if c.config.net == NetMode::Portfwd {
        // First: its exit (the kernel removing its TAP device) overlaps with the rest.
        stop_portfwd(&c.id);
    }
    let gone = RUNTIME_STATE_GONE.lock().map(|mut g| g.take_if(|id| *id == c.id).is_some()).unwrap_or(false);
    if !gone {
        let _ = engine
            .runtime_cmd_for(c)
            .args(["delete", "--force", &c.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let netns = Engine::netns_path(&c.id);
    if netns.exists() {
        match network_options(engine, c) {
            Ok(Some(o)) => {
                if let Err(e) = engine.netd("teardown", &netns, &o) {
                    tracing::warn!(container = %c.id, error = %format!("{e:#}"), "network teardown failed");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(container = %c.id, error = %format!("{e:#}"), "network teardown failed"),
        }
        super::remove_netns(&netns);
    }
    if crate::rootless::is_rootless() && c.config.pod.is_none() && matches!(c.config.net, NetMode::Bridge(_)) {
        super::rootless_net::teardown_if_unused(engine, &c.id);
    }
    if let Err(e) = engine.store.unmount(&c.id) {
        tracing::warn!(container = %c.id, error = %e, "unmount failed");
    }
}

/// Removes a stopped container entirely (idempotent).
pub fn remove_stopped(engine: &Engine, c: &Container) -> anyhow::Result<()> {
    cleanup(engine, c);
    let _lock = engine.lock()?;
    match engine.store.delete_container(&c.id) {
        Ok(()) | Err(rpod_storage::Error::ContainerNotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    engine.db.delete(&c.id)?;
    let _ = std::fs::remove_dir_all(engine.run_dir(&c.id));
    Ok(())
}

/// Where the container's stdout and stderr go.
#[derive(Debug)]
pub enum Output {
    /// The log file.
    Log,
    /// This process's stdio.
    Inherit,
}

/// The message of the runtime's last error (from its JSON log), if any.
fn runtime_error(dir: &Path) -> Option<String> {
    runtime_error_in(&dir.join("runc.log"))
}

fn runtime_error_in(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("level").and_then(Value::as_str) == Some("error"))
        .filter_map(|v| v.get("msg").and_then(Value::as_str).map(str::to_owned))
        .next_back()
}

/// The exit code for a runtime failure, as podman maps them.
pub fn runtime_error_code(msg: &str) -> i32 {
    let msg = msg.to_lowercase();
    if msg.contains("executable file not found")
        || msg.contains("no such file or directory")
        || (msg.contains("executable file") && msg.contains("not found"))
    {
        EXIT_NOT_FOUND
    } else if msg.contains("permission denied") {
        EXIT_CANNOT_INVOKE
    } else {
        EXIT_ERROR
    }
}

/// Creates and starts the container with the runtime; returns its PID (and the terminal's
/// master with `-t`). On error the runtime's state is removed and the error carries
/// podman's exit code.
pub fn launch(engine: &Engine, c: &Container, out: &Output) -> anyhow::Result<Launched> {
    let dir = engine.run_dir(&c.id);
    let _ = std::fs::remove_file(dir.join("runc.log"));
    let _ = std::fs::remove_file(dir.join("pidfile"));
    let _ = std::fs::remove_file(dir.join("exit"));
    let mut cmd = engine.runtime_cmd_for(c);
    cmd.arg("--log").arg(dir.join("runc.log")).args(["--log-format", "json", "create", "--bundle"]);
    cmd.arg(&dir).arg("--pid-file").arg(dir.join("pidfile"));
    let console = if c.config.tty { Some(super::tty::ConsoleSocket::new()?) } else { None };
    if let Some(cs) = &console {
        cmd.arg("--console-socket").arg(&cs.path);
    }
    // Options before the ID: crun takes none after it.
    cmd.arg(&c.id);
    let interactive = matches!(out, Output::Inherit) && c.config.interactive && console.is_none();
    // Detached with -i: the container reads a pipe the monitor keeps open for `rpod attach`.
    let mut input = None;
    if matches!(out, Output::Log) && c.config.interactive && console.is_none() {
        let (r, w) = nix::unistd::pipe().context("creating the stdin pipe")?;
        cmd.stdin(Stdio::from(r));
        input = Some(w);
    } else {
        cmd.stdin(if interactive { Stdio::inherit() } else { Stdio::null() });
    }
    match out {
        Output::Log => {
            let log =
                OpenOptions::new().create(true).append(true).open(dir.join("ctr.log")).context("opening the log")?;
            cmd.stdout(log.try_clone()?).stderr(log);
        }
        Output::Inherit => {
            cmd.stderr(Stdio::inherit()).stdout(Stdio::inherit());
        }
    }
    let st = cmd.status().with_context(|| format!("running {}", engine.runtime_of(c)))?;
    // Our copy of the read end goes with the command.
    drop(cmd);
    if !st.success() {
        let _ = engine.runtime_cmd_for(c).args(["delete", "--force", &c.id]).stderr(Stdio::null()).status();
        let msg = runtime_error(&dir).unwrap_or_else(|| format!("{} create failed ({st})", engine.runtime_of(c)));
        return Err(exit_with(runtime_error_code(&msg), msg));
    }
    let master = match console.as_ref().map(super::tty::ConsoleSocket::receive).transpose() {
        Ok(m) => m,
        Err(e) => {
            let _ = engine.runtime_cmd_for(c).args(["delete", "--force", &c.id]).stderr(Stdio::null()).status();
            return Err(e);
        }
    };
    drop(console);
    let pid: i64 = std::fs::read_to_string(dir.join("pidfile"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the runtime wrote no pid file"))?;
    let st = engine
        .runtime_cmd_for(c)
        .arg("--log")
        .arg(dir.join("runc.log"))
        .args(["--log-format", "json", "start", &c.id])
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        let _ = engine.runtime_cmd_for(c).args(["delete", "--force", &c.id]).stderr(Stdio::null()).status();
        let msg = runtime_error(&dir).unwrap_or_else(|| format!("{} start failed ({st})", engine.runtime_of(c)));
        return Err(exit_with(runtime_error_code(&msg), msg));
    }
    Ok(Launched { pid, master, input })
}

/// A container the runtime started.
#[derive(Debug)]
pub struct Launched {
    /// Its PID.
    pub pid: i64,
    /// The terminal's master (`-t`).
    pub master: Option<OwnedFd>,
    /// The write end of its stdin (detached `-i` without `-t`).
    pub input: Option<OwnedFd>,
}

/// Serves `rpod attach` for a detached `-i` container: every connection's bytes go to the
/// container's input (its stdin pipe, or its terminal). The socket goes with the returned
/// guard.
fn serve_attach(id: &str, input: OwnedFd) -> anyhow::Result<AttachServer> {
    use std::os::unix::net::UnixListener;
    let path = Engine::attach_socket(id);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let input = std::sync::Arc::new(File::from(input));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let input = input.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match std::io::Read::read(&mut conn, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if (&*input).write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(AttachServer { path })
}

/// Removes the attach socket on drop.
#[derive(Debug)]
struct AttachServer {
    path: std::path::PathBuf,
}

impl Drop for AttachServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The last SIGINT/SIGTERM/SIGHUP received while a foreground container runs (0: none).
static PENDING_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The container process [`wait_pid`] waits for (0: none yet). The handler forwards to it
/// directly: a signal may be delivered to any thread of this process (a relay thread, say),
/// in which case the main thread's `waitpid` is not interrupted.
static TARGET_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn note_signal(sig: libc::c_int) {
    let target = TARGET_PID.load(std::sync::atomic::Ordering::SeqCst);
    if target > 0 {
        // SAFETY: kill(2) is async-signal-safe and takes plain integers.
        unsafe {
            libc::kill(target, sig);
        }
    } else {
        PENDING_SIGNAL.store(sig, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP interrupt [`wait_pid`], which forwards them to the
/// container (as podman's `--sig-proxy` does).
pub fn proxy_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(note_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            tracing::warn!(signal = %sig, error = %e, "cannot proxy signal");
        }
    }
}

/// Waits for `pid` (this process must be its parent or subreaper), reaping every other
/// child on the way and forwarding signals noted by [`proxy_signals`]; returns the exit
/// code (128 + signal when killed).
pub fn wait_pid(pid: i64) -> i32 {
    if let Ok(p) = i32::try_from(pid) {
        TARGET_PID.store(p, std::sync::atomic::Ordering::SeqCst);
        // A signal that came before the target was known.
        let sig = PENDING_SIGNAL.swap(0, std::sync::atomic::Ordering::SeqCst);
        if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), s);
        }
    }
    let code = wait_pid_inner(pid);
    TARGET_PID.store(0, std::sync::atomic::Ordering::SeqCst);
    code
}

fn wait_pid_inner(pid: i64) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if i64::from(p.as_raw()) == pid => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if i64::from(p.as_raw()) == pid => return 128 + sig as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                let sig = PENDING_SIGNAL.swap(0, std::sync::atomic::Ordering::SeqCst);
                if let (Ok(s), Ok(p)) = (nix::sys::signal::Signal::try_from(sig), i32::try_from(pid)) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), s);
                }
            }
            Err(_) => return EXIT_ERROR,
        }
    }
}

/// Runs a prepared container to its end: launch, record the start (calling `started` with
/// the PID), wait, record the exit, clean up (and remove it if `--rm`). Returns the exit code.
pub fn supervise(
    engine: &Engine,
    c: &Container,
    out: Output,
    started: impl FnOnce(anyhow::Result<i64>),
) -> anyhow::Result<i32> {
    nix::sys::prctl::set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    let _registered = MonitorRecord::new(&c.id);
    if matches!(out, Output::Inherit) && !c.config.tty {
        return run_foreground(engine, c, started);
    }
    let Launched { pid, master, input } = match launch(engine, c, &out) {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("{e:#}");
            let code = e.downcast_ref::<crate::Exit>().map(|x| x.code).unwrap_or(EXIT_ERROR);
            cleanup(engine, c);
            started(Err(exit_with(code, msg.clone())));
            return Err(exit_with(code, msg));
        }
    };
    engine.db.set_running(
        &c.id,
        super::with_start(pid),
        super::with_start(i64::from(std::process::id())),
        crate::format::now(),
    )?;
    // Detached with -i: input from `rpod attach` (to the pipe, or to the terminal).
    let attach_input = match (&out, c.config.interactive) {
        (Output::Log, true) => input.or_else(|| master.as_ref().and_then(|m| m.try_clone().ok())),
        _ => None,
    };
    let _attach = attach_input.and_then(|i| {
        serve_attach(&c.id, i)
            .map_err(|e| tracing::warn!(container = %c.id, error = %format!("{e:#}"), "no attach socket"))
            .ok()
    });
    let mut raw = None;
    let mut winch = None;
    let relay = master.and_then(|m| {
        let r = (|| -> anyhow::Result<super::tty::Relay> {
            let sink: Box<dyn Write + Send> = match out {
                Output::Inherit => {
                    if c.config.interactive {
                        winch = super::tty::WinchForward::start(0, &m);
                        raw = super::tty::RawMode::enter(0);
                    } else {
                        winch = super::tty::WinchForward::start(1, &m);
                    }
                    Box::new(std::io::stdout())
                }
                Output::Log => Box::new(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(engine.run_dir(&c.id).join("ctr.log"))
                        .context("opening the log")?,
                ),
            };
            let forward_stdin = matches!(out, Output::Inherit) && c.config.interactive;
            super::tty::Relay::start(m, sink, forward_stdin)
        })();
        // The container runs: without a relay it still runs to its end, unseen.
        r.map_err(|e| tracing::warn!(container = %c.id, error = %format!("{e:#}"), "no terminal relay")).ok()
    });
    started(Ok(pid));
    let code = wait_pid(pid);
    drop(winch);
    if let Some(r) = relay {
        r.finish();
    }
    drop(raw);
    let _ = std::fs::write(engine.run_dir(&c.id).join("exit"), format!("{code}\n"));
    finish_exit(engine, &c.id, i64::from(code), crate::format::now());
    Ok(code)
}

/// Rootless: this supervisor's pid file in `<run dir>/monitors/` while the container runs
/// (the namespaces can be recovered from it if the pause process dies); removed on drop.
struct MonitorRecord {
    path: Option<std::path::PathBuf>,
}

impl MonitorRecord {
    fn new(id: &str) -> MonitorRecord {
        let Some(r) = crate::rootless::mode() else { return MonitorRecord { path: None } };
        let dir = crate::rootless::monitors_dir(&r.run_dir);
        let path = dir.join(id);
        let ok = std::fs::create_dir_all(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| crate::rootless::write_pid_file(&path, std::process::id() as i32));
        if let Err(e) = ok {
            tracing::warn!(error = %format!("{e:#}"), "recording the monitor");
        }
        MonitorRecord { path: Some(path) }
    }
}

impl Drop for MonitorRecord {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The container whose runtime state is already gone (its `runtime run` ended normally), so
/// [`cleanup`] needs no `runtime delete`.
static RUNTIME_STATE_GONE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// A foreground run without a terminal: one `runtime run` (create, start, wait and delete
/// in one process, instead of three runtime processes), with our stdio. The runtime proxies
/// signals to the container and returns its exit code.
fn run_foreground(engine: &Engine, c: &Container, started: impl FnOnce(anyhow::Result<i64>)) -> anyhow::Result<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let dir = engine.run_dir(&c.id);
    let log = dir.join("runc.log");
    let pidfile = dir.join("pidfile");
    for f in [&log, &pidfile, &dir.join("exit")] {
        let _ = std::fs::remove_file(f);
    }
    let mut cmd = engine.runtime_cmd_for(c);
    cmd.arg("--log").arg(&log).args(["--log-format", "json", "run", "--bundle"]).arg(&dir);
    cmd.arg("--pid-file").arg(&pidfile);
    // Options before the ID: crun takes none after it.
    cmd.arg(&c.id);
    cmd.stdin(if c.config.interactive { Stdio::inherit() } else { Stdio::null() });
    let child = match cmd.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            cleanup(engine, c);
            let msg = format!("running {}: {e}", engine.runtime_of(c));
            started(Err(anyhow::anyhow!("{msg}")));
            return Err(anyhow::anyhow!("{msg}"));
        }
    };
    let runtime_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // The container's PID appears in the pid file once it is created; until then the
    // runtime may also fail or the container end.
    let mut status = None;
    let mut pid = 0i64;
    loop {
        match waitpid(runtime_pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, code)) => status = Some((code, false)),
            Ok(WaitStatus::Signaled(_, sig, _)) => status = Some((128 + sig as i32, true)),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => status = Some((EXIT_ERROR, true)),
        }
        if let Some(p) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i64>().ok()) {
            pid = p;
            break;
        }
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    if pid > 0 {
        engine.db.set_running(
            &c.id,
            super::with_start(pid),
            super::with_start(i64::from(std::process::id())),
            crate::format::now(),
        )?;
    }
    started(Ok(pid));
    let (code, abnormal) = match status {
        Some(s) => s,
        None => {
            let code = wait_pid(i64::from(runtime_pid.as_raw()));
            (code, false)
        }
    };
    let failure = if code != 0 { runtime_error(&dir) } else { None };
    if !abnormal && failure.is_none() {
        if let Ok(mut g) = RUNTIME_STATE_GONE.lock() {
            *g = Some(c.id.clone());
        }
    }
    if let Some(msg) = failure {
        // The runtime failed (the command could not be run, say): podman's code, no exit record.
        let code = runtime_error_code(&msg);
        let _ = std::fs::write(dir.join("exit"), format!("{code}\n"));
        finish_exit(engine, &c.id, i64::from(code), crate::format::now());
        return Err(exit_with(code, msg));
    }
    let _ = std::fs::write(dir.join("exit"), format!("{code}\n"));
    finish_exit(engine, &c.id, i64::from(code), crate::format::now());
    Ok(code)
}

/// After an exit: clean up (or remove the container when it was created with `--rm`), then
/// record the exit, so whoever waits for the state sees a container that can start again.
pub fn finish_exit(engine: &Engine, id: &str, code: i64, finished: i64) {
    let Ok(Some(c)) = engine.db.get(id) else { return };
    if c.config.rm {
        if let Err(e) = remove_stopped(engine, &c) {
            tracing::warn!(container = %id, error = %format!("{e:#}"), "removing the container failed");
        }
    } else {
        cleanup(engine, &c);
    }
    if let Ok(Some(_)) = engine.db.get(id) {
        if let Err(e) = engine.db.set_exited(id, code, finished) {
            tracing::warn!(container = %id, error = %format!("{e:#}"), "recording the exit failed");
        }
    }
}

/// Starts a created or exited container under a detached monitor (`rpod __monitor`);
/// returns once the process runs (or failed to start).
pub fn start_detached(engine: &Engine, c: &Container, cli_root: &Path) -> anyhow::Result<()> {
    prepare(engine, c)?;
    let exe = std::env::current_exe().context("finding the rpod executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root").arg(cli_root).arg("--runtime").arg(&engine.runtime).arg("__monitor").arg(&c.id);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    // The monitor holds what must live as long as the container (portfwd's exit pipe): the
    // descriptors keep their numbers, named by --keep-fds.
    let held: Vec<OwnedFd> = HELD_FDS.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    let mut high = Vec::new();
    for fd in &held {
        let n = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)).context("dup")?;
        // SAFETY: fcntl returned a new descriptor that nothing else owns.
        high.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) });
    }
    drop(held);
    if !high.is_empty() {
        let raw: Vec<i32> = high.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        let list: Vec<String> = raw.iter().map(i32::to_string).collect();
        cmd.arg("--keep-fds").arg(list.join(","));
        // SAFETY: only fcntl (async-signal-safe) between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                for fd in &raw {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let spawned = cmd.spawn();
    drop(cmd);
    drop(high);
    let mut child = match spawned {
        Ok(ch) => ch,
        Err(e) => {
            cleanup(engine, c);
            return Err(e).context("starting the monitor");
        }
    };
    let mut line = String::new();
    if let Some(o) = child.stdout.take() {
        let _ = BufReader::new(o).read_line(&mut line);
    }
    let line = line.trim_end();
    if line.starts_with("ok") {
        return Ok(());
    }
    // The monitor failed: it cleaned up; reap it.
    let _ = child.wait();
    match line.strip_prefix("err ").and_then(|r| r.split_once(' ')) {
        Some((code, msg)) => Err(exit_with(code.parse().unwrap_or(EXIT_ERROR), msg.to_owned())),
        None => {
            cleanup(engine, c);
            Err(anyhow::anyhow!("the container monitor exited before the container started"))
        }
    }
}

/// The monitor's body: detached from the caller's session, it launches the container with
/// its output to the log file, reports on stdout, and waits.
pub fn monitor(engine: &Engine, id: &str, keep_fds: &[i32]) -> anyhow::Result<()> {
    let _ = nix::unistd::setsid();
    // Descriptors the caller handed over: held (not inherited by anything we start) until
    // we exit.
    let mut kept = Vec::new();
    for &fd in keep_fds.iter().filter(|fd| **fd > 2) {
        // SAFETY: the caller placed these descriptors for us; nothing else in this process owns them.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        kept.push(owned);
    }
    let _kept = kept;
    let c = engine.db.get(id)?.ok_or_else(|| anyhow::anyhow!("no container {id}"))?;
    let report = |r: anyhow::Result<i64>| {
        let mut o = std::io::stdout().lock();
        let _ = match r {
            Ok(pid) => writeln!(o, "ok {pid}"),
            Err(e) => {
                let code = e.downcast_ref::<crate::Exit>().map(|x| x.code).unwrap_or(EXIT_ERROR);
                writeln!(o, "err {code} {}", format!("{e:#}").replace('\n', " "))
            }
        };
        let _ = o.flush();
        // Nothing more goes to the caller: point stdout at /dev/null.
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stdout(null);
        }
    };
    match supervise(engine, &c, Output::Log, report) {
        Ok(_) => Ok(()),
        Err(_) => Ok(()),
    }
}

/// Stops a running container: SIGTERM, then SIGKILL after `timeout` seconds; waits for the
/// monitor to record the exit.
pub fn stop(engine: &Engine, c: &Container, timeout: u64) -> anyhow::Result<()> {
    if c.state != State::Running {
        return Ok(());
    }
    let kill = |sig: &str| {
        let _ = engine.runtime_cmd_for(c).args(["kill", &c.id, sig]).stderr(Stdio::null()).status();
    };
    let exited = |d: Duration| -> anyhow::Result<bool> {
        let end = Instant::now() + d;
        loop {
            match engine.db.get(&c.id)? {
                None => return Ok(true),
                Some(x) if x.state != State::Running => return Ok(true),
                Some(x) if gone_unrecorded(engine, &x)? => {
                    // Nobody will record it: the monitor is gone.
                    finish_exit(engine, &c.id, 137, crate::format::now());
                    return Ok(true);
                }
                Some(_) => {}
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    if timeout > 0 {
        kill("TERM");
        if exited(Duration::from_secs(timeout))? {
            return Ok(());
        }
    }
    kill("KILL");
    if !exited(Duration::from_secs(10))? {
        anyhow::bail!("container {} did not exit after SIGKILL", c.id);
    }
    Ok(())
}

/// Parses a signal name (`KILL`, `SIGKILL`) or number into the runtime's spelling.
pub fn parse_signal(s: &str) -> anyhow::Result<String> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n.to_string());
        }
    } else {
        let up = s.to_ascii_uppercase();
        let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
        if name.parse::<nix::sys::signal::Signal>().is_ok() {
            return Ok(name);
        }
    }
    anyhow::bail!("invalid signal: {s}")
}

/// Sends a signal to a running container's process.
pub fn kill(engine: &Engine, c: &Container, sig: &str) -> anyhow::Result<()> {
    if c.state != State::Running {
        anyhow::bail!(
            "can only kill running containers. {} is in state {}: container state improper",
            c.id,
            c.state.as_str()
        );
    }
    let out = engine.runtime_cmd_for(c).args(["kill", &c.id, sig]).stdout(Stdio::null()).output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!("sending signal {sig} to container {}: {}", c.id, err.trim());
    }
    Ok(())
}

/// What `exec` asks for.
#[derive(Debug, Default, Clone)]
pub struct ExecRequest {
    /// Keep stdin open.
    pub interactive: bool,
    /// `-t`: a terminal (through the runtime's console socket).
    pub tty: bool,
    /// `-e`.
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// The command.
    pub command: Vec<String>,
}

/// Runs a command in a running container (`runtime exec`); returns its exit code.
pub fn exec(engine: &Engine, c: &Container, req: &ExecRequest) -> anyhow::Result<i32> {
    if c.state != State::Running {
        anyhow::bail!("can only create exec sessions on running containers: container state improper");
    }
    let log = engine.run_dir(&c.id).join(format!("exec-{}.log", &super::random_id()[..12]));
    let mut cmd = engine.runtime_cmd_for(c);
    cmd.arg("--log").arg(&log).args(["--log-format", "json", "exec"]);
    for e in &req.env {
        if e.contains('=') {
            cmd.arg("--env").arg(e);
        } else if let Ok(v) = std::env::var(e) {
            cmd.arg("--env").arg(format!("{e}={v}"));
        }
    }
    if let Some(w) = &req.workdir {
        cmd.arg("--cwd").arg(w);
    }
    if let Some(u) = &req.user {
        cmd.arg("--user").arg(u);
    }
    if req.tty {
        return exec_tty(engine, c, req, engine.runtime_cmd_for(c), &log);
    }
    cmd.arg(&c.id).args(&req.command);
    cmd.stdin(if req.interactive { Stdio::inherit() } else { Stdio::null() });
    let st = cmd.status().with_context(|| format!("running {}", engine.runtime_of(c)));
    let err = runtime_error_in(&log);
    let _ = std::fs::remove_file(&log);
    let st = st?;
    if let Some(msg) = err {
        return Err(exit_with(runtime_error_code(&msg), msg));
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(st.code().or_else(|| st.signal().map(|s| 128 + s)).unwrap_or(EXIT_ERROR))
}

/// The OCI process of an `exec -t`: the container's own (capabilities, rlimits, env) with
/// the command, extra env, working directory, user and a terminal of `size` (rows, cols).
fn exec_process(engine: &Engine, c: &Container, req: &ExecRequest, size: Option<(u16, u16)>) -> anyhow::Result<Value> {
    let bundle = engine.run_dir(&c.id).join("config.json");
    let spec: Value =
        serde_json::from_slice(&std::fs::read(&bundle).with_context(|| format!("reading {}", bundle.display()))?)
            .with_context(|| format!("parsing {}", bundle.display()))?;
    let mut p = spec.get("process").cloned().unwrap_or_else(|| serde_json::json!({}));
    p["args"] = serde_json::json!(req.command);
    p["terminal"] = Value::Bool(true);
    match size {
        Some((rows, cols)) if rows > 0 && cols > 0 => {
            p["consoleSize"] = serde_json::json!({"height": rows, "width": cols})
        }
        _ => {
            if let Some(o) = p.as_object_mut() {
                o.remove("consoleSize");
            }
        }
    }
    let mut env: Vec<String> = p["env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    for e in &req.env {
        let kv = if e.contains('=') {
            e.clone()
        } else if let Ok(v) = std::env::var(e) {
            format!("{e}={v}")
        } else {
            continue;
        };
        let key = kv.split('=').next().unwrap_or_default().to_owned();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    p["env"] = serde_json::json!(env);
    if let Some(w) = &req.workdir {
        p["cwd"] = Value::String(w.clone());
    }
    if let Some(u) = &req.user {
        let rootfs = engine.store.container_rootfs(&c.id)?;
        let (uid, gid, extra) = super::spec::resolve_user(&rootfs, u)?;
        p["user"] = serde_json::json!({"uid": uid, "gid": gid, "additionalGids": extra});
    }
    Ok(p)
}

/// `exec -t`: the runtime starts the command detached on a new terminal whose master it
/// sends over a console socket; we (its subreaper) relay the terminal and wait for it.
fn exec_tty(engine: &Engine, c: &Container, req: &ExecRequest, mut cmd: Command, log: &Path) -> anyhow::Result<i32> {
    nix::sys::prctl::set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    let console = super::tty::ConsoleSocket::new()?;
    let pidfile = log.with_extension("pid");
    // The whole process as a file, so the terminal gets our window size before the
    // command starts (`consoleSize`; the runtime sizes the pty it makes).
    let from = if req.interactive { 0 } else { 1 };
    let process = exec_process(engine, c, req, super::tty::winsize(from))?;
    let process_file = log.with_extension("process.json");
    std::fs::write(&process_file, serde_json::to_vec(&process)?).context("writing the exec process")?;
    cmd.arg("--log").arg(log).args(["--log-format", "json", "exec", "--detach"]);
    cmd.arg("--process").arg(&process_file);
    cmd.arg("--console-socket").arg(&console.path).arg("--pid-file").arg(&pidfile);
    // Options before the ID: crun takes none after it.
    cmd.arg(&c.id);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let st = cmd.status().with_context(|| format!("running {}", engine.runtime_of(c)));
    let err = runtime_error_in(log);
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(&process_file);
    let pid: Option<i64> = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok());
    let _ = std::fs::remove_file(&pidfile);
    let st = st?;
    if !st.success() {
        let msg = err.unwrap_or_else(|| format!("{} exec failed ({st})", engine.runtime_of(c)));
        return Err(exit_with(runtime_error_code(&msg), msg));
    }
    let pid = pid.ok_or_else(|| anyhow::anyhow!("the runtime wrote no pid file"))?;
    let master = match console.receive() {
        Ok(m) => m,
        Err(e) => {
            if let Ok(p) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = wait_pid(pid);
            return Err(e);
        }
    };
    drop(console);
    proxy_signals();
    let winch = super::tty::WinchForward::start(from, &master);
    let raw = if req.interactive { super::tty::RawMode::enter(0) } else { None };
    let relay = super::tty::Relay::start(master, Box::new(std::io::stdout()), req.interactive);
    let code = wait_pid(pid);
    drop(winch);
    if let Ok(r) = relay {
        r.finish();
    }
    drop(raw);
    Ok(code)
}

/// Whether `c` (a row read earlier) is running by the database but its process and monitor
/// are gone without recording the exit. The monitor records the exit before it ends, so the
/// row is read again after the liveness checks: a monitor that recorded the exit and left
/// between the first read and those checks is not mistaken for one that died (which would
/// overwrite the real exit code with 137).
fn gone_unrecorded(engine: &Engine, c: &Container) -> anyhow::Result<bool> {
    if c.state != State::Running
        || super::alive_as(c.pid, c.pid_start)
        || super::alive_as(c.monitor_pid, c.monitor_start)
    {
        return Ok(false);
    }
    Ok(engine.db.get(&c.id)?.is_some_and(|now| {
        now.state == State::Running
            && (now.pid, now.pid_start, now.monitor_pid, now.monitor_start)
                == (c.pid, c.pid_start, c.monitor_pid, c.monitor_start)
    }))
}

/// Marks containers whose process and monitor are gone as exited (after a kill -9 or a
/// reboot) and cleans up after them.
pub fn reconcile(engine: &Engine) -> anyhow::Result<()> {
    for c in engine.db.containers()? {
        if gone_unrecorded(engine, &c)? {
            tracing::info!(container = %c.id, "container is gone: marking it exited");
            finish_exit(engine, &c.id, 137, crate::format::now());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p = parse_port("8080:80").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p[0].host_port, p[0].container_port, p[0].range, p[0].protocol.as_str()), (8080, 80, 1, "tcp"));
        let p = parse_port("127.0.0.1:8080-8081:80-81/udp").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p[0].host_ip.as_str(), p[0].range, p[0].protocol.as_str()), ("127.0.0.1", 2, "udp"));
        assert_eq!(parse_port("1:2/tcp,udp").unwrap_or_else(|e| panic!("{e}")).len(), 2);
        for bad in ["80", "x:80", "1:2/icmp", "1.2.3:1:2", "1-3:1-2", "0:1"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(runtime_error_code("exec: \"nope\": executable file not found in $PATH"), 127);
        assert_eq!(runtime_error_code("exec /x: permission denied"), 126);
        assert_eq!(runtime_error_code("executable file `/x` not found in $PATH: No such file or directory"), 127);
        assert_eq!(runtime_error_code("open executable: Permission denied"), 126);
        assert_eq!(runtime_error_code("something else"), 125);
    }
}
