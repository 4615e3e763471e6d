//! The API versions a VCH accepts: from 1.24 up to a ceiling, the lower of the engine's own
//! maximum and the highest version the gate has been audited for (optionally pinned lower, as
//! VIC's 1.25). Requests keep the version they asked for; unversioned paths are served as the
//! ceiling. The audit is in the crate's manual ("API versions").

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::route::ApiVersion;
use crate::upstream::Upstream;

/// The oldest version accepted: the oldest docker-py speaks, and the lowest a 29.x daemon can be
/// set to accept (`DOCKER_MIN_API_VERSION`).
pub const MIN_API_VERSION: ApiVersion = ApiVersion::new(1, 24);
/// The version VIC's VCH spoke; `vch-admin create --api-version 1.25` pins the ceiling to it.
pub const VIC_API_VERSION: ApiVersion = ApiVersion::new(1, 25);
/// The highest version whose routes and parameters the gate has been audited for (the table in
/// the manual). A newer engine is served at this version; routes added after it are refused.
pub const AUDITED_API_VERSION: ApiVersion = ApiVersion::new(1, 55);

/// What the engine says of itself in `GET /version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineApi {
    /// `ApiVersion`: the newest it serves.
    pub max: ApiVersion,
    /// `MinAPIVersion`: the oldest it serves.
    pub min: ApiVersion,
}

/// The versions accepted right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    /// The oldest: the higher of [`MIN_API_VERSION`] and the engine's minimum.
    pub floor: ApiVersion,
    /// The newest: the lowest of [`AUDITED_API_VERSION`], the engine's maximum and the pin.
    pub ceiling: ApiVersion,
}

impl ApiRange {
    /// The range for an engine (`None`: not known yet) and an optional pin.
    pub fn new(engine: Option<EngineApi>, pin: Option<ApiVersion>) -> ApiRange {
        let mut ceiling = AUDITED_API_VERSION;
        let mut floor = MIN_API_VERSION;
        if let Some(engine) = engine {
            ceiling = ceiling.min(engine.max);
            floor = floor.max(engine.min);
        }
        if let Some(pin) = pin {
            ceiling = ceiling.min(pin);
        }
        ApiRange { floor, ceiling }
    }

    /// Every version the gate knows: [`MIN_API_VERSION`] to [`AUDITED_API_VERSION`].
    pub fn audited() -> ApiRange {
        ApiRange::new(None, None)
    }

    /// Whether no version is left (an engine whose minimum is above the pin).
    pub fn is_empty(&self) -> bool {
        self.floor > self.ceiling
    }
}

impl std::fmt::Display for ApiRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to {}", self.floor, self.ceiling)
    }
}

/// A range with what every request needs from it made once: the `Api-Version` header and the
/// prefix of unversioned paths.
#[derive(Debug)]
pub(crate) struct ApiView {
    pub(crate) range: ApiRange,
    /// The engine's versions; `None` until it answered.
    pub(crate) engine: Option<EngineApi>,
    /// The engine answered `/version` (usably or not): it is not asked again until a reload or
    /// until it was unreachable.
    pub(crate) asked: bool,
    pub(crate) header: HeaderValue,
    pub(crate) prefix: Arc<str>,
}

impl ApiView {
    pub(crate) fn new(range: ApiRange, engine: Option<EngineApi>, asked: bool) -> ApiView {
        let ceiling = range.ceiling.to_string();
        ApiView {
            range,
            engine,
            asked,
            // Digits and a dot.
            header: HeaderValue::from_str(&ceiling)
                .unwrap_or_else(|_| HeaderValue::from_static("1.24")),
            prefix: format!("/v{ceiling}").into(),
        }
    }
}

/// The largest answer read by [`engine_get`].
const MAX_VERSION_BODY: usize = 1024 * 1024;

/// Why the engine's versions are not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The engine could not be reached or did not answer: ask again later.
    Unreachable(String),
    /// It answered, but not with a usable `/version`: asking again will not help.
    Unusable(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Unreachable(why) | ProbeError::Unusable(why) => f.write_str(why),
        }
    }
}

/// Reads the engine's `ApiVersion` and `MinAPIVersion` from its unversioned `GET /version` (the
/// daemon answers it at its own newest version). An engine too old to say `MinAPIVersion`
/// (before API 1.25) is taken to accept everything up to its maximum.
pub async fn probe_engine(upstream: &Upstream) -> Result<EngineApi, ProbeError> {
    let answer = engine_get(upstream, "/version").await?;
    parse_version_answer(&answer).map_err(ProbeError::Unusable)
}

/// How long the endpoint's own questions to the engine may take: requests wait on the first one,
/// so an engine that accepts and never answers must not hold them for ever.
const QUESTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One `GET` to the engine on a connection of its own, for the endpoint's own questions (its
/// versions, a service's previous spec); the answer must be a 200 of at most 1 MiB, within
/// [`QUESTION_TIMEOUT`].
pub(crate) async fn engine_get(upstream: &Upstream, path: &str) -> Result<Bytes, ProbeError> {
    engine_get_within(upstream, path, QUESTION_TIMEOUT).await
}

async fn engine_get_within(
    upstream: &Upstream,
    path: &str,
    limit: std::time::Duration,
) -> Result<Bytes, ProbeError> {
    match tokio::time::timeout(limit, ask_engine(upstream, path)).await {
        Ok(answer) => answer,
        Err(_) => Err(ProbeError::Unreachable(format!(
            "the Docker engine at {} did not answer {path} within {limit:?}",
            upstream.url()
        ))),
    }
}

async fn ask_engine(upstream: &Upstream, path: &str) -> Result<Bytes, ProbeError> {
    let url = upstream.url();
    let unreachable = ProbeError::Unreachable;
    let stream = upstream
        .connect()
        .await
        .map_err(|e| unreachable(format!("cannot reach the Docker engine at {url}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(format!("cannot talk to the Docker engine at {url}: {e}")))?;
    // The connection's task ends with this function, also when the timeout drops it.
    let _driver = AbortOnDrop(tokio::spawn(connection));
    let request = Request::get(path)
        .header(hyper::header::HOST, "docker")
        .body(Empty::new())
        .map_err(|e| ProbeError::Unusable(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(format!("the Docker engine at {url} failed: {e}")))?;
    if response.status() != StatusCode::OK {
        return Err(ProbeError::Unusable(format!(
            "the Docker engine at {url} answered {path} with {}",
            response.status()
        )));
    }
    Limited::new(response.into_body(), MAX_VERSION_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| unreachable(format!("cannot read the Docker engine's {path}: {e}")))
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `ApiVersion` and `MinAPIVersion` of a `/version` answer.
pub(crate) fn parse_version_answer(body: &[u8]) -> Result<EngineApi, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the Docker engine's /version is not JSON: {e}"))?;
    let version = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_str)
            .and_then(ApiVersion::parse)
    };
    let max =
        version("ApiVersion").ok_or("the Docker engine's /version has no usable ApiVersion")?;
    let min = version("MinAPIVersion")
        .unwrap_or(ApiVersion::new(1, 12))
        .min(max);
    Ok(EngineApi { max, min })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u16) -> ApiVersion {
        ApiVersion::new(1, minor)
    }

    #[test]
    fn the_range_is_the_narrowest_of_engine_audit_and_pin() {
        let engine_20_10 = EngineApi {
            max: v(41),
            min: v(12),
        };
        let engine_29 = EngineApi {
            max: v(55),
            min: v(44),
        };
        let newer = EngineApi {
            max: v(60),
            min: v(24),
        };
        assert_eq!(
            ApiRange::new(Some(engine_20_10), None),
            ApiRange {
                floor: v(24),
                ceiling: v(41)
            }
        );
        assert_eq!(
            ApiRange::new(Some(engine_29), None),
            ApiRange {
                floor: v(44),
                ceiling: v(55)
            }
        );
        assert_eq!(
            ApiRange::new(Some(newer), None).ceiling,
            AUDITED_API_VERSION
        );
        let pinned = ApiRange::new(Some(engine_20_10), Some(VIC_API_VERSION));
        assert_eq!((pinned.floor, pinned.ceiling), (v(24), v(25)));
        assert!(ApiRange::new(Some(engine_29), Some(VIC_API_VERSION)).is_empty());
        assert_eq!(ApiRange::new(None, None), ApiRange::audited());
    }

    /// An engine that accepts and never answers does not hold the endpoint's question for ever.
    #[test]
    fn a_silent_engine_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("silent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let holder = std::thread::spawn(move || listener.accept().map(|(conn, _)| conn));
        let upstream = Upstream::parse(&format!("unix://{}", socket.display()), None).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let limit = std::time::Duration::from_millis(300);
        let answer = runtime.block_on(engine_get_within(&upstream, "/version", limit));
        assert!(
            matches!(&answer, Err(ProbeError::Unreachable(why)) if why.contains("did not answer")),
            "{answer:?}"
        );
        drop(holder.join());
    }

    #[test]
    fn version_answers() {
        let answer = br#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}"#;
        assert_eq!(
            parse_version_answer(answer),
            Ok(EngineApi {
                max: v(41),
                min: v(12)
            })
        );
        assert_eq!(
            parse_version_answer(br#"{"ApiVersion":"1.24"}"#).map(|e| e.min),
            Ok(v(12))
        );
        assert!(parse_version_answer(b"{}").is_err());
        assert!(parse_version_answer(b"OK").is_err());
        assert_eq!(
            ApiView::new(ApiRange::audited(), None, false)
                .prefix
                .as_ref(),
            "/v1.55"
        );
    }
}
