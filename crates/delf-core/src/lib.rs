//! Data types shared by every stage of delf-rs, with no dependency on libtorch, so that verification, the index
//! and storage can use them without linking the network.
//!
//! # Coordinates (the one place they are defined)
//!
//! Keypoint locations are `(x, y)` in pixels of the decoded image *after* EXIF orientation, with the origin at the
//! top-left **corner** of the top-left pixel, `x` to the right and `y` down. The centre of pixel `(col, row)` is
//! therefore `(col + 0.5, row + 0.5)`. The DELF reference stores `(y, x)`; we store `(x, y)` everywhere (features,
//! Parquet, index, RPC) and convert only when reading reference data.
//!
//! `scale` is the factor by which the keypoint's feature is *larger* in the original image than in the pyramid
//! level it came from: `1 / s` for pyramid scale `s`, as in the reference.

pub mod durable;
mod features;
mod fingerprint;
pub mod rng;

pub use features::{FeatureError, FeatureSet, Keypoint};
pub use fingerprint::Fingerprint;
