//! Errors of setting up gRPC: addresses, certificates, binding, the transport.

use std::path::PathBuf;

/// Why a channel, a server or the metrics endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// An address could not be parsed or bound.
    #[error("bad address {addr:?}: {reason}")]
    Address {
        /// The address as configured.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Security settings are unusable (a file that is not PEM, descriptors that do not build).
    #[error("bad security settings: {0}")]
    Config(String),
    /// A certificate or key file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// tonic refused a setting (TLS configuration) or the server failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}
