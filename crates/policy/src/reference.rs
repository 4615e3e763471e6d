//! Image references, parsed exactly as Docker's `distribution/reference` `ParseDockerRef` does.

use std::fmt;
use std::net::IpAddr;

use crate::Error;
use crate::host::{Host, Registry, parse_name_or_ipv4, parse_port};

/// Longest name (registry and repository path) Docker accepts.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// A normalised image reference: registry, repository path, tag and digest.
///
/// Parsing follows Docker's `distribution/reference` (`ParseNormalizedNamed` then `TagNameOnly`,
/// as the daemon's `ParseDockerRef`):
///
/// | input | registry | path | printed as |
/// |---|---|---|---|
/// | `busybox` | `docker.io` | `library/busybox` | `docker.io/library/busybox:latest` |
/// | `index.docker.io/user/app` | `docker.io` | `user/app` | `docker.io/user/app:latest` |
/// | `reg.example.com:5000/team/app:1` | `reg.example.com:5000` | `team/app` | as given |
/// | `localhost/app` | `localhost` | `app` | `localhost/app:latest` |
/// | `Foo/app` | `foo` (an upper-case first component is a registry) | `app` | `foo/app:latest` |
///
/// The first path component is the registry when it contains `.` or `:`, is `localhost`, or has an
/// upper-case letter; otherwise the image is on Docker Hub, under `library/` for single names. A
/// reference with a digest keeps only the digest, as Docker pulls by digest then.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: Registry,
    /// The normalised reference as Docker prints it, `domain/path[:tag][@digest]`, in one
    /// allocation (parsing is on the proxy's per-request path). The domain is as written in the
    /// reference (`docker.io` for Hub names without one).
    text: Box<str>,
    /// Where the path starts in `text` (after the domain's `/`).
    path_start: usize,
    /// Where the path ends: the `:` of the tag, the `@` of the digest, or the end.
    path_end: usize,
    /// Where the tag ends (`path_end` when there is none): the `@` of the digest, or the end.
    tag_end: usize,
    /// The path used for namespace matching, when it differs from the path: Hub single names get
    /// `library/` (a reference such as `registry-1.docker.io/busybox` keeps `busybox` as its
    /// Docker path).
    match_path: Option<Box<str>>,
}

impl ImageRef {
    /// Parses a reference the way `docker pull` does. See the type's docs for the rules.
    pub fn parse(reference: &str) -> Result<Self, Error> {
        parse(reference)
    }

    /// The registry the image is pulled from.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The repository path inside the registry, as Docker sends it (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.text[self.path_start..self.path_end]
    }

    /// The path that namespace entries are matched against: the repository path, with `library/`
    /// before single Hub names even when the registry is spelled `registry-1.docker.io`.
    pub fn match_path(&self) -> &str {
        self.match_path.as_deref().unwrap_or_else(|| self.path())
    }

    /// The tag (`latest` when neither tag nor digest was given), absent for digest references.
    pub fn tag(&self) -> Option<&str> {
        (self.tag_end > self.path_end).then(|| &self.text[self.path_end + 1..self.tag_end])
    }

    /// The digest (`sha256:…`), if given.
    pub fn digest(&self) -> Option<&str> {
        (self.text.len() > self.tag_end).then(|| &self.text[self.tag_end + 1..])
    }

    /// The repository name with its registry, as Docker prints it (`docker.io/library/busybox`).
    pub fn name(&self) -> String {
        self.name_str().to_owned()
    }

    /// The repository name with its registry, borrowed: [`ImageRef::name`] without allocating.
    pub fn name_str(&self) -> &str {
        &self.text[..self.path_end]
    }

    /// The whole normalised reference, as [`Display`](fmt::Display) prints it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        parse(s)
    }
}

fn parse(reference: &str) -> Result<ImageRef, Error> {
    let err = |reason: &str| Error::reference(reference, reason);
    if reference.is_empty() {
        return Err(err("empty reference"));
    }
    if reference.len() == 64 && reference.bytes().all(is_lower_hex) {
        return Err(err("cannot specify 64-byte hexadecimal strings"));
    }
    let DockerDomain {
        domain,
        library,
        remainder,
    } = split_docker_domain(reference);

    // Docker checks lower case on everything before the first `:` of the remainder.
    let bytes = remainder.as_bytes();
    let first_colon = find(bytes, b':');
    if bytes[..first_colon.unwrap_or(bytes.len())]
        .iter()
        .any(u8::is_ascii_uppercase)
    {
        return Err(err("repository name must be lowercase"));
    }

    let (name_and_tag, digest) = match find(bytes, b'@') {
        Some(at) => (&remainder[..at], Some(&remainder[at + 1..])),
        None => (remainder, None),
    };
    let (path, tag) = match first_colon.filter(|&c| c < name_and_tag.len()) {
        Some(colon) => (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..])),
        None => (name_and_tag, None),
    };
    validate_path(path).map_err(|reason| err(&reason))?;
    if let Some(tag) = tag {
        validate_tag(tag).map_err(|reason| err(&reason))?;
    }
    if let Some(digest) = digest {
        validate_digest(digest).map_err(|reason| err(&reason))?;
    }
    let registry = parse_domain(domain).map_err(|reason| err(&reason))?;
    let library = if library { LIBRARY.len() } else { 0 };
    if domain.len() + 1 + library + path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(err("repository name must not be more than 255 characters"));
    }

    let match_path =
        (registry.is_docker_hub() && library == 0 && find(path.as_bytes(), b'/').is_none())
            .then(|| [LIBRARY, path].concat().into_boxed_str());
    // A digest replaces the tag (Docker pulls by digest then); no tag means `latest`.
    let tag = match (tag, digest) {
        (_, Some(_)) => None,
        (Some(tag), None) => Some(tag),
        (None, None) => Some("latest"),
    };

    let len = domain.len()
        + 1
        + library
        + path.len()
        + tag.map_or(0, |t| 1 + t.len())
        + digest.map_or(0, |d| 1 + d.len());
    let mut text = String::with_capacity(len);
    text.push_str(domain);
    text.push('/');
    let path_start = text.len();
    text.push_str(&LIBRARY[..library]);
    text.push_str(path);
    let path_end = text.len();
    if let Some(tag) = tag {
        text.push(':');
        text.push_str(tag);
    }
    let tag_end = text.len();
    if let Some(digest) = digest {
        text.push('@');
        text.push_str(digest);
    }
    Ok(ImageRef {
        registry,
        text: text.into_boxed_str(),
        path_start,
        path_end,
        tag_end,
        match_path,
    })
}

const LIBRARY: &str = "library/";

/// The result of Docker's `splitDockerDomain`: the domain, and the remainder, which takes a
/// `library/` prefix when `library` is set (single Hub names).
struct DockerDomain<'a> {
    domain: &'a str,
    library: bool,
    remainder: &'a str,
}

/// Docker's `splitDockerDomain`, without allocating: the `library/` that Docker prepends to
/// single Hub names is reported as a flag.
fn split_docker_domain(name: &str) -> DockerDomain<'_> {
    let (domain, remainder) = match find(name.as_bytes(), b'/') {
        Some(slash)
            if name.as_bytes()[..slash]
                .iter()
                .any(|&b| b == b'.' || b == b':' || b.is_ascii_uppercase())
                || &name[..slash] == "localhost" =>
        {
            (&name[..slash], &name[slash + 1..])
        }
        _ => ("docker.io", name),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    DockerDomain {
        domain,
        library: domain == "docker.io" && find(remainder.as_bytes(), b'/').is_none(),
        remainder,
    }
}

/// Parses the domain part: Docker's `host[:port]` grammar, where host is a domain name or a
/// bracketed IPv6 address of hex digits and colons.
fn parse_domain(domain: &str) -> Result<Registry, String> {
    let (host_text, port_text) = if let Some(inner) = domain.strip_prefix('[') {
        let close = inner.find(']').ok_or("unclosed `[` in registry")?;
        let host = &inner[..close];
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("invalid IPv6 registry address `[{host}]`"));
        }
        match &inner[close + 1..] {
            "" => (&domain[..close + 2], None),
            rest => match rest.strip_prefix(':') {
                Some(port) => (&domain[..close + 2], Some(port)),
                None => return Err(format!("invalid registry `{domain}`")),
            },
        }
    } else {
        match find(domain.as_bytes(), b':') {
            Some(colon) => (&domain[..colon], Some(&domain[colon + 1..])),
            None => (domain, None),
        }
    };
    let host = if host_text.starts_with('[') {
        Host::parse(host_text)?
    } else {
        // Docker's domain grammar: letters, digits, inner hyphens, dot-separated.
        if host_text.ends_with('.') {
            return Err(format!("invalid registry host `{host_text}`"));
        }
        parse_name_or_ipv4(host_text)?
    };
    let port = port_text.map(parse_port).transpose()?;
    match host {
        // A dotted quad that parsed is canonical text (an IPv4-mapped IPv6 one is not); so is a
        // port without a leading zero.
        Host::Ip(IpAddr::V4(ip))
            if !host_text.starts_with('[') && port_text.is_none_or(|p| !p.starts_with('0')) =>
        {
            Ok(Registry::new_ipv4_as_written(ip, port, domain))
        }
        host => Ok(Registry::new(host, port)),
    }
}

/// `path-component ('/' path-component)*` with `[a-z0-9]+ (separator [a-z0-9]+)*` components and
/// separators `.`, `_`, `__` or one or more `-`.
pub(crate) fn validate_path(path: &str) -> Result<(), String> {
    if is_valid_path(path.as_bytes()) {
        return Ok(());
    }
    path_fault(path)
}

/// The path grammar component by component, naming the first fault.
fn path_fault(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("repository name is empty".to_owned());
    }
    for component in path.split('/') {
        validate_path_component(component)?;
    }
    Ok(())
}

/// The path grammar in one pass over the bytes; [`validate_path`] names the fault when it fails.
fn is_valid_path(path: &[u8]) -> bool {
    /// What the previous byte was.
    #[derive(Clone, Copy, PartialEq)]
    enum After {
        /// The start of a component (or of the path).
        Start,
        Alnum,
        Dot,
        Underscore,
        TwoUnderscores,
        Dashes,
    }
    let mut after = After::Start;
    for &b in path {
        after = match (b, after) {
            (b'a'..=b'z' | b'0'..=b'9', _) => After::Alnum,
            (b'/', After::Alnum) => After::Start,
            (b'.', After::Alnum) => After::Dot,
            (b'_', After::Alnum) => After::Underscore,
            (b'_', After::Underscore) => After::TwoUnderscores,
            (b'-', After::Alnum | After::Dashes) => After::Dashes,
            _ => return false,
        };
    }
    after == After::Alnum
}

/// The first index of `byte`: a plain loop, cheaper than a `memchr` set-up on strings this short.
fn find(bytes: &[u8], byte: u8) -> Option<usize> {
    bytes.iter().position(|&b| b == byte)
}

fn validate_path_component(component: &str) -> Result<(), String> {
    let bytes = component.as_bytes();
    let bad = || format!("invalid repository path component `{component}`");
    if bytes.is_empty() {
        return Err("repository name has an empty path component".to_owned());
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        match &bytes[start..i] {
            b"." | b"_" | b"__" => {}
            sep if sep.iter().all(|&b| b == b'-') => {}
            _ => return Err(bad()),
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= TAG_LENGTH_MAX
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid tag `{tag}`: up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
        ))
    }
}

fn validate_digest(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("invalid digest `{digest}`: expected algorithm:hex"))?;
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            let grammatical = algorithm.split(['+', '.', '_', '-']).all(|c| {
                c.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                    && c.bytes().all(|b| b.is_ascii_alphanumeric())
            });
            return Err(if grammatical {
                format!("unsupported digest algorithm `{algorithm}`")
            } else {
                format!("invalid digest `{digest}`")
            });
        }
    };
    if !hex.bytes().all(is_lower_hex) {
        return Err(format!(
            "invalid digest `{digest}`: the hex part must be lowercase hexadecimal"
        ));
    }
    if hex.len() != hex_len {
        return Err(format!(
            "invalid digest `{digest}`: {algorithm} takes {hex_len} hex digits"
        ));
    }
    Ok(())
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// (input, normalised output, registry, match path), after Docker's own test table.
    const GOOD: &[(&str, &str, &str, &str)] = &[
        (
            "busybox",
            "docker.io/library/busybox:latest",
            "docker.io",
            "library/busybox",
        ),
        (
            "library/busybox",
            "docker.io/library/busybox:latest",
            "docker.io",
            "library/busybox",
        ),
        (
            "docker.io/busybox",
            "docker.io/library/busybox:latest",
            "docker.io",
            "library/busybox",
        ),
        (
            "index.docker.io/busybox",
            "docker.io/library/busybox:latest",
            "docker.io",
            "library/busybox",
        ),
        (
            "index.docker.io/u/app:1",
            "docker.io/u/app:1",
            "docker.io",
            "u/app",
        ),
        (
            "registry-1.docker.io/busybox",
            "registry-1.docker.io/busybox:latest",
            "docker.io",
            "library/busybox",
        ),
        (
            "registry.hub.docker.com/u/a",
            "registry.hub.docker.com/u/a:latest",
            "docker.io",
            "u/a",
        ),
        (
            "docker.io:5000/busybox",
            "docker.io:5000/busybox:latest",
            "docker.io:5000",
            "busybox",
        ),
        (
            "user/app",
            "docker.io/user/app:latest",
            "docker.io",
            "user/app",
        ),
        ("localhost/app", "localhost/app:latest", "localhost", "app"),
        (
            "localhost:5000/a/b/c:v1.2",
            "localhost:5000/a/b/c:v1.2",
            "localhost:5000",
            "a/b/c",
        ),
        ("Foo/app", "Foo/app:latest", "foo", "app"),
        // Docker rewrites only the exact `index.docker.io`; a mixed-case spelling is kept as
        // written (and is still Hub for matching). Found by the reference_parse fuzz target.
        (
            "Index.docker.io/x",
            "Index.docker.io/x:latest",
            "docker.io",
            "library/x",
        ),
        (
            "Reg.Example.com/team/app",
            "Reg.Example.com/team/app:latest",
            "reg.example.com",
            "team/app",
        ),
        (
            "10.2.40.40:443/app",
            "10.2.40.40:443/app:latest",
            "10.2.40.40:443",
            "app",
        ),
        (
            "[fd00::1]:5000/app",
            "[fd00::1]:5000/app:latest",
            "[fd00::1]:5000",
            "app",
        ),
        (
            "[::ffff:a02:2828]/app",
            "[::ffff:a02:2828]/app:latest",
            "10.2.40.40",
            "app",
        ),
        (
            "a.b/c__d/e-----f/g.h/i_j",
            "a.b/c__d/e-----f/g.h/i_j:latest",
            "a.b",
            "c__d/e-----f/g.h/i_j",
        ),
        (
            "reg:5000/app:Tag_1.x-y",
            "reg:5000/app:Tag_1.x-y",
            "reg:5000",
            "app",
        ),
    ];

    #[test]
    fn normalises_like_docker() {
        for &(input, printed, registry, match_path) in GOOD {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), printed, "{input}");
            assert_eq!(r.registry().as_str(), registry, "{input}");
            assert_eq!(r.match_path(), match_path, "{input}");
        }
    }

    #[test]
    fn digests_replace_tags() {
        let r = ImageRef::parse(&format!("busybox:1@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = ImageRef::parse(&format!("reg:5000/a@{D}")).unwrap();
        assert_eq!(r.digest(), Some(D));
    }

    #[test]
    fn refuses_what_docker_refuses() {
        let long = format!("reg.example.com/{}", "a".repeat(240));
        let bad: Vec<String> = vec![
            "".into(),
            "Busybox".into(),
            "user/App".into(),
            "a/B".into(),
            "busybox:".into(),
            "busybox:.x".into(),
            "busybox:-x".into(),
            format!("busybox:{}", "a".repeat(129)),
            "busybox@sha256:abc".into(),
            format!("busybox@{}", D.to_uppercase().replace("SHA256", "sha256")),
            format!("busybox@md5:{}", "a".repeat(32)),
            "a..b/c".into(),
            "reg/a..b".into(),
            "reg.x/a___b".into(),
            "reg.x/a_-b".into(),
            "reg.x/-a".into(),
            "reg.x/a/".into(),
            "reg.x//a".into(),
            "reg.x:/a".into(),
            "reg.x:99999/a".into(),
            "reg.x:0/a".into(),
            "[fd00::1/a".into(),
            "[fd00::g]/a".into(),
            "[::ffff:10.2.40.40]/a".into(),
            "-reg.x/a".into(),
            "reg_x.com/a".into(),
            "10.1.1/a".into(),
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            long,
            "réG.com/a".into(),
        ];
        for input in bad {
            assert!(
                ImageRef::parse(&input).is_err(),
                "{input:?} should be refused"
            );
        }
    }

    proptest::proptest! {
        /// The IPv4 registry text taken as written is the text `Registry::new` formats.
        #[test]
        fn ipv4_registries_as_written_are_canonical(ip in proptest::num::u32::ANY, port in proptest::option::of(1u16..), zeros in 0usize..2) {
            let ip = std::net::Ipv4Addr::from(ip);
            let domain = match port {
                Some(port) => format!("{ip}:{}{port}", "0".repeat(zeros)),
                None => ip.to_string(),
            };
            let r = ImageRef::parse(&format!("{domain}/app")).unwrap();
            let formatted = Registry::new(Host::Ip(IpAddr::V4(ip)), port);
            proptest::prop_assert_eq!(r.registry().as_str(), formatted.as_str());
            proptest::prop_assert_eq!(r.registry(), &formatted);
        }

        #[test]
        fn the_one_pass_path_check_agrees_with_the_grammar(path in "[a-z0-9._/A-]{0,24}") {
            proptest::prop_assert_eq!(is_valid_path(path.as_bytes()), path_fault(&path).is_ok());
        }
    }

    #[test]
    fn name_length_limit_is_on_domain_and_path() {
        let path = "a".repeat(255 - "reg.x/".len());
        assert!(ImageRef::parse(&format!("reg.x/{path}")).is_ok());
        assert!(ImageRef::parse(&format!("reg.x/{path}a")).is_err());
    }
}
