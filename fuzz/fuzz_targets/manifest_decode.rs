#![no_main]

use vch_registry::{Digest, Manifest, Platform};

// Manifest decoding never panics; a decoded manifest's descriptors all carry valid digests,
// and platform selection on it never panics.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::decode(data, Some("application/vnd.oci.image.index.v1+json")) else {
        return;
    };
    assert!(!m.media_type().is_empty());
    for b in m.blobs() {
        assert!(Digest::parse(&b.digest).is_ok());
    }
    if let Ok(p) = Platform::parse("linux/amd64")
        && let Ok(d) = m.select_platform(&p, "fuzz")
    {
        assert!(Digest::parse(&d.digest).is_ok());
    }
});
