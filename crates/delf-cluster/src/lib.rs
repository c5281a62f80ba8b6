//! The cluster roles of delf-rs, serving the `delf.v1` gRPC protocol (`delf-proto`), with no dependency on
//! libtorch (extraction is plugged in by the binary through [`worker::QueryExtractor`]):
//!
//! - [`index_node`]: holds one PQ shard of an index (loaded from a local folder or object storage), reports ready
//!   only once loaded, answers batched descriptor searches with the keypoints of the neighbours.
//! - [`worker`]: stateless; extracts a query photo's features and verifies candidates (RANSAC) for the coordinator.
//! - [`coordinator`]: fans a query out to one replica of every shard with deadlines and failover, merges the
//!   per-shard top-K, votes per image, spreads verification over workers (retried elsewhere on failure) and ranks
//!   by inliers, exactly like one-process `delf search` on the same index.
//!
//! Around them: [`config`] (static membership), [`security`] (TLS, mutual TLS, bearer tokens), [`server`] (health,
//! reflection, message limits, the token check, graceful shutdown), [`client`] (channels and request metadata),
//! [`convert`] (wire <-> core types), [`metrics`] (Prometheus) and [`index_files`] (fetching an index's files from
//! object storage).

pub mod client;
pub mod config;
pub mod convert;
pub mod coordinator;
pub mod error;
pub mod index_files;
pub mod index_node;
pub mod metrics;
pub mod security;
pub mod server;
pub mod worker;

pub use config::{ClusterConfig, ShardFailurePolicy, ShardReplicas};
pub use error::ClusterError;
pub use security::{Security, TlsSettings};
