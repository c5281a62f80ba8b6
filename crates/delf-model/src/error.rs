use std::path::PathBuf;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A weights file is missing, unreadable, or lacks a tensor the network needs.
    #[error("cannot load weights from {path} (run scripts/setup.sh to install the default weights)")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What libtorch reported.
        #[source]
        source: tch::TchError,
    },
    /// A device was requested that this machine or build does not have.
    #[error("device {0} is not available: {1}")]
    Device(String, String),
    /// A device name could not be parsed.
    #[error("unknown device {0:?} (expected cpu, cuda, cuda:N or auto)")]
    UnknownDevice(String),
    /// The ImageNet class list is missing or malformed.
    #[error("ImageNet class names in {path}: {reason}")]
    Labels {
        /// The class list file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An invalid model or extraction setting.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// An input image could not be decoded.
    #[error(transparent)]
    Image(#[from] delf_image::ImageError),
    /// libtorch failed during computation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
