#![no_main]

// Link parsing never panics, and a `next` target is text between `<` and `>` of the input.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(next) = vch_registry::parse_link_next(text) {
        assert!(!next.contains('>'));
        assert!(text.contains(&format!("{next}>")) || text.contains('<'));
        assert!(text.contains(next.as_str()));
    }
});
