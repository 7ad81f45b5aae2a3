//! `mat daemon`: the control socket, the data plane's events and link events around the
//! synchronous [`Host`].
//!
//! Start-up takes every exclusive resource (the state directory's lock, the pin directory's lock,
//! the control socket) before it touches the data plane, so that a daemon that is refused
//! changes nothing.

use std::{
    collections::{HashMap, HashSet},
    io::ErrorKind,
    mem::size_of,
    net::IpAddr,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures_util::{Stream, StreamExt};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, unix::AsyncFd},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::Semaphore,
};
use tracing::{debug, info, warn};

use crate::{
    Dataplane,
    announce::Announcer,
    common::{
        counters::{HOOKS, OUTCOMES},
        event::{Event, EventKind},
    },
    duplicates,
    host::{self, Attach, Host},
    mac::Mac,
    monitor,
    plan::Plan,
    ports::{self, LinkEvent, Links, VmPorts},
    proto::{self, IDLE, MAX_LINE, Reply, Request},
    refusal::{Code, Refusal},
    store::Store,
    uplink::Uplink,
    views::{CounterView, ModeView, PortView, ReleasedPortView, RoutesView, StatsView},
};

/// How often the daemon checks that its ports still exist, in case a link event was lost.
const RESYNC: Duration = Duration::from_secs(10);

/// How long a new daemon waits for the locks of one that is still exiting.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Connections served at once; more are answered `busy` and closed.
const MAX_CONNECTIONS: usize = 512;

pub struct Options {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
    pub plan: Plan,
    pub hold_down: Duration,
    /// Bridges whose VM ports get the programs as soon as they appear.
    pub bridges: Vec<String>,
    /// Names of VM ports that are not taps (veth-based set-ups).
    pub vm_ports: Option<glob::Pattern>,
    /// Port security for bindings that do not say otherwise.
    pub port_security: bool,
    /// DHCPv4: translate chaddr rather than keep it and set the broadcast flag.
    pub dhcp_translate: bool,
    /// Uplink mode: translate on this uplink instead of on each VM port.
    pub uplink: Option<Uplink>,
    /// Interfaces to watch for duplicate outside MACs (empty: the uplink, or the managed
    /// bridges' network-side ports).
    pub watch: Vec<String>,
    /// libvirtd's URI, to bind hotplugged interfaces from its events (`None`: off).
    pub libvirt: Option<String>,
    /// Where to serve Prometheus metrics (`None`: nowhere).
    pub metrics: Option<std::net::SocketAddr>,
}

struct Ctx {
    host: Mutex<Host>,
    links: Links,
    announcer: Arc<Announcer>,
    dups: Arc<duplicates::Watcher>,
    monitor: monitor::Hub,
}

impl Ctx {
    fn host(&self) -> MutexGuard<'_, Host> {
        self.host
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Announces from a binding for as long as it stays bound.
    fn announce(self: &Arc<Self>, a: crate::announce::Announce) {
        if self.monitor.watched() {
            self.monitor.publish(monitor::announce_record(&a));
        }
        let ctx = self.clone();
        self.announcer.announce(a, move |ifindex, outside| {
            ctx.host().is_bound(ifindex, outside)
        });
    }
}

pub async fn run(opts: Options) -> Result<()> {
    raise_nofile();
    if let Some(u) = opts
        .uplink
        .as_ref()
        .filter(|u| ports::ifindex(&u.name).is_none())
    {
        bail!("the uplink {} does not exist", u.name);
    }
    // Every exclusive resource first: a refused daemon must not touch the data plane.
    let store = tokio::task::block_in_place(|| Store::open(&opts.state_dir, LOCK_WAIT))?;
    let pin_lock = tokio::task::block_in_place(|| Dataplane::lock(&opts.pin_dir, LOCK_WAIT))?;
    let metrics = opts.metrics.map(crate::metrics::listen).transpose()?;
    let listener = listen(&opts.socket)?;
    let mut dp = Dataplane::open(&opts.pin_dir)
        .with_context(|| format!("opening the data plane under {}", opts.pin_dir.display()))?;
    // An upgrade within one layout: this release's programs take over the running links.
    let (updated, failed) = dp
        .take_over_links()
        .context("switching the pinned links to this release's programs")?;
    for (ifindex, program, e) in failed {
        warn!(ifindex, program = program.name(), error = %e, "link not switched to this release's program");
    }
    if updated > 0 {
        info!(
            links = updated,
            "this release's programs run on every pinned link"
        );
    }
    let ring = dp
        .take_event_ring()
        .context("taking the event ring buffer")?;
    // Subscribe before reconciling, so that a port removed in between is seen.
    let link_events = ports::events()?;
    let vm_ports = VmPorts::new(opts.bridges.clone(), opts.vm_ports.clone());
    let auto_watch = (opts.watch.is_empty() && opts.uplink.is_none()).then(|| vm_ports.clone());
    let mut host = Host::open(
        store,
        dp,
        opts.plan,
        host::Options {
            hold_ms: u64::try_from(opts.hold_down.as_millis()).unwrap_or(u64::MAX),
            vm_ports,
            port_security: opts.port_security,
            dhcp_translate: opts.dhcp_translate,
            uplink: opts.uplink.clone(),
        },
    )?;
    host.reconcile()
        .context("reconciling the data plane with the state")?;
    let links = Links::new()?;
    let uplink = host.uplink().and_then(|(u, i)| Some((u.name.clone(), i?)));
    let dups = duplicates::Watcher::new(
        host.host_prefix(),
        auto_watch,
        uplink
            .clone()
            .filter(|_| opts.watch.is_empty())
            .map(|u| u.0),
    );
    // VM ports already in a managed bridge are guarded now, not at their first change. Only
    // interfaces the state does not know are looked up: reconcile has released the state's
    // ports that are gone or renamed, so the others need nothing. (A dump of every link, which
    // rtnetlink buffers whole at about 10 KiB a link, cost 40 MiB and most of a restart's time
    // at 4,096 ports.)
    if !opts.bridges.is_empty() {
        let unknown = other_interfaces(&host.port_names())?;
        for name in unknown {
            let Some(link) = links.by_name(&name).await? else {
                continue;
            };
            if let Err(e) = host.link_changed(&link) {
                warn!(port = link.name, error = %e, "guarding a port of a managed bridge");
            }
            dups.link_changed(&link);
        }
    }
    for name in &opts.watch {
        let ifindex = ports::ifindex(name)
            .with_context(|| format!("the interface {name} to watch does not exist"))?;
        dups.start(name.clone(), ifindex);
    }
    if let Some((name, ifindex)) = uplink.filter(|_| opts.watch.is_empty()) {
        dups.start(name, ifindex);
    }
    let ctx = Arc::new(Ctx {
        dups,
        host: Mutex::new(host),
        announcer: Arc::new(
            Announcer::new(links.clone()).context("opening a packet socket for gratuitous ARP")?,
        ),
        links,
        monitor: monitor::Hub::default(),
    });
    {
        let host = ctx.host();
        info!(
            socket = %opts.socket.display(),
            state_dir = %opts.state_dir.display(),
            pin_dir = %opts.pin_dir.display(),
            host_pool = host.host_pool(),
            bindings = host.binding_count(),
            bridges = ?opts.bridges,
            "ready"
        );
    }
    if ctx.dups.watching().is_empty() {
        info!("no interface is watched for duplicate outside MACs (--watch IFACE names one)");
    }
    crate::systemd::ready();
    tokio::spawn(watch_events(ring, ctx.clone()));
    tokio::spawn(watch_links(link_events, ctx.clone()));
    tokio::spawn(resync(ctx.clone()));
    if let Some(uri) = &opts.libvirt {
        follow_libvirt(&ctx, uri, &opts.bridges);
    }
    if let Some(l) = metrics {
        let ctx = ctx.clone();
        tokio::spawn(crate::metrics::serve(l, move || scrape(ctx.clone())));
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut accept_errors = RateLimited::new(Duration::from_secs(10));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            serve(stream, ctx).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        tokio::spawn(refuse(stream, Refusal::new(
                            Code::Busy,
                            format!("{MAX_CONNECTIONS} connections are open; try again"),
                        )));
                    }
                },
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory: the pending connection stays
                    // queued, so back off instead of spinning on it.
                    if let Some(n) = accept_errors.hit() {
                        warn!(error = %e, repeated = n, "accepting a connection; backing off");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    crate::systemd::stopping();
    let _ = std::fs::remove_file(&opts.socket);
    drop(pin_lock);
    info!("stopped; the data plane keeps translating");
    Ok(())
}

/// The mode, what is watched and what was seen, for `mat stats` and `mat plan`.
fn mode_and_duplicates(
    ctx: &Ctx,
    mut mode: ModeView,
) -> (ModeView, u64, Vec<duplicates::Duplicate>) {
    mode.watching = ctx.dups.watching();
    let (total, recent) = ctx.dups.seen();
    (mode, total, recent)
}

/// The interfaces of the daemon's network namespace whose names are not in `known`, read line
/// by line from /proc/net/dev: no list of every interface is held at once.
fn other_interfaces(known: &HashSet<&str>) -> Result<Vec<String>> {
    let file = std::fs::File::open("/proc/net/dev").context("opening /proc/net/dev")?;
    let mut other = Vec::new();
    // Two header lines, then `NAME: counters` (an interface name has no colon).
    for line in std::io::BufRead::lines(std::io::BufReader::new(file)).skip(2) {
        let line = line.context("reading /proc/net/dev")?;
        if let Some((name, _)) = line.split_once(':') {
            let name = name.trim();
            if !known.contains(name) {
                other.push(name.to_owned());
            }
        }
    }
    Ok(other)
}

/// Raises the soft limit on open files to the hard one: every connection and every pinned
/// object the daemon opens takes a descriptor, and systemd's default soft limit is 1,024.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        warn!(soft, hard, error = %e, "raising the open-file limit");
    }
}

/// Counts repeated events and says when to log them: at most once per period.
struct RateLimited {
    period: Duration,
    last: Option<Instant>,
    count: u64,
}

impl RateLimited {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            count: 0,
        }
    }

    /// Counts one event; returns how many there were since the last log, when it is time to log.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
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
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
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

/// Answers one refusal and closes.
async fn refuse(mut stream: UnixStream, r: Refusal) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(Reply::refused(r).line().as_bytes()),
    )
    .await;
}

/// One client connection: requests in, replies out, in order. A connection that sends no
/// complete line for [`IDLE`] is closed.
async fn serve(stream: UnixStream, ctx: Arc<Ctx>) {
    let uid = stream.peer_cred().map(|c| c.uid());
    if uid.as_ref().ok() != Some(&0) {
        warn!(?uid, "refused a peer that is not root");
        refuse(
            stream,
            Refusal::new(Code::NotRoot, "the mat daemon serves root only"),
        )
        .await;
        return;
    }
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // One byte past the limit (the CR of a CRLF line is not counted: two).
        let mut limited = (&mut rd).take(MAX_LINE as u64 + 2);
        let n = match tokio::time::timeout(IDLE, limited.read_until(b'\n', &mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                debug!(error = %e, "reading a request");
                return;
            }
            Err(_) => {
                debug!("closing an idle connection");
                return;
            }
        };
        if n == 0 {
            return;
        }
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        if buf.len() > MAX_LINE {
            let r = Refusal::new(
                Code::LineTooLong,
                format!("a request line is at most {MAX_LINE} bytes"),
            );
            let _ = wr.write_all(Reply::refused(r).line().as_bytes()).await;
            return;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            if complete {
                continue;
            }
            return;
        }
        let reply = match proto::parse_request(&buf) {
            Ok(Request::Monitor { types }) => {
                watch(rd, wr, ctx, types).await;
                return;
            }
            Err(e) => Reply::refused(Refusal::new(Code::BadRequest, format!("bad request: {e}"))),
            Ok(req) => {
                let (op, started) = (req.op(), Instant::now());
                let reply = handle(req, &ctx).await.unwrap_or_else(Reply::refused);
                crate::metrics::request(op, started.elapsed());
                reply
            }
        };
        if wr.write_all(reply.line().as_bytes()).await.is_err() || !complete {
            return;
        }
    }
}

/// What rtnetlink says of the interface named `port` (the host checks what kind of port it is).
async fn link(ctx: &Ctx, port: &str) -> Result<Option<ports::LinkInfo>, Refusal> {
    ctx.links
        .by_name(port)
        .await
        .map_err(|e| Refusal::internal(format!("looking up {port}: {e:#}")))
}

/// Runs `f` on the host in a blocking thread (it writes to disk and to the maps).
async fn with_host<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&mut Host) -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || f(&mut c.host()))
        .await
        .map_err(Refusal::internal)?
}

/// Turns a wire request into a call of the host, and its result into a reply.
async fn handle(req: Request, ctx: &Arc<Ctx>) -> Result<Reply, Refusal> {
    Ok(match req {
        Request::Attach {
            port,
            mac,
            vm,
            ips,
            force,
            port_security,
        } => {
            let attach = Attach {
                inside: proto::mac(&mac)?,
                vm: vm.unwrap_or_default(),
                ips,
                force,
                port_security,
                port,
            };
            let link = link(ctx, &attach.port).await?;
            let (view, announce) = with_host(ctx, move |h| h.attach(attach, link.as_ref())).await?;
            if let Some(a) = announce {
                ctx.announce(a);
            }
            Reply::ok(&view)
        }
        Request::AttachVm { vm, ports } => {
            let mut resolved = Vec::new();
            for p in &ports {
                resolved.push((p.to_attach(&vm)?, link(ctx, &p.port).await?));
            }
            Reply::ok(&with_host(ctx, move |h| h.attach_vm(&vm, &resolved)).await?)
        }
        Request::Detach { port, mac, vm } => {
            let sel = proto::detach(port, mac.as_deref(), vm)?;
            Reply::ok(&with_host(ctx, move |h| h.detach(&sel)).await?)
        }
        Request::ReleasePort { port } => {
            with_host(ctx, {
                let port = port.clone();
                move |h| h.release_port(&port)
            })
            .await?;
            Reply::ok(&ReleasedPortView { port })
        }
        Request::List {} => Reply::ok(&with_host(ctx, |h| Ok(h.list())).await?),
        Request::Plan {} => {
            let mut plan = with_host(ctx, |h| Ok(h.plan())).await?;
            let mode = std::mem::take(&mut plan.mode);
            (plan.mode, plan.duplicates, plan.recent_duplicates) = mode_and_duplicates(ctx, mode);
            Reply::ok(&plan)
        }
        // Served by `serve` on the connection itself: a stream, not a reply.
        Request::Monitor { .. } => Reply::refused(Refusal::new(
            Code::BadRequest,
            "monitor is a stream: send it first on a connection of its own",
        )),
        Request::Doctor {} => {
            let mut view = with_host(ctx, |h| h.doctor()).await?;
            let since = host::now_ms().saturating_sub(crate::doctor::DUPLICATE_RECENT_MS);
            let (_, recent) = ctx.dups.seen();
            view.findings.extend(
                recent
                    .iter()
                    .filter(|d| d.last_ms >= since)
                    .map(crate::doctor::duplicate),
            );
            Reply::ok(&view)
        }
        Request::Routes {} => Reply::ok(&RoutesView {
            routes: with_host(ctx, |h| Ok(h.routes())).await?,
        }),
        Request::Decode { mac } => {
            let mac = proto::mac(&mac)?;
            Reply::ok(&with_host(ctx, move |h| h.decode(mac)).await?)
        }
        Request::Stats {} => Reply::ok(
            &stats(ctx)
                .await
                .map_err(|e| Refusal::internal(format!("{e:#}")))?,
        ),
    })
}

/// A `monitor` connection: ok, then one line per record of the kinds asked for (all when none
/// is named), until the watcher closes it. The first watcher turns the data plane's drop reports
/// on, the last one off. Once a second, drops the counters counted but no record showed (the
/// rate limits) are reported as one `suppressed` record.
async fn watch(
    mut rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut wr: tokio::net::unix::OwnedWriteHalf,
    ctx: Arc<Ctx>,
    types: Vec<monitor::Kind>,
) {
    let (mut rx, first) = ctx.monitor.join();
    let on = if first {
        with_host(&ctx, |h| h.set_monitor(true)).await
    } else {
        Ok(())
    };
    let started = on.is_ok();
    let opening = match on {
        Ok(()) => Reply::ok(&serde_json::json!({})),
        Err(r) => Reply::refused(r),
    };
    let drops = |ctx: &Ctx| -> u64 {
        ctx.host().counters().map_or(0, |c| {
            c.nonzero()
                .iter()
                .filter(|(_, o, _)| o.drops())
                .map(|(_, _, n)| n)
                .sum()
        })
    };
    let wants =
        |k: Option<monitor::Kind>| types.is_empty() || k.is_some_and(|k| types.contains(&k));
    let base = drops(&ctx);
    let (mut counted, mut shown, mut told) = (0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ok = wr.write_all(opening.line().as_bytes()).await.is_ok() && started;
    let mut byte = [0u8; 1];
    while ok {
        let record = tokio::select! {
            r = rx.recv() => match r {
                Ok(r) => {
                    if matches!(r, monitor::Record::Drop { .. }) {
                        shown += 1;
                    }
                    if !wants(r.kind()) {
                        continue;
                    }
                    r
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    // Records this watcher was too slow for: drops among them are told below.
                    debug!(missed = n, "a monitor fell behind");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                // Counted by the previous tick: their records had a second to arrive.
                let missing = counted.saturating_sub(shown + told);
                counted = drops(&ctx).saturating_sub(base);
                if missing == 0 || !wants(Some(monitor::Kind::Drop)) {
                    continue;
                }
                told += missing;
                monitor::Record::Suppressed { drops: missing }
            }
            // The watcher closed its end (it sends nothing after its request).
            n = rd.read(&mut byte) => {
                if matches!(n, Ok(0) | Err(_)) {
                    break;
                }
                continue;
            }
        };
        let mut line = serde_json::to_string(&record).expect("records serialize");
        line.push('\n');
        ok = wr.write_all(line.as_bytes()).await.is_ok();
    }
    if ctx.monitor.leave()
        && let Err(e) = with_host(&ctx, |h| h.set_monitor(false)).await
    {
        warn!(error = %e, "turning the data plane's drop reports off");
    }
}

/// One scrape of the metrics: the same stats as `mat stats` and the same plan as `mat plan`.
async fn scrape(ctx: Arc<Ctx>) -> Result<String> {
    let stats = stats(&ctx).await?;
    let plan = with_host(&ctx, |h| Ok(h.plan())).await?;
    Ok(crate::metrics::render(&stats, &plan))
}

async fn stats(ctx: &Arc<Ctx>) -> Result<StatsView> {
    let (counters, ports, mode) = {
        let host = ctx.host();
        (host.counters()?, host.ports(), host.mode())
    };
    let (mode, duplicates, recent_duplicates) = mode_and_duplicates(ctx, mode);
    let link_stats: HashMap<u32, ports::LinkInfo> = ctx
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
            direction: h.direction().to_owned(),
            outcome: o.name().to_owned(),
            packets: counters.get(h, o),
        })
        .collect();
    let ports = ports
        .into_iter()
        .map(|p| {
            let l = link_stats.get(&p.ifindex);
            PortView {
                port: p.name,
                ifindex: p.ifindex,
                programs: p.programs.iter().map(|q| q.name().to_owned()).collect(),
                bindings: p.bindings,
                from_vm_packets: l.and_then(|l| l.rx_packets),
                to_vm_packets: l.and_then(|l| l.tx_packets),
                from_vm_dropped: l.and_then(|l| l.rx_dropped),
                to_vm_dropped: l.and_then(|l| l.tx_dropped),
            }
        })
        .collect();
    Ok(StatsView {
        mode,
        counters,
        ports,
        duplicates,
        recent_duplicates,
    })
}

/// The data plane's ring buffer: addresses learned from VMs' ARP, and VMs running for the first
/// time since their attach. Both lead to announcements.
async fn watch_events(ring: crate::EventRing, ctx: Arc<Ctx>) {
    // SAFETY: the ring buffer owns its descriptor, which stays open as long as the AsyncFd that
    // owns the ring buffer.
    let mut fd = match unsafe { AsyncFd::register(ring) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "watching the event ring buffer");
            return;
        }
    };
    let mut drop_budget = monitor::Budget::default();
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
        let mut drops = Vec::new();
        let mut short = 0;
        guard.get_inner_mut().drain(|item| {
            if monitor::is_drop(item) {
                // Over the budget: counted by the data plane, told as suppressed.
                if drop_budget.take() {
                    drops.push(item.to_vec());
                }
            } else if item.len() >= size_of::<Event>() {
                // SAFETY: the item holds at least one Event, a plain repr(C) type; unaligned read.
                batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
            } else {
                short += 1;
            }
        });
        drop(guard);
        let unknown = batch.iter().filter(|ev| ev.kind().is_none()).count() as u64;
        crate::metrics::events(
            (batch.len() + drops.len()) as u64 - unknown,
            short + unknown,
        );
        for r in drops.iter().filter_map(|d| monitor::drop_record(d)) {
            ctx.monitor.publish(r);
        }
        for ev in batch {
            let learned = match ev.kind() {
                Some(EventKind::Learned) => Some(IpAddr::from(ev.ipv4)),
                Some(EventKind::Learned6) => Some(IpAddr::from(ev.ipv6)),
                Some(EventKind::Active) => None,
                Some(EventKind::Dropped) | None => continue,
            };
            let mac = Mac(ev.mac);
            if let (Some(ip), true) = (learned, ctx.monitor.watched()) {
                ctx.monitor
                    .publish(monitor::learn_record(ev.ifindex, mac, ip));
            }
            debug!(ifindex = ev.ifindex, %mac, ?learned, "data-plane event");
            let announce = ctx.host().on_event(ev.ifindex, mac, learned);
            if let Some(a) = announce {
                ctx.announce(a);
            }
        }
    }
}

/// Releases the bindings of ports that disappear, follows renames, and guards new VM ports of
/// managed bridges.
async fn watch_links(events: impl Stream<Item = LinkEvent>, ctx: Arc<Ctx>) {
    let mut events = std::pin::pin!(events);
    while let Some(ev) = events.next().await {
        let result = with_host(&ctx, {
            let ev = ev.clone();
            move |h| match &ev {
                LinkEvent::Removed { ifindex, .. } => h.link_removed(*ifindex),
                LinkEvent::Changed(link) => h.link_changed(link),
            }
        })
        .await;
        match &ev {
            LinkEvent::Removed { ifindex, .. } => ctx.dups.link_removed(*ifindex),
            LinkEvent::Changed(link) => ctx.dups.link_changed(link),
        }
        if let Err(e) = result {
            warn!(event = ?ev, error = %e, "handling a link event");
        }
    }
    warn!("link events ended; relying on the periodic check");
}

/// Binds hotplugged interfaces and releases unplugged ones, from libvirt's device events.
#[cfg(feature = "libvirt-events")]
fn follow_libvirt(ctx: &Arc<Ctx>, uri: &str, bridges: &[String]) {
    use crate::libvirt_events::{Notice, watch};
    let mut notices = watch(uri.to_owned(), bridges.to_vec());
    let ctx = ctx.clone();
    tokio::spawn(async move {
        while let Some(notice) = notices.recv().await {
            let result = match notice {
                Notice::Bind(req) => handle(req, &ctx).await.map(drop),
                Notice::Present { vm, macs } => {
                    with_host(&ctx, move |h| h.release_absent(&vm, &macs).map(drop)).await
                }
            };
            if let Err(e) = result {
                warn!(error = %e, "libvirt: binding or releasing an interface");
            }
        }
    });
}

#[cfg(not(feature = "libvirt-events"))]
fn follow_libvirt(_: &Arc<Ctx>, uri: &str, _: &[String]) {
    warn!(
        uri,
        "this mat is built without the libvirt-events feature: interface hotplug is not followed"
    );
}

async fn resync(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = with_host(&ctx, |h| {
            h.resync();
            Ok(())
        })
        .await;
    }
}
