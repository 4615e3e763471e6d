#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vch_fuzz::reference_parse(data));
