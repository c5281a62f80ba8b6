//! The cluster roles of delf-rs, serving the `delf.v1` gRPC protocol (`delf-proto`), with no dependency on
//! libtorch (extraction is plugged in by the binary through [`worker::QueryExtractor`]):
//!
//! - [`index_node`]: holds one PQ shard of an index (loaded from a local folder or object storage), reports ready
//!   only once loaded, answers batched descriptor searches with the keypoints of the neighbours.
//! - [`worker`]: stateless; extracts a query photo's features and verifies candidates (RANSAC) for the coordinator.
//! - [`coordinator`]: fans a query out to one replica of every shard with deadlines and failover, merges the
//!   per-shard lists, votes per image, spreads verification over workers (retried elsewhere on failure) and ranks
//!   by inliers, like one-process `delf search` on the same index. It assigns each query descriptor to its coarse
//!   cells once for all shards (`cells`, with centroids fetched from a node once per index version), asks each
//!   shard only for its K' nearest of the K (`delf_index::shard_cut`), answered as packed columns (`compact`), and
//!   fetches keypoints and ids for the verified candidates only.
//!
//! Around them: [`config`] (static membership) and [`convert`] (wire <-> core types). The gRPC plumbing (TLS,
//! tokens, channels, server setup, metrics) is `delf-rpc`'s; fetching an index's files from object storage is
//! `delf-storage`'s.

mod cells;
mod compact;
pub mod config;
pub mod convert;
pub mod coordinator;
pub mod error;
pub mod index_node;
pub mod worker;

pub use config::{ClusterConfig, ShardFailurePolicy, ShardReplicas};
pub use error::ClusterError;
