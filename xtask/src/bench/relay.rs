//! A tap device driven as QEMU drives a VM's NIC with offloads: the bench process relays frames
//! between the tap (in the hypervisor namespace) and a veth whose far end is the VM's interface,
//! with virtio-net headers on both sides (`IFF_VNET_HDR` on the tap, `PACKET_VNET_HDR` on a
//! packet socket), so that the VM's TSO/GSO frames reach the tap whole, as a guest's do.

use std::{
    fs::{File, OpenOptions},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use anyhow::{Context, Result};
use mat_tests::netns::Netns;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 208, unsigned int)`
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// A virtio-net header and the largest GSO frame.
const BUF: usize = 10 + 65_536 + 64;

/// Two threads copying frames both ways until dropped.
pub struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Creates the tap `tap` in `hv` and relays it to the interface `nic` of `qemu`.
    pub fn new(hv: &Netns, tap: &str, qemu: &Netns, nic: &str) -> Result<Relay> {
        let tap_file = hv.enter(|| open_tap(tap)).context("creating the tap")?;
        let nic = nic.to_owned();
        let sock = qemu
            .enter(move || packet_socket(&nic))
            .context("opening the packet socket")?;
        let tap_fd: Arc<OwnedFd> = Arc::new(tap_file.into());
        let sock_fd = Arc::new(sock);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (from, to) in [
            (sock_fd.clone(), tap_fd.clone()),
            (tap_fd.clone(), sock_fd.clone()),
        ] {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                copy(from.as_raw_fd(), to.as_raw_fd(), &stop);
            }));
        }
        Ok(Relay { stop, threads })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Copies one frame at a time from `from` to `to` until `stop` (checked every 100 ms).
fn copy(from: RawFd, to: RawFd, stop: &AtomicBool) {
    let mut buf = vec![0u8; BUF];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: from,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&raw mut pfd, 1, 100) } <= 0 {
            continue;
        }
        // SAFETY: `buf` is writable for its length; both fds stay open while the thread runs.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        // A frame the far side refuses (full queue, down link) is lost, as on a wire.
        // SAFETY: `buf[..n]` was just filled.
        let _ = unsafe { libc::write(to, buf.as_ptr().cast(), n as usize) };
    }
}

fn open_tap(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: an all-zero ifreq is valid; the name and flags are set below.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads the ifreq, which outlives the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // What a virtio-net guest with offloads accepts: the tap may hand it GSO frames.
    let offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes the flags by value.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, offload) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let ifindex = nix::net::if_::if_nametoindex(ifname)?;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto.into()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let on: libc::c_int = 1;
    let rcvbuf: libc::c_int = 8 << 20;
    for (level, opt, val) in [
        (libc::SOL_PACKET, PACKET_VNET_HDR, &on),
        (libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &on),
        (libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf),
    ] {
        // SAFETY: an int option, its size given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                std::ptr::from_ref::<libc::c_int>(val).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: an all-zero sockaddr_ll is valid; family, protocol and ifindex are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}
