//! Replays the fuzz seed corpora (`fuzz/seeds/<target>/`) through the fuzz targets' own checks.
//!
//! The seeds (`seed-<hash>` files) are generated from the tables below: `VCH_WRITE_SEEDS=1 cargo
//! test -p vch-policy --features oracle --test fuzz_seeds -- --test-threads=1` rewrites them (one
//! thread: the replay must not read a directory being rewritten); otherwise a test checks that the
//! committed files match the tables. Every file in a seed directory is replayed, so a reproducer minimised
//! from a fuzzer crash and saved there (`cargo fuzz tmin`) becomes a regression test.
//!
//! Needs the `oracle` feature (the differential check compares against the linear oracle), which
//! the crate's dev-dependency on itself turns on for every `cargo test`.
#![cfg(feature = "oracle")]

use std::path::PathBuf;

use vch_testbed::{SeedCorpus, SeedTarget};

// The same functions the fuzz targets call, compiled here as a module.
#[allow(
    unreachable_pub,
    reason = "public in the fuzz crate, private in this test"
)]
#[path = "../../../fuzz/src/lib.rs"]
mod checks;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const ENTRIES: &[&str] = &[
    "10.2.2.1/24",
    "10.2.40.40:443",
    "192.168.100.207",
    "*.example.com",
    "*.example.com:5000",
    "https://reg/ns",
    "http://reg.example.com:8080/",
    "Reg.Example.COM.",
    "reg.example.com/team/sub",
    "[fd00::1]:5000",
    "fd00::1:2/64",
    "[fd00::1]/120",
    "::ffff:10.2.2.1/120",
    "[::ffff:10.0.0.1]:5000",
    "0.0.0.0/0",
    "*",
    "*:5000",
    "docker.io/library",
    "index.docker.io:443",
    "*.docker.io",
    "localhost",
    "10.0.0.1:5000/24",
    "  reg.example.com  ",
    // Regression (fuzz finding): a trailing dot before `/N` must not hide a CIDR range.
    "10.2.2.112./24",
    "10.0.0.1./24",
];

const REFERENCES: &[&str] = &[
    "busybox",
    "busybox:1.36",
    "library/busybox",
    "user/app",
    "docker.io/library/busybox",
    "index.docker.io/user/app:1",
    "registry-1.docker.io/busybox",
    "registry.hub.docker.com/user/app",
    "docker.io:5000/busybox",
    "localhost/app",
    "localhost:5000/a/b/c:v1.2",
    "Foo/app",
    "Reg.Example.com/team/app",
    "10.2.40.40:443/app",
    "10.2.2.7/team/app:1.0",
    "[::ffff:a02:2828]/app",
    "a.b/c__d/e-----f/g.h/i_j",
    "reg:5000/app:Tag_1.x-y",
    // Regression (fuzz finding): printing must stay idempotent for a mixed-case Hub alias.
    "Index.docker.io/x",
];

/// Differential inputs, in the line format `policy_differential` documents.
const POLICIES: &[&str] = &[
    // The issue's example: whitelist mode with an insecure entry; Hub denied.
    "w 10.2.40.40:443\nw 10.2.2.1/24\nw *.example.com\ni 192.168.100.207\n\
     r busybox\nr 10.2.2.7/team/app:1.0\nr 10.2.40.40/x\nr 10.2.40.40:5000/x\n\
     r 192.168.100.207:5000/x\nr reg.example.com/x\nr example.com/x\n\
     u 10.2.2.0/25\nu a.example.com:5000\nu 10.2.40.40:443\n",
    // No whitelist: everything allowed, two registries insecure.
    "i *.example.com\ni 192.168.100.207:5000\n\
     r busybox\nr reg.example.com/x\nr 192.168.100.207:5000/x\nr 192.168.100.207/x\n\
     u reg.example.com\n",
    // Namespaces, Hub aliases, schemes.
    "w docker.io/library\nw reg.example.com/team\nw https://reg.example.com/ns\n\
     w http://other.example\n\
     r busybox\nr user/app\nr registry-1.docker.io/busybox\nr reg.example.com/team/app\n\
     r reg.example.com/teamx/app\nr reg.example.com:443/ns/x\nr other.example:80/x\n\
     u index.docker.io:443/library\nu reg.example.com/team/sub\nu reg.example.com:443/ns/deep\n",
    // IPv6, IPv4-mapped addresses and reverse-DNS names against wildcards.
    "w fd00::/64\nw [fd00::1]:5000\nw *.corp.example\ni ::ffff:10.2.2.1/120\n\
     n a.corp.example\nn corp.example\nn A.Corp.Example.\nn .corp.example\n\
     r [fd00::2]/x\nr [fd00::1]:5000/a/b:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
     r [fd01::1]/x\nr [::ffff:a02:0207]/x\nr 10.2.2.9:5000/x\n\
     u [fd00::1]:5000\nu *.b.corp.example\nu fd00::/65\n",
    // Match-all entries, ports, wildcards covering Hub; an update that broadens.
    "w *:5000\nw *.docker.io\nw 10.0.0.0/8\ni *\n\
     r anything.example:5000/x\nr anything.example/x\nr registry-1.docker.io/busybox\n\
     r 10.255.255.255/x\nr 11.0.0.0/x\n\
     u 10.1.0.0/16\nu *.example:5000\nu reg.example\n",
];

fn seeds(target: &str) -> Vec<String> {
    match target {
        "entry_parse" => ENTRIES.iter().map(|s| (*s).to_owned()).collect(),
        "reference_parse" => REFERENCES
            .iter()
            .map(|s| (*s).to_owned())
            .chain([
                format!("busybox@{DIGEST}"),
                format!("[fd00::1]:5000/a/b:tag@{DIGEST}"),
            ])
            .collect(),
        _ => POLICIES.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The committed corpora of this crate's fuzz targets.
fn corpus() -> SeedCorpus {
    SeedCorpus::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds"),
        vec![
            SeedTarget {
                name: "entry_parse",
                check: checks::entry_parse,
                seeds: seeds("entry_parse"),
            },
            SeedTarget {
                name: "reference_parse",
                check: checks::reference_parse,
                seeds: seeds("reference_parse"),
            },
            SeedTarget {
                name: "policy_differential",
                check: checks::policy_differential,
                seeds: seeds("policy_differential"),
            },
        ],
    )
}

#[test]
fn committed_seeds_match_the_tables() {
    corpus().check_committed();
}

#[test]
fn seeds_pass_the_fuzz_checks() {
    corpus().replay();
}

/// The checks find what they are meant to find: each seed table exercises the interesting side of
/// its check (not only inputs that return early).
#[test]
fn seeds_are_accepted_by_the_parsers() {
    for entry in ENTRIES {
        vch_policy::Entry::parse(entry).unwrap();
    }
    for reference in seeds("reference_parse") {
        vch_policy::ImageRef::parse(&reference).unwrap();
    }
    for policy in POLICIES {
        for line in policy.lines() {
            let (tag, value) = line.split_once(' ').unwrap();
            match tag {
                "w" | "i" | "u" => drop(vch_policy::Entry::parse(value).unwrap()),
                "r" => drop(vch_policy::ImageRef::parse(value).unwrap()),
                // Names are passed as given; `.corp.example` is a regression seed.
                "n" => {}
                _ => panic!("unknown tag in {line:?}"),
            }
        }
    }
}
