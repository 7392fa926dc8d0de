//! The macvlan driver (and ipvlan where the kernel has it: not on this machine's kernel).
//!
//! The link is created in the host namespace on the parent under a temporary name
//! `mv-<10 random>`, moved into the container namespace and renamed to `interface_name` there.
//! No firewall rules and no DNS, as netavark.

use rand::distr::{Alphanumeric, SampleString};
use rpod_wire::{NetAddress, NetInterface, Network, PerNetworkOptions};
use rtnetlink::packet_route::link::MacVlanMode;

use super::{common, Common};
use crate::error::{msg, Context, Result};
use crate::netns::NetNs;
use crate::nl::Netlink;

#[derive(Debug, Clone)]
pub struct Macvlan {
    pub parent: Option<String>,
    pub mode: MacVlanMode,
    pub common: Common,
}

impl Macvlan {
    pub fn validate(net: &Network, per: &PerNetworkOptions) -> Result<Macvlan> {
        let mode = match net.option("mode").unwrap_or("bridge") {
            "" | "bridge" => MacVlanMode::Bridge,
            "private" => MacVlanMode::Private,
            "vepa" => MacVlanMode::Vepa,
            "passthru" => MacVlanMode::Passthrough,
            "source" => MacVlanMode::Source,
            m => return Err(msg(format!("unknown macvlan mode {m:?}"))),
        };
        let parent = net.network_interface.clone().filter(|p| !p.is_empty());
        Ok(Macvlan { parent, mode, common: common(net, per, 100)? })
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
        let tmp = format!("mv-{}", Alphanumeric.sample_string(&mut rand::rng(), 10));
        host.create_macvlan(&tmp, parent, self.mode, c.mtu, c.mac.clone()).await?;
        let l = host.link_by_name(&tmp).await?.ok_or_else(|| msg("macvlan vanished after creation"))?;
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
                    if name == tmp || l.kind == Some(rtnetlink::packet_route::link::InfoKind::MacVlan) {
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
