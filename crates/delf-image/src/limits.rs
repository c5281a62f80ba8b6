/// Upper bounds applied before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width or height, in pixels.
    pub max_side: u32,
    /// Largest accepted width x height.
    pub max_pixels: u64,
    /// Largest accepted encoded size, in bytes.
    pub max_file_bytes: u64,
}

impl Default for DecodeLimits {
    /// 16384 px per side, 64 megapixels, 64 MiB per file: far above any photo worth indexing, far below what
    /// would exhaust memory (64 MP of RGB8 is 192 MiB).
    fn default() -> Self {
        Self { max_side: 16_384, max_pixels: 64 * 1024 * 1024, max_file_bytes: 64 * 1024 * 1024 }
    }
}

impl DecodeLimits {
    /// Bytes the decoder may allocate for one image (RGBA at 16 bits per channel is the worst case).
    pub(crate) fn max_alloc(&self) -> u64 {
        self.max_pixels.saturating_mul(8)
    }
}
