//! `mat daemon --metrics ADDR`: Prometheus text exposition at `http://ADDR/metrics`.
//!
//! What the host already knows (data-plane counters, per-port packets, bindings, the pool) is
//! read at scrape time, through the same calls as `mat stats` and `mat plan`, so a scrape and
//! `mat stats --json` taken together agree. What only happens as it goes (announcements sent,
//! data-plane events read, reconcile corrections, request latency) is counted into
//! [`TELEMETRY`] as it happens: one process-wide set, as a process runs one daemon.
//!
//! prometheus-client writes OpenMetrics text; it is served in the classic text format (0.0.4),
//! which every Prometheus reads and `promtool check metrics` checks: the two differ here only in
//! a counter's metadata name (`mat_frames` there, `mat_frames_total` here) and the `# EOF` line
//! (see [`classic`]), as no info or unit metadata is used.
//!
//! The HTTP side is a minimal HTTP/1.1 responder on tokio (one GET per connection, then close):
//! Prometheus needs no more, and the tree has no HTTP server to reuse.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::LazyLock,
    time::Duration,
};

use anyhow::{Context, Result};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, warn};

use crate::views::{PlanView, StatsView};

/// The longest request head a scrape may send, and how long it may take to send it.
const MAX_HEAD: usize = 8 * 1024;
const READ_LIMIT: Duration = Duration::from_secs(5);

/// Scrapes served at once; a connection beyond is closed unanswered.
const MAX_SCRAPES: usize = 8;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrameLabels {
    hook: String,
    direction: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    layout: String,
}

type Latency = Family<OpLabel, Histogram, fn() -> Histogram>;

/// What the daemon counts as it goes, for the next scrape.
pub struct Telemetry {
    announced: Family<KindLabel, Counter>,
    announce_failed: Family<KindLabel, Counter>,
    events_read: Counter,
    events_lost: Counter,
    corrections: Family<KindLabel, Counter>,
    requests: Latency,
}

fn latency_histogram() -> Histogram {
    // 50 us to about 3 s: a request is one fsync or a few map writes, up to a slow disk.
    Histogram::new(exponential_buckets(0.000_05, 3.0, 11))
}

pub static TELEMETRY: LazyLock<Telemetry> = LazyLock::new(|| Telemetry {
    announced: Family::default(),
    announce_failed: Family::default(),
    events_read: Counter::default(),
    events_lost: Counter::default(),
    corrections: Family::default(),
    requests: Family::new_with_constructor(latency_histogram),
});

/// The announcement's kind as the metrics name it: a gratuitous ARP or an unsolicited NA.
fn announce_kind(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "arp",
        IpAddr::V6(_) => "na",
    }
}

/// One announcement frame for `ip` sent, or refused by the socket.
pub fn announced(ip: IpAddr, sent: bool) {
    let label = KindLabel {
        kind: announce_kind(ip),
    };
    let family = if sent {
        &TELEMETRY.announced
    } else {
        &TELEMETRY.announce_failed
    };
    family.get_or_create(&label).inc();
}

/// Data-plane events taken off the ring: `read` usable ones, `lost` the daemon could not use.
pub fn events(read: u64, lost: u64) {
    TELEMETRY.events_read.inc_by(read);
    TELEMETRY.events_lost.inc_by(lost);
}

/// Corrections the daemon made to bring the data plane in line with the state: `kind` is
/// `map_entry`, `port_programs` or `vanished_port`.
pub fn corrected(kind: &'static str, n: u64) {
    if n > 0 {
        TELEMETRY
            .corrections
            .get_or_create(&KindLabel { kind })
            .inc_by(n);
    }
}

/// One control request of operation `op` answered after `took`.
pub fn request(op: &'static str, took: Duration) {
    TELEMETRY
        .requests
        .get_or_create(&OpLabel { op })
        .observe(took.as_secs_f64());
}

/// The exposition of one scrape: what the host shows now, and what was counted so far.
pub fn render(stats: &StatsView, plan: &PlanView) -> String {
    let mut r = Registry::with_prefix("mat");
    let frames = Family::<FrameLabels, Counter>::default();
    for c in &stats.counters {
        frames
            .get_or_create(&FrameLabels {
                hook: c.hook.clone(),
                direction: c.direction.clone(),
                outcome: c.outcome.clone(),
            })
            .inc_by(c.packets);
    }
    r.register(
        "frames",
        "Frames the data plane handled, per program (hook) and outcome (mat stats)",
        frames,
    );
    let packets = Family::<PortLabels, Counter>::default();
    let dropped = Family::<PortLabels, Counter>::default();
    for p in &stats.ports {
        for (direction, n, d) in [
            ("from_vm", p.from_vm_packets, p.from_vm_dropped),
            ("to_vm", p.to_vm_packets, p.to_vm_dropped),
        ] {
            let l = PortLabels {
                port: p.port.clone(),
                direction,
            };
            if let Some(n) = n {
                packets.get_or_create(&l).inc_by(n);
            }
            if let Some(d) = d {
                dropped.get_or_create(&l).inc_by(d);
            }
        }
    }
    r.register(
        "port_packets",
        "Packets on each managed port, from the kernel's interface counters (from_vm: the port's rx)",
        packets,
    );
    r.register(
        "port_dropped",
        "Packets the kernel dropped on each managed port (interface counters)",
        dropped,
    );
    let gauge = |r: &mut Registry, name: &str, help: &str, v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        r.register(name, help, g);
    };
    gauge(
        &mut r,
        "bindings",
        "Bindings on this host",
        plan.bound.len() as u64,
    );
    gauge(
        &mut r,
        "pool_capacity",
        "Outside MACs in this host's pool",
        plan.capacity,
    );
    gauge(
        &mut r,
        "pool_bound",
        "Outside MACs bound to a VM",
        plan.bound.len() as u64,
    );
    gauge(
        &mut r,
        "pool_held_down",
        "Released outside MACs still in their hold-down",
        plan.held.len() as u64,
    );
    gauge(
        &mut r,
        "pool_free",
        "Outside MACs an attach can take",
        plan.free.count,
    );
    let t = &*TELEMETRY;
    r.register(
        "announcements",
        "Announcement frames sent, by kind (arp: gratuitous ARP, na: unsolicited NA)",
        t.announced.clone(),
    );
    r.register(
        "announcement_failures",
        "Announcement frames the packet socket refused, by kind",
        t.announce_failed.clone(),
    );
    r.register(
        "dataplane_events_read",
        "Data-plane events read from the ring buffer (learned addresses, first frames)",
        t.events_read.clone(),
    );
    r.register(
        "dataplane_events_lost",
        "Data-plane events the daemon could not use (short or of an unknown kind)",
        t.events_lost.clone(),
    );
    r.register(
        "reconcile_corrections",
        "Corrections made to the data plane to match the state, by kind",
        t.corrections.clone(),
    );
    r.register(
        "request_duration_seconds",
        "Time to answer a control request, per operation",
        t.requests.clone(),
    );
    // A gauge at 1 rather than OpenMetrics' info type, which the classic text parsers (promtool
    // check metrics) do not know.
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: crate::VERSION,
            layout: crate::common::maps::LAYOUT.to_string(),
        })
        .set(1);
    r.register(
        "build_info",
        "The running mat: version and pinned layout",
        build,
    );
    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String");
    classic(&out)
}

/// OpenMetrics text as the classic text format: a counter's HELP and TYPE name its samples
/// (`_total`), and no `# EOF`.
fn classic(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines().filter(|&l| l != "# EOF") {
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if counters.contains(name) {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            out.push_str(&format!("{prefix}{name} {tail}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Binds the metrics listener (at start, with the daemon's other resources).
pub fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the metrics listener on {addr}"))?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l).context("registering the metrics listener")
}

/// Serves `/metrics` with what `scrape` renders; 404 for any other path.
pub async fn serve<F, Fut>(listener: TcpListener, scrape: F)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String>> + Send,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!("too many metrics connections: one closed");
                    continue;
                };
                let scrape = scrape.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, scrape).await {
                        debug!(error = %e, "serving a metrics request");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                warn!(error = %e, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The path of a `GET` or `HEAD` request head, or the status to answer instead.
fn route(head: &str) -> Result<(&str, bool), &'static str> {
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("400 Bad Request");
    }
    let head_only = match method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Err("405 Method Not Allowed"),
    };
    let path = path.unwrap_or("");
    Ok((path.split('?').next().unwrap_or(path), head_only))
}

async fn answer<F, Fut>(mut stream: TcpStream, scrape: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String>>,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(READ_LIMIT, stream.read(&mut buf))
            .await
            .context("waiting for the request")??;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let (status, kind, body, head_only) = match route(&head) {
        Ok(("/metrics", head_only)) => match scrape().await {
            Ok(text) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                text,
                head_only,
            ),
            Err(e) => (
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                format!("{e:#}\n"),
                head_only,
            ),
        },
        Ok((_, head_only)) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
            head_only,
        ),
        Err(status) => (status, "text/plain; charset=utf-8", String::new(), false),
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        reply.push_str(&body);
    }
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text() {
        let om = "# HELP mat_frames Frames.\n# TYPE mat_frames counter\nmat_frames_total{a=\"b\"} 3\n\
                  # HELP mat_bindings Bindings.\n# TYPE mat_bindings gauge\nmat_bindings 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP mat_frames_total Frames.\n# TYPE mat_frames_total counter\n\
             mat_frames_total{a=\"b\"} 3\n# HELP mat_bindings Bindings.\n\
             # TYPE mat_bindings gauge\nmat_bindings 1\n"
        );
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(("/metrics", false))
        );
        assert_eq!(
            route("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Ok(("/metrics", true))
        );
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Ok(("/", false)));
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n\r\n"),
            Err("405 Method Not Allowed")
        );
        assert_eq!(route("nonsense\r\n\r\n"), Err("400 Bad Request"));
    }
}
