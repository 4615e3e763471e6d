//! vch-pki against real peers: the openssl CLI, the Distribution registry, curl and skopeo.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic with its location"
)]

mod fuzz_seeds;
mod openssl;
mod pem_check;
mod registry;
