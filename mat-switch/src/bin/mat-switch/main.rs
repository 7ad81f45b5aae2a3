//! `mat-switch`: the MAC-route switch's command line (argument parsing and printing only; the
//! work is in the `mat_switch` library). A second binary rather than `mat switch`: the switch is
//! another role on another machine, with its own kernel object, and a hypervisor's `mat` has no
//! use for it.

use std::{collections::BTreeMap, io::Read, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mat_loader::{mac::MacPrefix, plan::Scope};
use mat_switch::{
    PortSpec, RouteSpec, Switch,
    views::{CountersView, LearnedView, PortView, RouteView},
};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "mat-switch",
    about = "A switch that forwards on MAC prefixes (longest match on VLAN + destination MAC), \
             with an ordinary learning bridge for the MACs no route covers"
)]
struct Cli {
    /// Where switches are pinned (a directory on a BPF filesystem).
    #[arg(long, global = true, env = "MAT_SWITCH_PIN_DIR", default_value = mat_switch::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Print JSON (stable field names).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a switch over interfaces of this network namespace and start forwarding.
    Create {
        name: String,
        /// A port: IFNAME (every VLAN) or IFNAME@VLANS (e.g. eth1@0,10-20; 0 is untagged).
        #[arg(long = "port", required = true)]
        ports: Vec<PortSpec>,
        /// Learned MACs not seen for this long are forgotten.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        ageing: Duration,
        /// Also attach the XDP unicast path (for measurements; the far ends need an XDP program
        /// and no checksum offload).
        #[arg(long)]
        xdp: bool,
    },
    /// Stop the switch and remove it.
    Destroy { name: String },
    /// Switch names under the pin directory.
    List,
    /// Ports, counters and table sizes.
    Show { name: String },
    /// Add, delete or list routes.
    Route {
        #[command(subcommand)]
        cmd: RouteCmd,
    },
    /// Install routes from a hypervisor's `mat routes --json` (FILE or - for stdin).
    Import {
        name: String,
        file: String,
        /// Which routes go where: LABEL=PORT, with LABEL a route's `via` ("rack 1", "host 3",
        /// "core"); routes with other labels are skipped.
        #[arg(long = "via", required = true)]
        via: Vec<String>,
        /// Only routes of this scope (core or tor).
        #[arg(long, value_parser = parse_scope)]
        scope: Option<Scope>,
    },
    /// Frames per outcome.
    Stats { name: String },
    /// The learned table (MACs outside every routed prefix).
    Learned { name: String },
    /// Forget every learned MAC (routes stay).
    Flush { name: String },
}

#[derive(Subcommand)]
enum RouteCmd {
    /// Frames to PREFIX (MAC/LEN) in VLAN go out PORT.
    Add {
        name: String,
        prefix: String,
        #[arg(long)]
        port: String,
        /// 0 is untagged.
        #[arg(long, default_value_t = 0)]
        vlan: u16,
    },
    /// Delete the route for exactly PREFIX in VLAN.
    Del {
        name: String,
        prefix: String,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
    },
    /// The routes and the frames each sent.
    Show { name: String },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    match s {
        "core" => Ok(Scope::Core),
        "tor" => Ok(Scope::Tor),
        _ => Err(format!("{s:?}: expected core or tor")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<mat_switch::Error>() {
                Some(s) if s.is_refusal() => {
                    eprintln!("mat-switch: refused ({}): {s}", s.code());
                }
                _ => eprintln!("mat-switch: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) {
    if json {
        println!("{}", serde_json::to_string(value).expect("serialisable"));
    } else {
        print!("{}", text(value));
    }
}

fn run(cli: &Cli) -> Result<()> {
    let dir = &cli.pin_dir;
    match &cli.cmd {
        Cmd::Create {
            name,
            ports,
            ageing,
            xdp,
        } => {
            let s = Switch::create(dir, name, ports, *ageing, *xdp)?;
            print(cli.json, &s.show()?, |v| {
                format!("created {} over {} ports\n", v.name, v.ports.len())
            });
        }
        Cmd::Destroy { name } => Switch::open(dir, name)?.destroy()?,
        Cmd::List => print(cli.json, &Switch::list(dir), |v| {
            v.iter().map(|n| format!("{n}\n")).collect()
        }),
        Cmd::Show { name } => {
            let v = Switch::open(dir, name)?.show()?;
            print(cli.json, &v, |v| {
                format!(
                    "switch {}: {} routes, {} learned MACs (ageing {} s)\n{}{}",
                    v.name,
                    v.routes,
                    v.learned,
                    v.ageing_s,
                    ports_text(&v.ports),
                    counters_text(&v.counters)
                )
            });
        }
        Cmd::Route { cmd } => match cmd {
            RouteCmd::Add {
                name,
                prefix,
                port,
                vlan,
            } => {
                let prefix: MacPrefix = prefix.parse().map_err(mat_switch::Error::from)?;
                let mut s = Switch::open(dir, name)?;
                let (added, _) = s.add_routes(&[RouteSpec {
                    vlan: *vlan,
                    prefix,
                    port: port.clone(),
                }])?;
                if added == 0 {
                    eprintln!("mat-switch: the route was already there");
                }
            }
            RouteCmd::Del { name, prefix, vlan } => {
                let prefix: MacPrefix = prefix.parse().map_err(mat_switch::Error::from)?;
                Switch::open(dir, name)?.delete_route(*vlan, prefix)?;
            }
            RouteCmd::Show { name } => {
                #[derive(Serialize)]
                struct Routes {
                    routes: Vec<RouteView>,
                }
                let routes = Switch::open(dir, name)?.routes()?;
                print(cli.json, &Routes { routes }, |r| routes_text(&r.routes));
            }
        },
        Cmd::Import {
            name,
            file,
            via,
            scope,
        } => {
            let json = if file == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
            };
            let mut map = BTreeMap::new();
            for v in via {
                let (label, port) = v
                    .rsplit_once('=')
                    .ok_or_else(|| mat_switch::Error::InvalidVia(v.clone()))?;
                map.insert(label.to_owned(), port.to_owned());
            }
            let v = Switch::open(dir, name)?.import(&json, &map, *scope)?;
            print(cli.json, &v, |v| {
                format!(
                    "{} routes added, {} already there, {} skipped\n",
                    v.added, v.unchanged, v.skipped
                )
            });
        }
        Cmd::Stats { name } => {
            let s = Switch::open(dir, name)?;
            #[derive(Serialize)]
            struct Stats {
                counters: CountersView,
                ports: Vec<PortView>,
                routes: Vec<RouteView>,
            }
            let v = Stats {
                counters: s.counters()?,
                ports: s.ports()?,
                routes: s.routes()?,
            };
            print(cli.json, &v, |v| {
                format!(
                    "{}{}{}",
                    counters_text(&v.counters),
                    ports_text(&v.ports),
                    routes_text(&v.routes)
                )
            });
        }
        Cmd::Learned { name } => {
            #[derive(Serialize)]
            struct Table {
                learned: Vec<LearnedView>,
            }
            let learned = Switch::open(dir, name)?.learned()?;
            print(cli.json, &Table { learned }, |t| {
                let mut s = format!("{:>5} {:<17} {:<15} {:>9}\n", "vlan", "mac", "port", "age");
                for l in &t.learned {
                    s += &format!(
                        "{:>5} {:<17} {:<15} {:>7.1} s{}\n",
                        l.vlan,
                        l.mac,
                        l.port,
                        l.age_ms as f64 / 1000.0,
                        if l.expired { " (expired)" } else { "" }
                    );
                }
                s
            });
        }
        Cmd::Flush { name } => {
            #[derive(Serialize)]
            struct Flushed {
                flushed: usize,
            }
            let flushed = Switch::open(dir, name)?.flush()?;
            print(cli.json, &Flushed { flushed }, |f| {
                format!("{} learned MACs forgotten\n", f.flushed)
            });
        }
    }
    Ok(())
}

fn ports_text(ports: &[PortView]) -> String {
    let mut s = format!(
        "{:>4} {:<15} {:>7} {:<12} {:>12} {:>12}\n",
        "slot", "port", "ifindex", "vlans", "rx", "tx"
    );
    for p in ports {
        s += &format!(
            "{:>4} {:<15} {:>7} {:<12} {:>12} {:>12}\n",
            p.slot, p.name, p.ifindex, p.vlans, p.rx, p.tx
        );
    }
    s
}

fn routes_text(routes: &[RouteView]) -> String {
    let mut s = format!(
        "{:>5} {:<21} {:<15} {:>12}\n",
        "vlan", "prefix", "port", "frames"
    );
    for r in routes {
        s += &format!(
            "{:>5} {:<21} {:<15} {:>12}\n",
            r.vlan, r.prefix, r.port, r.frames
        );
    }
    s
}

fn counters_text(c: &CountersView) -> String {
    format!(
        "routed {}  learned {}  flooded {} ({} copies)  dropped {}  sources learned {}\n",
        c.routed, c.learned, c.flooded, c.flood_copies, c.dropped, c.sources_learned
    )
}
