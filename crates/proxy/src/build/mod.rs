//! `POST /build` (being written: the flow is in flow.rs.wip until the reader and parser land).

#[allow(dead_code, reason = "wired in by flow.rs.wip")]
mod bases;
pub mod context;
pub mod dockerfile;
#[allow(dead_code, reason = "wired in by flow.rs.wip")]
mod spool;

use std::sync::{Arc, OnceLock};

use hyper::body::Incoming;

use crate::audit::Audit;
use crate::police::{Forwarded, Policed};
use crate::service::Body;
use crate::settings::Settings;

/// A build upload on its way to dockerd.
pub(crate) struct Upload {
    pub(crate) body: Body,
    pub(crate) late: Arc<OnceLock<String>>,
}

/// Placeholder while the flow is being written.
pub(crate) async fn police(
    _settings: &Settings,
    _parts: &hyper::http::request::Parts,
    _form: &[(String, String)],
    body: Incoming,
    _audit: &Arc<Audit>,
) -> Policed {
    Policed::Forward(Forwarded::Stream(body))
}
