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
    /// A record in the middle of the Raft log is damaged: entries and votes after it were acknowledged, so the
    /// log cannot be cut there as a torn write, and this member must never vote again under its id.
    #[error(
        "{path}: record at byte {offset} is damaged and a whole record follows at byte {next}: the log cannot be \
         repaired without forgetting acknowledged entries or votes, so this coordinator does not start. Bring it \
         back under a new id: `delf cluster members remove ID` on the others, move this data folder aside, start \
         the coordinator with a new id and DELF_META__JOIN=true, then `delf cluster members add NEWID ADDRESS`; \
         it receives the state from a peer's snapshot (docs/cluster-metadata.md)"
    )]
    DamagedLog {
        /// The log file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// Where the next whole record starts.
        next: u64,
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
