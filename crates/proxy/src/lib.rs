#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod audit;
pub mod build;
mod engine;
mod error;
mod gate;
mod gojson;
mod info;
mod io;
pub mod manual;
mod metrics;
mod police;
mod route;
mod server;
mod service;
mod settings;
mod upstream;

// The API.
pub use crate::audit::{AUDIT_TARGET, Peer};
// For the fuzz targets: how request bodies and dockerd's answers are read.
pub use crate::api::{
    AUDITED_API_VERSION, ApiRange, EngineApi, MIN_API_VERSION, VIC_API_VERSION, probe_engine,
};
#[doc(hidden)]
pub use crate::engine::{ChunkedDecoder, Framing, ResponseHead, dechunk, parse_response_head};
pub use crate::error::Error;
pub use crate::gate::{
    Action, Ask, BUILDKIT_UNSUPPORTED, Gate, ImagesCreate, Item, Subject, Unsourced, auth_registry,
    form_get, images_create, parse_query, search_registry,
};
#[doc(hidden)]
pub use crate::gojson::check_invariants as go_json_check;
pub use crate::metrics::{METRICS_CONTENT_TYPE, Metrics, MetricsListener};
pub use crate::route::{ApiVersion, Kind, Refusal, Routed, percent_decode, route, route_in};
pub use crate::server::{Handle, Listen, Options, Server};
pub use crate::settings::{BuildSpool, Settings, server_tls, server_tls_with_crl};
pub use crate::upstream::Upstream;
