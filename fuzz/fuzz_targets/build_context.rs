#![no_main]

// A `docker build` context body fed to the context reader in one piece and in pieces (the first
// byte picks the piece size and the `dockerfile` parameter): the outcome must not depend on the
// split, and nothing may panic. The check lives beside the reader
// (`crates/proxy/src/build/context.rs`, `fuzz_check`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| vch_proxy::build::context::fuzz_check(data));
