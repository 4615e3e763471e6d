//! The checks behind the proxy's fuzz targets, `docker_request` and `engine_response`.
//!
//! The targets in `fuzz/fuzz_targets/` include this file (`#[path]`), and `fuzz_seeds.rs`
//! replays the committed seeds in `fuzz/seeds/<target>/` through the same functions, so
//! `cargo test` runs every seed and every reproducer saved there.
//!
//! `docker_request` input: a first line `METHOD TARGET` (the request line without the version) and the rest as
//! the request body. The check runs what the endpoint runs on untrusted request bytes before
//! anything reaches dockerd: routing (percent decoding, version prefix, v1.25 table) and the
//! policy gate's readers (query string as Go reads it, `POST /images/create` and `POST /auth`).

use hyper::Method;
use vch_proxy::{
    API_VERSION, Framing, ImagesCreate, MIN_API_VERSION, auth_registry, dechunk, form_get,
    images_create, parse_query, parse_response_head, route,
};

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
        assert!(MIN_API_VERSION <= routed.version && routed.version <= API_VERSION);
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
    }

    let form = parse_query(query);
    assert!(form.len() <= query.split('&').count());
    for (key, _) in &form {
        // Go's Form.Get: the first value wins.
        let first = form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(Some(form_get(&form, key)), first);
    }
    if let Ok(ImagesCreate::Pull(image)) = images_create(&form) {
        // The gate decides on a reference that reads back as itself.
        let text = image.to_string();
        let again = vch_policy::ImageRef::parse(&text)
            .unwrap_or_else(|e| panic!("{text:?} does not parse again: {e}"));
        assert_eq!(again.to_string(), text);
        assert_eq!(again.registry(), image.registry());
    }
    let _ = auth_registry(body);
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
