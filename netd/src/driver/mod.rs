//! Network drivers: validate a network plus the container's options into a plan (pure, unit
//! tested), then set up or tear down the links and addresses it describes.

pub mod bridge;
pub mod macvlan;

use std::net::IpAddr;

use ipnet::IpNet;
use rpod_wire::{Network, PerNetworkOptions, Route};

use crate::error::{msg, Result};

/// `isolate` option of a bridge network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolate {
    No,
    Yes,
    Strict,
}

/// One address of the container on a network.
#[derive(Debug, Clone, PartialEq)]
pub struct Addr {
    /// Container address with the subnet's prefix.
    pub ipnet: IpNet,
    pub gateway: Option<IpAddr>,
}

/// What both drivers need from the per-network options, validated.
#[derive(Debug, Clone)]
pub struct Common {
    pub ifname: String,
    pub addrs: Vec<Addr>,
    pub mac: Option<Vec<u8>>,
    pub mtu: Option<u32>,
    pub metric: u32,
    pub no_default_route: bool,
    pub routes: Vec<Route>,
}

fn parse_opt<T: std::str::FromStr>(net: &Network, key: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match net.option(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e| msg(format!("unable to parse \"{key}\": {e}"))),
    }
}

/// Validates the options shared by every driver.
pub fn common(net: &Network, per: &PerNetworkOptions, default_metric: u32) -> Result<Common> {
    if per.interface_name.is_empty() {
        return Err(msg("no container interface name given"));
    }
    if per.interface_name.len() > 15 || per.interface_name.contains(['/', ' ', ':']) {
        return Err(msg(format!("invalid container interface name {:?}", per.interface_name)));
    }
    let addrs = match net.ipam_driver() {
        "host-local" => {
            let ips = per.static_ips.as_deref().unwrap_or(&[]);
            if ips.is_empty() && !net.subnets().is_empty() {
                return Err(msg("no static ips provided"));
            }
            let mut addrs = Vec::new();
            for ip in ips {
                let s = net
                    .subnets()
                    .iter()
                    .find(|s| s.subnet.contains(ip))
                    .ok_or_else(|| msg(format!("IP address {ip} is not in any subnet of network {}", net.name)))?;
                if *ip == s.subnet.network() && s.subnet.prefix_len() < s.subnet.max_prefix_len() - 1 {
                    return Err(msg(format!("IP address {ip} is the network address of subnet {}", s.subnet)));
                }
                if Some(*ip) == s.gateway {
                    return Err(msg(format!("IP address {ip} is the gateway of network {}", net.name)));
                }
                let ipnet = IpNet::new(*ip, s.subnet.prefix_len()).map_err(|e| msg(e.to_string()))?;
                addrs.push(Addr { ipnet, gateway: s.gateway });
            }
            addrs
        }
        "none" => Vec::new(),
        "dhcp" => return Err(msg("dhcp ipam driver is not yet supported")),
        other => return Err(msg(format!("unsupported ipam driver {other}"))),
    };
    for s in net.subnets() {
        if let Some(gw) = s.gateway {
            if !s.subnet.contains(&gw) {
                return Err(msg(format!("gateway {gw} is not in subnet {}", s.subnet)));
            }
        }
        if s.subnet.addr().is_ipv6() && !net.ipv6_enabled {
            tracing::debug!("network {} has an IPv6 subnet without ipv6_enabled", net.name);
        }
    }
    let mac = per.static_mac.as_deref().map(crate::nl::parse_mac).transpose()?;
    let mtu = parse_opt::<u32>(net, "mtu")?.filter(|m| *m != 0);
    let metric = parse_opt::<u32>(net, "metric")?.unwrap_or(default_metric);
    let no_default_route = parse_opt::<bool>(net, "no_default_route")?.unwrap_or(false);
    let routes = net.routes.clone().unwrap_or_default();
    for r in &routes {
        if let Some(gw) = r.gateway {
            if gw.is_ipv4() != r.destination.addr().is_ipv4() {
                return Err(msg(format!("route {} has a gateway {gw} of another family", r.destination)));
            }
        }
    }
    Ok(Common { ifname: per.interface_name.clone(), addrs, mac, mtu, metric, no_default_route, routes })
}

/// Parses the `isolate` option.
pub fn isolate(net: &Network) -> Result<Isolate> {
    match net.option("isolate") {
        None | Some("false") | Some("") => Ok(Isolate::No),
        Some("true") => Ok(Isolate::Yes),
        Some("strict") => Ok(Isolate::Strict),
        Some(v) => Err(msg(format!("unable to parse \"isolate\": invalid value {v:?} (true, false or strict)"))),
    }
}

/// Sets up the container-side interface once it exists under its final name: sysctls,
/// addresses, up, default and static routes. Runs with the thread inside the container ns for
/// the sysctls.
pub async fn configure_container_if(
    nl: &crate::nl::Netlink,
    ctr_ns: &crate::netns::NetNs,
    c: &Common,
    index: u32,
    default_route: bool,
) -> Result<()> {
    let has_v6 = c.addrs.iter().any(|a| a.ipnet.addr().is_ipv6());
    crate::netns::within(ctr_ns, || -> Result<()> {
        if has_v6 {
            crate::sysctl::set_if_present(&format!("net/ipv6/conf/{}/autoconf", c.ifname), "0")?;
            crate::sysctl::set_if_present(&format!("net/ipv6/conf/{}/accept_dad", c.ifname), "0")?;
        }
        crate::sysctl::set_if_present(&format!("net/ipv4/conf/{}/arp_notify", c.ifname), "1")?;
        Ok(())
    })??;
    for a in &c.addrs {
        nl.add_address(index, a.ipnet).await?;
    }
    nl.set_up(index).await?;
    if default_route && !c.no_default_route {
        let v4 = c.addrs.iter().filter_map(|a| a.gateway).find(|g| g.is_ipv4());
        let v6 = c.addrs.iter().filter_map(|a| a.gateway).find(|g| g.is_ipv6());
        for gw in [v4, v6].into_iter().flatten() {
            let dest: IpNet =
                if gw.is_ipv4() { "0.0.0.0/0".parse().expect("valid") } else { "::/0".parse().expect("valid") };
            nl.add_route(dest, Some(gw), Some(index), c.metric).await?;
        }
    }
    for r in &c.routes {
        nl.add_route(r.destination, r.gateway, Some(index), r.metric.unwrap_or(c.metric)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(json: &str) -> Network {
        serde_json::from_str(json).unwrap()
    }
    const N: &str = r#"{"name":"n","id":"0123456789abcdef","driver":"bridge","network_interface":"br0",
        "subnets":[{"subnet":"10.1.0.0/24","gateway":"10.1.0.1"},{"subnet":"fd00:1::/64","gateway":"fd00:1::1"}],
        "ipv6_enabled":true,"internal":false,"dns_enabled":false,"options":{"metric":"50","isolate":"strict"}}"#;

    fn per(ips: &[&str]) -> PerNetworkOptions {
        PerNetworkOptions {
            interface_name: "eth0".into(),
            static_ips: Some(ips.iter().map(|i| i.parse().unwrap()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn ips_match_subnets_by_containment() {
        let c = common(&net(N), &per(&["fd00:1::5", "10.1.0.5"]), 100).unwrap();
        assert_eq!(c.addrs[0].ipnet.to_string(), "fd00:1::5/64");
        assert_eq!(c.addrs[1].gateway.unwrap().to_string(), "10.1.0.1");
        assert_eq!(c.metric, 50);
        assert_eq!(isolate(&net(N)).unwrap(), Isolate::Strict);
    }

    #[test]
    fn ip_outside_subnet_is_rejected() {
        let e = common(&net(N), &per(&["10.2.0.5"]), 100).unwrap_err().to_string();
        assert!(e.contains("not in any subnet"), "{e}");
    }

    #[test]
    fn missing_ips_and_names() {
        assert_eq!(common(&net(N), &per(&[]), 100).unwrap_err().to_string(), "no static ips provided");
        let mut p = per(&["10.1.0.5"]);
        p.interface_name.clear();
        assert_eq!(common(&net(N), &p, 100).unwrap_err().to_string(), "no container interface name given");
    }

    #[test]
    fn bad_options() {
        let n = net(&N.replace(r#""metric":"50""#, r#""mtu":"abc""#));
        assert!(common(&n, &per(&["10.1.0.5"]), 100).unwrap_err().to_string().starts_with("unable to parse \"mtu\""));
        let mut p = per(&["10.1.0.5"]);
        p.static_mac = Some("aa:bb".into());
        assert!(common(&net(N), &p, 100).is_err());
        p.static_mac = Some("AA-bb-cc-dd-ee-0f".into());
        assert_eq!(common(&net(N), &p, 100).unwrap().mac.unwrap(), vec![0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]);
    }
}
