//! Registry HTTP API v2 / OCI distribution client.
#![doc = include_str!("../README.md")]

mod body;
mod challenge;
mod client;
mod copy;
mod credentials;
mod error;
mod manifest;
mod proxy;
mod reference;
mod referrers;
#[cfg(feature = "replicate")]
pub mod replicate;
mod settings;
mod transport;

// The API.
pub use body::BlobStream;
pub use challenge::{Challenge, parse_link_next, parse_www_authenticate};
pub use client::{
    Client, ClientBuilder, DEFAULT_ATTEMPTS, FetchedManifest, MAX_MANIFEST, ManifestHead, Mount,
    Page, Ping, UploadSession,
};
pub use copy::{
    BlobOutcome, CopyEvent, CopyOptions, CopyReport, DEFAULT_CONCURRENCY, MountHint, Progress,
    copy_image,
};
pub use credentials::{AuthEntry, Credentials, DOCKER_HUB_AUTH_KEY, DockerConfig};
pub use error::{Error, RegistryError, RegistryErrors, Result};
pub use manifest::{
    ACCEPT_ALL, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, Manifest, OCI_INDEX,
    OCI_MANIFEST, Platform,
};
pub use proxy::{PROXY_CA_FILE_VAR, ProxyConfig};
pub use reference::{DOCKER_HUB, DOCKER_HUB_API, Digest, Hasher, Reference};
pub use referrers::{Referrers, ReferrersSource};
pub use settings::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, DangerousHostSettingsBuilder, HostSettings,
    HostSettingsBuilder, PlainHttp,
};
