//! The MAC-route switch: golden frames through BPF_PROG_TEST_RUN on real ports (longest prefix,
//! VLANs, default route, floods, learning, ageing), refusals that change nothing, the verifier's
//! budget, and a small end-to-end fabric in namespaces.

use std::{collections::BTreeMap, time::Duration};

use mat_loader::{mac::Mac, test_run};
use mat_switch::{
    RouteSpec, Switch, switch_program,
    views::{CountersView, PortView},
};
use mat_tests::{
    frames::{BROADCAST, Mac as Bytes, dot1q, ipv4_udp},
    netns::Netns,
    switch::SwitchGuard,
    topology::ping,
};

const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// Ports p0..p3; p3 carries only untagged frames and VLAN 10.
const PORTS: [&str; 4] = ["p0", "p1", "p2", "p3@0,10"];

fn mac(s: &str) -> Bytes {
    s.parse::<Mac>().expect("MAC").0
}

struct Bench {
    ns: Netns,
    sw: SwitchGuard,
}

/// A switch over four veths (their peers up in the same namespace) with routes:
/// untagged: pool/32 -> p1, pool/40 (one host) -> p2, /0 -> p3; VLAN 10: pool/32 -> p2.
fn bench() -> Bench {
    let ns = Netns::new("msw");
    // This namespace holds only the switch's own test ports, no guest: its stack stays quiet so
    // that the per-port counters see the test's frames alone.
    for conf in ["all", "default"] {
        ns.exec(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{conf}.disable_ipv6=1")],
        );
    }
    for i in 0..4 {
        let (p, q) = (format!("p{i}"), format!("q{i}"));
        ns.ip(&["link", "add", &p, "type", "veth", "peer", "name", &q]);
        ns.ip(&["link", "set", &p, "up"]);
        ns.ip(&["link", "set", &q, "up"]);
    }
    let sw = SwitchGuard::create(&ns, &PORTS, Duration::from_mins(5), false);
    ns.enter(|| {
        let mut s = sw.open();
        let r = |vlan, prefix: &str, port: &str| RouteSpec {
            vlan,
            prefix: prefix.parse().expect("prefix"),
            port: port.into(),
        };
        s.add_routes(&[
            r(0, "02:00:5e:01:00:00/32", "p1"),
            r(0, "02:00:5e:01:03:00/40", "p2"),
            r(0, "00:00:00:00:00:00/0", "p3"),
            r(10, "02:00:5e:01:00:00/32", "p2"),
        ])
        .expect("routes");
    });
    Bench { ns, sw }
}

/// What one frame did: the verdict, the outcome counters and each port's frames sent.
struct Seen {
    retval: u32,
    counters: CountersView,
    tx: Vec<u64>,
}

fn tx(ports: &[PortView]) -> Vec<u64> {
    ports.iter().map(|p| p.tx).collect()
}

impl Bench {
    fn run(&self, frame: &[u8], on: &str) -> Seen {
        self.ns.enter(|| {
            let mut s = self.sw.open();
            let (c0, t0) = (s.counters().unwrap(), tx(&s.ports().unwrap()));
            let ifindex = nix::net::if_::if_nametoindex(on).unwrap();
            let out = test_run::tc_on(s.program(switch_program::TC).unwrap(), frame, ifindex, 1)
                .expect("test run");
            let (c1, t1) = (s.counters().unwrap(), tx(&s.ports().unwrap()));
            Seen {
                retval: out.retval,
                counters: c1.since(&c0),
                tx: t1.iter().zip(&t0).map(|(a, b)| a - b).collect(),
            }
        })
    }

    fn with<T: Send>(&self, f: impl FnOnce(&mut Switch) -> T + Send) -> T {
        self.ns.enter(|| f(&mut self.sw.open()))
    }
}

fn counted(c: &CountersView) -> [u64; 4] {
    [c.routed, c.learned, c.flooded, c.dropped]
}

#[test]
fn golden_frames() {
    let b = bench();
    let legacy = mac("52:54:00:11:22:33");
    let other = mac("52:54:00:44:55:66");
    // (what, frame, ingress port, verdict, [routed, learned, flooded, dropped], tx per port)
    type Case = (&'static str, Vec<u8>, &'static str, u32, [u64; 4], [u64; 4]);
    let cases: Vec<Case> = vec![
        (
            "longest prefix wins: the host's /40 over the rack's /32",
            ipv4_udp(mac("02:00:5e:01:03:07"), other, &[], 18),
            "p0",
            TC_ACT_REDIRECT,
            [1, 0, 0, 0],
            [0, 0, 1, 0],
        ),
        (
            "another host of the rack: the /32",
            ipv4_udp(mac("02:00:5e:01:04:07"), other, &[], 18),
            "p0",
            TC_ACT_REDIRECT,
            [1, 0, 0, 0],
            [0, 1, 0, 0],
        ),
        (
            "VLAN 10 has its own route for the same MAC",
            ipv4_udp(mac("02:00:5e:01:04:07"), other, &[dot1q(10)], 18),
            "p0",
            TC_ACT_REDIRECT,
            [1, 0, 0, 0],
            [0, 0, 1, 0],
        ),
        (
            "VLAN 20 has no route and no default: flooded to the ports carrying it",
            ipv4_udp(mac("02:00:5e:01:04:07"), other, &[dot1q(20)], 18),
            "p0",
            TC_ACT_SHOT,
            [0, 0, 1, 0],
            [0, 1, 1, 0],
        ),
        (
            "a MAC no specific route covers takes the default route",
            ipv4_udp(mac("52:54:00:aa:bb:cc"), other, &[], 18),
            "p0",
            TC_ACT_REDIRECT,
            [1, 0, 0, 0],
            [0, 0, 0, 1],
        ),
        (
            "broadcast: flooded to every other port, not back to p1",
            ipv4_udp(BROADCAST, legacy, &[], 18),
            "p1",
            TC_ACT_SHOT,
            [0, 0, 1, 0],
            [1, 0, 1, 1],
        ),
        (
            "the legacy source just learned on p1 beats the default route",
            ipv4_udp(legacy, other, &[], 18),
            "p0",
            TC_ACT_REDIRECT,
            [0, 1, 0, 0],
            [0, 1, 0, 0],
        ),
        (
            "multicast is flooded too",
            ipv4_udp(mac("01:00:5e:00:00:01"), other, &[], 18),
            "p0",
            TC_ACT_SHOT,
            [0, 0, 1, 0],
            [0, 1, 1, 1],
        ),
        (
            "a route back out the ingress port drops",
            ipv4_udp(mac("02:00:5e:01:03:07"), other, &[], 18),
            "p2",
            TC_ACT_SHOT,
            [0, 0, 0, 1],
            [0, 0, 0, 0],
        ),
        (
            "a VLAN the ingress port does not carry drops",
            ipv4_udp(mac("02:00:5e:01:04:07"), other, &[dot1q(20)], 18),
            "p3",
            TC_ACT_SHOT,
            [0, 0, 0, 1],
            [0, 0, 0, 0],
        ),
        (
            "a VLAN tag cut short drops",
            {
                let mut f = ipv4_udp(BROADCAST, other, &[dot1q(10)], 18);
                f.truncate(16);
                f
            },
            "p0",
            TC_ACT_SHOT,
            [0, 0, 0, 1],
            [0, 0, 0, 0],
        ),
    ];
    for (what, frame, on, verdict, outcome, sent) in cases {
        let seen = b.run(&frame, on);
        assert_eq!(seen.retval, verdict, "{what}: verdict");
        assert_eq!(counted(&seen.counters), outcome, "{what}: outcome");
        assert_eq!(seen.tx, sent, "{what}: frames sent per port");
    }
    // Learned: the legacy MAC (on p1) and `other` (last seen on p2, in the hairpin case; the
    // frames dropped before the decision teach nothing), but never a source inside a routed
    // prefix.
    b.run(
        &ipv4_udp(BROADCAST, mac("02:00:5e:01:03:09"), &[], 18),
        "p2",
    );
    let learned: BTreeMap<String, String> = b.with(|s| {
        s.learned()
            .unwrap()
            .into_iter()
            .map(|l| (format!("{}/{}", l.vlan, l.mac), l.port))
            .collect()
    });
    assert_eq!(
        learned.get("0/52:54:00:11:22:33").map(String::as_str),
        Some("p1")
    );
    assert_eq!(
        learned.get("0/52:54:00:44:55:66").map(String::as_str),
        Some("p2")
    );
    assert!(
        !learned.keys().any(|k| k.contains("02:00:5e:01")),
        "a routed source was learned: {learned:?}"
    );
    // Per-route counters: the host /40 sent 1 (the dropped hairpin is not counted).
    let routes = b.with(|s| s.routes().unwrap());
    let host = routes
        .iter()
        .find(|r| r.prefix == "02:00:5e:01:03:00/40")
        .unwrap();
    assert_eq!(host.frames, 1, "{routes:?}");
}

#[test]
fn learning_fallback_and_ageing() {
    let b = bench();
    let legacy = mac("52:54:00:77:00:01");
    let other = mac("52:54:00:77:00:02");
    // VLAN 20 has no routes at all: a plain learning bridge.
    let to_legacy = ipv4_udp(legacy, other, &[dot1q(20)], 18);
    let s = b.run(&to_legacy, "p0");
    assert_eq!(
        (s.retval, counted(&s.counters)),
        (TC_ACT_SHOT, [0, 0, 1, 0]),
        "unknown unicast floods"
    );
    assert_eq!(s.tx, [0, 1, 1, 0], "p3 does not carry VLAN 20");
    b.run(&ipv4_udp(other, legacy, &[dot1q(20)], 18), "p2");
    let s = b.run(&to_legacy, "p0");
    assert_eq!(
        (s.retval, counted(&s.counters), s.tx),
        (TC_ACT_REDIRECT, [0, 1, 0, 0], vec![0, 0, 1, 0]),
        "learned on p2"
    );
    // Moves follow the latest frame.
    let s = b.run(&ipv4_udp(other, legacy, &[dot1q(20)], 18), "p1");
    assert_eq!(s.counters.sources_learned, 1, "a move counts as learned");
    assert_eq!(b.run(&to_legacy, "p0").tx, [0, 1, 0, 0]);
    // Ageing: an entry last seen 299 s ago forwards, 301 s ago floods.
    let aged = mac("52:54:00:77:00:03");
    let to_aged = ipv4_udp(aged, other, &[dot1q(20)], 18);
    b.with(|s| {
        s.learn(20, Mac(aged), "p2", Duration::from_secs(299))
            .unwrap();
    });
    let s = b.run(&to_aged, "p0");
    assert_eq!(counted(&s.counters), [0, 1, 0, 0], "299 s: still learned");
    b.with(|s| {
        s.learn(20, Mac(aged), "p2", Duration::from_secs(301))
            .unwrap();
    });
    let s = b.run(&to_aged, "p0");
    assert_eq!(
        counted(&s.counters),
        [0, 0, 1, 0],
        "301 s: aged out, flooded"
    );
    let expired = b.with(|s| s.learned().unwrap());
    assert!(
        expired
            .iter()
            .any(|l| l.mac == "52:54:00:77:00:03" && l.expired)
    );
    // A flush forgets everything learned; routes stay.
    let n = b.with(|s| s.flush().unwrap());
    assert!(n >= 3, "flushed {n}");
    assert_eq!(counted(&b.run(&to_legacy, "p0").counters), [0, 0, 1, 0]);
    assert_eq!(b.with(|s| s.routes().unwrap().len()), 4);
}

#[test]
fn refusals_change_nothing() {
    let b = bench();
    let before = b.with(|s| s.routes().unwrap());
    let refuse = |specs: Vec<(u16, &str, &str)>, code: &str| {
        let specs: Vec<RouteSpec> = specs
            .into_iter()
            .map(|(vlan, prefix, port)| RouteSpec {
                vlan,
                prefix: prefix.parse().unwrap(),
                port: port.into(),
            })
            .collect();
        let e = b.with(|s| s.add_routes(&specs)).unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert_eq!(
            b.with(|s| s.routes().unwrap()),
            before,
            "{code} changed routes"
        );
    };
    // The same prefix to another port; a good route before it is not kept either.
    refuse(
        vec![
            (0, "02:00:5e:02:00:00/32", "p1"),
            (0, "02:00:5e:01:00:00/32", "p2"),
        ],
        "route_conflict",
    );
    refuse(vec![(0, "02:00:5e:02:00:00/32", "nosuch")], "unknown_port");
    refuse(vec![(0, "02:00:5e:02:00:00/32", "q0")], "unknown_port");
    refuse(vec![(4095, "02:00:5e:02:00:00/32", "p1")], "invalid_vlan");
    // Two new routes that disagree with each other.
    refuse(
        vec![
            (5, "02:00:5e:02:00:00/32", "p1"),
            (5, "02:00:5e:02:00:00/32", "p2"),
        ],
        "route_conflict",
    );
    // The same route again is no change.
    let again = b.with(|s| {
        s.add_routes(&[RouteSpec {
            vlan: 0,
            prefix: "02:00:5e:01:00:00/32".parse().unwrap(),
            port: "p1".into(),
        }])
    });
    assert_eq!(again.unwrap(), (0, 1));
    // Through the CLI: the reason, exit 1, nothing changed.
    for (args, code) in [
        (
            vec!["route", "add", "sw", "02:00:5e:01:00:00/49", "--port", "p1"],
            "invalid_prefix",
        ),
        (
            vec!["route", "add", "sw", "02:00:5e:01:00:00/32", "--port", "p2"],
            "route_conflict",
        ),
        (
            vec!["route", "add", "sw", "02:00:5e:09:00:00/32", "--port", "p9"],
            "unknown_port",
        ),
    ] {
        let out = b.sw.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("refused ({code})")),
            "{args:?}: {err}"
        );
    }
    assert_eq!(b.with(|s| s.routes().unwrap()), before);
    // Import: all or nothing.
    let routes = r#"{"routes":[
        {"scope":"core","prefix":"02:00:5e:07:00:00/32","via":"rack 7","rack":7,"host":null,"vlan":null},
        {"scope":"tor","prefix":"02:00:5e:07:03:00/40","via":"host 3","rack":7,"host":3,"vlan":null},
        {"scope":"tor","prefix":"00:00:00:00:00:00/0","via":"core","rack":7,"host":null,"vlan":null}]}"#;
    let via = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    let e = b
        .with(|s| s.import(routes, &via(&[("rack 7", "p1"), ("core", "p0")]), None))
        .unwrap_err();
    assert_eq!(e.code(), "route_conflict", "the default goes to p3 already");
    assert_eq!(b.with(|s| s.routes().unwrap()), before);
    let v = b
        .with(|s| s.import(routes, &via(&[("rack 7", "p1"), ("core", "p3")]), None))
        .unwrap();
    assert_eq!((v.added, v.unchanged, v.skipped), (1, 1, 1));
}

#[test]
fn verifier_budget() {
    let b = bench();
    for (name, ceiling) in [(switch_program::TC, 12000), (switch_program::XDP, 2000)] {
        let n = b
            .with(|s| s.verified_instructions(name))
            .unwrap()
            .expect("instruction count");
        println!("{name}: {n} instructions verified");
        assert!(n <= ceiling, "{name}: {n} instructions, ceiling {ceiling}");
    }
    // The XDP unicast path decides as TC does.
    let frame = ipv4_udp(mac("02:00:5e:01:03:07"), mac("52:54:00:44:55:66"), &[], 18);
    let out = b.with(|s| {
        let i = nix::net::if_::if_nametoindex("p0").unwrap();
        let prog = s.program(switch_program::XDP).unwrap();
        let a = test_run::xdp_on(prog, &frame, i, 1).unwrap();
        let b = test_run::xdp_on(
            prog,
            &ipv4_udp(BROADCAST, mac("52:54:00:44:55:66"), &[], 18),
            i,
            1,
        )
        .unwrap();
        (a.retval, b.retval)
    });
    assert_eq!(out, (XDP_REDIRECT, XDP_PASS));
}

/// Three hosts on one switch: two in routed prefixes (one route per "hypervisor"), one legacy
/// host that is only learned. Pings between all of them, from their own namespaces.
#[test]
fn end_to_end() {
    let sw_ns = Netns::new("msw");
    let hosts: Vec<(Netns, &str, &str)> = [
        ("02:00:5e:01:01:05", "192.0.2.1"),
        ("02:00:5e:01:02:05", "192.0.2.2"),
        ("52:54:00:ab:cd:01", "192.0.2.3"),
    ]
    .into_iter()
    .map(|(m, ip)| (Netns::new("mh"), m, ip))
    .collect();
    let mut ports = Vec::new();
    for (i, (ns, m, ip)) in hosts.iter().enumerate() {
        let port = format!("s{i}");
        sw_ns.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            m,
            "netns",
            ns.name(),
        ]);
        sw_ns.ip(&["link", "set", &port, "up"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ports.push(port);
    }
    let refs: Vec<&str> = ports.iter().map(String::as_str).collect();
    let sw = SwitchGuard::create(&sw_ns, &refs, Duration::from_mins(5), false);
    for (prefix, port) in [
        ("02:00:5e:01:01:00/40", "s0"),
        ("02:00:5e:01:02:00/40", "s1"),
    ] {
        let out = sw.cli(&["route", "add", "sw", prefix, "--port", port]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (from, to) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
        let ip: std::net::Ipv4Addr = hosts[to].2.parse().unwrap();
        ping(&hosts[from].0, ip, 2).unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
    }
    let stats: serde_json::Value =
        serde_json::from_slice(&sw.cli(&["stats", "sw", "--json"]).stdout).unwrap();
    let c = &stats["counters"];
    assert!(c["routed"].as_u64().unwrap() > 0, "{stats}");
    assert!(c["learned"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        c["flooded"].as_u64().unwrap() > 0,
        "ARP requests flood: {stats}"
    );
    assert_eq!(c["dropped"], 0, "{stats}");
    let learned: serde_json::Value =
        serde_json::from_slice(&sw.cli(&["learned", "sw", "--json"]).stdout).unwrap();
    let macs: Vec<&str> = learned["learned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mac"].as_str().unwrap())
        .collect();
    assert_eq!(
        macs,
        ["52:54:00:ab:cd:01"],
        "only the legacy host is learned"
    );
}
