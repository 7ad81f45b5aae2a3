//! The MAC-route switch: on every port, a longest-prefix match on (VLAN, destination MAC) ->
//! egress port, broadcast and multicast flooded to the other ports of the VLAN, and an ordinary
//! learning bridge for unicast MACs that no specific route covers. One entry per program type,
//! over one decision ([`switch::decide`]).
#![no_std]
#![no_main]

mod maps;
mod switch;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, xdp_action},
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use mat_common::switch::{Event, MAX_PORTS, Outcome};
use switch::{Action, Frame};

/// The switch, at the TC ingress of each of its ports (the default: see the README's Fabric
/// section for TC against XDP).
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's entry points take the context"
)]
pub fn switch_tc(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let (ifindex, tagged, tci) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.ifindex, skb.vlan_present != 0, skb.vlan_tci)
    };
    let Some(frame) = Frame::parse(ctx.data(), ctx.data_end(), tagged.then_some(tci)) else {
        maps::count(Outcome::Dropped as u32);
        return TC_ACT_SHOT;
    };
    let v = switch::decide(&frame, ifindex);
    switch::account(&v);
    match v.action {
        Action::Unicast => {
            // SAFETY: a plain helper call.
            unsafe { bpf_redirect(v.ifindex, 0) as i32 }
        }
        Action::Flood => {
            let mut copies = 0;
            for slot in 0..MAX_PORTS {
                if slot >= switch::ports() {
                    break;
                }
                let Some(port) = maps::PORTS.get(slot) else {
                    break;
                };
                if port.ifindex == 0 || port.ifindex == ifindex || !port.carries(v.vlan) {
                    continue;
                }
                if ctx.clone_redirect(port.ifindex, 0).is_ok() {
                    maps::count_tx(slot);
                    copies += 1;
                }
            }
            maps::count_by(Event::FloodCopies as u32, copies);
            TC_ACT_SHOT
        }
        Action::Drop => TC_ACT_SHOT,
    }
}

/// An XDP variant for the measurement only: unicast redirected in XDP, everything else passed on
/// to [`switch_tc`]. It delivers into a veth only when its peer has an XDP program, and only
/// frames whose sender computed the checksum: an `xdp_frame` carries no checksum state, so a
/// UDP or TCP frame left to checksum offload arrives with a checksum the far stack drops.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's entry points take the context"
)]
pub fn switch_xdp(ctx: XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(frame) = Frame::parse(ctx.data(), ctx.data_end(), None) else {
        return xdp_action::XDP_PASS;
    };
    let v = switch::decide(&frame, ifindex);
    match v.action {
        // Counted by the TC program that floods it.
        Action::Flood => xdp_action::XDP_PASS,
        Action::Unicast => {
            switch::account(&v);
            // SAFETY: a plain helper call.
            unsafe { bpf_redirect(v.ifindex, 0) as u32 }
        }
        Action::Drop => {
            switch::account(&v);
            xdp_action::XDP_DROP
        }
    }
}

/// Does nothing (XDP_PASS): put on the far end of a veth so that the XDP unicast path can
/// redirect into it (measurements only).
#[xdp]
pub fn pass_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
