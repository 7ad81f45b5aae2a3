//! Where the rules find a frame's translation: the port table on a VM port (one array lookup,
//! then compares), the MAC-keyed hash maps on the uplink.

use mat_common::maps::{BINDING_PORT_SECURITY, Binding, PortSlot, UPLINK_IFINDEX};

use crate::{mac::Mac, maps};

pub trait Bindings {
    /// On a VM port: the spoof, reflection and port-security checks apply.
    const PORT: bool;
    fn ifindex(&self) -> u32;
    /// From the VM: `mac`'s binding (its outside MAC, and where to learn).
    fn binding(&self, mac: Mac) -> Option<*mut Binding>;
    /// To the VM: the inside MAC of the outside MAC `mac`.
    fn inside_of(&self, mac: Mac) -> Option<Mac>;
    /// Whether `mac` is the VM's own outside MAC here (its announcements coming back).
    fn is_own_outside(&self, mac: Mac) -> bool;
    /// The only MAC the VM may claim, when port security applies.
    fn secured(&self) -> Option<Mac>;
}

/// A VM port and its slot in the port table, if it is bound.
pub struct Port {
    ifindex: u32,
    slot: Option<*mut PortSlot>,
}

impl Port {
    #[inline(always)]
    pub fn new(ifindex: u32) -> Self {
        Self {
            ifindex,
            slot: maps::port(ifindex),
        }
    }

    /// # Safety
    /// `slot` points at a live map value for the program's run.
    #[inline(always)]
    unsafe fn inside(slot: *const PortSlot) -> Mac {
        // SAFETY: the caller's promise: a live map value.
        unsafe { Mac::read((*slot).inside.as_ptr()) }
    }

    #[inline(always)]
    unsafe fn outside(slot: *const PortSlot) -> Mac {
        // SAFETY: as for `inside`.
        unsafe { Mac::read((*slot).binding.mac.as_ptr()) }
    }
}

impl Bindings for Port {
    const PORT: bool = true;

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    #[inline(always)]
    fn binding(&self, mac: Mac) -> Option<*mut Binding> {
        let slot = self.slot?;
        // SAFETY: the slot is a live map value; the binding sits inside it.
        unsafe { (Self::inside(slot) == mac).then(|| core::ptr::addr_of_mut!((*slot).binding)) }
    }

    #[inline(always)]
    fn inside_of(&self, mac: Mac) -> Option<Mac> {
        let slot = self.slot?;
        // SAFETY: as above.
        unsafe { (Self::outside(slot) == mac).then(|| Self::inside(slot)) }
    }

    #[inline(always)]
    fn is_own_outside(&self, mac: Mac) -> bool {
        // SAFETY: as above.
        self.slot
            .is_some_and(|s| unsafe { Self::outside(s) } == mac)
    }

    #[inline(always)]
    fn secured(&self) -> Option<Mac> {
        let slot = self.slot?;
        // SAFETY: as above.
        unsafe { ((*slot).binding.flags & BINDING_PORT_SECURITY != 0).then(|| Self::inside(slot)) }
    }
}

/// The uplink: bindings keyed by MAC only; no per-port checks.
pub struct Uplink;

impl Bindings for Uplink {
    const PORT: bool = false;

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        UPLINK_IFINDEX
    }

    #[inline(always)]
    fn binding(&self, mac: Mac) -> Option<*mut Binding> {
        if !mac.can_bind() {
            return None;
        }
        maps::from_vm(UPLINK_IFINDEX, mac)
    }

    #[inline(always)]
    fn inside_of(&self, mac: Mac) -> Option<Mac> {
        if !mac.can_bind() {
            return None;
        }
        // SAFETY: the lookup returns a pointer to a live map value.
        maps::to_vm(UPLINK_IFINDEX, mac).map(|b| unsafe { Mac::read((*b).mac.as_ptr()) })
    }

    #[inline(always)]
    fn is_own_outside(&self, _mac: Mac) -> bool {
        false
    }

    #[inline(always)]
    fn secured(&self) -> Option<Mac> {
        None
    }
}

/// The outside MAC a from-VM binding holds.
///
/// # Safety
/// `b` must point at a live map value.
#[inline(always)]
pub unsafe fn outside_of(b: *const Binding) -> Mac {
    // SAFETY: the caller's promise: a live map value.
    unsafe { Mac::read((*b).mac.as_ptr()) }
}
