//! The lookup table: a pure structure built from the parsed per-network config files.
//!
//! Resolution is scoped as aardvark-dns does it: an asker sees the names of every network it
//! belongs to (a container IP listed in that network's file); an asker that belongs to no
//! network (e.g. the host) sees only the network(s) of the address it asked.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rpod_wire::dnsconfig::{Entry, NetworkConfig};

/// The search domain aardvark-dns serves (without dots at either end).
pub const SEARCH_DOMAIN: &str = "dns.podman";
/// At most this many upstream servers are tried for one query (as aardvark-dns HEAD).
pub const MAX_UPSTREAMS: usize = 3;

/// One network as loaded from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub internal: bool,
    pub config: NetworkConfig,
}

/// The record types the table answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    A,
    Aaaa,
    Ptr,
    /// Any other type: never answered from the table.
    Other,
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A/AAAA answer from the table. Empty means the name exists but has no address of that
    /// family (NOERROR, no data).
    Addrs(Vec<IpAddr>),
    /// PTR answer: the container's names (without the trailing dot).
    Names(Vec<String>),
    /// Not known and must not be forwarded (search domain, internal network, no upstream).
    NxDomain,
    /// Not known: forward to these servers, in order.
    Forward(Vec<IpAddr>),
}

/// (network index, entry index)
type Slot = (usize, usize);

/// The lookup table.
#[derive(Debug, Default)]
pub struct Table {
    networks: Vec<Network>,
    /// lower-cased name -> entries carrying it
    names: HashMap<String, Vec<Slot>>,
    /// container IP -> entries carrying it
    by_ip: HashMap<IpAddr, Vec<Slot>>,
    /// container id -> networks it is on
    by_id: HashMap<String, Vec<usize>>,
    /// bind IP -> networks listening on it
    by_bind: HashMap<IpAddr, Vec<usize>>,
    /// host `/etc/resolv.conf` name servers
    host_servers: Vec<IpAddr>,
    /// never forward anything (env `AARDVARK_NO_PROXY`)
    no_proxy: bool,
}

impl Table {
    /// Builds the table from loaded networks and the host's name servers.
    pub fn new(networks: Vec<Network>, host_servers: Vec<IpAddr>) -> Self {
        let mut names: HashMap<String, Vec<Slot>> = HashMap::new();
        let mut by_ip: HashMap<IpAddr, Vec<Slot>> = HashMap::new();
        let mut by_bind: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
        for (n, net) in networks.iter().enumerate() {
            for ip in &net.config.bind_ips {
                let v = by_bind.entry(*ip).or_default();
                if !v.contains(&n) {
                    v.push(n);
                }
            }
            for (e, entry) in net.config.entries.iter().enumerate() {
                let v = by_id.entry(entry.container_id.clone()).or_default();
                if !v.contains(&n) {
                    v.push(n);
                }
                for name in &entry.names {
                    let v = names.entry(name.to_lowercase()).or_default();
                    if !v.contains(&(n, e)) {
                        v.push((n, e));
                    }
                }
                for ip in entry.v4.iter().map(|a| IpAddr::V4(*a)).chain(entry.v6.iter().map(|a| IpAddr::V6(*a))) {
                    let v = by_ip.entry(ip).or_default();
                    if !v.contains(&(n, e)) {
                        v.push((n, e));
                    }
                }
            }
        }
        Table { networks, names, by_ip, by_id, by_bind, host_servers, no_proxy: false }
    }

    /// Never forward (unknown names get NXDOMAIN).
    pub fn with_no_proxy(mut self, no_proxy: bool) -> Self {
        self.no_proxy = no_proxy;
        self
    }

    pub fn networks(&self) -> &[Network] {
        &self.networks
    }

    /// Every address to listen on, sorted and deduplicated.
    pub fn bind_ips(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.by_bind.keys().copied().collect();
        v.sort();
        v
    }

    fn entry(&self, (n, e): Slot) -> &Entry {
        &self.networks[n].config.entries[e]
    }

    /// The networks whose names the asker sees, given the address it asked: every network
    /// of the container(s) the asker's IP belongs to (a container on two networks sees both,
    /// whichever of its addresses it asks from).
    pub fn scope(&self, asker: IpAddr, listen: IpAddr) -> Vec<usize> {
        let mut nets: Vec<usize> = Vec::new();
        if let Some(slots) = self.by_ip.get(&asker) {
            for &slot in slots {
                for n in self.by_id.get(&self.entry(slot).container_id).into_iter().flatten() {
                    if !nets.contains(n) {
                        nets.push(*n);
                    }
                }
            }
        }
        if nets.is_empty() {
            if let Some(v) = self.by_bind.get(&listen) {
                nets.extend(v.iter().copied());
            }
        }
        nets
    }

    /// Resolves one query.
    ///
    /// `asker` is the source address of the query, `listen` the local address it was sent
    /// to (a bind IP), `qname` the query name as sent (any case, with or without a trailing
    /// dot), `kind` the record type.
    pub fn resolve(&self, asker: IpAddr, listen: IpAddr, qname: &str, kind: Kind) -> Resolution {
        let scope = self.scope(asker, listen);
        let lower = qname.trim_end_matches('.').to_ascii_lowercase();
        match kind {
            Kind::A | Kind::Aaaa => {
                let short = strip_search_domain(&lower);
                if let Some(slots) = self.names.get(short) {
                    let mut found = false;
                    let mut out: Vec<IpAddr> = Vec::new();
                    for &slot in slots.iter().filter(|(n, _)| scope.contains(n)) {
                        found = true;
                        let e = self.entry(slot);
                        let ips: Vec<IpAddr> = if kind == Kind::A {
                            e.v4.iter().map(|a| IpAddr::V4(*a)).collect()
                        } else {
                            e.v6.iter().map(|a| IpAddr::V6(*a)).collect()
                        };
                        for ip in ips {
                            if !out.contains(&ip) {
                                out.push(ip);
                            }
                        }
                    }
                    if found {
                        return Resolution::Addrs(out);
                    }
                }
            }
            Kind::Ptr => {
                if let Some(ip) = parse_reverse(&lower) {
                    let mut out: Vec<String> = Vec::new();
                    for &slot in self.by_ip.get(&ip).into_iter().flatten().filter(|(n, _)| scope.contains(n)) {
                        for name in &self.entry(slot).names {
                            if !out.contains(name) {
                                out.push(name.clone());
                            }
                        }
                    }
                    if !out.is_empty() {
                        return Resolution::Names(out);
                    }
                }
            }
            Kind::Other => {}
        }
        if in_search_domain(&lower) || self.no_proxy {
            return Resolution::NxDomain;
        }
        // internal network: the network(s) of the address asked decide
        if self.by_bind.get(&listen).is_some_and(|v| v.iter().any(|n| self.networks[*n].internal)) {
            return Resolution::NxDomain;
        }
        let servers = self.upstreams(asker, listen, &scope);
        if servers.is_empty() {
            Resolution::NxDomain
        } else {
            Resolution::Forward(servers)
        }
    }

    /// The servers to forward to: the asker's own (container) servers if it has any, else its
    /// network's, else the host's; at most [`MAX_UPSTREAMS`], never one of our own addresses.
    pub fn upstreams(&self, asker: IpAddr, listen: IpAddr, scope: &[usize]) -> Vec<IpAddr> {
        let listen_nets: &[usize] = self.by_bind.get(&listen).map(Vec::as_slice).unwrap_or(&[]);
        // prefer the entries/networks of the address asked, then the rest of the scope
        let mut order: Vec<usize> = listen_nets.iter().copied().filter(|n| scope.contains(n)).collect();
        for n in scope.iter().chain(listen_nets) {
            if !order.contains(n) {
                order.push(*n);
            }
        }
        let mut container: Vec<IpAddr> = Vec::new();
        if let Some(slots) = self.by_ip.get(&asker) {
            for n in &order {
                for &slot in slots.iter().filter(|(sn, _)| sn == n) {
                    container.extend(self.entry(slot).dns_servers.iter().copied());
                }
            }
        }
        let mut network: Vec<IpAddr> = Vec::new();
        for n in &order {
            network.extend(self.networks[*n].config.network_dns_servers.iter().copied());
        }
        let chosen = if !container.is_empty() {
            container
        } else if !network.is_empty() {
            network
        } else {
            self.host_servers.clone()
        };
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in chosen {
            // never forward to ourselves (a DNS loop)
            if self.by_bind.contains_key(&ip) || out.contains(&ip) {
                continue;
            }
            out.push(ip);
            if out.len() == MAX_UPSTREAMS {
                break;
            }
        }
        out
    }
}

/// Strips a trailing `.dns.podman` (the name is already lower-cased without a trailing dot).
fn strip_search_domain(name: &str) -> &str {
    name.strip_suffix(SEARCH_DOMAIN).and_then(|s| s.strip_suffix('.')).filter(|s| !s.is_empty()).unwrap_or(name)
}

/// True for `dns.podman` and names under it.
fn in_search_domain(name: &str) -> bool {
    name == SEARCH_DOMAIN || name.strip_suffix(SEARCH_DOMAIN).is_some_and(|s| s.ends_with('.'))
}

/// Parses an `in-addr.arpa` / `ip6.arpa` name (lower-case, no trailing dot) into the address.
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut o = [0u8; 4];
        for (i, p) in parts.iter().rev().enumerate() {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            o[i] = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 32 {
            return None;
        }
        let mut v: u128 = 0;
        for p in parts.iter().rev() {
            if p.len() != 1 {
                return None;
            }
            let d = u128::from(char::from(p.as_bytes()[0]).to_digit(16)?);
            v = (v << 4) | d;
        }
        return Some(IpAddr::V6(Ipv6Addr::from(v)));
    }
    None
}

/// Parses the `nameserver` lines of a resolv.conf. Link-local IPv6 servers with a zone
/// (`fe80::1%eth0`) are skipped: a zone cannot be carried in an `IpAddr`.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if f.next() != Some("nameserver") {
            continue;
        }
        if let Some(Ok(ip)) = f.next().map(str::parse::<IpAddr>) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(name: &str, internal: bool, text: &str) -> Network {
        Network { name: name.into(), internal, config: NetworkConfig::parse(text).unwrap() }
    }

    /// net1 (10.89.1.0/24, dual stack, network servers 9.9.9.9), net2 (10.89.2.0/24), int (internal)
    fn table() -> Table {
        let n1 = net(
            "net1",
            false,
            "10.89.1.1,fd10::1 9.9.9.9\n\
             c1 10.89.1.2 fd10::2 web,Alias1 8.8.8.8,1.1.1.1\n\
             c2 10.89.1.3  db\n\
             c3 10.89.1.4  both\n",
        );
        let n2 = net(
            "net2",
            false,
            "10.89.2.1\n\
             c3 10.89.2.4  both\n\
             c4 10.89.2.5  other,web2\n",
        );
        let n3 = net("int", true, "10.89.3.1\nc5 10.89.3.2  lonely\n");
        Table::new(vec![n1, n2, n3], vec![ip("192.168.0.1"), ip("fe80::1")])
    }

    const G1: &str = "10.89.1.1";
    const G2: &str = "10.89.2.1";
    const G3: &str = "10.89.3.1";

    fn a(t: &Table, asker: &str, listen: &str, name: &str) -> Resolution {
        t.resolve(ip(asker), ip(listen), name, Kind::A)
    }

    #[test]
    fn a_and_aaaa_within_network() {
        let t = table();
        assert_eq!(a(&t, "10.89.1.3", G1, "web"), Resolution::Addrs(vec![ip("10.89.1.2")]));
        assert_eq!(t.resolve(ip("10.89.1.3"), ip(G1), "web", Kind::Aaaa), Resolution::Addrs(vec![ip("fd10::2")]));
        // a name with no v6 address: NOERROR, no data, not a forward
        assert_eq!(t.resolve(ip("10.89.1.2"), ip(G1), "db", Kind::Aaaa), Resolution::Addrs(vec![]));
    }

    #[test]
    fn case_suffix_and_trailing_dot() {
        let t = table();
        let want = Resolution::Addrs(vec![ip("10.89.1.2")]);
        for q in ["web", "WEB", "web.", "web.dns.podman", "Web.DNS.Podman.", "alias1", "ALIAS1.dns.podman."] {
            assert_eq!(a(&t, "10.89.1.3", G1, q), want, "{q}");
        }
        // the search domain itself and other suffixes are not container names
        assert_eq!(a(&t, "10.89.1.3", G1, "dns.podman."), Resolution::NxDomain);
        assert!(matches!(a(&t, "10.89.1.3", G1, "web.example.com."), Resolution::Forward(_)));
        assert!(matches!(a(&t, "10.89.1.3", G1, "webdns.podman."), Resolution::Forward(_)));
    }

    #[test]
    fn isolation_between_networks() {
        let t = table();
        // c4 on net2 does not see web on net1, even asking net1's gateway
        assert_eq!(a(&t, "10.89.2.5", G1, "web.dns.podman"), Resolution::NxDomain);
        assert!(matches!(a(&t, "10.89.2.5", G2, "web"), Resolution::Forward(_)));
        // c1 on net1 does not see other
        assert_eq!(a(&t, "10.89.1.2", G1, "other.dns.podman."), Resolution::NxDomain);
    }

    #[test]
    fn container_on_two_networks_sees_both() {
        let t = table();
        assert_eq!(a(&t, "10.89.1.4", G1, "other"), Resolution::Addrs(vec![ip("10.89.2.5")]));
        assert_eq!(a(&t, "10.89.2.4", G2, "web"), Resolution::Addrs(vec![ip("10.89.1.2")]));
        // its own name resolves to both addresses for an asker on both networks
        assert_eq!(a(&t, "10.89.1.4", G1, "both"), Resolution::Addrs(vec![ip("10.89.1.4"), ip("10.89.2.4")]));
        // only the net2 address for an asker on net2 only
        assert_eq!(a(&t, "10.89.2.5", G2, "both"), Resolution::Addrs(vec![ip("10.89.2.4")]));
    }

    #[test]
    fn unknown_asker_sees_the_network_asked() {
        let t = table();
        assert_eq!(a(&t, "10.0.0.99", G1, "web"), Resolution::Addrs(vec![ip("10.89.1.2")]));
        assert_eq!(a(&t, "10.0.0.99", "fd10::1", "web"), Resolution::Addrs(vec![ip("10.89.1.2")]));
        assert_eq!(a(&t, "10.0.0.99", G2, "web.dns.podman"), Resolution::NxDomain);
        assert_eq!(a(&t, "10.0.0.99", G2, "other"), Resolution::Addrs(vec![ip("10.89.2.5")]));
    }

    #[test]
    fn ptr_v4_and_v6_scoped() {
        let t = table();
        assert_eq!(
            t.resolve(ip("10.89.1.3"), ip(G1), "2.1.89.10.in-addr.arpa.", Kind::Ptr),
            Resolution::Names(vec!["web".into(), "alias1".into()])
        );
        let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.d.f.IP6.ARPA.";
        assert_eq!(
            t.resolve(ip("10.89.1.3"), ip(G1), v6, Kind::Ptr),
            Resolution::Names(vec!["web".into(), "alias1".into()])
        );
        // out of scope: forwarded, not answered
        assert!(matches!(
            t.resolve(ip("10.89.2.5"), ip(G2), "2.1.89.10.in-addr.arpa", Kind::Ptr),
            Resolution::Forward(_)
        ));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(parse_reverse("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
        assert_eq!(parse_reverse("3.2.1.in-addr.arpa"), None);
        assert_eq!(parse_reverse("256.3.2.1.in-addr.arpa"), None);
        assert_eq!(parse_reverse("+4.3.2.1.in-addr.arpa"), None);
        assert_eq!(parse_reverse("1.0.ip6.arpa"), None);
        assert_eq!(parse_reverse("example.com"), None);
        let full = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa";
        assert_eq!(parse_reverse(full), Some(ip("::1")));
        assert_eq!(parse_reverse(&full.replace("1.0.0", "g.0.0")), None);
    }

    #[test]
    fn upstream_precedence() {
        let t = table();
        // container's own servers first
        assert_eq!(a(&t, "10.89.1.2", G1, "example.com"), Resolution::Forward(vec![ip("8.8.8.8"), ip("1.1.1.1")]));
        // then the network's
        assert_eq!(a(&t, "10.89.1.3", G1, "example.com"), Resolution::Forward(vec![ip("9.9.9.9")]));
        // then the host's
        assert_eq!(a(&t, "10.89.2.5", G2, "example.com"), Resolution::Forward(vec![ip("192.168.0.1"), ip("fe80::1")]));
        // other types are forwarded too, even for container names
        assert_eq!(t.resolve(ip("10.89.1.3"), ip(G1), "web", Kind::Other), Resolution::Forward(vec![ip("9.9.9.9")]));
    }

    #[test]
    fn upstreams_capped_and_no_loops() {
        let n = net("n", false, "10.1.0.1 10.1.0.1,1.1.1.1,1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4\n");
        let t = Table::new(vec![n], vec![]);
        assert_eq!(
            a(&t, "10.1.0.9", "10.1.0.1", "x.org"),
            Resolution::Forward(vec![ip("1.1.1.1"), ip("2.2.2.2"), ip("3.3.3.3")])
        );
        // no upstream at all: NXDOMAIN
        let t = Table::new(vec![net("n", false, "10.1.0.1\n")], vec![]);
        assert_eq!(a(&t, "10.1.0.9", "10.1.0.1", "x.org"), Resolution::NxDomain);
    }

    #[test]
    fn search_domain_and_internal_never_forwarded() {
        let t = table();
        assert_eq!(a(&t, "10.89.1.3", G1, "nothere.dns.podman"), Resolution::NxDomain);
        assert_eq!(t.resolve(ip("10.89.1.3"), ip(G1), "x.dns.podman.", Kind::Other), Resolution::NxDomain);
        assert_eq!(a(&t, "10.89.3.2", G3, "lonely"), Resolution::Addrs(vec![ip("10.89.3.2")]));
        assert_eq!(a(&t, "10.89.3.2", G3, "example.com"), Resolution::NxDomain);
        let t = table().with_no_proxy(true);
        assert_eq!(a(&t, "10.89.1.3", G1, "example.com"), Resolution::NxDomain);
    }

    #[test]
    fn bind_ips_and_empty_table() {
        let t = table();
        assert_eq!(t.bind_ips(), vec![ip(G1), ip(G2), ip(G3), ip("fd10::1")]);
        let t = Table::default();
        assert!(t.bind_ips().is_empty());
        assert_eq!(a(&t, "10.0.0.1", "10.0.0.2", "x"), Resolution::NxDomain);
    }

    #[test]
    fn resolv_conf() {
        let text = "# c\nsearch x\nnameserver 1.1.1.1\nnameserver  fe80::1%eth0\nnameserver ::1\nnameserver 1.1.1.1\nnameserver bogus\n";
        assert_eq!(parse_resolv_conf(text), vec![ip("1.1.1.1"), ip("::1")]);
    }
}
