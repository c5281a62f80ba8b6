//! Decoding of user-supplied images into RGB8, safely.
//!
//! Every image that enters delf-rs (indexing, queries, training) goes through [`decode_bytes`] or
//! [`decode_file`]. The rules, in one place:
//!
//! - The header is read first and the declared size is checked against [`DecodeLimits`] before any pixel
//!   buffer is allocated, so a decompression bomb (a 100000x100000 header) costs nothing.
//! - EXIF orientation is applied, so pixel coordinates are those of the image as a person sees it.
//! - Grayscale, 16-bit, alpha and CMYK inputs are converted to 8-bit RGB (alpha is dropped, 16-bit values are
//!   scaled to 8 bits).
//! - Corrupt or truncated files, unknown formats and zero-sized images are typed [`ImageError`]s.

//!
//! Transforms ([`geometry`], [`warp`], [`filters`]) turn a photo into another view of it: rotations and
//! perspective changes with a mask of the filled canvas, blur, JPEG re-compression, tone and colour changes,
//! noise and occluders. Query-time rotations and the robustness benchmark both use them.

mod decode;
mod error;
pub mod filters;
pub mod geometry;
mod limits;
pub mod warp;

pub use decode::{DecodedImage, decode_bytes, decode_file};
pub use error::ImageError;
pub use geometry::Projective;
pub use image::RgbImage;
pub use limits::DecodeLimits;
pub use warp::{Fill, Warped};
