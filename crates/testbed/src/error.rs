//! The one error type of the testbed.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting, using or stopping a component.
///
/// Start failures carry the tail of the component's log file, so a failing test shows why the
/// daemon did not come up without anyone having to find the temp dir.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required program is not installed; the message names the Debian package to install.
    #[error("{binary} not found: apt-get install {package}")]
    MissingBinary {
        /// The program looked for in `PATH` (and `/usr/sbin`, `/sbin`).
        binary: String,
        /// The Debian package that ships it.
        package: String,
    },
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path or address involved.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A component did not become ready within its start timeout.
    #[error(
        "{component} not ready after {timeout:?}: {last}\n--- tail of {} ---\n{log_tail}",
        log.display()
    )]
    Timeout {
        /// The component (`dockerd`, `docker-registry`, `dnsmasq`, ...).
        component: String,
        /// How long we waited.
        timeout: Duration,
        /// The last readiness probe failure.
        last: String,
        /// The component's log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
    /// A component exited while starting.
    #[error("{component} exited during start ({status})\n--- tail of {} ---\n{log_tail}", log.display())]
    Exited {
        /// The component.
        component: String,
        /// Its exit status.
        status: String,
        /// The component's log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
    /// A helper command (such as `docker import` or `htpasswd`) failed.
    #[error("{command} failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr (and stdout when stderr is empty), trimmed.
        output: String,
    },
    /// An HTTP exchange failed or answered something unexpected.
    #[error("{method} {url}: {reason}")]
    Http {
        /// The request method.
        method: String,
        /// The request URL.
        url: String,
        /// What went wrong (transport error or unexpected status with body).
        reason: String,
    },
    /// A DNS exchange failed or the answer could not be parsed.
    #[error("dns query {name} via {server}: {reason}")]
    Dns {
        /// The queried name.
        name: String,
        /// The server queried.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// A value passed to the testbed is not usable.
    #[error("invalid {what}: {value}")]
    Invalid {
        /// What kind of value.
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// TLS configuration for the HTTP client could not be built.
    #[error("tls configuration ({what}): {reason}")]
    Tls {
        /// The file or setting involved.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn http(method: &str, url: &str, reason: impl Into<String>) -> Self {
        Self::Http {
            method: method.to_owned(),
            url: url.to_owned(),
            reason: reason.into(),
        }
    }

    /// Whether this start failure looks like a lost race for a free port, worth a retry on
    /// another port.
    pub(crate) fn is_port_clash(&self) -> bool {
        match self {
            Self::Exited { log_tail, .. } | Self::Timeout { log_tail, .. } => {
                let t = log_tail.to_ascii_lowercase();
                t.contains("address already in use") || t.contains("address in use")
            }
            _ => false,
        }
    }
}

/// The testbed's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
