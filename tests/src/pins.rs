//! A data plane pinned under a directory of its own, removed (programs detached, maps unpinned)
//! when the guard drops, even if the test fails.

use std::{
    ops::{Deref, DerefMut},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use mat_loader::Dataplane;

pub struct TestDataplane(Option<Dataplane>);

/// A name unique to this process and call, for pins, namespaces and links.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{:x}{}",
        std::process::id() & 0xffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestDataplane {
    pub fn new() -> Self {
        let dir = PathBuf::from("/sys/fs/bpf").join(unique("mat-test-"));
        let dp = Dataplane::open(&dir)
            .unwrap_or_else(|e| panic!("loading the data plane under {}: {e}", dir.display()));
        Self(Some(dp))
    }
}

impl Default for TestDataplane {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for TestDataplane {
    type Target = Dataplane;
    fn deref(&self) -> &Dataplane {
        self.0.as_ref().expect("present until drop")
    }
}

impl DerefMut for TestDataplane {
    fn deref_mut(&mut self) -> &mut Dataplane {
        self.0.as_mut().expect("present until drop")
    }
}

impl Drop for TestDataplane {
    fn drop(&mut self) {
        if let Some(dp) = self.0.take() {
            let dir = dp.pin_dir().to_owned();
            if let Err(e) = dp.remove() {
                eprintln!("cleaning up {}: {e}", dir.display());
            }
        }
    }
}

/// The (link id, program id) of the BPF link pinned at `pin`: which program runs on that hook
/// now (`BPF_OBJ_GET`, then `BPF_OBJ_GET_INFO_BY_FD`; aya 0.13 keeps the link's info private).
pub fn pinned_link_ids(pin: &std::path::Path) -> (u32, u32) {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let path = CString::new(pin.as_os_str().as_bytes()).expect("no NUL in a pin path");
    // union bpf_attr, zeroed beyond the fields used: { pathname: u64, bpf_fd, file_flags }.
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: bpf(2) reads `attr` (128 bytes, tail zero) and the NUL-terminated path.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_ptr(), 128) };
    assert!(
        fd >= 0,
        "opening the link pinned at {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    // struct bpf_link_info starts with { type, id, prog_id }.
    let mut info = [0u32; 64];
    let mut attr = [0u64; 16];
    attr[0] = (fd as u64) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: bpf(2) writes at most info_len bytes into `info`; `fd` is ours and closed below.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, attr.as_ptr(), 128) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor bpf(2) returned above.
    unsafe { libc::close(fd as i32) };
    assert_eq!(rc, 0, "reading the link info of {}: {err}", pin.display());
    (info[1], info[2])
}
