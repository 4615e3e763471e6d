//! Replays the proxy's fuzz seed corpora (`fuzz/seeds/docker_request/`,
//! `fuzz/seeds/engine_response/`, `fuzz/seeds/go_json/`) through the fuzz targets' own checks
//! ([`crate::fuzz_checks`], and `vch_proxy::go_json_check`).
//!
//! The `seed-<hash>` files are generated from the tables below, and `go_json`'s also from the
//! bodies of `testdata/gojson/cases.json` (those that are not UTF-8 as `case-<name>` files):
//! `VCH_WRITE_SEEDS=1 cargo test -p vch-proxy --test it fuzz_seeds -- --test-threads=1` rewrites
//! them; otherwise a test checks that the committed files match.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vch_proxy::{Gate, Kind};
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
    // images/push: the repository is the decoded `{name}`, `tag` its tag (a digest tag is ignored).
    "POST /v1.25/images/reg.example.com:5000/team/app/push?tag=v1",
    "POST /v1.25/images/busybox/push",
    "POST /v1.25/images/reg.example.com%2Fteam%2Fapp/push?tag=v2&tag=evil",
    "POST /v1.25/images/reg.example.com/app:old/push?tag=new",
    "POST /v1.25/images/reg.example.com/app/push?tag=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "POST /v1.25/images/Reg.Example.com/app/push?ta%67=v3",
    "POST /images/localhost/app/push/?tag=bad%20tag",
    "POST /v1.25/images/Bad/Name/push",
    // images/search: Hub unless the first segment has `.` or `:` or is `localhost`.
    "GET /v1.25/images/search?term=busybox&limit=25",
    "GET /v1.25/images/search?term=reg.example.com:5000/team/app",
    "GET /v1.25/images/search?term=localhost/app",
    "GET /v1.25/images/search?term=Foo/app",
    "GET /v1.25/images/search?term=evil.example",
    "GET /v1.25/images/search?term=index.docker.io/library/busybox",
    "GET /v1.25/images/search?te%72m=evil.example/x&term=busybox",
    "GET /v1.25/images/search?term=%5B::1%5D:5000/a",
    "GET /v1.25/images/search",
    // Plugins: the first `remote`.
    "POST /v1.25/plugins/pull?remote=vieux/sshfs:latest&name=sshfs",
    "POST /v1.25/plugins/pull?remote=reg.example.com/p:1&remote=evil.example/p",
    "POST /v1.25/plugins/pull?name=x",
    "POST /v1.25/plugins/pull?remote=&remote=evil.example/p",
    "GET /v1.25/plugins/privileges?remote=reg.example.com:5000/plugins/p@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "GET /plugins/privileges?%72emote=evil.example/p",
    "POST /v1.25/plugins/vieux/sshfs/upgrade?remote=vieux/sshfs:next",
    "POST /v1.25/plugins/reg.example.com/team/p:1/upgrade?remote=evil.example/p&skipRemoteCheck=1",
    "POST /v1.25/plugins/create?name=local/p\nplugin tar",
    // plugins/push: the plugin goes to the registry its name names.
    "POST /v1.25/plugins/reg.example.com/p:1/push",
    "POST /v1.25/plugins/vieux%2Fsshfs/push/",
    // dockerd resolves `{name}` by name, then by ID prefix (`resolvePluginID`), and pushes the
    // plugin found to its own name: a name that could be an ID prefix is refused.
    "POST /v1.25/plugins/0123abcd/push",
    // distribution (1.30): dockerd asks the registry for the manifest.
    "GET /v1.30/distribution/reg.example.com:5000/team/app:1/json",
    "GET /distribution/busybox/json",
    "GET /v1.29/distribution/busybox/json",
    // BuildKit's doors, at every version.
    "POST /v1.25/build?version=2&t=x",
    "POST /build?session=abc&remote=client-session",
    "POST /v1.41/build?outputs=%5B%7B%22Type%22%3A%22image%22%7D%5D",
    // Content from no registry.
    "POST /v1.25/images/load?quiet=1\nmanifest.json\u{0}\u{0}\u{0}",
    "POST /v1.25/images/create?fromSrc=http://example.com/rootfs.tar&repo=me/imported&tag=1",
    "POST /v1.25/images/create?fromImage=&fromImage=evil.example/x&fromSrc=-",
    "POST /v1.25/build?remote=https://github.com/docker/example.git&t=app",
    "POST /v1.25/build?t=app&remote=",
    "POST /v1.25/build?remote=%68ttps://evil.example/ctx.tar;&remote=x",
    "POST /build?dockerfile=Dockerfile\nFROM evil.example/x\n",
    "POST /v1.25/swarm/join\n{\"RemoteAddrs\":[\"10.0.0.1:2377\"],\"JoinToken\":\"SWMTKN-1-x\"}",
    // Services: the JSON spec as Go decodes it.
    "POST /v1.25/services/create\n{\"Name\":\"web\",\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"reg.example.com/team/web:1\"}}}",
    "POST /v1.25/services/create?x=1\n{\"TaskTemplate\":{\"Runtime\":\"plugin\",\"PluginSpec\":{\"Name\":\"p\",\"Remote\":\"evil.example/p\"}}}",
    "POST /v1.25/services/create\n{\"TaskTemplate\":{\"PluginSpec\":{}}}",
    "POST /v1.25/services/create\n{\"ta\u{17F}\u{212A}template\":{\"container\u{17F}pec\":{\"IMAGE\":\"evil.example/x\"}}}",
    "POST /v1.25/services/create\n{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"reg.example.com/a\"}},\"tasktemplate\":{\"containerspec\":{\"image\":\"evil.example/b\"}}}",
    "POST /v1.25/services/create\n{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"a\"}}} trailing",
    "POST /v1.25/services/abc/update?version=12\n{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"reg.example.com/a\",\"Image\":null}}}",
    "POST /v1.25/services/abc/update?version=12&registryAuthFrom=previous-spec\n{\"TaskTemplate\":{\"Runtime\":\"attachment\",\"ContainerSpec\":null}}",
    "POST /v1.25/services/abc/update\n{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"Bad/Name\"}}}",
    // auth: `serveraddress` in any case Go folds, the last one winning.
    "POST /v1.25/auth\n{\"\u{17F}erveraddress\":\"evil.example\",\"serveraddress\":\"reg.example.com\"}",
    "POST /v1.25/auth\n{\"username\":\"u\",\"serveraddress\":\"reg.example.com\",\"\u{17F}ERVERADDRE\u{17F}\u{17F}\":\"https://evil.example:5000/v2/\"}",
    "POST /v1.25/auth?serveraddress=evil.example\n{\"ServerAddress\":\"\\u0072eg.example.com\"}",
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

/// Bodies for `go_json` besides those of `testdata/gojson/cases.json`.
const GO_JSON_EXTRA: &[&str] = &[
    "{\"serveraddress\":\"a\\u0000b\",\"k\\\"\\\\\\/\":[-0,1E+2,0.5e-1,{\"\":[]}]}",
    "{\"TaskTemplate\":{\"Runtime\":\"plugin\"},\"TASKTEMPLATE\":{\"runtime\":\"\",\"PluginSpec\":null}}",
    "{\"TaskTemplate\":{\"PluginSpec\":{\"remote\":\"a\"},\"PluginSpec\":{\"REMOTE\":null},\"ContainerSpec\":{\"Image\":\"\"}}}",
    "{\"\\u0053\\u0045\\u0052\\u0056\\u0045\\u0052\\u0041\\u0044\\u0044\\u0052\\u0045\\u0053\\u0053\":\"\\ud83d\\ude00\"}",
    "{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"a\"}},\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"b\"},\"ContainerSpec\":null,\"ContainerSpec\":{}}}",
    "\u{FEFF}",
    "{\"a\":\"\\u00e9\u{E9}\",\"b\":[true,false,null,\"\\b\\f\\n\\r\\t\"]}",
];

/// The bodies of `testdata/gojson/cases.json`, by case name (`body`, or `body_hex` decoded).
fn go_json_cases() -> Vec<(String, Vec<u8>)> {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("../../testdata/gojson/cases.json")).unwrap();
    cases
        .iter()
        .map(|case| {
            let name = case["name"].as_str().unwrap().to_owned();
            let body = match case["body_hex"].as_str() {
                Some(hex) => (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect(),
                None => case["body"].as_str().unwrap().as_bytes().to_vec(),
            };
            (name, body)
        })
        .collect()
}

/// `go_json`'s table: the UTF-8 bodies of the Go cases and the extras, each once.
fn go_json_seeds() -> Vec<String> {
    let mut seeds: Vec<String> = go_json_cases()
        .into_iter()
        .filter_map(|(_, body)| String::from_utf8(body).ok())
        .chain(GO_JSON_EXTRA.iter().map(|s| (*s).to_owned()))
        .collect();
    seeds.sort();
    seeds.dedup();
    seeds
}

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
}

/// The committed corpora of the proxy's fuzz targets.
fn corpus() -> SeedCorpus {
    SeedCorpus::new(
        seeds_dir(),
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
            SeedTarget {
                name: "go_json",
                check: vch_proxy::go_json_check,
                seeds: go_json_seeds(),
            },
            SeedTarget {
                name: "build_context",
                check: vch_proxy::build::context::fuzz_check,
                seeds: build_context_seeds(),
            },
            SeedTarget {
                name: "dockerfile",
                check: vch_proxy::build::dockerfile::check_invariants,
                seeds: dockerfile_seeds(),
            },
        ],
    )
}

#[test]
fn committed_seeds_match_the_table() {
    corpus().check_committed();
}

/// The Go cases whose bodies are not UTF-8 (the seed tables hold text) are committed as
/// `case-<name>` files, written and checked like the table's.
#[test]
fn committed_go_json_cases_match() {
    let dir = seeds_dir().join("go_json");
    let write = std::env::var_os("VCH_WRITE_SEEDS").is_some();
    let mut binary = 0;
    for (name, body) in go_json_cases() {
        if std::str::from_utf8(&body).is_ok() {
            continue;
        }
        binary += 1;
        let path = dir.join(format!("case-{name}"));
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &body).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate with VCH_WRITE_SEEDS=1)",
                path.display()
            )
        });
        assert_eq!(committed, body, "{}", path.display());
    }
    assert!(binary > 0, "the Go cases have bodies that are not UTF-8");
    assert!(Path::new(&dir).is_dir());
}

#[test]
fn seeds_pass_the_fuzz_check() {
    corpus().replay();
}

/// Which gate a request of the table reaches, if any.
fn gate_of(request: &str) -> Option<Gate> {
    let line = request.lines().next().unwrap();
    let (method, target) = line.split_once(' ').unwrap();
    let path = target.split('?').next().unwrap();
    match vch_proxy::route(&method.parse().unwrap(), path).ok()?.kind {
        Kind::Policed(gate) => Some(gate),
        _ => None,
    }
}

/// Every gate is reached by at least two seeds (the match is exhaustive: a new gate needs seeds).
#[test]
fn seeds_reach_every_gate() {
    let mut reached = [0_usize; 15];
    for gate in REQUESTS.iter().filter_map(|r| gate_of(r)) {
        let i = match gate {
            Gate::ImagesCreate => 0,
            Gate::ImagesLoad => 1,
            Gate::ImagesPush => 2,
            Gate::ImagesSearch => 3,
            Gate::PluginPull => 4,
            Gate::PluginPrivileges => 5,
            Gate::PluginUpgrade => 6,
            Gate::PluginCreate => 7,
            Gate::ServiceCreate => 8,
            Gate::ServiceUpdate => 9,
            Gate::Build => 10,
            Gate::Auth => 11,
            Gate::PluginPush => 12,
            Gate::SwarmJoin => 13,
            Gate::Distribution => 14,
        };
        reached[i] += 1;
    }
    // One seed each for load, plugin create and swarm join: their answer depends on nothing.
    let wanted = [2, 1, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 1, 2];
    for (i, (got, want)) in reached.iter().zip(wanted).enumerate() {
        assert!(
            *got >= want,
            "gate {i} is reached by {got} seeds: {reached:?}"
        );
    }
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

/// The Dockerfile corpus (`testdata/dockerfiles/`) as the `dockerfile` target reads it: build args
/// as `NAME=VALUE` lines (`NAME` alone for a null), a NUL, the Dockerfile.
fn dockerfile_seeds() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dockerfiles");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata/dockerfiles")
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|path| {
            let dockerfile = std::fs::read_to_string(path).expect("a UTF-8 Dockerfile");
            let args = std::fs::read_to_string(path.with_extension("buildargs"))
                .map(|json| {
                    let map: serde_json::Map<String, Value> =
                        serde_json::from_str(&json).expect("buildargs JSON");
                    map.iter()
                        .map(|(k, v)| match v.as_str() {
                            Some(v) => format!("{k}={v}\n"),
                            None => format!("{k}\n"),
                        })
                        .collect::<String>()
                })
                .unwrap_or_default();
            format!("{args}\0{dockerfile}")
        })
        .collect()
}

/// Small build contexts as the `build_context` target reads them: a first byte that picks the
/// `dockerfile` parameter and the piece size (ASCII here: the default parameter or `Dockerfile`),
/// then a plain tar (ASCII names and contents keep the seed UTF-8).
fn build_context_seeds() -> Vec<String> {
    use crate::build::{Entry, tar};
    let df: &[u8] = b"FROM reg.example.com/base:1\n";
    let evil: &[u8] = b"FROM evil.example/x\n";
    let contexts: Vec<Vec<u8>> = vec![
        tar(&[Entry::File("Dockerfile", df)]),
        tar(&[
            Entry::File("Dockerfile", df),
            Entry::File("Dockerfile", evil),
        ]),
        tar(&[Entry::File("dockerfile", evil)]),
        tar(&[
            Entry::Symlink("Dockerfile", "real/df"),
            Entry::File("real/df", evil),
        ]),
        tar(&[
            Entry::File("real/df", evil),
            Entry::Symlink("Dockerfile", "/real/../real/df"),
        ]),
        tar(&[
            Entry::File("a", evil),
            Entry::HardLink("Dockerfile", "a"),
            Entry::File("a", df),
        ]),
        tar(&[
            Entry::Symlink("sub", "/"),
            Entry::File("sub/Dockerfile", evil),
        ]),
        tar(&[
            Entry::File(".dockerignore", b"Dockerfile\n"),
            Entry::File("Dockerfile", evil),
        ]),
    ];
    let mut seeds = Vec::new();
    for (i, context) in contexts.into_iter().enumerate() {
        for first in [b'\x05', b'G'] {
            let mut seed = vec![first];
            seed.extend_from_slice(&context);
            seeds.push(String::from_utf8(seed).unwrap_or_else(|_| panic!("context {i} is UTF-8")));
        }
    }
    seeds
}
