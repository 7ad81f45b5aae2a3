//! `mat daemon`: the control socket, the data plane's events, link events, and gratuitous ARP
//! around the synchronous [`Core`].

use std::{
    collections::{HashMap, HashSet},
    io::ErrorKind,
    mem::size_of,
    net::Ipv4Addr,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use futures_util::{Stream, StreamExt};
use mat_loader::{
    common::{
        counters::{Hook, HOOKS, OUTCOMES},
        event::{Event, EventKind},
    },
    Dataplane,
};
use tokio::{
    io::{unix::AsyncFd, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{signal, SignalKind},
};
use tracing::{debug, info, warn};

use crate::{
    core::{Announce, Core},
    garp,
    links::{self, LinkEvent, Links},
    mac::Mac,
    plan::Plan,
    proto::{self, Code, CounterView, PortView, Refusal, Reply, Request, StatsView, MAX_LINE},
    state::Store,
};

/// How often the daemon checks that its ports still exist, in case a link event was lost.
const RESYNC: Duration = Duration::from_secs(10);

pub struct Options {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
    pub plan: Plan,
    pub hold_down: Duration,
}

struct Ctx {
    core: Mutex<Core>,
    links: Links,
    sender: garp::Sender,
    /// (outside MAC, address) pairs being announced right now.
    announcing: Mutex<HashSet<(Mac, Ipv4Addr)>>,
}

impl Ctx {
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub async fn run(opts: Options) -> Result<()> {
    let store = Store::open(&opts.state_dir)?;
    let mut dp = Dataplane::open(&opts.pin_dir)
        .with_context(|| format!("opening the data plane under {}", opts.pin_dir.display()))?;
    let ring = dp.take_events().context("taking the event ring buffer")?;
    // Subscribe before reconciling, so that a port removed in between is seen.
    let link_events = links::events()?;
    let mut core = Core::open(store, dp, opts.plan, opts.hold_down.as_millis() as u64)?;
    core.reconcile()
        .context("reconciling the data plane with the state")?;
    let ctx = Arc::new(Ctx {
        core: Mutex::new(core),
        links: Links::new()?,
        sender: garp::Sender::new().context("opening a packet socket for gratuitous ARP")?,
        announcing: Mutex::new(HashSet::new()),
    });
    let listener = listen(&opts.socket)?;
    {
        let core = ctx.core();
        info!(
            socket = %opts.socket.display(),
            state_dir = %opts.state_dir.display(),
            pin_dir = %opts.pin_dir.display(),
            host_pool = %core.state.plan.host_pool(),
            bindings = core.state.bindings.len(),
            "ready"
        );
    }
    tokio::spawn(watch_events(ring, ctx.clone()));
    tokio::spawn(watch_links(link_events, ctx.clone()));
    tokio::spawn(resync(ctx.clone()));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, ctx.clone()));
                }
                Err(e) => warn!(error = %e, "accepting a connection"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    info!("stopped; the data plane keeps translating");
    Ok(())
}

/// Binds the control socket, mode 0600, replacing a stale socket file but never a live daemon's.
fn listen(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!("another daemon is listening on {}", path.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        // Only a socket is ours to replace; anything else at that path is left alone.
        Err(_) if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) => {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?
        }
        Err(e) => bail!("{} exists and is not a live socket: {e}", path.display()),
    }
    // No window in which the socket is open to others: umask first, then bind.
    // SAFETY: umask(2) cannot fail; nothing else creates files at this point.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// One client connection: requests in, replies out, in order.
async fn serve(stream: UnixStream, ctx: Arc<Ctx>) {
    let uid = stream.peer_cred().map(|c| c.uid());
    let (rd, mut wr) = stream.into_split();
    if uid.as_ref().ok() != Some(&0) {
        warn!(?uid, "refused a peer that is not root");
        let r = Refusal::new(Code::NotRoot, "the mat daemon serves root only");
        let _ = wr.write_all(Reply::refused(r).line().as_bytes()).await;
        return;
    }
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut rd)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "reading a request");
                return;
            }
        };
        if n == 0 {
            return;
        }
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
        } else if buf.len() > MAX_LINE {
            let r = Refusal::new(
                Code::LineTooLong,
                format!("a request line is at most {MAX_LINE} bytes"),
            );
            let _ = wr.write_all(Reply::refused(r).line().as_bytes()).await;
            return;
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            if complete {
                continue;
            }
            return;
        }
        let reply = match proto::parse_request(&buf) {
            Err(e) => Reply::refused(Refusal::new(Code::BadRequest, format!("bad request: {e}"))),
            Ok(req) => handle(req, &ctx).await,
        };
        if wr.write_all(reply.line().as_bytes()).await.is_err() || !complete {
            return;
        }
    }
}

async fn handle(req: Request, ctx: &Arc<Ctx>) -> Reply {
    if req == (Request::Stats {}) {
        return match stats(ctx).await {
            Ok(v) => Reply::ok(&v),
            Err(e) => Reply::refused(Refusal::new(Code::Internal, format!("{e:#}"))),
        };
    }
    let c = ctx.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut core = c.core();
        match req {
            Request::Attach { port, mac, vm, ips } => core.attach(&port, &mac, vm.as_deref(), &ips),
            Request::AttachVm { vm, ports } => core.attach_vm(&vm, &ports).map(|v| (v, None)),
            Request::Detach { port, mac, vm } => core
                .detach(port.as_deref(), mac.as_deref(), vm.as_deref())
                .map(|v| (v, None)),
            Request::List {} => Ok((to_value(core.list()), None)),
            Request::Plan {} => Ok((to_value(core.plan()), None)),
            Request::Routes {} => Ok((to_value(core.routes()), None)),
            Request::Stats {} => unreachable!("answered above"),
        }
    })
    .await;
    match done {
        Ok(Ok((v, announce))) => {
            if let Some(a) = announce {
                announce_later(ctx, a);
            }
            Reply::Ok(v)
        }
        Ok(Err(r)) => Reply::refused(r),
        Err(e) => Reply::refused(Refusal::new(Code::Internal, e.to_string())),
    }
}

fn to_value<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).expect("results serialize")
}

async fn stats(ctx: &Arc<Ctx>) -> Result<StatsView> {
    let (counters, ports) = {
        let core = ctx.core();
        let counters = core.dp.counters()?;
        let ports: Vec<(String, u32, Vec<String>, usize)> = core
            .state
            .ports
            .iter()
            .map(|p| {
                let programs = core
                    .dp
                    .attached(p.ifindex)
                    .into_iter()
                    .map(|q| q.name().to_owned())
                    .collect();
                let n = core
                    .state
                    .bindings
                    .iter()
                    .filter(|b| b.ifindex == p.ifindex)
                    .count();
                (p.name.clone(), p.ifindex, programs, n)
            })
            .collect();
        (counters, ports)
    };
    let link_stats: HashMap<u32, links::LinkInfo> = ctx
        .links
        .all()
        .await?
        .into_iter()
        .map(|l| (l.ifindex, l))
        .collect();
    let counters = HOOKS
        .into_iter()
        .flat_map(|h| OUTCOMES.into_iter().map(move |o| (h, o)))
        .map(|(h, o)| CounterView {
            hook: h.name().to_owned(),
            direction: match h {
                Hook::PortFromVmTc | Hook::PortFromVmXdp | Hook::UplinkOutTc => "from_vm",
                Hook::PortToVmTc | Hook::UplinkInXdp => "to_vm",
            }
            .to_owned(),
            outcome: o.name().to_owned(),
            packets: counters.get(h, o),
        })
        .collect();
    let ports = ports
        .into_iter()
        .map(|(port, ifindex, programs, bindings)| {
            let l = link_stats.get(&ifindex);
            PortView {
                port,
                ifindex,
                programs,
                bindings,
                from_vm_packets: l.and_then(|l| l.rx_packets),
                to_vm_packets: l.and_then(|l| l.tx_packets),
                from_vm_dropped: l.and_then(|l| l.rx_dropped),
                to_vm_dropped: l.and_then(|l| l.tx_dropped),
            }
        })
        .collect();
    Ok(StatsView { counters, ports })
}

/// Sends [`garp::COUNT`] gratuitous ARPs for each address, [`garp::INTERVAL`] apart, out of the
/// port's bridge; stops early if the binding goes away. An address already being announced from
/// the same MAC is skipped.
fn announce_later(ctx: &Arc<Ctx>, a: Announce) {
    let ips: Vec<Ipv4Addr> = {
        let mut busy = ctx.announcing.lock().unwrap_or_else(|p| p.into_inner());
        a.ips
            .iter()
            .copied()
            .filter(|&ip| busy.insert((a.outside, ip)))
            .collect()
    };
    if ips.is_empty() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        match ctx.links.by_index(a.ifindex).await {
            Ok(Some(links::LinkInfo {
                master: Some(bridge),
                ..
            })) => {
                let mut sent = 0;
                for round in 0..garp::COUNT {
                    if round > 0 {
                        tokio::time::sleep(garp::INTERVAL).await;
                    }
                    if !ctx.core().is_bound(a.ifindex, a.outside) {
                        break;
                    }
                    for &ip in &ips {
                        match ctx.sender.send(bridge, &garp::frame(a.outside, ip)) {
                            Ok(()) => sent += 1,
                            Err(e) => warn!(bridge, %ip, error = %e, "sending gratuitous ARP"),
                        }
                    }
                }
                info!(ifindex = a.ifindex, bridge, outside = %a.outside, ?ips, sent, "announced");
            }
            Ok(_) => warn!(
                ifindex = a.ifindex,
                outside = %a.outside,
                "the port is in no bridge: no gratuitous ARP sent"
            ),
            Err(e) => warn!(error = %e, "looking up the port's bridge"),
        }
        let mut busy = ctx.announcing.lock().unwrap_or_else(|p| p.into_inner());
        for ip in ips {
            busy.remove(&(a.outside, ip));
        }
    });
}

/// The data plane's ring buffer: addresses learned from VMs' ARP, and VMs running for the first
/// time since their attach. Both lead to gratuitous ARP.
async fn watch_events(ring: aya::maps::RingBuf<aya::maps::MapData>, ctx: Arc<Ctx>) {
    // SAFETY: the ring buffer owns its descriptor, which stays open as long as the AsyncFd that
    // owns the ring buffer.
    let mut fd = match unsafe { AsyncFd::register(ring) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "watching the event ring buffer");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "waiting for data-plane events");
                return;
            }
        };
        // Clear first: an event arriving while we drain makes it ready again.
        guard.clear_ready();
        let mut batch = Vec::new();
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() >= size_of::<Event>() {
                // SAFETY: the item holds at least one Event, a plain repr(C) type; unaligned read.
                batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
            }
        }
        drop(guard);
        for ev in batch {
            let learned = match ev.kind() {
                Some(EventKind::Learned) => Some(Ipv4Addr::from(ev.ipv4)),
                Some(EventKind::Active) => None,
                None => continue,
            };
            let mac = Mac(ev.mac);
            debug!(ifindex = ev.ifindex, %mac, ?learned, "data-plane event");
            let announce = ctx.core().on_event(ev.ifindex, mac, learned);
            if let Some(a) = announce {
                announce_later(&ctx, a);
            }
        }
    }
}

/// Releases the bindings of ports that disappear, and follows renames.
async fn watch_links(events: impl Stream<Item = LinkEvent>, ctx: Arc<Ctx>) {
    let mut events = std::pin::pin!(events);
    while let Some(ev) = events.next().await {
        let c = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut core = c.core();
            let result = match &ev {
                LinkEvent::Removed { ifindex, .. } => {
                    let port = core
                        .state
                        .ports
                        .iter()
                        .find(|p| p.ifindex == *ifindex)
                        .cloned();
                    match port {
                        // A bridge port leaving its bridge is reported as a removal too.
                        Some(p) if links::ifname(p.ifindex).as_deref() != Some(p.name.as_str()) => {
                            core.port_gone(&p.name, p.ifindex, "link removed")
                        }
                        _ => Ok(()),
                    }
                }
                LinkEvent::Changed { ifindex, name } => core.port_renamed(*ifindex, name),
            };
            if let Err(e) = result {
                warn!(event = ?ev, error = %e, "handling a link event");
            }
        })
        .await;
    }
    warn!("link events ended; relying on the periodic check");
}

async fn resync(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let c = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || c.core().resync()).await;
    }
}
