//! The gRPC plumbing of delf-rs, shared by the cluster roles (`delf-cluster`) and the metadata service
//! (`delf-meta`), and by clients of either:
//!
//! - [`security`]: TLS (rustls), mutual TLS and the bearer token of a role ([`Security`], `[cluster.tls]`), and
//!   the token check servers apply ([`BearerAuth`]).
//! - [`client`]: lazily connected channels and a pool of them, clients with the protocol's message limits, and
//!   requests carrying the request id, the token and the deadline.
//! - [`server`]: what every server has: TLS, health and reflection services, graceful shutdown.
//! - [`addr`]: `host:port` checked and bound.
//! - [`failover`]: calling one of several equivalent endpoints (replicas, workers, coordinators): per-try
//!   times, hedging, passes and which failures are retried, written once.
//! - [`metrics`]: the process's Prometheus registry and its `GET /metrics` endpoint.

pub mod addr;
pub mod client;
pub mod error;
pub mod failover;
pub mod metrics;
pub mod security;
pub mod server;

pub use addr::check_addr;
pub use client::Channels;
pub use error::RpcError;
pub use security::BearerAuth;
pub use security::{Security, TlsSettings};
