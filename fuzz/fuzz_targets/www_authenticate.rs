#![no_main]

// WWW-Authenticate parsing never panics; what it returns is normalised (lower-case scheme and
// parameter names) and every value comes from the input.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
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
});
