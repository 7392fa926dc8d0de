//! Network definitions: podman-format JSON files under `<root>/networks/`, the built-in
//! default network `podman`, and IPAM (the next free address of a subnet).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use ipnet::{IpNet, Ipv4Net};
use rpod_wire::{Network, Subnet};

/// The default network's name.
pub const DEFAULT_NETWORK: &str = "podman";

/// The built-in default network (podman's: `podman0`, 10.88.0.0/16, no DNS).
pub fn default_network() -> Network {
    Network {
        name: DEFAULT_NETWORK.to_owned(),
        id: "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9".to_owned(),
        driver: "bridge".to_owned(),
        network_interface: Some("podman0".to_owned()),
        subnets: Some(vec![Subnet {
            subnet: "10.88.0.0/16".parse().unwrap_or_else(|_| IpNet::V4(Ipv4Net::default())),
            gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 88, 0, 1))),
            lease_range: None,
        }]),
        routes: None,
        ipv6_enabled: false,
        internal: false,
        dns_enabled: false,
        network_dns_servers: None,
        options: None,
        ipam_options: Some(BTreeMap::from([("driver".to_owned(), "host-local".to_owned())])),
        created: Some(crate::format::rfc3339(crate::format::now())),
        labels: None,
    }
}

fn dir(root: &Path) -> PathBuf {
    root.join("networks")
}

/// Whether a network name is valid (podman's rule).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && name.len() <= 255
}

/// Every network: the default one first, then the files, by name.
pub fn list(root: &Path) -> anyhow::Result<Vec<Network>> {
    let mut out = vec![default_network()];
    let d = dir(root);
    let rd = match std::fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", d.display())),
    };
    let mut files: Vec<Network> = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        match serde_json::from_slice::<Network>(&bytes) {
            Ok(n) if n.name == DEFAULT_NETWORK => out[0] = n,
            Ok(n) => files.push(n),
            Err(e) => tracing::warn!(file = %p.display(), error = %e, "skipping a bad network file"),
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(files);
    Ok(out)
}

/// A network by name or ID (prefix).
pub fn get(root: &Path, name: &str) -> anyhow::Result<Network> {
    let all = list(root)?;
    if let Some(n) = all.iter().find(|n| n.name == name || n.id == name) {
        return Ok(n.clone());
    }
    let by_id: Vec<&Network> = all.iter().filter(|n| name.len() >= 3 && n.id.starts_with(name)).collect();
    if by_id.len() == 1 {
        return Ok(by_id[0].clone());
    }
    anyhow::bail!("unable to find network with name or ID {name}: network not found")
}

/// Options of `network create`.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// The name (generated when empty).
    pub name: Option<String>,
    /// `bridge` or `macvlan`.
    pub driver: String,
    /// The subnet (picked when none).
    pub subnet: Option<IpNet>,
    /// The gateway (first address when none).
    pub gateway: Option<IpAddr>,
    /// No outbound traffic.
    pub internal: bool,
    /// No DNS.
    pub disable_dns: bool,
    /// Driver options.
    pub options: BTreeMap<String, String>,
}

/// Writes a new network file and returns it.
pub fn create(root: &Path, o: &CreateOptions) -> anyhow::Result<Network> {
    let all = list(root)?;
    if o.driver != "bridge" && o.driver != "macvlan" {
        anyhow::bail!("unsupported driver {}: invalid argument", o.driver);
    }
    let name = match &o.name {
        Some(n) => n.clone(),
        None => (1..).map(|i| format!("podman{i}")).find(|n| !all.iter().any(|x| &x.name == n)).unwrap_or_default(),
    };
    if !valid_name(&name) {
        anyhow::bail!("network name {name} invalid: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*: invalid argument");
    }
    if all.iter().any(|n| n.name == name) {
        anyhow::bail!("network name {name} already used: network already exists");
    }
    let used: Vec<IpNet> = all.iter().flat_map(|n| n.subnets().iter().map(|s| s.subnet)).collect();
    let subnet = match o.subnet {
        Some(s) => {
            let s = s.trunc();
            if let Some(u) = used.iter().find(|u| u.contains(&s.network()) || s.contains(&u.network())) {
                anyhow::bail!("subnet {s} is already used on the host or by another config (overlaps {u})");
            }
            s
        }
        None => (0..=255u8)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 89, i, 0), 24).unwrap_or_default()))
            .find(|s| !used.iter().any(|u| u.contains(&s.network()) || s.contains(&u.network())))
            .ok_or_else(|| anyhow::anyhow!("could not find a free subnet in 10.89.0.0/16"))?,
    };
    let gateway = match o.gateway {
        Some(g) if !subnet.contains(&g) => anyhow::bail!("gateway {g} not in subnet {subnet}"),
        Some(g) => g,
        None => first_host(&subnet).ok_or_else(|| anyhow::anyhow!("subnet {subnet} is too small"))?,
    };
    let interface = if o.driver == "bridge" {
        let taken: Vec<&str> = all.iter().filter_map(|n| n.network_interface.as_deref()).collect();
        (0..).map(|i| format!("podman{i}")).find(|b| !taken.contains(&b.as_str()))
    } else {
        o.options.get("parent").cloned()
    };
    let mut options = o.options.clone();
    options.remove("parent");
    let net = Network {
        name: name.clone(),
        id: crate::engine::random_id(),
        driver: o.driver.clone(),
        network_interface: interface,
        subnets: Some(vec![Subnet { subnet, gateway: Some(gateway), lease_range: None }]),
        routes: None,
        ipv6_enabled: subnet.addr().is_ipv6(),
        internal: o.internal,
        dns_enabled: !o.disable_dns && o.driver == "bridge",
        network_dns_servers: None,
        options: (!options.is_empty()).then_some(options),
        ipam_options: Some(BTreeMap::from([("driver".to_owned(), "host-local".to_owned())])),
        created: Some(crate::format::rfc3339(crate::format::now())),
        labels: None,
    };
    let d = dir(root);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let path = d.join(format!("{name}.json"));
    let tmp = d.join(format!(".{name}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&net)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(net)
}

/// Removes a network's file.
pub fn remove(root: &Path, name: &str) -> anyhow::Result<()> {
    if name == DEFAULT_NETWORK {
        anyhow::bail!("default network {name} cannot be removed");
    }
    let d = dir(root);
    for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
        let p = e.path();
        if let Ok(n) =
            std::fs::read(&p).map_err(anyhow::Error::from).and_then(|b| Ok(serde_json::from_slice::<Network>(&b)?))
        {
            if n.name == name {
                return std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()));
            }
        }
    }
    anyhow::bail!("unable to find network with name or ID {name}: network not found")
}

fn first_host(net: &IpNet) -> Option<IpAddr> {
    net.hosts().next()
}

/// The first address of the network's first subnet that is neither the gateway nor leased.
pub fn next_free(net: &Network, leased: &[IpAddr]) -> anyhow::Result<IpAddr> {
    let s = net.subnets().first().ok_or_else(|| anyhow::anyhow!("network {} has no subnet", net.name))?;
    s.subnet.hosts().find(|ip| Some(*ip) != s.gateway && !leased.contains(ip)).ok_or_else(|| {
        anyhow::anyhow!("IPAM error: failed to find free IP in subnet {} of network {}", s.subnet, net.name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_picks_podman1_and_10_89() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let o = CreateOptions { name: Some("n1".into()), driver: "bridge".into(), ..Default::default() };
        let n1 = create(d.path(), &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n1.network_interface.as_deref(), Some("podman1"));
        assert_eq!(n1.subnets()[0].subnet.to_string(), "10.89.0.0/24");
        assert_eq!(n1.subnets()[0].gateway.map(|g| g.to_string()).as_deref(), Some("10.89.0.1"));
        assert!(n1.dns_enabled);
        let o = CreateOptions { name: Some("n2".into()), driver: "bridge".into(), ..Default::default() };
        let n2 = create(d.path(), &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n2.network_interface.as_deref(), Some("podman2"));
        assert_eq!(n2.subnets()[0].subnet.to_string(), "10.89.1.0/24");
        assert!(create(d.path(), &o).is_err());
        let ip =
            next_free(&n1, &["10.89.0.2".parse().unwrap_or_else(|e| panic!("{e}"))]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ip.to_string(), "10.89.0.3");
        assert_eq!(list(d.path()).unwrap_or_else(|e| panic!("{e}")).len(), 3);
        remove(d.path(), "n1").unwrap_or_else(|e| panic!("{e}"));
        assert!(get(d.path(), "n1").is_err());
    }
}
