//! The switch's maps, pinned by name under the switch's own directory. Layouts come from
//! `mat_common::switch`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
};
use mat_common::switch::{
    COUNTER_ENTRIES, Config, Learned, MAX_LEARNED, MAX_PORTS, MAX_ROUTES, Port, Route, VlanMac,
};

#[map(name = "SW_ROUTES")]
pub static ROUTES: LpmTrie<VlanMac, Route> = LpmTrie::pinned(MAX_ROUTES, 0);

#[map(name = "SW_LEARNED")]
pub static LEARNED: LruHashMap<VlanMac, Learned> = LruHashMap::pinned(MAX_LEARNED, 0);

#[map(name = "SW_PORTS")]
pub static PORTS: Array<Port> = Array::pinned(MAX_PORTS, 0);

#[map(name = "SW_PORT_SLOTS")]
pub static PORT_SLOTS: HashMap<u32, u32> = HashMap::pinned(MAX_PORTS, 0);

#[map(name = "SW_CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map(name = "SW_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_ENTRIES, 0);

#[map(name = "SW_ROUTE_COUNTERS")]
static ROUTE_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(MAX_ROUTES, 0);

#[map(name = "SW_PORT_COUNTERS")]
static PORT_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(2 * MAX_PORTS, 0);

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32, by: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot; no other writer on this CPU while the program runs.
        unsafe { *c += by };
    }
}

#[inline(always)]
pub fn count(index: u32) {
    bump(&COUNTERS, index, 1);
}

#[inline(always)]
pub fn count_by(index: u32, n: u64) {
    bump(&COUNTERS, index, n);
}

#[inline(always)]
pub fn count_route(slot: u32) {
    bump(&ROUTE_COUNTERS, slot, 1);
}

#[inline(always)]
pub fn count_rx(port: u32) {
    bump(&PORT_COUNTERS, 2 * port, 1);
}

#[inline(always)]
pub fn count_tx(port: u32) {
    bump(&PORT_COUNTERS, 2 * port + 1, 1);
}

/// A (VLAN, MAC) built from two words the way the frame holds them, in a naturally aligned
/// place (the verifier refuses misaligned stack access, and LLVM splits a store it cannot prove
/// aligned into bytes).
#[repr(C, align(8))]
pub struct LpmKey {
    prefix_len: u32,
    data: VlanMac,
}

impl LpmKey {
    /// `w0`: VLAN (big-endian) and the MAC's first two octets; `w1`: its last four (both as the
    /// frame holds them, read in memory order).
    #[inline(always)]
    #[expect(clippy::cast_ptr_alignment, reason = "aligned: see the SAFETY note")]
    pub fn new(w0: u32, w1: u32) -> Self {
        let mut k = LpmKey {
            prefix_len: 64,
            data: VlanMac::default(),
        };
        let p = core::ptr::addr_of_mut!(k.data).cast::<u32>();
        // SAFETY: `data` sits at offset 4 of an 8-aligned struct: both words are aligned.
        unsafe {
            p.write(w0);
            p.add(1).write(w1);
        }
        k
    }

    /// The route covering this (VLAN, MAC), if any.
    #[inline(always)]
    pub fn route(&self) -> Option<&Route> {
        // SAFETY: `LpmKey` has `Key<VlanMac>`'s bytes: a u32 then the data, no padding between.
        ROUTES.get(unsafe { &*core::ptr::from_ref::<LpmKey>(self).cast::<Key<VlanMac>>() })
    }

    /// The learned entry of this (VLAN, MAC), if any.
    #[inline(always)]
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "the key stays in its aligned place: no copy"
    )]
    pub fn learned(&self) -> Option<*mut Learned> {
        LEARNED.get_ptr_mut(&self.data)
    }

    #[inline(always)]
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "the key stays in its aligned place: no copy"
    )]
    pub fn learn(&self, port: u32, now: u64) -> bool {
        let entry = Learned {
            port,
            _pad: 0,
            seen_ns: now,
        };
        LEARNED.insert(&self.data, &entry, 0).is_ok()
    }
}
