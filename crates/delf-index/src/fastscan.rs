//! 4-bit fast-scan PQ (FAISS's `PQ<m>x4fs`): 16 centroids per sub-vector, two codes per byte, laid out so that one
//! AVX2 `pshufb` looks up 32 codes in a 16-entry table held in a register.
//!
//! Layout: blocks of [`BLOCK`] = 32 vectors. Inside a block, sub-vector `j` takes 16 bytes; byte `i` holds the
//! code of vector `i` in its low nibble and of vector `i + 16` in its high nibble. An odd `m` is padded with one
//! sub-vector whose codes and table are zero. Two consecutive sub-vectors are 32 contiguous bytes, matching the two
//! 128-bit lanes of a 256-bit register. A list's last block with `t <= 16` vectors is stored short: sub-vector `j`
//! takes `t` bytes (low nibbles only), so a list wastes no padding for its last 16 codes; the kernel copies that
//! block into a full one before scanning it. Codes are only ever appended, as lists grow.
//!
//! Search quantizes each float lookup table to `u8` ([`quantize_lut`]: per sub-vector minimum subtracted, one scale
//! for all) and sums `u16` approximations in the kernel. The approximation only prunes: a code is evaluated with the
//! float table ([`exact_distance`]) when its approximate distance is within the rounding bound of the current
//! threshold ([`QuantizedLut::limit`]), so results equal a float scan of the same codes. The scalar and AVX2
//! kernels add integers and are bit-identical.

use crate::scan::ScanKernel;

/// Vectors per code block.
pub const BLOCK: usize = 32;

/// Centroids per sub-vector.
pub const KSUB: usize = 16;

/// Largest `m`: the `u16` sum of `m` table entries of at most 255 must not overflow.
pub const MAX_M: usize = 256;

/// Sub-vectors rounded up to an even count (the kernel takes them in pairs).
pub fn padded(m: usize) -> usize {
    m + (m & 1)
}

/// Bytes of one full block.
fn block_bytes(m: usize) -> usize {
    KSUB * padded(m)
}

/// Bytes a blocked buffer of `n` codes of `m` sub-vectors occupies.
pub fn blocked_len(n: usize, m: usize) -> usize {
    let tail = match n % BLOCK {
        0 => 0,
        t if t <= 16 => t * padded(m),
        _ => block_bytes(m),
    };
    n / BLOCK * block_bytes(m) + tail
}

/// Where vector `pos` of a list of `n` sits: sub-vector `j`'s byte is `start + j * stride`, in the high nibble when
/// `high`.
#[inline]
fn locate(pos: usize, n: usize, m: usize) -> (usize, usize, bool) {
    let (b, lane) = (pos / BLOCK, pos % BLOCK);
    let tail = n - b * BLOCK;
    if tail <= 16 {
        (b * block_bytes(m) + lane, tail, false)
    } else {
        (b * block_bytes(m) + lane % 16, KSUB, lane >= 16)
    }
}

/// Appends `code` (one value below 16 per sub-vector) as vector number `pos` (the count so far) of a blocked
/// buffer: the short last block grows by one byte per sub-vector, and from its 17th vector on is a full block.
pub fn put_code(blocked: &mut Vec<u8>, pos: usize, code: &[u8]) {
    let (m, mp) = (code.len(), padded(code.len()));
    let (b, lane) = (pos / BLOCK, pos % BLOCK);
    let start = b * block_bytes(m);
    debug_assert_eq!(blocked.len(), blocked_len(pos, m), "4-bit codes are appended in order");
    debug_assert!(code.iter().all(|&c| usize::from(c) < KSUB), "4-bit code");
    if lane < 16 {
        // Short block of `lane` vectors, stride `lane`, becomes one of `lane + 1`, in place: rows move right, so
        // the last row goes first and no row is overwritten before it has moved.
        blocked.resize(start + (lane + 1) * mp, 0);
        for j in (0..mp).rev() {
            let row = start + j * (lane + 1);
            blocked.copy_within(start + j * lane..start + j * lane + lane, row);
            blocked[row + lane] = code.get(j).copied().unwrap_or(0);
        }
    } else {
        // Sixteen vectors in the short layout are the low nibbles of a full block.
        blocked.resize(start + block_bytes(m), 0);
        for (j, &c) in code.iter().enumerate() {
            blocked[start + j * KSUB + lane - 16] |= c << 4;
        }
    }
}

/// Reads vector number `pos` of a blocked buffer of `n` codes into `code` (`m` values).
pub fn get_code(blocked: &[u8], m: usize, pos: usize, n: usize, code: &mut [u8]) {
    let (start, stride, high) = locate(pos, n, m);
    for (j, c) in code.iter_mut().enumerate().take(m) {
        let byte = blocked[start + j * stride];
        *c = if high { byte >> 4 } else { byte & 0x0F };
    }
}

/// Float distance of vector `pos` of a list of `n`: `sum_j lut[j][code_j]` in order of `j`, then `+ base` (the
/// arithmetic of the 8-bit scan, so both code sizes rank the same way).
pub fn exact_distance(lut: &[f32], base: f32, blocked: &[u8], m: usize, pos: usize, n: usize) -> f32 {
    let (start, stride, high) = locate(pos, n, m);
    let mut acc = 0.0f32;
    for j in 0..m {
        let byte = blocked[start + j * stride];
        let c = if high { byte >> 4 } else { byte & 0x0F };
        acc += lut[j * KSUB + usize::from(c)];
    }
    acc + base
}

/// A float lookup table quantized to bytes: `table[j][k] = round((lut[j][k] - min_j) * scale)`.
#[derive(Debug, Clone)]
pub struct QuantizedLut {
    /// `padded(m) x 16` bytes (the padding sub-vector is zero).
    pub table: Vec<u8>,
    /// Units per unit of squared distance.
    pub scale: f32,
    /// `sum_j min_j + base`: what the quantized sum leaves out.
    pub offset: f32,
    /// Sub-vectors (the rounding bound is `m / 2` units).
    pub m: usize,
    mins: Vec<f32>,
}

impl QuantizedLut {
    /// An empty table for `m` sub-vectors, filled by [`quantize_lut`].
    pub fn new(m: usize) -> Self {
        Self { table: vec![0; padded(m) * KSUB], scale: 1.0, offset: 0.0, m, mins: vec![0.0; m] }
    }

    /// Largest quantized sum whose float distance can still be `<= threshold`: the rounding of `m` entries moves
    /// a sum by at most `m / 2` units, and one more unit covers float rounding. Infinite when `threshold` is.
    pub fn limit(&self, threshold: f32) -> f32 {
        (threshold - self.offset) * self.scale + self.m as f32 * 0.5 + 1.0
    }
}

/// Quantizes `lut` (`m x 16` floats) for a list whose distances are `sum + base`.
pub fn quantize_lut(lut: &[f32], base: f32, out: &mut QuantizedLut) {
    let m = out.m;
    let mut span = 0.0f32;
    for (row, min) in lut.chunks_exact(KSUB).zip(out.mins.iter_mut()) {
        let (mut lo, mut hi) = (row[0], row[0]);
        for &v in &row[1..] {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        *min = lo;
        span = span.max(hi - lo);
    }
    let scale = if span > 0.0 && span.is_finite() { 255.0 / span } else { 1.0 };
    #[cfg(target_arch = "x86_64")]
    let done = std::arch::is_x86_feature_detected!("avx2") && {
        avx2::quantize_rows(lut, &out.mins, scale, &mut out.table);
        true
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        for ((row, out), &min) in lut.chunks_exact(KSUB).zip(out.table.chunks_exact_mut(KSUB)).zip(&out.mins) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o = quantize_entry(v, min, scale);
            }
        }
    }
    out.table[m * KSUB..].fill(0);
    out.scale = scale;
    out.offset = out.mins.iter().sum::<f32>() + base;
}

/// One table entry: `(v - min) * scale` rounded half up (the value is not negative), at most 255. The AVX2 rows
/// compute the same arithmetic.
#[inline]
fn quantize_entry(v: f32, min: f32, scale: f32) -> u8 {
    ((v - min) * scale + 0.5).min(255.0) as u8
}

impl ScanKernel {
    /// Quantized sums of the `out.len()` vectors of a 4-bit blocked buffer (a short last block is copied into a full
    /// one first).
    pub fn scan4(&self, qlut: &QuantizedLut, codes: &[u8], out: &mut [u16]) {
        let (m, n) = (qlut.m, out.len());
        assert!(m <= MAX_M, "m {m} above {MAX_M}");
        assert!(codes.len() >= blocked_len(n, m) && qlut.table.len() >= padded(m) * KSUB, "scan4 buffers");
        let tail = n % BLOCK;
        if (1..=16).contains(&tail) {
            let full = n - tail;
            let start = full / BLOCK * block_bytes(m);
            // On the stack: this runs once per scanned list, and MAX_M bounds the block at 4 KiB.
            let mut buffer = [0u8; KSUB * MAX_M];
            let block = &mut buffer[..block_bytes(m)];
            for j in 0..padded(m) {
                block[j * KSUB..][..tail].copy_from_slice(&codes[start + j * tail..][..tail]);
            }
            let (head, last) = out.split_at_mut(full);
            self.scan4_blocks(qlut, &codes[..start], head);
            self.scan4_blocks(qlut, block, last);
        } else {
            self.scan4_blocks(qlut, codes, out);
        }
    }

    /// [`ScanKernel::scan4`] over full blocks (the last one may hold fewer than 32 vectors in the full layout).
    fn scan4_blocks(&self, qlut: &QuantizedLut, codes: &[u8], out: &mut [u16]) {
        let m = qlut.m;
        match self {
            Self::Scalar => scan4_scalar(&qlut.table, codes, m, out),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 if std::arch::is_x86_feature_detected!("avx2") => avx2::scan4(&qlut.table, codes, m, out),
            #[allow(unreachable_patterns)]
            _ => scan4_scalar(&qlut.table, codes, m, out),
        }
    }
}

fn scan4_scalar(table: &[u8], codes: &[u8], m: usize, out: &mut [u16]) {
    let block_bytes = KSUB * padded(m);
    for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
        let block = &codes[b * block_bytes..][..block_bytes];
        for (lane, o) in chunk.iter_mut().enumerate() {
            let mut acc = 0u16;
            for j in 0..m {
                let byte = block[j * KSUB + lane % 16];
                let c = if lane < 16 { byte & 0x0F } else { byte >> 4 };
                acc += u16::from(table[j * KSUB + usize::from(c)]);
            }
            *o = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, KSUB, padded};

    /// [`super::quantize_entry`] for every entry of the `mins.len()` rows of 16, eight at a time.
    pub(super) fn quantize_rows(lut: &[f32], mins: &[f32], scale: f32, table: &mut [u8]) {
        assert!(lut.len() >= mins.len() * KSUB && table.len() >= mins.len() * KSUB, "quantize buffers");
        // SAFETY: the caller checked AVX2 support; the sizes are checked above.
        unsafe { quantize_avx2(lut, mins, scale, table) }
    }

    #[target_feature(enable = "avx2")]
    fn quantize_avx2(lut: &[f32], mins: &[f32], scale: f32, table: &mut [u8]) {
        let (vscale, half, top) = (_mm256_set1_ps(scale), _mm256_set1_ps(0.5), _mm256_set1_ps(255.0));
        for (j, &min) in mins.iter().enumerate() {
            let vmin = _mm256_set1_ps(min);
            // SAFETY: row j holds 16 floats and 16 table bytes (sizes checked by the caller).
            unsafe {
                let row = lut.as_ptr().add(j * KSUB);
                let q = |at: usize| {
                    let v = _mm256_loadu_ps(row.add(at));
                    let x = _mm256_min_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, vmin), vscale), half), top);
                    _mm256_cvttps_epi32(x)
                };
                let (a, b) = (q(0), q(8));
                // i32 -> u16 (lane-interleaved), put the halves in order, then u16 -> u8.
                let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
                let bytes = _mm256_packus_epi16(w, w);
                let out = table.as_mut_ptr().add(j * KSUB);
                _mm_storel_epi64(out as *mut __m128i, _mm256_castsi256_si128(bytes));
                _mm_storel_epi64(out.add(8) as *mut __m128i, _mm256_extracti128_si256::<1>(bytes));
            }
        }
    }

    pub(super) fn scan4(table: &[u8], codes: &[u8], m: usize, out: &mut [u16]) {
        // SAFETY: the caller checked AVX2 support and the buffer sizes (ScanKernel::scan4).
        unsafe { scan4_avx2(table, codes, m, out) }
    }

    #[target_feature(enable = "avx2")]
    fn scan4_avx2(table: &[u8], codes: &[u8], m: usize, out: &mut [u16]) {
        let pairs = padded(m) / 2;
        let block_bytes = KSUB * padded(m);
        let low4 = _mm256_set1_epi8(0x0F);
        let low8 = _mm256_set1_epi16(0x00FF);
        let mut words = [[0u16; 16]; 4];
        for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
            let block = &codes[b * block_bytes..][..block_bytes];
            // Accumulators of u16 words: vectors 0-15 (low nibbles) and 16-31 (high nibbles), each split into
            // even and odd bytes; the low 128-bit lane sums even sub-vectors, the high lane odd ones.
            let (mut lo_even, mut lo_odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            let (mut hi_even, mut hi_odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for p in 0..pairs {
                // SAFETY: block and table hold 32 bytes per pair of sub-vectors (sizes checked by the caller).
                let (lut, c) = unsafe {
                    (
                        _mm256_loadu_si256(table.as_ptr().add(p * 32) as *const __m256i),
                        _mm256_loadu_si256(block.as_ptr().add(p * 32) as *const __m256i),
                    )
                };
                let lo = _mm256_and_si256(c, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(c), low4);
                let vlo = _mm256_shuffle_epi8(lut, lo);
                let vhi = _mm256_shuffle_epi8(lut, hi);
                lo_even = _mm256_add_epi16(lo_even, _mm256_and_si256(vlo, low8));
                lo_odd = _mm256_add_epi16(lo_odd, _mm256_srli_epi16::<8>(vlo));
                hi_even = _mm256_add_epi16(hi_even, _mm256_and_si256(vhi, low8));
                hi_odd = _mm256_add_epi16(hi_odd, _mm256_srli_epi16::<8>(vhi));
            }
            for (w, acc) in words.iter_mut().zip([lo_even, lo_odd, hi_even, hi_odd]) {
                // SAFETY: w holds 16 u16 values (32 bytes).
                unsafe { _mm256_storeu_si256(w.as_mut_ptr() as *mut __m256i, acc) };
            }
            let mut sums = [0u16; BLOCK];
            for i in 0..8 {
                sums[2 * i] = words[0][i] + words[0][i + 8];
                sums[2 * i + 1] = words[1][i] + words[1][i + 8];
                sums[16 + 2 * i] = words[2][i] + words[2][i + 8];
                sums[16 + 2 * i + 1] = words[3][i] + words[3][i + 8];
            }
            chunk.copy_from_slice(&sums[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use delf_core::rng::SplitMix64;

    fn random_codes(g: &mut SplitMix64, n: usize, m: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut blocked = Vec::new();
        let raw: Vec<Vec<u8>> = (0..n).map(|_| (0..m).map(|_| g.below(16) as u8).collect()).collect();
        for (i, r) in raw.iter().enumerate() {
            put_code(&mut blocked, i, r);
        }
        (blocked, raw)
    }

    #[test]
    fn kernels_agree_bit_for_bit_and_codes_round_trip() {
        let mut g = SplitMix64(4);
        let cases =
            [(1usize, 20usize), (16, 20), (17, 20), (31, 5), (32, 20), (33, 10), (100, 40), (1000, 20), (64, 255)];
        for &(n, m) in &cases {
            let (blocked, raw) = random_codes(&mut g, n, m);
            assert_eq!(blocked.len(), blocked_len(n, m));
            let mut back = vec![0u8; m];
            for (i, want) in raw.iter().enumerate() {
                get_code(&blocked, m, i, n, &mut back);
                assert_eq!(&back, want);
            }
            let lut: Vec<f32> = (0..m * KSUB).map(|_| g.uniform() as f32).collect();
            let mut q = QuantizedLut::new(m);
            quantize_lut(&lut, 0.5, &mut q);
            let (mut a, mut b) = (vec![0u16; n], vec![0u16; n]);
            ScanKernel::Scalar.scan4(&q, &blocked, &mut a);
            ScanKernel::detect().scan4(&q, &blocked, &mut b);
            assert_eq!(a, b, "n {n} m {m}");
            for (i, r) in raw.iter().enumerate() {
                let want: u32 = r.iter().enumerate().map(|(j, &c)| u32::from(q.table[j * KSUB + c as usize])).sum();
                assert_eq!(u32::from(a[i]), want);
            }
        }
    }

    #[test]
    fn avx2_and_scalar_table_quantization_agree() {
        let mut g = SplitMix64(12);
        for m in [1usize, 5, 20, 40] {
            let lut: Vec<f32> = (0..m * KSUB).map(|_| (g.uniform() * 4.0 - 2.0) as f32).collect();
            let mut q = QuantizedLut::new(m);
            quantize_lut(&lut, 0.0, &mut q);
            for (j, row) in lut.chunks_exact(KSUB).enumerate() {
                let min = row.iter().copied().fold(f32::INFINITY, f32::min);
                for (k, &v) in row.iter().enumerate() {
                    assert_eq!(q.table[j * KSUB + k], quantize_entry(v, min, q.scale), "m {m} row {j} entry {k}");
                }
                assert!(row.iter().zip(&q.table[j * KSUB..][..KSUB]).any(|(&v, &t)| v == min && t == 0));
            }
            assert!(q.table.contains(&255));
        }
    }

    #[test]
    fn the_quantized_sum_bounds_the_float_distance() {
        let mut g = SplitMix64(11);
        let (n, m) = (500, 20);
        let (blocked, _) = random_codes(&mut g, n, m);
        let lut: Vec<f32> = (0..m * KSUB).map(|_| (g.uniform() * 3.0 - 1.0) as f32).collect();
        let base = 0.75;
        let mut q = QuantizedLut::new(m);
        quantize_lut(&lut, base, &mut q);
        let mut sums = vec![0u16; n];
        ScanKernel::detect().scan4(&q, &blocked, &mut sums);
        for (i, &s) in sums.iter().enumerate() {
            let d = exact_distance(&lut, base, &blocked, m, i, n);
            // Every vector passes the limit at its own distance, and the approximation is within the bound.
            assert!(f32::from(s) <= q.limit(d), "vector {i}: sum {s}, limit {}", q.limit(d));
            let approx = f32::from(s) / q.scale + q.offset;
            assert!((approx - d).abs() <= (m as f32 * 0.5 + 1.0) / q.scale, "vector {i}");
        }
        assert_eq!(q.limit(f32::INFINITY), f32::INFINITY);
    }
}
