//! Geometric resampling: an RGB8 image through a [`Projective`] map onto a new canvas, with a coverage mask that
//! says which canvas pixels show the source (the rest is fill: the corners of a rotated photo, the margins of a
//! perspective view).

use image::RgbImage;
use image::imageops::{self, FilterType};

use crate::geometry::{Projective, rotation_canvas};

/// What canvas pixels outside the source show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// One colour.
    Color([u8; 3]),
    /// The nearest source pixel (edges smeared outwards).
    Edge,
}

/// A resampled image and, per pixel (row-major), whether it shows the source (`true`) or fill.
#[derive(Debug, Clone)]
pub struct Warped {
    /// The canvas.
    pub image: RgbImage,
    /// One flag per canvas pixel, row-major.
    pub coverage: Vec<bool>,
}

impl Warped {
    /// Whether the canvas pixel `(x, y)` shows the source.
    pub fn covered(&self, x: u32, y: u32) -> bool {
        self.coverage[(y * self.image.width() + x) as usize]
    }
}

/// Resamples `src` through `map` (source coordinates -> canvas coordinates) onto a `width x height` canvas,
/// bilinearly. Where the map shrinks by more than 2x the source is first reduced with a triangle filter, so that
/// strong downscaling does not alias.
pub fn warp(src: &RgbImage, map: &Projective, width: u32, height: u32, fill: Fill) -> Warped {
    let (sw, sh) = (f64::from(src.width()), f64::from(src.height()));
    let scale = map.local_scale(sw / 2.0, sh / 2.0);
    let reduced;
    let (src, map) = if scale.is_finite() && scale < 0.5 {
        let f = 2.0 * scale;
        let (rw, rh) = (((sw * f).round() as u32).max(1), ((sh * f).round() as u32).max(1));
        reduced = imageops::resize(src, rw, rh, FilterType::Triangle);
        let back = Projective::scaling(sw / f64::from(rw), sh / f64::from(rh));
        (&reduced, back.then(map))
    } else {
        (src, *map)
    };
    let inverse = map.inverse().unwrap_or(Projective::IDENTITY);
    let (sw, sh) = (f64::from(src.width()), f64::from(src.height()));
    let mut image = RgbImage::new(width, height);
    let mut coverage = vec![false; (width as usize) * (height as usize)];
    for y in 0..height {
        for x in 0..width {
            let source = inverse.apply(f64::from(x) + 0.5, f64::from(y) + 0.5);
            let inside = source.is_some_and(|(u, v)| (0.0..=sw).contains(&u) && (0.0..=sh).contains(&v));
            let pixel = match (inside, fill, source) {
                (true, _, Some((u, v))) | (false, Fill::Edge, Some((u, v))) => bilinear(src, u - 0.5, v - 0.5),
                (_, Fill::Color(c), _) => c,
                (_, Fill::Edge, None) => [0, 0, 0],
            };
            image.put_pixel(x, y, image::Rgb(pixel));
            coverage[(y * width + x) as usize] = inside;
        }
    }
    Warped { image, coverage }
}

/// `src` rotated by `degrees` (counter-clockwise as seen) about its centre, on a canvas that holds all of it
/// (`expand`) or one of the same size, and the map from source to canvas coordinates. Quarter turns are exact
/// pixel moves.
pub fn rotate(src: &RgbImage, degrees: f64, expand: bool, fill: Fill) -> (Warped, Projective) {
    let (map, w, h) = rotation_canvas(src.width(), src.height(), degrees, expand);
    (warp(src, &map, w, h, fill), map)
}

/// Bilinear sample at continuous coordinates with pixel centres on integers, rounded to 8 bits; edges replicated.
pub fn bilinear(img: &RgbImage, x: f64, y: f64) -> [u8; 3] {
    sample(img, x, y).map(|v| v.round().clamp(0.0, 255.0) as u8)
}

/// [`bilinear`] before rounding.
pub fn sample(img: &RgbImage, x: f64, y: f64) -> [f64; 3] {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let (x, y) = (x.clamp(0.0, (w - 1) as f64), y.clamp(0.0, (h - 1) as f64));
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f64, y - y0 as f64);
    let px = |xx: i64, yy: i64| img.get_pixel(xx as u32, yy as u32).0;
    let (a, b, c, d) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
    let mut out = [0.0; 3];
    for k in 0..3 {
        let top = f64::from(a[k]) * (1.0 - fx) + f64::from(b[k]) * fx;
        let bottom = f64::from(c[k]) * (1.0 - fx) + f64::from(d[k]) * fx;
        out[k] = top * (1.0 - fy) + bottom * fy;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, ((x + y) % 256) as u8]))
    }

    #[test]
    fn quarter_turns_move_whole_pixels() {
        let img = gradient(40, 30);
        let (turned, _) = rotate(&img, 90.0, true, Fill::Color([0, 0, 0]));
        assert_eq!(turned.image, imageops::rotate270(&img));
        assert!(turned.coverage.iter().all(|&c| c));
        let (half, _) = rotate(&img, 180.0, true, Fill::Color([0, 0, 0]));
        assert_eq!(half.image, imageops::rotate180(&img));
        let (back, _) = rotate(&img, -90.0, true, Fill::Color([0, 0, 0]));
        assert_eq!(back.image, imageops::rotate90(&img));
    }

    #[test]
    fn a_rotated_canvas_marks_its_filled_corners() {
        let img = gradient(64, 64);
        let (w, map) = rotate(&img, 45.0, true, Fill::Color([9, 9, 9]));
        assert_eq!(w.image.width(), 91);
        assert!(!w.covered(0, 0) && w.covered(45, 45));
        assert_eq!(w.image.get_pixel(0, 0).0, [9, 9, 9]);
        // The source centre lands on the canvas centre.
        let (cx, cy) = map.apply(32.0, 32.0).unwrap();
        assert!((cx - 45.5).abs() < 1e-9 && (cy - 45.5).abs() < 1e-9);
        let covered = w.coverage.iter().filter(|&&c| c).count() as f64;
        assert!((covered / (64.0 * 64.0) - 1.0).abs() < 0.05, "{covered}");
    }

    #[test]
    fn the_identity_keeps_pixels_and_strong_shrinking_does_not_alias() {
        let img = gradient(33, 17);
        assert_eq!(warp(&img, &Projective::IDENTITY, 33, 17, Fill::Edge).image, img);
        // A one-pixel checkerboard shrunk 8x averages to grey instead of picking one colour.
        let checker =
            RgbImage::from_fn(
                256,
                256,
                |x, y| if (x + y) % 2 == 0 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) },
            );
        let small = warp(&checker, &Projective::scaling(0.125, 0.125), 32, 32, Fill::Edge);
        let v = small.image.get_pixel(16, 16).0[0];
        assert!((100..=155).contains(&v), "{v}");
    }
}
