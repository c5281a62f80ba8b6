//! Projective maps between pixel coordinates, in the convention of `delf_core`: origin at the top-left corner of
//! the top-left pixel, `x` right, `y` down, pixel `(col, row)` centred at `(col + 0.5, row + 0.5)`.

/// A 3x3 projective map `(x, y) -> (x', y')`, row-major. Affine maps (rotations, scalings, translations) are the
/// special case with last row `[0, 0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projective(pub [f64; 9]);

impl Projective {
    /// The identity.
    pub const IDENTITY: Self = Self([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);

    /// `(x, y) -> (x + tx, y + ty)`.
    pub fn translation(tx: f64, ty: f64) -> Self {
        Self([1.0, 0.0, tx, 0.0, 1.0, ty, 0.0, 0.0, 1.0])
    }

    /// `(x, y) -> (sx x, sy y)`.
    pub fn scaling(sx: f64, sy: f64) -> Self {
        Self([sx, 0.0, 0.0, 0.0, sy, 0.0, 0.0, 0.0, 1.0])
    }

    /// Rotation about the origin by `degrees`, counter-clockwise as seen on screen (with `y` pointing down), as
    /// in OpenCV's `getRotationMatrix2D` and PIL's `rotate`.
    pub fn rotation(degrees: f64) -> Self {
        let (s, c) = snap_sin_cos(degrees);
        Self([c, s, 0.0, -s, c, 0.0, 0.0, 0.0, 1.0])
    }

    /// The map that sends the four `from` points onto the four `to` points (none three collinear), by solving the
    /// 8x8 linear system; `None` when it is singular.
    pub fn from_quad(from: [(f64, f64); 4], to: [(f64, f64); 4]) -> Option<Self> {
        let mut a = [[0.0f64; 9]; 8];
        for (i, (&(x, y), &(u, v))) in from.iter().zip(&to).enumerate() {
            a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
            a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
        }
        // Gauss-Jordan with partial pivoting on the augmented 8x9 matrix.
        for col in 0..8 {
            let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
            if a[pivot][col].abs() < 1e-12 {
                return None;
            }
            a.swap(col, pivot);
            let p = a[col][col];
            a[col].iter_mut().skip(col).for_each(|v| *v /= p);
            let pivot_row = a[col];
            for (row, r) in a.iter_mut().enumerate() {
                if row != col {
                    let f = r[col];
                    r.iter_mut().zip(&pivot_row).skip(col).for_each(|(v, p)| *v -= f * p);
                }
            }
        }
        let h: Vec<f64> = (0..8).map(|i| a[i][8]).collect();
        Some(Self([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0]))
    }

    /// `other` after `self`: the map `p -> other(self(p))`.
    pub fn then(&self, other: &Self) -> Self {
        let (a, b) = (&other.0, &self.0);
        let mut m = [0.0; 9];
        for r in 0..3 {
            for c in 0..3 {
                m[3 * r + c] = (0..3).map(|k| a[3 * r + k] * b[3 * k + c]).sum();
            }
        }
        Self(m)
    }

    /// The inverse map; `None` when singular.
    pub fn inverse(&self) -> Option<Self> {
        let m = &self.0;
        let cof = [
            m[4] * m[8] - m[5] * m[7],
            m[5] * m[6] - m[3] * m[8],
            m[3] * m[7] - m[4] * m[6],
            m[2] * m[7] - m[1] * m[8],
            m[0] * m[8] - m[2] * m[6],
            m[1] * m[6] - m[0] * m[7],
            m[1] * m[5] - m[2] * m[4],
            m[2] * m[3] - m[0] * m[5],
            m[0] * m[4] - m[1] * m[3],
        ];
        let det = m[0] * cof[0] + m[1] * cof[1] + m[2] * cof[2];
        if det.abs() < 1e-15 {
            return None;
        }
        // Adjugate = transposed cofactors.
        let inv = [cof[0], cof[3], cof[6], cof[1], cof[4], cof[7], cof[2], cof[5], cof[8]];
        Some(Self(inv.map(|v| v / det)))
    }

    /// Applies the map; `None` for points sent to infinity.
    pub fn apply(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let m = &self.0;
        let w = m[6] * x + m[7] * y + m[8];
        if w.abs() < 1e-12 {
            return None;
        }
        Some(((m[0] * x + m[1] * y + m[2]) / w, (m[3] * x + m[4] * y + m[5]) / w))
    }

    /// The local area scale of the map at `(x, y)`: the square root of its Jacobian's determinant (1 = sizes kept,
    /// 0.5 = halved in each direction).
    pub fn local_scale(&self, x: f64, y: f64) -> f64 {
        let e = 0.5;
        let at = |dx: f64, dy: f64| self.apply(x + dx, y + dy).unwrap_or((f64::NAN, f64::NAN));
        let (x0, y0) = at(-e, 0.0);
        let (x1, y1) = at(e, 0.0);
        let (u0, v0) = at(0.0, -e);
        let (u1, v1) = at(0.0, e);
        let det = (x1 - x0) * (v1 - v0) - (y1 - y0) * (u1 - u0);
        (det.abs() / (4.0 * e * e)).sqrt()
    }

    /// The bounding box `(min_x, min_y, max_x, max_y)` of a `width x height` image's corners under the map.
    pub fn bounds(&self, width: f64, height: f64) -> Option<(f64, f64, f64, f64)> {
        let corners = [(0.0, 0.0), (width, 0.0), (0.0, height), (width, height)];
        let mut b = (f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for (x, y) in corners {
            let (u, v) = self.apply(x, y)?;
            b = (b.0.min(u), b.1.min(v), b.2.max(u), b.3.max(v));
        }
        Some(b)
    }
}

/// Sine and cosine of an angle in degrees, exact for multiples of 90 (so quarter turns move whole pixels).
fn snap_sin_cos(degrees: f64) -> (f64, f64) {
    let d = degrees.rem_euclid(360.0);
    match d {
        0.0 => (0.0, 1.0),
        90.0 => (1.0, 0.0),
        180.0 => (0.0, -1.0),
        270.0 => (-1.0, 0.0),
        _ => d.to_radians().sin_cos(),
    }
}

/// The rotation of a `width x height` image by `degrees` (counter-clockwise as seen) about its centre, onto a
/// canvas that holds the whole rotated image (`expand`) or onto a canvas of the same size: the map from source to
/// canvas and the canvas size.
pub fn rotation_canvas(width: u32, height: u32, degrees: f64, expand: bool) -> (Projective, u32, u32) {
    let (w, h) = (f64::from(width), f64::from(height));
    let turn = Projective::translation(-w / 2.0, -h / 2.0).then(&Projective::rotation(degrees));
    let (cw, ch) = if expand {
        let (x0, y0, x1, y1) = turn.bounds(w, h).unwrap_or((0.0, 0.0, w, h));
        // Rounded to the nearest whole pixel so that quarter turns give exactly the transposed size.
        (((x1 - x0) - 1e-6).round().max(1.0), ((y1 - y0) - 1e-6).round().max(1.0))
    } else {
        (w, h)
    };
    (turn.then(&Projective::translation(cw / 2.0, ch / 2.0)), cw as u32, ch as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9
    }

    #[test]
    fn compose_invert_apply() {
        let m =
            Projective::translation(3.0, -2.0).then(&Projective::rotation(30.0)).then(&Projective::scaling(2.0, 2.0));
        let inv = m.inverse().unwrap();
        for p in [(0.0, 0.0), (10.0, 5.0), (-3.0, 7.5)] {
            let q = m.apply(p.0, p.1).unwrap();
            assert!(close(inv.apply(q.0, q.1).unwrap(), p));
        }
        assert!((m.local_scale(4.0, 4.0) - 2.0).abs() < 1e-9);
        // Counter-clockwise as seen with y down: the x axis turns towards -y.
        assert!(close(Projective::rotation(90.0).apply(1.0, 0.0).unwrap(), (0.0, -1.0)));
    }

    #[test]
    fn quarter_turn_canvas_is_the_transposed_size_and_maps_corners_onto_corners() {
        let (m, w, h) = rotation_canvas(640, 480, 90.0, true);
        assert_eq!((w, h), (480, 640));
        // The top-right corner of the source becomes the top-left corner of the canvas.
        assert!(close(m.apply(640.0, 0.0).unwrap(), (0.0, 0.0)));
        let (_, w, h) = rotation_canvas(640, 480, 45.0, true);
        let diag = (640.0f64 + 480.0) / 2f64.sqrt();
        assert_eq!((w, h), (diag.round() as u32, diag.round() as u32));
        assert_eq!(rotation_canvas(640, 480, 45.0, false).1, 640);
    }

    #[test]
    fn a_quad_map_sends_its_corners() {
        let from = [(0.0, 0.0), (100.0, 0.0), (100.0, 80.0), (0.0, 80.0)];
        let to = [(5.0, 3.0), (90.0, 10.0), (97.0, 70.0), (2.0, 77.0)];
        let m = Projective::from_quad(from, to).unwrap();
        for (a, b) in from.iter().zip(&to) {
            assert!(close(m.apply(a.0, a.1).unwrap(), *b));
        }
        assert!(Projective::from_quad(from, [(0.0, 0.0); 4]).is_none());
    }
}
