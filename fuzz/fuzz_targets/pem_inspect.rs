//! PEM and certificate inspection (`vch_pki::inspect_pem`) on arbitrary bytes: never panics,
//! keeps its invariants, and round-trips DER through our PEM encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/pki/tests/it/pem_check.rs"]
mod pem_check;

fuzz_target!(|data: &[u8]| pem_check::check(data));
