//! Interface hotplug from libvirt's domain events (`mat daemon --libvirt URI`, cargo feature
//! `libvirt-events`): libvirt fires no qemu hook for `virsh attach-interface` or
//! `detach-interface`, but it does emit `VIR_DOMAIN_EVENT_ID_DEVICE_ADDED` and `_REMOVED`.
//!
//! One thread runs libvirt's default event loop; another owns the connection: it connects
//! (retrying with backoff: the daemon runs without libvirtd), subscribes, resyncs, and turns each
//! event into a [`Notice`] for the daemon. libvirt's callbacks only pass the domain UUID and the
//! device alias on; every call back into libvirt (the domain XML) is made by the connection thread.
//!
//! The rules, chosen so as not to fight the qemu hook (which keeps start, stop and migration):
//! - device added to a running domain: its live XML is read, the interface with that alias is
//!   bound by (domain UUID, guest MAC) with its metadata, by the hook's own rule
//!   ([`crate::libvirt::attach_request`]). Other devices (disks, ...) are ignored.
//! - device removed: the domain's bindings whose guest MAC is no longer in its live XML are
//!   released into hold-down.
//! - every (re)connection: for each active domain, both of the above for all its interfaces. This
//!   is what the hook's `reconnect` does for binding (an `attach_vm` keeps what is bound as it
//!   is), plus the releases a lost `DEVICE_REMOVED` would have made. Only domains libvirt reports
//!   active are touched: a domain that is stopped, saved or migrated away is the hook's (`release
//!   end`), and bindings of VMs libvirt does not know (bound by hand) are left alone.

use std::{
    ffi::{CStr, c_char, c_int, c_void},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::{debug, info, warn};
use virt::{connect::Connect, domain::Domain as VirDomain, sys};

use crate::{
    libvirt::attach_request,
    libvirt_xml::{self, Domain},
    mac::Mac,
    proto::Request,
};

/// The first wait before reconnecting; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// libvirt's keepalive: a dead libvirtd is noticed after about 3 x 5 s.
const KEEPALIVE_INTERVAL: c_int = 5;
const KEEPALIVE_COUNT: u32 = 3;

/// How often the connection thread checks that the connection is alive between events.
const ALIVE_CHECK: Duration = Duration::from_secs(5);

/// What the daemon does for libvirt.
#[derive(Debug)]
pub enum Notice {
    /// Bind these interfaces: an `attach_vm` request, as the hook would send it.
    Bind(Request),
    /// The guest MACs a running domain has now: release its bindings of any other MAC.
    Present { vm: String, macs: Vec<Mac> },
}

/// Follows libvirt at `uri` until the receiver is dropped. `bridges`: translate only interfaces
/// in these bridges (empty: every bridge), as the hook's `--bridge`.
pub fn watch(uri: String, bridges: Vec<String>) -> UnboundedReceiver<Notice> {
    let (tx, rx) = unbounded_channel();
    let spawned = thread::Builder::new()
        .name("mat-libvirt".into())
        .spawn(move || run(&uri, &bridges, &tx));
    if let Err(e) = spawned {
        warn!(error = %e, "libvirt: starting the event thread; hotplug is not followed");
    }
    rx
}

/// What libvirt's callbacks report, to the connection thread.
enum Raw {
    Added { vm: String, alias: String },
    Removed { vm: String, alias: String },
    Closed,
}

fn run(uri: &str, bridges: &[String], out: &UnboundedSender<Notice>) {
    if let Err(e) = event_loop() {
        warn!(error = %e, "libvirt: starting its event loop; hotplug is not followed");
        return;
    }
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    while !out.is_closed() {
        match session(uri, bridges, out) {
            Ok(()) => {
                warn!(uri, "libvirt: connection lost; reconnecting");
                backoff = BACKOFF_MIN;
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                // The first failure in a row is worth a warning; the retries are not.
                if failures == 1 {
                    warn!(
                        uri,
                        error = format!("{e:#}"),
                        "libvirt: not connected; retrying with backoff"
                    );
                } else {
                    debug!(
                        uri,
                        error = format!("{e:#}"),
                        "libvirt: still not connected"
                    );
                }
            }
        }
        thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// libvirt's default event loop, run by a thread of its own (needed for the domain events and
/// the keepalive).
fn event_loop() -> Result<()> {
    // libvirt's default handler prints every error on stderr; they are logged here instead.
    virt::error::clear_error_callback();
    virt::event::event_register_default_impl().context("virEventRegisterDefaultImpl")?;
    thread::Builder::new()
        .name("mat-libvirt-loop".into())
        .spawn(|| {
            loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    warn!(error = %e, "libvirt: running its event loop");
                    thread::sleep(Duration::from_secs(1));
                }
            }
        })?;
    Ok(())
}

/// One connection: subscribe, resync, then follow events until it is lost (`Ok`). `Err` when
/// it could not be set up.
fn session(uri: &str, bridges: &[String], out: &UnboundedSender<Notice>) -> Result<()> {
    let mut conn = Connect::open(Some(uri)).with_context(|| format!("connecting to {uri}"))?;
    let (tx, rx) = mpsc::channel();
    let ids = match subscribe(&conn, &tx) {
        Ok(ids) => ids,
        Err(e) => {
            let _ = conn.close();
            return Err(e);
        }
    };
    info!(uri, "libvirt: connected; following interface hotplug");
    resync(&conn, bridges, out);
    follow(&conn, &rx, bridges, out);
    unsubscribe(&conn, &ids);
    let _ = conn.close();
    Ok(())
}

/// The callback ids of one connection's subscriptions.
struct Subscriptions {
    added: c_int,
    removed: c_int,
}

fn subscribe(conn: &Connect, tx: &mpsc::Sender<Raw>) -> Result<Subscriptions> {
    if conn
        .set_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        .is_err()
    {
        debug!("libvirt: no keepalive on this connection");
    }
    let opaque = || Box::into_raw(Box::new(tx.clone())).cast::<c_void>();
    // SAFETY: each opaque is a boxed Sender that libvirt hands back to the callback and frees
    // with `free_sender` once; the callbacks have the signatures libvirt calls them with for
    // these event ids (registration takes the generic type, hence the transmutes, as libvirt's
    // own VIR_DOMAIN_EVENT_CALLBACK macro does).
    unsafe {
        let close = opaque();
        if sys::virConnectRegisterCloseCallback(
            conn.as_ptr(),
            Some(closed),
            close,
            Some(free_sender),
        ) < 0
        {
            free_sender(close);
            anyhow::bail!(
                "registering the close callback: {}",
                virt::error::Error::last_error()
            );
        }
        let register = |id: sys::virDomainEventID, cb: DeviceCallback| {
            let data = opaque();
            let generic = std::mem::transmute::<DeviceCallback, GenericCallback>(cb);
            let ret = sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                std::ptr::null_mut(),
                id as c_int,
                Some(generic),
                data,
                Some(free_sender),
            );
            if ret < 0 {
                free_sender(data);
                anyhow::bail!(
                    "subscribing to domain device events: {}",
                    virt::error::Error::last_error()
                );
            }
            Ok(ret)
        };
        let added = register(sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, device_added)?;
        let removed = register(sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, device_removed)?;
        Ok(Subscriptions { added, removed })
    }
}

fn unsubscribe(conn: &Connect, ids: &Subscriptions) {
    // SAFETY: ids and callback from `subscribe` on this connection; failures (a dead connection)
    // leave the freeing to libvirt when the connection is closed.
    unsafe {
        sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), ids.added);
        sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), ids.removed);
        sys::virConnectUnregisterCloseCallback(conn.as_ptr(), Some(closed));
    }
}

type DeviceCallback =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *const c_char, *mut c_void);
type GenericCallback = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);

unsafe extern "C" fn free_sender(opaque: *mut c_void) {
    unsafe {
        drop(Box::from_raw(opaque.cast::<mpsc::Sender<Raw>>()));
    }
}

unsafe fn sender<'a>(opaque: *mut c_void) -> &'a mpsc::Sender<Raw> {
    unsafe { &*opaque.cast::<mpsc::Sender<Raw>>() }
}

/// The domain's UUID, as libvirt writes it (lower case, dashed).
unsafe fn uuid(dom: sys::virDomainPtr) -> Option<String> {
    unsafe {
        let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
        (sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) == 0)
            .then(|| CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
    }
}

unsafe extern "C" fn device_added(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const c_char,
    opaque: *mut c_void,
) {
    unsafe {
        if let (Some(vm), false) = (uuid(dom), alias.is_null()) {
            let alias = CStr::from_ptr(alias).to_string_lossy().into_owned();
            let _ = sender(opaque).send(Raw::Added { vm, alias });
        }
    }
}

unsafe extern "C" fn device_removed(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const c_char,
    opaque: *mut c_void,
) {
    unsafe {
        if let (Some(vm), false) = (uuid(dom), alias.is_null()) {
            let alias = CStr::from_ptr(alias).to_string_lossy().into_owned();
            let _ = sender(opaque).send(Raw::Removed { vm, alias });
        }
    }
}

unsafe extern "C" fn closed(_: sys::virConnectPtr, _reason: c_int, opaque: *mut c_void) {
    unsafe {
        let _ = sender(opaque).send(Raw::Closed);
    }
}

/// Handles events until the connection is lost or the daemon is gone.
fn follow(
    conn: &Connect,
    rx: &mpsc::Receiver<Raw>,
    bridges: &[String],
    out: &UnboundedSender<Notice>,
) {
    loop {
        let raw = match rx.recv_timeout(ALIVE_CHECK) {
            Ok(Raw::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(raw) => raw,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if out.is_closed() || !conn.is_alive().unwrap_or(false) {
                    return;
                }
                continue;
            }
        };
        let (vm, alias) = match raw {
            Raw::Added { vm, alias } => (vm, Some(alias)),
            Raw::Removed { vm, alias } => {
                // Any device: an unplugged interface is no longer in the XML to name it.
                debug!(vm, alias, "libvirt: device removed");
                (vm, None)
            }
            Raw::Closed => return,
        };
        match live_domain(conn, &vm) {
            Ok(Some(dom)) => match alias {
                Some(alias) => added(&dom, &alias, bridges, out),
                None => present(&dom, out),
            },
            // Stopped meanwhile: the hook's release.
            Ok(None) => {}
            Err(e) => warn!(
                vm,
                error = format!("{e:#}"),
                "libvirt: reading a domain after a device event"
            ),
        }
    }
}

/// The live XML of an active domain, parsed; `None` when it is not active (any more).
fn live_domain(conn: &Connect, uuid: &str) -> Result<Option<Domain>> {
    let Ok(dom) = VirDomain::lookup_by_uuid_string(conn, uuid) else {
        return Ok(None);
    };
    parse_live(&dom)
}

fn parse_live(dom: &VirDomain) -> Result<Option<Domain>> {
    if !dom.is_active().unwrap_or(false) {
        return Ok(None);
    }
    let xml = dom.get_xml_desc(0).context("reading the domain XML")?;
    Ok(Some(libvirt_xml::parse(&xml)?))
}

/// A device was added: when it is a translated interface, bind it.
fn added(dom: &Domain, alias: &str, bridges: &[String], out: &UnboundedSender<Notice>) {
    let Some(nic) = dom
        .interfaces
        .iter()
        .find(|i| i.alias.as_deref() == Some(alias))
    else {
        return;
    };
    let one = Domain {
        interfaces: vec![nic.clone()],
        ..dom.clone()
    };
    match attach_request(&one, bridges) {
        Ok(Some(req)) => {
            info!(domain = dom.name, vm = dom.uuid, alias, mac = %nic.mac,
                  tap = nic.tap.as_deref(), "libvirt: interface hotplugged");
            let _ = out.send(Notice::Bind(req));
        }
        Ok(None) => debug!(
            domain = dom.name,
            alias, "libvirt: hotplugged interface left alone"
        ),
        Err(e) => warn!(
            domain = dom.name,
            alias,
            error = format!("{e:#}"),
            "libvirt: hotplugged interface"
        ),
    }
}

/// A device was removed (or the connection is new): what the domain has now.
fn present(dom: &Domain, out: &UnboundedSender<Notice>) {
    let _ = out.send(Notice::Present {
        vm: dom.uuid.clone(),
        macs: dom.interfaces.iter().map(|i| i.mac).collect(),
    });
}

/// After (re)connecting: every active domain's interfaces bound, the gone ones released.
fn resync(conn: &Connect, bridges: &[String], out: &UnboundedSender<Notice>) {
    let domains = match conn.list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "libvirt: listing the running domains");
            return;
        }
    };
    for vdom in &domains {
        let dom = match parse_live(vdom) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "libvirt: resync: reading a domain"
                );
                continue;
            }
        };
        match attach_request(&dom, bridges) {
            Ok(Some(req)) => {
                let _ = out.send(Notice::Bind(req));
            }
            Ok(None) => {}
            // A domain still starting (no tap yet): its `start` hook binds it.
            Err(e) => debug!(
                domain = dom.name,
                error = format!("{e:#}"),
                "libvirt: resync"
            ),
        }
        present(&dom, out);
    }
    info!(
        domains = domains.len(),
        "libvirt: resynced the running domains"
    );
}
