#![no_main]

// The check lives with the proxy tests, which replay the seed corpus through it.
#[allow(dead_code)]
#[path = "../../crates/proxy/tests/it/fuzz_checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::engine_response(data));
