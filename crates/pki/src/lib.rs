#![doc = include_str!("../README.md")]

mod ca;
mod env;
mod error;
mod inspect;
mod key;
mod layout;
mod lint;
mod pem;
#[cfg(feature = "rustls")]
mod tls;

// The API.
pub use ca::{
    BACKDATE, CaOptions, CertificateAuthority, DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS, IssuedCert,
    LeafOptions, Profile, Revocation,
};
pub use env::{DockerEnv, TlsMode, shell_quote};
pub use error::{Error, Result};
pub use inspect::{
    CertInfo, ChainCheck, EXPIRY_WARNING_DAYS, InspectOptions, Inspection,
    check_server_certificate, covers_host, inspect_der_chain, inspect_pem, key_matches_certificate,
    verify_chain,
};
pub use key::{KeyType, PrivateKey};
pub use layout::{
    Bundle, DIR_MODE, Layout, Overwrite, PUBLIC_MODE, PlannedFile, SECRET_MODE, certs_d_dir_name,
    write_files,
};
pub use lint::{Lint, LintCode, Severity};
pub use pem::{certificates_from_pem, der_to_pem};
pub use rustls_pki_types::CertificateDer;
#[cfg(feature = "rustls")]
pub use tls::{
    ClientAuth, client_config, load_certificates, load_crls, load_private_key, provider,
    server_config,
};
#[cfg(feature = "connect")]
pub use tls::{Handshake, check_connection};
