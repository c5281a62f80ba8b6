//! The asymmetric-distance scan: for a lookup table `lut` (`m x 256`, the distance contribution of every code of
//! every sub-vector) and a list of codes, `base + sum_j lut[j][code_j]` per code.
//!
//! Codes are stored in blocks of [`BLOCK`] vectors, sub-vector major inside a block (`block[j * BLOCK + lane]`), so
//! one 8-byte load gives the codes of sub-vector `j` for eight vectors and AVX2 turns them into one gather. Both
//! kernels add the `m` terms of a vector in the same order, starting from zero, then add `base`, so they return
//! bit-identical distances.

/// Vectors per code block.
pub const BLOCK: usize = 8;

/// Which scan implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKernel {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 gathers (only offered when the CPU has AVX2).
    Avx2,
}

impl ScanKernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Self::Avx2;
        }
        Self::Scalar
    }

    /// Name for logs and benchmark tables.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
        }
    }

    /// Distances of the first `out.len()` vectors of `codes` (blocked layout, `m` sub-vectors; `out.len()` rounded
    /// up to a whole block must fit in `codes`).
    pub fn scan(&self, lut: &[f32], base: f32, codes: &[u8], m: usize, out: &mut [f32]) {
        let blocks = out.len().div_ceil(BLOCK);
        assert!(codes.len() >= blocks * BLOCK * m && lut.len() >= m * 256, "scan buffers too small");
        match self {
            Self::Scalar => scan_scalar(lut, base, codes, m, out),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 if std::arch::is_x86_feature_detected!("avx2") => avx2::scan(lut, base, codes, m, out),
            #[allow(unreachable_patterns)]
            _ => scan_scalar(lut, base, codes, m, out),
        }
    }
}

fn scan_scalar(lut: &[f32], base: f32, codes: &[u8], m: usize, out: &mut [f32]) {
    for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
        let block = &codes[b * BLOCK * m..][..BLOCK * m];
        for (lane, o) in chunk.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for j in 0..m {
                acc += lut[j * 256 + block[j * BLOCK + lane] as usize];
            }
            *o = acc + base;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    pub(super) fn scan(lut: &[f32], base: f32, codes: &[u8], m: usize, out: &mut [f32]) {
        // SAFETY: the caller checked AVX2 support and the buffer sizes (ScanKernel::scan).
        unsafe { scan_avx2(lut, base, codes, m, out) }
    }

    #[target_feature(enable = "avx2")]
    fn scan_avx2(lut: &[f32], base: f32, codes: &[u8], m: usize, out: &mut [f32]) {
        let blocks = out.len().div_ceil(BLOCK);
        let vbase = _mm256_set1_ps(base);
        let mut tmp = [0.0f32; BLOCK];
        for b in 0..blocks {
            let block = &codes[b * BLOCK * m..][..BLOCK * m];
            let mut acc = _mm256_setzero_ps();
            for j in 0..m {
                let lane_codes = &block[j * BLOCK..][..BLOCK];
                let table = &lut[j * 256..][..256];
                // SAFETY: lane_codes holds exactly 8 bytes; every gathered index is a byte value, inside the
                // 256-entry table.
                let vals = unsafe {
                    let c8 = _mm_loadl_epi64(lane_codes.as_ptr() as *const __m128i);
                    _mm256_i32gather_ps::<4>(table.as_ptr(), _mm256_cvtepu8_epi32(c8))
                };
                acc = _mm256_add_ps(acc, vals);
            }
            let d = _mm256_add_ps(acc, vbase);
            let start = b * BLOCK;
            let take = (out.len() - start).min(BLOCK);
            // SAFETY: tmp holds 8 floats.
            unsafe { _mm256_storeu_ps(tmp.as_mut_ptr(), d) };
            out[start..start + take].copy_from_slice(&tmp[..take]);
        }
    }
}

/// Writes `code` (`m` bytes) as vector number `pos` of a blocked code buffer, growing it by a block when needed.
pub fn put_code(blocked: &mut Vec<u8>, pos: usize, code: &[u8]) {
    let m = code.len();
    let (b, lane) = (pos / BLOCK, pos % BLOCK);
    if blocked.len() < (b + 1) * BLOCK * m {
        blocked.resize((b + 1) * BLOCK * m, 0);
    }
    for (j, &c) in code.iter().enumerate() {
        blocked[b * BLOCK * m + j * BLOCK + lane] = c;
    }
}

/// Reads vector number `pos` of a blocked code buffer.
pub fn get_code(blocked: &[u8], m: usize, pos: usize, code: &mut [u8]) {
    let (b, lane) = (pos / BLOCK, pos % BLOCK);
    for (j, c) in code.iter_mut().enumerate().take(m) {
        *c = blocked[b * BLOCK * m + j * BLOCK + lane];
    }
}

/// Bytes a blocked buffer of `n` codes of `m` bytes occupies.
pub fn blocked_len(n: usize, m: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK * m
}

#[cfg(test)]
mod tests {
    use super::*;
    use delf_core::rng::SplitMix64;

    #[test]
    fn kernels_agree_bit_for_bit_on_odd_lengths() {
        let mut g = SplitMix64(9);
        for &(n, m) in &[(1usize, 20usize), (7, 10), (8, 20), (77, 40), (1000, 20)] {
            let lut: Vec<f32> = (0..m * 256).map(|_| g.uniform() as f32).collect();
            let mut codes = Vec::new();
            let mut raw = vec![vec![0u8; m]; n];
            for (i, r) in raw.iter_mut().enumerate() {
                for c in r.iter_mut() {
                    *c = g.below(256) as u8;
                }
                put_code(&mut codes, i, r);
            }
            assert_eq!(codes.len(), blocked_len(n, m));
            let mut back = vec![0u8; m];
            get_code(&codes, m, n - 1, &mut back);
            assert_eq!(back, raw[n - 1]);
            let mut a = vec![0.0; n];
            let mut b = vec![0.0; n];
            ScanKernel::Scalar.scan(&lut, 0.25, &codes, m, &mut a);
            ScanKernel::detect().scan(&lut, 0.25, &codes, m, &mut b);
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            let direct: f32 =
                raw[0].iter().enumerate().map(|(j, &c)| lut[j * 256 + c as usize]).fold(0.0, |s, v| s + v);
            assert_eq!(a[0], direct + 0.25);
        }
    }
}
