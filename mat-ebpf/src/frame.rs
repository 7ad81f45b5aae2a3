//! One view of a frame for every program type, so the rules are written once (as Cilium's
//! overloadable XDP/TC accessors do).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_RECOMPUTE_CSUM},
    helpers::{bpf_skb_load_bytes, bpf_xdp_get_buff_len, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::{TcContext, XdpContext},
};

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
    /// The frame's length, linear or not.
    fn len(&self) -> usize;
    /// A copy of the 8 bytes at `offset` (anywhere in the frame), or `None` past its end. The
    /// ND and DHCP walks read through this helper call rather than packet pointers: their
    /// offsets come from the frame, and a helper checks them at run time, which keeps the
    /// verifier's work small.
    fn load8(&self, offset: usize) -> Option<u64>;
    /// Copies the frame's first bytes into `head` (as many as fit); returns how many.
    fn load_head(&self, head: *mut u8, room: usize) -> usize;
    /// Writes the 8 bytes at `offset`.
    fn store8(&mut self, offset: usize, v: u64) -> bool;
    /// Writes the 2 bytes at `offset`.
    fn store2(&mut self, offset: usize, v: u16) -> bool;
    /// Updates the UDP checksum at `offset` (now `csum`) for checksummed 16-bit words that change
    /// from `old` to `new` (words as they sit in memory). A zero checksum (none) stays zero; a
    /// computed zero is sent as all ones.
    fn udp_csum_replace<const N: usize>(
        &mut self,
        offset: usize,
        csum: u16,
        old: [u16; N],
        new: [u16; N],
    ) -> bool;

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
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }
    #[inline(always)]
    fn load8(&self, offset: usize) -> Option<u64> {
        self.0.load::<u64>(offset).ok()
    }
    #[inline(always)]
    fn load_head(&self, head: *mut u8, room: usize) -> usize {
        // 1..=room, in a form the verifier bounds (the helper takes no empty copy): a frame
        // shorter than one byte makes the helper fail instead.
        let n = self.len().wrapping_sub(1).min(room - 1) + 1;
        // SAFETY: the helper writes `n` <= `room` bytes at `head`.
        let r = unsafe { bpf_skb_load_bytes(self.0.skb.skb.cast(), 0, head.cast(), n as u32) };
        if r == 0 { n } else { 0 }
    }
    #[inline(always)]
    fn store8(&mut self, offset: usize, v: u64) -> bool {
        self.0
            .store(offset, &v, u64::from(BPF_F_RECOMPUTE_CSUM))
            .is_ok()
    }
    #[inline(always)]
    fn store2(&mut self, offset: usize, v: u16) -> bool {
        self.0
            .store(offset, &v, u64::from(BPF_F_RECOMPUTE_CSUM))
            .is_ok()
    }
    /// Through the kernel's helper: a guest's offloaded UDP arrives with a checksum the stack or
    /// the NIC completes later (CHECKSUM_PARTIAL), which must not be adjusted by hand.
    #[inline(always)]
    fn udp_csum_replace<const N: usize>(
        &mut self,
        offset: usize,
        _csum: u16,
        old: [u16; N],
        new: [u16; N],
    ) -> bool {
        let flags = 2 | u64::from(BPF_F_MARK_MANGLED_0);
        (0..N).all(|i| {
            self.0
                .l4_csum_replace(offset, u64::from(old[i]), u64::from(new[i]), flags)
                .is_ok()
        })
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
    #[inline(always)]
    fn len(&self) -> usize {
        self.end() - self.start()
    }
    #[inline(always)]
    fn load8(&self, offset: usize) -> Option<u64> {
        let mut v = 0u64;
        // SAFETY: the helper writes at most 8 bytes into `v`.
        let r = unsafe { bpf_xdp_load_bytes(self.0.ctx, offset as u32, (&raw mut v).cast(), 8) };
        (r == 0).then_some(v)
    }
    #[inline(always)]
    fn load_head(&self, head: *mut u8, room: usize) -> usize {
        // The buffer's length from the kernel: a scalar (data_end - data is pointer arithmetic
        // that LLVM may rearrange into what the verifier refuses).
        // SAFETY: a helper that only reads the context.
        let len = unsafe { bpf_xdp_get_buff_len(self.0.ctx) } as usize;
        let n = len.wrapping_sub(1).min(room - 1) + 1;
        // SAFETY: the helper writes `n` <= `room` bytes at `head`.
        let r = unsafe { bpf_xdp_load_bytes(self.0.ctx, 0, head.cast(), n as u32) };
        if r == 0 { n } else { 0 }
    }
    #[inline(always)]
    fn store8(&mut self, offset: usize, mut v: u64) -> bool {
        // SAFETY: the helper reads 8 bytes from `v`.
        unsafe { bpf_xdp_store_bytes(self.0.ctx, offset as u32, (&raw mut v).cast(), 8) == 0 }
    }
    #[inline(always)]
    fn store2(&mut self, offset: usize, mut v: u16) -> bool {
        // SAFETY: the helper reads 2 bytes from `v`.
        unsafe { bpf_xdp_store_bytes(self.0.ctx, offset as u32, (&raw mut v).cast(), 2) == 0 }
    }
    /// By hand: an XDP frame carries no checksum state.
    #[inline(always)]
    fn udp_csum_replace<const N: usize>(
        &mut self,
        offset: usize,
        csum: u16,
        old: [u16; N],
        new: [u16; N],
    ) -> bool {
        if csum == 0 {
            return true;
        }
        let mut c = csum;
        for i in 0..N {
            c = crate::csum::replace_word(c, old[i], new[i]);
        }
        self.store2(offset, if c == 0 { 0xffff } else { c })
    }
}
