//! Ports through rtnetlink: their kind, their bridge, their packet counts, and the link events
//! that tell the daemon a port came or went; and the one rule for which interfaces are VM ports.
//! Everything here belongs to the daemon's network namespace.

use anyhow::{Context, Result};
use futures_util::{Stream, StreamExt, TryStreamExt};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo as Info, LinkMessage},
};
use rtnetlink::{Handle, MulticastGroup, packet_core::NetlinkPayload};

/// What the daemon needs to know about an interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    /// The driver's kind: `tun` (a tap), `veth`, `bridge`, ... (none for a physical NIC).
    pub kind: Option<String>,
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
                LinkAttribute::IfName(n) => info.name.clone_from(n),
                LinkAttribute::Controller(m) => info.master = Some(*m),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let Info::Kind(k) = i {
                            info.kind = Some(kind_name(k));
                        }
                    }
                }
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

    /// The interface with this name, if it exists.
    pub async fn by_name(&self, name: &str) -> Result<Option<LinkInfo>> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
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
    /// A link was added or changed (renamed, or put into a bridge).
    Changed(LinkInfo),
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
                Some(LinkEvent::Changed(LinkInfo::from_message(&m)))
            }
            _ => None,
        }
    }))
}

/// The index of the interface with this name, in the calling thread's namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// What looking an interface up by its index found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    /// The kernel says there is no such interface.
    Gone,
    /// The lookup failed (out of file descriptors, say): nothing can be concluded.
    Unknown(nix::errno::Errno),
}

/// The name of the interface with this index, in the calling thread's namespace. Only the
/// kernel's "no such device" means gone.
///
/// libc directly, not nix: nix 0.29's `if_indextoname` takes a null return for success (its
/// sentinel for pointers is -1) and gives an empty name, so any failure (out of descriptors:
/// glibc opens a socket for the lookup) looked like a port renamed to "".
pub fn ifname(ifindex: u32) -> Lookup {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname(3) writes at most.
    if unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) }.is_null() {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::ENODEV | nix::errno::Errno::ENXIO => Lookup::Gone,
            e => Lookup::Unknown(e),
        };
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Lookup::Found(name.to_string_lossy().into_owned())
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Tun => "tun".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Other(s) => s.clone(),
        k => format!("{k:?}").to_lowercase(),
    }
}

/// Which interfaces are VM ports: the one rule for attach requests and for the ports the daemon
/// guards by itself.
///
/// - A bridge is never a VM port, nor is the loopback.
/// - In a managed bridge (`--bridge`), VM ports are taps, and interfaces whose names match
///   `--vm-ports` (for veth-based set-ups); every other port there (the uplink) is refused.
/// - Elsewhere taps and veths are VM ports; anything else (a NIC, a bond, a VXLAN device) only
///   when the request forces it.
#[derive(Clone, Debug, Default)]
pub struct VmPorts {
    /// The managed bridges, by name.
    bridges: Vec<String>,
    pattern: Option<glob::Pattern>,
}

impl VmPorts {
    pub fn new(bridges: Vec<String>, pattern: Option<glob::Pattern>) -> Self {
        Self { bridges, pattern }
    }

    fn vm_shaped(&self, link: &LinkInfo) -> bool {
        link.kind.as_deref() == Some("tun")
            || self.pattern.as_ref().is_some_and(|p| p.matches(&link.name))
    }

    fn in_managed_bridge(&self, link: &LinkInfo) -> Option<String> {
        let Lookup::Found(bridge) = ifname(link.master?) else {
            return None;
        };
        self.bridges.contains(&bridge).then_some(bridge)
    }

    /// Why `link` cannot carry a binding, if it cannot.
    pub fn refusal(&self, link: &LinkInfo, force: bool) -> Option<String> {
        if link.kind.as_deref() == Some("bridge") {
            return Some("is a bridge, not a VM port".into());
        }
        if link.name == "lo" {
            return Some("is the loopback, not a VM port".into());
        }
        if self.vm_shaped(link) {
            return None;
        }
        if let Some(bridge) = self.in_managed_bridge(link) {
            return Some(format!(
                "is a port of the managed bridge {bridge} but not a VM port (a tap{}): the \
                 bridge's uplink?",
                self.pattern
                    .as_ref()
                    .map(|p| format!(" or a name matching {p}"))
                    .unwrap_or_default()
            ));
        }
        if force || link.kind.as_deref() == Some("veth") {
            return None;
        }
        Some(format!(
            "is not a tap or a veth ({}); give --force if it really is a VM's port",
            link.kind.as_deref().unwrap_or("no kind: a physical NIC?")
        ))
    }

    /// Whether the daemon puts its programs on `link` as soon as it appears: a VM port in a
    /// managed bridge.
    pub fn managed(&self, link: &LinkInfo) -> bool {
        self.vm_shaped(link) && self.in_managed_bridge(link).is_some()
    }

    /// Whether `link` is a port of a managed bridge towards the network (its uplink, a trunk):
    /// where frames of other hosts come in.
    pub fn network_side(&self, link: &LinkInfo) -> bool {
        !self.vm_shaped(link) && self.in_managed_bridge(link).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_tells_gone_from_found() {
        assert_eq!(ifname(1), Lookup::Found("lo".into()));
        // No namespace has this many interfaces: gone, not a port renamed to "".
        assert_eq!(ifname(0x7fff_fff0), Lookup::Gone);
    }
}
