//! The registry-policy gate: what does a request bring in or send out?
//!
//! Each policed route (a [`Gate`], named in the route table) reads its request into an [`Ask`]:
//! image references or registries, each with an [`Action`], or content that comes from no
//! registry at all ([`Unsourced`]). Deciding, auditing and refusing are done in one place for every
//! gate (`police.rs`).
//!
//! Parameters are read exactly as dockerd reads them (Go's `r.Form.Get`: the first value, pairs
//! split on `&` only, pairs with `;` or a bad escape skipped), so the image decided here is the
//! image dockerd pulls. A form-encoded body would be merged into dockerd's form ahead of the query
//! string; such requests are refused on gated routes instead of being parsed twice.

use vch_policy::{ImageRef, Registry};

use crate::gojson;

/// Parses a query string as Go's `url.ParseQuery`, keeping pairs in order.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if let (Some(k), Some(v)) = (query_unescape(k), query_unescape(v)) {
            out.push((k, v));
        }
    }
    out
}

/// Go's `r.Form.Get`: the first value of a key, or "".
pub fn form_get<'a>(form: &'a [(String, String)], key: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// `url.QueryUnescape`: `+` is a space, `%XX` escapes; `None` when malformed or not UTF-8.
fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A route whose requests can bring an image in (or send one out): the gate reads each such
/// request into what it asks of the policy, one small function per gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gate {
    /// `POST /images/create`: a pull (`fromImage`) or an import (`fromSrc`).
    ImagesCreate,
    /// `POST /images/load`: images from a tar body.
    ImagesLoad,
    /// `POST /images/{name}/push`.
    ImagesPush,
    /// `GET /images/search`: the registry of `term` is contacted.
    ImagesSearch,
    /// `POST /plugins/pull` (`remote`).
    PluginPull,
    /// `GET /plugins/privileges` (`remote`): dockerd fetches the plugin's config from the registry.
    PluginPrivileges,
    /// `POST /plugins/{name}/upgrade` (`remote`).
    PluginUpgrade,
    /// `POST /plugins/create`: a plugin from a tar body.
    PluginCreate,
    /// `POST /plugins/{name}/push`: the plugin goes to the registry its name names.
    PluginPush,
    /// `POST /services/create`: a JSON `ServiceSpec`.
    ServiceCreate,
    /// `POST /services/{id}/update`: a JSON `ServiceSpec`.
    ServiceUpdate,
    /// `POST /build`: `remote=` here; the context itself is read by the build gate.
    Build,
    /// `GET /distribution/{name}/json` (API 1.30): dockerd fetches the manifest from the registry.
    Distribution,
    /// `POST /swarm/join`: a foreign manager's services would make this engine pull images that
    /// never pass this endpoint.
    SwarmJoin,
    /// `POST /auth`: a registry login (JSON `serveraddress`).
    Auth,
}

impl Gate {
    /// The route's name in audit records (`images/push`).
    pub fn name(self) -> &'static str {
        match self {
            Gate::ImagesCreate => "images/create",
            Gate::ImagesLoad => "images/load",
            Gate::ImagesPush => "images/push",
            Gate::ImagesSearch => "images/search",
            Gate::PluginPull => "plugins/pull",
            Gate::PluginPrivileges => "plugins/privileges",
            Gate::PluginUpgrade => "plugins/upgrade",
            Gate::PluginCreate => "plugins/create",
            Gate::PluginPush => "plugins/push",
            Gate::ServiceCreate => "services/create",
            Gate::ServiceUpdate => "services/update",
            Gate::Build => "build",
            Gate::SwarmJoin => "swarm/join",
            Gate::Distribution => "distribution",
            Gate::Auth => "auth",
        }
    }

    /// Whether the gate decides on the request body, which is then read whole (up to the
    /// inspection cap) and forwarded as exactly the bytes decided on.
    pub fn reads_body(self) -> bool {
        matches!(self, Gate::Auth | Gate::ServiceCreate | Gate::ServiceUpdate)
    }

    /// What a request on this route asks of the policy. `endpoint` is the routed, decoded path
    /// without its version prefix; `form` the query as Go reads it; `body` the request body when
    /// [`Gate::reads_body`], else empty. An `Err` is a malformed request (400).
    pub fn ask(
        self,
        endpoint: &str,
        form: &[(String, String)],
        body: &[u8],
    ) -> Result<Ask, String> {
        match self {
            Gate::ImagesCreate => images_create(form).map(|create| match create {
                ImagesCreate::Pull(image) => Ask::one(Action::Pull, Subject::Image(image)),
                ImagesCreate::Import => Ask::Unsourced(Unsourced::Import),
            }),
            Gate::ImagesLoad => Ok(Ask::Unsourced(Unsourced::Load)),
            Gate::ImagesPush => push(endpoint, form_get(form, "tag")),
            Gate::ImagesSearch => search_registry(form_get(form, "term"))
                .map(|registry| Ask::one(Action::Search, Subject::Registry(registry))),
            Gate::PluginPull | Gate::PluginPrivileges | Gate::PluginUpgrade => {
                plugin_remote(form_get(form, "remote"))
                    .map(|image| Ask::one(Action::Pull, Subject::Image(image)))
            }
            Gate::PluginCreate => Ok(Ask::Unsourced(Unsourced::PluginCreate)),
            Gate::PluginPush => plugin_push(endpoint),
            Gate::ServiceCreate | Gate::ServiceUpdate => service(body),
            Gate::Build => Ok(build(form)),
            Gate::Distribution => distribution(endpoint),
            Gate::SwarmJoin => Ok(Ask::Unsourced(Unsourced::SwarmJoin)),
            Gate::Auth => auth_registry(body)
                .map(|registry| Ask::one(Action::Login, Subject::Registry(registry))),
        }
    }
}

/// What a request asks of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// A feature this endpoint does not serve, in any mode (400 with the reason).
    Unsupported(&'static str),
    /// Each item must be allowed.
    Items(Vec<Item>),
    /// Content from no registry: refused in whitelist mode.
    Unsourced(Unsourced),
    /// Nothing to decide.
    Nothing,
}

impl Ask {
    fn one(action: Action, subject: Subject) -> Ask {
        Ask::Items(vec![Item { action, subject }])
    }
}

/// One thing to decide: an image or a registry, and what is done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Pull, push, login or search.
    pub action: Action,
    /// The image or registry.
    pub subject: Subject,
}

/// What is done with a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// An image comes in from it (pulls, plugin pulls, service images).
    Pull,
    /// An image goes out to it: decided by the push list.
    Push,
    /// Credentials are checked against it.
    Login,
    /// It is searched.
    Search,
}

impl Action {
    /// `pull`, `push`, `login` or `search`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Login => "login",
            Action::Search => "search",
        }
    }
}

/// What an item names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// An image reference: its registry and repository path are matched.
    Image(ImageRef),
    /// A registry as a whole.
    Registry(Registry),
}

impl Subject {
    /// The registry decided on.
    pub fn registry(&self) -> &Registry {
        match self {
            Subject::Image(image) => image.registry(),
            Subject::Registry(registry) => registry,
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Image(image) => image.fmt(f),
            Subject::Registry(registry) => registry.fmt(f),
        }
    }
}

/// Content that comes from no registry, so no whitelist entry can vouch for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsourced {
    /// `POST /images/create` without `fromImage`: an import from a URL or the body.
    Import,
    /// `POST /images/load`.
    Load,
    /// `POST /plugins/create`.
    PluginCreate,
    /// `POST /build?remote=…`: a git, tarball or Dockerfile URL that dockerd fetches itself.
    BuildRemote,
    /// A service with `PluginSpec` or a runtime other than `container` (the runtime, `plugin`
    /// when only `PluginSpec` is set).
    ServiceRuntime(String),
    /// `POST /swarm/join`: the managers of another swarm would schedule services here.
    SwarmJoin,
    /// `POST /plugins/{name}/push` with a name that could be an ID prefix: dockerd would push
    /// whichever plugin's ID starts with it, to that plugin's own name. Refused whenever pushes
    /// are restricted (whitelist mode or a push list).
    PluginPushById,
}

impl Unsourced {
    /// The audit record's `action`.
    pub fn action(&self) -> &'static str {
        match self {
            Unsourced::Import => "import",
            Unsourced::Load => "load",
            Unsourced::PluginCreate => "plugin-create",
            Unsourced::BuildRemote => "build-remote",
            Unsourced::ServiceRuntime(_) => "service-runtime",
            Unsourced::SwarmJoin => "swarm-join",
            Unsourced::PluginPushById => "push",
        }
    }

    /// The refusal, in whitelist mode.
    pub fn denial_message(&self) -> String {
        const NO_REGISTRY: &str = "the content comes from no registry";
        let what = match self {
            Unsourced::Import => "Image import (fromSrc) is",
            Unsourced::Load => "Image load (docker load) is",
            Unsourced::PluginCreate => "Plugin creation from an archive (docker plugin create) is",
            Unsourced::BuildRemote => {
                return "Builds from a remote context (remote=…) are not allowed while VCH is in \
                        whitelist mode: the context comes from no registry and cannot be \
                        inspected before the Docker engine fetches it"
                    .to_owned();
            }
            Unsourced::PluginPushById => {
                return "Access denied: push a plugin by its name, not by an ID prefix (the VCH \
                        decides a push by the name it goes to)"
                    .to_owned();
            }
            Unsourced::SwarmJoin => {
                return "Joining a swarm (docker swarm join) is not allowed while VCH is in \
                        whitelist mode: the other swarm's managers would run services whose images \
                        this VCH never decides"
                    .to_owned();
            }
            Unsourced::ServiceRuntime(runtime) if runtime == "plugin" => {
                return "Services with the plugin runtime are not allowed while VCH is in \
                        whitelist mode: plugins come from no whitelisted pull"
                    .to_owned();
            }
            Unsourced::ServiceRuntime(runtime) => {
                return format!(
                    "Services with runtime {runtime:?} are not allowed while VCH is in whitelist mode"
                );
            }
        };
        format!("{what} not allowed while VCH is in whitelist mode: {NO_REGISTRY}")
    }
}

/// What `POST /images/create` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagesCreate {
    /// A pull of this reference (`fromImage`, with `tag` as tag or digest).
    Pull(ImageRef),
    /// An import (`fromSrc`): no registry involved.
    Import,
}

/// Reads `POST /images/create` as dockerd's `postImagesCreate` does. An unparsable `fromImage` is
/// an error (dockerd would refuse it too; refusing here keeps it from reaching dockerd at all).
pub fn images_create(form: &[(String, String)]) -> Result<ImagesCreate, String> {
    let image = form_get(form, "fromImage");
    if image.is_empty() {
        return Ok(ImagesCreate::Import);
    }
    with_tag(image, form_get(form, "tag")).map(ImagesCreate::Pull)
}

/// `name` with `tag` applied as dockerd applies it: a `tag` that holds a `:` is a digest and makes
/// a digest reference; otherwise it replaces any tag in `name`.
fn with_tag(name: &str, tag: &str) -> Result<ImageRef, String> {
    let named = ImageRef::parse(name).map_err(|e| e.to_string())?;
    if tag.is_empty() {
        return Ok(named);
    }
    let text = if tag.contains(':') {
        format!("{}@{tag}", named.name_str())
    } else {
        format!("{}:{tag}", named.name_str())
    };
    ImageRef::parse(&text).map_err(|e| e.to_string())
}

/// The name between a route's fixed prefix and suffix (`/images/` … `/push`), as routed (decoded,
/// a trailing `/` allowed).
pub(crate) fn name_in<'a>(
    endpoint: &'a str,
    prefix: &str,
    suffix: &str,
) -> Result<&'a str, String> {
    endpoint
        .strip_prefix(prefix)
        .and_then(|rest| rest.trim_end_matches('/').strip_suffix(suffix))
        .filter(|name| !name.is_empty())
        .ok_or_else(|| format!("no name in {endpoint:?}"))
}

/// What BuildKit-only parameters get: the classic builder is the one whose pulls can be decided.
pub const BUILDKIT_UNSUPPORTED: &str = "BuildKit is not available through this VCH: it serves the \
    classic builder only, whose base images it can decide (set DOCKER_BUILDKIT=0, or use \
    `docker build` without buildx)";

/// `POST /build`: BuildKit (`version=2`, a `session`, a `buildid`, `outputs`) is refused in every
/// mode, as `/session` and `/grpc` are; a `remote` context comes from no registry.
fn build(form: &[(String, String)]) -> Ask {
    let buildkit = form_get(form, "version") == "2"
        || ["session", "buildid", "outputs"]
            .iter()
            .any(|key| !form_get(form, key).is_empty());
    if buildkit {
        Ask::Unsupported(BUILDKIT_UNSUPPORTED)
    } else if form_get(form, "remote").is_empty() {
        Ask::Nothing
    } else {
        Ask::Unsourced(Unsourced::BuildRemote)
    }
}

/// `GET /distribution/{name}/json`: the registry of `{name}` is asked for its manifest.
fn distribution(endpoint: &str) -> Result<Ask, String> {
    let name = name_in(endpoint, "/distribution/", "/json")?;
    let image = ImageRef::parse(name).map_err(|e| e.to_string())?;
    Ok(Ask::one(Action::Pull, Subject::Image(image)))
}

/// `POST /images/{name}/push?tag=`: the repository pushed to.
fn push(endpoint: &str, tag: &str) -> Result<Ask, String> {
    let name = name_in(endpoint, "/images/", "/push")?;
    // Push by digest is not supported by dockerd: a tag is a tag.
    let image = if tag.is_empty() || tag.contains(':') {
        ImageRef::parse(name).map_err(|e| e.to_string())?
    } else {
        with_tag(name, tag)?
    };
    Ok(Ask::one(Action::Push, Subject::Image(image)))
}

/// The registry a search `term` goes to, split as dockerd's `splitReposSearchTerm` splits it:
/// the part before the first `/` is a registry when it holds a `.` or a `:` or is `localhost`;
/// anything else is searched on Docker Hub.
pub fn search_registry(term: &str) -> Result<Registry, String> {
    match term.split_once('/') {
        Some((index, _)) if index.contains('.') || index.contains(':') || index == "localhost" => {
            Registry::parse(index).map_err(|e| e.to_string())
        }
        _ => Ok(Registry::docker_hub()),
    }
}

/// A plugin's `remote`, parsed as dockerd's `reference.ParseNormalizedNamed` does.
fn plugin_remote(remote: &str) -> Result<ImageRef, String> {
    ImageRef::parse(remote).map_err(|e| e.to_string())
}

/// `POST /plugins/{name}/push`: dockerd pushes the plugin to the repository its name is.
fn plugin_push(endpoint: &str) -> Result<Ask, String> {
    let name = name_in(endpoint, "/plugins/", "/push")?;
    // dockerd looks a plugin up by name, then by ID prefix, and pushes it to its stored name:
    // a name that could be an ID prefix may push another plugin to anywhere.
    if name
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Ok(Ask::Unsourced(Unsourced::PluginPushById));
    }
    let image = ImageRef::parse(name).map_err(|e| e.to_string())?;
    Ok(Ask::one(Action::Push, Subject::Image(image)))
}

/// A `ServiceSpec` body: its container image is pulled on every node; a plugin runtime pulls a
/// plugin (`PluginSpec.Remote`) that nothing here can vouch for.
fn service(body: &[u8]) -> Result<Ask, String> {
    let spec = gojson::service_spec(body).map_err(|e| format!("invalid service spec: {e}"))?;
    if spec.plugin_remote.is_some() || !(spec.runtime.is_empty() || spec.runtime == "container") {
        let runtime = if spec.runtime.is_empty() {
            "plugin".to_owned()
        } else {
            spec.runtime
        };
        return Ok(Ask::Unsourced(Unsourced::ServiceRuntime(runtime)));
    }
    match spec.container_image.as_deref() {
        // dockerd refuses a container service without an image itself.
        None | Some("") => Ok(Ask::Nothing),
        Some(image) => ImageRef::parse(image)
            .map(|image| Ask::one(Action::Pull, Subject::Image(image)))
            .map_err(|e| e.to_string()),
    }
}

/// The registry of a `POST /auth` body (`serveraddress`, read with Go's JSON rules; empty means
/// Docker Hub).
pub fn auth_registry(body: &[u8]) -> Result<Registry, String> {
    let config =
        gojson::auth_config(body).map_err(|e| format!("invalid auth request body: {e}"))?;
    Registry::parse(&config.server_address).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_like_go() {
        let q = parse_query("fromImage=reg.x%2Fa&tag=1&fromImage=evil.x/b&x;y=1&bad=%zz&sp=a+b");
        assert_eq!(form_get(&q, "fromImage"), "reg.x/a");
        assert_eq!(form_get(&q, "tag"), "1");
        assert_eq!(form_get(&q, "bad"), "");
        assert_eq!(form_get(&q, "sp"), "a b");
        assert_eq!(form_get(&q, "x"), "");
    }

    #[test]
    fn pulls_as_dockerd_builds_them() {
        let pull = |q: &str| match images_create(&parse_query(q)) {
            Ok(ImagesCreate::Pull(r)) => r.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            pull("fromImage=busybox&tag=latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(pull("fromImage=reg.x:5000/a&tag=v1"), "reg.x:5000/a:v1");
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            pull(&format!("fromImage=reg.x/a&tag={d}")),
            format!("reg.x/a@{d}")
        );
        assert_eq!(pull("fromImage=reg.x/a:v2"), "reg.x/a:v2");
        assert_eq!(pull("fromImage=reg.x/a:v2&tag=v3"), "reg.x/a:v3");
        assert_eq!(
            images_create(&parse_query("fromSrc=-&repo=x")),
            Ok(ImagesCreate::Import)
        );
        assert!(images_create(&parse_query("fromImage=Bad/Name")).is_err());
    }

    #[test]
    fn auth_server_address() {
        assert!(
            auth_registry(br#"{"username":"u","password":"p"}"#)
                .unwrap()
                .is_docker_hub()
        );
        assert_eq!(
            auth_registry(br#"{"serveraddress":"https://reg.x:5000/v2/"}"#)
                .unwrap()
                .as_str(),
            "reg.x:5000"
        );
        assert!(auth_registry(b"not json").is_err());
    }

    fn ask(gate: Gate, target: &str, body: &str) -> Result<Ask, String> {
        let (endpoint, query) = target.split_once('?').unwrap_or((target, ""));
        gate.ask(endpoint, &parse_query(query), body.as_bytes())
    }

    fn items(ask: Result<Ask, String>) -> Vec<(Action, String)> {
        match ask {
            Ok(Ask::Items(items)) => items
                .into_iter()
                .map(|i| (i.action, i.subject.to_string()))
                .collect(),
            other => panic!("items expected, got {other:?}"),
        }
    }

    #[test]
    fn every_gate_names_what_it_asks() {
        assert_eq!(
            items(ask(
                Gate::ImagesPush,
                "/images/reg.x:5000/a/b/push?tag=v1",
                ""
            )),
            [(Action::Push, "reg.x:5000/a/b:v1".to_owned())]
        );
        assert_eq!(
            items(ask(Gate::ImagesPush, "/images/reg.x/a/push", "")),
            [(Action::Push, "reg.x/a:latest".to_owned())]
        );
        assert!(ask(Gate::ImagesPush, "/images/Bad/push", "").is_err());
        assert_eq!(
            items(ask(
                Gate::ImagesSearch,
                "/images/search?term=reg.x:5000/a",
                ""
            )),
            [(Action::Search, "reg.x:5000".to_owned())]
        );
        for hub in ["busybox", "library/busybox", "team/app", ""] {
            assert_eq!(
                items(ask(
                    Gate::ImagesSearch,
                    &format!("/images/search?term={hub}"),
                    ""
                )),
                [(Action::Search, "docker.io".to_owned())],
                "{hub}"
            );
        }
        assert_eq!(
            items(ask(
                Gate::ImagesSearch,
                "/images/search?term=localhost/a",
                ""
            )),
            [(Action::Search, "localhost".to_owned())]
        );
        for gate in [
            Gate::PluginPull,
            Gate::PluginPrivileges,
            Gate::PluginUpgrade,
        ] {
            assert_eq!(
                items(ask(
                    gate,
                    "/plugins/pull?remote=reg.x/p:1&remote=evil.x/p",
                    ""
                )),
                [(Action::Pull, "reg.x/p:1".to_owned())]
            );
            assert!(ask(gate, "/plugins/pull", "").is_err(), "no remote");
        }
        assert_eq!(
            items(ask(Gate::PluginPush, "/plugins/reg.x:5000/p:1/push", "")),
            [(Action::Push, "reg.x:5000/p:1".to_owned())]
        );
        assert_eq!(
            items(ask(
                Gate::Distribution,
                "/distribution/reg.x:5000/a/b:1/json",
                ""
            )),
            [(Action::Pull, "reg.x:5000/a/b:1".to_owned())]
        );
        assert!(
            ask(
                Gate::Distribution,
                &format!("/distribution/{}/json", "a".repeat(64)),
                ""
            )
            .is_err()
        );
        assert_eq!(
            ask(Gate::PluginPush, "/plugins/0123abcd/push", ""),
            Ok(Ask::Unsourced(Unsourced::PluginPushById))
        );
        assert_eq!(
            items(ask(Gate::PluginPush, "/plugins/0123abcdx/push", "")),
            [(
                Action::Push,
                "docker.io/library/0123abcdx:latest".to_owned()
            )]
        );
        assert_eq!(
            items(ask(Gate::Auth, "/auth", r#"{"ServerAddress":"reg.x"}"#)),
            [(Action::Login, "reg.x".to_owned())]
        );
        assert_eq!(
            items(ask(
                Gate::ServiceCreate,
                "/services/create",
                r#"{"TaskTemplate":{"ContainerSpec":{"Image":"reg.x/a:1"}}}"#
            )),
            [(Action::Pull, "reg.x/a:1".to_owned())]
        );
    }

    #[test]
    fn content_from_no_registry() {
        let unsourced = |gate, target, body| match ask(gate, target, body) {
            Ok(Ask::Unsourced(u)) => u,
            other => panic!("{target}: {other:?}"),
        };
        assert_eq!(
            unsourced(Gate::ImagesCreate, "/images/create?fromSrc=-", ""),
            Unsourced::Import
        );
        assert_eq!(
            unsourced(
                Gate::ImagesCreate,
                "/images/create?fromSrc=http://x/a.tar",
                ""
            ),
            Unsourced::Import
        );
        assert_eq!(
            unsourced(Gate::ImagesLoad, "/images/load", ""),
            Unsourced::Load
        );
        assert_eq!(
            unsourced(Gate::PluginCreate, "/plugins/create?name=x", ""),
            Unsourced::PluginCreate
        );
        assert_eq!(
            unsourced(Gate::Build, "/build?remote=https://github.com/x/y.git", ""),
            Unsourced::BuildRemote
        );
        assert_eq!(
            ask(Gate::Build, "/build?t=x&version=1", ""),
            Ok(Ask::Nothing)
        );
        for buildkit in [
            "version=2",
            "session=abc",
            "buildid=upload-request:x",
            "outputs=%5B%7B%22Type%22%3A%22image%22%7D%5D",
            "version=2&remote=client-session",
        ] {
            assert_eq!(
                ask(Gate::Build, &format!("/build?{buildkit}"), ""),
                Ok(Ask::Unsupported(BUILDKIT_UNSUPPORTED)),
                "{buildkit}"
            );
        }
        assert_eq!(
            unsourced(Gate::SwarmJoin, "/swarm/join", "{}"),
            Unsourced::SwarmJoin
        );
        assert_eq!(
            unsourced(
                Gate::ServiceUpdate,
                "/services/x/update",
                r#"{"TaskTemplate":{"PluginSpec":{"Remote":"reg.x/p"}}}"#
            ),
            Unsourced::ServiceRuntime("plugin".to_owned())
        );
        assert_eq!(
            unsourced(
                Gate::ServiceCreate,
                "/services/create",
                r#"{"TaskTemplate":{"Runtime":"attachment","ContainerSpec":{"Image":"reg.x/a"}}}"#
            ),
            Unsourced::ServiceRuntime("attachment".to_owned())
        );
        assert!(
            Unsourced::BuildRemote
                .denial_message()
                .contains("while VCH is in whitelist mode")
        );
        assert_eq!(
            ask(Gate::ServiceCreate, "/services/create", r#"{"Name":"x"}"#),
            Ok(Ask::Nothing)
        );
        assert!(ask(Gate::ServiceCreate, "/services/create", "[]").is_err());
    }
}
