#![no_main]

// Request bodies as the gate reads them with Go's `encoding/json` rules; the invariants live
// beside the reader (`crates/proxy/src/gojson.rs`), and the proxy tests replay the seed corpus.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vch_proxy::go_json_check(data));
