//! Integration tests of the registry client against real Distribution registries.

// Test support code may unwrap: a panic there is a test failure with a location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod auth;
mod copy;
mod fuzz_checks;
mod fuzz_seeds;
mod proxy;
mod referrers;
mod support;
mod tls;
