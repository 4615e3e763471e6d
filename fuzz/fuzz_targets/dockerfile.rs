#![no_main]

// Dockerfiles as dockerd's classic builder reads them (`crates/proxy/src/build/dockerfile.rs`):
// build args (`NAME=VALUE` lines), a NUL, the Dockerfile. The invariants live beside the parser.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vch_proxy::build::dockerfile::check_invariants(data));
