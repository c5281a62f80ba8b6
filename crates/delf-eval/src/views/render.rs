//! Renders a [`Recipe`] from its original: crop, then perspective, rotation and scale in one resampling, then
//! occluders, blur, tone and colour, noise, and JPEG encoding at the recipe's quality (the written file is that
//! JPEG, so its artefacts are the real ones).

use delf_core::rng::SplitMix64;
use delf_image::filters::{self, Photometric};
use delf_image::geometry::Projective;
use delf_image::warp::{Fill, warp};
use delf_image::{ImageError, RgbImage};

use super::recipe::{Blur, Canvas, Recipe};

/// The smallest shorter side of a rendered view, pixels.
pub const MIN_SIDE: f64 = 160.0;

/// A rendered view.
#[derive(Debug, Clone)]
pub struct RenderedView {
    /// The view as JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Its size.
    pub width: u32,
    /// Its size.
    pub height: u32,
    /// The scale applied after the crop (the recipe's, raised where needed to keep [`MIN_SIDE`]).
    pub scale: f64,
    /// Original pixel coordinates -> view pixel coordinates.
    pub map: Projective,
}

/// Renders `recipe` from `original`.
pub fn render(original: &RgbImage, recipe: &Recipe) -> Result<RenderedView, ImageError> {
    let (w, h) = (f64::from(original.width()), f64::from(original.height()));
    let (keep, fx, fy) = recipe.crop;
    let (cw, ch) = (w * keep.clamp(0.05, 1.0), h * keep.clamp(0.05, 1.0));
    let (x0, y0) = ((w - cw) * fx.clamp(0.0, 1.0), (h - ch) * fy.clamp(0.0, 1.0));
    let scale = recipe.scale.max(MIN_SIDE / cw.min(ch)).min(1.0);

    // Window -> perspective -> rotation and scale about the window's centre.
    let window = [(0.0, 0.0), (cw, 0.0), (cw, ch), (0.0, ch)];
    let moved: Vec<(f64, f64)> =
        window.iter().zip(&recipe.corners).map(|(&(x, y), &(dx, dy))| (x + dx * cw, y + dy * ch)).collect();
    let perspective = Projective::from_quad(window, [moved[0], moved[1], moved[2], moved[3]])
        .ok_or_else(|| ImageError::Corrupt("degenerate perspective corners".into()))?;
    let (mx, my) = perspective.apply(cw / 2.0, ch / 2.0).unwrap_or((cw / 2.0, ch / 2.0));
    let turn = Projective::translation(-x0, -y0)
        .then(&perspective)
        .then(&Projective::translation(-mx, -my))
        .then(&Projective::rotation(recipe.rotation))
        .then(&Projective::scaling(scale, scale));
    // The quad the window becomes, around the origin.
    let quad: Vec<(f64, f64)> = window.iter().map(|&(x, y)| turn.apply(x + x0, y + y0).unwrap_or((0.0, 0.0))).collect();
    let (vw, vh, fill) = match recipe.canvas {
        Canvas::Black | Canvas::Edge => {
            let (lo_x, hi_x) =
                quad.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| (a.0.min(p.0), a.1.max(p.0)));
            let (lo_y, hi_y) =
                quad.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| (a.0.min(p.1), a.1.max(p.1)));
            let half = (lo_x.abs().max(hi_x), lo_y.abs().max(hi_y));
            let fill = if recipe.canvas == Canvas::Black { Fill::Color([0, 0, 0]) } else { Fill::Edge };
            (2.0 * half.0, 2.0 * half.1, fill)
        }
        Canvas::Inside => {
            let (a, b) = largest_inside(&quad, cw / ch);
            (a, b, Fill::Edge)
        }
    };
    let (vw, vh) = ((vw.round() as u32).max(8), (vh.round() as u32).max(8));
    let map = turn.then(&Projective::translation(f64::from(vw) / 2.0, f64::from(vh) / 2.0));
    let mut view = warp(original, &map, vw, vh, fill).image;

    for o in &recipe.occluders {
        let (fw, fh) = (f64::from(vw), f64::from(vh));
        let (cx, cy) = (o.center.0 * fw, o.center.1 * fh);
        let (rx, ry) = (o.radii.0 * fw, o.radii.1 * fh);
        if o.ellipse {
            filters::fill_ellipse(&mut view, (cx, cy), (rx, ry), o.angle, o.color);
        } else {
            let (ax, ay) = ((cx - rx).max(0.0) as u32, (cy - ry).max(0.0) as u32);
            filters::fill_rect(&mut view, ax, ay, (cx + rx) as u32, (cy + ry) as u32, o.color);
        }
    }
    view = match recipe.blur {
        Blur::None => view,
        Blur::Gaussian(sigma) => filters::gaussian_blur(&view, sigma),
        Blur::Motion(length, angle) => filters::motion_blur(&view, length, angle),
    };
    if recipe.photometric != Photometric::NONE {
        view = recipe.photometric.apply(&view);
    }
    if recipe.noise > 0.0 {
        view = filters::add_noise(&view, recipe.noise, &mut SplitMix64(recipe.seed));
    }
    let jpeg = filters::encode_jpeg(&view, recipe.jpeg_quality)?;
    Ok(RenderedView { jpeg, width: vw, height: vh, scale, map })
}

/// The largest rectangle of aspect `aspect` (width / height) centred on the origin inside the convex `quad`:
/// its width and height.
fn largest_inside(quad: &[(f64, f64)], aspect: f64) -> (f64, f64) {
    let inside = |x: f64, y: f64| {
        let n = quad.len();
        let sign = |i: usize| {
            let (a, b) = (quad[i], quad[(i + 1) % n]);
            (b.0 - a.0) * (y - a.1) - (b.1 - a.1) * (x - a.0)
        };
        let first = sign(0);
        (1..n).all(|i| sign(i) * first >= -1e-9)
    };
    let fits = |hh: f64| {
        let hw = hh * aspect;
        [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)].iter().all(|&(x, y)| inside(x, y))
    };
    let (mut lo, mut hi) = (0.0, quad.iter().map(|p| p.0.abs().max(p.1.abs())).fold(0.0, f64::max));
    for _ in 0..50 {
        let mid = (lo + hi) / 2.0;
        if fits(mid) { lo = mid } else { hi = mid }
    }
    (2.0 * lo * aspect, 2.0 * lo)
}

#[cfg(test)]
mod tests {
    use super::super::recipe::{Bin, Recipe};
    use super::*;

    fn photo() -> RgbImage {
        RgbImage::from_fn(400, 300, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8]))
    }

    #[test]
    fn rendered_views_keep_the_minimum_size_and_map_points_consistently() {
        let img = photo();
        for bin in Bin::RENDERED {
            for seed in 0..4 {
                let r = Recipe::draw(bin, 90.0, &mut SplitMix64(seed));
                let v = render(&img, &r).unwrap();
                assert!(f64::from(v.width.min(v.height)) >= 0.6 * MIN_SIDE, "{bin:?} {}x{}", v.width, v.height);
                let decoded = delf_image::decode_bytes(&v.jpeg, &Default::default()).unwrap();
                assert_eq!((decoded.width(), decoded.height()), (v.width, v.height));
                // The original's centre region lands inside the view.
                let (x, y) = v.map.apply(200.0, 150.0).unwrap();
                assert!(x > 0.0 && y > 0.0 && x < f64::from(v.width) && y < f64::from(v.height), "{bin:?}");
            }
        }
    }

    #[test]
    fn a_quarter_turn_on_a_black_canvas_is_the_transposed_photo() {
        let img = photo();
        let mut r = Recipe::draw(Bin::Rotation, 90.0, &mut SplitMix64(1));
        r.crop = (1.0, 0.5, 0.5);
        r.corners = [(0.0, 0.0); 4];
        r.scale = 1.0;
        r.canvas = Canvas::Black;
        let v = render(&img, &r).unwrap();
        assert_eq!((v.width, v.height), (300, 400));
        // The top-right corner of the photo becomes the top-left corner of the view.
        let (x, y) = v.map.apply(400.0, 0.0).unwrap();
        assert!(x.abs() < 1e-6 && y.abs() < 1e-6);
    }

    #[test]
    fn the_inside_canvas_holds_no_fill() {
        let quad = [(-10.0, -10.0), (10.0, -10.0), (10.0, 10.0), (-10.0, 10.0)];
        let (w, h) = largest_inside(&quad, 2.0);
        assert!((w - 20.0).abs() < 1e-6 && (h - 10.0).abs() < 1e-6);
        // A diamond (a square turned 45 degrees) holds a square of half its diagonal.
        let diamond = [(0.0, -10.0), (10.0, 0.0), (0.0, 10.0), (-10.0, 0.0)];
        let (w, _) = largest_inside(&diamond, 1.0);
        assert!((w - 10.0).abs() < 1e-6);
    }
}
