#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vch_fuzz::policy_differential(data));
