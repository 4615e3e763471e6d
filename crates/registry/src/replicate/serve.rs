//! `serve`: scheduled rules on their schedule, `immediate` rules on the source registry's
//! notifications, one job per repository at a time, retries, reloads and a clean stop.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::notify::{Action, Notification, parse_envelope};
use super::rules::Rule;
use super::run::{CancelToken, Replicator, RepoReport};
use super::schedule::Trigger;
use super::state::Outcome;
use crate::error::{Error, Result};

/// Limits and delays of [`serve`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Wait after a notification before the repository's job starts, collecting the events
    /// of one push (default 1 s).
    pub debounce: Duration,
    /// On shutdown, how long running jobs may finish before they are cancelled at their next
    /// image (default 30 s).
    pub shutdown_grace: Duration,
    /// Largest notification body accepted (default 1 MiB; larger: 413).
    pub max_body: usize,
    /// Bound on reading a request's headers (default 10 s).
    pub header_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            max_body: 1 << 20,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Orders to a running [`serve`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Control {
    /// New rules (bound to the same state file): jobs of removed or disabled rules stop at
    /// their next image; schedules are recomputed.
    Reload(Arc<Replicator>),
    /// Stop taking notifications, let running jobs finish (or cancel them after the grace
    /// period), and return.
    Shutdown,
}

type Key = (String, String);

enum Msg {
    Events(Option<String>, Vec<Notification>),
    Scanned(String, Result<Vec<String>>),
    Done(Key, Result<RepoReport>),
}

struct Job {
    cancel: CancelToken,
    again: bool,
}

struct Scheduler {
    rep: Arc<Replicator>,
    options: ServeOptions,
    tx: mpsc::UnboundedSender<Msg>,
    running: HashMap<Key, Job>,
    due: HashMap<Key, Instant>,
    scans: HashMap<String, Instant>,
    scanning: HashSet<String>,
    limits: HashMap<String, Arc<Semaphore>>,
    tasks: JoinSet<()>,
}

/// Serves `POST /notify` and `POST /notify/<endpoint>` on `listener` and runs the rules of
/// `replicator` until [`Control::Shutdown`] (or the control channel closes).
///
/// Notifications: Distribution's envelope; pushes of manifests and deletes queue the
/// repository for every enabled `immediate` rule whose `from` endpoint sent it (the one named
/// in the path, or else the endpoint whose `host[:port]` equals the event's `request.host`)
/// and whose filters match. Answers: 200 when taken, 400 for a malformed body, 413 above
/// [`ServeOptions::max_body`], 404/405 elsewhere.
///
/// # Errors
/// Only when the listener's address cannot be read; jobs' errors go to the state file and
/// the log.
pub async fn serve(
    listener: TcpListener,
    replicator: Arc<Replicator>,
    mut control: mpsc::Receiver<Control>,
    options: ServeOptions,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("the listener's address", e))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let http = tokio::spawn(accept_loop(listener, tx.clone(), stop_rx, options));
    tracing::info!(%addr, "replication listening for notifications");
    let mut s = Scheduler {
        rep: replicator,
        options,
        tx,
        running: HashMap::new(),
        due: HashMap::new(),
        scans: HashMap::new(),
        scanning: HashSet::new(),
        limits: HashMap::new(),
        tasks: JoinSet::new(),
    };
    s.schedule_all(None);
    loop {
        let next = s.due.values().chain(s.scans.values()).min().copied();
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => s.handle(m),
                None => break,
            },
            ctl = control.recv() => match ctl {
                Some(Control::Reload(rep)) => s.reload(rep),
                Some(Control::Shutdown) | None => break,
            },
            () = sleep_until(next) => s.fire(),
            Some(_) = s.tasks.join_next(), if !s.tasks.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let _ = http.await;
    s.shutdown(&mut rx).await;
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn instant_of(t: SystemTime) -> Instant {
    let now = SystemTime::now();
    Instant::now() + t.duration_since(now).unwrap_or_default()
}

impl Scheduler {
    /// Scans for every enabled scheduled or immediate rule, and the retries the state file
    /// holds. `old`: the previous rules, whose unchanged schedules are kept.
    fn schedule_all(&mut self, old: Option<&HashMap<String, Trigger>>) {
        let now = Instant::now();
        let rules = self.rep.rules().rules.clone();
        let mut scans = HashMap::new();
        for rule in rules.iter().filter(|r| r.enabled) {
            let unchanged = old.is_some_and(|o| o.get(&rule.name) == Some(&rule.trigger));
            let next = || rule.trigger.next_after(SystemTime::now()).map(instant_of);
            let at = match &rule.trigger {
                Trigger::Manual => None,
                _ if unchanged => self.scans.get(&rule.name).copied().or_else(next),
                // New or changed: a catch-up scan now; cron at its time.
                Trigger::Immediate | Trigger::Every(_) => Some(now),
                Trigger::Cron(_) => next(),
            };
            if let Some(at) = at {
                scans.insert(rule.name.clone(), at);
            }
            self.limits.insert(
                rule.name.clone(),
                Arc::new(Semaphore::new(rule.concurrency)),
            );
        }
        self.scans = scans;
        if old.is_none() {
            // Failed and cancelled jobs of a previous run, at their retry time.
            for (name, rs) in self.rep.state().snapshot().rules {
                if !rules.iter().any(|r| r.name == name && r.enabled) {
                    continue;
                }
                for (repo, st) in rs.repositories {
                    if matches!(st.result, Outcome::Failed | Outcome::Cancelled) {
                        let at = st
                            .next_retry
                            .map(|s| instant_of(SystemTime::UNIX_EPOCH + Duration::from_secs(s)))
                            .unwrap_or(now);
                        self.due.insert((name.clone(), repo), at);
                    }
                }
            }
        }
    }

    fn rule(&self, name: &str) -> Option<Rule> {
        self.rep.rules().rule(name).filter(|r| r.enabled).cloned()
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Events(endpoint, events) => self.events(endpoint.as_deref(), &events),
            Msg::Scanned(rule, result) => {
                self.scanning.remove(&rule);
                if self.rule(&rule).is_none() {
                    return;
                }
                match result {
                    Ok(repos) => {
                        for repo in repos {
                            self.queue((rule.clone(), repo), Instant::now());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(rule, error = %e, "listing the source failed; retrying");
                        let at = Instant::now() + self.rep.rules().retry.initial;
                        let entry = self.scans.entry(rule).or_insert(at);
                        *entry = (*entry).min(at);
                    }
                }
            }
            Msg::Done(key, result) => {
                let again = self.running.remove(&key).is_some_and(|j| j.again);
                if self.rule(&key.0).is_none() {
                    return;
                }
                match result {
                    Ok(r) => {
                        tracing::info!(
                            rule = key.0,
                            repo = key.1,
                            images = r.images,
                            deleted = r.deleted,
                            "replicated"
                        );
                        if again {
                            self.queue(key, Instant::now() + self.options.debounce);
                        }
                    }
                    Err(e) => {
                        let failures = self.rep.state().repo(&key.0, &key.1).failures.max(1);
                        let wait = self.rep.rules().retry.delay(failures);
                        tracing::warn!(rule = key.0, repo = key.1, error = %e, ?wait, "replication failed; will retry");
                        let at = if again {
                            Instant::now()
                        } else {
                            Instant::now() + wait
                        };
                        self.queue(key, at);
                    }
                }
            }
        }
    }

    /// Queues a repository at `at`, or earlier if it is queued already; a running job is
    /// marked to run once more when it ends.
    fn queue(&mut self, key: Key, at: Instant) {
        if let Some(job) = self.running.get_mut(&key) {
            job.again = true;
            return;
        }
        let entry = self.due.entry(key).or_insert(at);
        *entry = (*entry).min(at);
    }

    fn events(&mut self, endpoint: Option<&str>, events: &[Notification]) {
        let at = Instant::now() + self.options.debounce;
        let rules = self.rep.rules().clone();
        for n in events {
            for rule in rules
                .rules
                .iter()
                .filter(|r| r.enabled && r.trigger == Trigger::Immediate)
            {
                let from = &rules.endpoints[&rule.from];
                let sent_by = match endpoint {
                    Some(e) => e == from.name,
                    None => n.host.as_deref() == Some(from.host.as_str()),
                };
                if !sent_by || !rule.repositories.matches(&n.repository) {
                    continue;
                }
                if n.action == Action::Push
                    && n.tag.as_deref().is_some_and(|t| !rule.tags.matches(t))
                {
                    continue;
                }
                tracing::debug!(rule = rule.name, repo = n.repository, action = ?n.action, "notification");
                self.queue((rule.name.clone(), n.repository.clone()), at);
            }
        }
    }

    fn fire(&mut self) {
        let now = Instant::now();
        let ready: Vec<Key> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in ready {
            self.due.remove(&key);
            self.start(key);
        }
        let scans: Vec<String> = self
            .scans
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for name in scans {
            self.scans.remove(&name);
            let Some(rule) = self.rule(&name) else {
                continue;
            };
            if let Some(next) = rule.trigger.next_after(SystemTime::now()) {
                self.scans.insert(name.clone(), instant_of(next));
            }
            if !self.scanning.insert(name.clone()) {
                continue;
            }
            let (rep, tx) = (self.rep.clone(), self.tx.clone());
            self.tasks.spawn(async move {
                let result = rep.repositories(&rule).await;
                let _ = tx.send(Msg::Scanned(name, result));
            });
        }
    }

    fn start(&mut self, key: Key) {
        let Some(rule) = self.rule(&key.0) else {
            return;
        };
        if let Some(job) = self.running.get_mut(&key) {
            job.again = true;
            return;
        }
        let cancel = CancelToken::new();
        self.running.insert(
            key.clone(),
            Job {
                cancel: cancel.clone(),
                again: false,
            },
        );
        let limit = self
            .limits
            .get(&rule.name)
            .cloned()
            .unwrap_or_else(|| Arc::new(Semaphore::new(1)));
        let (rep, tx) = (self.rep.clone(), self.tx.clone());
        self.tasks.spawn(async move {
            let result = tokio::select! {
                permit = limit.acquire_owned() => {
                    let _permit = permit;
                    rep.sync_repository(&rule, &key.1, &cancel).await
                }
                () = cancel.cancelled() => Err(Error::Replication {
                    rule: key.0.clone(),
                    repository: key.1.clone(),
                    reason: "cancelled before it started".into(),
                }),
            };
            let _ = tx.send(Msg::Done(key, result));
        });
    }

    fn reload(&mut self, rep: Arc<Replicator>) {
        let old: HashMap<String, Trigger> = self
            .rep
            .rules()
            .rules
            .iter()
            .filter(|r| r.enabled)
            .map(|r| (r.name.clone(), r.trigger.clone()))
            .collect();
        self.rep = rep;
        for (key, job) in &self.running {
            if self.rule(&key.0).is_none() {
                tracing::info!(
                    rule = key.0,
                    repo = key.1,
                    "rule removed or disabled; stopping its job"
                );
                job.cancel.cancel();
            }
        }
        let keep: Vec<Key> = self
            .due
            .keys()
            .filter(|k| self.rule(&k.0).is_some())
            .cloned()
            .collect();
        self.due.retain(|k, _| keep.contains(k));
        self.schedule_all(Some(&old));
        tracing::info!(rules = self.rep.rules().rules.len(), "rules reloaded");
    }

    async fn shutdown(mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        self.due.clear();
        self.scans.clear();
        let deadline = Instant::now() + self.options.shutdown_grace;
        // A job cancelled in the middle of a large image stops after it; past a second grace
        // period it is dropped (its repository's last checkpoint stays in the state file).
        let hard = deadline + self.options.shutdown_grace;
        let mut cancelled = false;
        while !self.running.is_empty() {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Done(key, _)) => { self.running.remove(&key); }
                    Some(_) => {}
                    None => break,
                },
                () = tokio::time::sleep_until(deadline), if !cancelled => {
                    tracing::info!(jobs = self.running.len(), "cancelling running jobs at their next image");
                    for job in self.running.values() {
                        job.cancel.cancel();
                    }
                    cancelled = true;
                }
                () = tokio::time::sleep_until(hard) => {
                    tracing::warn!(jobs = self.running.len(), "jobs still running; stopping them");
                    break;
                }
            }
        }
        self.tasks.shutdown().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<Msg>,
    mut stop: watch::Receiver<bool>,
    options: ServeOptions,
) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // An accept loop never dies: EMFILE and friends pass.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let tx = tx.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| {
                let tx = tx.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &tx, options, peer).await) }
            });
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(options.header_timeout);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection"); },
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    tx: &mpsc::UnboundedSender<Msg>,
    options: ServeOptions,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let endpoint = match path.as_str() {
        "/notify" | "/notify/" => None,
        p => match p.strip_prefix("/notify/") {
            Some(name) if !name.contains('/') => Some(name.to_owned()),
            _ => return reply(StatusCode::NOT_FOUND, "not found"),
        },
    };
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let body = match Limited::new(req.into_body(), options.max_body)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return reply(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        Err(_) => return reply(StatusCode::BAD_REQUEST, "body unreadable"),
    };
    match parse_envelope(&body) {
        Ok(events) => {
            tracing::debug!(%peer, events = events.len(), ?endpoint, "notification");
            if !events.is_empty() {
                let _ = tx.send(Msg::Events(endpoint, events));
            }
            reply(StatusCode::OK, "{}")
        }
        Err(why) => reply(StatusCode::BAD_REQUEST, &why),
    }
}
