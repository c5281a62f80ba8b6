//! Which feature-map cells may become keypoints: those whose core sees the scene. Summed-area tables of the input
//! image answer, for any square, how much of it is inside the image and covered (not the fill of a rotated view)
//! and how much its grey levels vary.

use delf_core::Keypoint;
use delf_image::RgbImage;

/// One candidate cell before the global top-N.
pub(crate) struct Candidate {
    pub keypoint: Keypoint,
    pub descriptor: Vec<f32>,
}

/// Summed-area tables of one input image.
pub(crate) struct CoreStats {
    width: usize,
    height: usize,
    grey: Vec<f64>,
    grey_sq: Vec<f64>,
    covered: Vec<f64>,
}

impl CoreStats {
    /// Tables of `rgb`, with `coverage` (row-major, one flag per pixel; `None` = all covered).
    pub(crate) fn new(rgb: &RgbImage, coverage: Option<&[bool]>) -> Self {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let n = (w + 1) * (h + 1);
        let (mut grey, mut grey_sq, mut covered) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for y in 0..h {
            let (mut row_g, mut row_q, mut row_c) = (0.0, 0.0, 0.0);
            for x in 0..w {
                let p = rgb.get_pixel(x as u32, y as u32).0;
                let g = 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
                let c = coverage.is_none_or(|cov| cov[y * w + x]);
                row_g += g;
                row_q += g * g;
                row_c += if c { 1.0 } else { 0.0 };
                let at = (y + 1) * (w + 1) + x + 1;
                let above = y * (w + 1) + x + 1;
                grey[at] = grey[above] + row_g;
                grey_sq[at] = grey_sq[above] + row_q;
                covered[at] = covered[above] + row_c;
            }
        }
        Self { width: w, height: h, grey, grey_sq, covered }
    }

    fn sum(&self, table: &[f64], x0: usize, y0: usize, x1: usize, y1: usize) -> f64 {
        let s = self.width + 1;
        table[y1 * s + x1] - table[y0 * s + x1] - table[y1 * s + x0] + table[y0 * s + x0]
    }

    /// Whether the square of half-side `r` pixels centred at `(cx, cy)` (image coordinates, corner origin) is at
    /// least `min_coverage` inside the image and covered, and its grey levels have a standard deviation of at
    /// least `min_std`.
    pub(crate) fn keep(&self, cx: f64, cy: f64, r: f64, min_coverage: f64, min_std: f64) -> bool {
        let clip = |v: f64, n: usize| v.round().clamp(0.0, n as f64) as usize;
        let (x0, x1) = (clip(cx - r, self.width), clip(cx + r, self.width));
        let (y0, y1) = (clip(cy - r, self.height), clip(cy + r, self.height));
        if x1 <= x0 || y1 <= y0 {
            return false;
        }
        let full = (2.0 * r).round().max(1.0).powi(2);
        if self.sum(&self.covered, x0, y0, x1, y1) < min_coverage * full {
            return false;
        }
        let n = ((x1 - x0) * (y1 - y0)) as f64;
        let mean = self.sum(&self.grey, x0, y0, x1, y1) / n;
        let var = self.sum(&self.grey_sq, x0, y0, x1, y1) / n - mean * mean;
        var.max(0.0).sqrt() >= min_std
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_uncovered_and_border_squares_are_refused() {
        // Left half flat grey, right half a checkerboard.
        let img = RgbImage::from_fn(64, 32, |x, y| {
            if x < 32 {
                image::Rgb([128; 3])
            } else if (x / 2 + y / 2) % 2 == 0 {
                image::Rgb([250; 3])
            } else {
                image::Rgb([10; 3])
            }
        });
        let stats = CoreStats::new(&img, None);
        assert!(stats.keep(48.0, 16.0, 8.0, 0.9, 4.0));
        assert!(!stats.keep(16.0, 16.0, 8.0, 0.9, 4.0), "flat");
        assert!(!stats.keep(60.0, 16.0, 8.0, 0.9, 4.0), "a quarter outside the image");
        let mut coverage = vec![true; 64 * 32];
        for y in 0..32 {
            for x in 40..64 {
                coverage[y * 64 + x] = false;
            }
        }
        let masked = CoreStats::new(&img, Some(&coverage));
        assert!(!masked.keep(48.0, 16.0, 8.0, 0.9, 4.0), "fill");
        assert!(masked.keep(16.0, 16.0, 8.0, 0.9, 0.0), "flat but allowed");
    }
}
