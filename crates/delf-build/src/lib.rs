//! Index builds of delf-rs, as library code that the CLI, the evaluation toolkit and (for distributed builds) the
//! cluster call alike:
//!
//! - [`extraction`]: one worker of an extraction job run with the network (the job itself, its plan and exactly-once
//!   commits, are `delf-features`').
//! - [`source`]: the images of a local folder or list, or an object-store list, as an extraction job's list.
//! - [`from_features`]: an index from the Parquet feature shards of a completed extraction job, in streaming
//!   passes (PCA fitted on a sample when the job holds raw descriptors, codebooks trained on a sample, every row
//!   group encoded into the shards, the manifest last).
//! - [`options`]: what a build is asked for ([`BuildOptions`]) and its defaults.
//! - [`progress`]: how a build reports its stages to whoever draws progress.
//! - [`error`]: why a build failed ([`BuildError`]).
//!
//! The network is `delf-model`'s; the caller builds it from its configuration and hands it in.

pub mod error;
pub mod extraction;
pub mod from_features;
pub mod options;
pub mod progress;
pub mod source;

pub use error::BuildError;
pub use extraction::{ExtractionJob, JobSettings};
pub use from_features::{Built, MakeReducer, build_from_features};
pub use options::BuildOptions;
pub use progress::{Progress, Silent};
pub use source::source_list;
