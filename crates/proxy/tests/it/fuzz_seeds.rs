//! Replays the proxy's fuzz seed corpus (`fuzz/seeds/docker_request/`) through the fuzz
//! target's own check ([`crate::fuzz_checks`]).
//!
//! The `seed-<hash>` files are generated from the table below: `VCH_WRITE_SEEDS=1 cargo test -p
//! vch-proxy --test it fuzz_seeds -- --test-threads=1` rewrites them; otherwise a test checks
//! that the committed files match the table.

use std::path::PathBuf;

use vch_testbed::{SeedCorpus, SeedTarget};

use crate::fuzz_checks;

/// Requests as the fuzz target reads them: `METHOD TARGET`, a newline, the body.
const REQUESTS: &[&str] = &[
    "GET /_ping",
    "HEAD /_ping",
    "GET /v1.25/version",
    "GET /v1.41/info",
    "GET /v1.11/info",
    "POST /v1.25/images/create?fromImage=busybox&tag=latest",
    "POST /v1.25/images/create?fromImage=reg.example.com%2Fteam%2Fapp&tag=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "POST /v1.25/images/create?fromImage=reg.example.com/x&fromImage=busybox",
    "POST /v1.25/images/create?fromImage=busybox%00&x;y=1&bad=%zz",
    "POST /v1.25/images/create?fromSrc=-&repo=x",
    "POST /v1.25/images/%63reate?from%49mage=busy%62ox",
    "POST /v1.25/auth\n{\"username\":\"u\",\"password\":\"p\",\"serveraddress\":\"https://reg.example.com:5000/v2/\"}",
    "POST /v1.25/auth\n{\"serveraddress\":\"\"}",
    "POST /v1.25/auth\n{not json",
    "GET //v1.25/images/json",
    "GET /v1.25/./images/json",
    "GET /v1.25/images/reg:5000/a/b/c/json",
    "DELETE /v1.25/images/a/b/c",
    "POST /v1.25/containers/abc/attach?stream=1&stdin=1",
    "POST /v1.25/exec/abc/start",
    "POST /v1.25/session",
    "GET /v1.025/images/json",
    "GET /v1.25/images/%2e%2e/json",
    "GET /v1.25/plugins/a/b/json/",
];

/// The committed corpus of the proxy's fuzz target.
fn corpus() -> SeedCorpus {
    SeedCorpus::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds"),
        vec![SeedTarget {
            name: "docker_request",
            check: fuzz_checks::docker_request,
            seeds: REQUESTS.iter().map(|s| (*s).to_owned()).collect(),
        }],
    )
}

#[test]
fn committed_seeds_match_the_table() {
    corpus().check_committed();
}

#[test]
fn seeds_pass_the_fuzz_check() {
    corpus().replay();
}

/// The table reaches past the router: most seeds route, and pulls reach the gate.
#[test]
fn seeds_reach_the_gate() {
    let routed = REQUESTS
        .iter()
        .filter(|r| {
            let line = r.lines().next().unwrap();
            let (method, target) = line.split_once(' ').unwrap();
            let path = target.split('?').next().unwrap();
            vch_proxy::route(&method.parse().unwrap(), path).is_ok()
        })
        .count();
    assert!(routed >= 15, "{routed} seeds route");
    let pulls = REQUESTS
        .iter()
        .filter_map(|r| r.split_once('?'))
        .filter(|(_, q)| {
            matches!(
                vch_proxy::images_create(&vch_proxy::parse_query(q)),
                Ok(vch_proxy::ImagesCreate::Pull(_))
            )
        })
        .count();
    assert!(pulls >= 4, "{pulls} seeds are pulls");
}
