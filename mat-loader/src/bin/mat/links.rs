//! Ports through rtnetlink: their bridge, their packet counts, and the link events that tell the
//! daemon a port went away. Everything here belongs to the daemon's network namespace.

use anyhow::{Context, Result};
use futures_util::{Stream, StreamExt, TryStreamExt};
use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage},
    RouteNetlinkMessage,
};
use rtnetlink::{packet_core::NetlinkPayload, Handle, MulticastGroup};

/// What the daemon needs to know about an interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    /// The bridge (or other controller) the interface is a port of.
    pub master: Option<u32>,
    pub rx_packets: Option<u64>,
    pub tx_packets: Option<u64>,
    pub rx_dropped: Option<u64>,
    pub tx_dropped: Option<u64>,
}

impl LinkInfo {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut info = LinkInfo {
            ifindex: msg.header.index,
            ..Default::default()
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => info.name = n.clone(),
                LinkAttribute::Controller(m) => info.master = Some(*m),
                LinkAttribute::Stats64(s) => {
                    info.rx_packets = Some(s.rx_packets);
                    info.tx_packets = Some(s.tx_packets);
                    info.rx_dropped = Some(s.rx_dropped);
                    info.tx_dropped = Some(s.tx_dropped);
                }
                _ => {}
            }
        }
        info
    }
}

/// A route-netlink connection for queries.
#[derive(Clone)]
pub struct Links {
    handle: Handle,
}

impl Links {
    /// Opens the connection; its driver runs on the current tokio runtime.
    pub fn new() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The interface with this index, if it exists.
    pub async fn by_index(&self, ifindex: u32) -> Result<Option<LinkInfo>> {
        let mut s = self.handle.link().get().match_index(ifindex).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(LinkInfo::from_message)),
            Err(rtnetlink::Error::NetlinkError(e)) if is_no_device(&e) => Ok(None),
            Err(e) => Err(e).context("asking rtnetlink for a link"),
        }
    }

    /// Every interface in the namespace.
    pub async fn all(&self) -> Result<Vec<LinkInfo>> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| LinkInfo::from_message(&m))
            .try_collect()
            .await
            .context("dumping links")
    }
}

fn is_no_device(e: &rtnetlink::packet_core::ErrorMessage) -> bool {
    e.code
        .is_some_and(|c| c.get() == -libc::ENODEV || c.get() == -libc::ENOENT)
}

/// A change to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The kernel reported a link removed (or a bridge port leaving its bridge: check that the
    /// interface is really gone).
    Removed { ifindex: u32, name: String },
    /// A link was added or changed (maybe renamed).
    Changed { ifindex: u32, name: String },
}

/// Link events as they happen. Subscribe before reading the current state so that nothing falls
/// between the two.
pub fn events() -> Result<impl Stream<Item = LinkEvent>> {
    let (conn, _handle, messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
        .context("subscribing to link events")?;
    tokio::spawn(conn);
    Ok(messages.filter_map(|(msg, _)| async move {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                let info = LinkInfo::from_message(&m);
                Some(LinkEvent::Removed {
                    ifindex: info.ifindex,
                    name: info.name,
                })
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                let info = LinkInfo::from_message(&m);
                Some(LinkEvent::Changed {
                    ifindex: info.ifindex,
                    name: info.name,
                })
            }
            _ => None,
        }
    }))
}

/// The index of the interface with this name, in the calling thread's namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// The name of the interface with this index, in the calling thread's namespace.
pub fn ifname(ifindex: u32) -> Option<String> {
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .map(|n| n.to_string_lossy().into_owned())
}
