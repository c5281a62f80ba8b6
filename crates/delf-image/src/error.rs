use std::path::PathBuf;

/// Why an image could not be decoded. No variant is ever a panic in disguise.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read image {path}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not in any supported image format.
    #[error("unsupported or unrecognised image format")]
    UnsupportedFormat,
    /// The header declares more pixels or a larger side than the limits allow (decompression bomb guard).
    #[error("image of {width}x{height} pixels exceeds the limit ({limit})")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit that was exceeded, in words.
        limit: String,
    },
    /// The file is larger than the byte limit.
    #[error("image file of {bytes} bytes exceeds the limit of {limit} bytes")]
    FileTooLarge {
        /// Size of the input.
        bytes: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The image has no pixels.
    #[error("image has zero size ({width}x{height})")]
    Empty {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The data is damaged or truncated.
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
}

impl ImageError {
    pub(crate) fn from_image(err: image::ImageError) -> Self {
        match err {
            image::ImageError::Unsupported(e) => match e.kind() {
                image::error::UnsupportedErrorKind::Format(_) => ImageError::UnsupportedFormat,
                _ => ImageError::Corrupt(e.to_string()),
            },
            image::ImageError::Limits(e) => ImageError::TooLarge { width: 0, height: 0, limit: e.to_string() },
            other => ImageError::Corrupt(other.to_string()),
        }
    }
}
