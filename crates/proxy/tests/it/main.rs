//! vch-proxy against real peers: the docker CLI and a real dockerd from the testbed, and raw
//! request bytes over real sockets for framing and refusal cases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic with its location"
)]

mod build;
mod docker_cli;
mod fuzz_checks;
mod fuzz_seeds;
mod ingress_images;
mod ingress_plugins_services;
mod projects;
mod reading;
mod support;
mod versions;
mod wire;
