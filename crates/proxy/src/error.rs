//! The crate's error type, and Docker-shaped error responses.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode, header};

use crate::service::Body;

/// Why the endpoint cannot start or reload. Per-connection and per-request failures are not
/// errors of this type: they are logged, audited and answered with Docker-style JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address (or socket path).
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The upstream Docker host URL is not usable.
    #[error("invalid docker host `{url}`: {reason}")]
    DockerHost {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A TLS file or setting is unusable.
    #[error("TLS configuration: {0}")]
    Tls(#[from] vch_pki::Error),
    /// The registry policy is unusable.
    #[error("registry policy: {0}")]
    Policy(#[from] vch_policy::Error),
    /// A unix socket path could not be prepared.
    #[error("cannot prepare unix socket {}: {source}", path.display())]
    UnixSocket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A Docker-style error: JSON `{"message": …}` with the given status, so the CLI prints
/// `Error response from daemon: …`.
pub(crate) fn docker_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
