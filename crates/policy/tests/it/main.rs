//! Integration tests of vch-policy: reverse DNS against a real dnsmasq, and allocation counting.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic with its location"
)]

mod alloc;
// Built with the `dns` feature (a default one): it drives the hickory resolver.
#[cfg(feature = "dns")]
mod reverse_dns;
