//! The Distribution registry's notification envelope (`notifications.endpoints[]`).

use serde::Deserialize;

/// The envelope's media type (Distribution `notifications.EventsMediaType`).
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// What an event asks of replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// A manifest was pushed (a tag created or moved).
    Push,
    /// A manifest or tag was deleted.
    Delete,
}

/// One event that matters to replication (pulls, mounts and blob pushes are dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Notification {
    /// Push or delete.
    pub action: Action,
    /// The repository at the registry that sent it.
    pub repository: String,
    /// The tag, when the event names one.
    pub tag: Option<String>,
    /// The `Host` the registry's client used (`request.host`), when sent.
    pub host: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    action: String,
    #[serde(default)]
    target: Target,
    #[serde(default)]
    request: Request,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Default, Deserialize)]
struct Request {
    #[serde(default)]
    host: Option<String>,
}

/// Parses an envelope (`{"events":[…]}`); keeps manifest pushes and deletes.
///
/// A push whose target is a blob (Distribution sends one per layer) is dropped: the manifest
/// push that follows names the tag.
///
/// # Errors
/// A reason when the body is not an envelope (the listener answers 400 with it).
pub fn parse_envelope(body: &[u8]) -> std::result::Result<Vec<Notification>, String> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| format!("not a notification envelope: {e}"))?;
    let mut out = Vec::new();
    for event in envelope.events {
        let action = match event.action.as_str() {
            "push" => Action::Push,
            "delete" => Action::Delete,
            _ => continue,
        };
        let Some(repository) = event.target.repository.filter(|r| !r.is_empty()) else {
            continue;
        };
        let is_manifest = event.target.tag.is_some()
            || event
                .target
                .media_type
                .as_deref()
                .is_some_and(|m| m.contains("manifest") || m.contains("index"));
        if action == Action::Push && !is_manifest {
            continue;
        }
        out.push(Notification {
            action,
            repository,
            tag: event.target.tag,
            host: event.request.host,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_envelope() {
        let body = br#"{"events":[
          {"id":"1","timestamp":"2026-01-01T00:00:00Z","action":"push",
           "target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":7,
             "digest":"sha256:ab","length":7,"repository":"team-a/app","url":"http://x","tag":"v1"},
           "request":{"id":"r","addr":"127.0.0.1:1","host":"127.0.0.1:5000","method":"PUT","useragent":"ua"},
           "actor":{},"source":{"addr":"h:5000","instanceID":"i"}},
          {"action":"push","target":{"mediaType":"application/octet-stream","repository":"team-a/app","digest":"sha256:cd"}},
          {"action":"pull","target":{"repository":"team-a/app","tag":"v1"}},
          {"action":"mount","target":{"repository":"team-a/app"}},
          {"action":"delete","target":{"repository":"team-a/app","digest":"sha256:ab"},"request":{"host":"h"}},
          {"action":"push","target":{}}
        ]}"#;
        let n = parse_envelope(body).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].action, Action::Push);
        assert_eq!(n[0].repository, "team-a/app");
        assert_eq!(n[0].tag.as_deref(), Some("v1"));
        assert_eq!(n[0].host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(n[1].action, Action::Delete);
        assert_eq!(n[1].tag, None);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"events\":{}}",
            b"{\"events\":[{}]}",
            b"\xff",
        ] {
            assert!(parse_envelope(body).is_err(), "{body:?}");
        }
        assert!(parse_envelope(b"{\"events\":[]}").unwrap().is_empty());
    }
}
