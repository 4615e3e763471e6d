//! What the VCH asks the engine about a build's base images before it lets the build through:
//! their `ONBUILD` triggers (an image inspect), after pulling a base the engine does not have yet
//! (the pull the policy has just allowed: the classic builder would pull it and run its triggers
//! straight away, before the VCH could see them).

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use vch_policy::ImageRef;

use crate::route::ApiVersion;
use crate::upstream::Upstream;

/// An inspect is one small answer.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A pull moves layers: it may take long, but not for ever.
const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The most of an inspect answer read (an image's config with a long history is tens of KiB).
const MAX_INSPECT: usize = 4 * 1024 * 1024;

/// The `ONBUILD` triggers of `image` in the engine, or `None` when the engine does not have it.
pub(crate) async fn triggers(
    upstream: &Upstream,
    version: ApiVersion,
    image: &ImageRef,
) -> Result<Option<Vec<String>>, String> {
    let path = format!("/v{version}/images/{}/json", image.as_str());
    let call = call(upstream, Method::GET, &path, None);
    let (response, _driver) = tokio::time::timeout(INSPECT_TIMEOUT, call)
        .await
        .map_err(|_| format!("the Docker engine did not answer the inspect of {image}"))??;
    match response.status() {
        StatusCode::NOT_FOUND => return Ok(None),
        StatusCode::OK => {}
        status => {
            return Err(format!(
                "the Docker engine answered the inspect of {image} with {status}"
            ));
        }
    }
    let body = Limited::new(response.into_body(), MAX_INSPECT)
        .collect()
        .await
        .map_err(|e| format!("cannot read the Docker engine's inspect of {image}: {e}"))?
        .to_bytes();
    onbuild_of(&body).map(Some)
}

/// `Config.OnBuild` of an image inspect answer (`null` when the image has none).
fn onbuild_of(inspect: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Inspect {
        #[serde(rename = "Config")]
        config: Option<Config>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "OnBuild")]
        on_build: Option<Vec<String>>,
    }
    let inspect: Inspect = serde_json::from_slice(inspect)
        .map_err(|e| format!("the Docker engine's image inspect is unreadable: {e}"))?;
    Ok(inspect.config.and_then(|c| c.on_build).unwrap_or_default())
}

/// Pulls `image` through the engine, as the classic builder would, with the registry credentials
/// the build carried for its registry. Progress is read and dropped; an error in it fails the pull.
pub(crate) async fn pull(
    upstream: &Upstream,
    version: ApiVersion,
    image: &ImageRef,
    platform: &str,
    auth: Option<&str>,
) -> Result<(), String> {
    let tag = image.digest().or(image.tag()).unwrap_or("latest");
    let mut path = format!(
        "/v{version}/images/create?fromImage={}&tag={}",
        query_escape(image.name_str()),
        query_escape(tag)
    );
    if !platform.is_empty() {
        path.push_str("&platform=");
        path.push_str(&query_escape(platform));
    }
    let work = async {
        let (response, _driver) = call(upstream, Method::POST, &path, auth).await?;
        let status = response.status();
        let mut body = response.into_body();
        // Progress is JSON lines; the error, if any, is in the last one. Keep only a tail.
        let mut tail: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the pull of {image} broke off: {e}"))?;
            if let Some(data) = frame.data_ref() {
                tail.extend_from_slice(data);
                if tail.len() > 64 * 1024 {
                    let cut = tail.len() - 16 * 1024;
                    tail.drain(..cut);
                }
            }
        }
        let message = last_error(&tail);
        match (status, message) {
            (StatusCode::OK, None) => Ok(()),
            (_, Some(message)) => Err(message),
            (status, None) => Err(format!("the Docker engine answered {status}")),
        }
    };
    match tokio::time::timeout(PULL_TIMEOUT, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(format!(
            "pulling {image} to read its ONBUILD triggers failed: {message}"
        )),
        Err(_) => Err(format!("pulling {image} took longer than {PULL_TIMEOUT:?}")),
    }
}

/// The `error` (or `message`) of the last JSON object in a pull's progress or error answer.
fn last_error(tail: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(tail);
    for line in text.lines().rev() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            continue;
        };
        for key in ["error", "message"] {
            if let Some(message) = value.get(key).and_then(|m| m.as_str()) {
                return Some(message.to_owned());
            }
        }
        return None;
    }
    None
}

/// The credentials the build carries for `image`'s registry (`X-Registry-Config`, a base64 JSON
/// map of registry to auth config), as `X-Registry-Auth` for its pull: dockerd's
/// `ResolveAuthConfig` — the Hub under `https://index.docker.io/v1/`, others by host name, also
/// when the key is written as a URL.
pub(crate) fn registry_auth(config: Option<&[u8]>, image: &ImageRef) -> Option<String> {
    let decoded = decode_base64(config?)?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&decoded).ok()?;
    let registry = image.registry().to_string();
    let hub = registry == "docker.io";
    let wanted = if hub {
        "https://index.docker.io/v1/"
    } else {
        registry.as_str()
    };
    let found = map.get(wanted).or_else(|| {
        map.iter()
            .find(|(key, _)| {
                let host = hostname_of(key);
                host == wanted || (hub && host == "index.docker.io")
            })
            .map(|(_, v)| v)
    })?;
    let json = serde_json::to_vec(found).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE.encode(json))
}

/// dockerd's `ConvertToHostname`: the key without its scheme and path.
fn hostname_of(key: &str) -> &str {
    let key = key
        .strip_prefix("http://")
        .or_else(|| key.strip_prefix("https://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Base64 as Go's URL-safe decoder reads it, accepting the standard alphabet and missing padding
/// too (clients differ).
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    URL_SAFE_NO_PAD
        .decode(&trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(&trimmed))
        .ok()
}

fn query_escape(value: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Aborts the connection's task when the answer is done with.
pub(crate) struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One request to the engine on a connection of its own.
async fn call(
    upstream: &Upstream,
    method: Method,
    path: &str,
    auth: Option<&str>,
) -> Result<(Response<Incoming>, Driver), String> {
    let url = upstream.url();
    let stream = upstream
        .connect()
        .await
        .map_err(|e| format!("cannot reach the Docker engine at {url}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("cannot talk to the Docker engine at {url}: {e}"))?;
    let driver = Driver(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "docker");
    if let Some(auth) = auth {
        request = request.header("X-Registry-Auth", auth);
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| format!("cannot ask the Docker engine {path}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the Docker engine at {url} failed: {e}"))?;
    Ok((response, driver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onbuild_is_read_from_the_config() {
        let with = br#"{"Id":"sha256:x","Config":{"OnBuild":["COPY --from=a / /","RUN x"]}}"#;
        assert_eq!(onbuild_of(with).unwrap(), ["COPY --from=a / /", "RUN x"]);
        assert!(
            onbuild_of(br#"{"Config":{"OnBuild":null}}"#)
                .unwrap()
                .is_empty()
        );
        assert!(onbuild_of(br#"{"Config":null}"#).unwrap().is_empty());
        assert!(onbuild_of(b"not json").is_err());
    }

    #[test]
    fn the_last_progress_line_tells_the_error() {
        let ok = b"{\"status\":\"Pulling\"}\n{\"status\":\"Digest: sha256:x\"}\n";
        assert_eq!(last_error(ok), None);
        let failed = b"{\"status\":\"Pulling\"}\n{\"errorDetail\":{\"message\":\"boom\"},\"error\":\"boom\"}\n";
        assert_eq!(last_error(failed).as_deref(), Some("boom"));
        assert_eq!(
            last_error(b"{\"message\":\"pull access denied\"}").as_deref(),
            Some("pull access denied")
        );
    }

    #[test]
    fn credentials_are_found_as_dockerd_resolves_them() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        let config = b64(
            r#"{"https://index.docker.io/v1/":{"username":"hub"},"reg.x:5000":{"username":"r"},"https://other.y/v2/":{"username":"o"}}"#,
        );
        let auth = |image: &str| {
            registry_auth(Some(config.as_bytes()), &ImageRef::parse(image).unwrap()).map(|a| {
                let json = decode_base64(a.as_bytes()).unwrap();
                String::from_utf8(json).unwrap()
            })
        };
        assert_eq!(auth("busybox").as_deref(), Some(r#"{"username":"hub"}"#));
        assert_eq!(
            auth("reg.x:5000/a/b:1").as_deref(),
            Some(r#"{"username":"r"}"#)
        );
        assert_eq!(auth("other.y/a").as_deref(), Some(r#"{"username":"o"}"#));
        assert_eq!(auth("none.z/a"), None);
        assert_eq!(registry_auth(None, &ImageRef::parse("a").unwrap()), None);
        assert_eq!(
            registry_auth(Some(b"%%%"), &ImageRef::parse("a").unwrap()),
            None
        );
    }
}
