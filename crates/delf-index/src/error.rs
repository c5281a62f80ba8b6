//! Typed errors of the index. Every bad input (wrong dimensions, foreign fingerprints, damaged files, parameters out
//! of range) maps to one of these; nothing in the crate panics on user data.

use std::path::PathBuf;

/// What went wrong while training, building, loading or searching an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A vector did not have the index's dimensionality.
    #[error("dimension mismatch: the index holds {expected}-d vectors, got {got}-d")]
    DimensionMismatch {
        /// Dimensionality of the index.
        expected: usize,
        /// Dimensionality that was offered.
        got: usize,
    },
    /// A flat buffer's length is not a multiple of the dimensionality.
    #[error("a buffer of {len} floats is not a whole number of {dim}-d vectors")]
    RaggedBuffer {
        /// Length of the buffer.
        len: usize,
        /// Dimensionality expected.
        dim: usize,
    },
    /// Two things that must come from the same model/PCA or codebooks do not.
    #[error("{what} fingerprint mismatch: expected {expected}, found {found}")]
    FingerprintMismatch {
        /// Which fingerprint (codebooks, descriptors).
        what: &'static str,
        /// The fingerprint the index holds.
        expected: String,
        /// The fingerprint offered.
        found: String,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name as users write it.
        name: &'static str,
        /// The offending value.
        value: String,
        /// What would be valid.
        reason: String,
    },
    /// An index description string could not be parsed.
    #[error("cannot parse index description {text:?}: {reason} (expected e.g. \"IVF1024,PQ20x8r\")")]
    BadSpec {
        /// The description given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Training needs more vectors than were given.
    #[error("not enough training vectors: {got} given, at least {needed} needed for {what}")]
    NotEnoughTrainingData {
        /// What was being trained.
        what: String,
        /// Vectors given.
        got: usize,
        /// Vectors needed.
        needed: usize,
    },
    /// An image has more local features than a feature index can address.
    #[error("image {image:?} has {count} features; at most {max} per image can be indexed")]
    TooManyFeatures {
        /// External image id.
        image: String,
        /// Features offered.
        count: usize,
        /// Maximum.
        max: usize,
    },
    /// An image id was added twice.
    #[error("image {0:?} is already in the shard")]
    DuplicateImage(String),
    /// An image id is not in the shard.
    #[error("image {0:?} is not in the shard")]
    UnknownImage(String),
    /// The index holds no vectors to search.
    #[error("the index is empty: add images before searching")]
    EmptyIndex,
    /// A shard file is not in our format or was written by an unsupported version.
    #[error("{path}: not a delf-rs shard file ({reason})")]
    NotAShard {
        /// File path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A shard file is damaged: a checksum, a length or a structural invariant failed.
    #[error("{path}: shard file is corrupt in section {section:?}: {reason}")]
    Corrupt {
        /// File path.
        path: PathBuf,
        /// The section that failed (`header` for the fixed header and section table).
        section: String,
        /// What failed.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl IndexError {
    /// Shorthand for [`IndexError::InvalidParameter`].
    pub fn invalid(name: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self::InvalidParameter { name, value: value.to_string(), reason: reason.into() }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

/// Result alias of the crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
