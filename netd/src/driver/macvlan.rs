//! The macvlan and ipvlan drivers (ipvlan where the kernel has it: this machine's kernel has
//! no ipvlan link type, and netd then reports the kernel's refusal).
//!
//! The link is created in the host namespace on the parent under a temporary name
//! `mv-<10 random>` (`iv-` for ipvlan), moved into the container namespace and renamed to `interface_name` there.
//! No firewall rules and no DNS, as netavark.

use rand::distr::{Alphanumeric, SampleString};
use rpod_wire::{NetAddress, NetInterface, Network, PerNetworkOptions};
use rtnetlink::packet_route::link::{IpVlanMode, MacVlanMode};

use super::{common, Common};
use crate::error::{msg, Context, Result};
use crate::netns::NetNs;
use crate::nl::{Netlink, VlanMode};

#[derive(Debug, Clone)]
pub struct Macvlan {
    pub parent: Option<String>,
    pub mode: VlanMode,
    pub common: Common,
}

impl Macvlan {
    pub fn validate(net: &Network, per: &PerNetworkOptions) -> Result<Macvlan> {
        let mode = if net.driver == "ipvlan" {
            VlanMode::Ipvlan(match net.option("mode").unwrap_or("l2") {
                "" | "l2" => IpVlanMode::L2,
                "l3" => IpVlanMode::L3,
                "l3s" => IpVlanMode::L3S,
                m => return Err(msg(format!("unknown ipvlan mode {m:?}"))),
            })
        } else {
            VlanMode::Macvlan(match net.option("mode").unwrap_or("bridge") {
                "" | "bridge" => MacVlanMode::Bridge,
                "private" => MacVlanMode::Private,
                "vepa" => MacVlanMode::Vepa,
                "passthru" => MacVlanMode::Passthrough,
                "source" => MacVlanMode::Source,
                m => return Err(msg(format!("unknown macvlan mode {m:?}"))),
            })
        };
        let parent = net.network_interface.clone().filter(|p| !p.is_empty());
        let common = common(net, per, 100)?;
        if matches!(mode, VlanMode::Ipvlan(_)) && common.mac.is_some() {
            return Err(msg("ipvlan interfaces share the parent's MAC address: static_mac is not supported"));
        }
        Ok(Macvlan { parent, mode, common })
    }

    pub async fn setup(&self, host: &Netlink, ctr_ns: &NetNs, ctr: &Netlink) -> Result<NetInterface> {
        let c = &self.common;
        if ctr.link_by_name(&c.ifname).await?.is_some() {
            return Err(msg(format!("interface {} already exists on container namespace", c.ifname)));
        }
        let parent = match &self.parent {
            Some(p) => host.link_by_name(p).await?.ok_or_else(|| msg(format!("parent interface {p} not found")))?.index,
            None => host
                .default_route_interface()
                .await?
                .ok_or_else(|| msg("no parent interface given and no default route to take it from"))?,
        };
        let prefix = if matches!(self.mode, VlanMode::Ipvlan(_)) { "iv" } else { "mv" };
        let tmp = format!("{prefix}-{}", Alphanumeric.sample_string(&mut rand::rng(), 10));
        host.create_vlan_link(&tmp, parent, self.mode, c.mtu, c.mac.clone()).await?;
        let l = host.link_by_name(&tmp).await?.ok_or_else(|| msg("link vanished after creation"))?;
        if let Err(e) = host.move_to_ns(l.index, ctr_ns).await {
            let _ = host.delete_link(l.index).await;
            return Err(e);
        }
        let r = async {
            let cl =
                ctr.link_by_name(&tmp).await?.ok_or_else(|| msg("macvlan not found in the container namespace"))?;
            ctr.rename(cl.index, &c.ifname).await.ctx("rename tmp macvlan interface")?;
            super::configure_container_if(ctr, ctr_ns, c, cl.index, true).await?;
            let cl = ctr.link_by_index(cl.index).await?.ok_or_else(|| msg("macvlan vanished"))?;
            Ok(NetInterface {
                mac_address: cl.mac_string(),
                subnets: c.addrs.iter().map(|a| NetAddress { ipnet: a.ipnet, gateway: a.gateway }).collect(),
            })
        }
        .await;
        if r.is_err() {
            for name in [tmp.as_str(), c.ifname.as_str()] {
                if let Ok(Some(l)) = ctr.link_by_name(name).await {
                    use rtnetlink::packet_route::link::InfoKind;
                    if name == tmp || matches!(l.kind, Some(InfoKind::MacVlan) | Some(InfoKind::IpVlan)) {
                        let _ = ctr.delete_link(l.index).await;
                    }
                }
            }
        }
        r
    }

    pub async fn teardown(&self, ctr: Option<&Netlink>, errs: &mut crate::error::Errors) {
        if let Some(ctr) = ctr {
            match ctr.link_by_name(&self.common.ifname).await {
                Ok(Some(l)) => {
                    errs.check(ctr.delete_link(l.index).await.with_ctx(|| format!("delete {}", self.common.ifname)));
                }
                Ok(None) => tracing::info!("interface {} already gone", self.common.ifname),
                Err(e) => errs.push(e),
            }
        }
    }
}
