//! The CLI side: one request to the daemon, its reply printed as text or JSON.
//!
//! Exit codes: 0 done, 1 refused (or the daemon cannot be reached), 2 usage (clap's).

use std::{path::Path, process::ExitCode, time::Duration};

use serde::de::DeserializeOwned;

use crate::{
    client::Client,
    duplicates::Duplicate,
    proto::{ErrorBody, Reply, Request},
    views::{
        AttachView, DetachView, ListView, ModeView, PlanView, ReleasedPortView, RoutesView,
        StatsView,
    },
};

/// Runs `req`, prints the result with `text` (or as JSON), and turns the outcome into an exit
/// code.
pub fn run<T: DeserializeOwned>(
    socket: &Path,
    timeout: Duration,
    req: &Request,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> ExitCode {
    let reply = match Client::connect(socket, timeout).and_then(|mut c| c.reply(req)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mat: {e}");
            return ExitCode::from(1);
        }
    };
    print(reply, json, text)
}

/// Prints a reply's result with `text` (or as JSON), or its refusal; the exit code.
pub fn print<T: DeserializeOwned>(
    reply: Reply,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> ExitCode {
    match reply {
        Reply::Ok(v) => {
            if json {
                println!("{v}");
                return ExitCode::SUCCESS;
            }
            match serde_json::from_value::<T>(v) {
                Ok(t) => {
                    print!("{}", text(&t));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mat: unexpected reply from the daemon: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Reply::Error(ErrorBody { code, message }) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"error": {"code": code, "message": message}})
                );
            }
            eprintln!("mat: refused ({}): {message}", code.as_str());
            ExitCode::from(1)
        }
    }
}

pub fn attach_text(a: &AttachView) -> String {
    format!("{}\n", a.binding.outside)
}

pub fn detach_text(d: &DetachView) -> String {
    d.released
        .iter()
        .map(|b| {
            format!(
                "released {} {} -> {}{}\n",
                b.port,
                b.inside,
                b.outside,
                vm_suffix(&b.vm)
            )
        })
        .collect()
}

fn vm_suffix(vm: &str) -> String {
    if vm.is_empty() {
        String::new()
    } else {
        format!(" (VM {vm})")
    }
}

fn ips(v: &[std::net::IpAddr]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Rows as left-aligned columns.
fn table(rows: Vec<Vec<String>>) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{v:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn list_text(l: &ListView) -> String {
    let mut rows = vec![vec![
        "VM".into(),
        "PORT".into(),
        "INSIDE".into(),
        "OUTSIDE".into(),
        "GIVEN".into(),
        "LEARNED".into(),
        "SINCE".into(),
    ]];
    for b in &l.bindings {
        rows.push(vec![
            if b.vm.is_empty() {
                "-".into()
            } else {
                b.vm.clone()
            },
            b.port.clone(),
            b.inside.to_string(),
            b.outside.to_string(),
            ips(&b.ips),
            ips(&b.learned),
            b.since_rfc3339.clone(),
        ]);
    }
    table(rows)
}

/// `mode port` or `mode uplink eno1 (XDP native)`, and what is watched for duplicates.
fn mode_text(m: &ModeView) -> String {
    let mut out = format!("mode        {}", m.mode);
    if let Some(u) = &m.uplink {
        out.push_str(&format!(
            " {u} (XDP {})",
            m.uplink_xdp.as_deref().unwrap_or("?")
        ));
    }
    out.push_str(&format!(
        "\nwatching    {}\n",
        if m.watching.is_empty() {
            "nothing for duplicates".to_owned()
        } else {
            m.watching.join(", ")
        }
    ));
    out
}

/// The duplicate outside MACs seen: the count, then one line per MAC (latest first).
fn duplicates_text(total: u64, recent: &[Duplicate]) -> String {
    let mut out = format!("duplicates  {total}\n");
    for d in recent {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(d.last_ms);
        out.push_str(&format!(
            "  DUPLICATE {} ({}) on {}{} from {}, {} frames, last {}\n",
            d.mac,
            d.field,
            d.interface,
            d.vlan.map(|v| format!(" vlan {v}")).unwrap_or_default(),
            d.source,
            d.frames,
            humantime::format_rfc3339_seconds(at)
        ));
    }
    out
}

pub fn stats_text(s: &StatsView) -> String {
    let mut out = mode_text(&s.mode);
    out.push_str(&duplicates_text(s.duplicates, &s.recent_duplicates));
    out.push('\n');
    let mut rows = vec![vec![
        "HOOK".into(),
        "DIRECTION".into(),
        "OUTCOME".into(),
        "PACKETS".into(),
    ]];
    for c in s.counters.iter().filter(|c| c.packets != 0) {
        rows.push(vec![
            c.hook.clone(),
            c.direction.clone(),
            c.outcome.clone(),
            c.packets.to_string(),
        ]);
    }
    out.push_str(&table(rows));
    out.push('\n');
    let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    let mut rows = vec![vec![
        "PORT".into(),
        "IFINDEX".into(),
        "BINDINGS".into(),
        "FROM_VM".into(),
        "TO_VM".into(),
        "DROPPED_FROM/TO".into(),
        "PROGRAMS".into(),
    ]];
    for p in &s.ports {
        rows.push(vec![
            p.port.clone(),
            p.ifindex.to_string(),
            p.bindings.to_string(),
            opt(p.from_vm_packets),
            opt(p.to_vm_packets),
            format!("{}/{}", opt(p.from_vm_dropped), opt(p.to_vm_dropped)),
            p.programs.join(","),
        ]);
    }
    out.push_str(&table(rows));
    out
}

pub fn plan_text(p: &PlanView) -> String {
    let mut out = format!(
        "pool        {}\nrack route  {} (rack {}, {} rack bits)\nhost pool   {} (host {}, {} host \
         bits, {} VM bits)\ncapacity    {}\nhold-down   {:.1} s\nbound       {}\nheld down   \
         {}\nfree        {}{}\n",
        p.pool,
        p.rack_route,
        p.rack,
        p.rack_bits,
        p.host_pool,
        p.host,
        p.host_bits,
        p.vm_bits,
        p.capacity,
        p.hold_down_ms as f64 / 1000.0,
        p.bound.len(),
        p.held.len(),
        p.free.count,
        p.free
            .next
            .map(|m| format!(" (next {m})"))
            .unwrap_or_default(),
    );
    out.push_str(&mode_text(&p.mode));
    out.push_str(&duplicates_text(p.duplicates, &p.recent_duplicates));
    for b in &p.bound {
        out.push_str(&format!(
            "  bound  {}  {} {}{}\n",
            b.outside,
            b.port,
            b.inside,
            vm_suffix(&b.vm)
        ));
    }
    for h in &p.held {
        out.push_str(&format!(
            "  held   {}  {}{} for {:.1} s more\n",
            h.outside,
            h.inside,
            vm_suffix(&h.vm),
            h.remaining_ms as f64 / 1000.0
        ));
    }
    for r in &p.free.ranges {
        out.push_str(&format!("  free   {r}\n"));
    }
    for m in &p.free.reusable {
        out.push_str(&format!("  free   {m} (released, past hold-down)\n"));
    }
    out
}

pub fn release_port_text(r: &ReleasedPortView) -> String {
    format!("MAT's programs are off {}\n", r.port)
}

pub fn routes_text(r: &RoutesView) -> String {
    let rows = r
        .routes
        .iter()
        .map(|r| {
            vec![
                serde_json::to_value(r.scope)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                r.prefix.to_string(),
                format!("via {}", r.via),
                r.vlan.map_or("untagged".into(), |v| format!("vlan {v}")),
            ]
        })
        .collect();
    table(rows)
}
