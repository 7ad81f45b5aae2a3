//! The consumer side of the data plane's event ring buffer (`BPF_MAP_TYPE_RINGBUF`), read through
//! its memory-mapped pages.
//!
//! Not aya's `RingBuf`: aya 0.13.1 starts its cached producer position at 0 whatever the consumer
//! position is, and reloads it only when the consumer position equals the cache. The ring is
//! pinned and outlives the daemon, so after a restart the consumer position is where the last
//! daemon stopped reading; then aya never reloads the producer position, reads on past it and never
//! returns (aya-rs/aya#1309): the daemon spins in its event task and cannot exit. This reader loads
//! both positions on every drain and stops at the producer.
//!
//! The layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (mapped read-write), page
//! 1 the producer position, then the data pages, mapped twice in a row so that a record that
//! wraps around the end reads contiguously. Each record has an 8-byte header: its length, with a
//! busy bit (reserved, not yet committed) and a discard bit.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

use aya::maps::MapData;

use crate::mmap::Mmap;

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

/// The event ring buffer, for one consumer.
pub struct EventRing {
    /// Holds the map's descriptor (the mappings stay valid without it, but polling needs it).
    map: MapData,
    consumer: Mmap,
    /// The producer page followed by the data pages twice.
    producer: Mmap,
    page: usize,
    mask: usize,
}

// SAFETY: the mappings are plain shared memory; only `&mut self` reads or writes them.
unsafe impl Send for EventRing {}

impl EventRing {
    /// Maps the ring buffer `map`.
    pub fn new(map: MapData) -> io::Result<EventRing> {
        let size = map.info().map_err(io::Error::other)?.max_entries() as usize;
        if !size.is_power_of_two() {
            return Err(io::Error::other(format!("ring buffer of {size} bytes")));
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mmap::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mmap::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        Ok(EventRing {
            map,
            consumer,
            producer,
            page,
            mask: size - 1,
        })
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the consumer position is the first word of its page, aligned, and shared with
        // the kernel only through atomic accesses.
        unsafe { self.consumer.ptr.cast::<AtomicUsize>().as_ref() }
    }

    fn producer_pos(&self) -> &AtomicUsize {
        // SAFETY: as above, for the producer page.
        unsafe { self.producer.ptr.cast::<AtomicUsize>().as_ref() }
    }

    /// Calls `each` with every committed record, oldest first, and releases them to the kernel;
    /// stops at the producer position or at a record still being written.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) {
        let mut pos = self.consumer_pos().load(Ordering::Acquire);
        loop {
            // The kernel writes it with release semantics after the record's header.
            let producer = self.producer_pos().load(Ordering::Acquire);
            if pos >= producer {
                return;
            }
            while pos < producer {
                let at = self.page + (pos & self.mask);
                // SAFETY: `at` lies in the first copy of the data pages; the header is 8-byte
                // aligned, its first word read atomically as the kernel writes it.
                let header = unsafe {
                    self.producer
                        .ptr
                        .cast::<u8>()
                        .add(at)
                        .cast::<AtomicU32>()
                        .as_ref()
                        .load(Ordering::Acquire)
                };
                if header & BUSY != 0 {
                    return;
                }
                let len = (header & !(BUSY | DISCARD)) as usize;
                if len > self.mask {
                    // Not a record the kernel wrote: give up on what is queued.
                    self.consumer_pos().store(producer, Ordering::Release);
                    return;
                }
                if header & DISCARD == 0 {
                    // SAFETY: the record lies within the data pages' second copy at the latest.
                    let data = unsafe {
                        std::slice::from_raw_parts(
                            self.producer.ptr.cast::<u8>().as_ptr().add(at + HEADER),
                            len,
                        )
                    };
                    each(data);
                }
                pos += (len + HEADER).next_multiple_of(8);
                self.consumer_pos().store(pos, Ordering::Release);
            }
        }
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}
