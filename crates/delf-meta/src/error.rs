//! Errors of the metadata layer.

use std::path::PathBuf;

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The `[meta]` configuration is inconsistent.
    #[error("bad meta configuration: {0}")]
    Config(String),
    /// A file of the Raft log or a snapshot could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The stored Raft data is damaged beyond a torn last record.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// raft-rs refused an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// This coordinator is not the leader (the leader's id when known).
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<u64>),
    /// The command was proposed but leadership changed before it was applied: it may or may not have been
    /// committed (every command is safe to send again).
    #[error("leadership changed before the command was applied; it may have been committed, retry")]
    Unknown,
    /// No answer within the time allowed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The Raft thread stopped.
    #[error("the raft thread stopped")]
    Stopped,
    /// gRPC could not be set up (addresses, TLS, binding).
    #[error(transparent)]
    Rpc(#[from] delf_rpc::RpcError),
    /// A cluster role this coordinator hosts failed (an index it loads, the role's server).
    #[error(transparent)]
    Cluster(#[from] delf_cluster::ClusterError),
    /// Object storage failed (fetching an index manifest).
    #[error(transparent)]
    Store(#[from] delf_storage::StorageError),
}
