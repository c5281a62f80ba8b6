//! Errors of starting and running a cluster role (request errors are gRPC statuses, see [`crate::convert`]).

use std::path::PathBuf;

/// Why a role could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The `[cluster]` configuration is inconsistent.
    #[error("bad cluster configuration: {0}")]
    Config(String),
    /// An address could not be parsed or bound.
    #[error("bad address {addr:?}: {reason}")]
    Address {
        /// The address as configured.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The index (manifest, shard file) could not be read.
    #[error(transparent)]
    Index(#[from] delf_search::SearchError),
    /// A shard file could not be loaded.
    #[error(transparent)]
    Shard(#[from] delf_index::IndexError),
    /// Object storage failed while fetching the index.
    #[error(transparent)]
    Store(#[from] delf_features::StoreError),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}
