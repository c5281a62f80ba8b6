//! What can go wrong while training, as typed errors that name the file, line or image concerned.

/// Errors of `delf train`.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The label file cannot be used as it is.
    #[error("bad label file {uri} (line {line}): {reason}")]
    Labels {
        /// The label file.
        uri: String,
        /// One-based line; 0 for the whole file.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Images the label file names do not exist.
    #[error("{count} image(s) named by {uri} do not exist, e.g. {examples:?}")]
    MissingImages {
        /// The label file.
        uri: String,
        /// How many are missing.
        count: usize,
        /// The first few missing locations.
        examples: Vec<String>,
    },
    /// An image could not be read or decoded during training.
    #[error("image {uri}: {reason}")]
    Image {
        /// The image.
        uri: String,
        /// What failed.
        reason: String,
    },
    /// An invalid training setting.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// A checkpoint cannot be resumed from.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Object storage failed.
    #[error(transparent)]
    Store(#[from] delf_storage::StorageError),
    /// The network failed to load or run.
    #[error(transparent)]
    Model(#[from] delf_model::ModelError),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
