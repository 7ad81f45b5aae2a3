//! BPF_PROG_TEST_RUN: a frame through a loaded program, for golden tests and benchmarks. aya 0.13
//! has no public wrapper, so this calls the syscall with aya-obj's generated `bpf_attr`.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// The test run's device when no context is given: the namespace's loopback. Bindings meant to
/// match in a test run use this ifindex.
pub const IFINDEX: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The program's return value (an XDP action or a TC verdict).
    pub retval: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean nanoseconds per run, as the kernel measured it.
    pub duration_ns: u32,
}

/// `struct __sk_buff` up to `ifindex` (offset 40) is what the kernel lets a test set; the rest is
/// zero. Sized as the kernel's (192 bytes on this ABI).
const SKB_LEN: usize = 192;
const SKB_IFINDEX: usize = 40;
/// `struct xdp_md`: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
const XDP_MD_LEN: usize = 24;
const XDP_INGRESS_IFINDEX: usize = 12;

/// Runs `frame` through the program `repeat` times (at least once).
pub fn run(prog: &impl AsFd, frame: &[u8], repeat: u32) -> io::Result<Outcome> {
    run_in(prog, frame, &mut [], repeat)
}

/// Runs `frame` through a TC program as if it arrived on `ifindex` (the switch decides by the
/// port a frame came in on).
pub fn tc_on(prog: &impl AsFd, frame: &[u8], ifindex: u32, repeat: u32) -> io::Result<Outcome> {
    let mut ctx = [0u8; SKB_LEN];
    ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    run_in(prog, frame, &mut ctx, repeat)
}

/// Runs `frame` through an XDP program as if it arrived on `ifindex`.
pub fn xdp_on(prog: &impl AsFd, frame: &[u8], ifindex: u32, repeat: u32) -> io::Result<Outcome> {
    let mut ctx = [0u8; XDP_MD_LEN];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[XDP_INGRESS_IFINDEX..XDP_INGRESS_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    run_in(prog, frame, &mut ctx, repeat)
}

/// The test run with a context (`ctx` empty: none).
fn run_in(prog: &impl AsFd, frame: &[u8], ctx: &mut [u8], repeat: u32) -> io::Result<Outcome> {
    let mut out = vec![0u8; frame.len() + 256];
    // SAFETY: an all-zero bpf_attr is valid; only the `test` member is used.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing plain fields of the union member the command reads.
    unsafe {
        let t = &mut attr.test;
        t.prog_fd = prog.as_fd().as_raw_fd() as u32;
        t.data_in = frame.as_ptr() as u64;
        t.data_size_in = frame.len() as u32;
        t.data_out = out.as_mut_ptr() as u64;
        t.data_size_out = out.len() as u32;
        if !ctx.is_empty() {
            t.ctx_in = ctx.as_ptr() as u64;
            t.ctx_size_in = ctx.len() as u32;
        }
        t.repeat = repeat;
    }
    // SAFETY: `attr` and the buffers it points at outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_PROG_TEST_RUN as libc::c_int,
            &raw mut attr,
            std::mem::size_of::<bpf_attr>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled in the `test` member.
    let t = unsafe { attr.test };
    out.truncate(t.data_size_out as usize);
    Ok(Outcome {
        retval: t.retval,
        frame: out,
        duration_ns: t.duration,
    })
}
