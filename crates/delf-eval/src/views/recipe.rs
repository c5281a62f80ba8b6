//! What each hard view does to its original: one transformation pushed hard (the view's bin), every other one
//! present in a mild amount, all drawn from a seeded generator so a seed names the same views everywhere.

use delf_core::rng::SplitMix64;
use delf_image::filters::Photometric;
use serde::{Deserialize, Serialize};

/// The transformation a view stresses (and, for queries that are not rendered, what they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bin {
    /// In-plane rotation over the whole circle.
    Rotation,
    /// Downscaling to 0.35-0.6 of the original.
    Scale,
    /// A perspective change (the corners moved by 10-25 % of the sides).
    Perspective,
    /// Gaussian (defocus) or motion blur.
    Blur,
    /// JPEG re-compression at quality 20-60.
    Jpeg,
    /// Brightness, contrast, saturation, gamma and colour-cast changes.
    Photometric,
    /// Sensor noise.
    Noise,
    /// A crop with objects painted in front of the scene.
    Occlusion,
    /// Another real photograph of the scene (not rendered).
    RealView,
    /// An unrelated photo (must answer "no match").
    Distractor,
}

impl Bin {
    /// The bins of rendered views, in report order.
    pub const RENDERED: [Bin; 8] = [
        Bin::Rotation,
        Bin::Scale,
        Bin::Perspective,
        Bin::Blur,
        Bin::Jpeg,
        Bin::Photometric,
        Bin::Noise,
        Bin::Occlusion,
    ];

    /// The name used in reports and file names.
    pub fn name(self) -> &'static str {
        match self {
            Bin::Rotation => "rotation",
            Bin::Scale => "scale",
            Bin::Perspective => "perspective",
            Bin::Blur => "blur",
            Bin::Jpeg => "jpeg",
            Bin::Photometric => "photometric",
            Bin::Noise => "noise",
            Bin::Occlusion => "occlusion",
            Bin::RealView => "real-view",
            Bin::Distractor => "distractor",
        }
    }
}

/// The in-plane rotations of the rotation bin, degrees (counter-clockwise positive): the whole circle, both ways.
pub const ROTATIONS: [f64; 20] = [
    0.0, 15.0, -15.0, 30.0, -30.0, 45.0, -45.0, 60.0, -60.0, 75.0, -75.0, 90.0, -90.0, 120.0, -120.0, 135.0, -135.0,
    150.0, -150.0, 180.0,
];

/// How the canvas of a rotated or perspective view treats what the original does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Canvas {
    /// The whole view on a canvas that holds it, the rest black (what most tools do).
    Black,
    /// The whole view, the rest smeared from the edges.
    Edge,
    /// Cropped to the largest centred rectangle with the original's aspect that the view covers.
    Inside,
}

/// Blur of a view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Blur {
    /// None.
    None,
    /// Gaussian with this sigma (pixels of the view).
    Gaussian(f64),
    /// Linear motion of this length (pixels) at this angle (degrees).
    Motion(f64, f64),
}

/// Everything a view does to its original, in the order it is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The transformation this view stresses.
    pub bin: Bin,
    /// Fraction of the original kept before anything else, per side, and where (centre of the window as a
    /// fraction of the free margin, 0-1 in x and y).
    pub crop: (f64, f64, f64),
    /// Displacement of each of the four corners (x, y), as fractions of the width and height (a perspective
    /// change; all zero = none).
    pub corners: [(f64, f64); 4],
    /// In-plane rotation, degrees, counter-clockwise.
    pub rotation: f64,
    /// Size of the view relative to the original (after the crop): 0.5 = half the pixels per side.
    pub scale: f64,
    /// Canvas of rotations and perspective changes.
    pub canvas: Canvas,
    /// Occluders: (centre x, centre y, radius x, radius y as fractions of the view's sides, angle degrees,
    /// colour, ellipse or rectangle).
    pub occluders: Vec<Occluder>,
    /// Blur.
    pub blur: Blur,
    /// Tone and colour.
    pub photometric: Photometric,
    /// Gaussian noise sigma (0-255 units).
    pub noise: f64,
    /// JPEG quality of the written view.
    pub jpeg_quality: u8,
    /// Seed of the noise.
    pub seed: u64,
}

/// An object painted in front of the scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Occluder {
    /// Centre, fractions of the view's width and height.
    pub center: (f64, f64),
    /// Semi-axes, fractions of the view's width and height.
    pub radii: (f64, f64),
    /// Turn of an ellipse, degrees.
    pub angle: f64,
    /// Colour.
    pub color: [u8; 3],
    /// Ellipse (`true`) or axis-aligned rectangle.
    pub ellipse: bool,
}

fn between(rng: &mut SplitMix64, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.uniform()
}

impl Recipe {
    /// A view stressing `bin`, every other transformation mild. `rotation` is used by the rotation bin (one of
    /// [`ROTATIONS`]); the others turn by at most 5 degrees.
    pub fn draw(bin: Bin, rotation: f64, rng: &mut SplitMix64) -> Self {
        let mut r = Self::mild(rng);
        r.bin = bin;
        match bin {
            Bin::Rotation => {
                r.rotation = rotation;
                r.canvas = match rng.below(3) {
                    0 => Canvas::Black,
                    1 => Canvas::Inside,
                    _ => Canvas::Edge,
                };
            }
            Bin::Scale => r.scale = between(rng, 0.35, 0.6),
            Bin::Perspective => {
                let s = between(rng, 0.1, 0.25);
                // Two neighbouring corners pulled in: the photo seen from one side (or from above / below).
                let side = rng.below(4);
                let mut corners = [(0.0, 0.0); 4];
                for c in &mut corners {
                    *c = (between(rng, -0.03, 0.03), between(rng, -0.03, 0.03));
                }
                // Corners: 0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left.
                let pull = |c: &mut (f64, f64), dx: f64, dy: f64| {
                    c.0 += dx;
                    c.1 += dy;
                };
                match side {
                    0 => {
                        pull(&mut corners[0], s, s / 2.0);
                        pull(&mut corners[3], s, -s / 2.0);
                    }
                    1 => {
                        pull(&mut corners[1], -s, s / 2.0);
                        pull(&mut corners[2], -s, -s / 2.0);
                    }
                    2 => {
                        pull(&mut corners[0], s / 2.0, s);
                        pull(&mut corners[1], -s / 2.0, s);
                    }
                    _ => {
                        pull(&mut corners[3], s / 2.0, -s);
                        pull(&mut corners[2], -s / 2.0, -s);
                    }
                }
                r.corners = corners;
                r.canvas = if rng.uniform() < 0.5 { Canvas::Black } else { Canvas::Inside };
            }
            Bin::Blur => {
                r.blur = if rng.uniform() < 0.5 {
                    Blur::Gaussian(between(rng, 1.5, 4.0))
                } else {
                    Blur::Motion(between(rng, 8.0, 25.0), between(rng, 0.0, 180.0))
                }
            }
            Bin::Jpeg => r.jpeg_quality = between(rng, 20.0, 60.0).round() as u8,
            Bin::Photometric => {
                r.photometric = Photometric {
                    brightness: between(rng, 0.6, 1.4),
                    contrast: between(rng, 0.5, 1.5),
                    saturation: between(rng, 0.0, 1.6),
                    gamma: between(rng, 0.5, 2.0),
                    gains: [between(rng, 0.8, 1.2), between(rng, 0.8, 1.2), between(rng, 0.8, 1.2)],
                }
            }
            Bin::Noise => r.noise = between(rng, 8.0, 25.0),
            Bin::Occlusion => {
                let keep = between(rng, 0.6, 0.85);
                r.crop = (keep, rng.uniform(), rng.uniform());
                let n = 1 + rng.below(3);
                r.occluders = (0..n).map(|_| Occluder::draw(rng, 0.12, 0.3)).collect();
            }
            Bin::RealView | Bin::Distractor => {}
        }
        r
    }

    /// Every transformation in a mild amount: what a copy of a photo on the web has gone through anyway.
    fn mild(rng: &mut SplitMix64) -> Self {
        let mut corners = [(0.0, 0.0); 4];
        for c in &mut corners {
            *c = (between(rng, -0.03, 0.03), between(rng, -0.03, 0.03));
        }
        let keep = between(rng, 0.85, 1.0);
        Self {
            bin: Bin::Rotation,
            crop: (keep, rng.uniform(), rng.uniform()),
            corners,
            rotation: between(rng, -5.0, 5.0),
            scale: between(rng, 0.7, 1.0),
            canvas: Canvas::Inside,
            occluders: if rng.uniform() < 0.25 { vec![Occluder::draw(rng, 0.04, 0.1)] } else { Vec::new() },
            blur: if rng.uniform() < 0.5 { Blur::Gaussian(between(rng, 0.3, 1.0)) } else { Blur::None },
            photometric: Photometric {
                brightness: between(rng, 0.9, 1.1),
                contrast: between(rng, 0.9, 1.1),
                saturation: between(rng, 0.85, 1.15),
                gamma: between(rng, 0.9, 1.1),
                gains: [between(rng, 0.96, 1.04), between(rng, 0.96, 1.04), between(rng, 0.96, 1.04)],
            },
            noise: between(rng, 0.0, 3.0),
            jpeg_quality: between(rng, 70.0, 92.0).round() as u8,
            seed: rng.next_u64(),
        }
    }
}

impl Occluder {
    fn draw(rng: &mut SplitMix64, min_radius: f64, max_radius: f64) -> Self {
        Self {
            center: (between(rng, 0.15, 0.85), between(rng, 0.15, 0.85)),
            radii: (between(rng, min_radius, max_radius), between(rng, min_radius, max_radius)),
            angle: between(rng, 0.0, 180.0),
            color: [rng.below(256) as u8, rng.below(256) as u8, rng.below(256) as u8],
            ellipse: rng.uniform() < 0.5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_are_seeded_and_stress_their_bin() {
        for bin in Bin::RENDERED {
            let a = Recipe::draw(bin, 135.0, &mut SplitMix64(9));
            assert_eq!(a, Recipe::draw(bin, 135.0, &mut SplitMix64(9)));
            assert_eq!(a.bin, bin);
            match bin {
                Bin::Rotation => assert_eq!(a.rotation, 135.0),
                Bin::Scale => assert!((0.35..=0.6).contains(&a.scale)),
                Bin::Jpeg => assert!((20..=60).contains(&a.jpeg_quality)),
                Bin::Noise => assert!(a.noise >= 8.0),
                Bin::Occlusion => assert!(a.crop.0 <= 0.85 && !a.occluders.is_empty()),
                _ => assert!(a.rotation.abs() <= 5.0),
            }
        }
    }
}
