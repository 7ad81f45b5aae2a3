//! `cargo xtask demo`: a small hypervisor in network namespaces, the `mat` daemon running in it,
//! two VMs attached, and a capture beyond the uplink showing that only outside MACs reach the
//! wire. Everything it creates (namespaces, links, pins, files, the daemon) is removed at the end,
//! also on failure.

use std::{net::Ipv4Addr, thread::sleep, time::Duration};

use anyhow::{Result, bail, ensure};
use mat_tests::{
    capture::{Capture, Captured},
    daemon::{Daemon, POOL, mat_binary},
    frames::Mac,
    topology::{Lab, PEER_IP, fmt_mac, ping},
};

pub fn run() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo creates network namespaces and loads BPF programs: run as root");
    }
    step("Building mat");
    println!("  {}", mat_binary().display());

    step("A hypervisor in network namespaces");
    let lab = Lab::new(2);
    println!(
        "  hypervisor netns {}: bridge {}, uplink {} to the peer",
        lab.hv.name(),
        lab.bridge,
        lab.uplink
    );
    for (i, vm) in lab.vms.iter().enumerate() {
        println!(
            "  vm{i}: netns {}, port {}, inside MAC {}, {}, {}",
            vm.ns.name(),
            vm.port,
            fmt_mac(&vm.mac),
            vm.ip,
            vm.ip6
        );
    }
    println!(
        "  peer: netns {}, MAC {}, {}",
        lab.peer.ns.name(),
        fmt_mac(&lab.peer.mac),
        lab.peer.ip
    );

    step("mat daemon (rack 1, host 3)");
    let plan = ["--pool", POOL, "--rack", "1", "--host", "3"];
    let daemon = Daemon::start(&lab.hv, &plan);
    println!(
        "  mat daemon {} --socket {} --state-dir {} --pin-dir {}",
        plan.join(" "),
        daemon.socket().display(),
        daemon.state_dir().display(),
        daemon.pin_dir().display()
    );
    show(&daemon, &["plan"])?;
    show(&daemon, &["routes"])?;

    step("Attach both VMs before they run (capturing beyond the uplink from now on)");
    // A running VM talks at once (IPv6: duplicate address detection, MLD, router solicitation);
    // unbound it would do so from its inside MAC. Its link comes up once it is bound, as a guest
    // starts after libvirt's hook has bound its tap.
    for vm in &lab.vms {
        vm.ns.ip(&["link", "set", &vm.ifname, "down"]);
    }
    sleep(Duration::from_millis(100));
    let cap = Capture::in_netns(&lab.peer.ns, &lab.peer.ifname);
    let mut outside = Vec::new();
    for (i, vm) in lab.vms.iter().enumerate() {
        let name = format!("vm{i}");
        let (mac, ip) = (fmt_mac(&vm.mac), vm.ip.to_string());
        let args = [
            "attach",
            vm.port.as_str(),
            "--mac",
            &mac,
            "--vm",
            &name,
            "--ip",
            &ip,
        ];
        let out = show(&daemon, &args)?;
        outside.push(parse_mac(out.trim())?);
    }
    lab.set_endpoints_up(true);

    step("Traffic: each VM pings the peer");
    for (i, vm) in lab.vms.iter().enumerate() {
        ping(&vm.ns, PEER_IP, 3).map_err(anyhow::Error::msg)?;
        println!("  vm{i} -> {PEER_IP}: 3/3 answered");
    }
    // Let the last gratuitous ARPs (three per address, over a second) go out.
    sleep(Duration::from_millis(1200));
    let report = cap.stop();

    step(&format!(
        "On the wire at the peer ({} frames)",
        report.frames.len()
    ));
    let names = |m: &Mac| -> String {
        if let Some(i) = outside.iter().position(|o| o == m) {
            format!("{} (vm{i} outside)", fmt_mac(m))
        } else if *m == lab.peer.mac {
            format!("{} (peer)", fmt_mac(m))
        } else {
            fmt_mac(m)
        }
    };
    for f in report.frames.iter().take(24) {
        println!("  {}", describe(f, &names));
    }
    if report.frames.len() > 24 {
        println!("  ... {} more", report.frames.len() - 24);
    }
    let inside: Vec<Mac> = lab.vms.iter().map(|v| v.mac).collect();
    let leaked = report
        .frames
        .iter()
        .filter(|f| f.addrs().all().iter().any(|m| inside.contains(m)))
        .count();
    println!("  frames carrying an inside MAC: {leaked}");
    ensure!(leaked == 0, "an inside MAC reached the wire");

    step("What the daemon knows");
    show(&daemon, &["list"])?;
    show(&daemon, &["stats"])?;

    step("Detach, clean up");
    show(&daemon, &["detach", "--vm", "vm0"])?;
    show(&daemon, &["detach", "--vm", "vm1"])?;
    drop(daemon);
    drop(lab);
    println!("  daemon stopped, pins and namespaces removed");
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// Runs `mat ARGS` against the demo's daemon, echoing the command and its output.
fn show(daemon: &Daemon, args: &[&str]) -> Result<String> {
    println!("$ mat {}", args.join(" "));
    let out = daemon.cli(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines() {
        println!("  {line}");
    }
    ensure!(
        out.status.success(),
        "mat {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

fn parse_mac(s: &str) -> Result<Mac> {
    mat_tests::topology::parse_mac(s).ok_or_else(|| anyhow::anyhow!("not a MAC: {s:?}"))
}

/// One line per frame, tcpdump style: direction, addresses, and what it carries.
fn describe(f: &Captured, names: &dyn Fn(&Mac) -> String) -> String {
    let a = f.addrs();
    let dir = if f.outgoing() { "out" } else { "in " };
    let d = f.wire();
    let ether_type = d
        .get(12..14)
        .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
    let what = match (a.arp, ether_type) {
        (Some(arp), _) => {
            let (spa, tpa) = (Ipv4Addr::from(arp.spa), Ipv4Addr::from(arp.tpa));
            match arp.op {
                1 if spa == tpa => format!("ARP gratuitous {spa} is-at {}", fmt_mac(&arp.sha)),
                1 => format!("ARP who-has {tpa} tell {spa} (sha {})", fmt_mac(&arp.sha)),
                2 => format!("ARP reply {spa} is-at {}", fmt_mac(&arp.sha)),
                op => format!("ARP op {op}"),
            }
        }
        (None, 0x0800) if d.len() >= 34 => {
            let (src, dst) = (
                Ipv4Addr::new(d[26], d[27], d[28], d[29]),
                Ipv4Addr::new(d[30], d[31], d[32], d[33]),
            );
            let ihl = usize::from(d[14] & 0x0f) * 4;
            let icmp = match (d[23], d.get(14 + ihl)) {
                (1, Some(8)) => " ICMP echo request",
                (1, Some(0)) => " ICMP echo reply",
                _ => "",
            };
            format!("IPv4 {src} > {dst}{icmp}")
        }
        (None, _) if a.nd.is_some() => {
            let nd = a.nd.as_ref().expect("checked");
            let kind = match nd.kind {
                133 => "RS",
                134 => "RA",
                135 => "NS",
                136 => "NA",
                _ => "Redirect",
            };
            let target = nd.target.map(|t| format!(" {t}")).unwrap_or_default();
            let options: String = nd
                .options
                .iter()
                .map(|(t, m)| format!(" {}LLA {}", if *t == 1 { "S" } else { "T" }, fmt_mac(m)))
                .collect();
            format!("ND {kind}{target} from {}{options}", nd.src_ip)
        }
        (None, 0x86dd) => "IPv6".to_owned(),
        (None, t) => format!("ethertype {t:#06x}"),
    };
    format!("{dir} {} > {}  {what}", names(&a.src), names(&a.dst))
}
