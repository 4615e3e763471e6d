//! Prometheus metrics of an endpoint (`vch-admin serve --metrics ADDR`): what it served, what the
//! policy decided, what it moved, and how long dockerd took to start answering.
//!
//! Recording is on every request's path, so it costs atomic increments only: the label sets of
//! requests and latencies are few and fixed (route kind × status class), each resolved once into
//! a slot the first time it is used, and the latency histogram is lock-free (prometheus-client's
//! own takes a mutex per observation). Only policy decisions look their series up per decision
//! (prometheus-client's family map), as their label set includes the registry.
//!
//! No label comes from what a client chose freely: no image names, no client addresses, and the
//! registry of a decision only when the configuration names it (see [`registry_label`]).

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use vch_policy::{EntryHost, Policy, PushRule};

use crate::Error;
use crate::audit::Verdict;
use crate::route::Kind;
use crate::settings::Settings;

/// The `Content-Type` of a scrape: the Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds: from a `/_ping` (about 0.1 ms through the
/// endpoint) to a pull whose registry is slow to answer dockerd (dockerd sends the first progress
/// line only once it has the manifest).
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

/// The `kind` label: how the router classified a request ([`Kind`]), policed routes as one.
const KINDS: [&str; 7] = [
    "ping", "version", "info", "policed", "hijack", "other", "unrouted",
];

/// The `status` label: the class of the status code answered.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The route kind of a request, as an index into the pre-resolved series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteKind(u8);

impl RouteKind {
    /// Refused before routing: not a route of the version asked for, a version out of range, a
    /// non-canonical path, h2c, ambiguous framing.
    pub(crate) const UNROUTED: RouteKind = RouteKind(6);

    pub(crate) fn of(kind: Kind) -> RouteKind {
        RouteKind(match kind {
            Kind::Ping => 0,
            Kind::Version => 1,
            Kind::Info => 2,
            Kind::Policed(_) => 3,
            Kind::Hijack => 4,
            Kind::Other => 5,
        })
    }

    pub(crate) fn from_u8(n: u8) -> RouteKind {
        RouteKind(n.min(Self::UNROUTED.0))
    }

    pub(crate) fn as_u8(self) -> u8 {
        self.0
    }
}

/// A decision's result (the `result` label of `vch_policy_decisions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The policy allowed the item.
    Allowed,
    /// The policy denied it, and the request was refused.
    Denied,
    /// The policy denied it; in audit mode the request went through.
    WouldDeny,
    /// The gate could not tell what the request asks (a malformed body or query, an unsupported
    /// feature such as BuildKit): refused without a decision on a registry.
    Invalid,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::WouldDeny => "would_deny",
            Outcome::Invalid => "invalid",
        }
    }
}

type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, &'static str); 1];
type DecisionLabels = [(&'static str, Cow<'static, str>); 3];

/// An endpoint's metrics: pass one to the server ([`crate::Options::metrics`]), serve them with
/// [`MetricsListener`]. Cheap to share (`Arc`); every metric is recorded with atomic operations.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `vch_requests_total` | counter | `kind`, `status` |
/// | `vch_request_duration_seconds` | histogram | `kind` |
/// | `vch_policy_decisions_total` | counter | `result`, `registry`, `route` |
/// | `vch_transfer_bytes_total` | counter | `direction` (`in`, `out`) |
/// | `vch_connections_active`, `vch_hijacks_active` | gauge | — |
/// | `vch_connections_total`, `vch_hijacks_total`, `vch_upstream_connect_errors_total` | counter | — |
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels2, Counter>,
    request_slots: [[OnceLock<Counter>; STATUS_CLASSES.len()]; KINDS.len()],
    latency: Family<Labels1, Histogram, fn() -> Histogram>,
    latency_slots: [OnceLock<Histogram>; KINDS.len()],
    decisions: Family<DecisionLabels, Counter>,
    bytes_in: Counter,
    bytes_out: Counter,
    connections_active: Gauge,
    connections: Counter,
    hijacks_active: Gauge,
    hijacks: Counter,
    upstream_connect_errors: Counter,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels2, Counter>::default();
        registry.register(
            "vch_requests",
            "Requests answered, by route kind (ping, version, info, policed, hijack, other, \
             unrouted: refused before routing) and status class",
            requests.clone(),
        );
        let latency: Family<Labels1, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(Histogram::new);
        registry.register(
            "vch_request_duration_seconds",
            "Time from a request's head being read to its response head being ready (header to \
             first byte), by route kind",
            latency.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "vch_policy_decisions",
            "Registry policy decisions, one per item decided (a build counts each image it \
             pulls), by result (allowed, denied, would_deny in audit mode, invalid), registry \
             (the registry only when vch.toml names it exactly, docker.io for Docker Hub, none \
             for content from no registry, else other) and gated route",
            decisions.clone(),
        );
        let bytes = Family::<Labels1, Counter>::default();
        registry.register(
            "vch_transfer_bytes",
            "Body and hijacked-stream bytes: in from clients to the engine, out from the engine \
             to clients",
            bytes.clone(),
        );
        let bytes_in = bytes.get_or_create(&[("direction", "in")]).clone();
        let bytes_out = bytes.get_or_create(&[("direction", "out")]).clone();
        let connections_active = Gauge::default();
        registry.register(
            "vch_connections_active",
            "Client connections open",
            connections_active.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "vch_connections",
            "Client connections accepted",
            connections.clone(),
        );
        let hijacks_active = Gauge::default();
        registry.register(
            "vch_hijacks_active",
            "Hijacked (upgraded) attach and exec streams open",
            hijacks_active.clone(),
        );
        let hijacks = Counter::default();
        registry.register(
            "vch_hijacks",
            "Hijacked (upgraded) attach and exec streams spliced",
            hijacks.clone(),
        );
        let upstream_connect_errors = Counter::default();
        registry.register(
            "vch_upstream_connect_errors",
            "Connections to the Docker engine that could not be opened for a request",
            upstream_connect_errors.clone(),
        );
        Metrics {
            registry,
            requests,
            request_slots: Default::default(),
            latency,
            latency_slots: Default::default(),
            decisions,
            bytes_in,
            bytes_out,
            connections_active,
            connections,
            hijacks_active,
            hijacks,
            upstream_connect_errors,
        }
    }

    /// The metrics in the Prometheus text format (0.0.4).
    pub fn encode(&self, out: &mut String) -> fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
    }

    /// A request answered: its status and the time to its response head.
    pub(crate) fn answered(&self, kind: RouteKind, status: u16, took: Duration) {
        let k = usize::from(kind.0).min(KINDS.len() - 1);
        let s = usize::from((status / 100).clamp(1, 5) - 1);
        self.request_slots[k][s]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&[("kind", KINDS[k]), ("status", STATUS_CLASSES[s])])
                    .clone()
            })
            .inc();
        self.latency_slots[k]
            .get_or_init(|| self.latency.get_or_create(&[("kind", KINDS[k])]).clone())
            .observe(took);
    }

    /// Decisions on a gated request's items.
    pub(crate) fn decided<'a>(
        &self,
        settings: &Settings,
        route: &'static str,
        verdicts: impl IntoIterator<Item = &'a Verdict>,
    ) {
        for verdict in verdicts {
            let outcome = match (verdict.allowed, settings.mode.is_enforce()) {
                (true, _) => Outcome::Allowed,
                (false, true) => Outcome::Denied,
                (false, false) => Outcome::WouldDeny,
            };
            let registry = registry_label(settings, verdict.registry.as_deref());
            self.decision(outcome, registry, route);
        }
    }

    /// A gated request refused because the gate could not tell what it asks.
    pub(crate) fn invalid(&self, route: &'static str) {
        self.decision(Outcome::Invalid, Cow::Borrowed("none"), route);
    }

    fn decision(&self, outcome: Outcome, registry: Cow<'static, str>, route: &'static str) {
        self.decisions
            .get_or_create(&[
                ("result", Cow::Borrowed(outcome.as_str())),
                ("registry", registry),
                ("route", Cow::Borrowed(route)),
            ])
            .inc();
    }

    pub(crate) fn bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    pub(crate) fn bytes_out(&self, n: u64) {
        self.bytes_out.inc_by(n);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
        self.connections_active.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_active.dec();
    }

    pub(crate) fn hijack_started(&self) {
        self.hijacks.inc();
        self.hijacks_active.inc();
    }

    pub(crate) fn hijack_ended(&self) {
        self.hijacks_active.dec();
    }

    pub(crate) fn upstream_connect_error(&self) {
        self.upstream_connect_errors.inc();
    }
}

/// The `registry` label of a decision.
///
/// A client names the registry it pulls from, so labelling by the registry as asked would let any
/// client create series at will (`docker pull a1.example/x`, `a2.example/x`, …) and exhaust the
/// scraper. Neither is the policy's verdict a bound: with the whitelist off, or a `*.domain` or
/// CIDR entry, every name is allowed. So the label is the registry only when `vch.toml` names it
/// exactly: an exact-host entry (no wildcard, no CIDR) of the whitelist, the insecure list, the
/// push list or a project's list, with the same port (an entry without a port: the registry
/// without one). Docker Hub is `docker.io`, content from no registry (`load`, `import`) `none`,
/// anything else `other`. The series are then at most a few per configured entry.
pub(crate) fn registry_label(settings: &Settings, registry: Option<&str>) -> Cow<'static, str> {
    let Some(text) = registry else {
        return Cow::Borrowed("none");
    };
    let Ok(registry) = vch_policy::Registry::parse(text) else {
        return Cow::Borrowed("other");
    };
    if registry.is_docker_hub() {
        return Cow::Borrowed("docker.io");
    }
    let names = |policy: &Policy| {
        policy
            .whitelist()
            .iter()
            .chain(policy.insecure())
            .any(|entry| {
                matches!(entry.host(), EntryHost::Exact(host) if host == registry.host())
                    && match entry.port() {
                        None => registry.port().is_none(),
                        Some(port) => port == registry.effective_port(),
                    }
            })
    };
    let named = names(&settings.policy)
        || matches!(&settings.push, PushRule::List(push) if names(push))
        || settings.projects.values().any(|p| names(p.list()));
    if named {
        Cow::Owned(registry.as_str().to_owned())
    } else {
        Cow::Borrowed("other")
    }
}

/// A latency histogram with fixed buckets, observed with atomic additions only.
#[derive(Debug, Clone)]
struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// The sum of observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram(Arc::new(HistogramInner {
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|&bound| bound < seconds);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let mut buckets = [(0.0, 0); LATENCY_BUCKETS.len()];
        let mut count = 0;
        for (i, slot) in buckets.iter_mut().enumerate() {
            let n = self.0.buckets[i].load(Ordering::Relaxed);
            *slot = (LATENCY_BUCKETS[i], n);
            count += n;
        }
        count += self.0.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The most scrapes served at once; more wait in the listen backlog.
const MAX_SCRAPES: usize = 16;
/// Time a scraper has to send its request head.
const SCRAPE_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener of the metrics endpoint: plain HTTP, `GET /metrics` (and `HEAD`); anything else
/// is 404 or 405. Meant for the loopback address or a scrape network: it has no authentication.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
}

impl MetricsListener {
    /// Binds the address; fails before anything is served if it cannot.
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: addr.to_string(),
                source,
            })?;
        Ok(MetricsListener { listener })
    }

    /// The address bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|source| Error::Bind {
            addr: "the metrics listener".to_owned(),
            source,
        })
    }

    /// Serves scrapes of `metrics` until the future is dropped. An accept error is logged and
    /// the loop goes on.
    pub async fn serve(self, metrics: Arc<Metrics>) {
        let limit = Arc::new(Semaphore::new(MAX_SCRAPES));
        loop {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                return;
            };
            let (tcp, _) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let metrics = Arc::clone(&metrics);
                    async move { Ok::<_, Infallible>(scrape(&metrics, &req)) }
                });
                let mut http = http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(SCRAPE_HEADER_TIMEOUT);
                if let Err(e) = http.serve_connection(TokioIo::new(tcp), service).await {
                    tracing::debug!(error = %e, "metrics: connection ended with an error");
                }
                drop(permit);
            });
        }
    }
}

/// Answers one request to the metrics endpoint.
fn scrape(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let answer = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    if req.uri().path() != "/metrics" {
        return answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".to_owned(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n".to_owned(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut body = String::with_capacity(8192);
    match metrics.encode(&mut body) {
        Ok(()) => answer(StatusCode::OK, METRICS_CONTENT_TYPE, body),
        Err(_) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "the metrics could not be encoded\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstream;
    use vch_policy::PolicyBuilder;

    fn settings(whitelist: &[&str], insecure: &[&str]) -> Settings {
        let mut builder = PolicyBuilder::new();
        for entry in whitelist {
            builder.whitelist(*entry);
        }
        for entry in insecure {
            builder.insecure(*entry);
        }
        let upstream = Upstream::parse("unix:///nonexistent.sock", None).unwrap();
        Settings::new(upstream, builder.build().unwrap())
    }

    /// Rows: registry as decided, the label.
    #[test]
    fn the_registry_label_is_bounded_by_the_configuration() {
        let settings = settings(
            &[
                "reg.example.com",
                "10.0.0.5:5000",
                "*.wild.example",
                "10.1.0.0/16",
            ],
            &["insecure.example:5000"],
        )
        .with_project("team", {
            let mut b = PolicyBuilder::new();
            b.whitelist("reg.example.com/team");
            b.whitelist("team-only.example");
            b.build().unwrap()
        });
        for (registry, want) in [
            (Some("reg.example.com"), "reg.example.com"),
            // The entry has no port: only the registry without one is named by it.
            (Some("reg.example.com:5000"), "other"),
            (Some("10.0.0.5:5000"), "10.0.0.5:5000"),
            (Some("10.0.0.5"), "other"),
            (Some("insecure.example:5000"), "insecure.example:5000"),
            (Some("team-only.example"), "team-only.example"),
            // Wildcards and CIDRs allow names the client picks: never a label of their own.
            (Some("a1.wild.example"), "other"),
            (Some("10.1.2.3"), "other"),
            (Some("elsewhere.example"), "other"),
            (Some("docker.io"), "docker.io"),
            (None, "none"),
            (Some("not a registry"), "other"),
        ] {
            assert_eq!(
                registry_label(&settings, registry),
                want,
                "{registry:?} should be labelled {want}"
            );
        }
        // The whitelist off allows everything; still only the named ones are labelled.
        let open = self::settings(&[], &[]);
        assert_eq!(registry_label(&open, Some("anything.example")), "other");
    }

    #[test]
    fn the_histogram_counts_each_observation_once_in_its_bucket() {
        let metrics = Metrics::new();
        for micros in [50, 100, 101, 300_000, 70_000_000] {
            metrics.answered(
                RouteKind::of(Kind::Ping),
                200,
                Duration::from_micros(micros),
            );
        }
        metrics.answered(RouteKind::UNROUTED, 404, Duration::from_micros(10));
        let mut text = String::new();
        metrics.encode(&mut text).unwrap();
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .unwrap_or_else(|| panic!("{name} not in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        // Bounds are inclusive, as Prometheus' `le` says.
        assert_eq!(
            line("vch_request_duration_seconds_bucket{kind=\"ping\",le=\"0.0001\"}"),
            "2"
        );
        assert_eq!(
            line("vch_request_duration_seconds_bucket{kind=\"ping\",le=\"0.00025\"}"),
            "3"
        );
        assert_eq!(
            line("vch_request_duration_seconds_bucket{kind=\"ping\",le=\"60\"}"),
            "4"
        );
        assert_eq!(
            line("vch_request_duration_seconds_bucket{kind=\"ping\",le=\"+Inf\"}"),
            "5"
        );
        assert_eq!(
            line("vch_request_duration_seconds_count{kind=\"ping\"}"),
            "5"
        );
        let sum: f64 = line("vch_request_duration_seconds_sum{kind=\"ping\"}")
            .parse()
            .unwrap();
        assert!((sum - 70.300251).abs() < 1e-9, "{sum}");
        assert_eq!(
            line("vch_requests_total{kind=\"ping\",status=\"2xx\"}"),
            "5"
        );
        assert_eq!(
            line("vch_requests_total{kind=\"unrouted\",status=\"4xx\"}"),
            "1"
        );
        // Label sets never used are not shown.
        assert!(!text.contains("kind=\"info\""), "{text}");
    }
}
