//! Reading requests the daemon's way, at the wire: on every policed route the proxy decides on
//! exactly what dockerd will act on (the endpoint its router reaches, the first value of a
//! repeated parameter, the field Go's `encoding/json` fills, the body bytes it receives) and
//! refuses what it cannot read that way. Raw bytes over a std `TcpStream`, a real dockerd behind.
//!
//! Every request carries a token of its own (`rd-…`, in the image name or the query string): a
//! request the policy allows must show up in dockerd's debug log (`Calling POST …`), a refused one
//! never. `reg.allowed.example` is whitelisted and does not resolve: dockerd fails the pull or the
//! login, which still proves the request reached it.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::Location;
use std::time::{Duration, Instant};

use vch_testbed::Dockerd;

use crate::support::{Mode, Vch, audit_records, dockerd};

/// The one whitelisted registry.
const ALLOWED: &str = "reg.allowed.example";

const EVIL_DENIED: &str =
    "Access denied to unauthorized registry (evil.example) while VCH is in whitelist mode";
const HUB_DENIED: &str =
    "Access denied to unauthorized registry (docker.io) while VCH is in whitelist mode";
const IMPORT_DENIED: &str = "Image import (fromSrc) is not allowed while VCH is in whitelist mode: the content comes from no registry";
const LOAD_DENIED: &str = "Image load (docker load) is not allowed while VCH is in whitelist mode: the content comes from no registry";
const BUILD_DENIED: &str = "Builds from a remote context (remote=…) are not allowed while VCH is in whitelist mode: the context comes from no registry and cannot be inspected before the Docker engine fetches it";
const PLUGIN_RUNTIME_DENIED: &str = "Services with the plugin runtime are not allowed while VCH is in whitelist mode: plugins come from no whitelisted pull";

/// The inspection cap on policed JSON bodies.
const CAP: usize = 1024 * 1024;

/// A VCH whitelisting [`ALLOWED`] in front of a dockerd of its own. Failed cases are collected
/// and reported together by [`Wire::finish`], so one run shows every difference from the spec.
struct Wire {
    // Declared first: the proxy stops before its dockerd.
    vch: Vch,
    dockerd: Dockerd,
    failures: RefCell<Vec<String>>,
}

impl Wire {
    fn start() -> Wire {
        let dockerd = dockerd();
        let vch = Vch::start(&dockerd, Mode::Plain, &[ALLOWED]);
        Wire {
            vch,
            dockerd,
            failures: RefCell::new(Vec::new()),
        }
    }

    /// Records a failed case (with the test line that checked it) unless `ok`; returns `ok`.
    #[track_caller]
    fn check(&self, ok: bool, what: impl FnOnce() -> String) -> bool {
        if !ok {
            let at = Location::caller();
            self.failures
                .borrow_mut()
                .push(format!("line {}: {}", at.line(), what()));
        }
        ok
    }

    /// Panics with every failed case.
    fn finish(self) {
        let failures = self.failures.take();
        assert!(
            failures.is_empty(),
            "{} case(s) failed:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.vch.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Writes `request` in one write and reads every answer until the proxy closes.
    fn answers(&self, request: &[u8]) -> Vec<Answer> {
        let mut s = self.connect();
        // A refusal may close the connection before every byte is taken.
        let _ = s.write_all(request);
        answers(&read_all(&mut s))
    }

    /// The first answer to `request`, or an `Answer` of status 0 when there is none.
    fn one(&self, request: &[u8]) -> Answer {
        self.answers(request)
            .into_iter()
            .next()
            .unwrap_or_else(Answer::none)
    }

    /// Whether dockerd received a request carrying `token`.
    fn seen(&self, token: &str) -> bool {
        self.dockerd.log().contains(token)
    }

    /// `request` is refused with the spec's 403 and `message` before dockerd sees it, and its
    /// audit record is a denial on `route`.
    #[track_caller]
    fn denied(&self, token: &str, request: &[u8], message: &str, route: &str) {
        let answer = self.one(request);
        self.denied_answer(token, request, &answer, message, route);
    }

    #[track_caller]
    fn denied_answer(
        &self,
        token: &str,
        request: &[u8],
        answer: &Answer,
        message: &str,
        route: &str,
    ) {
        let shape = denial_shape(answer, message);
        let denied = self.check(shape.is_ok(), || {
            format!(
                "expected 403 {message:?} ({}): {}\n{answer}",
                shape.unwrap_err(),
                show(request)
            )
        });
        let unseen = self.check(!self.seen(token), || {
            format!(
                "dockerd received a request to deny ({token}): {}\n{answer}",
                show(request)
            )
        });
        if denied && unseen {
            let audit = audited_denial(token, route);
            self.check(audit.is_ok(), || {
                format!("audit of {token}: {}", audit.unwrap_err())
            });
        }
    }

    /// `request` reaches dockerd (the policy allows it).
    #[track_caller]
    fn forwarded(&self, token: &str, request: &[u8]) -> Answer {
        let answer = self.one(request);
        self.forwarded_answer(token, request, &answer);
        answer
    }

    #[track_caller]
    fn forwarded_answer(&self, token: &str, request: &[u8], answer: &Answer) -> bool {
        let refused = answer.status == 0 || answer.status == 403 || answer.status == 413;
        self.check(!refused && self.seen(token), || {
            format!(
                "expected forwarded to dockerd ({token}): {}\n{answer}",
                show(request)
            )
        })
    }

    /// `request` gets a 4xx answer (from the proxy or from hyper) and never reaches dockerd.
    #[track_caller]
    fn refused(&self, token: &str, request: &[u8]) -> Answer {
        let answer = self.one(request);
        self.refused_answer(None, token, request, &answer);
        answer
    }

    /// As [`Wire::refused`], with exactly `status`.
    #[track_caller]
    fn refused_with(&self, status: u16, token: &str, request: &[u8]) -> Answer {
        let answer = self.one(request);
        self.refused_answer(Some(status), token, request, &answer);
        answer
    }

    #[track_caller]
    fn refused_answer(&self, status: Option<u16>, token: &str, request: &[u8], answer: &Answer) {
        let status_ok = match status {
            Some(s) => answer.status == s,
            None => (400..500).contains(&answer.status),
        };
        let seen = self.seen(token);
        self.check(status_ok && !seen, || {
            format!(
                "expected refused with {}{}: {}\n{answer}",
                status.map_or("4xx".to_owned(), |s| s.to_string()),
                if seen {
                    format!(" and never forwarded, but dockerd received it ({token})")
                } else {
                    String::new()
                },
                show(request)
            )
        });
    }
}

/// One HTTP response read off the wire.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn none() -> Answer {
        Answer {
            status: 0,
            head: "(no answer: the connection closed or timed out)".into(),
            body: Vec::new(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        let text: String = text.chars().take(2000).collect();
        write!(f, "got: {}\n\n{text}", self.head)
    }
}

/// A request for assertion messages: escaped, and cut if long.
fn show(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(request);
    let mut shown: String = text.escape_debug().take(600).collect();
    if text.escape_debug().count() > 600 {
        shown.push('…');
    }
    shown
}

/// Reads until the peer closes or the read timeout passes; what came in either way.
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a byte stream into HTTP/1.1 responses (interim 1xx answers dropped). A truncated
/// stream gives what it holds; garbage gives an answer of status 0.
fn answers(mut rest: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some(end) = find(rest, b"\r\n\r\n") else {
            out.push(Answer {
                status: 0,
                head: String::from_utf8_lossy(rest).into_owned(),
                body: Vec::new(),
            });
            break;
        };
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end + 4..];
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut answer = Answer {
            status,
            head,
            body: Vec::new(),
        };
        if (100..200).contains(&status) {
            continue;
        }
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
        let length = answer
            .header("content-length")
            .and_then(|n| n.parse::<usize>().ok());
        if status == 204 || status == 304 {
        } else if chunked {
            rest = dechunk(rest, &mut answer.body);
        } else if let Some(n) = length {
            let n = n.min(rest.len());
            answer.body = rest[..n].to_vec();
            rest = &rest[n..];
        } else {
            answer.body = rest.to_vec();
            rest = &[];
        }
        out.push(answer);
    }
    out
}

/// Decodes a chunked body into `body`; returns what follows it.
fn dechunk<'a>(mut rest: &'a [u8], body: &mut Vec<u8>) -> &'a [u8] {
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return &[];
        };
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|line| usize::from_str_radix(line.split(';').next()?.trim(), 16).ok());
        rest = &rest[eol + 2..];
        let Some(size) = size else { return &[] };
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let Some(eol) = find(rest, b"\r\n") else {
                    return &[];
                };
                rest = &rest[eol + 2..];
                if eol == 0 {
                    return rest;
                }
            }
        }
        let n = size.min(rest.len());
        body.extend_from_slice(&rest[..n]);
        rest = rest.get(n + 2..).unwrap_or(&[]);
    }
}

/// A request with a `Content-Length` body; `headers` are whole lines (`Name: value\r\n`).
fn kept(method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// As [`kept`], closing the connection after its answer.
fn req(method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    kept(
        method,
        target,
        &format!("{headers}Connection: close\r\n"),
        body,
    )
}

/// A body-less `POST`.
fn post(target: &str) -> Vec<u8> {
    req("POST", target, "", b"")
}

/// A body-less `GET`.
fn get(target: &str) -> Vec<u8> {
    req("GET", target, "", b"")
}

/// A JSON `POST`.
fn json(target: &str, body: &str) -> Vec<u8> {
    req(
        "POST",
        target,
        "Content-Type: application/json\r\n",
        body.as_bytes(),
    )
}

/// A chunked JSON `POST` of `chunks` (each `(extension, data)`), closing its connection.
fn chunked(target: &str, chunks: &[(&str, &[u8])], close: bool) -> Vec<u8> {
    let mut r = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    for (ext, data) in chunks {
        r.extend_from_slice(format!("{:x}{ext}\r\n", data.len()).as_bytes());
        r.extend_from_slice(data);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

/// `body` one byte per chunk.
fn bytewise(body: &str) -> Vec<(&'static str, &[u8])> {
    body.as_bytes()
        .chunks(1)
        .map(|byte| ("", byte))
        .collect::<Vec<_>>()
}

/// A JSON object of `fields` padded with whitespace to exactly `size` bytes.
fn padded(fields: &str, size: usize) -> String {
    let core = format!("{{{fields}");
    let pad = size - core.len() - 1;
    format!("{core}{}}}", " ".repeat(pad))
}

/// Whether `answer` is the spec's denial: 403, JSON, `{"message": message}`.
fn denial_shape(answer: &Answer, message: &str) -> Result<(), String> {
    if answer.status != 403 {
        return Err(format!("status {}", answer.status));
    }
    if !answer
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/json"))
    {
        return Err("not JSON".into());
    }
    let body: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|e| format!("body not JSON: {e}"))?;
    if body["message"] != message {
        return Err(format!("message {}", body["message"]));
    }
    Ok(())
}

/// Whether the audit record of the request carrying `token` is a denial on `route`.
fn audited_denial(token: &str, route: &str) -> Result<(), String> {
    let started = Instant::now();
    let record = loop {
        let found = audit_records()
            .into_iter()
            .find(|r| r["path"].as_str().is_some_and(|p| p.contains(token)));
        if let Some(record) = found {
            break record;
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("no audit record".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if record["allowed"] != false || record["route"] != route {
        return Err(format!("expected allowed:false, route {route:?}: {record}"));
    }
    Ok(())
}

/// Paths decode and route as dockerd's router (Go `net/url`, gorilla/mux on the decoded path)
/// takes them; forms it would take elsewhere are refused rather than guessed at.
#[test]
fn paths_reach_the_endpoint_dockerd_routes_them_to() {
    let w = Wire::start();

    // Encoded letters and slashes decode to the endpoint dockerd reaches, and are decided there.
    w.denied(
        "rd-path-enc-push",
        &post("/v1.25/%69mages/evil.example%2Frd-path-enc-push/push?tag=1"),
        EVIL_DENIED,
        "images/push",
    );
    w.forwarded(
        "rd-path-encok-push",
        &req(
            "POST",
            "/v1.25/%69mages/reg.allowed.example%2Frd-path-encok-push/push?tag=1",
            "X-Registry-Auth: e30=\r\n",
            b"",
        ),
    );
    w.denied(
        "rd-path-enc-lower",
        &post("/v1.25/images/evil.example%2frd-path-enc-lower%2Fx/push"),
        EVIL_DENIED,
        "images/push",
    );
    w.denied(
        "rd-path-enc-version",
        &post("/%761.25/images/create?fromImage=evil.example/rd-path-enc-version"),
        EVIL_DENIED,
        "images/create",
    );
    w.denied(
        "rd-path-enc-sep",
        &post("/v1.25%2fimages%2Fcreate?fromImage=evil.example/rd-path-enc-sep"),
        EVIL_DENIED,
        "images/create",
    );
    w.denied(
        "rd-path-unversioned",
        &post("/images/evil.example/rd-path-unversioned/push"),
        EVIL_DENIED,
        "images/push",
    );
    w.denied(
        "rd-path-enc-search",
        &get("/v1.25/images/%73earch?term=evil.example/rd-path-enc-search"),
        EVIL_DENIED,
        "images/search",
    );
    w.denied(
        "rd-path-enc-plugin",
        &post("/v1.25/%70lugins/pull?remote=evil.example/rd-path-enc-plugin"),
        EVIL_DENIED,
        "plugins/pull",
    );
    w.denied(
        "rd-path-enc-load",
        &post("/v1.25/images/%6coad?rd=rd-path-enc-load"),
        LOAD_DENIED,
        "images/load",
    );
    w.denied(
        "rd-path-enc-auth",
        &json(
            "/v1.25/%61uth?rd=rd-path-enc-auth",
            r#"{"serveraddress":"evil.example"}"#,
        ),
        EVIL_DENIED,
        "auth",
    );

    // `//`, `.` and `..` segments, plain or encoded: dockerd's router would redirect or match
    // elsewhere; the proxy refuses them, whatever the policy says of the image.
    for (token, target) in [
        (
            "rd-path-dslash",
            "//images/create?fromImage=reg.allowed.example/rd-path-dslash",
        ),
        (
            "rd-path-middslash",
            "/v1.25//images/reg.allowed.example/rd-path-middslash/push",
        ),
        (
            "rd-path-encdslash",
            "/v1.25/images%2F%2Fcreate?fromImage=reg.allowed.example/rd-path-encdslash",
        ),
        (
            "rd-path-dot",
            "/v1.25/images/./create?fromImage=reg.allowed.example/rd-path-dot",
        ),
        (
            "rd-path-enddot",
            "/v1.25/images/create/.?fromImage=reg.allowed.example/rd-path-enddot",
        ),
        (
            "rd-path-parent",
            "/v1.25/x/../images/create?fromImage=reg.allowed.example/rd-path-parent",
        ),
        (
            "rd-path-enc-dotdot",
            "/v1.25/images/%2e%2e/images/create?fromImage=reg.allowed.example/rd-path-enc-dotdot",
        ),
        (
            "rd-path-encparent-name",
            "/v1.25/images/evil.example%2Frd-path-encparent-name%2F%2E%2E/push",
        ),
        (
            "rd-path-encparent-swap",
            "/v1.25/images/evil.example/x/%2E%2E/%2e%2e/reg.allowed.example/rd-path-encparent-swap/push",
        ),
    ] {
        w.refused(token, &post(target));
    }

    // NUL and control bytes, raw or encoded, in the path or the parameters.
    for (token, target) in [
        (
            "rd-path-nul-enc",
            "/v1.25/images/create%00?fromImage=reg.allowed.example/rd-path-nul-enc",
        ),
        (
            "rd-path-nul-name",
            "/v1.25/images/reg.allowed.example%2Frd-path-nul-name%00/push",
        ),
        (
            "rd-path-lf-name",
            "/v1.25/images/reg.allowed.example%2Frd-path-lf-name%0a/push",
        ),
        (
            "rd-path-del-name",
            "/v1.25/images/reg.allowed.example%2Frd-path-del-name%7F/push",
        ),
        (
            "rd-path-nul-query",
            "/v1.25/images/create?fromImage=reg.allowed.example/rd-path-nul-query%00",
        ),
        (
            "rd-path-crlf-query",
            "/v1.25/images/create?fromImage=reg.allowed.example/rd-path-crlf-query%0d%0aX:y",
        ),
    ] {
        w.refused(token, &post(target));
    }
    for (token, target) in [
        (
            "rd-path-nul-raw",
            &b"/v1.25/images/create\0?fromImage=reg.allowed.example/rd-path-nul-raw"[..],
        ),
        (
            "rd-path-ctl-raw",
            b"/v1.25/images/create?fromImage=reg.allowed.example/rd-path-ctl-raw\x01",
        ),
        (
            "rd-path-esc-raw",
            b"/v1.25/images/reg.allowed.example/rd-path-esc-raw\x1b/push",
        ),
    ] {
        let mut request = b"POST ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(
            b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        w.refused(token, &request);
    }

    // Absolute-form targets: decided on their path, which is what Go's server routes on...
    w.denied(
        "rd-abs-evil",
        &post("http://x/v1.25/images/create?fromImage=evil.example/rd-abs-evil"),
        EVIL_DENIED,
        "images/create",
    );
    w.denied(
        "rd-abs-push",
        &post("http://x/v1.25/%69mages/evil.example%2Frd-abs-push/push"),
        EVIL_DENIED,
        "images/push",
    );
    w.forwarded(
        "rd-abs-ok",
        &post("http://x/v1.25/images/create?fromImage=reg.allowed.example/rd-abs-ok"),
    );
    // ...and refused where that path is not canonical, or not what the proxy would route.
    for (token, target) in [
        (
            "rd-abs-dot",
            "http://x/v1.25/images/./create?fromImage=reg.allowed.example/rd-abs-dot",
        ),
        (
            "rd-abs-dslash",
            "http://x//v1.25/images/create?fromImage=reg.allowed.example/rd-abs-dslash",
        ),
        (
            "rd-abs-noauthority",
            "http:/v1.25/images/create?fromImage=evil.example/rd-abs-noauthority",
        ),
        (
            "rd-abs-nopath",
            "http://x?fromImage=evil.example/rd-abs-nopath",
        ),
        (
            "rd-abs-userinfo",
            "http://u@x/v1.25/images/create?fromImage=evil.example/rd-abs-userinfo",
        ),
        (
            "rd-abs-upper",
            "HTTP://X:2375/v1.25/images/evil.example/rd-abs-upper/push",
        ),
    ] {
        w.refused(token, &post(target));
    }

    // A fragment ends the target for hyper; Go's server keeps it. Either way the evil name
    // after it never reaches dockerd.
    w.refused(
        "rd-frag-hidden",
        &post("/v1.25/images/create?tag=1#&fromImage=evil.example/rd-frag-hidden"),
    );
    w.refused(
        "rd-frag-evil",
        &post("/v1.25/images/create?fromImage=evil.example/rd-frag-evil#x"),
    );
    w.finish();
}

/// Parameters come from the query string read as Go's `url.ParseQuery` and `Form.Get` read it:
/// the first value of a key wins, keys are case-sensitive and decoded, pairs with `;` or a bad
/// escape are skipped, `+` is a space.
#[test]
fn parameters_are_read_as_go_reads_them() {
    let w = Wire::start();

    // /images/create: the first fromImage is the one dockerd pulls.
    w.denied(
        "rd-q-first-evil",
        &post("/v1.25/images/create?fromImage=evil.example/rd-q-first-evil&fromImage=reg.allowed.example/x"),
        EVIL_DENIED,
        "images/create",
    );
    w.forwarded(
        "rd-q-first-ok",
        &post("/v1.25/images/create?fromImage=reg.allowed.example/rd-q-first-ok&fromImage=evil.example/x"),
    );
    w.denied(
        "rd-q-enckey",
        &post("/v1.25/images/create?from%49mage=evil.example/rd-q-enckey&fromImage=reg.allowed.example/x"),
        EVIL_DENIED,
        "images/create",
    );
    w.forwarded(
        "rd-q-keycase",
        &post("/v1.25/images/create?fromimage=evil.example/x&FROMIMAGE=evil.example/y&fromImage=reg.allowed.example/rd-q-keycase"),
    );
    // An empty or value-less first fromImage is no pull: an import, never a later value.
    w.denied(
        "rd-q-empty",
        &post("/v1.25/images/create?fromImage=&fromImage=reg.allowed.example/rd-q-empty"),
        IMPORT_DENIED,
        "images/create",
    );
    w.denied(
        "rd-q-novalue",
        &post("/v1.25/images/create?fromImage&fromImage=evil.example/rd-q-novalue"),
        IMPORT_DENIED,
        "images/create",
    );
    // `;` is no separator: the pair holding it is skipped whole.
    w.denied(
        "rd-q-semi",
        &post("/v1.25/images/create?fromImage=reg.allowed.example/x;y&fromImage=evil.example/rd-q-semi"),
        EVIL_DENIED,
        "images/create",
    );
    w.denied(
        "rd-q-sepsemi",
        &post("/v1.25/images/create?fromImage=evil.example/rd-q-sepsemi;fromImage=reg.allowed.example/x"),
        IMPORT_DENIED,
        "images/create",
    );
    // A bad escape skips its pair.
    for (token, query) in [
        (
            "rd-q-badesc-zz",
            "fromImage=reg.allowed.example/x%zz&fromImage=evil.example/rd-q-badesc-zz",
        ),
        (
            "rd-q-badesc-end",
            "fromImage=reg.allowed.example/x%&fromImage=evil.example/rd-q-badesc-end",
        ),
        (
            "rd-q-badesc-short",
            "fromImage=reg.allowed.example/x%e&fromImage=evil.example/rd-q-badesc-short",
        ),
        (
            "rd-q-badesc-key",
            "from%zzImage=x&fromImage=reg.allowed.example%G0/x&fromImage=evil.example/rd-q-badesc-key",
        ),
    ] {
        w.denied(
            token,
            &post(&format!("/v1.25/images/create?{query}")),
            EVIL_DENIED,
            "images/create",
        );
    }
    // Skipping works both ways: the allowed value after a skipped pair is the one dockerd reads.
    w.forwarded(
        "rd-q-badesc-ok",
        &post("/v1.25/images/create?fromImage=evil.example/x%zz&fromImage=reg.allowed.example/rd-q-badesc-ok"),
    );

    // /images/search: the first term, `+` as a space.
    w.denied(
        "rd-q-term-evil",
        &get("/v1.25/images/search?term=evil.example/rd-q-term-evil&term=reg.allowed.example/x"),
        EVIL_DENIED,
        "images/search",
    );
    w.forwarded(
        "rd-q-term-ok",
        &get("/v1.25/images/search?term=reg.allowed.example/rd-q-term-ok&term=evil.example/x"),
    );
    w.forwarded(
        "rd-q-plus-ok",
        &get("/v1.25/images/search?term=reg.allowed.example/rd-q-plus-ok+x"),
    );
    w.denied(
        "rd-q-plus-evil",
        &get("/v1.25/images/search?term=evil.example/rd-q-plus-evil+x"),
        EVIL_DENIED,
        "images/search",
    );
    w.denied(
        "rd-q-term-hub",
        &get("/v1.25/images/search?term=rd-q-term-hub"),
        HUB_DENIED,
        "images/search",
    );
    // A registry name with a space in it is no allowed registry.
    w.refused(
        "rd-q-plus-host",
        &get("/v1.25/images/search?term=evil.example+/rd-q-plus-host"),
    );

    // /plugins/pull and /plugins/privileges: the first remote.
    w.denied(
        "rd-q-plugin-evil",
        &post(
            "/v1.25/plugins/pull?remote=evil.example/rd-q-plugin-evil&remote=reg.allowed.example/p",
        ),
        EVIL_DENIED,
        "plugins/pull",
    );
    w.forwarded(
        "rd-q-plugin-ok",
        &json(
            "/v1.25/plugins/pull?remote=reg.allowed.example/rd-q-plugin-ok&remote=evil.example/p",
            "[]",
        ),
    );
    w.denied(
        "rd-q-priv-evil",
        &get("/v1.25/plugins/privileges?remote=evil.example/rd-q-priv-evil&remote=reg.allowed.example/p"),
        EVIL_DENIED,
        "plugins/privileges",
    );
    w.forwarded(
        "rd-q-priv-ok",
        &get("/v1.25/plugins/privileges?remote=reg.allowed.example/rd-q-priv-ok&remote=evil.example/p"),
    );
    w.denied(
        "rd-q-priv-semi",
        &get("/v1.25/plugins/privileges?remote=reg.allowed.example/p;&remote=evil.example/rd-q-priv-semi"),
        EVIL_DENIED,
        "plugins/privileges",
    );

    // /build: the first remote decides whether the context comes from a URL.
    w.denied(
        "rd-q-build-evil",
        &post("/v1.25/build?remote=http://evil.example/rd-q-build-evil.tar&remote="),
        BUILD_DENIED,
        "build",
    );
    // No remote: the context is the body, read by the build gate (`FROM scratch` pulls nothing).
    let context = crate::build::tar(&[crate::build::Entry::File("Dockerfile", b"FROM scratch\n")]);
    w.forwarded(
        "rd-q-build-ok",
        &req(
            "POST",
            "/v1.25/build?remote=&remote=http://evil.example/rd-q-build-ok.tar",
            "Content-Type: application/x-tar\r\n",
            &context,
        ),
    );
    w.denied(
        "rd-q-build-badesc",
        &post("/v1.25/build?remote=%zz&remote=http://evil.example/rd-q-build-badesc.tar"),
        BUILD_DENIED,
        "build",
    );
    w.denied(
        "rd-q-build-space",
        &post("/v1.25/build?remote=+&rd=rd-q-build-space"),
        BUILD_DENIED,
        "build",
    );
    w.finish();
}

/// A form body would be merged into dockerd's parameters ahead of the query string (and a
/// multipart one after it, where `FormValue` parses it): refused with 400 on every policed route,
/// however the `Content-Type` is spelled.
#[test]
fn form_bodies_are_refused_on_policed_routes() {
    let w = Wire::start();
    let form = "application/x-www-form-urlencoded";
    let multipart = "multipart/form-data; boundary=b";
    let content_types: [(&str, String); 7] = [
        ("plain", format!("Content-Type: {form}\r\n")),
        (
            "case",
            "Content-Type: Application/X-WWW-Form-Urlencoded; charset=utf-8\r\n".into(),
        ),
        ("spaces", format!("Content-Type:    \t {form}\r\n")),
        (
            "json-first",
            format!("Content-Type: application/json\r\nContent-Type: {form}\r\n"),
        ),
        (
            "form-first",
            format!("Content-Type: {form}\r\nContent-Type: application/json\r\n"),
        ),
        ("multipart", format!("Content-Type: {multipart}\r\n")),
        (
            "mpcase",
            "Content-Type: Multipart/Form-Data; boundary=b\r\n".into(),
        ),
    ];
    let multipart_body = |name: &str, value: &str| {
        format!(
            "--b\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n--b--\r\n"
        )
    };
    let body_for = |label: &str, name: &str, value: &str| {
        if label.starts_with("multipart") {
            multipart_body(name, value)
        } else {
            format!("{name}={value}")
        }
    };

    for (label, content_type) in &content_types {
        // Routes whose parameters are in the query string: the body would add the evil one.
        for (name, method, target, key, value) in [
            (
                "create",
                "POST",
                "/v1.25/images/create?fromImage=reg.allowed.example/x",
                "fromImage",
                "evil.example/x",
            ),
            (
                "build",
                "POST",
                "/v1.25/build?t=x",
                "remote",
                "http://evil.example/ctx.tar",
            ),
            (
                "push",
                "POST",
                "/v1.25/images/reg.allowed.example/x/push?tag=1",
                "tag",
                "1",
            ),
            (
                "search",
                "GET",
                "/v1.25/images/search?term=reg.allowed.example/x",
                "term",
                "evil.example/x",
            ),
            (
                "plugin",
                "POST",
                "/v1.25/plugins/pull?remote=reg.allowed.example/x",
                "remote",
                "evil.example/x",
            ),
            (
                "priv",
                "GET",
                "/v1.25/plugins/privileges?remote=reg.allowed.example/x",
                "remote",
                "evil.example/x",
            ),
        ] {
            let token = format!("rd-form-{name}-{label}");
            let target = format!("{target}&rd={token}");
            let body = body_for(label, key, value);
            w.refused_with(
                400,
                &token,
                &req(method, &target, content_type, body.as_bytes()),
            );
        }
        // JSON routes: a form content type is refused whatever the body holds.
        for (name, target, body) in [
            (
                "auth",
                "/v1.25/auth",
                r#"{"serveraddress":"reg.allowed.example"}"#,
            ),
            (
                "svc",
                "/v1.25/services/create",
                r#"{"TaskTemplate":{"ContainerSpec":{"Image":"reg.allowed.example/s"}}}"#,
            ),
        ] {
            let token = format!("rd-form-{name}-{label}");
            let target = format!("{target}?rd={token}");
            w.refused_with(
                400,
                &token,
                &req("POST", &target, content_type, body.as_bytes()),
            );
        }
        // A load is refused in whitelist mode anyway: 400 or 403, never forwarded.
        let token = format!("rd-form-load-{label}");
        w.refused(
            &token,
            &req(
                "POST",
                &format!("/v1.25/images/load?rd={token}"),
                content_type,
                body_for(label, "quiet", "1").as_bytes(),
            ),
        );
    }
    w.finish();
}

/// JSON bodies are decoded as Go's `encoding/json` decodes them into dockerd's structs.
#[test]
fn json_bodies_are_read_as_go_reads_them() {
    let w = Wire::start();
    let auth = |token: &str| format!("/v1.25/auth?rd={token}");

    // POST /auth: keys fold case with Unicode simple folding, `\u` escapes decode, the last
    // duplicate wins, null leaves the value as it was, a missing address is Docker Hub.
    for (token, body, message) in [
        (
            "rd-json-auth-longs",
            "{\"\u{17F}erveraddre\u{17F}\u{17F}\":\"evil.example\"}",
            EVIL_DENIED,
        ),
        (
            "rd-json-auth-upper",
            r#"{"SERVERADDRESS":"evil.example"}"#,
            EVIL_DENIED,
        ),
        (
            "rd-json-auth-escape",
            r#"{"\u0073erveraddress":"evil.example"}"#,
            EVIL_DENIED,
        ),
        (
            "rd-json-auth-esclongs",
            r#"{"\u017ferveraddress":"evil.example"}"#,
            EVIL_DENIED,
        ),
        (
            "rd-json-auth-value-escape",
            r#"{"serveraddress":"evil\u002eexample"}"#,
            EVIL_DENIED,
        ),
        (
            "rd-json-auth-dup",
            r#"{"serveraddress":"reg.allowed.example","ServerAddress":"evil.example"}"#,
            EVIL_DENIED,
        ),
        (
            "rd-json-auth-nullkeep",
            r#"{"serveraddress":"evil.example","serveraddress":null}"#,
            EVIL_DENIED,
        ),
        (
            "rd-json-auth-url",
            r#"{"username":"u","password":"p","serveraddress":"https://evil.example/v1/"}"#,
            EVIL_DENIED,
        ),
        ("rd-json-auth-empty-object", "{}", HUB_DENIED),
        (
            "rd-json-auth-empty-address",
            r#"{"username":"u","serveraddress":""}"#,
            HUB_DENIED,
        ),
        (
            "rd-json-auth-nulladdr",
            r#"{"serveraddress":null}"#,
            HUB_DENIED,
        ),
    ] {
        w.denied(token, &json(&auth(token), body), message, "auth");
    }
    for (token, body) in [
        (
            "rd-json-auth-lastok",
            r#"{"serveraddress":"evil.example","ServerAddress":"reg.allowed.example"}"#,
        ),
        // `ß` has no simple case fold to `ss`: Go ignores this key.
        (
            "rd-json-auth-sharp-s",
            "{\"serveraddress\":\"reg.allowed.example\",\"serveraddre\u{DF}\":\"evil.example\"}",
        ),
    ] {
        let answer = w.forwarded(token, &json(&auth(token), body));
        w.check(answer.text().contains(ALLOWED), || {
            format!("dockerd answers a login to {ALLOWED} ({token}): {answer}")
        });
    }
    for (token, body) in [
        ("rd-json-auth-notjson", "serveraddress=evil.example"),
        ("rd-json-auth-number", r#"{"serveraddress":5}"#),
        (
            "rd-json-auth-array",
            r#"{"serveraddress":["evil.example"]}"#,
        ),
        (
            "rd-json-auth-truncated",
            r#"{"serveraddress":"evil.example""#,
        ),
        ("rd-json-auth-toplevel-array", r#"[{"serveraddress":"x"}]"#),
    ] {
        w.refused_with(400, token, &json(&auth(token), body));
    }
    // dockerd's decoder reads the first of two values: refused one way or another.
    let token = "rd-json-auth-two-values";
    w.refused(
        token,
        &json(
            &auth(token),
            r#"{"serveraddress":"evil.example"} {"serveraddress":"reg.allowed.example"}"#,
        ),
    );

    // POST /services/create: TaskTemplate.ContainerSpec.Image, the same rules at every level,
    // and objects given twice merge.
    let svc = |token: &str| format!("/v1.25/services/create?rd={token}");
    let kelvin = |s: &str| s.replace("{K}", "\u{212A}").replace("{s}", "\u{17F}");
    for (token, body, message) in [
        (
            "rd-json-svc-kelvin",
            kelvin(r#"{"Name":"x","Tas{K}Template":{"ContainerSpec":{"Image":"evil.example/s"}}}"#),
            EVIL_DENIED,
        ),
        (
            "rd-json-svc-longs",
            kelvin(r#"{"TaskTemplate":{"Container{s}pec":{"Image":"evil.example/s"}}}"#),
            EVIL_DENIED,
        ),
        (
            "rd-json-svc-lower",
            r#"{"tasktemplate":{"containerspec":{"image":"evil.example/s"}}}"#.into(),
            EVIL_DENIED,
        ),
        (
            "rd-json-svc-escape",
            r#"{"TaskTemplate":{"ContainerSpec":{"\u0049mage":"evil.example/s"}}}"#.into(),
            EVIL_DENIED,
        ),
        (
            "rd-json-svc-dup",
            r#"{"TaskTemplate":{"ContainerSpec":{"Image":"reg.allowed.example/s"}},"taskTemplate":{"containerSpec":{"image":"evil.example/s"}}}"#.into(),
            EVIL_DENIED,
        ),
        (
            "rd-json-svc-merge",
            r#"{"TaskTemplate":{"ContainerSpec":{"Image":"evil.example/s"}},"TaskTemplate":{"ContainerSpec":{"Env":["A=1"]}}}"#.into(),
            EVIL_DENIED,
        ),
        (
            "rd-json-svc-null",
            r#"{"TaskTemplate":{"ContainerSpec":{"Image":"evil.example/s","Image":null}},"TaskTemplate":null}"#.into(),
            EVIL_DENIED,
        ),
        (
            "rd-json-svc-runtime",
            r#"{"TaskTemplate":{"ContainerSpec":{"Image":"reg.allowed.example/s"},"rUNTIME":"plugin"}}"#.into(),
            PLUGIN_RUNTIME_DENIED,
        ),
    ] {
        w.denied(token, &json(&svc(token), &body), message, "services/create");
    }
    for (token, body) in [
        (
            "rd-json-svc-ok",
            r#"{"Name":"rd-json-svc-ok","TaskTemplate":{"ContainerSpec":{"Image":"reg.allowed.example/s"}}}"#,
        ),
        (
            "rd-json-svc-lastok",
            r#"{"TaskTemplate":{"ContainerSpec":{"Image":"evil.example/s"}},"TASKTEMPLATE":{"ContainerSpec":{"Image":"reg.allowed.example/s"}}}"#,
        ),
    ] {
        w.forwarded(token, &json(&svc(token), body));
    }
    for (token, body) in [
        ("rd-json-svc-notjson", "TaskTemplate"),
        (
            "rd-json-svc-number",
            r#"{"TaskTemplate":{"ContainerSpec":{"Image":5}}}"#,
        ),
        ("rd-json-svc-string", r#"{"TaskTemplate":"evil.example/s"}"#),
    ] {
        w.refused_with(400, token, &json(&svc(token), body));
    }
    // The update route reads the same spec.
    w.denied(
        "rd-json-svc-update",
        &json(
            "/v1.25/services/rd-json-svc-update/update?version=1",
            r#"{"taskTemplate":{"containerSpec":{"image":"evil.example/s"}}}"#,
        ),
        EVIL_DENIED,
        "services/update",
    );
    w.finish();
}

/// Chunked bodies are decided as `Content-Length` ones, in any chunking; empty bodies are
/// handled; a body over the 1 MiB inspection cap is a 413 and never forwarded.
#[test]
fn chunked_empty_and_oversized_bodies() {
    let w = Wire::start();
    let auth = |token: &str| format!("/v1.25/auth?rd={token}");
    let svc = |token: &str| format!("/v1.25/services/create?rd={token}");
    let evil = r#"{"username":"u","serveraddress":"evil.example"}"#;
    let ok = r#"{"username":"u","serveraddress":"reg.allowed.example"}"#;
    let evil_longs = "{\"\u{17F}erveraddress\":\"evil.example\"}";
    let (head, tail) = evil.split_at(20);

    w.denied(
        "rd-body-chunked-evil",
        &chunked(
            &auth("rd-body-chunked-evil"),
            &[("", head.as_bytes()), ("", tail.as_bytes())],
            true,
        ),
        EVIL_DENIED,
        "auth",
    );
    let (head, tail) = ok.split_at(20);
    w.forwarded(
        "rd-body-chunked-ok",
        &chunked(
            &auth("rd-body-chunked-ok"),
            &[("", head.as_bytes()), ("", tail.as_bytes())],
            true,
        ),
    );
    // One byte per chunk, a UTF-8 character split across two of them.
    w.denied(
        "rd-body-tiny-evil",
        &chunked(&auth("rd-body-tiny-evil"), &bytewise(evil_longs), true),
        EVIL_DENIED,
        "auth",
    );
    w.forwarded(
        "rd-body-tiny-ok",
        &chunked(&auth("rd-body-tiny-ok"), &bytewise(ok), true),
    );
    // Chunk extensions are framing, not data.
    let (head, tail) = evil.split_at(9);
    w.denied(
        "rd-body-ext-evil",
        &chunked(
            &auth("rd-body-ext-evil"),
            &[
                (";ext=1", head.as_bytes()),
                (";a;b=\"c d\"", tail.as_bytes()),
            ],
            true,
        ),
        EVIL_DENIED,
        "auth",
    );
    let (head, tail) = ok.split_at(9);
    w.forwarded(
        "rd-body-ext-ok",
        &chunked(
            &auth("rd-body-ext-ok"),
            &[(";ext=1", head.as_bytes()), (";x", tail.as_bytes())],
            true,
        ),
    );
    let spec = r#"{"TaskTemplate":{"ContainerSpec":{"Image":"evil.example/s"}}}"#;
    w.denied(
        "rd-body-svc-tiny",
        &chunked(&svc("rd-body-svc-tiny"), &bytewise(spec), true),
        EVIL_DENIED,
        "services/create",
    );
    let spec = r#"{"Name":"rd-body-svc-chunked-ok","TaskTemplate":{"ContainerSpec":{"Image":"reg.allowed.example/s"}}}"#;
    let (head, tail) = spec.split_at(30);
    w.forwarded(
        "rd-body-svc-chunked-ok",
        &chunked(
            &svc("rd-body-svc-chunked-ok"),
            &[("", head.as_bytes()), (";e", tail.as_bytes())],
            true,
        ),
    );

    // Empty bodies: nothing to forward on the JSON routes, a pull as any other.
    w.refused("rd-body-cl0-auth", &json(&auth("rd-body-cl0-auth"), ""));
    w.refused("rd-body-cl0-svc", &json(&svc("rd-body-cl0-svc"), ""));
    w.refused(
        "rd-body-chunked0-auth",
        &chunked(&auth("rd-body-chunked0-auth"), &[], true),
    );
    w.forwarded(
        "rd-body-cl0-pull",
        &post("/v1.25/images/create?fromImage=reg.allowed.example/rd-body-cl0-pull&tag=1"),
    );

    // At the cap a body is still read and decided, by Content-Length or chunked.
    let at_cap = padded(r#""serveraddress":"evil.example""#, CAP);
    assert_eq!(at_cap.len(), CAP);
    w.denied(
        "rd-body-cap-evil",
        &json(&auth("rd-body-cap-evil"), &at_cap),
        EVIL_DENIED,
        "auth",
    );
    let at_cap = padded(r#""serveraddress":"reg.allowed.example""#, CAP);
    let pieces: Vec<(&str, &[u8])> = at_cap
        .as_bytes()
        .chunks(64 * 1024)
        .map(|c| ("", c))
        .collect();
    w.forwarded(
        "rd-body-cap-ok",
        &chunked(&auth("rd-body-cap-ok"), &pieces, true),
    );

    // Over the cap by Content-Length: 413 at once, without waiting for a body never sent.
    for target in [auth("rd-body-over-cl-auth"), svc("rd-body-over-cl-svc")] {
        let token = target.rsplit('=').next().unwrap();
        let mut s = w.connect();
        let started = Instant::now();
        s.write_all(
            format!(
                "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                CAP + 1
            )
            .as_bytes(),
        )
        .unwrap();
        let mut first = [0u8; 1];
        let n = s.read(&mut first).unwrap_or(0);
        let waited = started.elapsed();
        let mut raw = first[..n].to_vec();
        raw.extend(read_all(&mut s));
        let answer = answers(&raw)
            .into_iter()
            .next()
            .unwrap_or_else(Answer::none);
        // Well within the test server's 2 s header timeout: nothing waited for the body.
        w.check(
            answer.status == 413 && !w.seen(token) && waited < Duration::from_secs(1),
            || format!("expected 413 at once, never forwarded ({target}, {waited:?}): {answer}"),
        );
    }
    // Over the cap, chunked: 413 once the cap is passed, never forwarded.
    let over = padded(r#""serveraddress":"reg.allowed.example""#, CAP + 1);
    let pieces: Vec<(&str, &[u8])> = over.as_bytes().chunks(64 * 1024).map(|c| ("", c)).collect();
    let request = chunked(&auth("rd-body-over-chunked"), &pieces, true);
    let mut s = w.connect();
    let mut writer = s.try_clone().unwrap();
    // Written from another thread: the proxy may answer before it takes every byte.
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let answer = answers(&read_all(&mut s))
        .into_iter()
        .next()
        .unwrap_or_else(Answer::none);
    writing.join().unwrap();
    w.check(
        answer.status == 413 && !w.seen("rd-body-over-chunked"),
        || format!("expected 413, never forwarded (chunked over the cap): {answer}"),
    );
    w.finish();
}

/// Ambiguous framing is refused (4xx, by hyper or the proxy) and never reaches dockerd, even when
/// the policy would allow the request; Content-Length beside Transfer-Encoding and bare LF line
/// ends are read one way only (see the comments) and decided on that reading.
#[test]
fn ambiguous_framing_is_refused_before_dockerd() {
    let w = Wire::start();
    let pull = |token: &str| {
        format!(
            "POST /v1.25/images/create?fromImage=reg.allowed.example/{token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        )
    };
    // Each smuggles a second, allowed request in what one reading takes as body.
    let smuggled = |token: &str| {
        format!(
            "POST /v1.25/images/create?fromImage=reg.allowed.example/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
    };

    // Content-Length beside Transfer-Encoding: hyper drops the length while parsing (so the
    // endpoint never sees both), reads the body by its chunked framing, as dockerd's Go server
    // does, and closes the connection after the answer. The request is decided and forwarded as
    // that reading gives it; what the length would have framed differently (a smuggled second
    // request) is never processed by anyone.
    let inner = smuggled("rd-frame-inner-clte");
    let body = format!("0\r\n\r\n{inner}");
    for (token, headers) in [
        (
            "rd-frame-clte",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            ),
        ),
        (
            "rd-frame-tecl",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                body.len()
            ),
        ),
    ] {
        let request = format!("{}{headers}\r\n{body}", pull(token));
        w.forwarded(token, request.as_bytes());
        w.check(!w.seen("rd-frame-inner-clte"), || {
            format!("{token}: the smuggled request reached dockerd")
        });
    }
    // The same with a denied login in the chunked body: decided on what the chunks hold.
    let evil = r#"{"serveraddress":"evil.example"}"#;
    w.denied(
        "rd-frame-auth-clte-evil",
        format!(
            "POST /v1.25/auth?rd=rd-frame-auth-clte-evil HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{evil}\r\n0\r\n\r\n",
            evil.len()
        )
        .as_bytes(),
        "Access denied to unauthorized registry (evil.example) while VCH is in whitelist mode",
        "auth",
    );

    let inner = smuggled("rd-frame-cl2-inner");
    for (token, headers, body) in [
        (
            "rd-frame-cl-pair",
            "Content-Length: 0\r\nContent-Length: 5\r\n",
            "hello",
        ),
        ("rd-frame-cl-list", "Content-Length: 0, 5\r\n", "hello"),
        (
            "rd-frame-cl-smuggle",
            &*format!("Content-Length: {}\r\nContent-Length: 0\r\n", inner.len()),
            &*inner,
        ),
        ("rd-frame-cl-plus", "Content-Length: +5\r\n", "hello"),
        ("rd-frame-cl-minus", "Content-Length: -1\r\n", ""),
        ("rd-frame-cl-hex", "Content-Length: 0x5\r\n", "hello"),
        (
            "rd-frame-te-gzip",
            "Transfer-Encoding: gzip, chunked\r\n",
            "0\r\n\r\n",
        ),
        (
            "rd-frame-te-twoheaders",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
        ),
        (
            "rd-frame-te-twice",
            "Transfer-Encoding: chunked, chunked\r\n",
            "0\r\n\r\n",
        ),
        (
            "rd-frame-te-identity",
            "Transfer-Encoding: identity\r\n",
            "",
        ),
        (
            "rd-frame-obs-fold",
            "X-Registry-Auth: e30=\r\n  folded\r\nContent-Length: 0\r\n",
            "",
        ),
        (
            "rd-frame-obsfold-tab",
            "Content-Type: application/json\r\n\tx\r\nContent-Length: 0\r\n",
            "",
        ),
    ] {
        let request = format!("{}{headers}\r\n{body}", pull(token));
        w.refused(token, request.as_bytes());
    }
    w.check(!w.seen("rd-frame-cl2-inner"), || {
        "a request smuggled past two lengths reached dockerd".into()
    });

    // Bare LF line endings are read as line ends by hyper and by Go's net/http alike (RFC 9112
    // §2.2 allows it), so such a request means the same to both: decided and forwarded.
    w.forwarded(
        "rd-frame-lf-line",
        b"POST /v1.25/images/create?fromImage=reg.allowed.example/rd-frame-lf-line HTTP/1.1\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    w.denied(
        "rd-frame-lf-all",
        b"POST /v1.25/images/create?fromImage=evil.example/rd-frame-lf-all HTTP/1.1\nHost: x\nContent-Length: 0\nConnection: close\n\n",
        "Access denied to unauthorized registry (evil.example) while VCH is in whitelist mode",
        "images/create",
    );
    w.finish();
}

/// Requests written back to back in one write get one answer each, in order, each decided on
/// its own; a denied request's body is never read as a request.
#[test]
fn pipelined_requests_are_each_decided() {
    let w = Wire::start();
    let evil = r#"{"serveraddress":"evil.example"}"#;
    let mut pipeline = Vec::new();
    pipeline.extend(kept(
        "POST",
        "/v1.25/images/create?fromImage=reg.allowed.example/rd-pipe-pull&tag=1",
        "",
        b"",
    ));
    pipeline.extend(kept(
        "POST",
        "/v1.25/images/evil.example/rd-pipe-push/push?tag=1",
        "X-Registry-Auth: e30=\r\n",
        b"",
    ));
    pipeline.extend(kept(
        "POST",
        "/v1.25/auth?rd=rd-pipe-auth-ok",
        "Content-Type: application/json\r\n",
        br#"{"username":"u","serveraddress":"reg.allowed.example"}"#,
    ));
    pipeline.extend(chunked(
        "/v1.25/auth?rd=rd-pipe-auth-evil",
        &[("", &evil.as_bytes()[..7]), ("", &evil.as_bytes()[7..])],
        false,
    ));
    pipeline.extend(kept(
        "GET",
        "/v1.25/images/search?term=reg.allowed.example/rd-pipe-search",
        "",
        b"",
    ));
    pipeline.extend(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut got = w.answers(&pipeline);
    let statuses: Vec<u16> = got.iter().map(|a| a.status).collect();
    w.check(got.len() == 6, || {
        format!("one answer per request, 6, got {statuses:?}")
    });
    got.resize_with(6, Answer::none);
    w.forwarded_answer("rd-pipe-pull", &pipeline, &got[0]);
    w.denied_answer(
        "rd-pipe-push",
        &pipeline,
        &got[1],
        EVIL_DENIED,
        "images/push",
    );
    w.forwarded_answer("rd-pipe-auth-ok", &pipeline, &got[2]);
    w.check(got[2].text().contains(ALLOWED), || {
        format!("dockerd answers the pipelined login: {}", got[2])
    });
    w.denied_answer("rd-pipe-auth-evil", &pipeline, &got[3], EVIL_DENIED, "auth");
    w.forwarded_answer("rd-pipe-search", &pipeline, &got[4]);
    w.check(got[5].status == 200 && got[5].text() == "OK", || {
        format!("the pipelined ping: {}", got[5])
    });

    // A denied push whose body is a whole allowed request: the body is a body, dropped or
    // skipped, never answered as a request of its own.
    let inner = "POST /v1.25/images/create?fromImage=reg.allowed.example/rd-pipe-inbody HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let mut pipeline = kept(
        "POST",
        "/v1.25/images/evil.example/rd-pipe-outer/push?tag=1",
        "",
        inner.as_bytes(),
    );
    pipeline.extend(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let got = w.answers(&pipeline);
    let statuses: Vec<u16> = got.iter().map(|a| a.status).collect();
    w.check(!got.is_empty() && got.len() <= 2, || {
        format!("a denial, then at most the ping: got {statuses:?}")
    });
    let first = got.first().map_or_else(Answer::none, |a| Answer {
        status: a.status,
        head: a.head.clone(),
        body: a.body.clone(),
    });
    w.denied_answer(
        "rd-pipe-outer",
        &pipeline,
        &first,
        EVIL_DENIED,
        "images/push",
    );
    if let Some(ping) = got.get(1) {
        w.check(ping.status == 200 && ping.text() == "OK", || {
            format!("the ping after a denied body: {ping}")
        });
    }
    w.check(!w.seen("rd-pipe-inbody"), || {
        "a denied request's body was forwarded as a request".into()
    });
    w.finish();
}

/// A body trickling in byte by byte is decided whole and forwarded as it was decided: dockerd
/// logs the JSON it received (`form data: …`), and never an evil name.
#[test]
fn the_bytes_forwarded_are_the_bytes_decided_on() {
    let w = Wire::start();
    let slowly = |head: &[u8], body: &[u8]| {
        let mut s = w.connect();
        s.write_all(head).unwrap();
        for byte in body {
            // The proxy may refuse before the last byte; what it answered is read below.
            if s.write_all(std::slice::from_ref(byte)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        answers(&read_all(&mut s))
            .into_iter()
            .next()
            .unwrap_or_else(Answer::none)
    };
    let head = |target: &str, length: usize| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        )
    };

    let body =
        r#"{"username":"rd-slow-user","password":"p","serveraddress":"reg.allowed.example"}"#;
    let target = "/v1.25/auth?rd=rd-slow-ok";
    let answer = slowly(head(target, body.len()).as_bytes(), body.as_bytes());
    w.forwarded_answer("rd-slow-ok", target.as_bytes(), &answer);
    w.check(answer.text().contains(ALLOWED), || {
        format!("dockerd answers the login to {ALLOWED}: {answer}")
    });
    // dockerd logs the JSON it decoded, keys sorted, quotes escaped.
    let log = w.dockerd.log();
    w.check(
        log.contains(r#"\"serveraddress\":\"reg.allowed.example\",\"username\":\"rd-slow-user\""#),
        || format!("dockerd received the body decided on:\n{log}"),
    );

    // The evil name comes last: deciding on a prefix would have let it through.
    let body =
        r#"{"serveraddress":"reg.allowed.example","username":"u","ServerAddress":"evil.example"}"#;
    let target = "/v1.25/auth?rd=rd-slow-late";
    let answer = slowly(head(target, body.len()).as_bytes(), body.as_bytes());
    w.denied_answer(
        "rd-slow-late",
        target.as_bytes(),
        &answer,
        EVIL_DENIED,
        "auth",
    );

    // Chunked, one byte per chunk, each chunk slow.
    let body =
        "{\"serveraddress\":\"reg.allowed.example\",\"\u{17F}erveraddress\":\"evil.example\"}";
    let target = "/v1.25/auth?rd=rd-slow-chunked";
    let request = chunked(target, &bytewise(body), true);
    let split = find(&request, b"\r\n\r\n").unwrap() + 4;
    let mut s = w.connect();
    s.write_all(&request[..split]).unwrap();
    for piece in request[split..].chunks(4) {
        if s.write_all(piece).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let answer = answers(&read_all(&mut s))
        .into_iter()
        .next()
        .unwrap_or_else(Answer::none);
    w.denied_answer(
        "rd-slow-chunked",
        target.as_bytes(),
        &answer,
        EVIL_DENIED,
        "auth",
    );

    // A service spec, slowly: forwarded whole.
    let body = r#"{"Name":"rd-slowsvc-name","TaskTemplate":{"ContainerSpec":{"Image":"reg.allowed.example/s"}}}"#;
    let target = "/v1.25/services/create?rd=rd-slow-svc";
    let answer = slowly(head(target, body.len()).as_bytes(), body.as_bytes());
    w.forwarded_answer("rd-slow-svc", target.as_bytes(), &answer);
    let log = w.dockerd.log();
    w.check(
        log.contains("rd-slowsvc-name") && log.contains("reg.allowed.example/s"),
        || format!("dockerd received the spec decided on:\n{log}"),
    );

    let log = w.dockerd.log();
    w.check(!log.contains("evil.example"), || {
        format!("an evil name reached dockerd:\n{log}")
    });
    w.finish();
}
