//! What MAT reads from a libvirt domain XML (as libvirt hands it to its qemu hook): the domain's
//! UUID and name, and each `<interface>`: its type, guest MAC, tap (`<target dev>`), bridge,
//! network, alias, and the IPv4 and IPv6 addresses MAT's own metadata gives for it.
//!
//! The bridge is `<source bridge=...>`: on `type='bridge'` it is there in every XML; on
//! `type='network'` libvirt adds it only to the live XML (from `start` on), where it also
//! rewrites the interface to the type the network resolved to (`bridge` for a bridged network).
//! The tap appears from `start` on; `prepare`, `stopped` and `release` XML have none.
//!
//! # MAT metadata
//!
//! IPv4 addresses to announce with gratuitous ARP, and interfaces to leave alone, go in the
//! domain's `<metadata>` under MAT's namespace [`NAMESPACE`]:
//!
//! ```xml
//! <metadata>
//!   <mat:vm xmlns:mat="urn:x-mat:libvirt:1">
//!     <mat:interface mac="52:54:00:aa:00:01">
//!       <mat:ipv4 address="198.51.100.2"/>
//!       <mat:ipv4 address="198.51.100.3"/>
//!       <mat:ipv6 address="2001:db8::3"/>
//!     </mat:interface>
//!     <mat:interface mac="52:54:00:aa:00:02" translate="no"/>
//!   </mat:vm>
//! </metadata>
//! ```
//!
//! `<mat:interface mac=...>` names an interface of the domain by its guest MAC; `translate="no"`
//! keeps MAT off it. A `<mat:ipv4>` directly under `<mat:vm>` belongs to the domain's only
//! translated interface (an error when it has several). `virsh metadata DOM urn:x-mat:libvirt:1
//! --key mat --set '<vm><ipv4 address="198.51.100.2"/></vm>'` writes it. Addresses the data plane
//! learns from the guest's own ARP are announced too; the metadata is for what must be announced
//! before the guest speaks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use roxmltree::{Document, Node};

use crate::mac::Mac;

/// The XML namespace of MAT's element in a domain's `<metadata>`.
pub const NAMESPACE: &str = "urn:x-mat:libvirt:1";

/// Interface types whose guest side is a tap that MAT can translate on: in a Linux (or Open
/// vSwitch) bridge, or bare. `direct` (macvtap), `user`, `vhostuser` and `hostdev` have no tap.
const TAP_TYPES: &[&str] = &["bridge", "network", "ethernet"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    /// Lower case, as libvirt writes it.
    pub uuid: String,
    pub interfaces: Vec<Interface>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The `type` attribute: `bridge`, `network`, `ethernet`, `direct`, ...
    pub kind: String,
    /// The guest's own (inside) MAC.
    pub mac: Mac,
    /// The host side (`<target dev>`), in live XML only.
    pub tap: Option<String>,
    pub bridge: Option<String>,
    pub network: Option<String>,
    pub alias: Option<String>,
    /// From MAT's metadata: `<mat:ipv4>` and `<mat:ipv6>` addresses.
    pub ips: Vec<IpAddr>,
    /// False when MAT's metadata says `translate="no"`.
    pub translate: bool,
}

impl Interface {
    /// Whether MAT binds this interface (given a tap to bind on).
    pub fn translated(&self) -> bool {
        self.translate && TAP_TYPES.contains(&self.kind.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("the domain XML does not parse: {0}")]
    Parse(#[from] roxmltree::Error),
    #[error("the XML's root is <{0}>, not <domain>")]
    NotDomain(String),
    #[error("the domain XML has no <{0}>")]
    Missing(&'static str),
    #[error("the domain's <uuid> {0:?} is not a UUID")]
    BadUuid(String),
    #[error("interface {index}: {message}")]
    Interface { index: usize, message: String },
    #[error("MAT metadata ({NAMESPACE}): {0}")]
    Metadata(String),
}

/// The domain's name and UUID only: what releasing needs, from any XML libvirt sends.
pub fn identity(xml: &str) -> Result<(String, String), XmlError> {
    let doc = Document::parse(xml)?;
    let root = domain(&doc)?;
    Ok((name(root)?, uuid(root)?))
}

/// Everything MAT reads from the domain XML, metadata included.
pub fn parse(xml: &str) -> Result<Domain, XmlError> {
    let doc = Document::parse(xml)?;
    let root = domain(&doc)?;
    let mut interfaces = Vec::new();
    if let Some(devices) = child(root, "devices") {
        for (index, node) in children(devices, "interface").enumerate() {
            interfaces.push(interface(index, node)?);
        }
    }
    let mut dom = Domain {
        name: name(root)?,
        uuid: uuid(root)?,
        interfaces,
    };
    if let Some(meta) = child(root, "metadata") {
        for vm in meta
            .children()
            .filter(|n| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE))
        {
            metadata(vm, &mut dom)?;
        }
    }
    Ok(dom)
}

fn domain<'a>(doc: &'a Document) -> Result<Node<'a, 'a>, XmlError> {
    let root = doc.root_element();
    if root.tag_name().name() != "domain" || root.tag_name().namespace().is_some() {
        return Err(XmlError::NotDomain(root.tag_name().name().to_owned()));
    }
    Ok(root)
}

fn name(root: Node) -> Result<String, XmlError> {
    text(root, "name").ok_or(XmlError::Missing("name"))
}

fn uuid(root: Node) -> Result<String, XmlError> {
    let raw = text(root, "uuid").ok_or(XmlError::Missing("uuid"))?;
    // libvirt accepts UUIDs with or without dashes and writes them dashed, in lower case.
    let hex: String = raw.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(XmlError::BadUuid(raw));
    }
    let h = hex.to_ascii_lowercase();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn interface(index: usize, node: Node) -> Result<Interface, XmlError> {
    let err = |message: String| XmlError::Interface { index, message };
    let kind = node
        .attribute("type")
        .ok_or_else(|| err("no type attribute".into()))?
        .to_owned();
    let mac = child(node, "mac")
        .and_then(|m| m.attribute("address"))
        .ok_or_else(|| err("no <mac address>".into()))?;
    let mac: Mac = mac.parse().map_err(|e| err(format!("{e}")))?;
    let attr = |element: &str, name: &str| {
        child(node, element)
            .and_then(|n| n.attribute(name))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Ok(Interface {
        kind,
        mac,
        tap: attr("target", "dev"),
        bridge: attr("source", "bridge"),
        network: attr("source", "network"),
        alias: attr("alias", "name"),
        ips: Vec::new(),
        translate: true,
    })
}

/// Applies one `<mat:vm>` element to the domain's interfaces.
fn metadata(vm: Node, dom: &mut Domain) -> Result<(), XmlError> {
    let bad = |m: String| XmlError::Metadata(m);
    if vm.tag_name().name() != "vm" {
        return Err(bad(format!(
            "unknown element <{}> (expected <vm>)",
            vm.tag_name().name()
        )));
    }
    let mut domain_wide = Vec::new();
    for node in vm.children().filter(Node::is_element) {
        if node.tag_name().namespace() != Some(NAMESPACE) {
            return Err(bad(format!(
                "<{}> is not in MAT's namespace",
                node.tag_name().name()
            )));
        }
        match node.tag_name().name() {
            // Applied once every <interface> has said whether it is translated.
            "ipv4" | "ipv6" => domain_wide.push(address(node)?),
            "interface" => {
                let mac: Mac = node
                    .attribute("mac")
                    .ok_or_else(|| bad("<interface> without mac=".into()))?
                    .parse()
                    .map_err(|e| bad(format!("{e}")))?;
                let translate = match node.attribute("translate") {
                    None | Some("yes") => true,
                    Some("no") => false,
                    Some(other) => {
                        return Err(bad(format!(
                            "translate=\"{other}\" on interface {mac} (expected yes or no)"
                        )));
                    }
                };
                let mut ips = Vec::new();
                for ip in node.children().filter(Node::is_element) {
                    if !["ipv4", "ipv6"].contains(&ip.tag_name().name())
                        || ip.tag_name().namespace() != Some(NAMESPACE)
                    {
                        return Err(bad(format!(
                            "unknown element <{}> in <interface mac=\"{mac}\">",
                            ip.tag_name().name()
                        )));
                    }
                    ips.push(address(ip)?);
                }
                let iface = dom
                    .interfaces
                    .iter_mut()
                    .find(|i| i.mac == mac)
                    .ok_or_else(|| bad(format!("the domain has no interface with MAC {mac}")))?;
                iface.translate = translate;
                iface.ips.extend(ips);
            }
            other => return Err(bad(format!("unknown element <{other}>"))),
        }
    }
    for ip in domain_wide {
        let mut translated = dom.interfaces.iter_mut().filter(|i| i.translated());
        match (translated.next(), translated.next()) {
            (Some(only), None) => only.ips.push(ip),
            (None, _) => {
                return Err(bad(format!(
                    "address {ip} but the domain has no translated interface"
                )));
            }
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "address {ip} directly under <vm>, but the domain has several translated \
                     interfaces: put it in <interface mac=...>"
                )));
            }
        }
    }
    for iface in &mut dom.interfaces {
        iface.ips.sort_unstable();
        iface.ips.dedup();
    }
    Ok(())
}

/// The address of an `<ipv4>` or `<ipv6>` element.
fn address(node: Node) -> Result<IpAddr, XmlError> {
    let kind = node.tag_name().name();
    let raw = node
        .attribute("address")
        .ok_or_else(|| XmlError::Metadata(format!("<{kind}> without address=")))?;
    let ip: IpAddr = match kind {
        "ipv4" => raw.parse::<Ipv4Addr>().map(IpAddr::V4).ok(),
        _ => raw.parse::<Ipv6Addr>().map(IpAddr::V6).ok(),
    }
    .ok_or_else(|| XmlError::Metadata(format!("{raw:?} is not an {kind} address")))?;
    if !crate::announce::announceable(ip) {
        return Err(XmlError::Metadata(format!(
            "{ip} cannot be a VM's own address"
        )));
    }
    Ok(ip)
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> Option<Node<'a, 'i>> {
    children(node, name).next()
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |n| {
        n.is_element() && n.tag_name().name() == name && n.tag_name().namespace().is_none()
    })
}

fn text(node: Node, name: &str) -> Option<String> {
    child(node, name)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/libvirt");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}"))
            .unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
    }

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    #[test]
    fn live_xml_with_a_bridge_and_a_network_interface() {
        let d = parse(&fixture("two-nics.start.xml")).unwrap();
        assert_eq!(d.name, "matg1");
        assert_eq!(d.uuid, "1a1a2041-d18d-483e-a1b9-5f57ceffe17d");
        assert_eq!(d.interfaces.len(), 2);
        let [a, b] = &d.interfaces[..] else {
            unreachable!()
        };
        assert_eq!(a.kind, "bridge");
        assert_eq!(a.mac, mac("52:54:00:aa:00:01"));
        assert_eq!(a.tap.as_deref(), Some("vnet0"));
        assert_eq!(a.bridge.as_deref(), Some("mxbrA"));
        assert_eq!(a.network, None);
        assert_eq!(a.alias.as_deref(), Some("net0"));
        assert_eq!(a.ips, vec![IpAddr::from([198, 51, 100, 2])]);
        // A bridged network: live XML has type='bridge', the network and its bridge.
        assert_eq!(b.kind, "bridge");
        assert_eq!(b.tap.as_deref(), Some("vnet1"));
        assert_eq!(b.bridge.as_deref(), Some("mxbrB"));
        assert_eq!(b.network.as_deref(), Some("matnet"));
        assert_eq!(b.alias.as_deref(), Some("net1"));
        assert!(b.ips.is_empty());
        assert!(a.translated() && b.translated());
    }

    #[test]
    fn stop_time_and_inactive_xml_have_no_taps() {
        for f in [
            "two-nics.prepare.xml",
            "two-nics.stopped.xml",
            "two-nics.release.xml",
            "two-nics.migrate.xml",
            "two-nics.restore.xml",
            "one-nic.stopped.xml",
            "one-nic.release.xml",
        ] {
            let d = parse(&fixture(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(d.interfaces.iter().all(|i| i.tap.is_none()), "{f}");
            assert!(!d.interfaces.is_empty(), "{f}");
        }
        // Inactive XML: the network interface is still type='network', without a bridge.
        let d = parse(&fixture("two-nics.migrate.xml")).unwrap();
        assert_eq!(d.interfaces[1].kind, "network");
        assert_eq!(d.interfaces[1].bridge, None);
    }

    #[test]
    fn migration_destination_and_reconnect() {
        let d = parse(&fixture("two-nics.migrated-start.xml")).unwrap();
        let taps: Vec<_> = d.interfaces.iter().map(|i| i.tap.clone()).collect();
        assert_eq!(taps, [Some("vnet0".into()), Some("vnet1".into())]);
        let r = parse(&fixture("two-nics.reconnect.xml")).unwrap();
        assert_eq!(r.uuid, d.uuid);
        assert!(r.interfaces.iter().all(|i| i.tap.is_some()));
    }

    #[test]
    fn one_nic_without_metadata() {
        let d = parse(&fixture("one-nic.start.xml")).unwrap();
        assert_eq!(d.interfaces.len(), 1);
        let i = &d.interfaces[0];
        assert_eq!(i.mac, mac("52:54:00:aa:00:03"));
        assert_eq!(i.network.as_deref(), Some("matnet"));
        assert!(i.tap.is_some() && i.bridge.is_some());
        assert!(i.ips.is_empty());
        assert_eq!(
            identity(&fixture("one-nic.release.xml")).unwrap(),
            ("matg2".to_owned(), d.uuid.clone())
        );
    }

    fn with_metadata(meta: &str) -> Result<Domain, XmlError> {
        let xml = fixture("two-nics.start.xml");
        let start = xml.find("<metadata>").unwrap();
        let end = xml.find("</metadata>").unwrap() + "</metadata>".len();
        parse(&format!(
            "{}<metadata>{meta}</metadata>{}",
            &xml[..start],
            &xml[end..]
        ))
    }

    #[test]
    fn metadata() {
        let d = with_metadata(
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1">
                 <m:interface mac="52:54:00:AA:00:02"><m:ipv4 address="203.0.113.9"/>
                   <m:ipv4 address="203.0.113.8"/></m:interface>
                 <m:interface mac="52:54:00:aa:00:01" translate="no"/>
               </m:vm>
               <other xmlns="urn:example:unrelated"><ipv4 address="1"/></other>"#,
        )
        .unwrap();
        assert!(!d.interfaces[0].translated());
        assert_eq!(
            d.interfaces[1].ips,
            [
                IpAddr::from([203, 0, 113, 8]),
                IpAddr::from([203, 0, 113, 9])
            ]
        );
        // Domain-level addresses need exactly one translated interface.
        let one = with_metadata(
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1"><m:ipv4 address="192.0.2.7"/>
               <m:interface mac="52:54:00:aa:00:01" translate="no"/></m:vm>"#,
        )
        .unwrap();
        assert_eq!(one.interfaces[1].ips, [IpAddr::from([192, 0, 2, 7])]);
        let six = with_metadata(
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1"><m:interface mac="52:54:00:aa:00:01">
                 <m:ipv6 address="2001:db8::7"/><m:ipv4 address="192.0.2.7"/></m:interface></m:vm>"#,
        )
        .unwrap();
        assert_eq!(
            six.interfaces[0].ips,
            [
                IpAddr::from([192, 0, 2, 7]),
                "2001:db8::7".parse::<IpAddr>().unwrap()
            ]
        );
    }

    #[test]
    fn bad_metadata_is_an_error() {
        for bad in [
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1"><m:ipv4 address="192.0.2.7"/></m:vm>"#,
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1"><m:interface mac="52:54:00:00:00:09"/></m:vm>"#,
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1"><m:interface/></m:vm>"#,
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1"><m:interface mac="52:54:00:aa:00:01" translate="maybe"/></m:vm>"#,
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1"><m:interface mac="52:54:00:aa:00:01"><m:ipv4 address="192.0.2.300"/></m:interface></m:vm>"#,
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1"><m:interface mac="52:54:00:aa:00:01"><m:ipv4 address="224.0.0.1"/></m:interface></m:vm>"#,
            r#"<m:vm xmlns:m="urn:x-mat:libvirt:1"><m:addr/></m:vm>"#,
            r#"<m:host xmlns:m="urn:x-mat:libvirt:1"/>"#,
        ] {
            assert!(
                matches!(with_metadata(bad), Err(XmlError::Metadata(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_domains() {
        assert!(matches!(parse("<domain"), Err(XmlError::Parse(_))));
        assert!(matches!(parse("<network/>"), Err(XmlError::NotDomain(_))));
        assert!(matches!(
            parse("<domain><name>x</name></domain>"),
            Err(XmlError::Missing("uuid"))
        ));
        assert!(matches!(
            parse("<domain><name>x</name><uuid>nope</uuid></domain>"),
            Err(XmlError::BadUuid(_))
        ));
        let d = parse(
            "<domain><name>x</name><uuid>1A1A2041D18D483EA1B95F57CEFFE17D</uuid>\
             <devices><interface type='user'><mac address='52:54:00:00:00:01'/></interface>\
             </devices></domain>",
        )
        .unwrap();
        assert_eq!(d.uuid, "1a1a2041-d18d-483e-a1b9-5f57ceffe17d");
        assert!(!d.interfaces[0].translated());
        assert!(matches!(
            parse(
                "<domain><name>x</name><uuid>1a1a2041-d18d-483e-a1b9-5f57ceffe17d</uuid>\
                 <devices><interface type='bridge'/></devices></domain>"
            ),
            Err(XmlError::Interface { index: 0, .. })
        ));
    }
}
