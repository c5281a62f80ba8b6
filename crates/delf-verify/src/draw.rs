//! The picture people look at to trust a match: both images side by side at the same height, each inlier
//! correspondence as an antialiased line in its own colour with a ring at both ends, outliers (optionally) as
//! faint red lines underneath.

use image::{Rgb, RgbImage, imageops};

use crate::Point;

/// What to draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawOptions {
    /// Height of both images in the picture (each is scaled to it, keeping its aspect ratio).
    pub height: u32,
    /// Also draw outlier correspondences, faintly.
    pub outliers: bool,
    /// Gap between the two images, in pixels.
    pub gap: u32,
}

impl Default for DrawOptions {
    fn default() -> Self {
        Self { height: 600, outliers: true, gap: 12 }
    }
}

/// Draws `a` and `b` side by side with the correspondences `src[i] -> dst[i]`, inliers marked by `inliers[i]`.
pub fn draw_matches(
    a: &RgbImage,
    b: &RgbImage,
    src: &[Point],
    dst: &[Point],
    inliers: &[bool],
    options: &DrawOptions,
) -> RgbImage {
    let h = options.height.max(1);
    let sa = f64::from(h) / f64::from(a.height().max(1));
    let sb = f64::from(h) / f64::from(b.height().max(1));
    let wa = ((f64::from(a.width()) * sa).round() as u32).max(1);
    let wb = ((f64::from(b.width()) * sb).round() as u32).max(1);
    let mut canvas = RgbImage::from_pixel(wa + options.gap + wb, h, Rgb([255, 255, 255]));
    // Dim the photos a little so the lines stand out.
    let dim = |img: &RgbImage, w: u32| {
        let mut r = imageops::resize(img, w, h, imageops::FilterType::Triangle);
        r.pixels_mut().for_each(|p| p.0 = p.0.map(|c| (u16::from(c) * 3 / 4 + 32) as u8));
        r
    };
    imageops::replace(&mut canvas, &dim(a, wa), 0, 0);
    let offset = f64::from(wa + options.gap);
    imageops::replace(&mut canvas, &dim(b, wb), offset as i64, 0);

    let ends = |i: usize| ((src[i].x * sa, src[i].y * sa), (dst[i].x * sb + offset, dst[i].y * sb));
    if options.outliers {
        for i in (0..src.len()).filter(|&i| !inliers.get(i).copied().unwrap_or(false)) {
            let ((x0, y0), (x1, y1)) = ends(i);
            line(&mut canvas, x0, y0, x1, y1, [220, 40, 40], 0.25);
        }
    }
    for (k, i) in (0..src.len()).filter(|&i| inliers.get(i).copied().unwrap_or(false)).enumerate() {
        let color = palette(k);
        let ((x0, y0), (x1, y1)) = ends(i);
        for d in [-0.5, 0.5] {
            line(&mut canvas, x0, y0 + d, x1, y1 + d, color, 0.9);
        }
        ring(&mut canvas, x0, y0, 4.0, color);
        ring(&mut canvas, x1, y1, 4.0, color);
    }
    canvas
}

/// Well-separated saturated colours (golden-angle hue steps).
fn palette(k: usize) -> [u8; 3] {
    let hue = (k as f64 * 137.508) % 360.0;
    let (s, v) = (0.85, 0.95);
    let c = v * s;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [((r + m) * 255.0) as u8, ((g + m) * 255.0) as u8, ((b + m) * 255.0) as u8]
}

fn blend(img: &mut RgbImage, x: i64, y: i64, color: [u8; 3], alpha: f64) {
    if x < 0 || y < 0 || x >= i64::from(img.width()) || y >= i64::from(img.height()) || alpha <= 0.0 {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (c, t) in p.0.iter_mut().zip(color) {
        *c = (f64::from(*c) * (1.0 - alpha) + f64::from(t) * alpha).round() as u8;
    }
}

/// Xiaolin Wu's antialiased line.
fn line(img: &mut RgbImage, mut x0: f64, mut y0: f64, mut x1: f64, mut y1: f64, color: [u8; 3], alpha: f64) {
    let steep = (y1 - y0).abs() > (x1 - x0).abs();
    if steep {
        std::mem::swap(&mut x0, &mut y0);
        std::mem::swap(&mut x1, &mut y1);
    }
    if x0 > x1 {
        std::mem::swap(&mut x0, &mut x1);
        std::mem::swap(&mut y0, &mut y1);
    }
    let gradient = if x1 == x0 { 1.0 } else { (y1 - y0) / (x1 - x0) };
    let mut plot = |x: i64, y: i64, c: f64| {
        if steep { blend(img, y, x, color, c * alpha) } else { blend(img, x, y, color, c * alpha) }
    };
    let (start, end) = (x0.round() as i64, x1.round() as i64);
    let mut y = y0 + gradient * (start as f64 - x0);
    for x in start..=end {
        let base = y.floor();
        let frac = y - base;
        plot(x, base as i64, 1.0 - frac);
        plot(x, base as i64 + 1, frac);
        y += gradient;
    }
}

fn ring(img: &mut RgbImage, cx: f64, cy: f64, r: f64, color: [u8; 3]) {
    let steps = (r * 8.0) as usize;
    for k in 0..steps {
        let t = k as f64 / steps as f64 * std::f64::consts::TAU;
        let (x, y) = (cx + r * t.cos(), cy + r * t.sin());
        blend(img, x.round() as i64, y.round() as i64, color, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_images_and_coloured_inlier_lines() {
        let a = RgbImage::from_pixel(100, 50, Rgb([0, 0, 0]));
        let b = RgbImage::from_pixel(50, 100, Rgb([0, 0, 0]));
        let src = [Point::new(10.0, 25.0), Point::new(90.0, 40.0)];
        let dst = [Point::new(25.0, 50.0), Point::new(5.0, 5.0)];
        let pic =
            draw_matches(&a, &b, &src, &dst, &[true, false], &DrawOptions { height: 100, outliers: true, gap: 10 });
        assert_eq!(pic.dimensions(), (200 + 10 + 50, 100));
        // a is scaled x2: the inlier runs from (20, 50) to (210 + 25, 50), crossing the white gap at y = 50.
        let on_line = pic.get_pixel(205, 50).0;
        assert!(on_line != [255, 255, 255], "{on_line:?}");
        assert_eq!(pic.get_pixel(205, 5).0, [255, 255, 255]);
    }
}
