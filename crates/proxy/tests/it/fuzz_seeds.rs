//! Replays the proxy's fuzz seed corpora (`fuzz/seeds/docker_request/`,
//! `fuzz/seeds/engine_response/`) through the fuzz targets' own checks ([`crate::fuzz_checks`]).
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

/// dockerd's answers as `engine_response` reads them: a control byte (bit 0: a `HEAD`
/// request; bits 1-4: read size - 1), then the response.
const RESPONSES: &[&str] = &[
    "\x00HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOK",
    "\x01HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    "\x02HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1b\r\n{\"status\":\"Pulling fs layer\"}\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: y\r\n\r\n",
    "\x07HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    "\x04HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nxx",
    "\x1eHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
    "\x00HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    "\x00HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n",
    "\x00HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "\x00HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    "\x00HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n",
    "\x00HTTP/1.0 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 40\r\n\r\n{\"message\":\"No such container: abc\"}",
];

/// The committed corpora of the proxy's fuzz targets.
fn corpus() -> SeedCorpus {
    SeedCorpus::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds"),
        vec![
            SeedTarget {
                name: "docker_request",
                check: fuzz_checks::docker_request,
                seeds: REQUESTS.iter().map(|s| (*s).to_owned()).collect(),
            },
            SeedTarget {
                name: "engine_response",
                check: fuzz_checks::engine_response,
                seeds: RESPONSES.iter().map(|s| (*s).to_owned()).collect(),
            },
        ],
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
