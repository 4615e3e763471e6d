//! The service manager's notification protocol (systemd's `sd_notify`), so `Type=notify` units
//! know when `serve` is listening, reloading and stopping.
//!
//! The protocol is one datagram per state change, `KEY=VALUE` lines, sent to the unix socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). Without the variable
//! (serve started by hand or by another supervisor) every call does nothing. A message that
//! cannot be sent is reported once on stderr and never stops the server: the VCH's job is to
//! serve, and a manager that misses a message times the unit out with its own message.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The variable that names the service manager's socket.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<Target>,
    /// Set after the first failed send, so a gone manager is reported once.
    failed: AtomicBool,
}

#[derive(Debug)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`. (`sd_notify` can also unset it; removing a variable needs
    /// `unsafe` in edition 2024, and serve starts no process that could misuse it.)
    pub(crate) fn from_env() -> Self {
        Self::for_socket(std::env::var_os(NOTIFY_SOCKET).as_deref())
    }

    /// A notifier for the socket a `NOTIFY_SOCKET` value names (`None`, empty: no manager).
    pub(crate) fn for_socket(value: Option<&std::ffi::OsStr>) -> Self {
        use std::os::unix::ffi::OsStrExt as _;
        let target = value.filter(|v| !v.is_empty()).map(|v| {
            let bytes = v.as_bytes();
            match bytes.strip_prefix(b"@") {
                Some(name) => Target::Abstract(name.to_vec()),
                None => Target::Path(PathBuf::from(v)),
            }
        });
        Notifier {
            target,
            failed: AtomicBool::new(false),
        }
    }

    /// `READY=1`: the listeners are bound and requests are served.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={}\nMAINPID={}",
            one_line(status),
            std::process::id()
        ));
    }

    /// `RELOADING=1`: a SIGHUP reload starts; [`Notifier::ready`] ends it.
    pub(crate) fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC={}",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`: shutdown started; open requests are draining.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: draining open requests");
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        if let Err(e) = send_to(target, message.as_bytes())
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            #[allow(clippy::print_stderr, reason = "the server's own stderr lines")]
            {
                eprintln!(
                    "vch-admin: warning: cannot notify the service manager ({NOTIFY_SOCKET}): {e}"
                );
            }
        }
    }
}

fn send_to(target: &Target, message: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match target {
        Target::Path(path) => socket.send_to(message, path)?,
        Target::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message, &addr)?
        }
    };
    Ok(())
}

/// `STATUS=` holds one line: the protocol separates fields by newlines.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_socket_means_no_manager() {
        assert!(Notifier::for_socket(None).target.is_none());
        assert!(Notifier::for_socket(Some("".as_ref())).target.is_none());
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::for_socket(Some(path.as_os_str()));
        n.ready("serving\non 127.0.0.1:2376");
        n.reloading();
        n.stopping();
        let mut buf = [0u8; 512];
        let len = listener.recv(&mut buf).unwrap();
        let ready = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(
            ready.starts_with("READY=1\nSTATUS=serving on 127.0.0.1:2376\nMAINPID="),
            "{ready}"
        );
        let len = listener.recv(&mut buf).unwrap();
        let reloading = std::str::from_utf8(&buf[..len]).unwrap();
        let usec: u64 = reloading
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            reloading.starts_with("RELOADING=1\n") && usec > 0,
            "{reloading}"
        );
        let len = listener.recv(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"STOPPING=1\n"));
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("vch-admin-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::for_socket(Some(format!("@{name}").as_ref()));
        n.stopping();
        let mut buf = [0u8; 128];
        let len = listener.recv(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"STOPPING=1\n"));
    }

    #[test]
    fn a_gone_manager_does_not_stop_the_caller() {
        let n = Notifier::for_socket(Some("/nonexistent/notify".as_ref()));
        n.ready("x");
        n.ready("x");
        assert!(n.failed.load(Ordering::Relaxed));
    }
}
