//! A small synchronous-looking wrapper over rtnetlink for the operations the drivers need.
//!
//! One [`Netlink`] per namespace: its socket is created while the thread is inside that
//! namespace (see [`crate::netns`]), so every request on it acts there.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, IpVlanMode, LinkAttribute, LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::{
    Handle, LinkBridge, LinkIpVlan, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::error::{msg, Context, NetdError, Result};
use crate::netns::NetNs;

/// A netlink connection bound to one network namespace.
pub struct Netlink {
    handle: Handle,
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// The mode of a link created on a parent.
#[derive(Debug, Clone, Copy)]
pub enum VlanMode {
    Macvlan(MacVlanMode),
    Ipvlan(IpVlanMode),
}

/// Facts about a link that the drivers look at.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    pub mac: Option<Vec<u8>>,
    /// IFLA_LINK: the peer (veth) or parent (macvlan) index.
    pub link: Option<u32>,
}

impl Link {
    fn from_msg(m: &LinkMessage) -> Link {
        let mut l = Link { index: m.header.index, name: String::new(), kind: None, mac: None, link: None };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(a) => l.mac = Some(a.clone()),
                LinkAttribute::Link(i) => l.link = Some(*i),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(k.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }

    /// The kind as `ip -d link` names it.
    pub fn kind_name(&self) -> String {
        match &self.kind {
            Some(k) => k.to_string(),
            None => "device".into(),
        }
    }

    /// The MAC address as lower-case `aa:bb:..`.
    pub fn mac_string(&self) -> String {
        self.mac.as_deref().map(format_mac).unwrap_or_default()
    }
}

pub fn format_mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), exactly 6 bytes.
pub fn parse_mac(s: &str) -> Result<Vec<u8>> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || msg(format!("invalid static mac address {s:?}: must be 6 hex bytes like aa:bb:cc:dd:ee:ff"));
    if parts.len() != 6 {
        return Err(bad());
    }
    parts.iter().map(|p| if p.len() == 2 { u8::from_str_radix(p, 16).map_err(|_| bad()) } else { Err(bad()) }).collect()
}

impl Netlink {
    /// A connection in the calling thread's current namespace. Must be called inside the
    /// tokio runtime.
    pub fn current() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().ctx("open netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection inside `ns`.
    pub fn in_ns(ns: &NetNs) -> Result<Self> {
        let _g = ns.enter()?;
        Self::current()
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let r = self.handle.link().get().match_name(name.to_string()).execute().try_next().await;
        match r {
            Ok(Some(m)) => Ok(Some(Link::from_msg(&m))),
            Ok(None) => Ok(None),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(NetdError::from(e)).with_ctx(|| format!("get link {name}")),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let r = self.handle.link().get().match_index(index).execute().try_next().await;
        match r {
            Ok(Some(m)) => Ok(Some(Link::from_msg(&m))),
            Ok(None) => Ok(None),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(NetdError::from(e)).with_ctx(|| format!("get link {index}")),
        }
    }

    /// Creates a bridge; returns false if it already existed (a concurrent creator won).
    /// The bridge gets a random locally administered MAC of its own: left alone, the kernel
    /// gives a bridge the lowest MAC among its ports and changes it as ports come and go,
    /// which breaks the containers' ARP entries for the gateway.
    pub async fn create_bridge(&self, name: &str, mtu: Option<u32>) -> Result<bool> {
        let mut mac: [u8; 6] = rand::random();
        mac[0] = (mac[0] & 0xfe) | 0x02;
        let mut b = LinkBridge::new(name).address(mac.to_vec());
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        match self.handle.link().add(b.build()).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(false),
            Err(e) => Err(NetdError::from(e)).with_ctx(|| format!("create bridge {name}")),
        }
    }

    /// Creates a veth pair here, named `name`, whose peer is created in `peer_ns` with a
    /// kernel-chosen name (or `peer_name`). Fails with EEXIST if `name` is taken.
    pub async fn create_veth(
        &self,
        name: &str,
        peer_ns: &NetNs,
        peer_name: Option<&str>,
        mtu: Option<u32>,
        mac: Option<Vec<u8>>,
    ) -> Result<()> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().setns_by_fd(peer_ns.raw_fd());
        if let Some(n) = peer_name {
            peer = peer.name(n);
        }
        if let Some(m) = mtu {
            peer = peer.mtu(m);
        }
        let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        if let Some(mac) = mac {
            b = b.address(mac);
        }
        self.handle.link().add(b.build()).execute().await.map_err(|e| {
            if is_errno(&e, libc::EEXIST) {
                msg(format!("create veth pair: interface {name} already exists on container namespace"))
            } else {
                NetdError::from(e)
            }
        })
    }

    /// Creates a macvlan or ipvlan on `parent` with a temporary name.
    pub async fn create_vlan_link(
        &self,
        name: &str,
        parent: u32,
        mode: VlanMode,
        mtu: Option<u32>,
        mac: Option<Vec<u8>>,
    ) -> Result<()> {
        let (msg, what) = match mode {
            VlanMode::Macvlan(m) => {
                let mut b = LinkMacVlan::new(name, parent, m);
                if let Some(m) = mtu {
                    b = b.mtu(m);
                }
                if let Some(mac) = mac {
                    b = b.address(mac);
                }
                (b.build(), "macvlan")
            }
            VlanMode::Ipvlan(m) => {
                let mut b = LinkIpVlan::new(name, parent, m);
                if let Some(m) = mtu {
                    b = b.mtu(m);
                }
                (b.build(), "ipvlan")
            }
        };
        self.handle.link().add(msg).execute().await.with_ctx(|| format!("create {what}"))
    }

    /// Moves a link into another namespace.
    pub async fn move_to_ns(&self, index: u32, ns: &NetNs) -> Result<()> {
        let m = LinkUnspec::new_with_index(index).setns_by_fd(ns.raw_fd()).build();
        self.handle.link().change(m).execute().await.ctx("move link to namespace")
    }

    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        let m = LinkUnspec::new_with_index(index).name(name).build();
        self.handle.link().change(m).execute().await.map_err(NetdError::from)
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        let m = LinkUnspec::new_with_index(index).up().build();
        self.handle.link().change(m).execute().await.ctx("set link up")
    }

    pub async fn set_controller(&self, index: u32, controller: u32) -> Result<()> {
        let m = LinkUnspec::new_with_index(index).controller(controller).up().build();
        self.handle.link().change(m).execute().await.ctx("attach veth to bridge")
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let m = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle.link().change(m).execute().await.ctx("set mtu")
    }

    /// Puts a link in a link group.
    pub async fn set_group(&self, index: u32, group: u32) -> Result<()> {
        let m = LinkUnspec::new_with_index(index).link_group(group).build();
        self.handle.link().change(m).execute().await.ctx("set link group")
    }

    /// Deletes every link of a group in one request.
    pub async fn delete_group(&self, group: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::Group(group));
        self.handle.link().del_with_message(m).execute().await.ctx("delete link group")
    }

    /// Deletes a link; a link already gone is not an error.
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Number of links whose controller is `bridge`.
    pub async fn count_ports(&self, bridge: u32) -> Result<usize> {
        let mut req = self.handle.link().get();
        req.message_mut().attributes.push(LinkAttribute::Controller(bridge));
        let mut s = req.execute();
        let mut n = 0;
        while let Some(m) = s.try_next().await.ctx("list bridge ports")? {
            if m.attributes.iter().any(|a| matches!(a, LinkAttribute::Controller(c) if *c == bridge)) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Adds an address (idempotent).
    pub async fn add_address(&self, index: u32, net: IpNet) -> Result<()> {
        self.handle
            .address()
            .add(index, net.addr(), net.prefix_len())
            .replace()
            .execute()
            .await
            .with_ctx(|| format!("add address {net}"))
    }

    /// Adds a route. `gateway` None means a link-scope route on `index`.
    pub async fn add_route(&self, dest: IpNet, gateway: Option<IpAddr>, index: Option<u32>, metric: u32) -> Result<()> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr(), dest.prefix_len())
            .map_err(|e| msg(format!("route {dest}: {e}")))?;
        if let Some(gw) = gateway {
            b = b.gateway(gw).map_err(|e| msg(format!("route {dest} via {gw}: {e}")))?;
        }
        if let Some(i) = index {
            b = b.output_interface(i);
        }
        let m: RouteMessage = b.priority(metric).build();
        match self.handle.route().add(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(e) => Err(NetdError::from(e)).with_ctx(|| format!("add route {dest} via {gateway:?}")),
        }
    }

    /// The interface of the first default route (v4, else v6).
    pub async fn default_route_interface(&self) -> Result<Option<u32>> {
        use rtnetlink::packet_route::route::RouteAttribute;
        for v6 in [false, true] {
            let m = if v6 {
                RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
            } else {
                RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
            };
            let mut s = self.handle.route().get(m).execute();
            while let Some(r) = s.try_next().await.ctx("list routes")? {
                if r.header.destination_prefix_length != 0 || r.header.table != 254 {
                    continue;
                }
                for a in &r.attributes {
                    if let RouteAttribute::Oif(i) = a {
                        return Ok(Some(*i));
                    }
                }
            }
        }
        Ok(None)
    }
}

pub fn err_eexist(e: &NetdError) -> bool {
    e.to_string().contains("File exists")
}
