//! The one error type of the feature store: every failure names the object it concerns.

use delf_storage::StorageError;

/// Why a feature-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Storage failed: a bad location, a missing object, or the object store's own error.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An image list could not be parsed.
    #[error("bad image list {uri} (line {line}): {reason}")]
    BadList {
        /// The list.
        uri: String,
        /// One-based line (or row) number; 0 for the whole list.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A Parquet file is corrupt, truncated or not a Parquet file.
    #[error("corrupt or truncated Parquet file {uri}")]
    Parquet {
        /// The file.
        uri: String,
        /// The decoder's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow could not build a batch (a bug, or a value no column can hold).
    #[error("cannot build a record batch for {uri}")]
    Arrow {
        /// The file being written or read.
        uri: String,
        /// Arrow's error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A feature file is readable but does not hold what its header promises (schema version, dimension,
    /// fingerprint, column types, shapes).
    #[error("{uri} does not hold valid feature rows: {reason}")]
    Schema {
        /// The file.
        uri: String,
        /// What does not fit.
        reason: String,
    },
    /// A JSON object of the job (job spec, commit record, manifest) is malformed.
    #[error("malformed job object {uri}: {reason}")]
    BadJobObject {
        /// The object.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// The output prefix holds a different job than the one requested (another list, model, PCA or unit size).
    #[error(
        "{prefix} holds a job with {field} {existing:?}, this run has {requested:?}: resume with the same settings \
         or write to a new prefix"
    )]
    JobMismatch {
        /// The output prefix.
        prefix: String,
        /// The setting that differs.
        field: &'static str,
        /// The job's value.
        existing: String,
        /// This run's value.
        requested: String,
    },
    /// A work assignment that cannot be satisfied.
    #[error("bad work assignment: {0}")]
    BadAssignment(String),
    /// The extractor failed as a whole (not one image): the unit is abandoned uncommitted.
    #[error("extractor failed: {0}")]
    Extractor(String),
}

impl StoreError {
    /// Whether an object that must exist does not.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::Storage(StorageError::NotFound { .. }))
    }
}
