//! The checks behind the registry fuzz targets, one function per target.
//!
//! `fuzz/fuzz_targets/{www_authenticate,link_header,manifest_decode}.rs` include this file
//! (`#[path]`), and `fuzz_seeds.rs` replays the committed seeds in `fuzz/seeds/<target>/`
//! through the same functions, so `cargo test` runs every seed and every reproducer saved there.
//! Each returns early on input the parsers refuse and panics when an invariant breaks.

use vch_registry::{Digest, Manifest, Platform};

/// `WWW-Authenticate` parsing never panics; what it returns is normalised (lower-case scheme
/// and parameter names) and every value comes from the input.
pub(crate) fn www_authenticate(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for c in vch_registry::parse_www_authenticate(text) {
        assert!(!c.scheme.is_empty());
        assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
        assert!(text.to_ascii_lowercase().contains(&c.scheme));
        for (name, _) in &c.params {
            assert_eq!(*name, name.to_ascii_lowercase());
            assert!(c.param(name).is_some());
        }
        if let Some(t) = &c.token68 {
            assert!(text.contains(t.as_str()));
        }
    }
}

/// `Link` parsing never panics, and a `next` target is non-empty text of the input, trimmed,
/// without `<` or `>`, after a `<`.
pub(crate) fn link_header(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(next) = vch_registry::parse_link_next(text) {
        assert!(!next.is_empty());
        assert!(!next.contains('>') && !next.contains('<'), "{next:?}");
        assert_eq!(next.trim(), next);
        // The last occurrence: the target may also appear earlier, outside any `<…>`
        // (seed crash-fb0df3de…, a false alarm of an earlier version of this check).
        let at = text
            .rfind(next.as_str())
            .expect("the target is in the input");
        assert!(text[..at].contains('<'), "{next:?} in {text:?}");
    }
}

/// Manifest decoding never panics; a decoded manifest's descriptors all carry valid digests,
/// and platform selection on it never panics.
pub(crate) fn manifest_decode(data: &[u8]) {
    let Ok(m) = Manifest::decode(data, Some("application/vnd.oci.image.index.v1+json")) else {
        return;
    };
    assert!(!m.media_type().is_empty());
    for b in m.blobs() {
        assert!(Digest::parse(&b.digest).is_ok());
    }
    if let Manifest::Index { manifests, .. } = &m {
        for d in manifests {
            assert!(Digest::parse(&d.digest).is_ok());
        }
    }
    if let Ok(p) = Platform::parse("linux/amd64")
        && let Ok(d) = m.select_platform(&p, "fuzz")
    {
        assert!(Digest::parse(&d.digest).is_ok());
        assert!(d.platform.as_ref().is_some_and(|q| q.satisfies(&p)));
    }
}

/// Replication rules parsing never panics; a file that loads loads again identically, every
/// rule names endpoints of the file, its filters and name mapping answer on any name, and no
/// two rules are both enabled under one name.
pub(crate) fn replication_rules(data: &[u8]) {
    use vch_registry::replicate::Rules;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = std::path::Path::new("/rules");
    let Ok(rules) = Rules::parse(text, "fuzz.toml", dir) else {
        return;
    };
    let again = Rules::parse(text, "fuzz.toml", dir).expect("a file that loaded loads again");
    assert_eq!(rules.rules.len(), again.rules.len());
    assert!(rules.state.starts_with(dir) || rules.state.is_absolute());
    let mut names = std::collections::HashSet::new();
    for rule in &rules.rules {
        assert!(names.insert(rule.name.as_str()), "{} twice", rule.name);
        assert!(rules.endpoints.contains_key(&rule.from));
        assert!(rules.endpoints.contains_key(&rule.to));
        assert!(rule.concurrency > 0);
        for name in ["a", "a/b", "team-a/app", "", "x/y/z", "v1.0-rc1"] {
            let _ = rule.repositories.matches(name);
            let _ = rule.tags.matches(name);
            let dest = rule.destination(name);
            if !name.is_empty() {
                assert!(
                    !dest.is_empty() && !dest.starts_with('/'),
                    "{name} -> {dest}"
                );
            }
        }
    }
    assert!(rules.retry.attempts > 0 && rules.retry.initial <= rules.retry.max);
}

/// Notification envelopes never panic the parser; what it keeps are pushes and deletes of a
/// non-empty repository named in the input.
pub(crate) fn notify_envelope(data: &[u8]) {
    let Ok(events) = vch_registry::replicate::parse_envelope(data) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    for e in events {
        assert!(!e.repository.is_empty());
        // JSON escapes may spell it differently; the plain ones appear verbatim.
        if !text.contains('\\') {
            assert!(text.contains(&e.repository), "{:?}", e.repository);
        }
    }
}
