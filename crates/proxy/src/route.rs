//! The Docker Engine API route table (v1.24 to the audited ceiling), API-version handling and
//! request classification.

use hyper::Method;

use crate::api::ApiRange;
use crate::gate::Gate;

/// A Docker API version (`1.25`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
}

impl ApiVersion {
    /// `major.minor`.
    pub const fn new(major: u16, minor: u16) -> Self {
        ApiVersion { major, minor }
    }

    /// Parses `1.25` (or `1`).
    pub fn parse(s: &str) -> Option<Self> {
        let (major, minor) = s.split_once('.').unwrap_or((s, "0"));
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 4 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return None;
        }
        Some(ApiVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What a request is, for the gates and the forwarding logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET`/`HEAD /_ping`.
    Ping,
    /// `GET /version`: the body's `ApiVersion` is rewritten.
    Version,
    /// `GET /info`: the registry policy is added to the answer.
    Info,
    /// A route that can bring an image in or send one out: its gate decides.
    Policed(Gate),
    /// Attach and exec start: may hijack the connection.
    Hijack,
    /// Anything else in the v1.25 API.
    Other,
}

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The version the client asked for, or the ceiling for unversioned paths.
    pub version: ApiVersion,
    /// Whether the path carried a version prefix.
    pub versioned: bool,
    /// The path without the version prefix (`/containers/json`).
    pub endpoint: String,
    /// The classification.
    pub kind: Kind,
}

/// Why a request is refused before reaching dockerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client asked for a version above the ceiling (400, Docker's own text).
    TooNew {
        /// The version asked for.
        version: ApiVersion,
        /// The ceiling.
        ceiling: ApiVersion,
    },
    /// The client asked for a version below the floor (400, Docker's own text).
    TooOld {
        /// The version asked for.
        version: ApiVersion,
        /// The floor.
        floor: ApiVersion,
    },
    /// Not a route of the API version asked for (404).
    NotFound(ApiVersion),
    /// A path that is not in canonical form (`//`, `.`/`..` segments, bad escapes) (400).
    BadPath,
}

impl Refusal {
    /// The status code Docker would use.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::TooNew { .. } | Refusal::TooOld { .. } | Refusal::BadPath => 400,
            Refusal::NotFound(_) => 404,
        }
    }

    /// The message for the JSON body.
    pub fn message(&self, method: &Method, path: &str) -> String {
        match self {
            Refusal::TooNew { version, ceiling } => format!(
                "client version {version} is too new. Maximum supported API version is {ceiling}"
            ),
            Refusal::TooOld { version, floor } => format!(
                "client version {version} is too old. Minimum supported API version is {floor}, please upgrade your client to a newer version"
            ),
            Refusal::NotFound(version) if is_buildkit_route(path) => format!(
                "page not found: {method} {path} is not part of Docker API v{version}: {}",
                crate::gate::BUILDKIT_UNSUPPORTED
            ),
            Refusal::NotFound(version) => {
                format!("page not found: {method} {path} is not part of Docker API v{version}")
            }
            Refusal::BadPath => format!("invalid request path {path:?}"),
        }
    }
}

/// BuildKit's own routes (`/session`, `/grpc`, at any version): their refusal says why and what
/// to do, as the build gate's does.
fn is_buildkit_route(path: &str) -> bool {
    let rest = path.trim_start_matches('/');
    let rest = match rest.split_once('/') {
        Some((first, after)) if first.starts_with('v') => after,
        _ => rest,
    };
    let rest = rest.trim_end_matches('/');
    rest == "session" || rest == "grpc" || rest.starts_with("grpc/")
}

/// One segment of a route pattern.
#[derive(Clone, Copy)]
enum Seg {
    Lit(&'static str),
    /// One path segment (an id or name without `/`).
    One,
    /// One or more segments (image and plugin names contain `/`), followed by the rest.
    Many,
}

use Seg::{Lit, Many, One};

/// (methods, pattern, kind): the routes of every accepted version, the v1.24/v1.25 API as
/// documented for Docker 1.13 (swarm, plugins, secrets). Routes added later are in [`LATER`].
const ROUTES: &[(&[&str], &[Seg], Kind)] = &[
    (&["GET", "HEAD"], &[Lit("_ping")], Kind::Ping),
    (&["GET"], &[Lit("version")], Kind::Version),
    (&["GET"], &[Lit("info")], Kind::Info),
    (&["GET"], &[Lit("events")], Kind::Other),
    (&["POST"], &[Lit("auth")], Kind::Policed(Gate::Auth)),
    (&["GET"], &[Lit("system"), Lit("df")], Kind::Other),
    // containers
    (&["GET"], &[Lit("containers"), Lit("json")], Kind::Other),
    (&["POST"], &[Lit("containers"), Lit("create")], Kind::Other),
    (&["POST"], &[Lit("containers"), Lit("prune")], Kind::Other),
    (
        &["GET"],
        &[Lit("containers"), One, Lit("json")],
        Kind::Other,
    ),
    (&["GET"], &[Lit("containers"), One, Lit("top")], Kind::Other),
    (
        &["GET"],
        &[Lit("containers"), One, Lit("logs")],
        Kind::Other,
    ),
    (
        &["GET"],
        &[Lit("containers"), One, Lit("changes")],
        Kind::Other,
    ),
    (
        &["GET"],
        &[Lit("containers"), One, Lit("export")],
        Kind::Other,
    ),
    (
        &["GET"],
        &[Lit("containers"), One, Lit("stats")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("resize")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("start")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("stop")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("restart")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("kill")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("update")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("rename")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("pause")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("unpause")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("attach")],
        Kind::Hijack,
    ),
    (
        &["GET"],
        &[Lit("containers"), One, Lit("attach"), Lit("ws")],
        Kind::Hijack,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("wait")],
        Kind::Other,
    ),
    (&["DELETE"], &[Lit("containers"), One], Kind::Other),
    (
        &["HEAD", "GET", "PUT"],
        &[Lit("containers"), One, Lit("archive")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("containers"), One, Lit("exec")],
        Kind::Other,
    ),
    (&["POST"], &[Lit("exec"), One, Lit("start")], Kind::Hijack),
    (&["POST"], &[Lit("exec"), One, Lit("resize")], Kind::Other),
    (&["GET"], &[Lit("exec"), One, Lit("json")], Kind::Other),
    // images
    (&["GET"], &[Lit("images"), Lit("json")], Kind::Other),
    (&["POST"], &[Lit("build")], Kind::Policed(Gate::Build)),
    (
        &["POST"],
        &[Lit("images"), Lit("create")],
        Kind::Policed(Gate::ImagesCreate),
    ),
    (
        &["GET"],
        &[Lit("images"), Lit("search")],
        Kind::Policed(Gate::ImagesSearch),
    ),
    (&["POST"], &[Lit("images"), Lit("prune")], Kind::Other),
    (&["GET"], &[Lit("images"), Lit("get")], Kind::Other),
    (
        &["POST"],
        &[Lit("images"), Lit("load")],
        Kind::Policed(Gate::ImagesLoad),
    ),
    (&["POST"], &[Lit("commit")], Kind::Other),
    (&["GET"], &[Lit("images"), Many, Lit("json")], Kind::Other),
    (
        &["GET"],
        &[Lit("images"), Many, Lit("history")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("images"), Many, Lit("push")],
        Kind::Policed(Gate::ImagesPush),
    ),
    (&["POST"], &[Lit("images"), Many, Lit("tag")], Kind::Other),
    (&["GET"], &[Lit("images"), Many, Lit("get")], Kind::Other),
    (&["DELETE"], &[Lit("images"), Many], Kind::Other),
    // networks
    (&["GET"], &[Lit("networks")], Kind::Other),
    (&["POST"], &[Lit("networks"), Lit("create")], Kind::Other),
    (&["POST"], &[Lit("networks"), Lit("prune")], Kind::Other),
    (&["GET", "DELETE"], &[Lit("networks"), One], Kind::Other),
    (
        &["POST"],
        &[Lit("networks"), One, Lit("connect")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("networks"), One, Lit("disconnect")],
        Kind::Other,
    ),
    // volumes
    (&["GET"], &[Lit("volumes")], Kind::Other),
    (&["POST"], &[Lit("volumes"), Lit("create")], Kind::Other),
    (&["POST"], &[Lit("volumes"), Lit("prune")], Kind::Other),
    (&["GET", "DELETE"], &[Lit("volumes"), One], Kind::Other),
    // swarm
    (&["GET"], &[Lit("swarm")], Kind::Other),
    (&["POST"], &[Lit("swarm"), Lit("init")], Kind::Other),
    (
        &["POST"],
        &[Lit("swarm"), Lit("join")],
        Kind::Policed(Gate::SwarmJoin),
    ),
    (&["POST"], &[Lit("swarm"), Lit("leave")], Kind::Other),
    (&["POST"], &[Lit("swarm"), Lit("update")], Kind::Other),
    (&["GET"], &[Lit("swarm"), Lit("unlockkey")], Kind::Other),
    (&["POST"], &[Lit("swarm"), Lit("unlock")], Kind::Other),
    (&["GET"], &[Lit("nodes")], Kind::Other),
    (&["GET", "DELETE"], &[Lit("nodes"), One], Kind::Other),
    (&["POST"], &[Lit("nodes"), One, Lit("update")], Kind::Other),
    (&["GET"], &[Lit("services")], Kind::Other),
    (
        &["POST"],
        &[Lit("services"), Lit("create")],
        Kind::Policed(Gate::ServiceCreate),
    ),
    (&["GET", "DELETE"], &[Lit("services"), One], Kind::Other),
    (
        &["POST"],
        &[Lit("services"), One, Lit("update")],
        Kind::Policed(Gate::ServiceUpdate),
    ),
    (&["GET"], &[Lit("services"), One, Lit("logs")], Kind::Other),
    (&["GET"], &[Lit("tasks")], Kind::Other),
    (&["GET"], &[Lit("tasks"), One], Kind::Other),
    (&["GET"], &[Lit("secrets")], Kind::Other),
    (&["POST"], &[Lit("secrets"), Lit("create")], Kind::Other),
    (&["GET", "DELETE"], &[Lit("secrets"), One], Kind::Other),
    (
        &["POST"],
        &[Lit("secrets"), One, Lit("update")],
        Kind::Other,
    ),
    // plugins
    (&["GET"], &[Lit("plugins")], Kind::Other),
    (
        &["GET"],
        &[Lit("plugins"), Lit("privileges")],
        Kind::Policed(Gate::PluginPrivileges),
    ),
    (
        &["POST"],
        &[Lit("plugins"), Lit("pull")],
        Kind::Policed(Gate::PluginPull),
    ),
    (
        &["POST"],
        &[Lit("plugins"), Lit("create")],
        Kind::Policed(Gate::PluginCreate),
    ),
    (&["GET"], &[Lit("plugins"), Many, Lit("json")], Kind::Other),
    (
        &["POST"],
        &[Lit("plugins"), Many, Lit("enable")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("plugins"), Many, Lit("disable")],
        Kind::Other,
    ),
    (
        &["POST"],
        &[Lit("plugins"), Many, Lit("push")],
        Kind::Policed(Gate::PluginPush),
    ),
    // Documented from API 1.26, but dockerd 20.10 serves it at any version: `remote` pulls.
    (
        &["POST"],
        &[Lit("plugins"), Many, Lit("upgrade")],
        Kind::Policed(Gate::PluginUpgrade),
    ),
    (&["POST"], &[Lit("plugins"), Many, Lit("set")], Kind::Other),
    (&["DELETE"], &[Lit("plugins"), Many], Kind::Other),
];

/// (since, methods, pattern, kind): routes added after v1.25, served from the version that added
/// them (moby's `api/docs/CHANGELOG.md`; the audit is in the manual). BuildKit's `/session` and
/// `/grpc`, `/build/cancel`, checkpoints and `/debug` are in neither table: refused at every
/// version.
const LATER: &[(ApiVersion, &[&str], &[Seg], Kind)] = &[
    (
        ApiVersion::new(1, 29),
        &["GET"],
        &[Lit("tasks"), One, Lit("logs")],
        Kind::Other,
    ),
    (
        ApiVersion::new(1, 30),
        &["GET"],
        &[Lit("distribution"), Many, Lit("json")],
        Kind::Policed(Gate::Distribution),
    ),
    (
        ApiVersion::new(1, 30),
        &["GET"],
        &[Lit("configs")],
        Kind::Other,
    ),
    (
        ApiVersion::new(1, 30),
        &["POST"],
        &[Lit("configs"), Lit("create")],
        Kind::Other,
    ),
    (
        ApiVersion::new(1, 30),
        &["GET", "DELETE"],
        &[Lit("configs"), One],
        Kind::Other,
    ),
    (
        ApiVersion::new(1, 30),
        &["POST"],
        &[Lit("configs"), One, Lit("update")],
        Kind::Other,
    ),
    (
        ApiVersion::new(1, 31),
        &["POST"],
        &[Lit("build"), Lit("prune")],
        Kind::Other,
    ),
    (
        ApiVersion::new(1, 42),
        &["PUT"],
        &[Lit("volumes"), One],
        Kind::Other,
    ),
    (
        ApiVersion::new(1, 55),
        &["GET"],
        &[Lit("images"), Many, Lit("attestations")],
        Kind::Other,
    ),
];

/// Routes a request against every audited version (see [`route_in`]).
pub fn route(method: &Method, path: &str) -> Result<Routed, Refusal> {
    route_in(method, path, ApiRange::audited())
}

/// Routes a request: version prefix within `range`, canonical path check, route table.
///
/// `path` is the raw request path (percent-encoded, without the query). It is decoded the way
/// Go's `net/url` does before matching, as dockerd matches decoded paths; a path that is not
/// canonical is refused rather than guessed at, so this router and dockerd's can never disagree
/// about which endpoint a request reaches.
pub fn route_in(method: &Method, path: &str, range: ApiRange) -> Result<Routed, Refusal> {
    let decoded = percent_decode(path).ok_or(Refusal::BadPath)?;
    if !decoded.starts_with('/')
        || decoded.contains("//")
        || decoded.split('/').any(|s| s == "." || s == "..")
        || decoded.bytes().any(|b| b.is_ascii_control())
    {
        return Err(Refusal::BadPath);
    }
    let (version, versioned, endpoint) = match decoded.strip_prefix("/v").and_then(|rest| {
        let (v, tail) = rest.split_once('/').unwrap_or((rest, ""));
        ApiVersion::parse(v).map(|v| (v, tail))
    }) {
        Some((v, tail)) => (v, true, format!("/{tail}")),
        None => (range.ceiling, false, decoded),
    };
    if version > range.ceiling {
        return Err(Refusal::TooNew {
            version,
            ceiling: range.ceiling,
        });
    }
    if version < range.floor {
        return Err(Refusal::TooOld {
            version,
            floor: range.floor,
        });
    }
    let trimmed = endpoint.strip_suffix('/').unwrap_or(&endpoint);
    let segments: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    let found = |methods: &[&str], pattern: &[Seg]| {
        methods.contains(&method.as_str()) && matches_pattern(pattern, &segments)
    };
    let kind = ROUTES
        .iter()
        .find(|(methods, pattern, _)| found(methods, pattern))
        .map(|(_, _, kind)| *kind)
        .or_else(|| {
            LATER
                .iter()
                .find(|(since, methods, pattern, _)| version >= *since && found(methods, pattern))
                .map(|(_, _, _, kind)| *kind)
        })
        .ok_or(Refusal::NotFound(version))?;
    Ok(Routed {
        version,
        versioned,
        endpoint,
        kind,
    })
}

/// Matches in time linear in the path: a pattern has at most one `Many` (a test checks), which
/// takes exactly the segments the fixed parts around it leave. (Trying every split instead was
/// quadratic: a 64 KiB path of 32 000 segments cost seconds of CPU.)
fn matches_pattern(pattern: &[Seg], segments: &[&str]) -> bool {
    let fixed = |pattern: &[Seg], segments: &[&str]| {
        pattern.len() == segments.len()
            && pattern.iter().zip(segments).all(|(p, s)| match p {
                Lit(l) => l == s,
                One | Many => !s.is_empty(),
            })
    };
    match pattern.iter().position(|p| matches!(p, Many)) {
        None => fixed(pattern, segments),
        Some(i) => {
            let (head, tail) = (&pattern[..i], &pattern[i + 1..]);
            let Some(many) = segments.len().checked_sub(head.len() + tail.len()) else {
                return false;
            };
            let (seg_head, rest) = segments.split_at(head.len());
            let (seg_many, seg_tail) = rest.split_at(many);
            many >= 1
                && fixed(head, seg_head)
                && fixed(tail, seg_tail)
                && seg_many.iter().all(|s| !s.is_empty())
        }
    }
}

/// Decodes `%XX` escapes as Go's `url.PathUnescape` does; `None` for a malformed escape or a
/// result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_routes_are_refused_with_the_classic_builder_hint() {
        for path in [
            "/session",
            "/v1.41/session",
            "/grpc",
            "/v1.44/grpc/",
            "/grpc/x",
        ] {
            let refusal = route(&Method::POST, path).unwrap_err();
            let message = refusal.message(&Method::POST, path);
            assert!(message.contains("DOCKER_BUILDKIT=0"), "{path}: {message}");
        }
        let other = route(&Method::POST, "/v1.25/sessions").unwrap_err();
        assert!(
            other
                .message(&Method::POST, "/v1.25/sessions")
                .starts_with("page not found")
        );
    }

    #[test]
    fn patterns_have_at_most_one_many() {
        let later = LATER.iter().map(|(_, _, pattern, _)| pattern);
        for pattern in ROUTES.iter().map(|(_, pattern, _)| pattern).chain(later) {
            assert!(pattern.iter().filter(|p| matches!(p, Many)).count() <= 1);
        }
    }

    #[test]
    fn names_with_slashes_match_many() {
        let get = |path: &str| r("GET", path).map(|r| r.endpoint);
        assert!(get("/v1.25/images/reg:5000/a/b/c/json").is_ok());
        assert!(get("/v1.25/images/json").is_ok(), "the list route");
        assert!(r("POST", "/v1.25/images/a/b/tag").is_ok());
        assert!(r("POST", "/v1.25/images/tag").is_err(), "a name is needed");
        assert!(r("DELETE", "/v1.25/images/a/b/c").is_ok());
        assert!(r("GET", "/v1.25/images/a/b/c/x").is_err());
        // Linear: a path of 30 000 segments is refused at once.
        let long = format!("/v1.25/images/{}x", "a/".repeat(30_000));
        assert!(r("GET", &long).is_err());
    }

    fn r(method: &str, path: &str) -> Result<Routed, Refusal> {
        route(&Method::from_bytes(method.as_bytes()).unwrap(), path)
    }

    fn v(minor: u16) -> ApiVersion {
        ApiVersion::new(1, minor)
    }

    #[test]
    fn versions() {
        let in_range = |method: &str, path: &str, floor: u16, ceiling: u16| {
            let range = ApiRange {
                floor: v(floor),
                ceiling: v(ceiling),
            };
            route_in(&Method::from_bytes(method.as_bytes()).unwrap(), path, range)
        };
        let ok = in_range("GET", "/v1.25/containers/json", 24, 41).unwrap();
        assert_eq!(
            (ok.version, ok.versioned, ok.endpoint.as_str()),
            (v(25), true, "/containers/json")
        );
        // Unversioned paths are the ceiling.
        let ok = in_range("GET", "/containers/json", 24, 41).unwrap();
        assert_eq!((ok.version, ok.versioned), (v(41), false));
        assert_eq!(
            in_range("GET", "/v1.24/info", 24, 41).unwrap().version,
            v(24)
        );
        assert_eq!(
            in_range("GET", "/v1.42/info", 24, 41),
            Err(Refusal::TooNew {
                version: v(42),
                ceiling: v(41)
            })
        );
        assert_eq!(
            in_range("GET", "/v2.0/info", 24, 41),
            Err(Refusal::TooNew {
                version: ApiVersion::new(2, 0),
                ceiling: v(41)
            })
        );
        assert_eq!(
            in_range("GET", "/v1.23/info", 24, 41),
            Err(Refusal::TooOld {
                version: v(23),
                floor: v(24)
            })
        );
        assert_eq!(
            in_range("GET", "/v1.43/info", 44, 55),
            Err(Refusal::TooOld {
                version: v(43),
                floor: v(44)
            })
        );
        assert_eq!(
            Refusal::TooNew {
                version: v(55),
                ceiling: v(41)
            }
            .message(&Method::GET, "/"),
            "client version 1.55 is too new. Maximum supported API version is 1.41"
        );
        assert_eq!(
            Refusal::TooOld {
                version: v(11),
                floor: v(24)
            }
            .message(&Method::GET, "/"),
            "client version 1.11 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version"
        );
        // A route added later is served from its version on, and unversioned at a ceiling
        // that has it.
        assert_eq!(
            in_range("GET", "/v1.29/configs", 24, 41),
            Err(Refusal::NotFound(v(29)))
        );
        assert_eq!(
            in_range("GET", "/v1.30/configs", 24, 41).unwrap().kind,
            Kind::Other
        );
        assert_eq!(
            in_range("GET", "/configs", 24, 25),
            Err(Refusal::NotFound(v(25)))
        );
        assert_eq!(
            in_range("GET", "/distribution/reg.x/a/json", 24, 41)
                .unwrap()
                .kind,
            Kind::Policed(Gate::Distribution)
        );
        assert_eq!(
            in_range("PUT", "/v1.41/volumes/x", 24, 41),
            Err(Refusal::NotFound(v(41)))
        );
        assert_eq!(
            in_range("PUT", "/v1.42/volumes/x", 24, 55).unwrap().kind,
            Kind::Other
        );
    }

    #[test]
    fn classification() {
        assert_eq!(r("HEAD", "/_ping").unwrap().kind, Kind::Ping);
        assert_eq!(r("GET", "/v1.25/version").unwrap().kind, Kind::Version);
        assert_eq!(
            r("POST", "/v1.25/images/create").unwrap().kind,
            Kind::Policed(Gate::ImagesCreate)
        );
        assert_eq!(
            r("POST", "/v1.25/auth").unwrap().kind,
            Kind::Policed(Gate::Auth)
        );
        assert_eq!(
            r("POST", "/v1.25/containers/abc/attach").unwrap().kind,
            Kind::Hijack
        );
        assert_eq!(
            r("POST", "/v1.25/exec/abc/start").unwrap().kind,
            Kind::Hijack
        );
        assert_eq!(
            r("GET", "/v1.25/images/reg.x:5000/a/b/json").unwrap().kind,
            Kind::Other
        );
        assert_eq!(
            r("DELETE", "/v1.25/images/reg.x:5000/a/b:tag")
                .unwrap()
                .kind,
            Kind::Other
        );
        assert_eq!(
            r("PUT", "/v1.25/containers/abc/archive").unwrap().kind,
            Kind::Other
        );
        assert_eq!(
            r("GET", "/v1.25/containers/json/").unwrap().kind,
            Kind::Other
        );
    }

    #[test]
    fn newer_routes_and_odd_paths_are_refused() {
        for (m, p) in [
            ("GET", "/v1.25/distribution/busybox/json"),
            ("GET", "/v1.25/configs"),
            ("POST", "/v1.25/build/prune"),
            ("GET", "/v1.25/containers/create"),
            ("PATCH", "/v1.25/containers/json"),
            ("GET", "/v1.25/"),
        ] {
            assert_eq!(r(m, p), Err(Refusal::NotFound(v(25))), "{m} {p}");
        }
        // BuildKit's doors and the debug endpoints: at every version, and unversioned.
        for (m, p) in [
            ("POST", "/session"),
            ("POST", "/grpc"),
            ("POST", "/build/cancel"),
            ("GET", "/debug/vars"),
            ("GET", "/debug/pprof/"),
            ("OPTIONS", "/_ping"),
        ] {
            assert!(
                matches!(r(m, p), Err(Refusal::NotFound(_))),
                "{m} {p} unversioned"
            );
            for minor in [24, 25, 31, 41, 44, 55] {
                let versioned = format!("/v1.{minor}{p}");
                assert_eq!(
                    r(m, &versioned),
                    Err(Refusal::NotFound(v(minor))),
                    "{m} {versioned}"
                );
            }
        }
        for p in [
            "//images/create",
            "/v1.25//images/create",
            "/v1.25/images/../images/create",
            "/images/%zz",
            "/a/./b",
            "/images/%2e%2e/create",
        ] {
            assert_eq!(r("POST", p), Err(Refusal::BadPath), "{p}");
        }
        // Encoded letters decode to the same endpoint dockerd sees.
        assert_eq!(
            r("POST", "/v1.25/%69mages/create").unwrap().kind,
            Kind::Policed(Gate::ImagesCreate)
        );
    }
}
