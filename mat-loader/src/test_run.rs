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

/// Runs `frame` through the program `repeat` times (at least once).
pub fn run(prog: &impl AsFd, frame: &[u8], repeat: u32) -> io::Result<Outcome> {
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
