//! systemd's readiness protocol: with `Type=notify`, systemd starts the
//! units that depend on a node only once the node says `READY=1`, and shows
//! the `STATUS=` line in `systemctl status`. The message goes as one
//! datagram to the socket named by `NOTIFY_SOCKET` (a path, or `@name` for
//! the abstract namespace); without that variable nothing is sent.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=value` lines) to systemd; `Ok(false)`
/// when not run under systemd's notify protocol.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let path = path.to_string_lossy();
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path.as_ref())?;
        }
    }
    Ok(true)
}

/// Tells systemd the node serves on `address`; a failure is logged, never fatal.
pub fn ready(address: &str) {
    let state = format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on {address}",
        std::process::id()
    );
    if let Err(e) = notify(&state) {
        tracing::warn!(cause = %e, "cannot tell systemd that the node is ready");
    }
}

/// Tells systemd the node is stopping.
pub fn stopping() {
    if let Err(e) = notify("STOPPING=1\nSTATUS=stopping") {
        tracing::warn!(cause = %e, "cannot tell systemd that the node is stopping");
    }
}
