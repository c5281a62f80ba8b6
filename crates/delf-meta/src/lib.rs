//! Cluster metadata replicated with Raft (tikv's raft-rs) on the coordinators, as Qdrant keeps its cluster state
//! apart from its shards: which coordinators, index nodes and workers exist, which index versions exist (manifest
//! URI, fingerprint, loading / active / retired), which version each index name serves, and which index node holds
//! which shard of which version.
//!
//! - [`state`]: what the replicated state holds ([`MetaState`]) and the commands that change it ([`Command`]);
//!   [`apply`] applies them deterministically; [`assign`] places shards on nodes.
//! - [`storage`]: the durable Raft log, hard state and snapshots on disk (fsync; torn tails are cut on restart).
//! - [`node`]: the tick / step / ready loop on a thread of its own, proposals, read index, membership changes,
//!   snapshots and log compaction; [`handle`] is how everything else talks to it.
//! - [`transport`] and [`service`]: Raft messages and client calls over the project's gRPC (`delf.v1.Meta`),
//!   writes and heartbeats forwarded to the leader, node liveness judged by the leader.
//! - [`agent`]: what index nodes and workers run: register, heartbeat, load and unload assigned shards.
//! - [`topology`]: turns the state into the coordinator's routing ([`delf_cluster::coordinator::Topology`]).
//!
//! The fault model and what is guaranteed: docs/cluster-metadata.md.

pub mod agent;
pub mod apply;
pub mod assign;
pub mod client;
pub mod config;
pub mod error;
pub mod fault;
pub mod handle;
mod logger;
pub mod node;
pub mod service;
pub mod state;
pub mod storage;
pub mod topology;
pub mod transport;

pub use config::{MetaConfig, Peer};
pub use error::MetaError;
pub use state::{Applied, Command, MetaState, NodeRole, VersionState};
