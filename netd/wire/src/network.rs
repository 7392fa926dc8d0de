//! The netavark JSON contract (see `shared/reference/netavark-aardvark.md`, section 2).
//!
//! Field names, optionality and defaults follow netavark exactly: a field that netavark
//! requires is required here, unknown fields are ignored, and `networks` is accepted both as
//! a map (podman 4/5) and as an array of `{name, ...}` objects (netavark 2.x).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// The stdin of `setup` and `teardown`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkOptions {
    pub container_id: String,
    pub container_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_hostname: Option<String>,
    /// Per-network options, in the order given (a JSON map keeps its document order).
    #[serde(deserialize_with = "networks_map_or_array")]
    #[serde(serialize_with = "networks_as_map")]
    pub networks: Vec<(String, PerNetworkOptions)>,
    pub network_info: HashMap<String, Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<IpAddr>>,
}

/// One network definition (podman's network JSON file has the same shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<Subnet>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    pub ipv6_enabled: bool,
    pub internal: bool,
    pub dns_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_dns_servers: Option<Vec<IpAddr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_options: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl Network {
    /// The subnets, or none.
    pub fn subnets(&self) -> &[Subnet] {
        self.subnets.as_deref().unwrap_or(&[])
    }

    /// A driver option, if set.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.as_ref()?.get(key).map(String::as_str)
    }

    /// The IPAM driver (`host-local` when not given).
    pub fn ipam_driver(&self) -> &str {
        self.ipam_options.as_ref().and_then(|o| o.get("driver")).map(String::as_str).unwrap_or("host-local")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subnet {
    pub subnet: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_range: Option<LeaseRange>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ip: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Route {
    pub destination: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_type: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PerNetworkOptions {
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_ips: Option<Vec<IpAddr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct PortMapping {
    pub host_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub range: u16,
    pub protocol: String,
}

impl PortMapping {
    /// Number of ports covered (`range` 0 counts as 1, as netavark's nftables driver does).
    pub fn len(&self) -> u16 {
        self.range.max(1)
    }

    /// Never empty: a mapping covers at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What `setup` prints for one network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusBlock {
    pub dns_search_domains: Vec<String>,
    pub dns_server_ips: Vec<IpAddr>,
    pub interfaces: BTreeMap<String, NetInterface>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Vec<NetAddress>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetAddress {
    pub ipnet: IpNet,
    pub gateway: Option<IpAddr>,
}

/// The error object: exactly one key, because podman decodes it with
/// `DisallowUnknownFields`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorJson {
    pub error: String,
}

impl NetworkOptions {
    /// Parses NetworkOptions, with a message in netavark's words on failure.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The network definition for each requested network, in order; an error names the
    /// first network that has no definition.
    pub fn resolved(&self) -> Result<Vec<(&PerNetworkOptions, &Network)>, String> {
        self.networks
            .iter()
            .map(|(name, per)| {
                self.network_info
                    .get(name)
                    .map(|n| (per, n))
                    .ok_or_else(|| format!("network info for network {name} not found"))
            })
            .collect()
    }
}

fn networks_map_or_array<'de, D>(d: D) -> Result<Vec<(String, PerNetworkOptions)>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Named {
        name: String,
        #[serde(flatten)]
        opts: PerNetworkOptions,
    }
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<(String, PerNetworkOptions)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of network name to per-network options, or an array of them with a name")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, PerNetworkOptions)> = Vec::new();
            while let Some((k, v)) = a.next_entry::<String, PerNetworkOptions>()? {
                if out.iter().any(|(n, _)| n == &k) {
                    return Err(serde::de::Error::custom(format!("duplicate network {k}")));
                }
                out.push((k, v));
            }
            Ok(out)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, PerNetworkOptions)> = Vec::new();
            while let Some(n) = a.next_element::<Named>()? {
                if out.iter().any(|(k, _)| k == &n.name) {
                    return Err(serde::de::Error::custom(format!("duplicate network {}", n.name)));
                }
                out.push((n.name, n.opts));
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

fn networks_as_map<S: serde::Serializer>(v: &[(String, PerNetworkOptions)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, o) in v {
        m.serialize_entry(k, o)?;
    }
    m.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODMAN_431: &str = r#"{"container_id":"709ac5a697f5","container_name":"c1","port_mappings":[{"host_ip":"","container_port":80,"host_port":8080,"range":1,"protocol":"tcp"}],
        "networks":{"t1":{"static_ips":["10.99.0.2"],"aliases":["709ac5a697f5"],"interface_name":"eth0"}},
        "network_info":{"t1":{"name":"t1","id":"d0ab90","driver":"bridge","network_interface":"podman1","created":"2026-11-22T10:25:19.247448547Z",
        "subnets":[{"subnet":"10.99.0.0/24","gateway":"10.99.0.1"}],"ipv6_enabled":false,"internal":false,"dns_enabled":true,"ipam_options":{"driver":"host-local"},"unknown_field":1}}}"#;

    #[test]
    fn parses_what_podman_431_sends() {
        let o = NetworkOptions::from_json(PODMAN_431).unwrap();
        assert_eq!(o.networks.len(), 1);
        assert_eq!(o.networks[0].0, "t1");
        let r = o.resolved().unwrap();
        assert_eq!(r[0].1.network_interface.as_deref(), Some("podman1"));
        assert_eq!(r[0].1.ipam_driver(), "host-local");
        assert_eq!(o.port_mappings.as_ref().unwrap()[0].len(), 1);
    }

    #[test]
    fn networks_as_array_keep_order() {
        let j = r#"{"container_id":"a","container_name":"b","networks":[
            {"name":"z","interface_name":"eth0"},{"name":"a","interface_name":"eth1"}],
            "network_info":{}}"#;
        let o = NetworkOptions::from_json(j).unwrap();
        assert_eq!(o.networks[0].0, "z");
        assert_eq!(o.networks[1].1.interface_name, "eth1");
        assert_eq!(o.resolved().unwrap_err(), "network info for network z not found");
    }

    #[test]
    fn map_keeps_document_order() {
        let j = r#"{"container_id":"a","container_name":"b","networks":{
            "zz":{"interface_name":"eth0"},"aa":{"interface_name":"eth1"}},"network_info":{}}"#;
        let o = NetworkOptions::from_json(j).unwrap();
        assert_eq!(o.networks[0].0, "zz");
    }

    #[test]
    fn missing_required_field_is_an_error() {
        let j = r#"{"container_name":"b","networks":{},"network_info":{}}"#;
        let e = NetworkOptions::from_json(j).unwrap_err().to_string();
        assert!(e.contains("container_id"), "{e}");
    }

    #[test]
    fn bad_cidr_is_an_error() {
        let j = PODMAN_431.replace("10.99.0.0/24", "10.99.0.0/33");
        assert!(NetworkOptions::from_json(&j).is_err());
    }

    #[test]
    fn error_json_has_one_key() {
        let s = serde_json::to_string(&ErrorJson { error: "x".into() }).unwrap();
        assert_eq!(s, r#"{"error":"x"}"#);
    }

    #[test]
    fn status_block_shape() {
        let mut sb = StatusBlock::default();
        sb.interfaces.insert(
            "eth0".into(),
            NetInterface {
                mac_address: "aa:bb:cc:dd:ee:ff".into(),
                subnets: vec![NetAddress {
                    ipnet: "10.0.0.2/24".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                }],
            },
        );
        let s = serde_json::to_string(&sb).unwrap();
        assert_eq!(
            s,
            r#"{"dns_search_domains":[],"dns_server_ips":[],"interfaces":{"eth0":{"mac_address":"aa:bb:cc:dd:ee:ff","subnets":[{"ipnet":"10.0.0.2/24","gateway":"10.0.0.1"}]}}}"#
        );
    }
}
