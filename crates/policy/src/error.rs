//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong while building, narrowing or loading a policy, or parsing its inputs.
///
/// Deciding never fails: a registry that cannot be matched is denied with a reason. Errors are for
/// inputs a person wrote (entries, references, CA files) and carry that input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A whitelist or insecure-registry entry is malformed.
    #[error("invalid registry entry `{entry}`: {reason}")]
    InvalidEntry {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An image reference does not follow Docker's reference grammar.
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A registry address (for example a login `serveraddress`) is malformed.
    #[error("invalid registry address `{address}`: {reason}")]
    InvalidRegistry {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A registry CA file could not be read.
    #[error("cannot read registry CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The I/O error, as text (so the error stays `Clone + Eq`).
        reason: String,
    },
    /// A registry CA file holds no usable PEM certificate.
    #[error("registry CA file {} holds no PEM certificate: {reason}", path.display())]
    CaPem {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// An update entry is not contained in any deploy-time whitelist entry.
    #[error(
        "update entry `{entry}` would broaden the whitelist: it is not contained in any deploy-time entry"
    )]
    Broadening {
        /// The update entry (normalised text).
        entry: String,
    },
    /// An update entry of the push list is not contained in the deploy-time push list (or, with
    /// none, in the deploy-time whitelist).
    #[error(
        "update entry `{entry}` would broaden the push list: it is not contained in any deploy-time entry"
    )]
    PushBroadening {
        /// The update entry (normalised text).
        entry: String,
    },
    /// An update with no whitelist entries would turn whitelist mode off.
    #[error("an empty update would turn whitelist mode off and allow every registry")]
    EmptyUpdate,
    /// A DNS query failed (timeout, refused, server failure).
    #[error("DNS query {query} failed: {reason}")]
    Dns {
        /// The query, such as `PTR 10.0.0.1`.
        query: String,
        /// What went wrong.
        reason: String,
    },
    /// The reverse-DNS settings are unusable.
    #[error("invalid DNS settings: {reason}")]
    DnsConfig {
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn entry(entry: &str, reason: impl Into<String>) -> Self {
        Self::InvalidEntry {
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn reference(reference: &str, reason: impl Into<String>) -> Self {
        Self::InvalidReference {
            reference: reference.to_owned(),
            reason: reason.into(),
        }
    }
}
