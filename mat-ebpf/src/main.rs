//! MAT's kernel programs. Every program is a thin entry that runs one of the two shared rule sets
//! ([`rules::from_vm`], [`rules::to_vm`]) over its context and counts the outcome.
#![no_std]
#![no_main]
#![expect(
    clippy::cast_ptr_alignment,
    reason = "MACs and addresses are read as aligned 4- and 2-byte accesses on purpose (mac.rs)"
)]

mod arp;
mod bindings;
mod csum;
mod dhcp;
mod frame;
mod mac;
mod maps;
mod nd;
mod parse;
mod rules;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use bindings::{Port, Uplink};
use frame::{Frame, Tc, Xdp};
use mat_common::counters::{Hook, Outcome};

/// Frames from a VM, at the TC ingress of its port (the default).
#[classifier]
pub fn port_from_vm(ctx: TcContext) -> i32 {
    let mut f = Tc(ctx);
    let port = Port::new(f.ifindex());
    let outcome = rules::from_vm(&mut f, &port);
    tc_verdict(&f, Hook::PortFromVmTc, outcome)
}

/// Frames to a VM, at the TC egress of its port.
#[classifier]
pub fn port_to_vm(ctx: TcContext) -> i32 {
    let mut f = Tc(ctx);
    let port = Port::new(f.ifindex());
    let outcome = rules::to_vm(&mut f, &port);
    tc_verdict(&f, Hook::PortToVmTc, outcome)
}

/// Frames from a VM, in XDP on its port (an explicit option: native XDP on a veth turns off TSO
/// on its peer).
#[xdp]
pub fn port_from_vm_xdp(ctx: XdpContext) -> u32 {
    let mut f = Xdp(ctx);
    let port = Port::new(f.ifindex());
    let outcome = rules::from_vm(&mut f, &port);
    xdp_verdict(&f, Hook::PortFromVmXdp, outcome)
}

/// Frames towards the network, at the TC egress of the uplink; keyed by MAC only.
#[classifier]
pub fn uplink_out(ctx: TcContext) -> i32 {
    let mut f = Tc(ctx);
    let outcome = rules::from_vm(&mut f, &Uplink);
    tc_verdict(&f, Hook::UplinkOutTc, outcome)
}

/// Frames from the network, in XDP on the uplink; keyed by MAC only.
#[xdp]
pub fn uplink_in(ctx: XdpContext) -> u32 {
    let mut f = Xdp(ctx);
    let outcome = rules::to_vm(&mut f, &Uplink);
    xdp_verdict(&f, Hook::UplinkInXdp, outcome)
}

/// Benchmark floor: an XDP program that does nothing, to subtract from MAT's per-packet cost.
#[xdp]
pub fn floor_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark floor: a TC program that does nothing.
#[classifier]
pub fn floor_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

#[inline(always)]
fn tc_verdict(f: &Tc, hook: Hook, outcome: Outcome) -> i32 {
    maps::count(hook, outcome);
    if outcome.drops() {
        maps::report_drop(f, hook, outcome);
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

#[inline(always)]
fn xdp_verdict(f: &Xdp, hook: Hook, outcome: Outcome) -> u32 {
    maps::count(hook, outcome);
    if outcome.drops() {
        maps::report_drop(f, hook, outcome);
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
