//! A builder for the NetworkOptions JSON that netd reads on stdin (the netavark format,
//! `shared/reference/netavark-aardvark.md` section 2), shaped like what podman 4.3.1 sends.
//!
//! It produces a [`serde_json::Value`] rather than typed structs on purpose: the bad-input
//! tests take a valid document and break it (drop a field, write an invalid CIDR), which a
//! typed builder would not let them do.
//!
//! ```ignore
//! let net = Network::bridge("n1", &env.name("br0")).subnet("10.89.1.0/24", Some("10.89.1.1"));
//! let opts = Opts::new(&a).net(&net, Attach::eth0(&["10.89.1.2"])).port(Port::tcp(8080, 8000));
//! env.setup(&a, &opts);
//! ```

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::env::Container;

/// A stable 64-hex-character id derived from a name (podman ids look like this; the nft
/// chain names of netavark use the first 8 characters).
pub fn hex_id(seed: &str) -> String {
    // FNV-1a, iterated: stable across runs and platforms, no dependency.
    let mut out = String::with_capacity(64);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut round = 0u8;
    while out.len() < 64 {
        for b in seed.bytes().chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
        round = round.wrapping_add(1);
    }
    out.truncate(64);
    out
}

/// One network definition (the value in `network_info`).
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub interface: Option<String>,
    /// (subnet CIDR, gateway)
    pub subnets: Vec<(String, Option<String>)>,
    pub ipv6_enabled: bool,
    pub internal: bool,
    pub dns_enabled: bool,
    pub options: BTreeMap<String, String>,
}

impl Network {
    fn new(name: &str, driver: &str, interface: Option<&str>) -> Self {
        Network {
            name: name.to_string(),
            id: hex_id(&format!("network {name} {}", interface.unwrap_or(""))),
            driver: driver.to_string(),
            interface: interface.map(str::to_string),
            subnets: Vec::new(),
            ipv6_enabled: false,
            internal: false,
            dns_enabled: false,
            options: BTreeMap::new(),
        }
    }

    /// A bridge network whose bridge link is `bridge` (keep it under 16 characters).
    pub fn bridge(name: &str, bridge: &str) -> Self {
        Self::new(name, "bridge", Some(bridge))
    }

    /// A macvlan network on `parent` (None: netd picks the default-route interface).
    pub fn macvlan(name: &str, parent: Option<&str>) -> Self {
        Self::new(name, "macvlan", parent)
    }

    /// An ipvlan network on `parent`.
    pub fn ipvlan(name: &str, parent: Option<&str>) -> Self {
        Self::new(name, "ipvlan", parent)
    }

    /// Adds a subnet; a v6 subnet also sets `ipv6_enabled`, as podman does.
    pub fn subnet(mut self, cidr: &str, gateway: Option<&str>) -> Self {
        if cidr.contains(':') {
            self.ipv6_enabled = true;
        }
        self.subnets.push((cidr.to_string(), gateway.map(str::to_string)));
        self
    }

    pub fn internal(mut self, yes: bool) -> Self {
        self.internal = yes;
        self
    }

    pub fn dns(mut self, yes: bool) -> Self {
        self.dns_enabled = yes;
        self
    }

    /// `options.isolate` (`"true"`, `"false"` or `"strict"`).
    pub fn isolate(self, value: &str) -> Self {
        self.option("isolate", value)
    }

    /// Any driver option (`mtu`, `metric`, `mode`, ...).
    pub fn option(mut self, key: &str, value: &str) -> Self {
        self.options.insert(key.to_string(), value.to_string());
        self
    }

    /// The gateway of subnet `i`, which must have one.
    pub fn gateway(&self, i: usize) -> &str {
        self.subnets
            .get(i)
            .and_then(|(_, g)| g.as_deref())
            .unwrap_or_else(|| panic!("network {} has no gateway for subnet {i}", self.name))
    }

    /// The `network_info` value, with the fields podman 4.3.1 sends.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("id".into(), json!(self.id));
        m.insert("driver".into(), json!(self.driver));
        if let Some(i) = &self.interface {
            m.insert("network_interface".into(), json!(i));
        }
        m.insert("created".into(), json!("2026-11-22T10:25:19.247448547Z"));
        if !self.subnets.is_empty() {
            let subnets: Vec<Value> = self
                .subnets
                .iter()
                .map(|(s, g)| match g {
                    Some(g) => json!({"subnet": s, "gateway": g}),
                    None => json!({"subnet": s}),
                })
                .collect();
            m.insert("subnets".into(), Value::Array(subnets));
        }
        m.insert("ipv6_enabled".into(), json!(self.ipv6_enabled));
        m.insert("internal".into(), json!(self.internal));
        m.insert("dns_enabled".into(), json!(self.dns_enabled));
        if !self.options.is_empty() {
            m.insert("options".into(), json!(self.options));
        }
        m.insert("ipam_options".into(), json!({"driver": "host-local"}));
        Value::Object(m)
    }
}

/// How one container attaches to one network (the value in `networks`).
#[derive(Debug, Clone)]
pub struct Attach {
    pub interface_name: String,
    pub static_ips: Vec<String>,
    pub static_mac: Option<String>,
    pub aliases: Vec<String>,
}

impl Attach {
    pub fn new(interface_name: &str, ips: &[&str]) -> Self {
        Attach {
            interface_name: interface_name.to_string(),
            static_ips: ips.iter().map(|s| s.to_string()).collect(),
            static_mac: None,
            aliases: Vec::new(),
        }
    }

    /// `eth0` with these static IPs (one per subnet, in the network's subnet order).
    pub fn eth0(ips: &[&str]) -> Self {
        Self::new("eth0", ips)
    }

    pub fn mac(mut self, mac: &str) -> Self {
        self.static_mac = Some(mac.to_string());
        self
    }

    pub fn alias(mut self, a: &str) -> Self {
        self.aliases.push(a.to_string());
        self
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.static_ips.is_empty() {
            m.insert("static_ips".into(), json!(self.static_ips));
        }
        if let Some(mac) = &self.static_mac {
            m.insert("static_mac".into(), json!(mac));
        }
        if !self.aliases.is_empty() {
            m.insert("aliases".into(), json!(self.aliases));
        }
        m.insert("interface_name".into(), json!(self.interface_name));
        Value::Object(m)
    }
}

/// One port mapping.
#[derive(Debug, Clone)]
pub struct Port {
    pub host_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub range: u16,
    pub protocol: String,
}

impl Port {
    pub fn tcp(host_port: u16, container_port: u16) -> Self {
        Port { host_ip: String::new(), container_port, host_port, range: 1, protocol: "tcp".into() }
    }

    pub fn udp(host_port: u16, container_port: u16) -> Self {
        Port { protocol: "udp".into(), ..Self::tcp(host_port, container_port) }
    }

    /// Covers `n` consecutive ports on both sides.
    pub fn range(mut self, n: u16) -> Self {
        self.range = n;
        self
    }

    /// Only on this host address.
    pub fn host_ip(mut self, ip: &str) -> Self {
        self.host_ip = ip.to_string();
        self
    }

    pub fn to_json(&self) -> Value {
        json!({
            "host_ip": self.host_ip,
            "container_port": self.container_port,
            "host_port": self.host_port,
            "range": self.range,
            "protocol": self.protocol,
        })
    }
}

/// The whole NetworkOptions document for one container.
#[derive(Debug, Clone)]
pub struct Opts {
    pub container_id: String,
    pub container_name: String,
    pub networks: Vec<(Network, Attach)>,
    pub ports: Vec<Port>,
    pub dns_servers: Vec<String>,
}

impl Opts {
    /// For this container (its id and name).
    pub fn new(c: &Container) -> Self {
        Self::named(&c.id, &c.name)
    }

    pub fn named(container_id: &str, container_name: &str) -> Self {
        Opts {
            container_id: container_id.to_string(),
            container_name: container_name.to_string(),
            networks: Vec::new(),
            ports: Vec::new(),
            dns_servers: Vec::new(),
        }
    }

    pub fn net(mut self, net: &Network, attach: Attach) -> Self {
        self.networks.push((net.clone(), attach));
        self
    }

    pub fn port(mut self, p: Port) -> Self {
        self.ports.push(p);
        self
    }

    pub fn dns_server(mut self, ip: &str) -> Self {
        self.dns_servers.push(ip.to_string());
        self
    }

    pub fn to_json(&self) -> Value {
        let mut networks = Map::new();
        let mut info = Map::new();
        for (n, a) in &self.networks {
            networks.insert(n.name.clone(), a.to_json());
            info.insert(n.name.clone(), n.to_json());
        }
        let mut m = Map::new();
        m.insert("container_id".into(), json!(self.container_id));
        m.insert("container_name".into(), json!(self.container_name));
        if !self.ports.is_empty() {
            m.insert("port_mappings".into(), Value::Array(self.ports.iter().map(Port::to_json).collect()));
        }
        m.insert("networks".into(), Value::Object(networks));
        m.insert("network_info".into(), Value::Object(info));
        if !self.dns_servers.is_empty() {
            m.insert("dns_servers".into(), json!(self.dns_servers));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_stable() {
        let a = hex_id("x");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, hex_id("x"));
        assert_ne!(a, hex_id("y"));
    }

    #[test]
    fn document_parses_as_network_options() {
        let net = Network::bridge("n1", "br0")
            .subnet("10.89.1.0/24", Some("10.89.1.1"))
            .subnet("fd10:89:1::/64", Some("fd10:89:1::1"))
            .isolate("true");
        let o = Opts::named(&hex_id("c"), "c")
            .net(&net, Attach::eth0(&["10.89.1.2", "fd10:89:1::2"]).alias("cc"))
            .port(Port::tcp(8080, 80).range(2).host_ip("127.0.0.1"))
            .port(Port::udp(53, 53));
        let text = o.to_json().to_string();
        let parsed = rpod_wire::NetworkOptions::from_json(&text).expect("parses");
        assert_eq!(parsed.networks.len(), 1);
        let (per, n) = parsed.resolved().expect("resolves")[0];
        assert_eq!(per.interface_name, "eth0");
        assert!(n.ipv6_enabled);
        assert_eq!(n.option("isolate"), Some("true"));
        assert_eq!(parsed.port_mappings.as_ref().map(Vec::len), Some(2));
    }
}
