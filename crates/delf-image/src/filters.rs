//! Pixel-level changes that photos go through on their way around the web: blur (defocus and motion), JPEG
//! re-compression, brightness / contrast / colour / gamma changes, sensor noise, and objects in front of the scene.

use delf_core::rng::SplitMix64;
use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;

use crate::ImageError;

/// Gaussian blur with standard deviation `sigma` pixels (separable; edges replicated). `sigma <= 0` copies.
pub fn gaussian_blur(img: &RgbImage, sigma: f64) -> RgbImage {
    if sigma <= 0.0 {
        return img.clone();
    }
    let radius = (3.0 * sigma).ceil() as i64;
    let kernel: Vec<f32> = (-radius..=radius).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32).collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v)).collect();
    let mut tmp = vec![0f32; src.len()];
    let clamp = |i: i64, n: usize| i.clamp(0, n as i64 - 1) as usize;
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut s = 0.0;
                for (k, wgt) in kernel.iter().enumerate() {
                    s += wgt * src[(y * w + clamp(x as i64 + k as i64 - radius, w)) * 3 + c];
                }
                tmp[(y * w + x) * 3 + c] = s;
            }
        }
    }
    let mut out = vec![0u8; src.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut s = 0.0;
                for (k, wgt) in kernel.iter().enumerate() {
                    s += wgt * tmp[(clamp(y as i64 + k as i64 - radius, h) * w + x) * 3 + c];
                }
                out[(y * w + x) * 3 + c] = s.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(img.width(), img.height(), out).unwrap_or_else(|| img.clone())
}

/// Linear motion blur: the mean of the image shifted along a segment of `length` pixels at `degrees` from the x
/// axis (counter-clockwise as seen), centred on each pixel; bilinear taps one pixel apart, edges replicated.
pub fn motion_blur(img: &RgbImage, length: f64, degrees: f64) -> RgbImage {
    let taps = length.round().max(1.0) as usize;
    if taps <= 1 {
        return img.clone();
    }
    let (s, c) = degrees.to_radians().sin_cos();
    let offsets: Vec<(f64, f64)> = (0..taps)
        .map(|i| {
            let t = i as f64 - (taps - 1) as f64 / 2.0;
            (t * c, -t * s)
        })
        .collect();
    let (w, h) = (img.width(), img.height());
    let mut out = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0.0f64; 3];
            for &(dx, dy) in &offsets {
                let p = crate::warp::sample(img, f64::from(x) + dx, f64::from(y) + dy);
                for k in 0..3 {
                    acc[k] += p[k];
                }
            }
            let n = offsets.len() as f64;
            out.put_pixel(x, y, image::Rgb(acc.map(|v| (v / n).round().clamp(0.0, 255.0) as u8)));
        }
    }
    out
}

/// JPEG-encodes `img` at `quality` (1-100) and decodes it again: the artefacts of a re-compressed copy.
pub fn jpeg_roundtrip(img: &RgbImage, quality: u8) -> Result<RgbImage, ImageError> {
    Ok(crate::decode_bytes(&encode_jpeg(img, quality)?, &crate::DecodeLimits::default())?.rgb)
}

/// JPEG bytes of `img` at `quality` (1-100).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100))
        .encode_image(img)
        .map_err(|e| ImageError::Corrupt(format!("JPEG encoding failed: {e}")))?;
    Ok(bytes)
}

/// Global tone and colour changes, applied in this order: per-channel gains (a colour cast), saturation around
/// the pixel's luma, contrast around mid-grey, brightness, then gamma on the 0-1 range.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Photometric {
    /// Multiplier of every value (1 = unchanged).
    pub brightness: f64,
    /// Contrast factor around 127.5 (1 = unchanged).
    pub contrast: f64,
    /// Saturation factor around the luma (0 = grey, 1 = unchanged).
    pub saturation: f64,
    /// Output = input^gamma on the 0-1 range (1 = unchanged; < 1 brightens shadows).
    pub gamma: f64,
    /// Per-channel gains (R, G, B).
    pub gains: [f64; 3],
}

impl Photometric {
    /// No change.
    pub const NONE: Self = Self { brightness: 1.0, contrast: 1.0, saturation: 1.0, gamma: 1.0, gains: [1.0; 3] };

    /// Applies the change to every pixel.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let mut out = img.clone();
        for p in out.pixels_mut() {
            let mut v = [0.0f64; 3];
            for ((x, &c), g) in v.iter_mut().zip(&p.0).zip(&self.gains) {
                *x = f64::from(c) * g;
            }
            let luma = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
            for x in &mut v {
                let s = luma + (*x - luma) * self.saturation;
                let c = (s - 127.5) * self.contrast + 127.5;
                let b = (c * self.brightness).clamp(0.0, 255.0);
                *x = 255.0 * (b / 255.0).powf(self.gamma);
            }
            p.0 = v.map(|x| x.round().clamp(0.0, 255.0) as u8);
        }
        out
    }
}

/// Adds independent Gaussian noise of standard deviation `sigma` (in 0-255 units) to every value.
pub fn add_noise(img: &RgbImage, sigma: f64, rng: &mut SplitMix64) -> RgbImage {
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = (f64::from(*v) + sigma * rng.normal()).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Paints an ellipse centred at `(cx, cy)` with semi-axes `rx`, `ry`, turned by `degrees`, in `color`.
pub fn fill_ellipse(img: &mut RgbImage, center: (f64, f64), radii: (f64, f64), degrees: f64, color: [u8; 3]) {
    let ((cx, cy), (rx, ry)) = (center, radii);
    let (s, c) = degrees.to_radians().sin_cos();
    let r = rx.max(ry).ceil();
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let (x0, x1) = ((cx - r).floor().max(0.0) as u32, (cx + r).ceil().min(w) as u32);
    let (y0, y1) = ((cy - r).floor().max(0.0) as u32, (cy + r).ceil().min(h) as u32);
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = (f64::from(x) + 0.5 - cx, f64::from(y) + 0.5 - cy);
            let (u, v) = (c * dx - s * dy, s * dx + c * dy);
            if (u / rx).powi(2) + (v / ry).powi(2) <= 1.0 {
                img.put_pixel(x, y, image::Rgb(color));
            }
        }
    }
}

/// Paints the axis-aligned rectangle `[x0, x1) x [y0, y1)` (clipped to the image) in `color`.
pub fn fill_rect(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, color: [u8; 3]) {
    for y in y0.min(img.height())..y1.min(img.height()) {
        for x in x0.min(img.width())..x1.min(img.width()) {
            img.put_pixel(x, y, image::Rgb(color));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripes() -> RgbImage {
        RgbImage::from_fn(
            64,
            48,
            |x, _| if (x / 4) % 2 == 0 { image::Rgb([200, 40, 90]) } else { image::Rgb([20, 180, 60]) },
        )
    }

    fn mean(img: &RgbImage) -> f64 {
        img.iter().map(|&v| f64::from(v)).sum::<f64>() / img.len() as f64
    }

    #[test]
    fn blurs_keep_the_mean_and_smooth_edges() {
        let img = stripes();
        for blurred in [gaussian_blur(&img, 2.0), motion_blur(&img, 9.0, 0.0)] {
            assert!((mean(&img) - mean(&blurred)).abs() < 2.0);
            let v = blurred.get_pixel(20, 20).0[0];
            assert!(v > 40 && v < 200, "{v}");
        }
        // A vertical motion blur leaves vertical stripes untouched.
        assert_eq!(motion_blur(&img, 9.0, 90.0).get_pixel(30, 24), img.get_pixel(30, 24));
        assert_eq!(gaussian_blur(&img, 0.0), img);
    }

    #[test]
    fn jpeg_roundtrip_is_lossy_but_close() {
        let img = stripes();
        let low = jpeg_roundtrip(&img, 20).unwrap();
        assert_eq!(low.dimensions(), img.dimensions());
        assert!((mean(&low) - mean(&img)).abs() < 6.0);
        assert!(encode_jpeg(&img, 20).unwrap().len() < encode_jpeg(&img, 95).unwrap().len());
    }

    #[test]
    fn photometric_noise_and_shapes() {
        let img = stripes();
        assert_eq!(Photometric::NONE.apply(&img), img);
        let grey = Photometric { saturation: 0.0, ..Photometric::NONE }.apply(&img);
        let p = grey.get_pixel(0, 0).0;
        assert!(p[0] == p[1] && p[1] == p[2]);
        let bright = Photometric { gamma: 0.5, ..Photometric::NONE }.apply(&img);
        assert!(mean(&bright) > mean(&img));
        let mut rng = SplitMix64(3);
        let noisy = add_noise(&img, 10.0, &mut rng);
        assert!((mean(&noisy) - mean(&img)).abs() < 2.0 && noisy != img);
        let mut canvas = img.clone();
        fill_ellipse(&mut canvas, (32.0, 24.0), (10.0, 5.0), 0.0, [1, 2, 3]);
        fill_rect(&mut canvas, 0, 0, 3, 3, [4, 5, 6]);
        assert_eq!(canvas.get_pixel(32, 24).0, [1, 2, 3]);
        assert_eq!(canvas.get_pixel(32, 31), img.get_pixel(32, 31));
        assert_eq!(canvas.get_pixel(2, 2).0, [4, 5, 6]);
    }
}
