//! Feature storage of delf-rs: where batch extraction writes and index builds read.
//!
//! - [`image_list`]: the image lists a batch job extracts (text, CSV or Parquet).
//! - [`plan`]: the list cut into fixed work units, and which units a worker takes.
//! - [`schema`]: the versioned Arrow schema of feature shards and error tables.
//! - [`shard_file`]: streaming Parquet writer and reader for one shard.
//! - [`job`]: the job layout in the output prefix, commit records and the manifest: exactly-once commits.
//! - [`worker`]: the backpressured pipeline from image URIs to committed shards.
//!
//! The layout of an output prefix, the schema and the commit protocol are specified in `docs/features.md`.

pub mod error;
pub mod image_list;
pub mod job;
pub mod plan;
pub mod schema;
pub mod shard_file;
pub mod worker;

pub use error::StoreError;
pub use image_list::{ImageList, ListEntry};
pub use job::{CommitRecord, FeatureStore, JobManifest, JobSpec};
pub use plan::{Assignment, WorkPlan};
pub use schema::{ErrorRow, FailureKind, FeatureRow};
pub use shard_file::{FeatureFileReader, ShardOptions, ShardWriter};
pub use worker::{
    BatchExtractor, DEFAULT_FETCH_CONCURRENCY, DEFAULT_LEASE_S, Worker, WorkerOptions, WorkerSummary, attempt_id,
    default_worker_id,
};
