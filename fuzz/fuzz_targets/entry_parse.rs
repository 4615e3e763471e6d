#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vch_fuzz::entry_parse(data));
