//! One view of a frame for every program type, so the rules are written once (as Cilium's
//! overloadable XDP/TC accessors do).

use aya_ebpf::programs::{TcContext, XdpContext};

pub trait Frame {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
    /// The interface the frame is on (arriving at XDP and TC ingress, leaving at TC egress).
    fn ifindex(&self) -> u32;
    /// VLAN tags already moved out of the frame into metadata (TC may see the outer tag there).
    fn offloaded_tags(&self) -> usize;
    /// Makes the first `len` bytes directly accessible if the frame has them. Only the rare ARP
    /// path calls it: TC may hold part of a frame outside the linear area.
    fn pull(&mut self, len: usize) -> bool;

    /// A bounds-checked pointer to a `T` at `offset`, or `None` past the end of the frame.
    #[inline(always)]
    fn ptr_at<T>(&self, offset: usize) -> Option<*mut T> {
        let start = self.start();
        if start + offset + core::mem::size_of::<T>() > self.end() {
            return None;
        }
        Some((start + offset) as *mut T)
    }
}

pub struct Tc(pub TcContext);
pub struct Xdp(pub XdpContext);

impl Frame for Tc {
    #[inline(always)]
    fn start(&self) -> usize {
        self.0.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.0.data_end()
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context pointer is valid for the program's run.
        unsafe { (*self.0.skb.skb).ifindex }
    }
    #[inline(always)]
    fn offloaded_tags(&self) -> usize {
        // SAFETY: as above.
        unsafe { (*self.0.skb.skb).vlan_present as usize }
    }
    #[inline(always)]
    fn pull(&mut self, len: usize) -> bool {
        if self.start() + len <= self.end() {
            return true;
        }
        self.0.pull_data(len as u32).is_ok() && self.start() + len <= self.end()
    }
}

impl Frame for Xdp {
    #[inline(always)]
    fn start(&self) -> usize {
        self.0.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.0.data_end()
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.0.ingress_ifindex() as u32
    }
    #[inline(always)]
    fn offloaded_tags(&self) -> usize {
        0
    }
    #[inline(always)]
    fn pull(&mut self, len: usize) -> bool {
        // An XDP frame is linear (no multi-buffer support requested at load).
        self.start() + len <= self.end()
    }
}
