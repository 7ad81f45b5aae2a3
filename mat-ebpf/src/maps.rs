//! The maps, pinned by name so the data plane outlives the process that loaded it. Layouts come
//! from mat-common.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use mat_common::{
    counters::{self, Hook, Outcome},
    event::{DROP_HEAD, DropEvent, Event, EventKind},
    maps::{
        BINDING_ANNOUNCE, Binding, BindingKey, EVENTS_BYTES, MAX_BINDINGS, PORT_OVERFLOW_ENTRIES,
        PORT_SLOTS, PortSlot, SETTING_MONITOR, Settings,
    },
    pool::{MAX_POOLS, Pools},
};

use core::ptr::addr_of_mut;

use crate::{frame::Frame, mac::Mac};

#[map(name = "MAT_FROM_VM")]
static FROM_VM: HashMap<BindingKey, Binding> = HashMap::pinned(MAX_BINDINGS, 0);

#[map(name = "MAT_TO_VM")]
static TO_VM: HashMap<BindingKey, Binding> = HashMap::pinned(MAX_BINDINGS, 0);

/// Mmapable, so that the control plane reads the whole table through its pages.
#[map(name = "MAT_PORTS")]
static PORTS: Array<PortSlot> = Array::pinned(PORT_SLOTS, BPF_F_MMAPABLE);

#[map(name = "MAT_PORT_OVERFLOW")]
static PORT_OVERFLOW: HashMap<u32, PortSlot> = HashMap::pinned(PORT_OVERFLOW_ENTRIES, 0);

#[map(name = "MAT_SETTINGS")]
static SETTINGS: Array<Settings> = Array::pinned(1, 0);

#[map(name = "MAT_POOLS")]
static POOLS: Array<Pools> = Array::pinned(1, 0);

#[map(name = "MAT_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counters::ENTRIES, 0);

#[map(name = "MAT_EVENTS")]
static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

#[inline(always)]
pub fn count(hook: Hook, outcome: Outcome) {
    if let Some(c) = COUNTERS.get_ptr_mut(counters::index(hook, outcome)) {
        // SAFETY: a per-CPU slot; no other writer on this CPU while the program runs.
        unsafe { *c += 1 };
    }
}

/// Uplink mode: the translation of `mac` from the VM, if bound.
#[inline(always)]
pub fn from_vm(ifindex: u32, mac: Mac) -> Option<*mut Binding> {
    FROM_VM.get_ptr_mut(mac.key(ifindex))
}

/// Uplink mode: the translation of `mac` towards the VM, if bound.
#[inline(always)]
pub fn to_vm(ifindex: u32, mac: Mac) -> Option<*const Binding> {
    TO_VM.get_ptr(mac.key(ifindex))
}

/// The binding of the port `ifindex`, if it is bound: its slot in the port table, or (when
/// another port holds that slot) its overflow entry.
#[inline(always)]
pub fn port(ifindex: u32) -> Option<*mut PortSlot> {
    if let Some(slot) = PORTS.get_ptr_mut(ifindex % PORT_SLOTS) {
        // SAFETY: a live map value.
        if unsafe { (*slot).ifindex } == ifindex {
            return Some(slot);
        }
    }
    PORT_OVERFLOW.get_ptr_mut(ifindex)
}

/// The host's `SETTING_*` flags.
#[inline(always)]
pub fn settings() -> u32 {
    SETTINGS.get(0).map_or(0, |s| s.flags)
}

/// Whether `mac` lies inside an outside pool. A fixed number of mask compares, no scan of
/// bindings.
#[inline(always)]
pub fn in_pool(mac: Mac) -> bool {
    let Some(pools) = POOLS.get(0) else {
        return false;
    };
    let count = pools.count as usize;
    for i in 0..MAX_POOLS {
        if i >= count {
            break;
        }
        let p = &pools.prefixes[i];
        // SAFETY: both fields are 6-byte arrays inside the map value.
        let (prefix, mask) = unsafe { (Mac::read(p.prefix.as_ptr()), Mac::read(p.mask.as_ptr())) };
        if mac.masked_eq(mask, prefix) {
            return true;
        }
    }
    false
}

/// The binding's first frame since attach: clear the flag and tell the control plane the VM runs.
#[inline(always)]
pub fn announce_if_pending(b: *mut Binding, ifindex: u32, inside: Mac) {
    // SAFETY: `b` points into a map value for this program's run.
    unsafe {
        if (*b).flags & BINDING_ANNOUNCE == 0 {
            return;
        }
        (*b).flags &= !BINDING_ANNOUNCE;
    }
    notify(EventKind::Active, ifindex, inside, [0; 4], [0; 16]);
}

/// Records in the VM's binding the IPv4 address it claims for its inside MAC; a new or changed
/// one raises an event.
#[inline(always)]
pub fn learn(b: *mut Binding, ifindex: u32, inside: Mac, ipv4: u32) {
    // SAFETY: `b` points into a map value for this program's run; `ipv4` sits 4-byte aligned in it.
    unsafe {
        let learned = addr_of_mut!((*b).ipv4).cast::<u32>();
        if learned.read() == ipv4 {
            return;
        }
        learned.write(ipv4);
    }
    notify(
        EventKind::Learned,
        ifindex,
        inside,
        ipv4.to_ne_bytes(),
        [0; 16],
    );
}

/// Reports an IPv6 address (its four words as they sit in the frame) the VM claims in its own
/// ND, once per address in a row (the binding keeps a fold of the last one).
#[inline(always)]
pub fn learn6(b: *mut Binding, ifindex: u32, inside: Mac, w: [u32; 4]) {
    // A multiply-mix of the two halves: addresses a bit or two apart (the same interface ID in
    // two adjacent /64s) fold apart. Never zero, so that "nothing learned yet" differs from any
    // address; only a fold of zero is moved (to one), no bit of the others is lost.
    let lo = u64::from(w[0]) | u64::from(w[1]) << 32;
    let hi = u64::from(w[2]) | u64::from(w[3]) << 32;
    let mixed = (lo.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ hi).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    let fold = match (mixed >> 32) as u32 {
        0 => 1,
        f => f,
    };
    // SAFETY: `b` points into a map value for this program's run.
    unsafe {
        let seen = addr_of_mut!((*b).ipv6_fold);
        if seen.read() == fold {
            return;
        }
        seen.write(fold);
    }
    // SAFETY: sixteen bytes either way; the words hold them in frame order.
    let ipv6: [u8; 16] = unsafe { core::mem::transmute(w) };
    notify(EventKind::Learned6, ifindex, inside, [0; 4], ipv6);
}

#[inline(always)]
fn notify(kind: EventKind, ifindex: u32, inside: Mac, ipv4: [u8; 4], ipv6: [u8; 16]) {
    let mut event = Event {
        kind: kind as u32,
        ifindex,
        mac: [0; 6],
        _pad: [0; 2],
        ipv4,
        ipv6,
    };
    // SAFETY: `event.mac` is 6 bytes.
    unsafe { inside.write(event.mac.as_mut_ptr()) };
    // A full ring loses the event; the control plane also reads the learned map.
    let _ = EVENTS.output::<Event>(&event, 0);
}

/// Reports a dropped frame to `mat monitor`, only while one watches (the settings flag). Rate
/// limited by the ring itself: nothing is queued while a quarter of it is unread (a flood, the
/// control plane behind); the counters still count every drop.
#[inline(always)]
pub fn report_drop<F: Frame>(f: &F, hook: Hook, outcome: Outcome) {
    if settings() & SETTING_MONITOR == 0 {
        return;
    }
    // BPF_RB_AVAIL_DATA: bytes written and not yet read.
    if EVENTS.query(0) > u64::from(EVENTS_BYTES / 4) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record, written field by field before it is submitted.
    unsafe {
        (*e).kind = EventKind::Dropped as u32;
        (*e).ifindex = f.ifindex();
        (*e).hook = hook as u8;
        (*e).outcome = outcome as u8;
        (*e).len = f.len() as u16;
        (*e)._pad = [0; 2];
        let head = addr_of_mut!((*e).head).cast::<u8>();
        (*e).captured = f.load_head(head, DROP_HEAD) as u16;
    }
    entry.submit(0);
}
