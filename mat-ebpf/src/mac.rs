//! MACs as the fast path moves them: one 4-byte and one 2-byte access. A `[u8; 6]` copy compiles
//! to a byte-by-byte memmove subprogram that costs about 10 ns a packet, and LLVM's BPF backend
//! splits any load it cannot prove aligned into bytes, so these accesses claim natural alignment.
//! That holds for map values and stack keys; packet fields may be 2-byte aligned only, which the
//! verifier accepts and the JIT executes on architectures with efficient unaligned access (x86-64,
//! arm64), the only ones MAT targets.

use mat_common::maps::BindingKey;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mac {
    hi: u32,
    lo: u16,
}

impl Mac {
    /// # Safety
    /// `p` must point at 6 readable bytes (see the module note on alignment).
    #[inline(always)]
    pub unsafe fn read(p: *const u8) -> Self {
        // SAFETY: the caller's promise: 6 readable bytes at `p`.
        unsafe {
            Self {
                hi: p.cast::<u32>().read(),
                lo: p.add(4).cast::<u16>().read(),
            }
        }
    }

    /// # Safety
    /// `p` must point at 6 writable bytes (see the module note on alignment).
    #[inline(always)]
    pub unsafe fn write(self, p: *mut u8) {
        // SAFETY: the caller's promise: 6 writable bytes at `p`.
        unsafe {
            p.cast::<u32>().write(self.hi);
            p.add(4).cast::<u16>().write(self.lo);
        }
    }

    /// Multicast or broadcast: the group bit is bit 0 of the first octet (the low byte of `hi`,
    /// read little-endian).
    #[inline(always)]
    pub fn is_group(self) -> bool {
        self.hi & 1 != 0
    }

    #[inline(always)]
    pub fn is_zero(self) -> bool {
        self.hi == 0 && self.lo == 0
    }

    /// Whether a lookup can find this address: bindings hold only unicast, non-zero MACs.
    #[inline(always)]
    pub fn can_bind(self) -> bool {
        !self.is_group() && !self.is_zero()
    }

    #[inline(always)]
    pub fn masked_eq(self, mask: Mac, prefix: Mac) -> bool {
        (self.hi & mask.hi) == prefix.hi && (self.lo & mask.lo) == prefix.lo
    }

    /// The address from its first 4 and last 2 bytes as they sit in memory.
    #[inline(always)]
    pub fn from_parts(hi: u32, lo: u16) -> Self {
        Self { hi, lo }
    }

    #[inline(always)]
    pub fn parts(self) -> (u32, u16) {
        (self.hi, self.lo)
    }

    /// The three 16-bit words of the address as they sit in memory (for checksums).
    #[inline(always)]
    pub fn words(self) -> [u16; 3] {
        [self.hi as u16, (self.hi >> 16) as u16, self.lo]
    }

    #[inline(always)]
    pub fn key(self, ifindex: u32) -> BindingKey {
        let mut key = BindingKey::new(ifindex, [0; 6]);
        // SAFETY: `key.mac` is 6 bytes.
        unsafe { self.write(key.mac.as_mut_ptr()) };
        key
    }
}
