//! The checks behind the fuzz targets, one function per target.
//!
//! Each takes the fuzzer's bytes, returns early on input the parsers refuse, and panics (naming
//! the input) when an invariant breaks. `crates/policy/tests/fuzz_seeds.rs` includes this file as
//! a module and replays the committed seeds in `fuzz/seeds/<target>/` through the same functions,
//! so `cargo test` runs every seed (and every reproducer saved there) without a fuzzer.

use std::net::IpAddr;

use vch_policy::oracle::{LinearPolicy, OracleDecision};
use vch_policy::{
    Decision, Entry, EntryHost, Host, ImageRef, NAME_TOTAL_LENGTH_MAX, Policy, PolicyBuilder,
    Registry,
};

/// At most this many entries per list, references and names are read from one differential input,
/// so that one execution stays cheap.
const MAX_ENTRIES: usize = 8;
const MAX_REFERENCES: usize = 16;
const MAX_NAMES: usize = 8;

/// Docker Hub spellings every differential run decides, whatever the input.
const HUB_REFERENCES: &[&str] = &[
    "busybox",
    "library/busybox",
    "user/app",
    "docker.io/library/busybox",
    "index.docker.io/user/app",
    "registry-1.docker.io/busybox",
    "registry.hub.docker.com:443/user/app",
    "docker.io:5000/x",
];

/// `Entry::parse`: the canonical text parses back to an equal entry, the entry is contained in
/// itself and in `*`, it matches the registry it names on its port and under its namespace, and
/// none of the near misses next to it (another port, a sub-domain of an exact name, the bare
/// suffix of a wildcard, the address just outside a range, a string-prefix namespace).
pub fn entry_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entry) = Entry::parse(text) else {
        return;
    };
    let canonical = entry.as_str();
    let again = Entry::parse(canonical)
        .unwrap_or_else(|e| panic!("canonical text `{canonical}` of {text:?} does not parse: {e}"));
    assert_eq!(
        again, entry,
        "`{canonical}` (from {text:?}) parses to another entry"
    );
    assert_eq!(entry.to_string(), canonical);
    assert!(entry.is_contained_in(&entry), "`{canonical}` ⊄ itself");
    assert!(entry.is_contained_in(&any()), "`{canonical}` ⊄ `*`");

    let port = entry.port();
    let path = entry.path();
    let matches = |host: &Host, port: Option<u16>, path: Option<&str>| {
        entry.matches(&Registry::new(host.clone(), port), path)
    };
    let hit = match entry.host() {
        EntryHost::Any => name("any.example"),
        EntryHost::Exact(host) => {
            if let Host::Name(n) = host
                && let Some(sub) = name(&format!("x.{n}"))
            {
                assert!(!matches(&sub, port, path), "`{canonical}` matches `{sub}`");
            }
            if let Host::Ip(ip) = host
                && let Some(next) = step(*ip, 1).and_then(ip_host)
            {
                assert!(
                    !matches(&next, port, path),
                    "`{canonical}` matches `{next}`"
                );
            }
            Some(host.clone())
        }
        EntryHost::Wildcard(suffix) => {
            let bare = name(suffix)
                .unwrap_or_else(|| panic!("wildcard suffix of `{canonical}` is not a host name"));
            // `*.docker.io` covers index.docker.io, so it matches Docker Hub, which docker.io is.
            if !Registry::new(bare.clone(), port).is_docker_hub() {
                assert!(
                    !matches(&bare, port, path),
                    "`{canonical}` matches `{bare}`"
                );
            }
            if let Some(glued) = name(&format!("x{suffix}")) {
                assert!(
                    !matches(&glued, port, path),
                    "`{canonical}` matches `{glued}`"
                );
            }
            name(&format!("x.{suffix}"))
        }
        EntryHost::Cidr(net) => {
            for inside in [net.network(), net.broadcast()] {
                if let Some(host) = ip_host(inside) {
                    assert!(matches(&host, port, path), "`{canonical}` misses `{host}`");
                }
            }
            for outside in [step(net.network(), -1), step(net.broadcast(), 1)] {
                if let Some(host) = outside.and_then(ip_host) {
                    assert!(
                        !matches(&host, port, path),
                        "`{canonical}` matches `{host}`"
                    );
                }
            }
            ip_host(net.network())
        }
    };
    let Some(hit) = hit else {
        return;
    };
    assert!(matches(&hit, port, path), "`{canonical}` misses `{hit}`");
    if let Some(p) = port {
        let other = p.checked_add(1).unwrap_or(1);
        assert!(
            !matches(&hit, Some(other), path),
            "`{canonical}` matches port {other}"
        );
        if p != vch_policy::DEFAULT_PORT {
            assert!(!matches(&hit, None, path), "`{canonical}` matches port 443");
        }
    }
    if let Some(ns) = path {
        assert!(
            matches(&hit, port, None),
            "`{canonical}` misses its registry"
        );
        assert!(matches(&hit, port, Some(&format!("{ns}/x"))));
        assert!(
            !matches(&hit, port, Some(&format!("{ns}x"))),
            "`{canonical}` matches a string prefix of its namespace"
        );
    }
}

/// `ImageRef::parse`: Docker's normalisation is idempotent (the printed reference parses back to an
/// equal reference that prints the same), the name is at most 255 characters, the registry's text
/// parses to the same registry, and a reference has a tag or a digest, not both.
pub fn reference_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(image) = ImageRef::parse(text) else {
        return;
    };
    let printed = image.to_string();
    let again = ImageRef::parse(&printed).unwrap_or_else(|e| {
        panic!("{text:?} is printed as `{printed}`, which does not parse: {e}")
    });
    assert_eq!(
        again.to_string(),
        printed,
        "{text:?}: printing is not idempotent"
    );
    assert_eq!(
        again, image,
        "{text:?} printed as `{printed}` parses to another reference"
    );
    assert!(
        image.name().len() <= NAME_TOTAL_LENGTH_MAX,
        "{text:?}: name too long"
    );
    assert!(
        image.tag().is_some() != image.digest().is_some(),
        "{text:?}: tag and digest"
    );

    let registry = image.registry();
    let parsed = Registry::parse(registry.as_str())
        .unwrap_or_else(|e| panic!("{text:?}: registry `{registry}` does not parse: {e}"));
    assert_eq!(parsed.as_str(), registry.as_str(), "{text:?}");
    assert_eq!(parsed.is_docker_hub(), registry.is_docker_hub(), "{text:?}");
    assert_eq!(
        parsed.effective_port(),
        registry.effective_port(),
        "{text:?}"
    );
    if registry.is_docker_hub() {
        // Hub names are matched with `library/` in front of single names.
        assert!(image.match_path().contains('/'), "{text:?}");
    } else {
        // Hub aliases differ in their host but are all `docker.io`; every other registry is equal.
        assert_eq!(&parsed, registry, "{text:?}");
        assert_eq!(image.match_path(), image.path(), "{text:?}");
    }
}

/// The compiled [`Policy`] against [`LinearPolicy`], narrowing and intersection.
///
/// The input is lines `TAG VALUE`: `w` whitelist entry, `i` insecure-registry entry, `u` update
/// entry (narrowing, and the second member of an intersection), `r` image reference, `n`
/// reverse-DNS name; other lines are ignored. Besides the given references, every entry adds its
/// near misses (neighbouring hosts, addresses, ports and namespaces), so that matches happen.
///
/// Asserts, for every reference: compiled and oracle agree on allowed, transport and entry for
/// `decide`, `decide_registry` and `decide_with_names`; if the base policy is in whitelist mode and
/// `narrow(update)` succeeds, the narrowed policy agrees with its oracle and allows nothing the
/// base denies; the intersection allows exactly what both members allow.
pub fn policy_differential(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (mut whitelist, mut insecure, mut update) = (Vec::new(), Vec::new(), Vec::new());
    let (mut references, mut names) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Some((tag, value)) = line.split_once(' ') else {
            continue;
        };
        let list = match tag {
            "w" => &mut whitelist,
            "i" => &mut insecure,
            "u" => &mut update,
            "r" if references.len() < MAX_REFERENCES => {
                references.push(value.to_owned());
                continue;
            }
            // Raw text: reverse DNS hands over normalised names, but any caller may pass any.
            "n" => {
                names.push(value.to_owned());
                continue;
            }
            _ => continue,
        };
        if list.len() < MAX_ENTRIES
            && let Ok(entry) = Entry::parse(value)
        {
            list.push(entry);
        }
    }
    for entry in whitelist.iter().chain(&insecure).chain(&update) {
        near_misses(entry, &mut references, &mut names);
    }
    references.extend(HUB_REFERENCES.iter().map(|&r| r.to_owned()));
    let images: Vec<ImageRef> = references
        .iter()
        .filter_map(|r| ImageRef::parse(r).ok())
        .collect();
    names.truncate(MAX_NAMES);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    let policy = compile(&whitelist, &insecure);
    let oracle = LinearPolicy::new(&whitelist, &insecure);
    for image in &images {
        agree(&policy, &oracle, image, &names);
    }

    if policy.whitelist_mode()
        && let Ok(narrowed) = policy.narrow(&update)
    {
        let narrowed_oracle = LinearPolicy::new(&update, &insecure);
        for image in &images {
            agree(&narrowed, &narrowed_oracle, image, &names);
            let (registry, path) = (image.registry(), Some(image.match_path()));
            let widened = |base: Decision<'_>, narrow: Decision<'_>, how: &str| {
                assert!(
                    base.is_allowed() || !narrow.is_allowed(),
                    "narrowing {policy:?} to {update:?} widened {how} for `{image}`: {narrow}"
                );
            };
            widened(policy.decide(image), narrowed.decide(image), "decide");
            widened(
                policy.decide_registry(registry),
                narrowed.decide_registry(registry),
                "decide_registry",
            );
            widened(
                policy.decide_with_names(registry, path, &names),
                narrowed.decide_with_names(registry, path, &names),
                "decide_with_names",
            );
        }
    }

    let other = compile(&update, &[]);
    let both = policy.intersect(&other);
    for image in &images {
        let expected = policy.decide(image).is_allowed() && other.decide(image).is_allowed();
        assert_eq!(
            both.decide(image).is_allowed(),
            expected,
            "intersection of {policy:?} and {other:?} on `{image}`"
        );
    }
}

fn compile(whitelist: &[Entry], insecure: &[Entry]) -> Policy {
    let mut builder = PolicyBuilder::new();
    for entry in whitelist {
        builder.whitelist_entry(entry.clone());
    }
    for entry in insecure {
        builder.insecure_entry(entry.clone());
    }
    builder
        .build()
        .unwrap_or_else(|e| panic!("parsed entries must build: {e}"))
}

/// The compiled policy and the oracle agree on an image, its registry, and the image with names.
fn agree(policy: &Policy, oracle: &LinearPolicy, image: &ImageRef, names: &[&str]) {
    let (registry, path) = (image.registry(), Some(image.match_path()));
    let same = |compiled: Decision<'_>, expected: OracleDecision, how: &str| {
        let got = OracleDecision {
            allowed: compiled.is_allowed(),
            transport: compiled.transport(),
            entry: compiled
                .entry()
                .zip(compiled.list())
                .map(|(e, l)| (e.to_string(), l)),
        };
        assert_eq!(
            got, expected,
            "{policy:?} and its oracle disagree on {how} for `{image}` (names {names:?})"
        );
    };
    same(policy.decide(image), oracle.decide(image), "decide");
    same(
        policy.decide_registry(registry),
        oracle.decide_with_names(registry, None, &[]),
        "decide_registry",
    );
    same(
        policy.decide_with_names(registry, path, names),
        oracle.decide_with_names(registry, path, names),
        "decide_with_names",
    );
}

/// References (and reverse-DNS names) just inside and just outside what `entry` matches.
fn near_misses(entry: &Entry, references: &mut Vec<String>, names: &mut Vec<String>) {
    let ip = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let hosts: Vec<String> = match entry.host() {
        EntryHost::Any => vec!["any.example".to_owned()],
        EntryHost::Exact(Host::Name(n)) => vec![n.to_string(), format!("x.{n}"), format!("{n}x")],
        EntryHost::Exact(Host::Ip(addr)) => [Some(*addr), step(*addr, 1)]
            .into_iter()
            .flatten()
            .map(ip)
            .collect(),
        EntryHost::Wildcard(suffix) => {
            names.extend([format!("a.{suffix}"), suffix.to_string()]);
            vec![
                format!("a.{suffix}"),
                format!("a.b.{suffix}"),
                suffix.to_string(),
                format!("a{suffix}"),
            ]
        }
        EntryHost::Cidr(net) => [
            Some(net.network()),
            Some(net.broadcast()),
            step(net.network(), -1),
            step(net.broadcast(), 1),
        ]
        .into_iter()
        .flatten()
        .map(ip)
        .collect(),
    };
    let mut ports: Vec<Option<u16>> = Vec::with_capacity(4);
    for port in [
        None,
        Some(vch_policy::DEFAULT_PORT),
        entry.port(),
        entry.port().map(|p| p.checked_add(1).unwrap_or(1)),
    ] {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    // Every host on every port under a plain path; the namespace near misses only on the entry's
    // own host and port (the product of all three would cost more than it finds).
    for host in &hosts {
        for port in &ports {
            let port = port.map_or(String::new(), |p| format!(":{p}"));
            references.push(format!("{host}{port}/x/y"));
        }
    }
    if let (Some(ns), Some(host)) = (entry.path(), hosts.first()) {
        let port = entry.port().map_or(String::new(), |p| format!(":{p}"));
        for path in [ns.to_owned(), format!("{ns}/x"), format!("{ns}x")] {
            references.push(format!("{host}{port}/{path}"));
        }
    }
}

fn any() -> Entry {
    Entry::parse("*").unwrap_or_else(|e| panic!("`*` is an entry: {e}"))
}

/// A host name, normalised; `None` if it is not one (too long, say).
fn name(text: &str) -> Option<Host> {
    Host::parse(text).ok().filter(|h| h.name().is_some())
}

/// The address as a host, unless normalisation would change it (an IPv4-mapped IPv6 address is
/// the IPv4 address, which an IPv6 range does not contain).
fn ip_host(ip: IpAddr) -> Option<Host> {
    Host::parse(&ip.to_string())
        .ok()
        .filter(|h| h.ip() == Some(ip))
}

/// The address `by` away, in the same family; `None` past either end.
fn step(ip: IpAddr, by: i8) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4)
            .checked_add_signed(by.into())
            .map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v6) => u128::from(v6)
            .checked_add_signed(by.into())
            .map(|n| IpAddr::V6(n.into())),
    }
}
