//! `cargo xtask lab`: the fabric MAT makes possible, beside a flat learning fabric, in
//! namespaces on this machine. Two copies of one topology:
//!
//! ```text
//!                       peer (169.254.254.1)
//!                        |
//!                      core            MAT: mat-switch (routes pool/rack per VLAN)
//!                 /            \       flat: Linux bridge
//!             ToR 0    ...    ToR R-1  MAT: mat-switch (routes pool/rack/host, default to core)
//!            /     \
//!         hv 0 ... hv H-1              bridge + uplink; MAT: `mat daemon`, VMs attached
//!          |
//!         VMs (169.254.x.y/16: IPv4 link-local, enough for thousands of VMs)
//! ```
//!
//! Every namespace has a per-run name ([`mat_tests::netns::Netns`]); links live inside them, so
//! deleting the namespaces removes every link. Daemons, switches and namespaces are guards,
//! dropped on success, on failure (a panic unwinds) and on Ctrl-C (checked between steps).
//! `--keep` leaves the MAT fabric up and writes what it left to [`STATE`]; `--clean` removes it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use mat_loader::mac::MacPrefix;
use mat_switch::{RouteSpec, Switch};
use mat_tests::{
    capture::Capture,
    daemon::{Daemon, POOL},
    frames::Mac,
    netns::Netns,
    switch::SwitchGuard,
    topology::{PingStream, fmt_mac, random_inside_mac},
};
use serde::Serialize;

/// What `--keep` left behind, for `--clean`.
const STATE: &str = "/run/mat-lab/state.json";
const PEER_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 254, 1);
const PREFIX: &str = "/16";

#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub racks: usize,
    pub hosts: usize,
    pub vms: usize,
    pub vlans: usize,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn check() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted: removing everything the lab made");
    }
    Ok(())
}

fn vm_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(169, 254, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

struct Vm {
    ns: Netns,
    mac: Mac,
    ip: Ipv4Addr,
    rack: usize,
    /// The hypervisor-side port's name (`p<i>`).
    port: String,
}

/// One fabric: core, ToRs, hypervisors, VMs, peer.
struct Fabric {
    mat: bool,
    core: Netns,
    tors: Vec<Netns>,
    hvs: Vec<Netns>,
    vms: Vec<Vm>,
    peer: Netns,
    peer_mac: Mac,
    // Dropped before the namespaces (fields drop in order of declaration... after these).
    daemons: Vec<Daemon>,
    switches: Vec<SwitchGuard>,
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // Daemons and switches go first, while their namespaces still exist.
        self.daemons.clear();
        self.switches.clear();
    }
}

fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str, b_mac: Option<&Mac>) {
    let mut args = vec!["link", "add", a_if, "type", "veth", "peer", "name", b_if];
    let mac;
    if let Some(m) = b_mac {
        mac = fmt_mac(m);
        args.extend(["address", &mac]);
    }
    args.extend(["netns", b.name()]);
    a.ip(&args);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A Linux bridge over `ports`. Multicast snooping off: with it on, the bridge joins the
/// snoopers' group (224.0.0.106) and reports it with IGMP from its own MAC, which every switch
/// above would learn (and this kernel's bridges flood multicast without a querier anyway).
fn bridge(ns: &Netns, ports: &[String]) {
    ns.ip(&[
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    ns.ip(&["link", "set", "br0", "up"]);
    for p in ports {
        ns.ip(&["link", "set", p, "master", "br0"]);
    }
}

/// A namespace of the lab (VMs, the peer), with IPv6 on as in every real guest: the fabric
/// carries their Neighbor Discovery too.
fn netns(prefix: &str) -> Netns {
    Netns::new(prefix)
}

/// A namespace of the fabric's own devices (core, ToR, hypervisor: switch ports, bridges,
/// uplinks): IPv6 off, as on a hypervisor's bridge and uplink, which need no address. With it
/// on, each of them sends MLD reports and router solicitations from its own MAC, and the cores
/// learn every bridge and uplink of the fabric.
fn infra_netns(prefix: &str) -> Netns {
    let ns = Netns::new(prefix);
    ns.enter(|| {
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            std::fs::write(&path, "1").unwrap_or_else(|e| panic!("writing {path}: {e}"));
        }
    });
    ns
}

impl Fabric {
    fn build(size: Size, mat: bool) -> Result<Fabric> {
        let tag = if mat { "lm" } else { "lf" };
        let core = infra_netns(&format!("{tag}c"));
        let peer = netns(&format!("{tag}p"));
        let peer_mac = random_inside_mac();
        veth(&core, "peer", &peer, "eth0", Some(&peer_mac));
        peer.ip(&["addr", "add", &format!("{PEER_IP}{PREFIX}"), "dev", "eth0"]);
        let mut f = Fabric {
            mat,
            core,
            tors: Vec::new(),
            hvs: Vec::new(),
            vms: Vec::new(),
            peer,
            peer_mac,
            daemons: Vec::new(),
            switches: Vec::new(),
        };
        let mut core_ports = vec!["peer".to_owned()];
        for r in 0..size.racks {
            check()?;
            let tor = infra_netns(&format!("{tag}t"));
            veth(&f.core, &format!("r{r}"), &tor, "ul", None);
            core_ports.push(format!("r{r}"));
            let mut tor_ports = vec!["ul".to_owned()];
            for h in 0..size.hosts {
                let hv = infra_netns(&format!("{tag}h"));
                veth(&tor, &format!("h{h}"), &hv, "ul", None);
                tor_ports.push(format!("h{h}"));
                bridge(&hv, &["ul".to_owned()]);
                f.hvs.push(hv);
            }
            if mat {
                let refs: Vec<&str> = tor_ports.iter().map(String::as_str).collect();
                f.switches.push(SwitchGuard::create(
                    &tor,
                    &refs,
                    Duration::from_mins(5),
                    false,
                ));
            } else {
                bridge(&tor, &tor_ports);
            }
            f.tors.push(tor);
        }
        if mat {
            let refs: Vec<&str> = core_ports.iter().map(String::as_str).collect();
            // The core's guard goes last: index racks.
            f.switches.push(SwitchGuard::create(
                &f.core,
                &refs,
                Duration::from_mins(5),
                false,
            ));
        } else {
            bridge(&f.core, &core_ports);
        }
        // Hypervisors: daemons (MAT), then VMs round-robin over them.
        if mat {
            for (i, hv) in f.hvs.iter().enumerate() {
                let (rack, host) = (i / size.hosts + 1, i % size.hosts + 1);
                let (rack, host) = (rack.to_string(), host.to_string());
                f.daemons.push(Daemon::start(
                    hv,
                    &[
                        "--pool",
                        POOL,
                        "--rack-bits",
                        "8",
                        "--host-bits",
                        "8",
                        "--rack",
                        &rack,
                        "--host",
                        &host,
                        "--bridge",
                        "br0",
                        "--vm-ports",
                        "p*",
                    ],
                ));
            }
        }
        let n_hv = f.hvs.len();
        for i in 0..size.vms {
            if i % 50 == 0 {
                check()?;
            }
            let hv_i = i % n_hv;
            let ns = netns(&format!("{tag}v"));
            let mac = random_inside_mac();
            let port = format!("p{i}");
            veth(&f.hvs[hv_i], &port, &ns, "eth0", Some(&mac));
            // Down until attached: the guest's first frames (DAD, router solicitations) would
            // carry its inside MAC onto the fabric.
            f.hvs[hv_i].ip(&["link", "set", &port, "down", "master", "br0"]);
            let ip = vm_ip(i);
            ns.ip(&["addr", "add", &format!("{ip}{PREFIX}"), "dev", "eth0"]);
            if mat {
                f.daemons[hv_i].cli_ok(&[
                    "attach",
                    &port,
                    "--mac",
                    &fmt_mac(&mac),
                    "--vm",
                    &format!("vm{i}"),
                    "--ip",
                    &ip.to_string(),
                ]);
            }
            f.hvs[hv_i].ip(&["link", "set", &port, "up"]);
            f.vms.push(Vm {
                ns,
                mac,
                ip,
                rack: hv_i / size.hosts,
                port,
            });
        }
        if mat {
            f.install_routes(size)?;
        }
        Ok(f)
    }

    fn tor_switch(&self, r: usize) -> &SwitchGuard {
        &self.switches[r]
    }

    fn core_switch(&self) -> &SwitchGuard {
        self.switches.last().expect("the core")
    }

    /// Every hypervisor's `mat routes --json` into its ToR (host routes, default to the core)
    /// and the core (rack routes), once per VLAN (`--vlans N`: untagged and VLANs 1..N-1).
    fn install_routes(&self, size: Size) -> Result<()> {
        for (i, d) in self.daemons.iter().enumerate() {
            let (r, h) = (i / size.hosts, i % size.hosts);
            let mut routes = d.cli_json(&["routes"]);
            for vlan in 0..size.vlans {
                for route in routes["routes"].as_array_mut().expect("routes") {
                    route["vlan"] = if vlan == 0 {
                        serde_json::Value::Null
                    } else {
                        vlan.into()
                    };
                }
                let json = routes.to_string();
                let via = |pairs: &[(String, String)]| pairs.iter().cloned().collect();
                let tor = self.tor_switch(r);
                self.tors[r].enter(|| {
                    tor.open().import(
                        &json,
                        &via(&[
                            (format!("host {}", h + 1), format!("h{h}")),
                            ("core".into(), "ul".into()),
                        ]),
                        Some(mat_loader::plan::Scope::Tor),
                    )
                })?;
                let core = self.core_switch();
                self.core.enter(|| {
                    core.open().import(
                        &json,
                        &via(&[(format!("rack {}", r + 1), format!("r{r}"))]),
                        Some(mat_loader::plan::Scope::Core),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Entries in the core's and each ToR's table: MAT: routes and live learned MACs; flat:
    /// the bridge's learned FDB entries (all learned).
    fn tables(&self) -> (Table, Vec<Table>) {
        let count = |ns: &Netns, sw: Option<&SwitchGuard>| match sw {
            Some(sw) => ns.enter(|| {
                let s = sw.open();
                let learned = s.learned().expect("learned");
                Table {
                    routes: s.routes().expect("routes").len(),
                    learned: learned.iter().filter(|l| !l.expired).count(),
                }
            }),
            None => Table {
                routes: 0,
                learned: fdb(ns).len(),
            },
        };
        let mat = self.mat;
        let tors = (0..self.tors.len())
            .map(|r| count(&self.tors[r], mat.then(|| self.tor_switch(r))))
            .collect();
        (count(&self.core, mat.then(|| self.core_switch())), tors)
    }
}

#[derive(Clone, Copy, Default)]
struct Table {
    routes: usize,
    learned: usize,
}

impl Table {
    fn entries(self) -> usize {
        self.routes + self.learned
    }
}

/// Learned (dynamic) FDB entries of br0, as MACs.
fn fdb(ns: &Netns) -> BTreeSet<String> {
    let out = ns
        .command("bridge")
        .args(["fdb", "show", "br", "br0"])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.contains("permanent") && !l.contains(" self"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Pings `ip` from `ns` (one ping, else two more), then forgets `ns`'s neighbours (see
/// [`PAIR_SPACING`]).
fn ping_once(ns: &Netns, ip: Ipv4Addr) -> bool {
    let script = format!(
        "ping -n -q -c 1 -W 2 {ip} >/dev/null || ping -n -q -c 2 -i 0.2 -W 2 {ip} >/dev/null; \
         ok=$?; ip neigh flush dev eth0; exit $ok"
    );
    ns.command("sh")
        .args(["-c", &script])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Pairs between VMs of different racks, at most: at scale a sample (every VM still reaches the
/// peer), so that the run stays in minutes.
const MAX_CROSS_PAIRS: usize = 256;
/// New pairs start at most this often. Every ping adds an ARP entry at both ends, and the
/// kernel's neighbour table is one for all namespaces (`gc_thresh3`, 1024 here, shared with
/// whatever else runs), which cannot reclaim an entry while its timer runs (reachable, delay,
/// probe: 10 s and more) or for 5 s after: at a thousand VMs the table overflows and pings fail
/// for a reason the fabric has nothing to do with. Hence also: each VM forgets its neighbours
/// after its ping, and the peer every [`NEIGH_FLUSH`].
const PAIR_SPACING: Duration = Duration::from_millis(10);
const NEIGH_FLUSH: Duration = Duration::from_millis(500);

/// Every VM to the peer, and to `k` VMs in other racks (every VM's when that makes at most
/// [`MAX_CROSS_PAIRS`], else that many spread over the VMs): (peer pairs, cross pairs, ok, the
/// pairs that failed).
fn reachability(f: &Fabric, k: usize) -> (usize, usize, usize, Vec<String>) {
    let mut pairs: Vec<(usize, Ipv4Addr)> = (0..f.vms.len()).map(|i| (i, PEER_IP)).collect();
    let to_peer = pairs.len();
    let n = f.vms.len();
    let senders = n.min(MAX_CROSS_PAIRS / k.max(1));
    for s in 0..senders {
        let i = s * n / senders.max(1);
        let vm = &f.vms[i];
        let others: Vec<&Vm> = f.vms.iter().filter(|o| o.rack != vm.rack).collect();
        for j in 0..k.min(others.len()) {
            pairs.push((i, others[(i * 7 + j * 13) % others.len()].ip));
        }
    }
    let ok = std::sync::atomic::AtomicUsize::new(0);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t0 = Instant::now();
    let done = AtomicBool::new(false);
    let failed = std::sync::Mutex::new(Vec::new());
    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let _ = f
                    .peer
                    .command("ip")
                    .args(["neigh", "flush", "dev", "eth0"])
                    .output();
                thread::sleep(NEIGH_FLUSH);
            }
        });
        let workers: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&(i, ip)) = pairs.get(n) else { break };
                        if STOP.load(Ordering::SeqCst) {
                            break;
                        }
                        let start = t0 + PAIR_SPACING * n as u32;
                        thread::sleep(start.saturating_duration_since(Instant::now()));
                        if ping_once(&f.vms[i].ns, ip) {
                            ok.fetch_add(1, Ordering::SeqCst);
                        } else {
                            let vm = &f.vms[i];
                            let what = format!("vm{i} ({}, rack {}) -> {ip}", vm.ip, vm.rack);
                            failed.lock().expect("failed pairs").push((i, ip, what));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        done.store(true, Ordering::SeqCst);
    });
    // A failed pair once more, after the rush (a diagnosis, not counted): a transient failure
    // answers now, a broken path does not.
    let failed = failed
        .into_inner()
        .expect("failed pairs")
        .into_iter()
        .map(|(i, ip, what): (usize, Ipv4Addr, String)| {
            let later = if ping_once(&f.vms[i].ns, ip) {
                "answered on a retest after the others"
            } else {
                "no answer on a retest either"
            };
            format!("{what}: {later}")
        })
        .collect();
    (to_peer, pairs.len() - to_peer, ok.into_inner(), failed)
}

/// Fabric links: every port of the core and of every ToR.
fn fabric_ports(f: &Fabric, size: Size) -> Vec<(&Netns, String)> {
    let mut out = vec![(&f.core, "peer".to_owned())];
    for r in 0..size.racks {
        out.push((&f.core, format!("r{r}")));
        out.push((&f.tors[r], "ul".to_owned()));
        for h in 0..size.hosts {
            out.push((&f.tors[r], format!("h{h}")));
        }
    }
    out
}

#[derive(Serialize, Default)]
struct Flush {
    mat_flooded: u64,
    flat_flooded: u64,
    /// Until the table again holds every MAC the running streams send to; `null`: not within
    /// the window.
    flat_reconverge_ms: Option<u64>,
    mat_reconverge_ms: Option<u64>,
    mat_flushed: usize,
    flat_flushed: usize,
}

#[derive(Serialize, Default)]
struct Move {
    sent: usize,
    lost: usize,
    gap_ms: u64,
}

#[derive(Serialize, Default)]
struct Forwarding {
    mat_pps: f64,
    flat_pps: f64,
    mat_tcp_gbps: f64,
    flat_tcp_gbps: f64,
    /// The ends without checksum offload (see [`forwarding`]): TC, then the XDP unicast path
    /// (the ends given an XDP program), which only works so. Measured, not the default.
    mat_csum_off_pps: f64,
    mat_csum_off_tcp_gbps: f64,
    mat_xdp_pps: f64,
    mat_xdp_tcp_gbps: f64,
}

#[derive(Serialize, Default)]
struct Report {
    racks: usize,
    hosts_per_rack: usize,
    vms: usize,
    vlans: usize,
    core_entries_mat: usize,
    core_entries_flat: usize,
    tor_entries_mat: Vec<usize>,
    tor_entries_flat: Vec<usize>,
    /// Of the MAT entries above, the learned ones (the rest are routes).
    core_learned_mat: usize,
    tor_learned_mat: Vec<usize>,
    pairs_tested: usize,
    pairs_ok: usize,
    /// Of the pairs tested: VM to the peer (every VM), VM to a VM of another rack.
    pairs_to_peer: usize,
    pairs_cross: usize,
    /// The pairs that got no answer to three pings (`vmI (IP, rack R) -> IP`).
    pairs_failed: Vec<String>,
    flat_pairs_failed: Vec<String>,
    flat_pairs_ok: usize,
    inside_mac_frames: usize,
    flush: Flush,
    #[serde(rename = "move")]
    moved: Move,
    forwarding: Forwarding,
    build_s: f64,
    total_s: f64,
}

/// Streams that cross the core while a table is flushed: one VM per rack to the peer and to a
/// VM of the next rack. Returns the streams and the VMs they involve (senders and receivers).
fn flush_streams(f: &Fabric, size: Size) -> (Vec<PingStream>, BTreeSet<usize>) {
    let mut streams = Vec::new();
    let mut vms = BTreeSet::new();
    for r in 0..size.racks {
        let Some(a) = f.vms.iter().position(|v| v.rack == r) else {
            continue;
        };
        streams.push(PingStream::start(&f.vms[a].ns, PEER_IP));
        vms.insert(a);
        if let Some(b) = f
            .vms
            .iter()
            .position(|v| v.rack == (r + 1) % size.racks && v.rack != r)
        {
            streams.push(PingStream::start(&f.vms[a].ns, f.vms[b].ip));
            vms.insert(b);
        }
    }
    (streams, vms)
}

/// How long the flush's effects are watched (flooded frames counted, tables polled).
const FLUSH_WINDOW: Duration = Duration::from_secs(1);

/// Polls `present` (the MACs a table holds now) until it holds all of `wanted`: the time that
/// took, or `None` within [`FLUSH_WINDOW`]. Returns after the whole window either way.
fn reconverge(wanted: &BTreeSet<String>, present: impl Fn() -> BTreeSet<String>) -> Option<u64> {
    let t0 = Instant::now();
    let mut done = None;
    while t0.elapsed() < FLUSH_WINDOW {
        if done.is_none() && wanted.is_subset(&present()) {
            done = Some(t0.elapsed().as_millis() as u64);
        }
        thread::sleep(Duration::from_millis(2));
    }
    done
}

/// Unicast copies that left a core port behind which their destination does not live (a
/// destination `behind` does not place is not counted), from captures on every core port
/// while `during` runs.
fn misdelivered<T>(
    f: &Fabric,
    size: Size,
    behind: impl Fn(&Mac) -> Option<String>,
    during: impl FnOnce() -> T,
) -> (u64, T) {
    let ports: Vec<String> = std::iter::once("peer".to_owned())
        .chain((0..size.racks).map(|r| format!("r{r}")))
        .collect();
    let captures: Vec<(String, Capture)> = ports
        .iter()
        .map(|p| (p.clone(), Capture::in_netns(&f.core, p)))
        .collect();
    let result = during();
    let mut copies = 0;
    for (port, c) in captures {
        for frame in c.stop().outgoing() {
            let dst = frame.addrs().dst;
            if dst[0] & 1 == 0 && behind(&dst).is_some_and(|p| p != port) {
                copies += 1;
            }
        }
    }
    (copies, result)
}

/// The seed's topology change: each core's table is flushed while streams run (the MAT core's
/// learned MACs, its routes stay; the flat core's FDB). Counted on both alike: unicast copies
/// sent where their destination is not ([`misdelivered`]) within [`FLUSH_WINDOW`], and the time
/// until the table again holds every MAC the streams send to (unicast no longer flooded).
fn measure_flush(mat: &Fabric, flat: &Fabric, size: Size, out: &mut Flush) -> Result<()> {
    // MAT: of the streams' destinations (VMs' outside MACs, the peer's) only the peer's is
    // learned; the rest is routed throughout. Where a MAC lives: the peer, else its route.
    let core = mat.core_switch();
    let routes: Vec<(MacPrefix, String)> = mat.core.enter(|| -> Result<_> {
        Ok(core
            .open()
            .routes()?
            .into_iter()
            .filter_map(|r| Some((r.prefix.parse().ok()?, r.port)))
            .collect())
    })?;
    let peer = mat.peer_mac;
    let behind = |m: &Mac| {
        if *m == peer {
            return Some("peer".to_owned());
        }
        let (_, port) = routes
            .iter()
            .find(|(p, _)| p.contains(mat_loader::mac::Mac(*m)))?;
        Some(port.clone())
    };
    let (streams, _) = flush_streams(mat, size);
    thread::sleep(Duration::from_millis(500));
    let wanted: BTreeSet<String> = [fmt_mac(&peer)].into();
    let (copies, flushed) = misdelivered(mat, size, behind, || {
        // One handle throughout: opening a switch loads its object (tens of ms).
        mat.core.enter(|| -> Result<_> {
            let mut s = core.open();
            let flushed = s.flush()?;
            let reconverged = reconverge(&wanted, || {
                s.learned()
                    .expect("learned")
                    .into_iter()
                    .filter(|l| !l.expired)
                    .map(|l| l.mac)
                    .collect()
            });
            Ok((flushed, reconverged))
        })
    });
    (out.mat_flushed, out.mat_reconverge_ms) = flushed?;
    out.mat_flooded = copies;
    drop(streams);
    check()?;

    // Flat: the VMs' own MACs cross the fabric.
    let behind: BTreeMap<Mac, String> = flat
        .vms
        .iter()
        .map(|v| (v.mac, format!("r{}", v.rack)))
        .chain([(flat.peer_mac, "peer".to_owned())])
        .collect();
    let (streams, vms) = flush_streams(flat, size);
    let wanted: BTreeSet<String> = vms
        .iter()
        .map(|&i| fmt_mac(&flat.vms[i].mac))
        .chain([fmt_mac(&flat.peer_mac)])
        .collect();
    thread::sleep(Duration::from_millis(500));
    let (copies, ()) = misdelivered(
        flat,
        size,
        |m| behind.get(m).cloned(),
        || {
            out.flat_flushed = fdb(&flat.core).len();
            flat.core.exec("bridge", &["fdb", "flush", "dev", "br0"]);
            out.flat_reconverge_ms = reconverge(&wanted, || fdb(&flat.core));
        },
    );
    out.flat_flooded = copies;
    drop(streams);
    Ok(())
}

/// The first VM moves to a hypervisor of the last rack while the peer pings it every 10 ms.
#[expect(
    clippy::unnecessary_wraps,
    reason = "a step of the lab like the others, which fail"
)]
fn measure_move(f: &mut Fabric, size: Size) -> Result<Move> {
    if size.racks < 2 {
        return Ok(Move::default());
    }
    let from = 0;
    let to = (size.racks - 1) * size.hosts;
    let vm = &f.vms[0];
    let (port, mac, ip) = (vm.port.clone(), fmt_mac(&vm.mac), vm.ip.to_string());
    let stream = PingStream::start(&f.peer, vm.ip);
    thread::sleep(Duration::from_millis(500));
    // The port is down while no daemon translates it: a frame the VM sends in between (ND,
    // ARP) would carry its inside MAC onto the fabric.
    f.hvs[from].ip(&["link", "set", &port, "down"]);
    f.daemons[from].cli_ok(&["detach", "--vm", "vm0"]);
    f.hvs[from].ip(&["link", "set", &port, "netns", f.hvs[to].name()]);
    f.hvs[to].ip(&["link", "set", &port, "master", "br0"]);
    f.daemons[to].cli_ok(&["attach", &port, "--mac", &mac, "--vm", "vm0", "--ip", &ip]);
    f.hvs[to].ip(&["link", "set", &port, "up"]);
    thread::sleep(Duration::from_millis(1500));
    let (answered, missing) = stream.stop();
    f.vms[0].rack = size.racks - 1;
    let mut gap = 0;
    let mut run = 0;
    let mut last = 0;
    for &s in &missing {
        run = if s == last + 1 { run + 1 } else { 1 };
        last = s;
        gap = gap.max(run);
    }
    Ok(Move {
        sent: answered + missing.len(),
        lost: missing.len(),
        gap_ms: if gap == 0 { 0 } else { (gap as u64 + 1) * 10 },
    })
}

/// iperf3 through one core-like box: client -- box -- server, the box a MAT switch (routes for
/// both ends), the same with the XDP path, or a Linux bridge. (pps of 18-byte UDP, TCP Gbit/s.)
/// `csum_off`: the ends compute their own checksums (`ethtool -K eth0 tx off`, which takes TSO
/// with it). The XDP path needs that: a frame redirected in XDP becomes an `xdp_frame`, which
/// carries no checksum state, so a frame sent with its checksum left to offload (all UDP and TCP
/// over a veth) reaches the far stack with a checksum it drops: with offloads on, XDP delivers
/// nothing but pings.
fn forwarding(kind: &str, seconds: u32, csum_off: bool) -> Result<(f64, f64)> {
    let a = netns("lfa");
    let s = netns("lfs");
    let b = netns("lfb");
    let (ma, mb): (Mac, Mac) = ([2, 0, 0x5e, 1, 1, 1], [2, 0, 0x5e, 2, 1, 1]);
    veth(&s, "pa", &a, "eth0", Some(&ma));
    veth(&s, "pb", &b, "eth0", Some(&mb));
    a.ip(&["addr", "add", "203.0.113.1/24", "dev", "eth0"]);
    b.ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0"]);
    let _sw = if kind == "flat" {
        bridge(&s, &["pa".into(), "pb".into()]);
        None
    } else {
        let sw = SwitchGuard::create(&s, &["pa", "pb"], Duration::from_mins(5), kind == "xdp");
        s.enter(|| {
            sw.open().add_routes(&[
                RouteSpec {
                    vlan: 0,
                    prefix: "02:00:5e:01:00:00/32".parse().expect("prefix"),
                    port: "pa".into(),
                },
                RouteSpec {
                    vlan: 0,
                    prefix: "02:00:5e:02:00:00/32".parse().expect("prefix"),
                    port: "pb".into(),
                },
            ])
        })?;
        if kind == "xdp" {
            a.enter(|| sw.open().attach_pass_xdp("eth0"))?;
            b.enter(|| sw.open().attach_pass_xdp("eth0"))?;
        }
        Some(sw)
    };
    if csum_off {
        for ns in [&a, &b] {
            ns.exec("ethtool", &["-K", "eth0", "tx", "off"]);
        }
    }
    let _server = b.spawn("iperf3", &["-s", "-B", "203.0.113.2", "-1"]);
    thread::sleep(Duration::from_millis(300));
    let run = |args: &[&str]| -> Result<serde_json::Value> {
        let t = seconds.to_string();
        let limit = (seconds + 8).to_string();
        let mut all = vec![&*limit, "iperf3", "-c", "203.0.113.2", "-J", "-t", &t];
        all.extend_from_slice(&["--connect-timeout", "3000"]);
        all.extend_from_slice(args);
        // A path that does not deliver fails in seconds rather than hanging.
        let out = a
            .command("timeout")
            .args(&all)
            .output()
            .context("running iperf3")?;
        serde_json::from_slice(&out.stdout).context("iperf3's JSON")
    };
    let tcp = run(&[])?;
    let gbps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9;
    drop(_server);
    let _server = b.spawn("iperf3", &["-s", "-B", "203.0.113.2", "-1"]);
    thread::sleep(Duration::from_millis(300));
    let udp = run(&["-u", "-b", "0", "-l", "18"])?;
    let sum = &udp["end"]["sum"];
    let got = sum["packets"].as_f64().unwrap_or(0.0) - sum["lost_packets"].as_f64().unwrap_or(0.0);
    let pps = got / sum["seconds"].as_f64().unwrap_or(1.0).max(0.001);
    Ok((pps, gbps))
}

/// What `--keep` leaves: namespaces, daemon pids and directories, switch pin directories.
#[derive(Serialize, serde::Deserialize, Default)]
struct Kept {
    namespaces: Vec<String>,
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
    switches: Vec<(PathBuf, String)>,
}

fn keep(f: Fabric) -> Result<()> {
    let mut kept = Kept::default();
    let mut f = std::mem::ManuallyDrop::new(f);
    for ns in [&f.core, &f.peer]
        .into_iter()
        .chain(&f.tors)
        .chain(&f.hvs)
        .chain(f.vms.iter().map(|v| &v.ns))
    {
        kept.namespaces.push(ns.name().to_owned());
    }
    for d in std::mem::take(&mut f.daemons) {
        kept.pids.extend(d.pid());
        kept.dirs.push(d.pin_dir().to_owned());
        kept.dirs.extend(d.socket().parent().map(Path::to_path_buf));
        std::mem::forget(d);
    }
    for s in std::mem::take(&mut f.switches) {
        kept.switches.push((s.pin_dir.clone(), s.name.clone()));
        std::mem::forget(s);
    }
    std::fs::create_dir_all(Path::new(STATE).parent().expect("a directory"))?;
    std::fs::write(STATE, serde_json::to_string_pretty(&kept)?)?;
    println!("kept the MAT fabric up: `ip netns list`; VMs ping 169.254.254.1 (the peer)");
    println!("remove it with `cargo xtask lab --clean` (state in {STATE})");
    Ok(())
}

/// Removes what `--keep` left.
pub fn clean() -> Result<()> {
    let Ok(text) = std::fs::read_to_string(STATE) else {
        println!("nothing kept ({STATE} absent)");
        return Ok(());
    };
    let kept: Kept = serde_json::from_str(&text).context("reading the kept state")?;
    for pid in kept.pids {
        // Only a pid that is still a `mat daemon` the lab started (its pin dir on the command line).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("daemon")
            && kept
                .dirs
                .iter()
                .any(|d| cmdline.contains(&*d.to_string_lossy()))
        {
            // SAFETY: kill(2) on a pid checked above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    thread::sleep(Duration::from_millis(200));
    for (dir, name) in kept.switches {
        if let Ok(s) = Switch::open(&dir, &name) {
            s.destroy()?;
        }
        let _ = std::fs::remove_dir(&dir);
    }
    for d in kept.dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    for ns in kept.namespaces {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
    }
    std::fs::remove_file(STATE)?;
    println!("removed the kept lab");
    Ok(())
}

pub fn run(size: Size, keep_up: bool, json: Option<PathBuf>) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and loads BPF programs: run as root");
    }
    if keep_up && Path::new(STATE).exists() {
        bail!("a kept lab exists: remove it first with `cargo xtask lab --clean`");
    }
    if size.racks == 0 || size.hosts == 0 || size.vlans == 0 || size.racks > 250 || size.hosts > 250
    {
        bail!("racks and hosts must be 1..=250, vlans at least 1");
    }
    if size.vms > 60_000 {
        bail!("at most 60,000 VMs (169.254.1.1 up)");
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let start = Instant::now();
    let mut r = Report {
        racks: size.racks,
        hosts_per_rack: size.hosts,
        vms: size.vms,
        vlans: size.vlans,
        ..Report::default()
    };
    println!(
        "building two fabrics of {} racks x {} hypervisors, {} VMs, {} VLAN(s): MAT (mat-switch core and ToRs, mat daemons) and flat (Linux bridges)",
        size.racks, size.hosts, size.vms, size.vlans
    );
    let mut mat = Fabric::build(size, true)?;
    check()?;
    let flat = Fabric::build(size, false)?;
    r.build_s = start.elapsed().as_secs_f64();
    check()?;

    // 1 and 2: traffic, with every fabric link of the MAT fabric captured.
    let inside: BTreeSet<Mac> = mat.vms.iter().map(|v| v.mac).collect();
    let captures: Vec<Capture> = fabric_ports(&mat, size)
        .into_iter()
        .map(|(ns, p)| Capture::in_netns(ns, &p))
        .collect();
    let k = 2;
    let (to_peer, cross, ok, failed) = reachability(&mat, k);
    (r.pairs_to_peer, r.pairs_cross, r.pairs_tested, r.pairs_ok) =
        (to_peer, cross, to_peer + cross, ok);
    r.pairs_failed = failed;
    for c in captures {
        let report = c.stop();
        r.inside_mac_frames += report
            .frames
            .iter()
            .filter(|f| f.addrs().all().iter().any(|m| inside.contains(m)))
            .count();
    }
    check()?;
    (_, _, r.flat_pairs_ok, r.flat_pairs_failed) = reachability(&flat, k);
    check()?;
    let (core, tors) = mat.tables();
    r.core_entries_mat = core.entries();
    r.core_learned_mat = core.learned;
    r.tor_entries_mat = tors.iter().map(|t| t.entries()).collect();
    r.tor_learned_mat = tors.iter().map(|t| t.learned).collect();
    let (core, tors) = flat.tables();
    r.core_entries_flat = core.entries();
    r.tor_entries_flat = tors.iter().map(|t| t.entries()).collect();

    // 3: flush the cores while traffic runs.
    measure_flush(&mat, &flat, size, &mut r.flush)?;
    check()?;
    // 4: move a VM across racks.
    r.moved = measure_move(&mut mat, size)?;
    check()?;
    drop(flat);
    // 5: forwarding cost of one core box.
    let secs = 2;
    let fw = &mut r.forwarding;
    (fw.mat_pps, fw.mat_tcp_gbps) = forwarding("mat", secs, false)?;
    (fw.flat_pps, fw.flat_tcp_gbps) = forwarding("flat", secs, false)?;
    (fw.mat_csum_off_pps, fw.mat_csum_off_tcp_gbps) = forwarding("mat", secs, true)?;
    (fw.mat_xdp_pps, fw.mat_xdp_tcp_gbps) = forwarding("xdp", secs, true)?;
    r.total_s = start.elapsed().as_secs_f64();

    print_report(&r);
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("written to {}", path.display());
    }
    let failed = r.pairs_ok != r.pairs_tested || r.inside_mac_frames != 0;
    if keep_up {
        keep(mat)?;
    }
    if failed {
        bail!(
            "the MAT fabric failed: {} of {} pairs reached, {} frames with an inside MAC",
            r.pairs_ok,
            r.pairs_tested,
            r.inside_mac_frames
        );
    }
    Ok(())
}

fn print_report(r: &Report) {
    let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(" ");
    println!();
    println!(
        "built {} racks x {} hypervisors x {} VMs in {} VLAN(s), twice, in {:.1} s",
        r.racks, r.hosts_per_rack, r.vms, r.vlans, r.build_s
    );
    println!("{:<42} {:>16} {:>16}", "", "MAT fabric", "flat L2");
    println!(
        "{:<42} {:>16} {:>16}",
        "core table entries", r.core_entries_mat, r.core_entries_flat
    );
    println!(
        "{:<42} {:>16} {:>16}",
        "ToR table entries (per rack)",
        list(&r.tor_entries_mat),
        list(&r.tor_entries_flat)
    );
    println!(
        "{:<42} {:>16} {:>16}",
        "  learned, core | ToRs (rest: routes)",
        format!("{} | {}", r.core_learned_mat, list(&r.tor_learned_mat)),
        "all"
    );
    println!(
        "{:<42} {:>16} {:>16}",
        format!(
            "pairs reached ({} VM->peer, {} x-rack)",
            r.pairs_to_peer, r.pairs_cross
        ),
        format!("{}/{}", r.pairs_ok, r.pairs_tested),
        format!("{}/{}", r.flat_pairs_ok, r.pairs_tested)
    );
    println!(
        "{:<42} {:>16} {:>16}",
        "frames with an inside MAC on fabric", r.inside_mac_frames, "-"
    );
    println!(
        "{:<42} {:>16} {:>16}",
        "core flush: entries flushed", r.flush.mat_flushed, r.flush.flat_flushed
    );
    println!(
        "{:<42} {:>16} {:>16}",
        "  unicast copies to a wrong port (1 s)", r.flush.mat_flooded, r.flush.flat_flooded
    );
    let ms = |v: Option<u64>| {
        v.map_or_else(
            || format!("> {} ms", FLUSH_WINDOW.as_millis()),
            |m| format!("{m} ms"),
        )
    };
    println!(
        "{:<42} {:>16} {:>16}",
        "  until unicast is no longer flooded",
        ms(r.flush.mat_reconverge_ms),
        ms(r.flush.flat_reconverge_ms)
    );
    println!(
        "{:<42} {:>16} {:>16}",
        "VM moved across racks (10 ms pings)",
        format!(
            "{}/{} lost, {} ms",
            r.moved.lost, r.moved.sent, r.moved.gap_ms
        ),
        "-"
    );
    println!(
        "{:<42} {:>16} {:>16}",
        "core box: UDP 18 B, packets/s",
        format!("{:.0}", r.forwarding.mat_pps),
        format!("{:.0}", r.forwarding.flat_pps)
    );
    println!(
        "{:<42} {:>16} {:>16}",
        "core box: TCP Gbit/s",
        format!("{:.2}", r.forwarding.mat_tcp_gbps),
        format!("{:.2}", r.forwarding.flat_tcp_gbps)
    );
    println!(
        "{:<42} {:>16}",
        "  ends' checksum offload off: TC pps, TCP",
        format!(
            "{:.0}, {:.2}",
            r.forwarding.mat_csum_off_pps, r.forwarding.mat_csum_off_tcp_gbps
        )
    );
    println!(
        "{:<42} {:>16}",
        "                       XDP path pps, TCP",
        format!(
            "{:.0}, {:.2}",
            r.forwarding.mat_xdp_pps, r.forwarding.mat_xdp_tcp_gbps
        )
    );
    for (fabric, failed) in [("MAT", &r.pairs_failed), ("flat", &r.flat_pairs_failed)] {
        for pair in failed {
            println!("{fabric}: no answer: {pair}");
        }
    }
    println!("finished in {:.1} s", r.total_s);
}
