//! Errors of index folders and retrieval.

use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The index folder has no manifest (not built, or built elsewhere).
    #[error("{0}: no index manifest (manifest.json) here; build one with `delf index build`")]
    MissingManifest(PathBuf),
    /// The manifest cannot be read or is not ours.
    #[error("{path}: invalid index manifest: {reason}")]
    BadManifest {
        /// Manifest path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The query's descriptors come from another model or PCA than the index's.
    #[error(
        "the query was extracted with {query} but the index holds descriptors of {index}: use the model, PCA and \
         extraction settings the index was built with"
    )]
    FingerprintMismatch {
        /// Fingerprint of the index.
        index: String,
        /// Fingerprint of the query.
        query: String,
    },
    /// The query does not hold together (its passes do not add up to its features).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A source of images cannot be listed.
    #[error("{path}: {reason}")]
    BadSource {
        /// The source given.
        path: String,
        /// Why.
        reason: String,
    },
    /// The index itself failed.
    #[error(transparent)]
    Index(#[from] delf_index::IndexError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}
