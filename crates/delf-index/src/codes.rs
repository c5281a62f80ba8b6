//! Where an inverted list keeps its codes: 8-bit codes in blocks of 8 vectors for the gather kernel
//! ([`crate::scan`]), 4-bit codes in fast-scan blocks of 32 ([`crate::fastscan`]). Shards, files and compaction go
//! through this one type, so they do not care which.

use crate::spec::IndexSpec;
use crate::{fastscan, scan};

/// Code layout of an index's inverted lists (the number is `m`, sub-vectors per code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeLayout {
    /// One byte per sub-vector, blocks of [`scan::BLOCK`].
    Bytes(usize),
    /// Half a byte per sub-vector, fast-scan blocks of [`fastscan::BLOCK`].
    Nibbles(usize),
}

impl CodeLayout {
    /// The layout of `spec`'s codes.
    pub fn of(spec: &IndexSpec) -> Self {
        if spec.nbits == 4 { Self::Nibbles(spec.m) } else { Self::Bytes(spec.m) }
    }

    /// Sub-vectors per code (values per unpacked code).
    pub fn m(&self) -> usize {
        match *self {
            Self::Bytes(m) | Self::Nibbles(m) => m,
        }
    }

    /// Bytes that `n` codes occupy.
    pub fn blocked_len(&self, n: usize) -> usize {
        match *self {
            Self::Bytes(m) => scan::blocked_len(n, m),
            Self::Nibbles(m) => fastscan::blocked_len(n, m),
        }
    }

    /// Appends the unpacked `code` (`m` values) as vector `pos`, the number of codes so far.
    pub fn put(&self, blocked: &mut Vec<u8>, pos: usize, code: &[u8]) {
        match self {
            Self::Bytes(_) => scan::put_code(blocked, pos, code),
            Self::Nibbles(_) => fastscan::put_code(blocked, pos, code),
        }
    }

    /// Reads vector `pos` of a buffer of `n` codes into `code` (`m` values).
    pub fn get(&self, blocked: &[u8], pos: usize, n: usize, code: &mut [u8]) {
        match *self {
            Self::Bytes(m) => scan::get_code(blocked, m, pos, code),
            Self::Nibbles(m) => fastscan::get_code(blocked, m, pos, n, code),
        }
    }
}
