//! `POST /build`: the build context is read as it streams to dockerd, the Dockerfile found as
//! dockerd finds it ([`context`]) and parsed as its classic builder parses it ([`dockerfile`]),
//! and every image the build can pull (`FROM`, `COPY --from`, the base images' `ONBUILD`
//! triggers) decided before dockerd has received a byte of the body.
//!
//! The upload is held back (in a spool) only until the Dockerfile is found and decided, then
//! replayed and streamed on; the reader keeps reading what streams past, because a later tar
//! entry can replace the Dockerfile (the last one wins in dockerd's untar). Such a replacement is
//! decided before the bytes that complete it are forwarded; a denial then breaks the upload off,
//! so that dockerd, which reads the whole context before it parses the Dockerfile, never builds.

mod bases;
pub mod context;
pub mod dockerfile;
mod spool;

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::StatusCode;
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;
use vch_policy::{EnforcementMode, ImageRef};

use crate::audit::{Audit, BuildRecord, PolicyRecord, Verdict};
use crate::error::docker_error;
use crate::gate::{Action, Gate, Item, Subject, form_get};
use crate::police::{Forwarded, Policed, conclude, decide_item};
use crate::route::ApiVersion;
use crate::service::Body;
use crate::settings::{Scope, Settings};

use self::context::{ContextReader, Resolution};
use self::dockerfile::{How, Plan};
use self::spool::Spool;

/// The most bytes held back while a replaced Dockerfile's new bytes arrive, after the upload was
/// released.
const MAX_HELD_AFTER_RELEASE: usize = 16 * 1024 * 1024;

/// A build upload on its way to dockerd.
pub(crate) struct Upload {
    /// The body: the held-back start, then the rest as it streams.
    pub(crate) body: Body,
    /// Set when a Dockerfile that replaced the decided one was denied after the upload was
    /// released: the body then breaks off, and the client gets this message with a 403.
    pub(crate) late: Arc<OnceLock<String>>,
}

/// What a build asks besides its context: the query and the credentials it carries.
struct Request {
    /// The API version the build asked at: the VCH's own questions to the engine use it too.
    version: ApiVersion,
    build_args: BTreeMap<String, Option<String>>,
    /// `pull=1`: dockerd pulls every base again, and may then run other triggers.
    pull: bool,
    platform: String,
    /// `X-Registry-Config`.
    auth_config: Option<Vec<u8>>,
}

/// Polices `POST /build` with a context in the body.
pub(crate) async fn police(
    settings: &Settings,
    scope: &Scope,
    version: ApiVersion,
    parts: &hyper::http::request::Parts,
    form: &[(String, String)],
    mut body: Incoming,
    audit: &Arc<Audit>,
) -> Policed {
    let request = match Request::from(version, parts, form) {
        Ok(request) => request,
        Err(message) => {
            invalid(settings, audit, &message);
            return Policed::Refuse(docker_error(StatusCode::BAD_REQUEST, &message), Some(body));
        }
    };
    let param = form_get(form, "dockerfile");
    let enforce = settings.mode == EnforcementMode::Enforce;
    let mut spool = Spool::new(settings.build.dir.clone(), settings.build.limit);
    let mut reader = match ContextReader::new(param) {
        Ok(reader) => reader,
        Err(e) => {
            let refusal = unevaluable(settings, audit, &e.to_string());
            return refused_or_passed(refusal, spool, body, audit).await;
        }
    };

    // Hold the upload back until the Dockerfile is found (or the body ends).
    let mut ended = false;
    let found = loop {
        match reader.dockerfile() {
            Resolution::Found {
                generation,
                path,
                content,
            } => break (generation, path, content),
            Resolution::Unreadable { reason, .. } => {
                record_context(audit, &reader, "");
                let refusal = unevaluable(settings, audit, &reason);
                return refused_or_passed(refusal, spool, body, audit).await;
            }
            Resolution::Pending if ended => {
                record_context(audit, &reader, "");
                let shown = if param.is_empty() {
                    "Dockerfile"
                } else {
                    param
                };
                let reason = format!("Cannot locate specified Dockerfile: {shown}");
                let refusal = unevaluable(settings, audit, &reason);
                return refused_or_passed(refusal, spool, body, audit).await;
            }
            Resolution::Pending => {}
        }
        let fed = match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    audit.add_in(data.len() as u64);
                    let fed = reader.feed(&data).map_err(|e| e.to_string());
                    match spool.push(data).await {
                        Ok(()) => fed,
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(_) => Ok(()), // trailers
            },
            Some(Err(_)) => {
                let message = "the build context ended before it was complete";
                return Policed::Refuse(docker_error(StatusCode::BAD_REQUEST, message), None);
            }
            None => {
                ended = true;
                reader.finish().map_err(|e| e.to_string())
            }
        };
        if let Err(reason) = fed {
            record_context(audit, &reader, "");
            let refusal = unevaluable(settings, audit, &reason);
            return refused_or_passed(refusal, spool, body, audit).await;
        }
    };
    let (generation, path, content) = found;
    record_context(audit, &reader, &path);

    let verdicts = evaluate(settings, scope, &request, &path, &content).await;
    if let Some(refusal) = conclude(settings, Gate::Build, verdicts, audit) {
        return Policed::Refuse(refusal, (!ended).then_some(body));
    }
    let (replay, body) = match replay_or_refuse(spool, body).await {
        Ok(replayed) => replayed,
        Err(refused) => return refused,
    };
    let (tx, rx) = mpsc::channel(4);
    let late = Arc::new(OnceLock::new());
    let pump = Pump {
        settings: settings.clone(),
        scope: scope.clone(),
        request,
        audit: Arc::clone(audit),
        late: Arc::clone(&late),
        tx,
        reader: (!ended).then_some(reader),
        generation,
        enforce,
    };
    tokio::spawn(pump.run(replay, (!ended).then_some(body)));
    Policed::Forward(Forwarded::Build(Upload {
        body: http_body_util::BodyExt::boxed(Channel(rx)),
        late,
    }))
}

impl Request {
    fn from(
        version: ApiVersion,
        parts: &hyper::http::request::Parts,
        form: &[(String, String)],
    ) -> Result<Self, String> {
        let raw = form_get(form, "buildargs");
        let build_args = if raw.is_empty() {
            BTreeMap::new()
        } else {
            serde_json::from_str::<BTreeMap<String, Option<String>>>(raw)
                .map_err(|e| format!("error reading build args: {e}"))?
        };
        let pull = form_get(form, "pull").trim().to_ascii_lowercase();
        Ok(Request {
            version,
            build_args,
            pull: !matches!(pull.as_str(), "" | "0" | "no" | "false" | "none"),
            platform: form_get(form, "platform").to_owned(),
            auth_config: parts
                .headers
                .get("x-registry-config")
                .map(|v| v.as_bytes().to_vec()),
        })
    }
}

/// A build that cannot be evaluated is denied: records why, and returns the refusal in enforce
/// mode (in audit mode the build goes through unread, and the record says it would be denied).
fn unevaluable(settings: &Settings, audit: &Audit, reason: &str) -> Option<hyper::Response<Body>> {
    let message = format!("the VCH cannot evaluate this build, so it is denied: {reason}");
    let verdict = Verdict {
        action: "build",
        image: String::new(),
        registry: None,
        entry: None,
        allowed: false,
        decision: reason.to_owned(),
    };
    conclude(settings, Gate::Build, vec![(verdict, Some(message))], audit)
}

/// Starts giving the spool back; a spool that cannot be read back refuses the build.
async fn replay_or_refuse(
    spool: Spool,
    body: Incoming,
) -> Result<(spool::Replay, Incoming), Policed> {
    match spool.replay().await {
        Ok(replay) => Ok((replay, body)),
        Err(e) => Err(Policed::Refuse(
            docker_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            Some(body),
        )),
    }
}

/// Refuses (enforce mode) or lets the rest through unread (audit mode).
async fn refused_or_passed(
    refusal: Option<hyper::Response<Body>>,
    spool: Spool,
    body: Incoming,
    audit: &Arc<Audit>,
) -> Policed {
    if let Some(refusal) = refusal {
        return Policed::Refuse(refusal, Some(body));
    }
    let (replay, body) = match replay_or_refuse(spool, body).await {
        Ok(replayed) => replayed,
        Err(refused) => return refused,
    };
    let (tx, rx) = mpsc::channel(4);
    let audit = Arc::clone(audit);
    tokio::spawn(async move {
        let _ = pass_through(Some(replay), Vec::new(), Some(body), &tx, &audit).await;
    });
    Policed::Forward(Forwarded::Build(Upload {
        body: http_body_util::BodyExt::boxed(Channel(rx)),
        late: Arc::new(OnceLock::new()),
    }))
}

/// Sends the spool, what was held, then the rest of the body, unread.
async fn pass_through(
    replay: Option<spool::Replay>,
    held: Vec<Bytes>,
    body: Option<Incoming>,
    tx: &mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    audit: &Audit,
) -> Result<(), ()> {
    if let Some(mut replay) = replay {
        loop {
            match replay.next().await {
                Ok(Some(data)) => tx.send(Ok(Frame::data(data))).await.map_err(|_| ())?,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return Err(());
                }
            }
        }
    }
    for data in held {
        tx.send(Ok(Frame::data(data))).await.map_err(|_| ())?;
    }
    let Some(mut body) = body else {
        return Ok(());
    };
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    audit.add_in(data.len() as u64);
                }
                tx.send(Ok(frame)).await.map_err(|_| ())?;
            }
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e))).await;
                return Err(());
            }
        }
    }
    Ok(())
}

fn record_context(audit: &Audit, reader: &ContextReader, dockerfile: &str) {
    let stats = reader.stats();
    audit.set_build(BuildRecord {
        dockerfile: dockerfile.to_owned(),
        context_bytes: stats.compressed,
        tar_bytes: stats.uncompressed,
        compression: stats.compression,
        entries: stats.entries,
    });
}

/// Decides every image the build can pull with this Dockerfile: its own `FROM` and `--from`
/// images, then the `ONBUILD` triggers of its bases (read from the engine, after pulling a base it
/// does not have, or every base with `pull=1`). Returns every verdict; an unevaluable build is one
/// denied verdict with the reason.
async fn evaluate(
    settings: &Settings,
    scope: &Scope,
    request: &Request,
    path: &str,
    content: &[u8],
) -> Vec<(Verdict, Option<String>)> {
    let plan: Plan = match dockerfile::plan(content, &request.build_args) {
        Ok(plan) => plan,
        Err(e) => return vec![cannot_evaluate(&format!("{path}: {e}"))],
    };
    if let Some(syntax) = &plan.syntax {
        // The classic builder ignores it: logged, not decided.
        tracing::info!(dockerfile = path, syntax = %syntax, "build: `# syntax=` is ignored by the classic builder");
    }
    let mut verdicts = Vec::with_capacity(plan.images.len());
    // Bases to read triggers of: image, stage, platform.
    let mut bases: Vec<(ImageRef, usize, String)> = Vec::new();
    for usage in &plan.images {
        let name = &usage.name;
        let what = match usage.how {
            How::From => format!("FROM {name}"),
            How::CopyFrom => format!("COPY --from={name}"),
            How::OnBuildCopyFrom => format!("ONBUILD COPY --from={name} of an earlier stage"),
            How::MountFrom => format!("RUN --mount=from={name}"),
        };
        let (verdict, image) = decide_image(settings, scope, name, &what, path).await;
        let allowed = verdict.0.allowed || settings.mode == EnforcementMode::Audit;
        if let (How::From, Some(image), true) = (&usage.how, image, allowed) {
            let platform = usage
                .platform
                .clone()
                .unwrap_or_else(|| request.platform.clone());
            bases.push((image, usage.stage, platform));
        }
        verdicts.push(verdict);
    }
    if verdicts.iter().any(|(v, _)| !v.allowed) && settings.mode == EnforcementMode::Enforce {
        return verdicts;
    }
    let mut triggers_of: HashMap<String, Vec<String>> = HashMap::new();
    for (base, stage, platform) in bases {
        let triggers = match triggers_of.get(base.as_str()) {
            Some(triggers) => triggers.clone(),
            None => match base_triggers(settings, request, &base, &platform).await {
                Ok(triggers) => {
                    triggers_of.insert(base.as_str().to_owned(), triggers.clone());
                    triggers
                }
                Err(reason) => {
                    verdicts.push(cannot_evaluate(&reason));
                    continue;
                }
            },
        };
        if triggers.is_empty() {
            continue;
        }
        let images =
            match dockerfile::trigger_images(content, &request.build_args, stage, &triggers) {
                Ok(images) => images,
                Err(e) => {
                    verdicts.push(cannot_evaluate(&format!(
                        "the ONBUILD triggers of {base}: {e}"
                    )));
                    continue;
                }
            };
        for name in images {
            let what = format!("ONBUILD COPY --from={name} of base {base}");
            let (verdict, _) = decide_image(settings, scope, &name, &what, path).await;
            verdicts.push(verdict);
        }
    }
    if verdicts.is_empty() {
        verdicts.push((
            Verdict {
                action: "build",
                image: String::new(),
                registry: None,
                entry: None,
                allowed: true,
                decision: "the build pulls no image".to_owned(),
            },
            None,
        ));
    }
    verdicts
}

/// A verdict that denies a build the VCH cannot evaluate.
fn cannot_evaluate(reason: &str) -> (Verdict, Option<String>) {
    (
        Verdict {
            action: "build",
            image: String::new(),
            registry: None,
            entry: None,
            allowed: false,
            decision: reason.to_owned(),
        },
        Some(format!(
            "the VCH cannot evaluate this build, so it is denied: {reason}"
        )),
    )
}

/// Decides one image a build names; the denial message says where in the Dockerfile
/// (`what`: `FROM x`, `COPY --from=x`, `ONBUILD COPY --from=x of base y`).
async fn decide_image(
    settings: &Settings,
    scope: &Scope,
    name: &str,
    what: &str,
    path: &str,
) -> ((Verdict, Option<String>), Option<ImageRef>) {
    let image = match ImageRef::parse(name) {
        Ok(image) => image,
        Err(e) => {
            let reason = format!("{what} in {path}: not an image reference: {e}");
            return (cannot_evaluate(&reason), None);
        }
    };
    let item = Item {
        action: Action::Pull,
        subject: Subject::Image(image.clone()),
    };
    let (verdict, message) = decide_item(settings, scope, &item).await;
    let message = message.map(|m| format!("{m} ({what} in {path})"));
    ((verdict, message), Some(image))
}

/// A base's `ONBUILD` triggers: inspected in the engine, pulled first when it is not there (or
/// always with `pull=1`, which makes dockerd pull it again).
async fn base_triggers(
    settings: &Settings,
    request: &Request,
    base: &ImageRef,
    platform: &str,
) -> Result<Vec<String>, String> {
    let upstream = &settings.upstream;
    if !request.pull
        && let Some(triggers) = bases::triggers(upstream, request.version, base).await?
    {
        return Ok(triggers);
    }
    let auth = bases::registry_auth(request.auth_config.as_deref(), base);
    bases::pull(upstream, request.version, base, platform, auth.as_deref()).await?;
    bases::triggers(upstream, request.version, base).await?.ok_or_else(|| {
        format!("{base} is not in the Docker engine after pulling it, so its ONBUILD triggers cannot be read")
    })
}

/// Streams the released upload to dockerd while the reader goes on reading it.
struct Pump {
    settings: Settings,
    /// The client's project, as when the upload was released.
    scope: Scope,
    request: Request,
    audit: Arc<Audit>,
    late: Arc<OnceLock<String>>,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    /// `None` once the body has ended (everything is in the spool).
    reader: Option<ContextReader>,
    /// The generation of the Dockerfile decided.
    generation: u64,
    enforce: bool,
}

impl Pump {
    async fn run(mut self, replay: spool::Replay, body: Option<Incoming>) {
        let sent = pass_through(Some(replay), Vec::new(), None, &self.tx, &self.audit).await;
        let (Some(mut reader), Some(mut body), Ok(())) = (self.reader.take(), body, sent) else {
            return;
        };
        let mut held: Vec<Bytes> = Vec::new();
        let mut held_bytes = 0usize;
        loop {
            let data = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers
                },
                Some(Err(e)) => {
                    let _ = self.tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
                None => {
                    // What is still held goes: a context that ends with its Dockerfile unresolved
                    // has none dockerd can read, and dockerd reads it only once the body is whole.
                    let _ = reader.finish();
                    let path = match reader.dockerfile() {
                        Resolution::Found { path, .. } => path,
                        _ => String::new(),
                    };
                    record_context(&self.audit, &reader, &path);
                    let _ = pass_through(None, held, None, &self.tx, &self.audit).await;
                    return;
                }
            };
            self.audit.add_in(data.len() as u64);
            let fed = reader.feed(&data);
            held_bytes += data.len();
            held.push(data);
            let release = match (fed, reader.dockerfile()) {
                (Err(e), _) => Err(self.cannot_evaluate(&e.to_string())),
                (Ok(()), Resolution::Found { generation, .. }) if generation == self.generation => {
                    Ok(true)
                }
                (Ok(()), Resolution::Found { generation, path, content }) => {
                    // A later entry replaced the Dockerfile: decided before its last bytes go.
                    self.generation = generation;
                    record_context(&self.audit, &reader, &path);
                    let verdicts = evaluate(&self.settings, &self.scope, &self.request, &path, &content).await;
                    let denial = verdicts.iter().find_map(|(v, m)| if v.allowed { None } else { m.clone() });
                    let _ = conclude(&self.settings, Gate::Build, verdicts, &self.audit);
                    denial.map_or(Ok(true), Err)
                }
                (Ok(()), Resolution::Pending) if held_bytes <= MAX_HELD_AFTER_RELEASE => Ok(false),
                (Ok(()), Resolution::Pending) => Err(self.cannot_evaluate(
                    "a later tar entry replaced the Dockerfile, and the new one did not arrive within 16 MiB",
                )),
                (Ok(()), Resolution::Unreadable { reason, .. }) => Err(self.cannot_evaluate(&reason)),
            };
            match release {
                Ok(true) => {
                    held_bytes = 0;
                    let held = std::mem::take(&mut held);
                    if pass_through(None, held, None, &self.tx, &self.audit)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(false) => {}
                Err(message) if !self.enforce => {
                    tracing::warn!("policy mode audit: would deny the build: {message}");
                    let _ = pass_through(None, held, Some(body), &self.tx, &self.audit).await;
                    return;
                }
                Err(message) => {
                    tracing::info!("build denied after its upload was released: {message}");
                    let _ = self.late.set(message.clone());
                    let _ = self.tx.send(Err(std::io::Error::other(message))).await;
                    crate::service::discard(body);
                    return;
                }
            }
        }
    }

    /// Records a build that can no longer be evaluated; the message the client gets.
    fn cannot_evaluate(&self, reason: &str) -> String {
        let (verdict, message) = cannot_evaluate(reason);
        let _ = conclude(
            &self.settings,
            Gate::Build,
            vec![(verdict, message.clone())],
            &self.audit,
        );
        message.unwrap_or_default()
    }
}

/// The forwarded body: frames from the pump.
struct Channel(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

/// Records an invalid build request.
fn invalid(settings: &Settings, audit: &Audit, message: &str) {
    if let Some(metrics) = audit.metrics() {
        metrics.invalid(Gate::Build.name());
    }
    audit.set_policy(PolicyRecord {
        route: Gate::Build.name(),
        mode: settings.mode.as_str(),
        verdict: Verdict {
            action: "invalid",
            decision: message.to_owned(),
            ..Verdict::default()
        },
        ..PolicyRecord::default()
    });
}
