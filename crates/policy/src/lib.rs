#![doc = include_str!("../README.md")]
//!
//! # Crate features
//!
//! - `serde` (default): serde derives for [`RegistryConfig`], the `[registry]` configuration.
//! - `dns` (default): [`HickoryResolver`], reverse DNS through hickory-resolver on tokio.
//! - `tls` (default): [`Policy::registry_root_store`], registry CAs as a rustls root store, and
//!   X.509 validation of CA files.
//! - `oracle`: `oracle::LinearPolicy`, the naive reference implementation.
//!
//! With `--no-default-features` the crate does no I/O beyond reading CA files on request and
//! needs no async runtime.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod dns;
mod entry;
mod error;
mod host;
pub mod manual;
mod matcher;
#[cfg(any(test, feature = "oracle"))]
pub mod oracle;
mod policy;
mod reference;

// The API.
pub use crate::config::{
    DnsConfig, EnforcementMode, NarrowedLists, PushRule, RegistryConfig, RegistryRules,
    load_ca_file, parse_ca_pem,
};
#[cfg(feature = "dns")]
pub use crate::dns::HickoryResolver;
pub use crate::dns::{Answer, Resolver, ReverseDns, ReverseDnsMode, ReverseNames};
pub use crate::entry::{Entry, EntryHost};
pub use crate::error::Error;
pub use crate::host::{DEFAULT_PORT, DOCKER_HUB_ALIASES, Host, Registry};
pub use crate::matcher::List;
pub use crate::policy::{
    Decision, Intersection, Policy, PolicyBuilder, Reason, Transport, Warning,
};
pub use crate::reference::{ImageRef, NAME_TOTAL_LENGTH_MAX};

#[cfg(test)]
mod tests;
