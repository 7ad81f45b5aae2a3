//! Traffic through real interfaces between namespaces, one generator (iperf3) for every row, the
//! rows interleaved round by round so that each ratio compares figures taken minutes apart at
//! most.
//!
//! Every row is the same lab, built once and kept for the whole part:
//!
//! ```text
//!  VM ns                 hypervisor ns                               peer ns
//!  [v] 192.0.2.1 ==veth== [p] --+-- [bridge] --+-- [u] ==veth== [e] 192.0.2.2
//! ```
//!
//! and differs only in what translates the VM's MAC: nothing (baseline); MAT on the port, TC both
//! ways (the default) or XDP from the VM; MAT on the uplink; nftables netdev rules with maps on
//! the port; ebtables snat/dnat (with --snat-arp) on the bridge; or no translation but a VXLAN
//! overlay between the hypervisor and the peer (u and e carry 198.51.100.0/24, the VM's MTU is
//! 1450). Each row checks, before it is measured, that the peer learnt the outside MAC for the
//! VM (or the inside one where nothing translates).

use std::{
    collections::BTreeMap,
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use mat_common::maps::UPLINK_IFINDEX;
use mat_loader::Mode;
use mat_tests::{
    netns::{ChildGuard, Netns},
    pins::{TestDataplane, unique},
};
use serde::Serialize;

use super::{relay::Relay, stats::median};

const VM_IP: &str = "192.0.2.1";
const PEER_IP: &str = "192.0.2.2";
const HV_UNDERLAY: &str = "198.51.100.1";
const PEER_UNDERLAY: &str = "198.51.100.2";
const INSIDE: &str = "52:54:00:ff:00:01";
const OUTSIDE: &str = "02:00:5e:ff:00:01";
const PEER_MAC: &str = "52:54:00:dd:00:01";
/// UDP payload for small frames: 14 + 20 + 8 + 18 = 60 bytes, the minimum Ethernet frame.
const SMALL_PAYLOAD: &str = "18";

pub struct Config {
    /// Seconds per iperf3 run.
    pub seconds: u32,
    pub rounds: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Baseline,
    MatPort,
    MatPortXdp,
    MatUplink,
    Nftables,
    Ebtables,
    Vxlan,
    TapBaseline,
    TapMatPort,
    TapMatPortXdp,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Baseline,
        Kind::MatPort,
        Kind::MatPortXdp,
        Kind::MatUplink,
        Kind::Nftables,
        Kind::Ebtables,
        Kind::Vxlan,
        Kind::TapBaseline,
        Kind::TapMatPort,
        Kind::TapMatPortXdp,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline (no translation)",
            Kind::MatPort => "MAT port, TC both ways",
            Kind::MatPortXdp => "MAT port, XDP from VM",
            Kind::MatUplink => "MAT uplink (TC out, XDP in)",
            Kind::Nftables => "nftables netdev maps",
            Kind::Ebtables => "ebtables snat/dnat",
            Kind::Vxlan => "VXLAN overlay",
            Kind::TapBaseline => "tap: baseline",
            Kind::TapMatPort => "tap: MAT port, TC both ways",
            Kind::TapMatPortXdp => "tap: MAT port, XDP from VM",
        }
    }

    /// Whether the VM's port is a tap driven by [`Relay`] rather than a veth.
    fn is_tap(self) -> bool {
        matches!(
            self,
            Kind::TapBaseline | Kind::TapMatPort | Kind::TapMatPortXdp
        )
    }

    /// The row this one's ratios compare with.
    fn baseline(self) -> Kind {
        if self.is_tap() {
            Kind::TapBaseline
        } else {
            Kind::Baseline
        }
    }

    /// Whether the peer should see the outside MAC.
    fn translates(self) -> bool {
        !matches!(self, Kind::Baseline | Kind::Vxlan | Kind::TapBaseline)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    Tcp1,
    Tcp4,
    SmallUdp,
}

impl Metric {
    const ALL: [Metric; 3] = [Metric::Tcp1, Metric::Tcp4, Metric::SmallUdp];

    pub fn label(self) -> &'static str {
        match self {
            Metric::Tcp1 => "TCP 1 stream Gbit/s",
            Metric::Tcp4 => "TCP 4 streams Gbit/s",
            Metric::SmallUdp => "UDP 60 B frames kpps",
        }
    }
}

#[derive(Serialize)]
pub struct Figure {
    pub metric: Metric,
    /// Median over rounds: Gbit/s for TCP (each round the median of its one-second intervals),
    /// thousand frames a second arriving at the peer's interface for UDP (the sender's rate
    /// through the path; the iperf3 server alone cannot read that fast).
    pub value: f64,
    /// Every round's figure.
    pub rounds: Vec<f64>,
    /// Median over rounds of this row / the baseline of the same round.
    pub ratio: f64,
    /// The lowest and highest of those per-round ratios: the noise.
    pub ratio_min: f64,
    pub ratio_max: f64,
}

#[derive(Serialize)]
pub struct Row {
    pub kind: Kind,
    pub label: &'static str,
    pub figures: Vec<Figure>,
    /// The MAC the peer's neighbour table holds for the VM: the outside MAC where translated.
    pub peer_sees: String,
    /// Offload state (ethtool -k) of each interface on the path once set up.
    pub offloads: BTreeMap<String, BTreeMap<String, String>>,
    /// Mean bytes per packet arriving at the peer's interface during a TCP 1-stream run: above
    /// the MTU when GSO/GRO super-packets cross the path intact.
    pub tcp_bytes_per_packet_at_peer: f64,
    /// The data plane's counters after the run, where MAT translates.
    pub counters: Vec<String>,
    /// Frames the VM's port received from the VM during the rounds (its rx count), to hold
    /// against the from-VM `translated` counter: equal when every frame was translated.
    pub frames_from_vm: u64,
    pub notes: Vec<String>,
}

#[derive(Serialize)]
pub struct Report {
    pub generator: String,
    pub seconds_per_run: u32,
    pub rounds: usize,
    pub rows: Vec<Row>,
    pub skipped: Vec<String>,
    /// The machine while the rounds ran: other work on it moves every row.
    pub load: super::LoadReport,
}

struct Lab {
    /// Dropped first: stops the relay threads before the namespaces go.
    _relay: Option<Relay>,
    kind: Kind,
    vm: Netns,
    hv: Netns,
    peer: Netns,
    v: String,
    p: String,
    u: String,
    e: String,
    br: String,
    vx: String,
    dp: Option<TestDataplane>,
    notes: Vec<String>,
    _server: ChildGuard,
    /// Tap rows: the namespace of the relay's end of the VM's veth, and that end's name.
    qemu: Option<(Netns, String)>,
    /// The port's rx packet count once set up.
    port_rx: u64,
}

pub fn run(cfg: &Config) -> Result<Report> {
    for tool in ["iperf3", "nft", "ebtables-nft", "ethtool", "ping"] {
        ensure!(
            which(tool),
            "{tool} is missing: `cargo xtask setup` installs it"
        );
    }
    let mut labs = Vec::new();
    let mut skipped = Vec::new();
    for kind in Kind::ALL {
        eprintln!("bench: traffic: setting up {}", kind.label());
        match std::panic::catch_unwind(|| Lab::new(kind)) {
            Ok(Ok(lab)) => labs.push(lab),
            Ok(Err(e)) if kind != Kind::Baseline => {
                skipped.push(format!("{}: {e:#}", kind.label()));
            }
            Ok(Err(e)) => return Err(e.context("the baseline")),
            Err(_) if kind != Kind::Baseline => {
                skipped.push(format!("{}: set-up panicked (see stderr)", kind.label()));
            }
            Err(_) => bail!("setting up the baseline panicked (see stderr)"),
        }
    }
    let mut values: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); Metric::ALL.len()]; labs.len()];
    let mut bytes_per_packet = vec![0.0; labs.len()];
    let load_before = super::Load::now();
    for round in 0..cfg.rounds {
        for (m, metric) in Metric::ALL.into_iter().enumerate() {
            // Each round starts at another row, so that no row always follows the same one.
            let order = (0..labs.len()).map(|i| (i + round) % labs.len());
            for l in order {
                let lab = &labs[l];
                eprintln!(
                    "bench: traffic: round {}/{}: {} over {}",
                    round + 1,
                    cfg.rounds,
                    metric.label(),
                    lab.kind.label()
                );
                let (value, bpp) = lab
                    .measure(metric, cfg)
                    .with_context(|| format!("{} over {}", metric.label(), lab.kind.label()))?;
                if round == 0 && metric == Metric::Tcp1 {
                    bytes_per_packet[l] = bpp;
                }
                values[l][m].push(value);
            }
        }
    }
    let load = load_before.since();
    let mut rows = Vec::new();
    for (l, lab) in labs.iter().enumerate() {
        let figures = Metric::ALL
            .into_iter()
            .enumerate()
            .map(|(m, metric)| {
                let base = labs
                    .iter()
                    .position(|b| b.kind == lab.kind.baseline())
                    .map_or(&[][..], |b| &values[b][m][..]);
                let ratios: Vec<f64> = values[l][m].iter().zip(base).map(|(v, b)| v / b).collect();
                Figure {
                    metric,
                    value: median(&values[l][m]),
                    rounds: values[l][m].clone(),
                    ratio: median(&ratios),
                    ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                    ratio_max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                }
            })
            .collect();
        rows.push(Row {
            kind: lab.kind,
            label: lab.kind.label(),
            figures,
            peer_sees: lab.peer_sees()?,
            offloads: lab.offloads(),
            tcp_bytes_per_packet_at_peer: bytes_per_packet[l],
            counters: lab.counters()?,
            frames_from_vm: link_stats(&lab.hv, &lab.p)?.0 - lab.port_rx,
            notes: lab.notes.clone(),
        });
    }
    Ok(Report {
        generator: iperf3_version(),
        seconds_per_run: cfg.seconds,
        rounds: cfg.rounds,
        rows,
        skipped,
        load,
    })
}

impl Lab {
    fn new(kind: Kind) -> Result<Lab> {
        let id = unique("");
        let vm = Netns::new("bvm");
        let hv = Netns::new("bhv");
        let peer = Netns::new("bpr");
        // IPv6 stays on, as in every real guest: its background frames (DAD, MLD, router
        // solicitations) cross the programs like the measured traffic.
        let name = |p: &str| format!("{p}{id}");
        let (v, p, u, e, br, vx) = (
            name("bv"),
            name("bp"),
            name("bu"),
            name("be"),
            name("bbr"),
            name("bx"),
        );
        hv.ip(&["link", "add", &br, "type", "bridge"]);
        let mut relay = None;
        let mut qemu = None;
        if kind.is_tap() {
            // VM [v] ==veth== [q] in the "QEMU" namespace, relayed to the tap [p] in hv.
            let ns = Netns::new("bqm");
            let q = name("bq");
            ns.ip(&[
                "link",
                "add",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &v,
                "address",
                INSIDE,
                "netns",
                vm.name(),
            ]);
            ns.ip(&["link", "set", &q, "up"]);
            relay = Some(Relay::new(&hv, &p, &ns, &q)?);
            qemu = Some((ns, q));
        } else {
            hv.ip(&[
                "link",
                "add",
                &p,
                "type",
                "veth",
                "peer",
                "name",
                &v,
                "address",
                INSIDE,
                "netns",
                vm.name(),
            ]);
        }
        hv.ip(&[
            "link",
            "add",
            &u,
            "type",
            "veth",
            "peer",
            "name",
            &e,
            "address",
            PEER_MAC,
            "netns",
            peer.name(),
        ]);
        hv.ip(&["link", "set", &p, "master", &br]);
        let vm_mtu = if kind == Kind::Vxlan { "1450" } else { "1500" };
        vm.ip(&["link", "set", &v, "mtu", vm_mtu]);
        vm.ip(&["addr", "add", &format!("{VM_IP}/24"), "dev", &v]);
        if kind == Kind::Vxlan {
            hv.ip(&["addr", "add", &format!("{HV_UNDERLAY}/24"), "dev", &u]);
            peer.ip(&["addr", "add", &format!("{PEER_UNDERLAY}/24"), "dev", &e]);
            hv.ip(&[
                "link",
                "add",
                &vx,
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                HV_UNDERLAY,
                "remote",
                PEER_UNDERLAY,
                "dstport",
                "4789",
                "dev",
                &u,
            ]);
            hv.ip(&["link", "set", &vx, "master", &br]);
            peer.ip(&[
                "link",
                "add",
                &vx,
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                PEER_UNDERLAY,
                "remote",
                HV_UNDERLAY,
                "dstport",
                "4789",
                "dev",
                &e,
            ]);
            peer.ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", &vx]);
        } else {
            hv.ip(&["link", "set", &u, "master", &br]);
            peer.ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", &e]);
        }
        for (ns, ifname) in [(&vm, &v), (&hv, &p), (&hv, &u), (&hv, &br), (&peer, &e)] {
            ns.ip(&["link", "set", ifname, "up"]);
        }
        if kind == Kind::Vxlan {
            hv.ip(&["link", "set", &vx, "up"]);
            peer.ip(&["link", "set", &vx, "up"]);
        }
        let server = peer.spawn("iperf3", &["-s", "-B", PEER_IP]);
        let mut lab = Lab {
            _relay: relay,
            qemu,
            port_rx: 0,
            kind,
            vm,
            hv,
            peer,
            v,
            p,
            u,
            e,
            br,
            vx,
            dp: None,
            notes: Vec::new(),
            _server: server,
        };
        lab.translate()?;
        lab.wait_reachable()?;
        let sees = lab.peer_sees()?;
        let want = if kind.translates() { OUTSIDE } else { INSIDE };
        ensure!(
            sees == want,
            "the peer sees the VM as {sees}, not {want}: the row does not translate as meant"
        );
        lab.port_rx = link_stats(&lab.hv, &lab.p)?.0;
        Ok(lab)
    }

    /// Installs the row's translation.
    fn translate(&mut self) -> Result<()> {
        let kind = self.kind;
        match kind {
            Kind::Baseline | Kind::Vxlan | Kind::TapBaseline => {}
            Kind::MatPort
            | Kind::MatPortXdp
            | Kind::MatUplink
            | Kind::TapMatPort
            | Kind::TapMatPortXdp => {
                let mut dp = TestDataplane::new();
                dp.set_pools(&[super::prog::POOL])?;
                let (ifname, mode) = match kind {
                    Kind::MatPort | Kind::TapMatPort => (self.p.clone(), Mode::Port),
                    Kind::MatPortXdp | Kind::TapMatPortXdp => (self.p.clone(), Mode::PortXdp),
                    _ => (self.u.clone(), Mode::Uplink),
                };
                let ifindex = self.hv.enter(|| -> Result<u32> {
                    dp.attach(&ifname, mode)?;
                    Ok(nix::net::if_::if_nametoindex(ifname.as_str())?)
                })?;
                let key = if kind == Kind::MatUplink {
                    UPLINK_IFINDEX
                } else {
                    ifindex
                };
                dp.bind(key, mac(INSIDE), mac(OUTSIDE), 0)?;
                self.dp = Some(dp);
            }
            Kind::Nftables => {
                let p = &self.p;
                let rules = format!(
                    "table netdev mat {{
    map from_vm {{ type ether_addr : ether_addr; elements = {{ {INSIDE} : {OUTSIDE} }}; }}
    map to_vm {{ type ether_addr : ether_addr; elements = {{ {OUTSIDE} : {INSIDE} }}; }}
    chain from_vm_in {{
        type filter hook ingress device \"{p}\" priority 0; policy accept;
        ether saddr set ether saddr map @from_vm
        arp saddr ether set arp saddr ether map @from_vm
    }}
    chain to_vm_out {{
        type filter hook egress device \"{p}\" priority 0; policy accept;
        ether daddr set ether daddr map @to_vm
        arp daddr ether set arp daddr ether map @to_vm
    }}
}}
"
                );
                exec_stdin(&self.hv, "nft", &["-f", "-"], &rules)?;
                self.notes
                    .push(format!("nft ruleset in the hypervisor namespace:\n{rules}"));
            }
            Kind::Ebtables => {
                let (p, u) = (&self.p, &self.u);
                let rules = [
                    vec![
                        "-t",
                        "nat",
                        "-A",
                        "POSTROUTING",
                        "-o",
                        u,
                        "-s",
                        INSIDE,
                        "-j",
                        "snat",
                        "--to-src",
                        OUTSIDE,
                        "--snat-arp",
                        "--snat-target",
                        "ACCEPT",
                    ],
                    vec![
                        "-t",
                        "nat",
                        "-A",
                        "PREROUTING",
                        "-i",
                        u,
                        "-d",
                        OUTSIDE,
                        "-j",
                        "dnat",
                        "--to-dst",
                        INSIDE,
                        "--dnat-target",
                        "ACCEPT",
                    ],
                ];
                for r in &rules {
                    exec(&self.hv, "ebtables-nft", r)?;
                    self.notes.push(format!("ebtables-nft {}", r.join(" ")));
                }
                self.notes.push(format!(
                    "ebtables has no target-hardware-address rewrite: ARP replies reach the VM \
                     ({p}) with tha = the outside MAC, which Linux accepts"
                ));
            }
        }
        Ok(())
    }

    /// Pings the peer until it answers (10 s at most).
    fn wait_reachable(&self) -> Result<()> {
        for _ in 0..50 {
            let ok = self
                .vm
                .command("ping")
                .args(["-c", "1", "-W", "1", "-q", PEER_IP])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("{PEER_IP} does not answer from the VM")
    }

    /// One iperf3 run: (the figure, mean bytes per packet arriving at the peer's interface).
    /// TCP runs omit their first second (slow start) and report the median of the one-second
    /// intervals, so that a burst from a noisy neighbour moves the figure less than a mean would.
    fn measure(&self, metric: Metric, cfg: &Config) -> Result<(f64, f64)> {
        let t = cfg.seconds.to_string();
        let mut args = vec!["-c", PEER_IP, "-t", &t, "-J"];
        match metric {
            Metric::Tcp1 => args.extend(["-O", "1"]),
            Metric::Tcp4 => args.extend(["-O", "1", "-P", "4"]),
            Metric::SmallUdp => args.extend(["-u", "-b", "0", "-l", SMALL_PAYLOAD]),
        }
        let at_peer = if self.kind == Kind::Vxlan {
            &self.vx
        } else {
            &self.e
        };
        let before = link_stats(&self.peer, at_peer)?;
        let out = output(&self.vm, "iperf3", &args)?;
        let after = link_stats(&self.peer, at_peer)?;
        let json: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("iperf3 printed no JSON: {out}"))?;
        if let Some(e) = json.get("error") {
            bail!("iperf3: {e}");
        }
        let packets = (after.0 - before.0) as f64;
        let bpp = (after.1 - before.1) as f64 / packets.max(1.0);
        let value = match metric {
            Metric::Tcp1 | Metric::Tcp4 => {
                let intervals: Vec<f64> = json["intervals"]
                    .as_array()
                    .context("iperf3 JSON: no intervals")?
                    .iter()
                    .map(|i| &i["sum"])
                    .filter(|s| !s["omitted"].as_bool().unwrap_or(false))
                    .filter_map(|s| s["bits_per_second"].as_f64())
                    .collect();
                ensure!(!intervals.is_empty(), "iperf3 JSON: no measured interval");
                median(&intervals) / 1e9
            }
            Metric::SmallUdp => {
                let secs = json["end"]["sum_received"]["seconds"]
                    .as_f64()
                    .context("iperf3 JSON: no seconds")?;
                packets / secs / 1e3
            }
        };
        Ok((value, bpp))
    }

    /// The VM's MAC in the peer's neighbour table.
    fn peer_sees(&self) -> Result<String> {
        let out = output(&self.peer, "ip", &["-j", "neigh", "show", VM_IP])?;
        let json: serde_json::Value = serde_json::from_str(&out)?;
        Ok(json[0]["lladdr"].as_str().unwrap_or("none").to_owned())
    }

    fn offloads(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut path = vec![
            ("vm", &self.vm, &self.v),
            ("port", &self.hv, &self.p),
            ("bridge", &self.hv, &self.br),
            ("uplink", &self.hv, &self.u),
            ("peer", &self.peer, &self.e),
        ];
        if self.kind == Kind::Vxlan {
            path.push(("vxlan-hv", &self.hv, &self.vx));
            path.push(("vxlan-peer", &self.peer, &self.vx));
        }
        if let Some((ns, q)) = &self.qemu {
            path.push(("relay end of the VM's veth", ns, q));
        }
        path.into_iter()
            .map(|(role, ns, ifname)| (format!("{role} ({ifname})"), offload_state(ns, ifname)))
            .collect()
    }

    fn counters(&self) -> Result<Vec<String>> {
        let Some(dp) = &self.dp else {
            return Ok(Vec::new());
        };
        Ok(dp
            .counters()?
            .nonzero()
            .into_iter()
            .map(|(h, o, v)| format!("{}/{}={v}", h.name(), o.name()))
            .collect())
    }
}

/// The offload features that decide how big the packets on a path are.
fn offload_state(ns: &Netns, ifname: &str) -> BTreeMap<String, String> {
    const WANTED: [&str; 5] = [
        "tcp-segmentation-offload",
        "generic-segmentation-offload",
        "generic-receive-offload",
        "rx-gro-list",
        "rx-udp-gro-forwarding",
    ];
    let Ok(text) = output(ns, "ethtool", &["-k", ifname]) else {
        return BTreeMap::from([("error".into(), "ethtool -k failed".into())]);
    };
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| WANTED.contains(&k.trim()))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// (rx packets, rx bytes) of an interface.
fn link_stats(ns: &Netns, ifname: &str) -> Result<(u64, u64)> {
    let out = output(ns, "ip", &["-j", "-s", "link", "show", "dev", ifname])?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    let rx = &json[0]["stats64"]["rx"];
    Ok((
        rx["packets"].as_u64().context("no rx packets")?,
        rx["bytes"].as_u64().context("no rx bytes")?,
    ))
}

fn mac(s: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("a MAC constant");
    }
    out
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn iperf3_version() -> String {
    Command::new("iperf3")
        .arg("--version")
        .output()
        .map_or_else(
            |_| "iperf3".into(),
            |o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("iperf3")
                    .to_owned()
            },
        )
}

/// Runs `program args` in the namespace; its stdout, or an error with its stderr.
fn output(ns: &Netns, program: &str, args: &[&str]) -> Result<String> {
    let out = ns
        .command(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn exec(ns: &Netns, program: &str, args: &[&str]) -> Result<()> {
    output(ns, program, args).map(drop)
}

fn exec_stdin(ns: &Netns, program: &str, args: &[&str], input: &str) -> Result<()> {
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The issue's targets for the traffic rows.
pub fn targets(report: &Report) -> Vec<super::Target> {
    let mut out = Vec::new();
    let row = |k: Kind| report.rows.iter().find(|r| r.kind == k);
    let Some(port) = row(Kind::MatPort) else {
        return out;
    };
    for f in &port.figures {
        let limit = if f.metric == Metric::SmallUdp {
            0.95
        } else {
            0.97
        };
        out.push(super::Target {
            what: format!("traffic: MAT port mode, {}", f.metric.label()),
            target: format!(">= {limit:.2}x baseline"),
            measured: format!("{:.3}x ({:.2}-{:.2})", f.ratio, f.ratio_min, f.ratio_max),
            met: f.ratio >= limit,
        });
        for other in [Kind::Nftables, Kind::Ebtables] {
            let Some(o) = row(other).and_then(|r| r.figures.iter().find(|g| g.metric == f.metric))
            else {
                continue;
            };
            out.push(super::Target {
                what: format!(
                    "traffic: MAT port ahead of {}, {}",
                    other.label(),
                    f.metric.label()
                ),
                target: "ratio above theirs".into(),
                measured: format!(
                    "{:.3}x vs {:.3}x{}",
                    f.ratio,
                    o.ratio,
                    // Per-round ratio ranges that overlap: the order is the noise's.
                    if f.ratio_min <= o.ratio_max && o.ratio_min <= f.ratio_max {
                        " (ranges overlap)"
                    } else {
                        ""
                    }
                ),
                met: f.ratio > o.ratio,
            });
        }
    }
    out
}

pub fn table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\ntraffic ({}, {} s per run, median of {} interleaved rounds; ratio to the baseline \
         of the same round)",
        report.generator, report.seconds_per_run, report.rounds
    );
    let _ = write!(s, "{:<28}", "row");
    for m in Metric::ALL {
        let _ = write!(s, " {:>22}", m.label());
    }
    let _ = writeln!(s, " {:>8} {:<17}", "B/pkt", "peer sees");
    for r in &report.rows {
        let _ = write!(s, "{:<28}", r.label);
        for f in &r.figures {
            let _ = write!(s, " {:>13.2} ({:>5.3}x)", f.value, f.ratio);
        }
        let _ = writeln!(
            s,
            " {:>8.0} {:<17}",
            r.tcp_bytes_per_packet_at_peer, r.peer_sees
        );
    }
    for why in &report.skipped {
        let _ = writeln!(s, "skipped: {why}");
    }
    let _ = writeln!(
        s,
        "ratio ranges over rounds (noise): {}",
        report
            .rows
            .iter()
            .skip(1)
            .map(|r| format!(
                "{}: {}",
                r.kind.label(),
                r.figures
                    .iter()
                    .map(|f| format!("{:.2}-{:.2}", f.ratio_min, f.ratio_max))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        s,
        "machine during the rounds: load average {:.2} -> {:.2}, CPU stolen by the host {:.1}%, \
         busy {:.1}%",
        report.load.loadavg_before,
        report.load.loadavg_after,
        report.load.steal_pct,
        report.load.busy_pct
    );
    s
}
