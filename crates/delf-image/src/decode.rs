use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::{DecodeLimits, ImageError};

/// A decoded image in RGB8, oriented as its EXIF tag says.
#[derive(Clone)]
pub struct DecodedImage {
    /// Pixels, row-major, 3 bytes per pixel.
    pub rgb: image::RgbImage,
    /// The container format that was detected.
    pub format: image::ImageFormat,
}

impl std::fmt::Debug for DecodedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedImage")
            .field("width", &self.width())
            .field("height", &self.height())
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl DecodedImage {
    /// Width in pixels (after orientation).
    pub fn width(&self) -> u32 {
        self.rgb.width()
    }

    /// Height in pixels (after orientation).
    pub fn height(&self) -> u32 {
        self.rgb.height()
    }
}

/// Reads and decodes an image file; see the crate documentation for the rules.
pub fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<DecodedImage, ImageError> {
    let io_err = |source| ImageError::Io { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).map_err(io_err)?.len();
    if len > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge { bytes: len, limit: limits.max_file_bytes });
    }
    let bytes = std::fs::read(path).map_err(io_err)?;
    decode_bytes(&bytes, limits)
}

/// Decodes an encoded image held in memory; see the crate documentation for the rules.
pub fn decode_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, ImageError> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge { bytes: bytes.len() as u64, limit: limits.max_file_bytes });
    }
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let format = reader.format().ok_or(ImageError::UnsupportedFormat)?;
    if format == image::ImageFormat::Jpeg && !has_jpeg_end_marker(bytes) {
        // The JPEG decoder fills a truncated scan with grey instead of failing; we refuse instead.
        return Err(ImageError::Corrupt("truncated JPEG: no end-of-image marker".into()));
    }
    // Only the header is parsed here; our own size check runs before any pixel buffer exists.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(ImageError::from_image)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits)?;
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_alloc());
    decoder.set_limits(decoder_limits).map_err(ImageError::from_image)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(ImageError::from_image)?;
    img.apply_orientation(orientation);
    let rgb = match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    };
    Ok(DecodedImage { rgb, format })
}

fn check_size(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(ImageError::TooLarge { width, height, limit: format!("{} px per side", limits.max_side) });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooLarge { width, height, limit: format!("{} pixels", limits.max_pixels) });
    }
    Ok(())
}

/// A complete JPEG ends with EOI (`FF D9`), possibly followed by a little padding. Inside entropy-coded data a
/// `FF` byte is always stuffed (`FF 00`), so `FF D9` near the end means the scan was not cut off.
fn has_jpeg_end_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}
