//! Rendering of netd's nftables ruleset: a pure function from the networks in use (and one
//! container's port mappings) to one nft batch. Golden-tested below.
//!
//! How this works:
//! - Everything lives in `table inet netd`. Base chains `FORWARD`, `INPUT`, `POSTROUTING`,
//!   `PREROUTING`, `OUTPUT` and one regular chain `HOSTPORT-DNAT`.
//! - Per-network rules (masquerade, forwarding, isolation, DNS) are few and depend only on the
//!   set of networks. Every batch flushes these chains and writes them again from the full
//!   list of networks, in the same transaction, so they are always exactly right and never
//!   need to be looked up.
//! - Per-container state is only ever elements of four maps keyed by
//!   `[host ip .] l4proto . host port` whose values are `container ip . container port`; the
//!   DNAT rules look the destination up in them. Adding container N+1 adds its elements and
//!   touches nobody else's, so its cost does not grow with N. A host port already in a map
//!   makes `add element` fail with "File exists": that is the "already published" check.
//! - Removing elements is written as `add` then `delete` of the same element, which succeeds
//!   whether or not the element is still there (after an `nft flush ruleset`, say).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rpod_wire::PortMapping;
use serde::{Deserialize, Serialize};

use crate::driver::Isolate;
use crate::error::{msg, Result};

pub const TABLE: &str = "netd";

/// What the firewall needs to know about one bridge network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetRules {
    pub id: String,
    pub name: String,
    pub bridge: String,
    pub subnets: Vec<IpNet>,
    pub gateways: Vec<IpAddr>,
    pub internal: bool,
    pub isolate: Isolate,
    pub dns: bool,
}

/// One map element: `map { key : value }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Elem {
    pub map: String,
    pub key: String,
    pub value: String,
}

/// A container's published ports on one network, as stored for reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortRules {
    pub network_id: String,
    pub container_id: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub ports: Vec<PortMapping>,
}

const PROTOS: [&str; 3] = ["tcp", "udp", "sctp"];

impl PortRules {
    /// The map elements for these ports; validates protocols, ranges and addresses.
    pub fn elements(&self) -> Result<Vec<Elem>> {
        let mut out: Vec<Elem> = Vec::new();
        for pm in &self.ports {
            let proto = pm.protocol.as_str();
            if !PROTOS.contains(&proto) {
                return Err(msg(format!("unsupported port protocol {proto:?} (tcp, udp or sctp)")));
            }
            if pm.host_port == 0 || pm.container_port == 0 {
                return Err(msg(format!("invalid port mapping {}:{}: port 0", pm.host_port, pm.container_port)));
            }
            let n = u32::from(pm.len());
            if u32::from(pm.host_port) + n - 1 > 65535 || u32::from(pm.container_port) + n - 1 > 65535 {
                return Err(msg(format!("port range {}+{} exceeds 65535", pm.host_port, pm.range)));
            }
            // (map, host address or None)
            let mut targets: Vec<(&str, Option<IpAddr>)> = Vec::new();
            match pm.host_ip.as_str() {
                "" => {
                    if self.v4.is_some() {
                        targets.push(("pf4", None));
                    }
                    if self.v6.is_some() {
                        targets.push(("pf6", None));
                    }
                }
                "0.0.0.0" => targets.push(("pf4", None)),
                "::" => targets.push(("pf6", None)),
                s => {
                    let ip: IpAddr = s.parse().map_err(|_| msg(format!("invalid host_ip {s:?}")))?;
                    targets.push((if ip.is_ipv4() { "pf4a" } else { "pf6a" }, Some(ip)));
                }
            }
            for (map, host) in targets {
                let ctr: IpAddr =
                    if map.starts_with("pf4") { self.v4.map(IpAddr::V4) } else { self.v6.map(IpAddr::V6) }.ok_or_else(
                        || {
                            msg(format!(
                                "cannot publish port {} on {}: the container has no address of that family",
                                pm.host_port, pm.host_ip
                            ))
                        },
                    )?;
                for i in 0..n as u16 {
                    let mut key = String::new();
                    if let Some(h) = host {
                        let _ = write!(key, "{h} . ");
                    }
                    let _ = write!(key, "{proto} . {}", pm.host_port + i);
                    let e = Elem { map: map.into(), key, value: format!("{ctr} . {}", pm.container_port + i) };
                    if out.iter().any(|o| o.map == e.map && o.key == e.key) {
                        return Err(msg(format!("host port {}/{proto} is given twice", pm.host_port + i)));
                    }
                    out.push(e);
                }
            }
        }
        Ok(out)
    }
}

fn fam(n: &IpNet) -> &'static str {
    if n.addr().is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

/// The table, chains, maps and every per-network rule, flushed and rewritten.
pub fn skeleton(nets: &[NetRules], dns_port: u16) -> String {
    let t = TABLE;
    let mut s = String::with_capacity(4096);
    let _ = writeln!(s, "add table inet {t}");
    for (c, def) in [
        ("FORWARD", "type filter hook forward priority filter; policy accept;"),
        ("INPUT", "type filter hook input priority filter; policy accept;"),
        ("POSTROUTING", "type nat hook postrouting priority srcnat; policy accept;"),
        ("PREROUTING", "type nat hook prerouting priority dstnat; policy accept;"),
        ("OUTPUT", "type nat hook output priority -100; policy accept;"),
    ] {
        let _ = writeln!(s, "add chain inet {t} {c} {{ {def} }}");
    }
    let _ = writeln!(s, "add chain inet {t} HOSTPORT-DNAT");
    for (m, ty) in [
        ("pf4", "inet_proto . inet_service : ipv4_addr . inet_service"),
        ("pf4a", "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service"),
        ("pf6", "inet_proto . inet_service : ipv6_addr . inet_service"),
        ("pf6a", "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service"),
    ] {
        let _ = writeln!(s, "add map inet {t} {m} {{ type {ty}; }}");
    }
    for c in ["FORWARD", "INPUT", "POSTROUTING", "PREROUTING", "OUTPUT", "HOSTPORT-DNAT"] {
        let _ = writeln!(s, "flush chain inet {t} {c}");
    }
    let mut rule = |chain: &str, r: &str| {
        let _ = writeln!(s, "add rule inet {t} {chain} {r}");
    };

    // FORWARD: drops first (internal, isolation), then what is allowed.
    rule("FORWARD", "ct state invalid drop");
    for n in nets.iter().filter(|n| n.internal) {
        let b = &n.bridge;
        rule("FORWARD", &format!("iifname \"{b}\" oifname != \"{b}\" drop"));
        rule("FORWARD", &format!("oifname \"{b}\" iifname != \"{b}\" drop"));
    }
    for n in nets.iter().filter(|n| n.isolate != Isolate::No && !n.internal) {
        for o in nets.iter().filter(|o| o.bridge != n.bridge) {
            if n.isolate == Isolate::Strict || o.isolate != Isolate::No {
                rule("FORWARD", &format!("iifname \"{}\" oifname \"{}\" drop", n.bridge, o.bridge));
            }
        }
    }
    for n in nets.iter().filter(|n| !n.internal) {
        for sn in &n.subnets {
            rule("FORWARD", &format!("{} daddr {sn} ct state established,related accept", fam(sn)));
        }
        rule("FORWARD", &format!("oifname \"{}\" ct status dnat accept", n.bridge));
        for sn in &n.subnets {
            rule("FORWARD", &format!("{} saddr {sn} accept", fam(sn)));
        }
    }

    // INPUT: let containers reach the DNS helper on hosts whose input policy drops.
    for n in nets.iter().filter(|n| n.dns) {
        let ports = if dns_port == 53 { "53".to_string() } else { format!("{{ 53, {dns_port} }}") };
        rule("INPUT", &format!("iifname \"{}\" meta l4proto {{ tcp, udp }} th dport {ports} accept", n.bridge));
    }

    // POSTROUTING: masquerade to the outside; hairpin and localhost to published ports.
    for n in nets.iter().filter(|n| !n.internal) {
        let b = &n.bridge;
        for sn in &n.subnets {
            let (f, mc) = if sn.addr().is_ipv4() { ("ip", "224.0.0.0/4") } else { ("ip6", "ff00::/8") };
            rule("POSTROUTING", &format!("{f} saddr {sn} {f} daddr != {sn} {f} daddr != {mc} masquerade"));
            rule("POSTROUTING", &format!("oifname \"{b}\" ct status dnat {f} saddr {sn} masquerade"));
        }
        if n.subnets.iter().any(|sn| sn.addr().is_ipv4()) {
            rule("POSTROUTING", &format!("oifname \"{b}\" ct status dnat ip saddr 127.0.0.0/8 masquerade"));
        }
    }

    // PREROUTING / OUTPUT: DNS on another port, then published ports.
    if dns_port != 53 {
        for n in nets.iter().filter(|n| n.dns) {
            for gw in &n.gateways {
                let (f, to) = match gw {
                    IpAddr::V4(g) => ("ip", format!("{g}:{dns_port}")),
                    IpAddr::V6(g) => ("ip6", format!("[{g}]:{dns_port}")),
                };
                rule("PREROUTING", &format!("{f} daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 dnat {f} to {to}"));
            }
        }
    }
    rule("PREROUTING", "fib daddr type local jump HOSTPORT-DNAT");
    rule("OUTPUT", "fib daddr type local jump HOSTPORT-DNAT");
    rule("HOSTPORT-DNAT", "meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pf4a");
    rule("HOSTPORT-DNAT", "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pf4");
    rule("HOSTPORT-DNAT", "meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pf6a");
    rule("HOSTPORT-DNAT", "meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @pf6");
    s
}

fn elements(s: &mut String, verb: &str, elems: &[Elem], with_value: bool) {
    for map in ["pf4", "pf4a", "pf6", "pf6a"] {
        let items: Vec<String> = elems
            .iter()
            .filter(|e| e.map == map)
            .map(|e| if with_value { format!("{} : {}", e.key, e.value) } else { e.key.clone() })
            .collect();
        if !items.is_empty() {
            let _ = writeln!(s, "{verb} element inet {TABLE} {map} {{ {} }}", items.join(", "));
        }
    }
}

/// Only element changes: `add` added, `remove` removed (each as add-then-delete, so a removal
/// succeeds whether or not the element is still there). Empty when there is nothing to do.
pub fn elements_batch(add: &[Elem], remove: &[Elem]) -> String {
    let mut s = String::new();
    elements(&mut s, "add", add, true);
    elements(&mut s, "add", remove, true);
    elements(&mut s, "delete", remove, false);
    s
}

/// The batch for a setup: skeleton for `nets` (which include the container's networks) plus
/// the container's elements.
pub fn setup_batch(nets: &[NetRules], dns_port: u16, add: &[Elem]) -> String {
    let mut s = skeleton(nets, dns_port);
    s.push_str(&elements_batch(add, &[]));
    s
}

/// The batch for a teardown: remove the elements, then either rewrite the skeleton for the
/// networks still in use or, when none is left, delete the table.
pub fn teardown_batch(nets: &[NetRules], dns_port: u16, remove: &[Elem]) -> String {
    if nets.is_empty() {
        return format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    }
    let mut s = skeleton(nets, dns_port);
    s.push_str(&elements_batch(&[], remove));
    s
}

/// The batch for `firewall-reload`: everything from state, maps refilled from scratch.
pub fn reload_batch(nets: &[NetRules], dns_port: u16, all: &[Elem]) -> String {
    if nets.is_empty() {
        return format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    }
    let mut s = skeleton(nets, dns_port);
    for m in ["pf4", "pf4a", "pf6", "pf6a"] {
        let _ = writeln!(s, "flush map inet {TABLE} {m}");
    }
    elements(&mut s, "add", all, true);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, br: &str, sn: &str, iso: Isolate, internal: bool) -> NetRules {
        let subnet: IpNet = sn.parse().unwrap();
        let gw = match subnet.network() {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) + 1)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) + 1)),
        };
        NetRules {
            id: format!("{name}-id"),
            name: name.into(),
            bridge: br.into(),
            subnets: vec![subnet],
            gateways: vec![gw],
            internal,
            isolate: iso,
            dns: true,
        }
    }

    fn pm(host_ip: &str, hp: u16, cp: u16, range: u16, proto: &str) -> PortMapping {
        PortMapping { host_ip: host_ip.into(), container_port: cp, host_port: hp, range, protocol: proto.into() }
    }

    #[test]
    fn golden_one_network_with_ports() {
        let nets = [net("a", "br-a", "10.1.0.0/24", Isolate::No, false)];
        let pr = PortRules {
            network_id: "a-id".into(),
            container_id: "c".into(),
            v4: Some("10.1.0.2".parse().unwrap()),
            v6: None,
            ports: vec![pm("", 8080, 80, 2, "tcp"), pm("127.0.0.1", 9000, 90, 1, "udp")],
        };
        let got = setup_batch(&nets, 5353, &pr.elements().unwrap());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/firewall/testdata/one_network.nft");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).unwrap();
        assert_eq!(got, want, "\n--- got ---\n{got}");
    }

    #[test]
    fn isolation_and_internal() {
        let nets = [
            net("a", "br-a", "10.1.0.0/24", Isolate::Yes, false),
            net("b", "br-b", "10.2.0.0/24", Isolate::Yes, false),
            net("c", "br-c", "10.3.0.0/24", Isolate::No, false),
            net("d", "br-d", "10.4.0.0/24", Isolate::Strict, false),
            net("i", "br-i", "10.5.0.0/24", Isolate::No, true),
        ];
        let s = skeleton(&nets, 53);
        assert!(s.contains("iifname \"br-a\" oifname \"br-b\" drop"));
        assert!(s.contains("iifname \"br-b\" oifname \"br-a\" drop"));
        assert!(!s.contains("iifname \"br-a\" oifname \"br-c\" drop"));
        assert!(s.contains("iifname \"br-d\" oifname \"br-c\" drop"));
        assert!(s.contains("iifname \"br-i\" oifname != \"br-i\" drop"));
        assert!(!s.contains("saddr 10.5.0.0/24 ip daddr"), "internal networks are not masqueraded");
        assert!(!s.contains("dport 53 dnat"), "no DNS redirect on port 53");
    }

    #[test]
    fn port_validation() {
        let mut pr = PortRules {
            network_id: "n".into(),
            container_id: "c".into(),
            v4: Some("10.1.0.2".parse().unwrap()),
            v6: None,
            ports: vec![pm("", 65535, 80, 2, "tcp")],
        };
        assert!(pr.elements().is_err());
        pr.ports = vec![pm("", 80, 80, 1, "icmp")];
        assert!(pr.elements().is_err());
        pr.ports = vec![pm("::", 80, 80, 1, "tcp")];
        assert!(pr.elements().unwrap_err().to_string().contains("no address of that family"));
        pr.ports = vec![pm("", 80, 80, 1, "tcp"), pm("0.0.0.0", 80, 81, 1, "tcp")];
        assert!(pr.elements().unwrap_err().to_string().contains("given twice"));
        pr.v6 = Some("fd00::2".parse().unwrap());
        pr.ports = vec![pm("", 80, 80, 0, "sctp")];
        let e = pr.elements().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].value, "fd00::2 . 80");
    }

    #[test]
    fn teardown_of_last_network_deletes_table() {
        assert_eq!(teardown_batch(&[], 53, &[]), "add table inet netd\ndelete table inet netd\n");
    }
}
