//! Shared mappings of BPF maps' pages: the event ring buffer, and the port table (an array
//! created mmapable), read without a system call per entry.

use std::{io, os::fd::RawFd, ptr::NonNull};

/// A mapping, unmapped on drop.
pub(crate) struct Mmap {
    pub(crate) ptr: NonNull<libc::c_void>,
    pub(crate) len: usize,
}

impl Mmap {
    pub(crate) fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Mmap> {
        // SAFETY: a fresh shared mapping of a map's pages; the kernel checks `prot`, `len` and
        // `offset` against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap {
            ptr: NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
        })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr(), self.len) };
    }
}
