//! A tap device driven by the test process, as QEMU drives a VM's NIC: `/dev/net/tun` with
//! `IFF_TAP | IFF_NO_PI`, one Ethernet frame per read or write. The device lives as long as the
//! [`Tap`] (it is not persistent) and belongs to the network namespace of the thread that creates
//! it (use [`Tap::in_netns`]).

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    time::{Duration, Instant},
};

use crate::netns::Netns;

pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates the tap `name` (at most 15 bytes) in the calling thread's network namespace. It
    /// starts down and outside any bridge.
    pub fn create(name: &str) -> io::Result<Tap> {
        assert!(
            name.len() < libc::IFNAMSIZ,
            "interface name {name:?} too long"
        );
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        // SAFETY: an all-zero ifreq is valid; name and flags are set below.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF takes a pointer to an ifreq that lives through the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tap {
            file,
            name: name.to_owned(),
        })
    }

    /// Creates the tap `name` inside `ns`.
    pub fn in_netns(ns: &Netns, name: &str) -> Tap {
        ns.enter(|| Tap::create(name))
            .unwrap_or_else(|e| panic!("creating tap {name} in {}: {e}", ns.name()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands one frame to the host, as if the VM sent it.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let n = (&self.file).write(frame)?;
        if n != frame.len() {
            return Err(io::Error::other(format!(
                "short write to tap: {n} of {}",
                frame.len()
            )));
        }
        Ok(())
    }

    /// The next frame the host sends to the VM, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            match (&self.file).read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe {
                libc::poll(
                    &raw mut pfd,
                    1,
                    left.as_millis().clamp(1, i32::MAX as u128) as i32,
                )
            };
        }
    }

    /// Reads frames until one satisfies `want` or `timeout` passes.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        mut want: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<Matched> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                Some(f) if want(&f) => {
                    return Ok(Matched {
                        frame: Some(f),
                        skipped,
                    });
                }
                Some(f) => skipped.push(f),
                None => {
                    return Ok(Matched {
                        frame: None,
                        skipped,
                    });
                }
            }
        }
    }
}

/// What [`Tap::recv_matching`] read.
#[derive(Debug)]
pub struct Matched {
    /// The first frame that matched, `None` on timeout.
    pub frame: Option<Vec<u8>>,
    /// The frames read before it (or before the timeout), for diagnostics.
    pub skipped: Vec<Vec<u8>>,
}
