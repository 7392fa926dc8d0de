//! Pods: a pod owns a network namespace (`<run dir>/netns/<pod id>`), set up through netd
//! (or portfwd)
//! with the pod's networks and published ports when the pod starts; its containers join
//! it (so they share localhost and the ports) instead of getting their own.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use rpod_wire::{NetworkOptions, PerNetworkOptions};

use super::db::{Container, NetMode, Pod, PodConfig, State};
use super::{lifecycle, network, Engine};

/// What `pod create` asks for.
#[derive(Debug, Default, Clone)]
pub struct PodRequest {
    /// `--name`.
    pub name: Option<String>,
    /// `-p`.
    pub ports: Vec<String>,
    /// `--network`.
    pub network: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
}

/// Creates a pod (not started): the database row and its IP leases.
pub fn create(engine: &Engine, req: &PodRequest) -> anyhow::Result<String> {
    let mut ports = Vec::new();
    for p in &req.ports {
        ports.extend(lifecycle::parse_port(p)?);
    }
    let net = match lifecycle::parse_network(req.network.as_deref()) {
        NetMode::Host => anyhow::bail!("pods with the host network are not supported: invalid argument"),
        n => n,
    };
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
    let _lock = engine.lock()?;
    let id = super::random_id();
    let name = match &req.name {
        Some(n) => {
            if !network::valid_name(n) {
                anyhow::bail!("names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*: invalid argument");
            }
            if engine.db.pods()?.iter().any(|p| p.name == *n) {
                anyhow::bail!("{n}: pod already exists");
            }
            n.clone()
        }
        None => {
            let taken: Vec<String> = engine.db.pods()?.into_iter().map(|p| p.name).collect();
            (0..).map(|_| format!("pod_{}", &super::random_id()[..8])).find(|n| !taken.contains(n)).unwrap_or_default()
        }
    };
    let mut ips = BTreeMap::new();
    for n in &networks {
        let leased = engine.db.leased(&n.name)?;
        ips.insert(n.name.clone(), network::next_free(n, &leased)?);
    }
    let cfg =
        PodConfig { ports, net, ips: ips.clone(), hostname: req.hostname.clone().unwrap_or_else(|| name.clone()) };
    engine.db.insert_pod(&id, &name, crate::format::now(), &cfg)?;
    for (n, ip) in &ips {
        if let Err(e) = engine.db.lease(n, *ip, &id) {
            let _ = engine.db.delete_pod(&id);
            return Err(e);
        }
    }
    Ok(id)
}

fn network_options(engine: &Engine, p: &Pod) -> anyhow::Result<Option<NetworkOptions>> {
    let NetMode::Bridge(names) = &p.config.net else { return Ok(None) };
    let sandbox =
        lifecycle::Sandbox { id: &p.id, name: &p.name, hostname: &p.config.hostname, ports: &p.config.ports, dns: &[] };
    let aliases = vec![p.name.clone(), p.id[..12].to_owned()];
    lifecycle::sandbox_options(engine, &sandbox, names, |i, n| PerNetworkOptions {
        interface_name: format!("eth{i}"),
        static_ips: p.config.ips.get(n).map(|ip| vec![*ip]),
        static_mac: None,
        aliases: Some(aliases.clone()),
        options: None,
    })
    .map(Some)
}

/// The pod's own lock (not the engine's: it is taken while the engine lock is held).
fn pod_lock(engine: &Engine, id: &str) -> anyhow::Result<Flock<File>> {
    let path = engine.root.join(format!("pod-{}.lock", &id[..12]));
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
}

/// Whether the pod's network namespace is up (mounted: a plain file left after the mount
/// namespace that held it went away is not).
pub fn is_up(p: &Pod) -> bool {
    super::netns_mounted(&Engine::netns_path(&p.id))
}

/// Brings the pod's network namespace up (no-op when it is); returns the pod, refreshed.
pub fn up(engine: &Engine, pod_id: &str) -> anyhow::Result<Pod> {
    let _l = pod_lock(engine, pod_id)?;
    let p = get(engine, pod_id)?;
    if is_up(&p) {
        return Ok(p);
    }
    let netns = Engine::netns_path(&p.id);
    super::create_netns(&netns, true)?;
    // The options netd set up with, once it did (torn down again on a later error).
    let mut net_up = None;
    let res = (|| -> anyhow::Result<()> {
        let status = match network_options(engine, &p)? {
            Some(o) => {
                let s = engine.netd_setup(&netns, &o)?;
                net_up = Some(o);
                s
            }
            None => BTreeMap::new(),
        };
        if p.config.net == NetMode::Portfwd {
            // No exit pipe: the pod's namespace outlives its containers; `down` stops it.
            lifecycle::start_portfwd(engine, &p.id, &netns, &p.config.ports, false)?;
        }
        engine.db.set_pod_status(&p.id, &status)
    })();
    if let Err(e) = res {
        if let Some(o) = &net_up {
            if let Err(e) = engine.netd("teardown", &netns, o) {
                tracing::warn!(pod = %p.id, error = %format!("{e:#}"), "network teardown failed");
            }
        }
        lifecycle::stop_portfwd(&p.id);
        super::remove_netns(&netns);
        // The rootless netns, when this setup made it and nothing else uses it.
        if crate::rootless::is_rootless() && matches!(p.config.net, NetMode::Bridge(_)) {
            super::rootless_net::teardown_if_unused(engine, &p.id);
        }
        return Err(e);
    }
    get(engine, pod_id)
}

/// Tears the pod's network namespace down (its containers must be stopped).
pub fn down(engine: &Engine, p: &Pod) {
    let Ok(_l) = pod_lock(engine, &p.id) else { return };
    let netns = Engine::netns_path(&p.id);
    if !super::netns_mounted(&netns) {
        // Gone with the mount namespace that held it: its file and forwarder are left.
        lifecycle::stop_portfwd(&p.id);
        super::remove_netns(&netns);
        return;
    }
    match network_options(engine, p) {
        Ok(Some(o)) => {
            if let Err(e) = engine.netd("teardown", &netns, &o) {
                tracing::warn!(pod = %p.id, error = %format!("{e:#}"), "network teardown failed");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(pod = %p.id, error = %format!("{e:#}"), "network teardown failed"),
    }
    lifecycle::stop_portfwd(&p.id);
    super::remove_netns(&netns);
    if crate::rootless::is_rootless() && matches!(p.config.net, NetMode::Bridge(_)) {
        super::rootless_net::teardown_if_unused(engine, &p.id);
    }
}

/// A pod by ID.
pub fn get(engine: &Engine, id: &str) -> anyhow::Result<Pod> {
    engine.db.pods()?.into_iter().find(|p| p.id == id).ok_or_else(|| anyhow::anyhow!("pod {id} was removed"))
}

/// The pod's containers, oldest first.
pub fn members(engine: &Engine, p: &Pod) -> anyhow::Result<Vec<Container>> {
    Ok(engine.db.containers()?.into_iter().filter(|c| c.config.pod.as_deref() == Some(p.id.as_str())).collect())
}

/// Podman's pod status: Created, Running, Degraded or Exited.
pub fn status(p: &Pod, members: &[Container]) -> &'static str {
    let running = members.iter().filter(|c| c.state == State::Running).count();
    if is_up(p) {
        if running == members.len() {
            "Running"
        } else {
            "Degraded"
        }
    } else if p.started || members.iter().any(|c| c.state == State::Exited) {
        "Exited"
    } else {
        "Created"
    }
}

/// Stops every container of the pod, then its network namespace.
pub fn stop(engine: &Engine, p: &Pod, timeout: u64) -> anyhow::Result<()> {
    for c in members(engine, p)? {
        lifecycle::stop(engine, &c, timeout)?;
    }
    down(engine, p);
    Ok(())
}

/// Removes a pod: its containers (running ones only with `force`), its network namespace
/// and its record.
pub fn remove(engine: &Engine, p: &Pod, force: bool, timeout: u64) -> anyhow::Result<()> {
    let ms = members(engine, p)?;
    if !force {
        if let Some(c) = ms.iter().find(|c| c.state == State::Running) {
            anyhow::bail!(
                "pod {} has containers that are not ready to be removed: cannot remove container {} as it is running - running or paused containers cannot be removed without force: container state improper",
                p.id,
                c.id
            );
        }
    }
    for c in ms {
        lifecycle::stop(engine, &c, timeout)?;
        if let Some(c) = engine.db.get(&c.id)? {
            lifecycle::remove_stopped(engine, &c)?;
        }
    }
    down(engine, p);
    let _lock = engine.lock()?;
    engine.db.delete_pod(&p.id)?;
    let _ = std::fs::remove_file(engine.root.join(format!("pod-{}.lock", &p.id[..12])));
    Ok(())
}
