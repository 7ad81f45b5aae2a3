//! The service manager's readiness protocol (`Type=notify` in `mat.service`), through the
//! sd-notify crate: a few lines over a Unix datagram socket that we could write ourselves, but
//! the crate also handles `NOTIFY_SOCKET` in the abstract namespace, adds no dependency the
//! loader does not already have (libc), and is what other Rust services use. Without
//! `NOTIFY_SOCKET` (run by hand, by the tests) every call does nothing.

use sd_notify::NotifyState;
use tracing::warn;

/// Tells systemd the daemon answers on its socket.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// Tells systemd the daemon is stopping (the data plane stays).
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "notifying systemd");
    }
}
