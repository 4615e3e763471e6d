//! The checks behind the proxy's fuzz targets, `docker_request` and `engine_response`.
//!
//! The targets in `fuzz/fuzz_targets/` include this file (`#[path]`), and `fuzz_seeds.rs`
//! replays the committed seeds in `fuzz/seeds/<target>/` through the same functions, so
//! `cargo test` runs every seed and every reproducer saved there.
//!
//! `docker_request` input: a first line `METHOD TARGET` (the request line without the version) and the rest as
//! the request body. The check runs what the endpoint runs on untrusted request bytes before
//! anything reaches dockerd: routing (percent decoding, version prefix, v1.25 table) and the
//! policy gate's readers (query string as Go reads it, then [`Gate::ask`] on every policed route,
//! with the body on the routes that read it).

use hyper::Method;
use vch_policy::{ImageRef, Registry};
use vch_proxy::{
    AUDITED_API_VERSION, Action, Ask, Framing, Gate, ImagesCreate, Item, Kind, MIN_API_VERSION,
    Subject, Unsourced, auth_registry, dechunk, form_get, images_create, parse_query,
    parse_response_head, route,
};

/// The check behind `docker_request`. Invariants, besides never panicking:
///
/// - routing: a routed endpoint is canonical, and routes the same with every byte escaped;
/// - the query: `form_get` is the first value of a key (Go's `Form.Get`);
/// - a pull's reference reads back as itself;
/// - on every policed route, see [`gate_check`].
pub(crate) fn docker_request(data: &[u8]) {
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    if let Ok(routed) = route(&method, path) {
        // What was routed is canonical: the router and dockerd cannot disagree about it.
        let e = &routed.endpoint;
        assert!(e.starts_with('/'), "{e:?}");
        assert!(!e.contains("//"), "{e:?}");
        assert!(!e.split('/').any(|s| s == "." || s == ".."), "{e:?}");
        assert!(!e.bytes().any(|b| b.is_ascii_control()), "{e:?}");
        assert!(MIN_API_VERSION <= routed.version && routed.version <= AUDITED_API_VERSION);
        // The decoded path, every byte escaped, routes the same: matching is on decoded paths,
        // as dockerd's, so no spelling of a path reaches another endpoint.
        if let Some(decoded) = vch_proxy::percent_decode(path) {
            let escaped: String = decoded.bytes().map(|b| format!("%{b:02X}")).collect();
            let again = route(&method, &escaped);
            assert_eq!(
                again.as_ref().ok(),
                Some(&routed),
                "{decoded:?} routes differently when escaped"
            );
        }
        if let Kind::Policed(gate) = routed.kind {
            gate_check(gate, &routed.endpoint, query, body);
        }
    }

    let form = parse_query(query);
    assert!(form.len() <= query.split('&').count());
    for (key, _) in &form {
        // Go's Form.Get: the first value wins.
        let first = form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(Some(form_get(&form, key)), first);
    }
    if let Ok(ImagesCreate::Pull(image)) = images_create(&form) {
        reads_back(&image);
    }
    let _ = auth_registry(body);
}

/// The gate decides on a reference that reads back as itself.
fn reads_back(image: &ImageRef) {
    let text = image.to_string();
    let again =
        ImageRef::parse(&text).unwrap_or_else(|e| panic!("{text:?} does not parse again: {e}"));
    assert_eq!(again.to_string(), text);
    assert_eq!(again.registry(), image.registry());
    assert_eq!(again.match_path(), image.match_path());
}

/// How many query pairs the rewriting invariants try, each rewrite asking the gate again.
const REWRITES: usize = 8;

/// A duplicate's value: a reference that would change any answer it reached.
const DUPLICATE: &str = "evil.example%2Fdup%3A1";

/// Pairs that Go's `ParseQuery` skips (a `;`, a bad escape, a value that is not UTF-8), for each
/// parameter a gate reads.
const SKIPPED: &[&str] = &[
    "fromImage=evil.example/a;",
    "fromImage=%zz",
    "tag=%FF",
    "term=evil.example/a;x",
    "term=evil.example%2",
    "remote=evil.example/p;",
    "remote=%C0%AF",
    "from%2Image=evil.example/a",
];

/// What a policed request asks of the policy, read as `police.rs` reads it: the query as Go
/// parses it, the body only on the routes whose gate reads it.
fn ask(gate: Gate, endpoint: &str, query: &str, body: &[u8]) -> Result<Ask, String> {
    let body = if gate.reads_body() { body } else { &[] };
    gate.ask(endpoint, &parse_query(query), body)
}

/// The gate's invariants on one routed request:
///
/// - deterministic; a gate that does not read the body decides the same whatever the body, and
///   one that does ignores the query;
/// - the first value wins: appending a duplicate of any key present, or a pair Go skips (`;`, a
///   bad escape, not UTF-8), never changes the answer;
/// - spelling: percent-encoding a letter of a key or value (outside an escape) never changes it;
/// - items have the gate's action (pull, push, search, login) and subject kind, and image
///   subjects read back as themselves;
/// - per gate, against the parameter it reads: see [`gate_semantics`].
fn gate_check(gate: Gate, endpoint: &str, query: &str, body: &[u8]) {
    let answer = ask(gate, endpoint, query, body);
    assert_eq!(
        answer,
        ask(gate, endpoint, query, body),
        "{gate:?} is deterministic"
    );
    let form = parse_query(query);
    if gate.reads_body() {
        assert_eq!(
            answer,
            gate.ask(endpoint, &[], body),
            "{gate:?} ignores the query"
        );
    } else {
        let with_body = gate.ask(endpoint, &form, body);
        assert_eq!(answer, with_body, "{gate:?} does not read the body");
    }

    let same = |rewritten: &str, why: &str| {
        assert_eq!(
            answer,
            ask(gate, endpoint, rewritten, body),
            "{gate:?}: {why}: {query:?} against {rewritten:?}"
        );
    };
    let mut keys: Vec<&str> = Vec::new();
    for (key, _) in &form {
        if !keys.contains(&key.as_str()) && keys.len() < REWRITES {
            keys.push(key);
        }
    }
    for key in keys {
        let escaped: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        same(
            &format!("{query}&{escaped}={DUPLICATE}"),
            "a later duplicate",
        );
    }
    for skipped in SKIPPED {
        same(&format!("{query}&{skipped}"), "a pair Go skips");
    }
    for n in 0..query.split('&').count().min(REWRITES) {
        for in_key in [true, false] {
            if let Some(rewritten) = escape_letter(query, n, in_key) {
                same(&rewritten, "a letter percent-encoded");
            }
        }
    }

    let (action, registry_subject) = match gate {
        Gate::ImagesCreate
        | Gate::PluginPull
        | Gate::PluginPrivileges
        | Gate::PluginUpgrade
        | Gate::ServiceCreate
        | Gate::ServiceUpdate
        | Gate::Distribution => (Some(Action::Pull), false),
        Gate::ImagesPush | Gate::PluginPush => (Some(Action::Push), false),
        Gate::ImagesSearch => (Some(Action::Search), true),
        Gate::Auth => (Some(Action::Login), true),
        Gate::ImagesLoad | Gate::PluginCreate | Gate::Build | Gate::SwarmJoin => (None, false),
    };
    if let Ok(Ask::Items(items)) = &answer {
        assert_eq!(items.len(), 1, "{gate:?} asks about one thing: {items:?}");
        for item in items {
            assert_eq!(Some(item.action), action, "{gate:?}: {item:?}");
            match &item.subject {
                Subject::Image(image) => {
                    assert!(
                        !registry_subject,
                        "{gate:?} decides on a registry: {item:?}"
                    );
                    reads_back(image);
                }
                Subject::Registry(_) => {
                    assert!(registry_subject, "{gate:?} decides on an image: {item:?}");
                }
            }
        }
    }
    gate_semantics(gate, endpoint, &form, body, &answer);
}

/// Per gate, the answer against what the gate's parameter says (read with Go's first-value rule):
///
/// | gate | answer |
/// |---|---|
/// | `images/create` | `Unsourced(Import)` iff `fromImage` is empty; otherwise a pull of [`images_create`]'s reference |
/// | `images/load`, `plugins/create`, `swarm/join` | always `Unsourced` |
/// | `build` | `Unsourced(BuildRemote)` iff `remote` is non-empty, else `Nothing` |
/// | `images/push` | the decoded `{name}`'s repository and registry; `tag` (no `:`) as its tag |
/// | `plugins/push` | the decoded `{name}` as a reference |
/// | `images/search` | Docker Hub unless `term`'s first `/` segment has `.` or `:` or is `localhost` |
/// | plugin pull, privileges, upgrade | a pull of the first `remote`; `&remote=…` appended changes nothing |
/// | services | one pull, a runtime other than `container`, or nothing; whitespace around the body changes nothing |
/// | `auth` | a login to [`auth_registry`] |
fn gate_semantics(
    gate: Gate,
    endpoint: &str,
    form: &[(String, String)],
    body: &[u8],
    answer: &Result<Ask, String>,
) {
    let pull = |image: ImageRef| {
        Ask::Items(vec![Item {
            action: Action::Pull,
            subject: Subject::Image(image),
        }])
    };
    match gate {
        Gate::ImagesCreate => {
            let import = matches!(answer, Ok(Ask::Unsourced(Unsourced::Import)));
            assert_eq!(form_get(form, "fromImage").is_empty(), import, "{answer:?}");
            let expected = images_create(form).map(|create| match create {
                ImagesCreate::Pull(image) => pull(image),
                ImagesCreate::Import => Ask::Unsourced(Unsourced::Import),
            });
            assert_eq!(*answer, expected);
        }
        Gate::ImagesLoad => assert_eq!(*answer, Ok(Ask::Unsourced(Unsourced::Load))),
        Gate::PluginCreate => assert_eq!(*answer, Ok(Ask::Unsourced(Unsourced::PluginCreate))),
        Gate::SwarmJoin => assert_eq!(*answer, Ok(Ask::Unsourced(Unsourced::SwarmJoin))),
        Gate::Build => {
            // BuildKit's parameters are refused whatever else the request says.
            let buildkit = form_get(form, "version") == "2"
                || ["session", "buildid", "outputs"]
                    .iter()
                    .any(|k| !form_get(form, k).is_empty());
            let expected = if buildkit {
                Ask::Unsupported(vch_proxy::BUILDKIT_UNSUPPORTED)
            } else if form_get(form, "remote").is_empty() {
                Ask::Nothing
            } else {
                Ask::Unsourced(Unsourced::BuildRemote)
            };
            assert_eq!(*answer, Ok(expected));
        }
        Gate::Distribution => name_pull_semantics("/distribution/", "/json", endpoint, answer),
        Gate::ImagesPush => push_semantics("/images/", endpoint, form_get(form, "tag"), answer),
        Gate::PluginPush => {
            // A name that could be a plugin ID prefix is refused (dockerd would resolve it to
            // another plugin and push that one to its own name).
            let name = endpoint
                .strip_prefix("/plugins/")
                .and_then(|rest| rest.trim_end_matches('/').strip_suffix("/push"))
                .unwrap_or_default();
            if !name.is_empty() && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                assert_eq!(*answer, Ok(Ask::Unsourced(Unsourced::PluginPushById)));
            } else {
                push_semantics("/plugins/", endpoint, "", answer);
            }
        }
        Gate::ImagesSearch => search_semantics(form_get(form, "term"), answer),
        Gate::PluginPull | Gate::PluginPrivileges | Gate::PluginUpgrade => {
            let remote = form_get(form, "remote");
            match ImageRef::parse(remote) {
                Ok(image) => assert_eq!(*answer, Ok(pull(image))),
                Err(_) => assert!(answer.is_err(), "{remote:?}: {answer:?}"),
            }
            if form.iter().any(|(k, _)| k == "remote") {
                let mut again = form.to_vec();
                again.push(("remote".to_owned(), "evil.example/p:1".to_owned()));
                assert_eq!(
                    *answer,
                    gate.ask(endpoint, &again, &[]),
                    "the first remote wins"
                );
            }
        }
        Gate::ServiceCreate | Gate::ServiceUpdate => {
            match answer {
                Ok(Ask::Items(_) | Ask::Nothing) | Err(_) => {}
                Ok(Ask::Unsourced(Unsourced::ServiceRuntime(runtime))) => {
                    assert!(!runtime.is_empty() && runtime != "container", "{runtime:?}");
                }
                Ok(other) => panic!("{gate:?} asks {other:?}"),
            }
            // JSON whitespace around the document is no part of it (Go's decoder skips it too).
            let mut spaced = b" \t\r\n".to_vec();
            spaced.extend_from_slice(body);
            spaced.extend_from_slice(b"\n ");
            assert_eq!(
                answer.as_ref().ok(),
                gate.ask(endpoint, &[], &spaced).as_ref().ok(),
                "whitespace around the body"
            );
        }
        Gate::Auth => {
            let expected = auth_registry(body).map(|registry| {
                Ask::Items(vec![Item {
                    action: Action::Login,
                    subject: Subject::Registry(registry),
                }])
            });
            assert_eq!(*answer, expected);
        }
    }
}

/// `POST /images/{name}/push` and `POST /plugins/{name}/push` (`prefix` says which): the
/// repository pushed to is the decoded `{name}`'s, normalised; a `tag` without `:` is the tag
/// pushed (push by digest is not a thing: such a tag is ignored).
fn push_semantics(prefix: &str, endpoint: &str, tag: &str, answer: &Result<Ask, String>) {
    let name = endpoint
        .strip_prefix(prefix)
        .and_then(|rest| rest.trim_end_matches('/').strip_suffix("/push"))
        .unwrap_or_else(|| panic!("the push route without a name: {endpoint:?}"));
    let Ok(named) = ImageRef::parse(name) else {
        assert!(answer.is_err(), "{name:?} does not parse, yet {answer:?}");
        return;
    };
    let tagged = !tag.is_empty() && !tag.contains(':');
    let image = match answer {
        Ok(Ask::Items(items)) => match items.as_slice() {
            [
                Item {
                    action: Action::Push,
                    subject: Subject::Image(image),
                },
            ] => image,
            other => panic!("a push of {name:?} asks {other:?}"),
        },
        // Only a tag can make a valid name fail (dockerd's `WithTag` refuses it too).
        Err(_) if tagged => return,
        other => panic!("a push of {name:?} (tag {tag:?}) asks {other:?}"),
    };
    assert_eq!(image.name_str(), named.name_str(), "{name:?} tag {tag:?}");
    assert_eq!(image.registry(), named.registry());
    assert_eq!(image.match_path(), named.match_path());
    if tagged {
        assert_eq!(image.tag(), Some(tag), "{name:?} tag {tag:?}");
        assert_eq!(image.digest(), None);
    } else {
        assert_eq!(image, &named);
    }
}

/// `GET /images/search`: dockerd's `splitReposSearchTerm` sends the search to the registry named
/// by the part before the first `/` when it holds a `.` or a `:` or is `localhost`, else to Hub.
fn search_semantics(term: &str, answer: &Result<Ask, String>) {
    let index = term
        .split_once('/')
        .map(|(index, _)| index)
        .filter(|i| i.contains('.') || i.contains(':') || *i == "localhost");
    let expected = match index {
        Some(index) => Registry::parse(index).map_err(|e| e.to_string()),
        None => Ok(Registry::docker_hub()),
    };
    match (answer, expected) {
        (Ok(Ask::Items(items)), Ok(registry)) => match items.as_slice() {
            [
                Item {
                    action: Action::Search,
                    subject: Subject::Registry(searched),
                },
            ] => {
                assert_eq!(searched, &registry, "{term:?}");
                assert_eq!(searched.is_docker_hub(), registry.is_docker_hub());
                if index.is_none() {
                    assert!(searched.is_docker_hub(), "{term:?} is searched on Hub");
                }
            }
            other => panic!("a search for {term:?} asks {other:?}"),
        },
        (Err(_), Err(_)) => {}
        (answer, expected) => panic!("a search for {term:?}: {answer:?}, expected {expected:?}"),
    }
}

/// `query` with the first letter of pair `n`'s key (or value) written as `%XX`, skipping the
/// two characters after each `%` (an escape, well-formed or not, stays as it was); `None` when
/// there is no such letter. Go's `QueryUnescape`, like `parse_query`, decodes both alike.
fn escape_letter(query: &str, n: usize, in_key: bool) -> Option<String> {
    let start: usize = query.split('&').take(n).map(|p| p.len() + 1).sum();
    let pair = query.split('&').nth(n)?;
    let (from, to) = match pair.find('=') {
        Some(eq) if in_key => (start, start + eq),
        Some(eq) => (start + eq + 1, start + pair.len()),
        None if in_key => (start, start + pair.len()),
        None => return None,
    };
    let bytes = query.as_bytes();
    let mut i = from;
    while i < to {
        match bytes[i] {
            b'%' => i += 3,
            b if b.is_ascii_alphabetic() => {
                return Some(format!("{}%{b:02X}{}", &query[..i], &query[i + 1..]));
            }
            _ => i += 1,
        }
    }
    None
}

/// The check behind `engine_response`: how the endpoint reads dockerd's answers (the engine may
/// be a remote `tcp://` host). Input: one control byte (bit 0: the request was a `HEAD`; bits
/// 1–4: the read size that splits the body), then a response head and body as received.
///
/// Invariants: a parsed head lies within the input; a chunked body decodes the same whichever
/// way reads split it (or fails either way); what it decodes to, chunked again, decodes back to
/// itself.
pub(crate) fn engine_response(data: &[u8]) {
    let Some((&control, response)) = data.split_first() else {
        return;
    };
    let head_request = control & 1 == 1;
    let step = usize::from((control >> 1) & 0x0f) + 1;
    let Ok(Some((head, len))) = parse_response_head(response) else {
        return;
    };
    assert!(len <= response.len());
    let framing = head.framing(head_request);
    if head_request || head.status.as_u16() == 204 || head.status.as_u16() == 304 {
        assert_eq!(framing, Framing::Done);
    }
    if !matches!(framing, Framing::Chunked(_)) {
        return;
    }
    let body = &response[len..];
    let whole = dechunk(body, body.len());
    let split = dechunk(body, step);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "split at {step}"),
        (Err(_), Err(_)) => {}
        _ => panic!("read size {step} changed the outcome: {whole:?} against {split:?}"),
    }
    if let Ok((decoded, _)) = whole {
        let mut again = Vec::new();
        for piece in decoded.chunks(step * 3) {
            again.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            again.extend_from_slice(piece);
            again.extend_from_slice(b"\r\n");
        }
        again.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(dechunk(&again, step), Ok((decoded, true)));
    }
}

/// `GET /distribution/{name}/json`: a pull of `{name}` as it parses, or an error when it does not.
fn name_pull_semantics(prefix: &str, suffix: &str, endpoint: &str, answer: &Result<Ask, String>) {
    let name = endpoint
        .strip_prefix(prefix)
        .and_then(|rest| rest.trim_end_matches('/').strip_suffix(suffix))
        .unwrap_or_else(|| panic!("the route without a name: {endpoint:?}"));
    match ImageRef::parse(name) {
        Ok(image) => assert_eq!(
            *answer,
            Ok(Ask::Items(vec![Item {
                action: Action::Pull,
                subject: Subject::Image(image),
            }]))
        ),
        Err(_) => assert!(answer.is_err(), "{name:?}: {answer:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::escape_letter;

    #[test]
    fn escapes_a_letter_outside_escapes() {
        let q = "a%41b=%zzc&%62=1&=&x;y";
        assert_eq!(
            escape_letter(q, 0, true).as_deref(),
            Some("%61%41b=%zzc&%62=1&=&x;y")
        );
        assert_eq!(
            escape_letter(q, 0, false).as_deref(),
            Some("a%41b=%zz%63&%62=1&=&x;y")
        );
        assert_eq!(escape_letter(q, 1, true), None);
        assert_eq!(escape_letter(q, 1, false), None);
        assert_eq!(escape_letter(q, 2, true), None);
        assert_eq!(
            escape_letter(q, 3, true).as_deref(),
            Some("a%41b=%zzc&%62=1&=&%78;y")
        );
        assert_eq!(escape_letter(q, 3, false), None);
        assert_eq!(escape_letter(q, 4, true), None);
        // A malformed escape stays malformed: the pair is skipped before and after.
        assert_eq!(
            escape_letter("%\u{e9}b", 0, true).as_deref(),
            Some("%\u{e9}%62")
        );
    }
}
