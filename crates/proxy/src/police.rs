//! Deciding, auditing and refusing, in one place for every gate: a policed request is read into
//! what it asks ([`Gate::ask`]), each item is decided against the pull policy or the push rule, the
//! audit record gets the decision, and a denial becomes a Docker-style 403 before dockerd sees a
//! byte of the request. In `audit` mode the same decisions are made and logged, and the request
//! goes through.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Response, StatusCode};
use vch_policy::{Decision, EnforcementMode, Policy, PushRule};

use crate::audit::{Audit, PolicyRecord, Verdict};
use crate::error::docker_error;
use crate::gate::{self, Action, Ask, Gate, Item, Subject, Unsourced};
use crate::service::Body;
use crate::settings::{Scope, Settings};

/// The most body bytes a gate reads to decide (a login or a service spec is a few KiB). A larger
/// body is refused with 413: it is never forwarded uninspected.
const MAX_INSPECTED_BODY: usize = 1024 * 1024;

/// What a policed request becomes: the body to forward, or the answer that refuses it.
pub(crate) enum Policed {
    /// Forward the body.
    Forward(Forwarded),
    /// Refused before dockerd saw it; what is left of the body is to be discarded
    /// ([`crate::service::discard`]).
    Refuse(Response<Body>, Option<Incoming>),
}

/// The body of a request that goes through.
pub(crate) enum Forwarded {
    /// The exact bytes the gate read and decided on.
    Read(Bytes),
    /// The client's body, streamed: the gate decided on the head alone.
    Stream(Incoming),
    /// A build context, streamed while it is read (see [`crate::build`]).
    Build(crate::build::Upload),
}

/// Polices one request on a gated route.
pub(crate) async fn police(
    settings: &Settings,
    scope: &Scope,
    gate: Gate,
    routed: &crate::route::Routed,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    audit: &std::sync::Arc<Audit>,
) -> Policed {
    let endpoint = routed.endpoint.as_str();
    if is_form_body(&parts.headers) {
        // dockerd merges a form body into the parameters ahead of the query string: one request
        // would then mean two things.
        let message = format!(
            "form-encoded and multipart bodies are not accepted on {}: pass parameters in the query string",
            gate.name()
        );
        return Policed::Refuse(docker_error(StatusCode::BAD_REQUEST, &message), Some(body));
    }
    let form = gate::parse_query(parts.uri.query().unwrap_or(""));
    let forwarded = if gate.reads_body() {
        match read_body(gate, &parts.headers, body).await {
            Ok(bytes) => {
                audit.add_in(bytes.len() as u64);
                Forwarded::Read(bytes)
            }
            Err((refusal, unread)) => return Policed::Refuse(refusal, unread),
        }
    } else {
        Forwarded::Stream(body)
    };
    let read: &[u8] = match &forwarded {
        Forwarded::Read(bytes) => bytes,
        Forwarded::Stream(_) | Forwarded::Build(_) => &[],
    };
    let ask = if gate == Gate::ServiceUpdate && gate::form_get(&form, "rollback") == "previous" {
        // dockerd replaces the spec with the service's previous one: that is what is deployed.
        Ok(previous_spec(settings, endpoint).await)
    } else {
        gate.ask(endpoint, &form, read)
    };
    let ask = match ask {
        // A build from the client's context: the context is read as it streams.
        Ok(Ask::Nothing) if gate == Gate::Build => {
            if let Forwarded::Stream(body) = forwarded {
                return crate::build::police(
                    settings,
                    scope,
                    routed.version,
                    parts,
                    &form,
                    body,
                    audit,
                )
                .await;
            }
            Ask::Nothing
        }
        Ok(ask) => ask,
        Err(message) => {
            if let Some(metrics) = audit.metrics() {
                metrics.invalid(gate.name());
            }
            audit.set_policy(PolicyRecord {
                route: gate.name(),
                mode: settings.mode.as_str(),
                verdict: Verdict {
                    action: "invalid",
                    decision: message.clone(),
                    ..Verdict::default()
                },
                ..PolicyRecord::default()
            });
            return Policed::Refuse(
                docker_error(StatusCode::BAD_REQUEST, &message),
                forwarded.into_unread(),
            );
        }
    };
    match decide(settings, scope, gate, &ask, audit).await {
        Some(refusal) => Policed::Refuse(refusal, forwarded.into_unread()),
        None => Policed::Forward(forwarded),
    }
}

impl Forwarded {
    fn into_unread(self) -> Option<Incoming> {
        match self {
            Forwarded::Read(_) | Forwarded::Build(_) => None,
            Forwarded::Stream(body) => Some(body),
        }
    }
}

/// `POST /services/{id}/update?rollback=previous` deploys the service's previous spec, which was
/// decided when it was deployed, perhaps under a wider whitelist or by another way in: it is asked
/// from the engine and decided again. A service or spec the engine does not have asks nothing
/// (dockerd refuses the rollback itself).
async fn previous_spec(settings: &Settings, endpoint: &str) -> Ask {
    let Ok(id) = gate::name_in(endpoint, "/services/", "/update") else {
        return Ask::Nothing;
    };
    let path = format!("/services/{}", percent_encode_segment(id));
    let Ok(answer) = crate::api::engine_get(&settings.upstream, &path).await else {
        return Ask::Nothing;
    };
    let Ok(service) = serde_json::from_slice::<serde_json::Value>(&answer) else {
        return Ask::Nothing;
    };
    // The engine's own JSON: no duplicate keys or case games to read the Go way.
    let spec = serde_json::to_vec(&service["PreviousSpec"]).unwrap_or_default();
    match Gate::ServiceUpdate.ask(endpoint, &[], &spec) {
        Ok(ask) => ask,
        Err(_) => Ask::Nothing,
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
fn percent_encode_segment(segment: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decides every item of an ask, records the decision, and returns the refusal in enforce mode.
async fn decide(
    settings: &Settings,
    scope: &Scope,
    gate: Gate,
    ask: &Ask,
    audit: &Audit,
) -> Option<Response<Body>> {
    let verdicts: Vec<(Verdict, Option<String>)> = match ask {
        Ask::Nothing => return None,
        Ask::Unsupported(reason) => {
            if let Some(metrics) = audit.metrics() {
                metrics.invalid(gate.name());
            }
            audit.set_policy(PolicyRecord {
                route: gate.name(),
                mode: settings.mode.as_str(),
                verdict: Verdict {
                    action: "unsupported",
                    decision: (*reason).to_owned(),
                    ..Verdict::default()
                },
                ..PolicyRecord::default()
            });
            return Some(docker_error(StatusCode::BAD_REQUEST, reason));
        }
        Ask::Unsourced(unsourced) => {
            // A project's list is a whitelist: its clients are restricted like a whitelist's.
            let restricted = scope.project().is_some()
                || match unsourced {
                    Unsourced::PluginPushById => {
                        settings.policy.whitelist_mode()
                            || !matches!(settings.push, PushRule::SameAsPull)
                    }
                    _ => settings.policy.whitelist_mode(),
                };
            let allowed = !restricted;
            let message = in_project(Some(unsourced.denial_message()), scope).unwrap_or_default();
            vec![(
                Verdict {
                    action: unsourced.action(),
                    image: String::new(),
                    registry: None,
                    entry: None,
                    allowed,
                    decision: if allowed {
                        "not restricted: whitelist mode is off".to_owned()
                    } else {
                        message.clone()
                    },
                },
                (!allowed).then_some(message),
            )]
        }
        Ask::Items(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(decide_item(settings, scope, item).await);
            }
            out
        }
    };
    conclude(settings, gate, verdicts, audit)
}

/// Records the decisions on a request's items (at least one) and returns the refusal in enforce
/// mode: the first denial decides, its message is what the client reads.
pub(crate) fn conclude(
    settings: &Settings,
    gate: Gate,
    mut verdicts: Vec<(Verdict, Option<String>)>,
    audit: &Audit,
) -> Option<Response<Body>> {
    if verdicts.is_empty() {
        return None;
    }
    if let Some(metrics) = audit.metrics() {
        metrics.decided(settings, gate.name(), verdicts.iter().map(|(v, _)| v));
    }
    let denied = verdicts.iter().position(|(v, _)| !v.allowed);
    let deciding = denied.unwrap_or(verdicts.len().saturating_sub(1));
    let others = if verdicts.len() > 1 {
        verdicts.iter().map(|(v, _)| v.clone()).collect()
    } else {
        Vec::new()
    };
    let (verdict, message) = verdicts.swap_remove(deciding);
    let enforce = settings.mode == EnforcementMode::Enforce;
    let would_deny = !enforce && message.is_some();
    if would_deny {
        tracing::warn!(
            route = gate.name(),
            image = %verdict.image,
            "policy mode audit: would deny: {}",
            message.as_deref().unwrap_or_default()
        );
    } else {
        tracing::debug!(route = gate.name(), image = %verdict.image, decision = %verdict.decision, "decided");
    }
    audit.set_policy(PolicyRecord {
        route: gate.name(),
        mode: settings.mode.as_str(),
        verdict,
        others,
        would_deny,
    });
    match message {
        Some(message) if enforce => Some(docker_error(StatusCode::FORBIDDEN, &message)),
        _ => None,
    }
}

/// Decides one item: pushes by the push rule, everything else by the pull policy; then, for a
/// client of a project, by the project's list too (the effective policy is their intersection).
/// Returns the verdict and, for a denial, the message the client gets, naming the project.
pub(crate) async fn decide_item(
    settings: &Settings,
    scope: &Scope,
    item: &Item,
) -> (Verdict, Option<String>) {
    let policy = match (&item.action, &settings.push, scope) {
        (_, _, Scope::Unknown(project)) => {
            return (
                Verdict {
                    action: item.action.as_str(),
                    image: item.subject.to_string(),
                    registry: Some(item.subject.registry().to_string()),
                    entry: None,
                    allowed: false,
                    decision: format!("project {project} is not configured on this VCH"),
                },
                Some(format!(
                    "Access denied: the client's project {project} is not configured on this VCH"
                )),
            );
        }
        (Action::Push, PushRule::Nowhere, _) => {
            return (
                Verdict {
                    action: item.action.as_str(),
                    image: item.subject.to_string(),
                    registry: Some(item.subject.registry().to_string()),
                    entry: None,
                    allowed: false,
                    decision: "pushes are disabled: the push list is empty".to_owned(),
                },
                Some("Access denied: pushes are disabled on this VCH".to_owned()),
            );
        }
        (Action::Push, PushRule::List(push), _) => PolicyUse::PushList(push),
        _ => PolicyUse::Pull(&settings.policy),
    };
    let mut decision = decide_with(policy.get(), settings, item).await;
    let mut by_project = false;
    if let (true, Scope::Project(project)) = (decision.is_allowed(), scope) {
        let narrowed = decide_with(project.list(), settings, item).await;
        if !narrowed.is_allowed() {
            decision = narrowed;
            by_project = true;
        }
    }
    let message = in_project(denial(&decision, &policy), scope);
    let mut text = match policy {
        PolicyUse::PushList(_) if by_project => {
            format!("not in the project's list: {}", decision.registry())
        }
        PolicyUse::PushList(_) if !decision.is_allowed() => {
            format!("not in the push list: {}", decision.registry())
        }
        PolicyUse::PushList(_) => format!("push list: {decision}"),
        PolicyUse::Pull(_) => decision.to_string(),
    };
    if let (false, Some(project)) = (decision.is_allowed(), scope.project()) {
        text = format!("{text} (project {project})");
    }
    (
        Verdict {
            action: item.action.as_str(),
            image: item.subject.to_string(),
            registry: Some(decision.registry().to_string()),
            entry: decision.entry().map(ToString::to_string),
            allowed: decision.is_allowed(),
            decision: text,
        },
        message,
    )
}

/// One policy's decision on an item, with reverse DNS when the settings have it.
async fn decide_with<'a>(
    policy: &'a Policy,
    settings: &'a Settings,
    item: &'a Item,
) -> Decision<'a> {
    match &item.subject {
        Subject::Image(image) => match &settings.dns {
            Some(dns) => policy.decide_resolving(image, dns).await,
            None => policy.decide(image),
        },
        Subject::Registry(registry) => match &settings.dns {
            Some(dns) => policy.decide_at_resolving(registry, None, dns).await,
            None => policy.decide_registry(registry),
        },
    }
}

/// A denial message, naming the client's project when it has one: ` (project P)` is appended.
fn in_project(message: Option<String>, scope: &Scope) -> Option<String> {
    match (message, scope.project()) {
        (Some(message), Some(project)) => Some(format!("{message} (project {project})")),
        (message, _) => message,
    }
}

/// Which policy decided.
enum PolicyUse<'a> {
    Pull(&'a Policy),
    PushList(&'a Policy),
}

impl PolicyUse<'_> {
    fn get(&self) -> &Policy {
        match self {
            PolicyUse::Pull(p) | PolicyUse::PushList(p) => p,
        }
    }
}

fn denial(decision: &Decision<'_>, policy: &PolicyUse<'_>) -> Option<String> {
    match policy {
        PolicyUse::Pull(_) => decision.denial_message(),
        PolicyUse::PushList(_) => (!decision.is_allowed()).then(|| {
            format!(
                "Access denied to unauthorized registry ({}) for push: not in the VCH's push list",
                decision.registry()
            )
        }),
    }
}

/// Reads a body a gate decides on, up to [`MAX_INSPECTED_BODY`]. A refusal hands back what is
/// left of the body, to be discarded.
async fn read_body(
    gate: Gate,
    headers: &HeaderMap,
    mut body: Incoming,
) -> Result<Bytes, (Response<Body>, Option<Incoming>)> {
    let too_large = || {
        let message = format!(
            "the request body is larger than the {} KiB this VCH inspects on {}",
            MAX_INSPECTED_BODY / 1024,
            gate.name()
        );
        docker_error(StatusCode::PAYLOAD_TOO_LARGE, &message)
    };
    // hyper has already refused a Content-Length that is invalid or given twice differently.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_INSPECTED_BODY as u64) {
        return Err((too_large(), Some(body)));
    }
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) => {
                let message = "the request body ended before it was complete";
                return Err((docker_error(StatusCode::BAD_REQUEST, message), None));
            }
        };
        if let Some(data) = frame.data_ref() {
            if read.len() + data.len() > MAX_INSPECTED_BODY {
                return Err((too_large(), Some(body)));
            }
            read.extend_from_slice(data);
        }
    }
    Ok(read.freeze())
}

/// Whether dockerd would read the body as a form (`application/x-www-form-urlencoded`, which Go's
/// `ParseForm` merges ahead of the query) or a multipart form. Every `Content-Type` field is
/// looked at, in any case and with any parameters.
fn is_form_body(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_TYPE).iter().any(|v| {
        let v = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
        v.contains("x-www-form-urlencoded") || v.trim_start().starts_with("multipart/")
    })
}
