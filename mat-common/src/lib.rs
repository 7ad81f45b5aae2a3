//! Types shared by the kernel programs (mat-ebpf) and user space (mat-loader).
//!
//! Every map key, value, counter index and event is defined here once. All types are `#[repr(C)]`
//! with explicit padding so that both sides agree on the bytes.
#![no_std]

pub mod counters;
pub mod event;
pub mod maps;
pub mod pool;
pub mod switch;

/// An Ethernet address as it appears on the wire.
pub type MacAddr = [u8; 6];
