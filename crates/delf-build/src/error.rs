//! Why an index build failed.

use std::path::PathBuf;

/// Why an index build failed: the input (job, list, options), storage, the model or the index.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The build's options or input cannot give an index (no shards, too few descriptors, an incomplete job).
    #[error("{0}")]
    Input(String),
    /// A step of a distributed build came before the step it needs (no plan yet, shards not committed yet); the
    /// same call succeeds once that step is done.
    #[error("{0}")]
    NotReady(String),
    /// The extraction job's objects could not be read or do not hold what they promise.
    #[error(transparent)]
    Features(#[from] delf_features::StoreError),
    /// Storage failed (a bad location, a missing object, the store's own failure).
    #[error(transparent)]
    Storage(#[from] delf_storage::StorageError),
    /// The PCA or the extractor failed.
    #[error(transparent)]
    Model(#[from] delf_model::ModelError),
    /// The codebooks or the shards could not be built or written.
    #[error(transparent)]
    Index(#[from] delf_index::IndexError),
    /// The manifest or the image source could not be read or written.
    #[error(transparent)]
    Search(#[from] delf_search::SearchError),
    /// Making the extractor that applies the PCA failed (the caller's model configuration).
    #[error("cannot make the extractor that applies the PCA: {0}")]
    Reducer(Box<dyn std::error::Error + Send + Sync>),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// A local I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| BuildError::Io { path, source }
    }
}
