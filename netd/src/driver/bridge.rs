//! The bridge driver.
//!
//! Setup: reuse or create the bridge (with the gateway addresses), create a veth pair from
//! inside the container namespace whose container end is `interface_name` and whose host end
//! (kernel-named `vethN`) lands in the host namespace, attach the host end to the bridge,
//! configure the container end. Teardown deletes the container end (the kernel removes the
//! pair) and the bridge once no port is left on it.

use ipnet::IpNet;
use rpod_wire::{NetAddress, NetInterface, Network, PerNetworkOptions};
use rtnetlink::packet_route::link::InfoKind;

use super::{common, isolate, Common, Isolate};
use crate::error::{msg, Context, Errors, Result};
use crate::netns::NetNs;
use crate::nl::Netlink;
use crate::sysctl;

/// What a setup call created, for its rollback.
#[derive(Default)]
struct Created {
    bridge: bool,
    veth: bool,
}

/// A validated bridge setup.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub bridge: String,
    pub common: Common,
    /// Gateway address with the subnet prefix, for each subnet that has a gateway.
    pub gateways: Vec<IpNet>,
    pub isolate: Isolate,
    pub internal: bool,
    pub host_ifname: Option<String>,
}

impl Bridge {
    pub fn validate(net: &Network, per: &PerNetworkOptions) -> Result<Bridge> {
        let bridge = net.network_interface.clone().unwrap_or_default();
        if bridge.is_empty() {
            return Err(msg("no bridge interface name given"));
        }
        if bridge.len() > 15 {
            return Err(msg(format!("bridge name {bridge:?} is longer than 15 characters")));
        }
        if let Some(mode) = net.option("mode") {
            if mode != "managed" {
                return Err(msg(format!("bridge mode {mode:?} is not supported (only managed)")));
            }
        }
        let common = common(net, per, 100)?;
        let mut gateways = Vec::new();
        for s in net.subnets() {
            if let Some(gw) = s.gateway {
                gateways.push(IpNet::new(gw, s.subnet.prefix_len()).map_err(|e| msg(e.to_string()))?);
            }
        }
        let host_ifname = per.options.as_ref().and_then(|o| o.get("host_interface_name")).cloned();
        Ok(Bridge { bridge, common, gateways, isolate: isolate(net)?, internal: net.internal, host_ifname })
    }

    /// Sets up; on error everything this call created is removed again.
    pub async fn setup(&self, host: &Netlink, ctr_ns: &NetNs, ctr: &Netlink, host_ns: &NetNs) -> Result<NetInterface> {
        let mut made = Created::default();
        let r = self.setup_inner(host, ctr_ns, ctr, host_ns, &mut made).await;
        if r.is_err() {
            if made.veth {
                if let Ok(Some(l)) = ctr.link_by_name(&self.common.ifname).await {
                    let _ = ctr.delete_link(l.index).await;
                }
            }
            if made.bridge {
                if let Ok(Some(b)) = host.link_by_name(&self.bridge).await {
                    if host.count_ports(b.index).await.unwrap_or(1) == 0 {
                        let _ = host.delete_link(b.index).await;
                    }
                }
            }
        }
        r
    }

    async fn setup_inner(
        &self,
        host: &Netlink,
        ctr_ns: &NetNs,
        ctr: &Netlink,
        host_ns: &NetNs,
        made: &mut Created,
    ) -> Result<NetInterface> {
        let c = &self.common;
        if ctr.link_by_name(&c.ifname).await?.is_some() {
            return Err(msg(format!("create veth pair: interface {} already exists on container namespace", c.ifname)));
        }
        // The bridge.
        let br = match host.link_by_name(&self.bridge).await? {
            Some(l) if l.kind == Some(InfoKind::Bridge) => l,
            Some(l) => {
                return Err(msg(format!(
                    "bridge interface {} already exists but is a {} interface",
                    self.bridge,
                    l.kind_name()
                )))
            }
            None => {
                made.bridge = host.create_bridge(&self.bridge, c.mtu).await?;
                host.link_by_name(&self.bridge)
                    .await?
                    .ok_or_else(|| msg(format!("bridge {} vanished after creation", self.bridge)))?
            }
        };
        let has_v6 =
            self.gateways.iter().any(|g| g.addr().is_ipv6()) || c.addrs.iter().any(|a| a.ipnet.addr().is_ipv6());
        {
            // Host and bridge sysctls (in the host namespace, where the thread is).
            let b = &self.bridge;
            if has_v6 {
                sysctl::set_if_present(&format!("net/ipv6/conf/{b}/accept_dad"), "0")?;
                sysctl::set_if_present(&format!("net/ipv6/conf/{b}/accept_ra"), "0")?;
            }
            if self.internal {
                sysctl::set(&format!("net/ipv4/conf/{b}/forwarding"), "0")?;
                if has_v6 {
                    sysctl::set_if_present(&format!("net/ipv6/conf/{b}/forwarding"), "0")?;
                }
            } else {
                sysctl::set("net/ipv4/ip_forward", "1")?;
                if has_v6 {
                    sysctl::set("net/ipv6/conf/all/forwarding", "1")?;
                }
                sysctl::set(&format!("net/ipv4/conf/{b}/route_localnet"), "1")?;
            }
        }
        for gw in &self.gateways {
            host.add_address(br.index, *gw).await.with_ctx(|| format!("bridge {}", self.bridge))?;
        }
        host.set_up(br.index).await?;

        // The veth pair, created from inside the container namespace.
        ctr.create_veth(&c.ifname, host_ns, self.host_ifname.as_deref(), c.mtu, c.mac.clone()).await?;
        made.veth = true;
        let cl = ctr
            .link_by_name(&c.ifname)
            .await?
            .ok_or_else(|| msg(format!("veth {} vanished after creation", c.ifname)))?;
        let peer = cl.link.ok_or_else(|| msg("veth without a peer index"))?;
        let hl = host.link_by_index(peer).await?.ok_or_else(|| msg("host end of the veth not found"))?;
        if has_v6 {
            sysctl::set_if_present(&format!("net/ipv6/conf/{}/accept_dad", hl.name), "0")?;
        }
        host.set_controller(hl.index, br.index).await.with_ctx(|| format!("bridge {}", self.bridge))?;
        super::configure_container_if(ctr, ctr_ns, c, cl.index, !self.internal).await?;
        Ok(NetInterface {
            mac_address: cl.mac_string(),
            subnets: c.addrs.iter().map(|a| NetAddress { ipnet: a.ipnet, gateway: a.gateway }).collect(),
        })
    }

    /// Tears down. With `last` false only the container's veth goes. With `last` true the
    /// bridge goes too, unless another port is still on it; the veth and the bridge are then
    /// deleted in one netlink request (a link group), which costs the kernel one round of
    /// unregistering instead of two. Returns true when the bridge is gone.
    pub async fn teardown(&self, host: &Netlink, ctr: Option<&Netlink>, last: bool, errs: &mut Errors) -> bool {
        let mut peer = None;
        if let Some(ctr) = ctr {
            match ctr.link_by_name(&self.common.ifname).await {
                Ok(Some(l)) if last => peer = Some((l.index, l.link)),
                Ok(Some(l)) => {
                    errs.check(ctr.delete_link(l.index).await.with_ctx(|| format!("delete {}", self.common.ifname)));
                }
                Ok(None) => tracing::info!("interface {} already gone", self.common.ifname),
                Err(e) => errs.push(e),
            }
        }
        if !last {
            return false;
        }
        let br = match host.link_by_name(&self.bridge).await {
            Ok(Some(b)) if b.kind == Some(InfoKind::Bridge) => b,
            Ok(_) => {
                if let (Some(ctr), Some((idx, _))) = (ctr, peer) {
                    errs.check(ctr.delete_link(idx).await.ctx("delete veth"));
                }
                return true;
            }
            Err(e) => {
                errs.push(e);
                return false;
            }
        };
        let ports = match host.count_ports(br.index).await {
            Ok(n) => n,
            Err(e) => {
                errs.push(e);
                return false;
            }
        };
        let ours = usize::from(peer.is_some_and(|(_, p)| p.is_some()));
        if ports > ours {
            if let (Some(ctr), Some((idx, _))) = (ctr, peer) {
                errs.check(ctr.delete_link(idx).await.ctx("delete veth"));
            }
            return false;
        }
        let host_end = peer.and_then(|(_, p)| p);
        match host_end {
            Some(h) => {
                let group = 0x7000_0000 | (rand::random::<u32>() & 0x0fff_ffff);
                let r = async {
                    host.set_group(h, group).await?;
                    host.set_group(br.index, group).await?;
                    host.delete_group(group).await
                }
                .await;
                if let Err(e) = r {
                    tracing::info!("group delete failed ({e}); deleting one by one");
                    errs.check(host.delete_link(h).await.ctx("delete veth"));
                    return errs.check(host.delete_link(br.index).await.ctx("delete bridge")).is_some();
                }
                true
            }
            None => errs.check(host.delete_link(br.index).await.ctx("delete bridge")).is_some(),
        }
    }
}
