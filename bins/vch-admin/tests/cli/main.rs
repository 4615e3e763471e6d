//! `vch-admin` end to end: the real binary, its output and exit codes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic with its location"
)]

mod api;
mod check;
mod client;
mod completion;
mod create;
mod inspect;
mod metrics;
mod project;
mod registry;
mod serve;
mod service;
mod update;
