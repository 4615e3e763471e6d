#![no_main]

// The check lives with the registry tests, which replay the seed corpus through it.
// Each target uses one of the shared checks.
#[allow(dead_code)]
#[path = "../../crates/registry/tests/it/fuzz_checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::replication_rules(data));
