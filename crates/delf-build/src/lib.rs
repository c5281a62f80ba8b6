//! Index builds of delf-rs, as library code that the CLI, the evaluation toolkit and (for distributed builds) the
//! cluster call alike:
//!
//! - [`extraction`]: one worker of an extraction job run with the network (the job itself, its plan and exactly-once
//!   commits, are `delf-features`').
//! - [`source`]: the images of a local folder or list, or an object-store list, as an extraction job's list.
//! - [`from_features`]: an index from the Parquet feature shards of a completed extraction job, in one process
//!   and streaming passes (the training step, then each shard from its own units, the manifest last).
//! - [`distributed`]: the same build as parallel jobs straight to object storage: train once, encode shards in
//!   parallel workers (each committed exactly once, resumable), finalize.
//! - [`assignment`]: which shard each image goes to (whole extraction units per shard) and its number there.
//! - [`vectors_job`]: a complete extraction job written from descriptors at hand (benchmarks, tests).
//! - `train`, `encode`, `job_rows` (private): the steps both builds share, and the job's rows as they read them.
//! - [`options`]: what a build is asked for ([`BuildOptions`]) and its defaults.
//! - [`progress`]: how a build reports its stages to whoever draws progress.
//! - [`error`]: why a build failed ([`BuildError`]).
//!
//! The network is `delf-model`'s; the caller builds it from its configuration and hands it in.

pub mod assignment;
pub mod distributed;
mod encode;
pub mod error;
pub mod extraction;
pub mod from_features;
mod job_rows;
pub mod options;
pub mod progress;
pub mod source;
mod train;
pub mod vectors_job;

pub use assignment::{UnitAssignment, UnitPlace};
pub use distributed::{BuildPlan, EncodeSummary, EncodeWorker, ShardCommit};
pub use error::BuildError;
pub use extraction::{ExtractionJob, JobSettings};
pub use from_features::{Built, build_from_features};
pub use options::BuildOptions;
pub use progress::{Progress, Silent};
pub use source::source_list;
pub use train::MakeReducer;
