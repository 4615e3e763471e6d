//! The policy matcher: compiled [`Policy`] against the linear oracle, on whitelists of 10 to
//! 100 000 mixed entries.
//!
//! Groups (`cargo bench -p vch-benches --bench policy`):
//! - `build/N`: parsing N entries and compiling the policy (apart from matching);
//! - `decide/QUERY/{compiled,oracle}/N`: one decision on a pre-parsed reference, for five queries:
//!   an exact-name hit, a wildcard hit, a CIDR hit, a Docker Hub miss, a near-miss name;
//! - `parse_decide/QUERY/100000`: `ImageRef::parse` plus the decision, the cost a proxy pays per
//!   reference;
//! - `parse/QUERY`: `ImageRef::parse` alone.
//!
//! Every iteration asserts its result. The entries are generated deterministically (a seeded
//! SplitMix64), so every run measures the same policy.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use vch_policy::oracle::LinearPolicy;
use vch_policy::{Entry, ImageRef, Policy, PolicyBuilder};

const SIZES: [usize; 4] = [10, 1_000, 10_000, 100_000];

/// SplitMix64: a tiny seeded generator, so the bench needs no `rand`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A whitelist of `n` mixed entries, and the queries with their expected answers.
struct Workload {
    entries: Vec<String>,
    queries: Vec<(&'static str, String, bool)>,
}

fn workload(n: usize) -> Workload {
    let mut rng = Rng(0x5eed_0000 + n as u64);
    let mut entries = Vec::with_capacity(n);
    let (mut name, mut wildcard, mut cidr) = (None, None, None);
    for i in 0..n {
        let entry = match i % 8 {
            // exact name
            0 => {
                let e = format!("r{i}.team{}.example{}.com", rng.below(50), rng.below(7));
                name = Some(e.clone());
                e
            }
            // name and port
            1 => format!(
                "h{i}.corp{}.example.net:{}",
                rng.below(20),
                5000 + rng.below(1000)
            ),
            // IPv4 address, sometimes with a port
            2 => {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 | (i as u32 & 0x00ff_ffff));
                match rng.below(2) {
                    0 => ip.to_string(),
                    _ => format!("{ip}:{}", 5000 + rng.below(100)),
                }
            }
            // IPv4 range in 100.0.0.0/8, prefix /16 to /30
            3 => {
                let len = 16 + rng.below(15) as u8;
                let ip = std::net::Ipv4Addr::from(0x6400_0000 | (rng.next() as u32 & 0x00ff_ffff));
                cidr = Some((ip, len));
                format!("{ip}/{len}")
            }
            // IPv6 range in fd00::/8
            4 => {
                let len = [32, 48, 56, 64, 128][rng.below(5) as usize];
                let ip =
                    std::net::Ipv6Addr::from((0xfd_u128 << 120) | (u128::from(rng.next()) << 56));
                format!("{ip}/{len}")
            }
            // wildcard, sometimes with a port
            5 => {
                let e = format!("*.d{i}.example.org");
                // The first wildcard has no port: it is the one the wildcard query hits.
                if wildcard.is_some() && rng.below(4) == 0 {
                    format!("{e}:5000")
                } else {
                    wildcard = Some(e.clone());
                    e
                }
            }
            // namespace
            6 => format!("ns{i}.example.net/team{}", rng.below(50)),
            // IPv6 address
            _ => format!("[fd00::{:x}:{:x}]", i >> 16, i & 0xffff),
        };
        entries.push(entry);
    }
    let name = name.unwrap_or_else(|| panic!("no exact name among {n} entries"));
    let wildcard = wildcard.unwrap_or_else(|| panic!("no wildcard among {n} entries"));
    let (cidr, len) = cidr.unwrap_or_else(|| panic!("no range among {n} entries"));
    let inside = (u32::from(cidr) & (u32::MAX << (32 - len))) | 1;
    let queries = vec![
        ("name_hit", format!("{name}/team/app:1.0"), true),
        (
            "wildcard_hit",
            format!("a.b.{}/team/app:1.0", &wildcard[2..]),
            true,
        ),
        (
            "cidr_hit",
            format!("{}/team/app:1.0", std::net::Ipv4Addr::from(inside)),
            true,
        ),
        ("hub_miss", "busybox:1.36".to_owned(), false),
        // One letter off an exact entry: `.example3.co` for `.example3.com`.
        (
            "near_miss",
            format!("{}/team/app:1.0", name.trim_end_matches('m')),
            false,
        ),
    ];
    Workload { entries, queries }
}

fn parse_entries(texts: &[String]) -> Vec<Entry> {
    texts
        .iter()
        .map(|t| Entry::parse(t).unwrap_or_else(|e| panic!("generated entry: {e}")))
        .collect()
}

fn compile(texts: &[String]) -> Policy {
    let mut builder = PolicyBuilder::new();
    for text in texts {
        builder.whitelist(text.as_str());
    }
    builder
        .build()
        .unwrap_or_else(|e| panic!("generated whitelist: {e}"))
}

fn image(text: &str) -> ImageRef {
    ImageRef::parse(text).unwrap_or_else(|e| panic!("query: {e}"))
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for n in SIZES {
        let w = workload(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &w.entries, |b, texts| {
            b.iter(|| {
                let policy = compile(black_box(texts));
                assert_eq!(policy.whitelist().len(), n);
                policy
            });
        });
    }
    group.finish();
}

fn decide(c: &mut Criterion) {
    // Compile each size once; every query runs against the same policies.
    let sets: Vec<(usize, Workload, Policy, LinearPolicy)> = SIZES
        .iter()
        .map(|&n| {
            let w = workload(n);
            let policy = compile(&w.entries);
            let oracle = LinearPolicy::new(&parse_entries(&w.entries), &[]);
            (n, w, policy, oracle)
        })
        .collect();
    for q in 0..sets[0].1.queries.len() {
        let mut group = c.benchmark_group(format!("decide/{}", sets[0].1.queries[q].0));
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        for (n, w, policy, oracle) in &sets {
            let (_, text, expected) = &w.queries[q];
            let reference = image(text);
            // Agreement first, so a fast wrong answer cannot be benchmarked.
            assert_eq!(policy.decide(&reference).is_allowed(), *expected, "{text}");
            assert_eq!(oracle.decide(&reference).allowed, *expected, "{text}");

            group.bench_with_input(BenchmarkId::new("compiled", n), &reference, |b, r| {
                b.iter(|| assert_eq!(policy.decide(black_box(r)).is_allowed(), *expected));
            });
            if *n == 100_000 {
                // About a millisecond per decision: fewer samples keep the run short.
                group.sample_size(20);
            }
            group.bench_with_input(BenchmarkId::new("oracle", n), &reference, |b, r| {
                b.iter(|| assert_eq!(oracle.decide(black_box(r)).allowed, *expected));
            });
        }
        group.finish();
    }
}

fn parse_decide(c: &mut Criterion) {
    let n = 100_000;
    let w = workload(n);
    let policy = compile(&w.entries);
    let mut group = c.benchmark_group("parse_decide");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (query, text, expected) in &w.queries {
        group.bench_with_input(BenchmarkId::new(*query, n), text.as_str(), |b, text| {
            b.iter(|| {
                let r = ImageRef::parse(black_box(text)).unwrap_or_else(|e| panic!("query: {e}"));
                assert_eq!(policy.decide(&r).is_allowed(), *expected);
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("parse");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (query, text, _) in &w.queries {
        group.bench_with_input(
            BenchmarkId::from_parameter(query),
            text.as_str(),
            |b, text| {
                b.iter(|| {
                    let r =
                        ImageRef::parse(black_box(text)).unwrap_or_else(|e| panic!("query: {e}"));
                    assert!(!r.path().is_empty());
                    r
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, build, decide, parse_decide);
criterion_main!(benches);
