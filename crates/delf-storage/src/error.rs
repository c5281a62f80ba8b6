//! The error of storage operations: every failure names the object it concerns.

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A location could not be understood (bad URI, unknown scheme, missing bucket).
    #[error("bad location {uri:?}: {reason}")]
    BadLocation {
        /// The location as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store refused or failed an operation.
    #[error("object store error on {uri}")]
    ObjectStore {
        /// The object concerned.
        uri: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An object that must exist does not.
    #[error("{uri} does not exist")]
    NotFound {
        /// The missing object.
        uri: String,
    },
    /// A local file operation failed (writing a fetched object into a cache folder).
    #[error("{path}: {source}")]
    Io {
        /// The local file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// The error of an operation on `uri` that the store failed: a missing object becomes [`Self::NotFound`].
    pub fn store(uri: impl Into<String>, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound { uri: uri.into() },
            source => StorageError::ObjectStore { uri: uri.into(), source },
        }
    }
}
