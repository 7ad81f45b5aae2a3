//! The program a pinned link runs. aya 0.13 neither exposes a link's descriptor nor its info, so
//! this takes the two bpf(2) calls itself: `BPF_OBJ_GET` on the pin, `BPF_OBJ_GET_INFO_BY_FD` on
//! the link.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `bpf_attr` for `BPF_OBJ_GET`, with its padding spelled out (the kernel wants it zero).
#[repr(C)]
#[derive(Default)]
struct ObjGet {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

/// `bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_link_info` (type, id, prog_id) and room for its union, all `u32` so
/// that there is no padding.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
    rest: [u32; 29],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a repr(C) bpf_attr prefix for `cmd`, valid for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// What a pinned link holds: its program, and the interface it is attached to (0 once it is
/// detached, by hand or because its interface went away: the link and its pin stay).
pub struct Link {
    pub id: u32,
    pub prog_id: u32,
    pub ifindex: u32,
}

/// The link pinned at `pin`. A link detached by hand keeps its program and its pin: only its
/// interface index (or the hook's own list) tells that it no longer runs there.
pub fn of_pin(pin: &Path) -> io::Result<Link> {
    let path = CString::new(pin.as_os_str().as_bytes())?;
    let mut get = ObjGet {
        pathname: path.as_ptr() as u64,
        ..ObjGet::default()
    };
    let fd = i32::try_from(bpf(BPF_OBJ_GET, &mut get)?).map_err(io::Error::other)?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = LinkInfo::default();
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd().cast_unsigned(),
        info_len: size_of::<LinkInfo>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // The union after prog_id is 8-byte aligned (offset 16, after 4 bytes of padding); it
    // starts with the interface index for TCX, XDP and netkit links.
    Ok(Link {
        id: info.id,
        prog_id: info.prog_id,
        ifindex: info.rest[1],
    })
}
