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

use std::fs;
use std::path::PathBuf;

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

/// A fuzz target's name and its check.
type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("entry_parse", checks::entry_parse),
    ("reference_parse", checks::reference_parse),
    ("policy_differential", checks::policy_differential),
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

fn seed_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target)
}

/// A stable file name from the content (FNV-1a), as corpus files are named by content.
fn file_name(seed: &str) -> String {
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("seed-{hash:016x}")
}

#[test]
fn committed_seeds_match_the_tables() {
    let write = std::env::var_os("VCH_WRITE_SEEDS").is_some();
    for (target, _) in TARGETS {
        let dir = seed_dir(target);
        if write && dir.exists() {
            // Table seeds no longer in the table go; other files (reproducers) stay.
            let wanted: Vec<String> = seeds(target).iter().map(|s| file_name(s)).collect();
            for file in fs::read_dir(&dir).unwrap() {
                let name = file.unwrap().file_name().to_string_lossy().into_owned();
                if name.starts_with("seed-") && !wanted.contains(&name) {
                    fs::remove_file(dir.join(name)).unwrap();
                }
            }
        }
        for seed in seeds(target) {
            let path = dir.join(file_name(&seed));
            if write {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&path, &seed).unwrap();
            }
            let committed = fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (regenerate with VCH_WRITE_SEEDS=1)",
                    path.display()
                )
            });
            assert_eq!(committed, seed, "{}", path.display());
        }
    }
}

#[test]
fn seeds_pass_the_fuzz_checks() {
    for (target, check) in TARGETS {
        let dir = seed_dir(target);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= seeds(target).len(),
            "{target}: missing seeds"
        );
        for file in files {
            let data = fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{target}: seed {} fails the fuzz check", file.display());
            }
        }
    }
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
