//! Crash safety of the `mat` daemon: a storm of attach/detach requests while the daemon is
//! killed with SIGKILL at random moments (also while it starts and reconciles) and restarted.
//!
//! Checked throughout:
//! - every acknowledged change is in the daemon's state and in the pinned maps after each
//!   restart, and every refusal agrees with what was acknowledged before;
//! - a request cut off by a kill took effect entirely or not at all;
//! - no outside MAC is ever bound twice, and the maps equal the state;
//! - a VM that stays bound pings a peer every 10 ms throughout, and loses nothing, also while no
//!   daemon runs.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::sleep,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mat_tests::{
    daemon::{Daemon, POOL, mac_str, pinned_maps},
    netns::ChildGuard,
    topology::{Lab, PEER_IP, ping},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

/// Requests in the storm (refused ones count; retries of undelivered ones do not).
const REQUESTS: usize = 2000;
/// VM ports the storm plays with (the lab's VMs 1..=PORTS); VM 0 carries the ping stream.
const PORTS: usize = 6;
/// VM identities (name + inside MAC) the storm attaches: more than ports, more than the pool.
const IDENTITIES: usize = 20;
/// Kills (each one a window without a daemon) at most.
const MAX_KILLS: usize = 80;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    Unbound,
    Bound { ident: usize, outside: String },
}

fn identity(k: usize) -> (String, String) {
    (format!("s{k}"), format!("52:54:00:aa:00:{k:02x}"))
}

/// What happened to one request.
enum Outcome {
    Reply(Value),
    /// Never reached the daemon (no daemon listening): safe to retry.
    NotSent,
    /// Sent, but the daemon died before answering: it may or may not have happened.
    Unknown,
}

fn send(socket: &Path, req: &Value) -> Outcome {
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Outcome::NotSent;
        }
        Err(e) => panic!("connecting to the daemon: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if s.write_all(format!("{req}\n").as_bytes()).is_err() {
        return Outcome::Unknown;
    }
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(n) if n > 0 => Outcome::Reply(serde_json::from_str(&line).expect("reply is JSON")),
        Ok(_) => Outcome::Unknown,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Outcome::Unknown,
        Err(e) => panic!("reading a reply: {e}"),
    }
}

/// Sends until the request is delivered (retrying while no daemon listens).
fn deliver(socket: &Path, req: &Value) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match send(socket, req) {
            Outcome::NotSent => {
                assert!(Instant::now() < deadline, "no daemon for 30 s");
                sleep(Duration::from_millis(2));
            }
            o => return o,
        }
    }
}

/// The daemon's bindings, by port: (identity, outside).
fn list(socket: &Path) -> HashMap<String, (usize, String)> {
    loop {
        if let Outcome::Reply(v) = deliver(socket, &json!({"op": "list"})) {
            return v["ok"]["bindings"]
                .as_array()
                .expect("list result")
                .iter()
                .map(|b| {
                    let vm = b["vm"].as_str().unwrap();
                    let ident = vm
                        .strip_prefix('s')
                        .and_then(|k| k.parse().ok())
                        .unwrap_or(usize::MAX);
                    (
                        b["port"].as_str().unwrap().to_owned(),
                        (ident, b["outside"].as_str().unwrap().to_owned()),
                    )
                })
                .collect();
        }
    }
}

struct Storm<'a> {
    socket: PathBuf,
    pin_dir: PathBuf,
    ports: Vec<String>,
    /// Port name -> ifindex in the hypervisor namespace.
    ifindex: HashMap<String, u32>,
    model: HashMap<String, Slot>,
    /// The ping VM's binding, which nothing may touch.
    fixed: (&'a str, u32, String, String),
    acked: usize,
    refused: HashMap<String, usize>,
    unknown_applied: usize,
    unknown_not_applied: usize,
    checks: usize,
}

impl Storm<'_> {
    fn bound_identities(&self) -> HashSet<usize> {
        self.model
            .values()
            .filter_map(|s| match s {
                Slot::Bound { ident, .. } => Some(*ident),
                Slot::Unbound => None,
            })
            .collect()
    }

    fn port_of(&self, ident: usize) -> Option<&String> {
        self.model
            .iter()
            .find(|(_, s)| matches!(s, Slot::Bound { ident: i, .. } if *i == ident))
            .map(|(p, _)| p)
    }

    /// A request: mostly ones that can succeed, some that must be refused.
    fn pick(&self, rng: &mut StdRng) -> (String, Value, Option<usize>) {
        let port = self.ports[rng.gen_range(0..self.ports.len())].clone();
        let bound = matches!(self.model[&port], Slot::Bound { .. });
        if rng.gen_bool(0.15) || bound && rng.gen_bool(0.8) {
            let mut req = json!({"op": "detach", "port": port});
            if rng.gen_bool(0.3) {
                let (vm, _) = identity(rng.gen_range(0..IDENTITIES));
                req = json!({"op": "detach", "port": port, "vm": vm});
            }
            return (port, req, None);
        }
        let taken = self.bound_identities();
        let free: Vec<usize> = (0..IDENTITIES).filter(|k| !taken.contains(k)).collect();
        let ident = if !free.is_empty() && rng.gen_bool(0.85) {
            free[rng.gen_range(0..free.len())]
        } else {
            rng.gen_range(0..IDENTITIES)
        };
        let (vm, mac) = identity(ident);
        let req = json!({"op": "attach", "port": port, "mac": mac, "vm": vm});
        (port, req, Some(ident))
    }

    /// A reply agrees with the model, which it then updates.
    fn apply(&mut self, port: &str, req: &Value, ident: Option<usize>, reply: &Value) {
        let before = self.model[port].clone();
        if let Some(ok) = reply.get("ok") {
            self.acked += 1;
            if let Some(ident) = ident {
                assert_eq!(before, Slot::Unbound, "attach acknowledged on a bound port");
                assert!(self.port_of(ident).is_none(), "identity bound twice");
                let outside = ok["outside"].as_str().unwrap().to_owned();
                self.model
                    .insert(port.into(), Slot::Bound { ident, outside });
            } else {
                let Slot::Bound { ident, outside } = &before else {
                    panic!("detach acknowledged on an unbound port {port}: {reply}");
                };
                assert_eq!(ok["released"][0]["outside"], outside.as_str());
                if let Some(vm) = req.get("vm") {
                    assert_eq!(vm, &json!(identity(*ident).0));
                }
                self.model.insert(port.into(), Slot::Unbound);
            }
            self.assert_unique_outside();
            return;
        }
        let code = reply["error"]["code"]
            .as_str()
            .expect("error code")
            .to_owned();
        match (code.as_str(), ident) {
            ("port_bound", Some(_)) => assert_ne!(before, Slot::Unbound, "{reply}"),
            ("mac_in_use", Some(i)) => assert!(
                self.port_of(i).is_some_and(|p| p != port),
                "{reply} but the model has identity {i} free"
            ),
            ("pool_exhausted", Some(_)) => {}
            ("not_bound", None) => match (&before, req.get("vm")) {
                (Slot::Unbound, _) => {}
                (Slot::Bound { ident, .. }, Some(vm)) => assert_ne!(vm, &json!(identity(*ident).0)),
                (Slot::Bound { .. }, None) => panic!("{reply} but {port} is bound: {before:?}"),
            },
            _ => panic!("unexpected refusal of {req}: {reply}"),
        }
        *self.refused.entry(code).or_default() += 1;
    }

    /// A request cut off by a kill: the daemon has it entirely or not at all.
    fn resolve(&mut self, port: &str, req: &Value, ident: Option<usize>) {
        let now = list(&self.socket);
        let before = self.model[port].clone();
        let after = now.get(port).cloned();
        let applied = match (ident, &before, &after) {
            (_, Slot::Unbound, None) => false,
            (
                _,
                Slot::Bound {
                    ident: i,
                    outside: o,
                },
                Some((j, p)),
            ) if i == j && o == p => false,
            (Some(k), Slot::Unbound, Some((j, _))) if *j == k => true,
            (None, Slot::Bound { .. }, None) => true,
            _ => panic!("{req} cut off: port {port} was {before:?}, is {after:?}"),
        };
        if applied {
            self.unknown_applied += 1;
            self.model.insert(
                port.into(),
                match after {
                    Some((ident, outside)) => Slot::Bound { ident, outside },
                    None => Slot::Unbound,
                },
            );
        } else {
            self.unknown_not_applied += 1;
        }
        self.check_all();
    }

    fn assert_unique_outside(&self) {
        let mut seen = HashSet::new();
        for s in self.model.values() {
            if let Slot::Bound { outside, .. } = s {
                assert!(seen.insert(outside.clone()), "{outside} bound twice");
            }
        }
        assert!(
            !seen.contains(&self.fixed.3),
            "the ping VM's MAC handed out again"
        );
    }

    /// The daemon's state and the pinned maps equal the model.
    fn check_all(&mut self) {
        self.checks += 1;
        let now = list(&self.socket);
        let (port, ifindex, inside, outside) = &self.fixed;
        assert_eq!(
            now.get(*port).map(|b| &b.1),
            Some(outside),
            "ping VM binding"
        );
        for p in &self.ports {
            let want = match &self.model[p] {
                Slot::Unbound => None,
                Slot::Bound { ident, outside } => Some((*ident, outside.clone())),
            };
            assert_eq!(now.get(p).cloned(), want, "daemon's binding on {p}");
        }
        let bound = self.model.values().filter(|s| **s != Slot::Unbound).count();
        assert_eq!(
            now.len(),
            1 + bound,
            "the daemon has bindings the model lacks: {now:?}"
        );
        let (from, to) = pinned_maps(&self.pin_dir);
        let mut want_from = vec![(*ifindex, parse(inside), parse(outside))];
        let mut want_to = vec![(*ifindex, parse(outside), parse(inside))];
        for (p, s) in &self.model {
            if let Slot::Bound { ident, outside } = s {
                let i = self.ifindex[p];
                let inside = parse(&identity(*ident).1);
                want_from.push((i, inside, parse(outside)));
                want_to.push((i, parse(outside), inside));
            }
        }
        want_from.sort_unstable();
        want_to.sort_unstable();
        assert_eq!(from, want_from, "from-VM map");
        assert_eq!(to, want_to, "to-VM map");
        let outs: HashSet<_> = from.iter().map(|e| e.2).collect();
        assert_eq!(
            outs.len(),
            from.len(),
            "an outside MAC bound twice in the maps"
        );
    }
}

fn parse(mac: &str) -> [u8; 6] {
    mat_tests::topology::parse_mac(mac).unwrap_or_else(|| panic!("bad MAC {mac}"))
}

#[test]
fn kill_9_during_a_storm_of_requests() {
    let seed: u64 = std::env::var("MAT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (MAT_CRASH_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);
    let lab = Lab::new(PORTS + 1);
    // 24 + 8 + 12 bits: 16 outside MACs for 7 ports and 20 identities; a short hold-down so
    // that MACs move between identities.
    let daemon = Daemon::start(
        &lab.hv,
        &[
            "--pool",
            POOL,
            "--rack",
            "1",
            "--host",
            "3",
            "--host-bits",
            "12",
            "--hold-down",
            "300ms",
        ],
    );
    let vm0 = &lab.vms[0];
    let fixed_outside = daemon
        .cli_ok(&[
            "attach",
            &vm0.port,
            "--mac",
            &mac_str(&vm0.mac),
            "--vm",
            "pinger",
        ])
        .trim()
        .to_owned();
    ping(&vm0.ns, PEER_IP, 2).expect("the ping VM reaches the peer");

    let mut pinger = ChildGuard(
        vm0.ns
            .command("ping")
            .args(["-n", "-D", "-i", "0.01", "-W", "1"])
            .arg(PEER_IP.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ping"),
    );

    // Read ping's output as it comes: a full pipe would stall it.
    let mut stdout = pinger.0.stdout.take().expect("ping's stdout");
    let ping_output = std::thread::spawn(move || {
        let mut out = String::new();
        stdout
            .read_to_string(&mut out)
            .expect("reading ping's output");
        out
    });

    let socket = daemon.socket();
    let pin_dir = daemon.pin_dir().to_owned();
    let daemon = Arc::new(Mutex::new(daemon));
    let stop = Arc::new(AtomicBool::new(false));
    // (kill time, back-up time) of every kill.
    let downs = Arc::new(Mutex::new(Vec::<(SystemTime, SystemTime)>::new()));
    let killer = {
        let (daemon, stop, downs) = (daemon.clone(), stop.clone(), downs.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
        std::thread::spawn(move || {
            // At most MAX_KILLS windows, so that a loaded machine does not stretch the test.
            let mut kills = 0;
            while !stop.load(Ordering::SeqCst) && kills < MAX_KILLS {
                kills += 1;
                sleep(Duration::from_millis(rng.gen_range(30..300)));
                let mut d = daemon.lock().unwrap();
                let down = SystemTime::now();
                d.kill9();
                d.spawn();
                if rng.gen_bool(0.25) {
                    // Again while it starts up and reconciles.
                    sleep(Duration::from_micros(rng.gen_range(0..40_000)));
                    d.kill9();
                    d.spawn();
                }
                d.wait_ready();
                downs.lock().unwrap().push((down, SystemTime::now()));
            }
        })
    };

    let ports: Vec<String> = lab.vms[1..].iter().map(|v| v.port.clone()).collect();
    let mut storm = Storm {
        socket: socket.clone(),
        pin_dir,
        ifindex: lab.vms[1..]
            .iter()
            .map(|v| (v.port.clone(), v.port_index))
            .collect(),
        model: ports.iter().map(|p| (p.clone(), Slot::Unbound)).collect(),
        ports,
        fixed: (
            &vm0.port,
            vm0.port_index,
            mac_str(&vm0.mac),
            fixed_outside.clone(),
        ),
        acked: 0,
        refused: HashMap::new(),
        unknown_applied: 0,
        unknown_not_applied: 0,
        checks: 0,
    };
    let started = Instant::now();
    for _ in 0..REQUESTS {
        let (port, req, ident) = storm.pick(&mut rng);
        let mut outcome = send(&socket, &req);
        if let Outcome::NotSent = outcome {
            // The daemon was killed between requests: check it once it is back, then retry.
            storm.check_all();
            outcome = deliver(&socket, &req);
        }
        match outcome {
            Outcome::Reply(r) => storm.apply(&port, &req, ident, &r),
            Outcome::Unknown => storm.resolve(&port, &req, ident),
            Outcome::NotSent => unreachable!(),
        }
    }
    let storm_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    killer.join().expect("killer thread");

    // One more crash at rest, then everything checked once more.
    {
        let mut d = daemon.lock().unwrap();
        d.restart();
    }
    storm.check_all();
    let state: Value = serde_json::from_slice(&daemon.lock().unwrap().state_file()).unwrap();
    let mut outs: Vec<&str> = state["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["outside"].as_str().unwrap())
        .chain(
            state["alloc"]["released"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["outside"].as_str().unwrap()),
        )
        .collect();
    let n = outs.len();
    outs.sort_unstable();
    outs.dedup();
    assert_eq!(outs.len(), n, "an outside MAC twice in the state file");

    // The ping stream: stop it (SIGINT prints the summary) and look for gaps.
    sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(pinger.id() as i32, libc::SIGINT) };
    let _ = pinger.0.wait();
    let out = ping_output.join().expect("ping reader");
    // Lines are "[EPOCH.USEC] 64 bytes from ...: icmp_seq=N ttl=64 time=...".
    let replies: Vec<(f64, u64)> = out
        .lines()
        .filter_map(|l| {
            let at = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let seq = l
                .split("icmp_seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((at, seq))
        })
        .collect();
    let last = replies.iter().map(|r| r.1).max().unwrap_or(0);
    let got: HashSet<u64> = replies.iter().map(|r| r.1).collect();
    let missing: Vec<u64> = (1..=last).filter(|s| !got.contains(s)).collect();
    let downs = downs.lock().unwrap();
    let secs = |t: &SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let down_time: Duration = downs
        .iter()
        .map(|(a, b)| b.duration_since(*a).unwrap_or_default())
        .sum();
    // Echoes answered while no daemon ran, and the windows they fell in.
    let in_windows: Vec<usize> = downs
        .iter()
        .map(|(a, b)| {
            let (a, b) = (secs(a), secs(b));
            replies.iter().filter(|r| r.0 >= a && r.0 <= b).count()
        })
        .collect();
    let while_down: usize = in_windows.iter().sum();
    let windows_with_echoes = in_windows.iter().filter(|&&n| n > 0).count();
    let kills = daemon.lock().unwrap().starts - 1;
    eprintln!(
        "{REQUESTS} requests in {storm_time:.1?}: {} acknowledged, refused {:?}, cut off by a \
         kill {} (applied {}, not applied {}); {kills} daemon starts killed or restarted, \
         {} windows without a daemon, {down_time:.1?} in all; {} full checks of state and maps; \
         ping: {} replies, last seq {last}, {while_down} answered while no daemon ran (in \
         {windows_with_echoes} of the windows), missing {missing:?}",
        storm.acked,
        storm.refused,
        storm.unknown_applied + storm.unknown_not_applied,
        storm.unknown_applied,
        storm.unknown_not_applied,
        downs.len(),
        storm.checks,
        replies.len(),
    );
    assert!(downs.len() >= 10, "too few kills to mean anything");
    assert!(
        windows_with_echoes * 2 >= downs.len(),
        "the ping stream did not cover the daemon's absences: {in_windows:?}\n{out}"
    );
    assert!(missing.is_empty(), "ping lost {missing:?}");
    assert_eq!(
        daemon.lock().unwrap().maps().0.len(),
        1 + storm
            .model
            .values()
            .filter(|s| matches!(s, Slot::Bound { .. }))
            .count()
    );
}
