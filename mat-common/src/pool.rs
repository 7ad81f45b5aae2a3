//! Outside pools as the spoof check sees them: a prefix and a mask, at most [`MAX_POOLS`].

pub const MAX_POOLS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PoolPrefix {
    pub prefix: crate::MacAddr,
    pub _pad0: [u8; 2],
    pub mask: crate::MacAddr,
    pub _pad1: [u8; 2],
}

impl PoolPrefix {
    /// The pool `mac/len`; bits past `len` are cleared. `len` above 48 is taken as 48.
    pub const fn new(mac: crate::MacAddr, len: u8) -> Self {
        let mut mask = [0u8; 6];
        let mut prefix = [0u8; 6];
        let mut i = 0;
        while i < 6 {
            let bits = len as i32 - 8 * i as i32;
            mask[i] = if bits >= 8 {
                0xff
            } else if bits <= 0 {
                0
            } else {
                0xffu8 << (8 - bits)
            };
            prefix[i] = mac[i] & mask[i];
            i += 1;
        }
        Self {
            prefix,
            _pad0: [0; 2],
            mask,
            _pad1: [0; 2],
        }
    }

    pub fn contains(&self, mac: &crate::MacAddr) -> bool {
        (0..6).all(|i| mac[i] & self.mask[i] == self.prefix[i])
    }
}

/// The single value of the pools map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pools {
    /// How many entries of `prefixes` are in use.
    pub count: u32,
    pub _pad: u32,
    pub prefixes: [PoolPrefix; MAX_POOLS],
}

impl Pools {
    pub fn contains(&self, mac: &crate::MacAddr) -> bool {
        self.prefixes[..(self.count as usize).min(MAX_POOLS)]
            .iter()
            .any(|p| p.contains(mac))
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::Pools {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::PoolPrefix {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::super::event::Event {}
}
