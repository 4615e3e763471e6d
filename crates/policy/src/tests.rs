//! Policy semantics: rule tables run through both the compiled policy and the oracle, property
//! tests for agreement and for narrowing soundness.

use proptest::prelude::*;

use crate::oracle::LinearPolicy;
use crate::{
    Entry, Error, ImageRef, Intersection, List, Policy, PolicyBuilder, Reason, Transport, Warning,
};

fn policy(whitelist: &[&str], insecure: &[&str]) -> Policy {
    let mut b = PolicyBuilder::new();
    for e in whitelist {
        b.whitelist(*e);
    }
    for e in insecure {
        b.insecure(*e);
    }
    b.build().unwrap()
}

/// Decides with the compiled policy, checks the oracle agrees, returns (allowed, transport, entry).
fn decide(p: &Policy, image: &str) -> (bool, Option<Transport>, Option<String>) {
    let image = ImageRef::parse(image).unwrap_or_else(|e| panic!("{e}"));
    let d = p.decide(&image);
    let oracle = LinearPolicy::new(p.whitelist(), p.insecure()).decide(&image);
    let got = (
        d.is_allowed(),
        d.transport(),
        d.entry().map(|e| e.to_string()),
    );
    assert_eq!(
        (
            oracle.allowed,
            oracle.transport,
            oracle.entry.clone().map(|(e, _)| e)
        ),
        got,
        "oracle and compiled disagree on {image}"
    );
    assert_eq!(oracle.entry.map(|(_, l)| l), d.list());
    got
}

use Transport::{Insecure, Secure};

/// (name, whitelist, insecure, image, allowed, transport)
type Row = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
    bool,
    Option<Transport>,
);

const SEED_WL: &[&str] = &["10.2.40.40:443", "10.2.2.1/24", "*.example.com"];
const SEED_INSECURE: &[&str] = &["192.168.100.207"];

const ROWS: &[Row] = &[
    // The seed text's first example: exactly those are allowed; Hub is denied.
    (
        "seed exact ip with port",
        SEED_WL,
        SEED_INSECURE,
        "10.2.40.40:443/app",
        true,
        Some(Secure),
    ),
    (
        "seed exact ip, default port",
        SEED_WL,
        SEED_INSECURE,
        "10.2.40.40/app",
        true,
        Some(Secure),
    ),
    (
        "seed exact ip, other port",
        SEED_WL,
        SEED_INSECURE,
        "10.2.40.40:5000/app",
        false,
        None,
    ),
    (
        "seed other ip",
        SEED_WL,
        SEED_INSECURE,
        "10.2.40.41/app",
        false,
        None,
    ),
    (
        "seed cidr",
        SEED_WL,
        SEED_INSECURE,
        "10.2.2.254:5000/x",
        true,
        Some(Secure),
    ),
    (
        "seed cidr edge",
        SEED_WL,
        SEED_INSECURE,
        "10.2.3.0/x",
        false,
        None,
    ),
    (
        "seed wildcard",
        SEED_WL,
        SEED_INSECURE,
        "reg.example.com/team/app:1",
        true,
        Some(Secure),
    ),
    (
        "seed wildcard deep",
        SEED_WL,
        SEED_INSECURE,
        "a.b.example.com:5000/x",
        true,
        Some(Secure),
    ),
    (
        "seed wildcard apex",
        SEED_WL,
        SEED_INSECURE,
        "example.com/x",
        false,
        None,
    ),
    (
        "seed insecure joins whitelist",
        SEED_WL,
        SEED_INSECURE,
        "192.168.100.207/x",
        true,
        Some(Insecure),
    ),
    (
        "seed insecure any port",
        SEED_WL,
        SEED_INSECURE,
        "192.168.100.207:5000/x",
        true,
        Some(Insecure),
    ),
    (
        "seed hub denied",
        SEED_WL,
        SEED_INSECURE,
        "busybox",
        false,
        None,
    ),
    (
        "seed hub denied full",
        SEED_WL,
        SEED_INSECURE,
        "docker.io/library/busybox:latest",
        false,
        None,
    ),
    (
        "seed localhost denied",
        SEED_WL,
        SEED_INSECURE,
        "localhost:5000/x",
        false,
        None,
    ),
    (
        "seed loopback denied",
        SEED_WL,
        SEED_INSECURE,
        "127.0.0.1:5000/x",
        false,
        None,
    ),
    // The second: no whitelist, insecure `*.example.com` and `192.168.100.207:5000`.
    (
        "no whitelist hub",
        &[],
        &["*.example.com", "192.168.100.207:5000"],
        "busybox",
        true,
        Some(Secure),
    ),
    (
        "no whitelist insecure wildcard",
        &[],
        &["*.example.com", "192.168.100.207:5000"],
        "r.example.com/x",
        true,
        Some(Insecure),
    ),
    (
        "no whitelist insecure ip:port",
        &[],
        &["*.example.com", "192.168.100.207:5000"],
        "192.168.100.207:5000/x",
        true,
        Some(Insecure),
    ),
    (
        "no whitelist insecure wrong port",
        &[],
        &["*.example.com", "192.168.100.207:5000"],
        "192.168.100.207/x",
        true,
        Some(Secure),
    ),
    (
        "no whitelist other",
        &[],
        &["*.example.com", "192.168.100.207:5000"],
        "quay.io/x",
        true,
        Some(Secure),
    ),
    // Hub aliases
    (
        "hub by docker.io",
        &["docker.io"],
        &[],
        "busybox",
        true,
        Some(Secure),
    ),
    (
        "hub by index",
        &["index.docker.io"],
        &[],
        "library/busybox",
        true,
        Some(Secure),
    ),
    (
        "hub by registry-1",
        &["registry-1.docker.io"],
        &[],
        "docker.io/user/app",
        true,
        Some(Secure),
    ),
    (
        "hub by hub.docker.com",
        &["registry.hub.docker.com"],
        &[],
        "index.docker.io/user/app",
        true,
        Some(Secure),
    ),
    (
        "hub by wildcard",
        &["*.docker.io"],
        &[],
        "busybox",
        true,
        Some(Secure),
    ),
    (
        "hub via registry-1 ref",
        &["docker.io"],
        &[],
        "registry-1.docker.io/busybox",
        true,
        Some(Secure),
    ),
    (
        "hub namespace",
        &["docker.io/library"],
        &[],
        "busybox",
        true,
        Some(Secure),
    ),
    (
        "hub namespace other",
        &["docker.io/library"],
        &[],
        "user/app",
        false,
        None,
    ),
    (
        "hub insecure",
        &["docker.io"],
        &["index.docker.io"],
        "busybox",
        true,
        Some(Insecure),
    ),
    (
        "hub alias other port is not hub",
        &["docker.io"],
        &[],
        "registry-1.docker.io:5000/x",
        false,
        None,
    ),
    // Ports and schemes
    (
        "port 443 allows no port",
        &["reg.x:443"],
        &[],
        "reg.x/a",
        true,
        Some(Secure),
    ),
    (
        "port 443 refuses 5000",
        &["reg.x:443"],
        &[],
        "reg.x:5000/a",
        false,
        None,
    ),
    (
        "https scheme is 443",
        &["https://reg.x"],
        &[],
        "reg.x/a",
        true,
        Some(Secure),
    ),
    (
        "http scheme is 80",
        &["http://reg.x"],
        &[],
        "reg.x/a",
        false,
        None,
    ),
    (
        "no port any port",
        &["reg.x"],
        &[],
        "reg.x:1234/a",
        true,
        Some(Secure),
    ),
    // IPv6
    (
        "ipv6 exact",
        &["[fd00::1]:5000"],
        &[],
        "[fd00:0::1]:5000/a",
        true,
        Some(Secure),
    ),
    (
        "ipv6 cidr",
        &["fd00::/16"],
        &[],
        "[fd00:1:2::3]/a",
        true,
        Some(Secure),
    ),
    (
        "ipv4-mapped",
        &["10.0.0.0/8"],
        &[],
        "[::ffff:a01:203]/a",
        true,
        Some(Secure),
    ),
    // Case and namespaces
    (
        "upper-case registry",
        &["reg.example.com"],
        &[],
        "REG.Example.com/a",
        true,
        Some(Secure),
    ),
    (
        "namespace",
        &["reg.x/team"],
        &[],
        "reg.x/team/app",
        true,
        Some(Secure),
    ),
    (
        "namespace string prefix",
        &["reg.x/team"],
        &[],
        "reg.x/teamevil/app",
        false,
        None,
    ),
    // Bare star
    (
        "star allows all",
        &["*"],
        &[],
        "anything.io/x",
        true,
        Some(Secure),
    ),
    (
        "suffix trick",
        &["*.example.com"],
        &[],
        "example.com.evil.io/x",
        false,
        None,
    ),
    (
        "suffix trick 2",
        &["*.example.com"],
        &[],
        "evilexample.com/x",
        false,
        None,
    ),
];

#[test]
fn rule_table() {
    for &(name, wl, insecure, image, allowed, transport) in ROWS {
        let p = policy(wl, insecure);
        let (a, t, _) = decide(&p, image);
        assert_eq!((a, t), (allowed, transport), "row `{name}`: {image}");
    }
}

#[test]
fn denial_text_is_the_one_docker_users_know() {
    let p = policy(SEED_WL, SEED_INSECURE);
    for (image, host) in [
        ("busybox", "docker.io"),
        ("10.2.40.41:5000/a", "10.2.40.41:5000"),
        ("Reg.Other.com/a", "reg.other.com"),
    ] {
        let image = ImageRef::parse(image).unwrap();
        let d = p.decide(&image);
        assert_eq!(
            d.denial_message().unwrap(),
            format!(
                "Access denied to unauthorized registry ({host}) while VCH is in whitelist mode"
            )
        );
        assert_eq!(d.reason(), &Reason::NotWhitelisted);
        assert!(d.to_string().starts_with("Access denied"));
    }
}

#[test]
fn the_most_specific_entry_is_reported() {
    let p = policy(
        &[
            "*",
            "*.example.com",
            "*.b.example.com",
            "a.b.example.com",
            "a.b.example.com:443",
        ],
        &[],
    );
    assert_eq!(
        decide(&p, "a.b.example.com/x").2.as_deref(),
        Some("a.b.example.com:443")
    );
    assert_eq!(
        decide(&p, "a.b.example.com:5000/x").2.as_deref(),
        Some("a.b.example.com")
    );
    assert_eq!(
        decide(&p, "c.b.example.com/x").2.as_deref(),
        Some("*.b.example.com")
    );
    assert_eq!(
        decide(&p, "c.example.com/x").2.as_deref(),
        Some("*.example.com")
    );
    assert_eq!(decide(&p, "quay.io/x").2.as_deref(), Some("*"));
    let p = policy(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3"], &[]);
    assert_eq!(decide(&p, "10.1.2.3/x").2.as_deref(), Some("10.1.2.3"));
    assert_eq!(decide(&p, "10.1.2.4/x").2.as_deref(), Some("10.1.0.0/16"));
    assert_eq!(decide(&p, "10.2.2.4/x").2.as_deref(), Some("10.0.0.0/8"));
}

#[test]
fn login_decisions_count_namespace_entries_for_their_host() {
    let p = policy(&["reg.x/team"], &[]);
    let reg = crate::Registry::parse("https://reg.x").unwrap();
    assert!(p.decide_registry(&reg).is_allowed());
    let other = crate::Registry::parse("reg.y").unwrap();
    assert!(!p.decide_registry(&other).is_allowed());
}

#[test]
fn warnings() {
    let p = policy(&["*", "reg.x", "REG.x"], &["*"]);
    assert!(p.warnings().contains(&Warning::WhitelistAllowsAll));
    assert!(p.warnings().contains(&Warning::InsecureAll));
    assert!(p.warnings().contains(&Warning::Duplicate {
        entry: "reg.x".into()
    }));
    assert!(policy(SEED_WL, SEED_INSECURE).warnings().is_empty());
}

#[test]
fn build_reports_the_malformed_entry() {
    let err = PolicyBuilder::new()
        .whitelist("reg.x")
        .insecure("bad entry!")
        .build()
        .unwrap_err();
    match err {
        Error::InvalidEntry { entry, .. } => assert_eq!(entry, "bad entry!"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_policy_allows_everything_securely() {
    let p = Policy::empty();
    assert!(!p.whitelist_mode());
    assert_eq!(decide(&p, "anything.io/x"), (true, Some(Secure), None));
}

fn entries(list: &[&str]) -> Vec<Entry> {
    list.iter().map(|e| Entry::parse(e).unwrap()).collect()
}

#[test]
fn narrowing_accepts_only_restrictions() {
    let base = policy(&["*.example.com", "10.0.0.0/8", "reg.x"], &["192.168.1.1"]);
    let narrowed = base
        .narrow(&entries(&[
            "a.example.com:443",
            "*.b.example.com",
            "10.1.0.0/16",
            "reg.x/team",
            "192.168.1.1",
        ]))
        .unwrap();
    assert_eq!(narrowed.whitelist().len(), 5);
    assert_eq!(narrowed.insecure(), base.insecure());
    assert!(decide(&narrowed, "a.example.com/x").0);
    assert!(!decide(&narrowed, "c.example.com/x").0);
    assert!(!decide(&narrowed, "reg.x/other").0);
    for wider in [
        "example.com",
        "*.com",
        "11.0.0.0/8",
        "10.0.0.0/7",
        "reg.y",
        "*",
        "reg.x:5000/../",
    ] {
        let Ok(update) = Entry::parse(wider) else {
            continue;
        };
        assert_eq!(
            base.narrow(&[update]).unwrap_err(),
            Error::Broadening {
                entry: Entry::parse(wider).unwrap().to_string()
            },
            "{wider}"
        );
    }
    assert_eq!(base.narrow(&[]).unwrap_err(), Error::EmptyUpdate);
    // An empty base accepts any update, which turns whitelist mode on.
    let open = Policy::empty().narrow(&entries(&["reg.x"])).unwrap();
    assert!(open.whitelist_mode());
    assert!(!decide(&open, "busybox").0);
    // Narrowing always starts from the deploy-time base: an update's update cannot widen it.
    let once = base.narrow(&entries(&["a.example.com"])).unwrap();
    assert!(once.narrow(&entries(&["b.example.com"])).is_err());
    assert!(base.narrow(&entries(&["b.example.com"])).is_ok());
}

#[test]
fn intersection_allows_what_every_member_allows() {
    let vch = policy(&["*.example.com", "10.0.0.0/8"], &["insecure.example.com"]);
    let project = policy(
        &["team.example.com", "insecure.example.com", "10.1.1.1"],
        &["insecure.example.com"],
    );
    let both = vch.intersect(&project);
    let d = |image: &str| {
        let image = ImageRef::parse(image).unwrap();
        let d = both.decide(&image);
        (d.is_allowed(), d.transport())
    };
    assert_eq!(d("team.example.com/x"), (true, Some(Secure)));
    assert_eq!(d("insecure.example.com/x"), (true, Some(Insecure)));
    assert_eq!(d("other.example.com/x"), (false, None));
    assert_eq!(d("10.1.1.1/x"), (true, Some(Secure)));
    assert_eq!(d("10.1.1.2/x"), (false, None));
    let image = ImageRef::parse("other.example.com/x").unwrap();
    assert_eq!(both.decide(&image).reason(), &Reason::DeniedByMember(1));
    let none = Intersection::default();
    assert!(none.decide(&image).is_allowed());
}

#[test]
fn decide_with_names_matches_wildcards_only() {
    let p = policy(&["*.example.com:5000", "reg.x"], &[]);
    let reg = crate::Registry::parse("10.9.9.9:5000").unwrap();
    assert!(!p.decide_at(&reg, Some("a")).is_allowed());
    let d = p.decide_with_names(&reg, Some("a"), &["r.example.com"]);
    assert!(d.is_allowed());
    assert_eq!(d.reason(), &Reason::MatchedName("r.example.com".into()));
    // An exact-name entry is not matched by reverse DNS, and the port still applies.
    assert!(
        !p.decide_with_names(&reg, Some("a"), &["reg.x"])
            .is_allowed()
    );
    let other_port = crate::Registry::parse("10.9.9.9").unwrap();
    assert!(
        !p.decide_with_names(&other_port, Some("a"), &["r.example.com"])
            .is_allowed()
    );
    let oracle = LinearPolicy::new(p.whitelist(), p.insecure());
    assert!(
        oracle
            .decide_with_names(&reg, Some("a"), &["r.example.com"])
            .allowed
    );
    assert_eq!(
        p.wants_reverse_dns(&p.decide_at(&reg, Some("a"))),
        Some("10.9.9.9".parse().unwrap())
    );
}

#[test]
fn matches_into_lists_every_match_most_specific_first() {
    let p = policy(
        &["*", "*.example.com", "a.example.com"],
        &["a.example.com:443"],
    );
    let image = ImageRef::parse("a.example.com/x").unwrap();
    let mut out = Vec::new();
    p.matches_into(image.registry(), Some(image.match_path()), &mut out);
    let texts: Vec<_> = out.iter().map(|e| e.as_str()).collect();
    assert_eq!(
        texts,
        ["a.example.com:443", "a.example.com", "*.example.com", "*"]
    );
    assert_eq!(p.decide(&image).list(), Some(List::Insecure));
}

// ---- property tests -------------------------------------------------------------------------

/// Host-ish pieces that collide with each other: near-misses, not noise.
const HOSTS: &[&str] = &[
    "example.com",
    "a.example.com",
    "b.a.example.com",
    "evilexample.com",
    "example.com.evil.io",
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
    "hub.docker.com",
    "localhost",
    "reg",
    "io",
    "com",
    "10.0.0.1",
    "10.0.0.2",
    "10.0.1.1",
    "11.0.0.1",
    "127.0.0.1",
    "192.168.100.207",
    "[fd00::1]",
    "[fd00::2]",
    "[fd01::1]",
    "[::ffff:a00:1]",
];
const PORTS: &[Option<u16>] = &[None, None, Some(443), Some(5000), Some(80)];
const PATHS: &[&str] = &["", "team", "team/app", "library", "teamx", "team/app/sub"];
const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.0.0.0/24",
    "10.0.0.1/32",
    "0.0.0.0/0",
    "fd00::/16",
    "fd00::/127",
    "::/0",
    "192.168.0.0/16",
];

fn entry_strategy() -> impl Strategy<Value = String> {
    let hostish =
        (0..HOSTS.len(), 0..PORTS.len(), 0..PATHS.len(), 0..4u8).prop_map(|(h, p, n, kind)| {
            let host = HOSTS[h];
            let host = match kind {
                0 if !host.starts_with(['[', '1']) => format!("*.{host}"),
                1 => "*".to_owned(),
                _ => host.to_owned(),
            };
            let mut s = host;
            if let Some(port) = PORTS[p] {
                s.push_str(&format!(":{port}"));
            }
            if !PATHS[n].is_empty() {
                s.push('/');
                s.push_str(PATHS[n]);
            }
            s
        });
    prop_oneof![4 => hostish, 1 => (0..CIDRS.len()).prop_map(|i| CIDRS[i].to_owned())]
}

fn reference_strategy() -> impl Strategy<Value = String> {
    (0..HOSTS.len() + 3, 0..PORTS.len(), 1..PATHS.len()).prop_map(|(h, p, n)| {
        let path = PATHS[n];
        if h >= HOSTS.len() {
            // Hub short forms.
            return ["busybox", "library/busybox", "user/app"][h - HOSTS.len()].to_owned();
        }
        match PORTS[p] {
            Some(port) => format!("{}:{port}/{path}", HOSTS[h]),
            None if HOSTS[h].contains('.')
                || HOSTS[h].starts_with('[')
                || HOSTS[h] == "localhost" =>
            {
                format!("{}/{path}", HOSTS[h])
            }
            None => format!("{}.x/{path}", HOSTS[h]),
        }
    })
}

fn parse_all(list: &[String]) -> Vec<Entry> {
    list.iter().filter_map(|e| Entry::parse(e).ok()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_agrees_with_oracle(
        wl in proptest::collection::vec(entry_strategy(), 0..12),
        insecure in proptest::collection::vec(entry_strategy(), 0..4),
        refs in proptest::collection::vec(reference_strategy(), 1..16),
        names in proptest::collection::vec(0..HOSTS.len(), 0..3),
    ) {
        let (wl, insecure) = (parse_all(&wl), parse_all(&insecure));
        let mut b = PolicyBuilder::new();
        wl.iter().cloned().for_each(|e| { b.whitelist_entry(e); });
        insecure.iter().cloned().for_each(|e| { b.insecure_entry(e); });
        let p = b.build().unwrap();
        let oracle = LinearPolicy::new(&wl, &insecure);
        let names: Vec<&str> = names.iter().map(|&i| HOSTS[i]).filter(|h| !h.starts_with(['[', '1'])).collect();
        for r in refs {
            let image = ImageRef::parse(&r).unwrap();
            let d = p.decide(&image);
            let o = oracle.decide(&image);
            prop_assert_eq!(o.allowed, d.is_allowed(), "{}", r);
            prop_assert_eq!(o.transport, d.transport(), "{}", r);
            prop_assert_eq!(o.entry.map(|(e, _)| e), d.entry().map(|e| e.to_string()), "{}", r);
            let d = p.decide_with_names(image.registry(), Some(image.match_path()), &names);
            let o = oracle.decide_with_names(image.registry(), Some(image.match_path()), &names);
            prop_assert_eq!(o.allowed, d.is_allowed(), "{} names {:?}", r, names);
            prop_assert_eq!(o.transport, d.transport(), "{} names {:?}", r, names);
        }
    }

    /// Many IPv4 prefix lengths (the matcher then probes only those with a range in the query's
    /// /16), with queries inside, beside and between the ranges.
    #[test]
    fn ipv4_ranges_of_many_lengths_agree_with_oracle(
        ranges in proptest::collection::vec((0u32..64, 0u8..=32, proptest::bool::ANY), 4..40),
        queries in proptest::collection::vec((0usize..40, 0u32..1 << 20), 1..32),
    ) {
        // Networks in a few /8s so that queries often land inside them.
        let net = |i: u32| (10 + (i % 4)) << 24 | (i * 0x0001_3579) & 0x00ff_ffff;
        let mut b = PolicyBuilder::new();
        let (mut wl, mut insecure) = (Vec::new(), Vec::new());
        for &(i, len, secure) in &ranges {
            let e = Entry::parse(&format!("{}/{len}", std::net::Ipv4Addr::from(net(i)))).unwrap();
            if secure { wl.push(e) } else { insecure.push(e) }
        }
        wl.iter().cloned().for_each(|e| { b.whitelist_entry(e); });
        insecure.iter().cloned().for_each(|e| { b.insecure_entry(e); });
        b.whitelist_entry(Entry::parse("reg.example.com").unwrap());
        wl.push(Entry::parse("reg.example.com").unwrap());
        let p = b.build().unwrap();
        let oracle = LinearPolicy::new(&wl, &insecure);
        for (i, offset) in queries {
            let base = net(ranges[i % ranges.len()].0);
            let ip = std::net::Ipv4Addr::from(base.wrapping_add(offset).wrapping_sub(1 << 19));
            let image = ImageRef::parse(&format!("{ip}/app")).unwrap();
            let (d, o) = (p.decide(&image), oracle.decide(&image));
            prop_assert_eq!(o.allowed, d.is_allowed(), "{}", ip);
            prop_assert_eq!(o.transport, d.transport(), "{}", ip);
            prop_assert_eq!(o.entry.map(|(e, _)| e), d.entry().map(|e| e.to_string()), "{}", ip);
        }
    }

    #[test]
    fn narrowing_never_widens(
        base in proptest::collection::vec(entry_strategy(), 0..6),
        update in proptest::collection::vec(entry_strategy(), 0..6),
        refs in proptest::collection::vec(reference_strategy(), 1..24),
    ) {
        let mut b = PolicyBuilder::new();
        parse_all(&base).into_iter().for_each(|e| { b.whitelist_entry(e); });
        let base = b.build().unwrap();
        if let Ok(narrowed) = base.narrow(&parse_all(&update)) {
            for r in refs {
                let image = ImageRef::parse(&r).unwrap();
                if base.whitelist_mode() && narrowed.decide(&image).is_allowed() {
                    prop_assert!(base.decide(&image).is_allowed(), "{} allowed by narrowed only", r);
                }
            }
        }
    }

    #[test]
    fn containment_implies_matching(inner in entry_strategy(), outer in entry_strategy(), r in reference_strategy()) {
        let (Ok(inner), Ok(outer)) = (Entry::parse(&inner), Entry::parse(&outer)) else { return Ok(()) };
        let image = ImageRef::parse(&r).unwrap();
        if inner.is_contained_in(&outer) && inner.matches(image.registry(), Some(image.match_path())) {
            prop_assert!(outer.matches(image.registry(), Some(image.match_path())), "{} ⊂ {} but {} differs", inner, outer, r);
        }
    }

    #[test]
    fn parsers_never_panic(s in "\\PC{0,80}") {
        let _ = Entry::parse(&s);
        let _ = ImageRef::parse(&s);
        let _ = crate::Registry::parse(&s);
    }

    #[test]
    fn entry_text_round_trips(e in entry_strategy()) {
        if let Ok(entry) = Entry::parse(&e) {
            prop_assert_eq!(Entry::parse(entry.as_str()).unwrap(), entry);
        }
    }

    /// Issue 16: a project's effective policy (the VCH whitelist ∩ its list) never allows what the
    /// whitelist denies, nor what the project's list denies; the entries `docker info` shows for
    /// it are inside the whitelist and allow nothing it denies either.
    #[test]
    fn a_projects_effective_policy_never_widens(
        wl in proptest::collection::vec(entry_strategy(), 0..8),
        insecure in proptest::collection::vec(entry_strategy(), 0..3),
        project in proptest::collection::vec(entry_strategy(), 1..6),
        refs in proptest::collection::vec(reference_strategy(), 1..16),
    ) {
        let (wl, insecure, project) = (parse_all(&wl), parse_all(&insecure), parse_all(&project));
        if project.is_empty() {
            return Ok(());
        }
        let mut b = PolicyBuilder::new();
        wl.iter().cloned().for_each(|e| { b.whitelist_entry(e); });
        insecure.iter().cloned().for_each(|e| { b.insecure_entry(e); });
        let vch = b.build().unwrap();
        let mut b = PolicyBuilder::new();
        project.iter().cloned().for_each(|e| { b.whitelist_entry(e); });
        let list = b.build().unwrap();
        let effective = vch.intersect(&list);
        let shown = vch.narrowed_entries(&project);
        for e in &shown {
            prop_assert!(
                !vch.whitelist_mode()
                    || vch.whitelist().iter().chain(vch.insecure()).any(|b| e.is_contained_in(b)),
                "{} shown but outside the whitelist", e
            );
        }
        for r in refs {
            let image = ImageRef::parse(&r).unwrap();
            if effective.decide(&image).is_allowed() {
                prop_assert!(vch.decide(&image).is_allowed(), "{} allowed by the project only", r);
                prop_assert!(list.decide(&image).is_allowed(), "{} allowed outside the project", r);
            }
            if shown.iter().any(|e| e.matches(image.registry(), Some(image.match_path()))) {
                prop_assert!(vch.decide(&image).is_allowed(), "{} shown as allowed, denied", r);
            }
        }
    }
}
