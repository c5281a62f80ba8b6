//! Training views of a photo: a square crop (position, size, rotation), resized to the network's input, with
//! colour and blur changes; all drawn from a seeded generator, so a (seed, epoch, step, slot) gives the same pixels
//! on every run and a resumed run sees exactly what an uninterrupted one would have.

use delf_core::rng::SplitMix64;
use delf_model::preprocess::Normalization;
use image::RgbImage;
use image::imageops::{self, FilterType};
use serde::{Deserialize, Serialize};

/// How training views are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Smallest crop side, as a fraction of the image's shorter side.
    pub crop_min: f64,
    /// Largest crop side, as a fraction of the image's shorter side.
    pub crop_max: f64,
    /// Keep the crop inside the central square of the image (the paper's centre crop, then random crop).
    pub centred: bool,
    /// Largest rotation either way, degrees.
    pub max_rotation_deg: f64,
    /// Largest relative change of brightness, contrast and saturation (0 = none).
    pub colour: f64,
    /// Probability of a Gaussian blur.
    pub blur_probability: f64,
    /// Largest blur sigma, in output pixels.
    pub blur_sigma_max: f64,
}

impl AugmentConfig {
    /// Stage 1 of the paper: centre crop, resize to 250 x 250, random 224 x 224 crop (a fixed 0.896 of the centre
    /// square at a random position).
    pub fn paper_descriptor() -> Self {
        Self {
            crop_min: 224.0 / 250.0,
            crop_max: 224.0 / 250.0,
            centred: true,
            max_rotation_deg: 0.0,
            colour: 0.0,
            blur_probability: 0.0,
            blur_sigma_max: 0.0,
        }
    }

    /// Stage 2 of the paper: centre crop to 900 x 900, random 720 x 720 crop (0.8 of the centre square); the random
    /// downscale is the trainer's per-batch input size.
    pub fn paper_attention() -> Self {
        Self { crop_min: 0.8, crop_max: 0.8, ..Self::paper_descriptor() }
    }

    /// Instance-level training (each photo its own class): crops of 35-100 % of the shorter side anywhere in the
    /// photo, up to 20 degrees of rotation, 30 % colour changes, blur in 30 % of views.
    pub fn instance() -> Self {
        Self {
            crop_min: 0.35,
            crop_max: 1.0,
            centred: false,
            max_rotation_deg: 20.0,
            colour: 0.3,
            blur_probability: 0.3,
            blur_sigma_max: 2.0,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), String> {
        let ok = 0.0 < self.crop_min
            && self.crop_min <= self.crop_max
            && self.crop_max <= 1.0
            && (0.0..=90.0).contains(&self.max_rotation_deg)
            && (0.0..1.0).contains(&self.colour)
            && (0.0..=1.0).contains(&self.blur_probability)
            && (0.0..=10.0).contains(&self.blur_sigma_max);
        if ok { Ok(()) } else { Err(format!("augmentation settings out of range: {self:?}")) }
    }

    /// Draws one view of a `width x height` image.
    pub fn sample(&self, rng: &mut SplitMix64, width: u32, height: u32) -> View {
        let (w, h) = (f64::from(width), f64::from(height));
        let short = w.min(h);
        let side = short * (self.crop_min + (self.crop_max - self.crop_min) * rng.uniform());
        // The crop's centre: inside the central square, or anywhere the crop fits.
        let (x0, x1, y0, y1) = if self.centred {
            let (mx, my) = ((w - short) / 2.0, (h - short) / 2.0);
            (mx + side / 2.0, mx + short - side / 2.0, my + side / 2.0, my + short - side / 2.0)
        } else {
            (side / 2.0, w - side / 2.0, side / 2.0, h - side / 2.0)
        };
        let cx = x0 + (x1 - x0) * rng.uniform();
        let cy = y0 + (y1 - y0) * rng.uniform();
        let angle = (2.0 * rng.uniform() - 1.0) * self.max_rotation_deg.to_radians();
        let mut jitter = || 1.0 + (2.0 * rng.uniform() - 1.0) * self.colour;
        let (brightness, contrast, saturation) = (jitter(), jitter(), jitter());
        let blur = rng.uniform() < self.blur_probability;
        let blur_sigma = if blur { 0.5 + (self.blur_sigma_max - 0.5).max(0.0) * rng.uniform() } else { 0.0 };
        View { cx, cy, side, angle, brightness, contrast, saturation, blur_sigma }
    }
}

/// One drawn view: a square of `side` source pixels centred at (`cx`, `cy`) and rotated by `angle`, plus colour
/// factors and a blur.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Crop centre, source pixels (x right, y down; pixel centres at +0.5).
    pub cx: f64,
    /// Crop centre, source pixels.
    pub cy: f64,
    /// Crop side, source pixels.
    pub side: f64,
    /// Rotation, radians.
    pub angle: f64,
    /// Brightness factor.
    pub brightness: f64,
    /// Contrast factor (around mid-grey).
    pub contrast: f64,
    /// Saturation factor.
    pub saturation: f64,
    /// Gaussian blur sigma in output pixels; 0 = none.
    pub blur_sigma: f64,
}

impl View {
    /// Renders the view as a normalised `[3, out, out]` CHW buffer.
    pub fn render(&self, image: &RgbImage, out: u32, norm: Normalization) -> Vec<f32> {
        // Bilinear sampling aliases when shrinking far: pre-shrink so one output pixel spans at most 2 source pixels.
        let shrink = self.side / (2.0 * f64::from(out));
        let small;
        let (src, view) = if shrink > 1.0 {
            let w = ((f64::from(image.width()) / shrink).round() as u32).max(1);
            let h = ((f64::from(image.height()) / shrink).round() as u32).max(1);
            small = imageops::resize(image, w, h, FilterType::Triangle);
            let (fx, fy) = (f64::from(w) / f64::from(image.width()), f64::from(h) / f64::from(image.height()));
            (&small, View { cx: self.cx * fx, cy: self.cy * fy, side: self.side * fx.min(fy), ..*self })
        } else {
            (image, *self)
        };
        let n = out as usize;
        let mut planes = vec![0f32; 3 * n * n];
        let (sin, cos) = view.angle.sin_cos();
        let scale = view.side / f64::from(out);
        for v in 0..n {
            for u in 0..n {
                let dx = (u as f64 + 0.5 - f64::from(out) / 2.0) * scale;
                let dy = (v as f64 + 0.5 - f64::from(out) / 2.0) * scale;
                let sx = view.cx + cos * dx - sin * dy;
                let sy = view.cy + sin * dx + cos * dy;
                let rgb = delf_image::warp::sample(src, sx - 0.5, sy - 0.5);
                let grey = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
                for (c, value) in rgb.iter().enumerate() {
                    let x = grey + (value - grey) * view.saturation;
                    let x = (x - 127.5) * view.contrast + 127.5;
                    planes[c * n * n + v * n + u] = (x * view.brightness).clamp(0.0, 255.0) as f32;
                }
            }
        }
        if view.blur_sigma > 0.0 {
            for plane in planes.chunks_exact_mut(n * n) {
                gaussian_blur(plane, n, view.blur_sigma);
            }
        }
        for (c, plane) in planes.chunks_exact_mut(n * n).enumerate() {
            for x in plane {
                *x = (*x - norm.mean[c]) / norm.std[c];
            }
        }
        planes
    }
}

/// Separable Gaussian blur of one `n x n` plane, edges replicated.
fn gaussian_blur(plane: &mut [f32], n: usize, sigma: f64) {
    let radius = (3.0 * sigma).ceil() as i64;
    let kernel: Vec<f64> = (-radius..=radius).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = kernel.iter().sum();
    let at = |i: i64| i.clamp(0, n as i64 - 1) as usize;
    let mut tmp = vec![0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let s: f64 = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * f64::from(plane[y * n + at(x as i64 + k as i64 - radius)]))
                .sum();
            tmp[y * n + x] = (s / total) as f32;
        }
    }
    for y in 0..n {
        for x in 0..n {
            let s: f64 = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * f64::from(tmp[at(y as i64 + k as i64 - radius) * n + x]))
                .sum();
            plane[y * n + x] = (s / total) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Normalization = Normalization { mean: [0.0; 3], std: [1.0; 3] };

    fn gradient() -> RgbImage {
        RgbImage::from_fn(200, 100, |x, y| image::Rgb([x as u8, y as u8, 100]))
    }

    #[test]
    fn an_unrotated_full_crop_reproduces_the_centre_square() {
        let img = gradient();
        let view = View {
            cx: 100.0,
            cy: 50.0,
            side: 100.0,
            angle: 0.0,
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
            blur_sigma: 0.0,
        };
        let out = view.render(&img, 100, PLAIN);
        // Output pixel (u, v) is source pixel (50 + u, v).
        assert_eq!(out[10 * 100 + 7], 57.0);
        assert_eq!(out[100 * 100 + 10 * 100 + 7], 10.0);
        assert_eq!(out[2 * 100 * 100], 100.0);
        // A quarter turn maps the x gradient onto the y axis.
        let turned = View { angle: std::f64::consts::FRAC_PI_2, ..view }.render(&img, 100, PLAIN);
        assert!((turned[30 * 100 + 50] - turned[60 * 100 + 50]).abs() > 25.0);
    }

    #[test]
    fn views_are_seeded_and_stay_inside_the_image() {
        let config = AugmentConfig::instance();
        let mut a = SplitMix64(5);
        let mut b = SplitMix64(5);
        for _ in 0..200 {
            let v = config.sample(&mut a, 640, 480);
            assert_eq!(v, config.sample(&mut b, 640, 480));
            assert!(v.side >= 0.35 * 480.0 - 1e-9 && v.side <= 480.0 + 1e-9);
            assert!(v.cx - v.side / 2.0 >= -1e-9 && v.cx + v.side / 2.0 <= 640.0 + 1e-9);
        }
        let paper = AugmentConfig::paper_descriptor();
        let v = paper.sample(&mut a, 640, 480);
        assert!(v.cx - v.side / 2.0 >= 80.0 - 1e-9 && v.cx + v.side / 2.0 <= 560.0 + 1e-9);
        assert!(AugmentConfig { crop_min: 0.0, ..paper }.validate().is_err());
    }

    #[test]
    fn blur_keeps_the_mean_and_colour_factors_apply() {
        let img = RgbImage::from_fn(64, 64, |x, _| image::Rgb([if x < 32 { 0 } else { 200 }, 50, 50]));
        let base = View {
            cx: 32.0,
            cy: 32.0,
            side: 64.0,
            angle: 0.0,
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
            blur_sigma: 0.0,
        };
        let sharp = base.render(&img, 64, PLAIN);
        let blurred = View { blur_sigma: 2.0, ..base }.render(&img, 64, PLAIN);
        let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!((mean(&sharp) - mean(&blurred)).abs() < 0.5);
        assert!(blurred[10 * 64 + 31] > 10.0 && blurred[10 * 64 + 31] < 190.0);
        let dark = View { brightness: 0.5, ..base }.render(&img, 64, PLAIN);
        assert_eq!(dark[40], sharp[40] * 0.5);
    }
}
