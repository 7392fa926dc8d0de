//! The subcommands. Setup is transactional: everything is validated first, then each network
//! is set up; on any failure what was done is undone in reverse order. Teardown carries on
//! past errors and reports them all.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rpod_wire::dnsconfig::Entry;
use rpod_wire::{Network, NetworkOptions, PerNetworkOptions, StatusBlock};

use crate::dns::Dns;
use crate::driver::bridge::Bridge;
use crate::driver::macvlan::Macvlan;
use crate::error::{msg, Context, Errors, Result};
use crate::firewall::rules::{self, Elem, NetRules, PortRules};
use crate::firewall::Firewall;
use crate::netns::NetNs;
use crate::nl::Netlink;
use crate::state::State;

/// Global options shared by the subcommands.
pub struct Opts {
    pub config: PathBuf,
    pub rootless: bool,
    pub aardvark: PathBuf,
    pub firewall: Box<dyn Firewall>,
    pub dns_port: u16,
}

/// The default DNS helper: `dnsd` beside netd, else netavark's upstream default path, then
/// Debian's.
pub fn default_aardvark() -> PathBuf {
    if let Some(dnsd) = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("dnsd"))) {
        if dnsd.is_file() {
            return dnsd;
        }
    }
    for p in ["/usr/libexec/podman/aardvark-dns", "/usr/lib/podman/aardvark-dns"] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    "/usr/libexec/podman/aardvark-dns".into()
}

/// `NETAVARK_DNS_PORT`, default 53.
pub fn dns_port() -> Result<u16> {
    match std::env::var("NETAVARK_DNS_PORT") {
        Ok(v) if !v.is_empty() => {
            v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| msg(format!("Invalid NETAVARK_DNS_PORT {v}")))
        }
        _ => Ok(53),
    }
}

enum Plan {
    Bridge(Bridge),
    Macvlan(Macvlan),
}

struct Planned<'a> {
    name: &'a str,
    net: &'a Network,
    per: &'a PerNetworkOptions,
    plan: Plan,
}

fn plan<'a>(o: &'a NetworkOptions) -> Result<Vec<Planned<'a>>> {
    if o.container_id.is_empty() || o.container_id.contains(['/', ' ', '\n']) {
        return Err(msg(format!("invalid container id {:?}", o.container_id)));
    }
    let resolved = o.resolved().map_err(msg)?;
    let mut out = Vec::new();
    let mut ifnames = Vec::new();
    for ((name, _), (per, net)) in o.networks.iter().zip(resolved) {
        let plan = match net.driver.as_str() {
            "bridge" => Plan::Bridge(Bridge::validate(net, per).with_ctx(|| format!("network {name}"))?),
            "macvlan" | "ipvlan" => Plan::Macvlan(Macvlan::validate(net, per).with_ctx(|| format!("network {name}"))?),
            d => return Err(msg(format!("unknown network driver \"{d}\""))),
        };
        if ifnames.contains(&per.interface_name) {
            return Err(msg(format!("interface name {} is used by two networks", per.interface_name)));
        }
        ifnames.push(per.interface_name.clone());
        out.push(Planned { name, net, per, plan });
    }
    Ok(out)
}

fn net_rules(net: &Network, b: &Bridge) -> NetRules {
    NetRules {
        id: net.id.clone(),
        name: net.name.clone(),
        bridge: b.bridge.clone(),
        subnets: net.subnets().iter().map(|s| s.subnet.trunc()).collect(),
        gateways: net.subnets().iter().filter_map(|s| s.gateway).collect(),
        internal: net.internal,
        isolate: b.isolate,
        dns: net.dns_enabled,
    }
}

fn first_v4(b: &Bridge) -> Option<Ipv4Addr> {
    b.common.addrs.iter().find_map(|a| match a.ipnet.addr() {
        IpAddr::V4(v) => Some(v),
        _ => None,
    })
}
fn first_v6(b: &Bridge) -> Option<Ipv6Addr> {
    b.common.addrs.iter().find_map(|a| match a.ipnet.addr() {
        IpAddr::V6(v) => Some(v),
        _ => None,
    })
}

/// The published ports go to the first non-internal bridge network with addresses.
fn port_rules(o: &NetworkOptions, plans: &[Planned]) -> Result<Option<PortRules>> {
    let ports = o.port_mappings.clone().unwrap_or_default();
    if ports.is_empty() {
        return Ok(None);
    }
    for p in plans {
        if let Plan::Bridge(b) = &p.plan {
            if p.net.internal || b.common.addrs.is_empty() {
                continue;
            }
            let pr = PortRules {
                network_id: p.net.id.clone(),
                container_id: o.container_id.clone(),
                v4: first_v4(b),
                v6: first_v6(b),
                ports,
            };
            pr.elements()?;
            return Ok(Some(pr));
        }
    }
    tracing::warn!("port mappings given but no bridge network can carry them");
    Ok(None)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().ctx("start runtime")
}

fn dns_entry(o: &NetworkOptions, b: &Bridge, per: &PerNetworkOptions) -> Entry {
    let mut names = vec![o.container_name.clone()];
    names.extend(per.aliases.clone().unwrap_or_default());
    Entry {
        container_id: o.container_id.clone(),
        v4: b
            .common
            .addrs
            .iter()
            .filter_map(|a| if let IpAddr::V4(v) = a.ipnet.addr() { Some(v) } else { None })
            .collect(),
        v6: b
            .common
            .addrs
            .iter()
            .filter_map(|a| if let IpAddr::V6(v) = a.ipnet.addr() { Some(v) } else { None })
            .collect(),
        names,
        dns_servers: o.dns_servers.clone().unwrap_or_default(),
    }
}

/// Explains an nft "File exists" on setup: which host port is taken, and by what.
fn explain_conflict(fw: &dyn Firewall, elems: &[Elem]) -> Option<String> {
    for e in elems {
        let listing = fw.list_map(&e.map).ok()?;
        let needle = format!("{} : ", e.key);
        let Some(at) = listing.find(&needle) else { continue };
        let rest = &listing[at + needle.len()..];
        let target = rest.split([',', '}', '\n']).next().unwrap_or("").trim().replace(" . ", ":");
        let parts: Vec<&str> = e.key.split(" . ").collect();
        let (port, proto) = (parts[parts.len() - 1], parts[parts.len() - 2]);
        let host = if parts.len() == 3 { format!("{}:", parts[0]) } else { String::new() };
        return Some(format!("host port {host}{port}/{proto} is already published (to {target})"));
    }
    None
}

pub fn setup(opts: &Opts, netns: &Path, o: &NetworkOptions) -> Result<BTreeMap<String, StatusBlock>> {
    let plans = plan(o)?;
    let ports = port_rules(o, &plans)?;
    let port_elems = match &ports {
        Some(p) => p.elements()?,
        None => Vec::new(),
    };
    let ctr_ns = NetNs::open(netns)?;
    let host_ns = NetNs::current()?;
    let state = State::new(&opts.config)?;
    let _lock = state.lock()?;
    let dns = Dns::new(&opts.config, &opts.aardvark, opts.dns_port);
    let rt = runtime()?;
    let fw = setup_firewall(opts, &state, &plans, ports.as_ref(), &port_elems)?;
    let r = rt.block_on(async {
        let host = Netlink::current()?;
        let ctr = Netlink::in_ns(&ctr_ns)?;
        let _ = crate::netns::within(&ctr_ns, || crate::sysctl::set_if_present("net/ipv6/conf/default/autoconf", "0"));
        // lo up in the container.
        if let Some(lo) = ctr.link_by_name("lo").await? {
            ctr.set_up(lo.index).await?;
        }
        let mut result = BTreeMap::new();
        let mut done: Vec<&Planned> = Vec::new();
        let r: Result<()> = async {
            for p in &plans {
                let iface = match &p.plan {
                    Plan::Bridge(b) => b.setup(&host, &ctr_ns, &ctr, &host_ns).await,
                    Plan::Macvlan(m) => m.setup(&host, &ctr_ns, &ctr).await,
                }
                .with_ctx(|| format!("network {}", p.name))?;
                done.push(p);
                let mut sb = StatusBlock::default();
                if let Plan::Bridge(b) = &p.plan {
                    if p.net.dns_enabled && dns.is_some() {
                        sb.dns_server_ips = b.gateways.iter().map(|g| g.addr()).collect();
                        sb.dns_search_domains = vec!["dns.podman".into()];
                    } else if let Some(s) = &o.dns_servers {
                        sb.dns_server_ips = s.clone();
                    }
                }
                sb.interfaces.insert(p.per.interface_name.clone(), iface);
                result.insert(p.name.to_string(), sb);
            }
            Ok(())
        }
        .await;
        let r = r.and_then(|()| setup_dns(dns.as_ref(), o, &plans));
        let r = r.and_then(|()| {
            for p in &plans {
                if let Plan::Bridge(_) = p.plan {
                    state.add_member(&p.net.id, &o.container_id)?;
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            // Roll back the links of every network set up so far.
            let mut errs = Errors::default();
            for p in done.iter().rev() {
                match &p.plan {
                    Plan::Bridge(b) => {
                        let _ = state.remove_member(&p.net.id, &o.container_id);
                        let last = !state.has_members(&p.net.id).unwrap_or(true);
                        b.teardown(&host, Some(&ctr), last, &mut errs).await;
                    }
                    Plan::Macvlan(m) => m.teardown(Some(&ctr), &mut errs).await,
                }
            }
            return Err(e);
        }
        Ok(result)
    });
    if r.is_err() {
        undo_firewall(opts, &state, fw, ports.as_ref(), &port_elems);
    }
    r
}

/// Applies a firewall change for the networks `nets` in use afterwards: elements added and
/// removed, and the per-network rules. When the rules in place are already the ones rendered
/// for `nets` (recorded in the state), only the elements change: rewriting rules makes the
/// kernel wait for an RCU grace period (about 15 ms on a small VM), adding elements does not.
/// If that short batch fails for a reason other than a conflict (the table was flushed away,
/// say), the full batch is applied instead.
fn apply_fw(opts: &Opts, state: &State, nets: &[NetRules], add: &[Elem], remove: &[Elem]) -> Result<()> {
    let sk = (!nets.is_empty()).then(|| rules::skeleton(nets, opts.dns_port));
    if sk.is_some() && state.skeleton() == sk {
        let batch = rules::elements_batch(add, remove);
        if batch.is_empty() {
            return Ok(());
        }
        match opts.firewall.apply(&batch) {
            Ok(()) => return Ok(()),
            Err(e) if e.to_string().contains("File exists") => return Err(e),
            Err(e) => tracing::info!("element-only batch failed ({e}); applying all rules"),
        }
    }
    let mut batch = match &sk {
        Some(s) => s.clone(),
        None => format!("add table inet {t}\ndelete table inet {t}\n", t = rules::TABLE),
    };
    if sk.is_some() {
        batch.push_str(&rules::elements_batch(add, remove));
    }
    opts.firewall.apply(&batch)?;
    if let Err(e) = state.put_skeleton(sk.as_deref()) {
        tracing::warn!("{e}");
    }
    Ok(())
}

/// What [`setup_firewall`] changed, for its rollback.
struct FwDone {
    nets: Vec<NetRules>,
    new_nets: Vec<String>,
}

/// Applies the firewall batch for the container's networks and ports and records them in
/// the state. Runs before any link is created, so a port conflict leaves the host untouched.
fn setup_firewall(
    opts: &Opts,
    state: &State,
    plans: &[Planned],
    ports: Option<&PortRules>,
    port_elems: &[Elem],
) -> Result<FwDone> {
    let mut nets = state.networks()?;
    let mut new_nets = Vec::new();
    for p in plans {
        if let Plan::Bridge(b) = &p.plan {
            let nr = net_rules(p.net, b);
            match nets.iter_mut().find(|n| n.id == nr.id) {
                Some(n) => *n = nr.clone(),
                None => {
                    nets.push(nr.clone());
                    new_nets.push(nr.id.clone());
                }
            }
            state.put_network(&nr)?;
        }
    }
    let done = FwDone { nets, new_nets };
    if let Err(e) = apply_fw(opts, state, &done.nets, port_elems, &[]) {
        for id in &done.new_nets {
            let _ = state.remove_network(id);
        }
        if e.to_string().contains("File exists") {
            if let Some(m) = explain_conflict(opts.firewall.as_ref(), port_elems) {
                return Err(msg(m));
            }
        }
        return Err(e).ctx("apply firewall rules");
    }
    if let Some(pr) = ports {
        state.put_ports(&pr.network_id, &pr.container_id, pr)?;
    }
    Ok(done)
}

/// Undoes [`setup_firewall`] after a later step failed.
fn undo_firewall(opts: &Opts, state: &State, done: FwDone, ports: Option<&PortRules>, port_elems: &[Elem]) {
    if let Some(pr) = ports {
        let _ = state.remove_ports(&pr.network_id, &pr.container_id);
    }
    let remaining: Vec<NetRules> = done.nets.into_iter().filter(|n| !done.new_nets.contains(&n.id)).collect();
    if let Err(e) = apply_fw(opts, state, &remaining, &[], port_elems) {
        tracing::warn!("rollback of firewall rules: {e}");
    }
    for id in &done.new_nets {
        let _ = state.remove_network(id);
    }
}

fn setup_dns(dns: Option<&Dns>, o: &NetworkOptions, plans: &[Planned]) -> Result<()> {
    let Some(dns) = dns else { return Ok(()) };
    let with_dns: Vec<(&Planned, &Bridge)> = plans
        .iter()
        .filter_map(|p| match &p.plan {
            Plan::Bridge(b) if p.net.dns_enabled => Some((p, b)),
            _ => None,
        })
        .collect();
    if with_dns.is_empty() {
        return Ok(());
    }
    let _l = dns.lock()?;
    let mut written = Vec::new();
    let r = (|| -> Result<()> {
        for (p, b) in &with_dns {
            let bind: Vec<IpAddr> = b.gateways.iter().map(|g| g.addr()).collect();
            if bind.is_empty() {
                continue;
            }
            let servers = p.net.network_dns_servers.clone().unwrap_or_default();
            dns.add(&p.net.name, p.net.internal, &bind, &servers, dns_entry(o, b, p.per))?;
            written.push(*p);
        }
        dns.notify()
    })();
    if let Err(e) = r {
        for p in written {
            let _ = dns.remove(&p.net.name, p.net.internal, &o.container_id);
        }
        let _ = dns.notify();
        return Err(e);
    }
    Ok(())
}

pub fn teardown(opts: &Opts, netns: &Path, o: &NetworkOptions) -> Result<()> {
    let plans = plan(o)?;
    let mut errs = Errors::default();
    let ctr_ns = match NetNs::open(netns) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!("{e}; tearing down the host side only");
            None
        }
    };
    let state = State::new(&opts.config)?;
    let _lock = state.lock()?;
    let dns = Dns::new(&opts.config, &opts.aardvark, opts.dns_port);
    let rt = runtime()?;
    // Which networks this teardown completes: no other container is recorded on them. Their
    // bridge goes and so do their rules; knowing it up front lets the firewall batch run
    // while the links are deleted (both wait for the kernel's RCU grace periods).
    let mut complete = Vec::new();
    for p in &plans {
        if let Plan::Bridge(_) = p.plan {
            errs.check(state.remove_member(&p.net.id, &o.container_id));
            if !errs.check(state.has_members(&p.net.id)).unwrap_or(true) {
                complete.push(p.net.id.clone());
            }
        }
    }
    // Firewall: this container's ports out; completed networks out.
    let mut elems = Vec::new();
    for p in &plans {
        if let Plan::Bridge(_) = p.plan {
            if let Some(pr) = errs.check(state.get_ports(&p.net.id, &o.container_id)).flatten() {
                if let Some(e) = errs.check(pr.elements()) {
                    elems.extend(e);
                }
            }
        }
    }
    let remaining = errs
        .check(state.networks())
        .map(|nets| nets.into_iter().filter(|n| !complete.contains(&n.id)).collect::<Vec<NetRules>>());
    let mut kept = Vec::new();
    std::thread::scope(|scope| {
        let fw = remaining.as_ref().map(|r| scope.spawn(|| remove_firewall(opts, &state, r, &elems)));
        rt.block_on(async {
            let host = match Netlink::current() {
                Ok(h) => h,
                Err(e) => return errs.push(e),
            };
            let ctr = ctr_ns.as_ref().and_then(|n| errs.check(Netlink::in_ns(n)));
            for p in &plans {
                match &p.plan {
                    Plan::Bridge(b) => {
                        let last = complete.contains(&p.net.id);
                        if last && !b.teardown(&host, ctr.as_ref(), true, &mut errs).await {
                            kept.push(p.net.id.clone());
                        } else if !last {
                            b.teardown(&host, ctr.as_ref(), false, &mut errs).await;
                        }
                    }
                    Plan::Macvlan(m) => m.teardown(ctr.as_ref(), &mut errs).await,
                }
            }
        });
        if let Some(fw) = fw {
            match fw.join() {
                Ok(r) => {
                    errs.check(r);
                }
                Err(_) => errs.push(msg("the firewall thread panicked")),
            }
        }
    });
    for id in &kept {
        // The state said this was the last container but the bridge still has ports (state
        // lost or out of date): keep the network's rules.
        tracing::warn!("bridge of network {id} still has ports; keeping its firewall rules");
        if let Some(nets) = errs.check(state.networks()) {
            errs.check(apply_fw(opts, &state, &nets, &[], &[]));
        }
        complete.retain(|c| c != id);
    }
    for p in &plans {
        if let Plan::Bridge(_) = p.plan {
            errs.check(state.remove_ports(&p.net.id, &o.container_id));
        }
    }
    for id in &complete {
        errs.check(state.remove_network(id));
    }
    // DNS.
    if let Some(dns) = &dns {
        let with_dns: Vec<&Planned> =
            plans.iter().filter(|p| matches!(p.plan, Plan::Bridge(_)) && p.net.dns_enabled).collect();
        if !with_dns.is_empty() {
            match dns.lock() {
                Ok(_l) => {
                    for p in with_dns {
                        errs.check(dns.remove(&p.net.name, p.net.internal, &o.container_id));
                    }
                    errs.check(dns.notify());
                }
                Err(e) => errs.push(e),
            }
        }
    }
    errs.into_result()
}

/// One batch for the whole teardown. If it fails because one of the container's host ports
/// now maps to someone else (possible after an `nft flush ruleset` and a new setup), the
/// elements are removed one by one, leaving the ones that are not ours, and the rules are
/// applied on their own.
fn remove_firewall(opts: &Opts, state: &State, remaining: &[NetRules], elems: &[Elem]) -> Result<()> {
    let Err(e) = apply_fw(opts, state, remaining, &[], elems) else { return Ok(()) };
    if elems.is_empty() || remaining.is_empty() {
        return Err(e).ctx("remove firewall rules");
    }
    tracing::warn!("teardown batch failed ({e}); removing port elements one by one");
    for el in elems {
        let one = rules::teardown_batch(remaining, opts.dns_port, std::slice::from_ref(el));
        if let Err(e) = opts.firewall.apply(&one) {
            tracing::warn!("leaving {} {} in place: {e}", el.map, el.key);
        }
    }
    opts.firewall.apply(&rules::teardown_batch(remaining, opts.dns_port, &[])).ctx("remove firewall rules")?;
    state.put_skeleton(Some(&rules::skeleton(remaining, opts.dns_port)))
}

pub fn update(opts: &Opts, network: &str, servers: &[String]) -> Result<()> {
    let servers: Vec<IpAddr> = servers
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| msg(format!("invalid dns server {s:?}"))))
        .collect::<Result<_>>()?;
    let Some(dns) = Dns::new(&opts.config, &opts.aardvark, opts.dns_port) else { return Ok(()) };
    let _l = dns.lock()?;
    dns.update_servers(network, &servers)?;
    dns.notify()
}

pub fn firewall_reload(opts: &Opts) -> Result<()> {
    let state = State::new(&opts.config)?;
    let _lock = state.lock()?;
    let nets = state.networks()?;
    let mut all = Vec::new();
    for pr in state.ports()? {
        match pr.elements() {
            Ok(e) => all.extend(e),
            Err(e) => tracing::warn!("skipping ports of container {}: {e}", pr.container_id),
        }
    }
    opts.firewall.apply(&rules::reload_batch(&nets, opts.dns_port, &all)).ctx("reload firewall rules")?;
    state.put_skeleton((!nets.is_empty()).then(|| rules::skeleton(&nets, opts.dns_port)).as_deref())
}

pub fn version() -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": "",
        "build_time": "",
        "target": std::env::consts::ARCH.to_string() + "-unknown-linux-gnu",
        "default_fw_driver": "nftables",
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::driver::Isolate;
    use crate::error::NetdError;

    /// Records applied batches; refuses any batch that touches `poison` (a host port that
    /// now maps to another container).
    struct FakeFw {
        applied: Arc<Mutex<Vec<String>>>,
        poison: &'static str,
    }

    impl Firewall for FakeFw {
        fn apply(&self, batch: &str) -> Result<()> {
            if batch.contains(self.poison) {
                return Err(NetdError::Nft("Error: Could not process rule: File exists".into()));
            }
            self.applied.lock().unwrap().push(batch.to_string());
            Ok(())
        }
        fn list_map(&self, _map: &str) -> Result<String> {
            Ok(String::new())
        }
    }

    fn fake_opts(applied: &Arc<Mutex<Vec<String>>>, poison: &'static str) -> Opts {
        Opts {
            config: PathBuf::from("/nonexistent"),
            rootless: false,
            aardvark: PathBuf::new(),
            firewall: Box::new(FakeFw { applied: applied.clone(), poison }),
            dns_port: 53,
        }
    }

    fn one_net() -> NetRules {
        NetRules {
            id: "n".into(),
            name: "n".into(),
            bridge: "br0".into(),
            subnets: vec!["10.0.0.0/24".parse().unwrap()],
            gateways: vec![],
            internal: false,
            isolate: Isolate::No,
            dns: false,
        }
    }

    fn el(port: u16) -> Elem {
        Elem { map: "pf4".into(), key: format!("tcp . {port}"), value: "10.0.0.2 . 80".into() }
    }

    #[test]
    fn teardown_removes_what_it_can_when_a_port_was_taken_over() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let opts = fake_opts(&applied, "tcp . 8080 :");
        let net = one_net();
        let dir = tempfile::tempdir().unwrap();
        let state = State::new(dir.path()).unwrap();
        remove_firewall(&opts, &state, std::slice::from_ref(&net), &[el(8080), el(8081)]).unwrap();
        let applied = applied.lock().unwrap();
        assert!(applied.iter().any(|b| b.contains("delete element inet netd pf4 { tcp . 8081 }")), "{applied:?}");
        assert!(!applied.iter().any(|b| b.contains("tcp . 8080")));
        assert!(applied.last().unwrap().contains("add rule inet netd FORWARD"), "rules applied at the end");
    }

    #[test]
    fn unchanged_rules_are_not_rewritten() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let opts = fake_opts(&applied, "never");
        let dir = tempfile::tempdir().unwrap();
        let state = State::new(dir.path()).unwrap();
        let net = one_net();
        apply_fw(&opts, &state, std::slice::from_ref(&net), &[el(1)], &[]).unwrap();
        assert!(applied.lock().unwrap()[0].contains("flush chain"), "first change writes the rules");
        apply_fw(&opts, &state, std::slice::from_ref(&net), &[el(2)], &[]).unwrap();
        assert_eq!(applied.lock().unwrap()[1], "add element inet netd pf4 { tcp . 2 : 10.0.0.2 . 80 }\n");
        apply_fw(&opts, &state, std::slice::from_ref(&net), &[], &[]).unwrap();
        assert_eq!(applied.lock().unwrap().len(), 2, "nothing to do, nothing applied");
        let mut other = net.clone();
        other.internal = true;
        apply_fw(&opts, &state, &[other], &[], &[el(2)]).unwrap();
        assert!(applied.lock().unwrap()[2].contains("flush chain"), "changed rules are rewritten");
        apply_fw(&opts, &state, &[], &[], &[el(1)]).unwrap();
        assert_eq!(applied.lock().unwrap()[3], "add table inet netd\ndelete table inet netd\n");
        assert!(state.skeleton().is_none());
    }
}
