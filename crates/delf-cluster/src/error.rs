//! Errors of starting and running a cluster role (request errors are gRPC statuses, see [`crate::convert`]).

/// Why a role could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The `[cluster]` configuration is inconsistent.
    #[error("bad cluster configuration: {0}")]
    Config(String),
    /// gRPC could not be set up: a bad address, unusable certificates, a port that does not bind.
    #[error(transparent)]
    Rpc(#[from] delf_rpc::RpcError),
    /// The index (manifest, shard file) could not be read.
    #[error(transparent)]
    Index(#[from] delf_search::SearchError),
    /// A shard file could not be loaded.
    #[error(transparent)]
    Shard(#[from] delf_index::IndexError),
    /// Storage failed while fetching the index (object store, local cache folder).
    #[error(transparent)]
    Store(#[from] delf_storage::StorageError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}
