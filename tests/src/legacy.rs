//! What the first release left behind, for upgrade tests: its data plane pinned in layout 1
//! (maps and `links/` directly in the pin directory, no version) and its `state.json`. The
//! programs and maps are the first release's own ([`OBJECT`], see
//! `tests/fixtures/layout-1/README.md`).

use std::path::Path;

use aya::{
    EbpfLoader,
    maps::{Array, HashMap},
    programs::{LinkOrder, SchedClassifier, TcAttachType, links::FdLink, tc::TcAttachOptions},
};
use mat_common::{
    MacAddr,
    maps::{self as names, BINDING_ANNOUNCE, BindingKey},
    pool::{PoolPrefix, Pools},
};

/// The first release's kernel object.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../fixtures/layout-1/mat.bpf.o");

/// The binding value of layout 1: the translated MAC, flags and the learned IPv4 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub mac: MacAddr,
    pub flags: u16,
    pub ipv4: [u8; 4],
}

impl Binding {
    pub const fn new(mac: MacAddr, flags: u16) -> Self {
        Self {
            mac,
            flags,
            ipv4: [0; 4],
        }
    }
}

// SAFETY: plain repr(C) data with no implicit padding.
unsafe impl aya::Pod for Binding {}

/// Pins the data plane as the first release did: maps in `pin_dir`, the port programs attached
/// to `port` (TCX) with their links in `pin_dir/links/<ifindex>-<program>`, the pool set and
/// `inside <-> outside` bound. Run it in the port's namespace.
pub fn pin_layout_1(
    pin_dir: &Path,
    port: &str,
    inside: MacAddr,
    outside: MacAddr,
    pool: PoolPrefix,
) {
    std::fs::create_dir_all(pin_dir.join("links")).expect("creating the pin directory");
    let mut ebpf = EbpfLoader::new()
        .map_pin_path(pin_dir)
        .load(OBJECT)
        .expect("loading the object with flat pins");
    let ifindex = nix::net::if_::if_nametoindex(port).expect("the port exists");
    let mut pools = Pools {
        count: 1,
        ..Default::default()
    };
    pools.prefixes[0] = pool;
    Array::<_, Pools>::try_from(ebpf.map_mut(names::POOLS).unwrap())
        .unwrap()
        .set(0, pools, 0)
        .unwrap();
    HashMap::<_, BindingKey, Binding>::try_from(ebpf.map_mut(names::TO_VM).unwrap())
        .unwrap()
        .insert(
            BindingKey::new(ifindex, outside),
            Binding::new(inside, 0),
            0,
        )
        .unwrap();
    HashMap::<_, BindingKey, Binding>::try_from(ebpf.map_mut(names::FROM_VM).unwrap())
        .unwrap()
        .insert(
            BindingKey::new(ifindex, inside),
            Binding::new(outside, BINDING_ANNOUNCE),
            0,
        )
        .unwrap();
    for (name, at) in [
        ("port_from_vm", TcAttachType::Ingress),
        ("port_to_vm", TcAttachType::Egress),
    ] {
        let prog: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
        prog.load().unwrap();
        let id = prog
            .attach_with_options(port, at, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .unwrap();
        let link: FdLink = prog.take_link(id).unwrap().try_into().unwrap();
        link.pin(pin_dir.join("links").join(format!("{ifindex}-{name}")))
            .unwrap();
    }
}
