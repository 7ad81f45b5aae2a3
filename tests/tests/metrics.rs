//! `mat daemon --metrics ADDR`: a daemon in a lab hypervisor serves Prometheus text on the
//! namespace's loopback; the test scrapes it during traffic, checks the text with promtool and
//! the values against `mat stats --json` and `mat plan --json`.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use mat_tests::{
    daemon::{Daemon, POOL, mac_str, mat_binary, stderr},
    netns::Netns,
    topology::{Lab, PEER_IP, ping},
};
use serde_json::Value;

/// The metrics port, on the loopback of the test's own hypervisor namespace.
const PORT: u16 = 9417;

fn start(lab: &Lab) -> Daemon {
    let addr = format!("127.0.0.1:{PORT}");
    Daemon::start(
        &lab.hv,
        &[
            "--pool",
            POOL,
            "--rack",
            "1",
            "--host",
            "3",
            "--metrics",
            &addr,
        ],
    )
}

/// One HTTP GET of `path` from inside `ns`: (status line, body).
fn get(ns: &Netns, path: &str) -> (String, String) {
    let raw = ns.enter(|| {
        let mut s = TcpStream::connect(("127.0.0.1", PORT)).expect("connecting to the metrics");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("reading the response");
        out
    });
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Every sample of an exposition that is a whole number (all but histogram sums): `name{labels}`
/// -> value.
fn samples(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(lab: &Lab) -> (String, HashMap<String, u64>) {
    let (status, body) = get(&lab.hv, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let s = samples(&body);
    (body, s)
}

fn frames(hook: &str, direction: &str, outcome: &str) -> String {
    format!("mat_frames_total{{hook=\"{hook}\",direction=\"{direction}\",outcome=\"{outcome}\"}}")
}

fn port_packets(port: &str, direction: &str) -> String {
    format!("mat_port_packets_total{{port=\"{port}\",direction=\"{direction}\"}}")
}

/// `promtool check metrics` on the text: no error and no lint finding.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (cargo xtask setup installs the prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics ({}): {}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The counters of `mat stats --json` as metric series.
fn stats_series(d: &Daemon) -> HashMap<String, u64> {
    let stats = d.cli_json(&["stats"]);
    let mut out = HashMap::new();
    for c in stats["counters"].as_array().unwrap() {
        out.insert(
            frames(
                c["hook"].as_str().unwrap(),
                c["direction"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
            ),
            c["packets"].as_u64().unwrap(),
        );
    }
    for p in stats["ports"].as_array().unwrap() {
        let port = p["port"].as_str().unwrap();
        for (dir, key) in [("from_vm", "from_vm_packets"), ("to_vm", "to_vm_packets")] {
            if let Some(n) = p[key].as_u64() {
                out.insert(port_packets(port, dir), n);
            }
        }
    }
    out
}

/// The announcement frames the daemon's log says it sent (`sent=N` of each `announced` line).
fn sent_in_log(d: &Daemon) -> u64 {
    d.log()
        .lines()
        .filter(|l| l.contains("announced"))
        .filter_map(|l| l.split("sent=").nth(1))
        .map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn scrape_during_traffic_matches_stats() {
    let mut lab = Lab::new(2);
    let mut d = start(&lab);
    let vm0 = &lab.vms[0];
    d.cli_ok(&[
        "attach",
        &vm0.port,
        "--mac",
        &mac_str(&vm0.mac),
        "--vm",
        "vm0",
        "--ip",
        &vm0.ip.to_string(),
        "--ip",
        &vm0.ip6.to_string(),
    ]);
    ping(&vm0.ns, PEER_IP, 3).expect("vm0 reaches the peer");

    // During traffic: a ping stream runs while the counters are read three times, stats first
    // and last, so every scraped counter lies between the two.
    let stream = vm0
        .ns
        .spawn("ping", &["-i", "0.02", "-c", "100", &PEER_IP.to_string()]);
    sleep(Duration::from_millis(300));
    let before = stats_series(&d);
    sleep(Duration::from_millis(200));
    let (text, m) = scrape(&lab);
    sleep(Duration::from_millis(200));
    let after = stats_series(&d);
    drop(stream);
    promtool(&text);
    assert_eq!(before.len(), after.len());
    for (series, lo) in &before {
        let hi = after[series];
        let v = *m
            .get(series)
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"));
        assert!(
            *lo <= v && v <= hi,
            "{series}: scraped {v}, mat stats said {lo} then {hi}"
        );
    }
    let translated = frames("port-from-vm-tc", "from_vm", "translated");
    assert!(m[&translated] > 0, "frames from the VM were translated");
    assert!(
        after[&translated] > before[&translated],
        "scraped during traffic"
    );
    assert!(m[&port_packets(&vm0.port, "from_vm")] > 0);

    // The rest of what the daemon knows, once it is quiet.
    sleep(Duration::from_secs(2)); // the three rounds of announcements, 0.5 s apart
    let vm1 = &lab.vms[1];
    d.cli_ok(&[
        "attach",
        &vm1.port,
        "--mac",
        &mac_str(&vm1.mac),
        "--vm",
        "vm1",
    ]);
    d.cli_ok(&["detach", &vm1.port]);
    let plan = d.cli_json(&["plan"]);
    let (text, m) = scrape(&lab);
    promtool(&text);
    let count = |v: &Value| v.as_array().unwrap().len() as u64;
    assert_eq!(m["mat_bindings"], count(&plan["bound"]));
    assert_eq!(m["mat_bindings"], 1);
    assert_eq!(m["mat_pool_capacity"], plan["capacity"].as_u64().unwrap());
    assert_eq!(m["mat_pool_bound"], 1);
    assert_eq!(m["mat_pool_held_down"], count(&plan["held"]));
    assert_eq!(m["mat_pool_held_down"], 1);
    assert_eq!(m["mat_pool_free"], plan["free"]["count"].as_u64().unwrap());
    assert_eq!(m["mat_pool_free"], 254);
    assert_eq!(
        m["mat_pool_capacity"],
        m["mat_pool_bound"] + m["mat_pool_held_down"] + m["mat_pool_free"]
    );
    // One IPv4 and one IPv6 address given: three ARPs and three NAs at least (the VM's own ARP
    // of its given address can start another round); every frame the log says it sent.
    let arp = m[r#"mat_announcements_total{kind="arp"}"#];
    let na = m[r#"mat_announcements_total{kind="na"}"#];
    assert!(arp >= 3 && na >= 3, "arp {arp}, na {na}\n{text}");
    // The log line comes after an announcement's last round; one the VM's own ARP started may
    // still be going, so its frames are counted before the log says so.
    let announced = |m: &HashMap<String, u64>| {
        m[r#"mat_announcements_total{kind="arp"}"#] + m[r#"mat_announcements_total{kind="na"}"#]
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (counted, logged) = (announced(&scrape(&lab).1), sent_in_log(&d));
        assert!(counted >= logged, "{counted} counted, {logged} logged");
        if counted == logged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} counted, {logged} logged\n{}",
            d.log()
        );
        sleep(Duration::from_millis(100));
    }
    assert!(!text.contains("mat_announcement_failures_total{"), "{text}");
    // The VM's first frame after its attach and the address it claimed in its ARP.
    assert!(m["mat_dataplane_events_read_total"] >= 2, "{text}");
    assert_eq!(m["mat_dataplane_events_lost_total"], 0);
    // Requests so far: the attaches, one detach, the stats and plan requests.
    let req = |op: &str| m[&format!("mat_request_duration_seconds_count{{op=\"{op}\"}}")];
    assert_eq!(req("attach"), 2);
    assert_eq!(req("detach"), 1);
    assert_eq!(req("stats"), 2);
    assert_eq!(req("plan"), 1);
    assert!(
        text.contains("mat_request_duration_seconds_sum{op=\"attach\"}"),
        "{text}"
    );
    let build = format!(
        "mat_build_info{{version=\"{}\",layout=\"{}\"}}",
        mat_loader::VERSION,
        mat_common::maps::LAYOUT
    );
    assert_eq!(m[&build], 1, "{text}");
    assert!(
        !text.contains("mat_reconcile_corrections_total{"),
        "nothing to correct"
    );

    // Other paths: 404.
    let (status, _) = get(&lab.hv, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // A port that went away while no daemon ran is a reconcile correction at the next start.
    let vm2 = lab.add_vm();
    let (port2, mac2) = (vm2.port.clone(), vm2.mac);
    lab.wait_forwarding();
    d.cli_ok(&["attach", &port2, "--mac", &mac_str(&mac2)]);
    d.kill9();
    lab.hv.ip(&["link", "del", &port2]);
    d.restart();
    let (text, m) = scrape(&lab);
    promtool(&text);
    assert_eq!(
        m[r#"mat_reconcile_corrections_total{kind="vanished_port"}"#], 1,
        "{text}"
    );
    assert_eq!(m["mat_bindings"], 1);
}

#[test]
fn bad_metrics_address_is_refused_at_start() {
    // Not an address: a usage error, before anything is touched.
    let out = Command::new(mat_binary())
        .args(["daemon", "--pool", POOL, "--rack", "1", "--host", "3"])
        .args(["--metrics", "localhost:metrics"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--metrics"), "{}", stderr(&out));

    // An address of no interface in the namespace: the daemon stops with the reason.
    let lab = Lab::new(0);
    let mut d = Daemon::prepare(
        &lab.hv,
        &[
            "--pool",
            POOL,
            "--rack",
            "1",
            "--host",
            "3",
            "--metrics",
            "192.0.2.1:9417",
        ],
    );
    d.spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d
        .log()
        .contains("binding the metrics listener on 192.0.2.1:9417")
    {
        assert!(Instant::now() < deadline, "no refusal:\n{}", d.log());
        sleep(Duration::from_millis(20));
    }
    let status = d.terminate();
    assert_eq!(status.code(), Some(1), "{}", d.log());
    assert!(!d.socket().exists(), "a refused daemon leaves no socket");
    assert!(!d.log().contains("ready"), "{}", d.log());
}
