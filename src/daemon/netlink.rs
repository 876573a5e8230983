//! rtnetlink: interface lookup, the VIP on the interface, and link-state events.

use std::net::{IpAddr, Ipv4Addr};

use futures::{StreamExt, TryStreamExt};
use rtnetlink::Handle;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

/// What the daemon needs to know about the HA interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    /// Administratively up and carrier present: the only state in which adverts can flow.
    pub up: bool,
}

/// Errors name the operation and the object (netavark style).
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("interface {0} not found; set ha.interface to an existing interface (see `ip link`)")]
    NoSuchInterface(String),
    #[error("interface {0} has no Ethernet MAC address; Proxy HA needs an Ethernet interface")]
    NoMac(String),
    #[error("{op}: {source}")]
    Request {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
}

fn request_error(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Request { op, source }
}

/// True when the error is the kernel's "no such device" answer to a link query.
fn is_enodev(err: &rtnetlink::Error) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::ENODEV)
}

/// Parses a link message into [`LinkInfo`]; `None` if it carries no usable MAC.
pub fn link_info(msg: &LinkMessage) -> Option<LinkInfo> {
    let mut name = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(bytes);
                mac = Some(m);
            }
            _ => {}
        }
    }
    let flags = msg.header.flags;
    Some(LinkInfo {
        index: msg.header.index,
        name: name?,
        mac: mac?,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
    })
}

/// Looks the HA interface up by name.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<LinkInfo, NetlinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => link_info(&msg).ok_or_else(|| NetlinkError::NoMac(name.to_string())),
        Ok(None) => Err(NetlinkError::NoSuchInterface(name.to_string())),
        Err(e) if is_enodev(&e) => Err(NetlinkError::NoSuchInterface(name.to_string())),
        Err(e) => Err(request_error(format!("looking up interface {name}"))(e)),
    }
}

/// IPv4 addresses on the interface with their prefix lengths, primary first.
pub async fn ipv4_addresses(
    handle: &Handle,
    index: u32,
) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(request_error(format!(
            "listing addresses of interface #{index}"
        )))?;
    Ok(msgs
        .iter()
        .filter_map(|m| message_ipv4(m).map(|a| (a, m.header.prefix_len)))
        .collect())
}

fn message_ipv4(msg: &AddressMessage) -> Option<Ipv4Addr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on p2p links.
    let mut found = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => return Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) => found = Some(*a),
            _ => {}
        }
    }
    found
}

/// Adds `vip/32` to the interface; idempotent (NLM_F_REPLACE), so a retry never fails on EEXIST.
pub async fn add_vip(handle: &Handle, link: &LinkInfo, vip: Ipv4Addr) -> Result<(), NetlinkError> {
    handle
        .address()
        .add(link.index, IpAddr::V4(vip), 32)
        .replace()
        .execute()
        .await
        .map_err(request_error(format!("adding {vip}/32 to {}", link.name)))
}

/// Removes every instance of `vip` from the interface; returns whether one was there.
pub async fn remove_vip(
    handle: &Handle,
    link: &LinkInfo,
    vip: Ipv4Addr,
) -> Result<bool, NetlinkError> {
    let op = || format!("removing {vip} from {}", link.name);
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .set_address_filter(IpAddr::V4(vip))
        .execute()
        .try_collect()
        .await
        .map_err(request_error(op()))?;
    let mut removed = false;
    for msg in msgs.into_iter().filter(|m| message_ipv4(m) == Some(vip)) {
        match handle.address().del(msg).execute().await {
            Ok(()) => removed = true,
            // Already gone (raced with an administrator or the kernel): the goal is met.
            Err(rtnetlink::Error::NetlinkError(m))
                if m.raw_code() == -libc::EADDRNOTAVAIL || m.raw_code() == -libc::ENOENT => {}
            Err(e) => return Err(request_error(op())(e)),
        }
    }
    Ok(removed)
}

/// A stream of link changes for one interface index, from the RTNLGRP_LINK multicast group.
pub struct LinkEvents {
    messages: futures::channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    index: u32,
}

impl LinkEvents {
    /// Subscribes before the caller reads the initial state, so no change is missed.
    pub fn subscribe() -> Result<LinkEvents, NetlinkError> {
        let (conn, _handle, messages) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])?;
        tokio::spawn(conn);
        Ok(LinkEvents { messages, index: 0 })
    }

    /// Selects the interface whose changes [`LinkEvents::next`] reports.
    pub fn watch(&mut self, index: u32) {
        self.index = index;
    }

    /// The next state of our interface: `Some(up)`; `None` when the subscription ended.
    /// A deleted interface reads as down.
    pub async fn next(&mut self) -> Option<bool> {
        loop {
            let (msg, _) = self.messages.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link))
                    if link.header.index == self.index =>
                {
                    let flags = link.header.flags;
                    return Some(
                        flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
                    );
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link))
                    if link.header.index == self.index =>
                {
                    return Some(false);
                }
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The appliance network ([network], src/network.rs) and the bond's state

use crate::network::{Address, Link, Step};
use rtnetlink::packet_route::link::{InfoBond, InfoData, LinkInfo as NlLinkInfo};
use rtnetlink::{LinkBond, LinkUnspec, RouteMessageBuilder};

/// A link message as the sans-IO [`Link`].
pub fn to_link(msg: &LinkMessage) -> Option<Link> {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        bond_mode: None,
        active_slave: None,
        master: None,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        lower_up: msg.header.flags.contains(LinkFlags::LowerUp),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Controller(m) if *m != 0 => link.master = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        NlLinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        NlLinkInfo::Data(InfoData::Bond(bond)) => {
                            for b in bond {
                                match b {
                                    InfoBond::Mode(m) => link.bond_mode = Some(u8::from(*m)),
                                    InfoBond::ActivePort(i) => link.active_slave = Some(*i),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (!link.name.is_empty()).then_some(link)
}

/// Every link, with bond data and masters.
pub async fn links(handle: &Handle) -> Result<Vec<Link>, NetlinkError> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(request_error("listing links"))?;
    Ok(msgs.iter().filter_map(to_link).collect())
}

/// Every IPv4 address.
pub async fn addresses(handle: &Handle) -> Result<Vec<Address>, NetlinkError> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(request_error("listing addresses"))?;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            message_ipv4(m).map(|addr| Address {
                index: m.header.index,
                addr,
                prefix: m.header.prefix_len,
            })
        })
        .collect())
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32, NetlinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(NetlinkError::NoSuchInterface(name.to_string())),
        Err(e) if is_enodev(&e) => Err(NetlinkError::NoSuchInterface(name.to_string())),
        Err(e) => Err(request_error(format!("looking up interface {name}"))(e)),
    }
}

/// Carries out one link/address/route step; resolv.conf and the host name are files and a
/// syscall, done by the caller.
pub async fn apply_step(handle: &Handle, step: &Step) -> Result<(), NetlinkError> {
    let op = step.to_string();
    match step {
        Step::DeleteLink { name } => {
            let index = index_of(handle, name).await?;
            handle.link().del(index).execute().await
        }
        Step::CreateBond { name, mode } => {
            let mode = rtnetlink::packet_route::link::BondMode::from(*mode as u8);
            // miimon 100 ms: without link monitoring a bond never notices a dead slave.
            let msg = LinkBond::new(name).mode(mode).miimon(100).build();
            handle.link().add(msg).execute().await
        }
        Step::SetDown { name } => {
            let index = index_of(handle, name).await?;
            let msg = LinkUnspec::new_with_index(index).down().build();
            handle.link().set(msg).execute().await
        }
        Step::SetUp { name } => {
            let index = index_of(handle, name).await?;
            let msg = LinkUnspec::new_with_index(index).up().build();
            handle.link().set(msg).execute().await
        }
        Step::Enslave { slave, bond } => {
            let index = index_of(handle, slave).await?;
            let bond = index_of(handle, bond).await?;
            let msg = LinkUnspec::new_with_index(index).controller(bond).build();
            handle.link().set(msg).execute().await
        }
        Step::AddAddress {
            interface,
            addr,
            prefix,
        } => {
            let index = index_of(handle, interface).await?;
            handle
                .address()
                .add(index, IpAddr::V4(*addr), *prefix)
                .replace()
                .execute()
                .await
        }
        Step::RemoveAddress {
            interface,
            addr,
            prefix,
        } => {
            let index = index_of(handle, interface).await?;
            let msgs: Vec<AddressMessage> = handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect()
                .await
                .map_err(request_error(op.clone()))?;
            for msg in msgs {
                if message_ipv4(&msg) == Some(*addr) && msg.header.prefix_len == *prefix {
                    handle
                        .address()
                        .del(msg)
                        .execute()
                        .await
                        .map_err(request_error(op.clone()))?;
                }
            }
            Ok(())
        }
        Step::ReplaceDefaultRoute { gateway, interface } => {
            let index = index_of(handle, interface).await?;
            let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(*gateway)
                .output_interface(index)
                .build();
            handle.route().add(msg).replace().execute().await
        }
        Step::WriteResolvConf { .. } | Step::SetHostname { .. } => Ok(()),
    }
    .map_err(request_error(op))
}

/// Link changes of any interface (RTNLGRP_LINK), for watching a bond and its slaves.
pub struct AnyLinkEvents {
    messages: futures::channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
}

impl AnyLinkEvents {
    pub fn subscribe() -> Result<AnyLinkEvents, NetlinkError> {
        let (conn, _handle, messages) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])?;
        tokio::spawn(conn);
        Ok(AnyLinkEvents { messages })
    }

    /// Completes on the next link message (new or deleted link); `None` when the
    /// subscription ended.
    pub async fn next(&mut self) -> Option<()> {
        loop {
            let (msg, _) = self.messages.next().await?;
            if let NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_),
            ) = msg.payload
            {
                return Some(());
            }
        }
    }
}
