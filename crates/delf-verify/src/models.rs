//! Geometric models between query points and database points: affine (6 DoF) and homography (8 DoF).

use crate::point::{Normalizer, Point, collinear, matmul3, solve};

/// Minimum height, in pixels, of a triangle of sample points; flatter samples are degenerate.
const MIN_TRIANGLE_HEIGHT: f64 = 1.0;

/// A model that RANSAC can estimate.
pub trait GeometricModel: Sized + Copy + std::fmt::Debug {
    /// Points in a minimal sample.
    const SAMPLE_SIZE: usize;
    /// Whether [`GeometricModel::jacobian`] is the same at every point.
    const UNIFORM_JACOBIAN: bool;
    /// Exact fit to a minimal sample; `None` for degenerate samples (collinear points, singular systems).
    fn fit_minimal(src: &[Point], dst: &[Point]) -> Option<Self>;
    /// Least-squares fit to any number of correspondences (at least `SAMPLE_SIZE`).
    fn fit_least_squares(src: &[Point], dst: &[Point]) -> Option<Self>;
    /// Maps a query point into the database image.
    fn map(&self, p: Point) -> Point;
    /// The linear part (Jacobian) of the map at `p`: `[[dx'/dx, dx'/dy], [dy'/dx, dy'/dy]]`.
    fn jacobian(&self, p: Point) -> [[f64; 2]; 2];
    /// Squared transfer error of a correspondence.
    fn residual2(&self, src: Point, dst: Point) -> f64 {
        let q = self.map(src);
        (q.x - dst.x).powi(2) + (q.y - dst.y).powi(2)
    }
}

/// `x' = a x + b y + c`, `y' = d x + e y + f`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Row-major `[a, b, c, d, e, f]`.
    pub m: [f64; 6],
}

impl GeometricModel for Affine {
    const SAMPLE_SIZE: usize = 3;
    const UNIFORM_JACOBIAN: bool = true;

    fn fit_minimal(src: &[Point], dst: &[Point]) -> Option<Self> {
        if collinear(src[0], src[1], src[2], MIN_TRIANGLE_HEIGHT)
            || collinear(dst[0], dst[1], dst[2], MIN_TRIANGLE_HEIGHT)
        {
            return None;
        }
        Self::fit_least_squares(&src[..3], &dst[..3])
    }

    fn fit_least_squares(src: &[Point], dst: &[Point]) -> Option<Self> {
        if src.len() < 3 {
            return None;
        }
        // Normal equations in coordinates centred on the source centroid, for conditioning.
        let n = src.len() as f64;
        let (cx, cy) = src.iter().fold((0.0, 0.0), |(a, b), p| (a + p.x / n, b + p.y / n));
        let mut ata = [[0.0; 3]; 3];
        let (mut atx, mut aty) = ([0.0; 3], [0.0; 3]);
        for (p, q) in src.iter().zip(dst) {
            let row = [p.x - cx, p.y - cy, 1.0];
            for i in 0..3 {
                for j in 0..3 {
                    ata[i][j] += row[i] * row[j];
                }
                atx[i] += row[i] * q.x;
                aty[i] += row[i] * q.y;
            }
        }
        let mut ata2 = ata;
        let x = solve(&mut ata, &mut atx)?;
        let y = solve(&mut ata2, &mut aty)?;
        // Undo the centring: x' = a (x - cx) + b (y - cy) + c0.
        Some(Self { m: [x[0], x[1], x[2] - x[0] * cx - x[1] * cy, y[0], y[1], y[2] - y[0] * cx - y[1] * cy] })
    }

    fn map(&self, p: Point) -> Point {
        let m = &self.m;
        Point::new(m[0] * p.x + m[1] * p.y + m[2], m[3] * p.x + m[4] * p.y + m[5])
    }

    fn jacobian(&self, _p: Point) -> [[f64; 2]; 2] {
        [[self.m[0], self.m[1]], [self.m[3], self.m[4]]]
    }
}

/// A projective map, `h` row-major with `h[8]` normalised to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography {
    /// Row-major 3x3.
    pub h: [f64; 9],
}

impl Homography {
    fn from_normalized(hn: [f64; 8], ns: &Normalizer, nd: &Normalizer) -> Option<Self> {
        let hn3 = [[hn[0], hn[1], hn[2]], [hn[3], hn[4], hn[5]], [hn[6], hn[7], 1.0]];
        let full = matmul3(&matmul3(&nd.inverse(), &hn3), &ns.matrix());
        let s = full[2][2];
        if s.abs() < 1e-12 {
            return None;
        }
        let h = [
            full[0][0] / s,
            full[0][1] / s,
            full[0][2] / s,
            full[1][0] / s,
            full[1][1] / s,
            full[1][2] / s,
            full[2][0] / s,
            full[2][1] / s,
            1.0,
        ];
        h.iter().all(|v| v.is_finite()).then_some(Self { h })
    }
}

impl GeometricModel for Homography {
    const SAMPLE_SIZE: usize = 4;
    const UNIFORM_JACOBIAN: bool = false;

    fn fit_minimal(src: &[Point], dst: &[Point]) -> Option<Self> {
        for pts in [src, dst] {
            for (i, j, k) in [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)] {
                if collinear(pts[i], pts[j], pts[k], MIN_TRIANGLE_HEIGHT) {
                    return None;
                }
            }
        }
        Self::fit_least_squares(&src[..4], &dst[..4])
    }

    fn fit_least_squares(src: &[Point], dst: &[Point]) -> Option<Self> {
        if src.len() < 4 {
            return None;
        }
        // DLT with h33 = 1 on Hartley-normalised points, solved through the 8x8 normal equations.
        let ns = Normalizer::fit(src.iter().copied());
        let nd = Normalizer::fit(dst.iter().copied());
        let mut ata = [[0.0; 8]; 8];
        let mut atb = [0.0; 8];
        for (p, q) in src.iter().zip(dst) {
            let (p, q) = (ns.apply(*p), nd.apply(*q));
            let rows = [
                ([p.x, p.y, 1.0, 0.0, 0.0, 0.0, -p.x * q.x, -p.y * q.x], q.x),
                ([0.0, 0.0, 0.0, p.x, p.y, 1.0, -p.x * q.y, -p.y * q.y], q.y),
            ];
            for (row, rhs) in rows {
                for i in 0..8 {
                    for j in 0..8 {
                        ata[i][j] += row[i] * row[j];
                    }
                    atb[i] += row[i] * rhs;
                }
            }
        }
        let hn = solve(&mut ata, &mut atb)?;
        Self::from_normalized(hn, &ns, &nd)
    }

    fn map(&self, p: Point) -> Point {
        let h = &self.h;
        let w = h[6] * p.x + h[7] * p.y + h[8];
        Point::new((h[0] * p.x + h[1] * p.y + h[2]) / w, (h[3] * p.x + h[4] * p.y + h[5]) / w)
    }

    fn jacobian(&self, p: Point) -> [[f64; 2]; 2] {
        let h = &self.h;
        let w = h[6] * p.x + h[7] * p.y + h[8];
        let q = self.map(p);
        [[(h[0] - h[6] * q.x) / w, (h[1] - h[7] * q.x) / w], [(h[3] - h[6] * q.y) / w, (h[4] - h[7] * q.y) / w]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(f64, f64)]) -> Vec<Point> {
        v.iter().map(|&(x, y)| Point::new(x, y)).collect()
    }

    #[test]
    fn affine_from_three_points_is_exact() {
        let truth = Affine { m: [1.2, -0.3, 15.0, 0.25, 0.9, -7.0] };
        let src = pts(&[(10.0, 20.0), (300.0, 40.0), (120.0, 250.0)]);
        let dst: Vec<Point> = src.iter().map(|&p| truth.map(p)).collect();
        let fit = Affine::fit_minimal(&src, &dst).unwrap();
        for (a, b) in fit.m.iter().zip(truth.m) {
            assert!((a - b).abs() < 1e-9, "{fit:?}");
        }
        let line = pts(&[(0.0, 0.0), (10.0, 10.0), (20.0, 20.0)]);
        assert!(Affine::fit_minimal(&line, &dst).is_none());
    }

    #[test]
    fn homography_from_four_points_is_exact() {
        let truth = Homography { h: [0.9, 0.1, 30.0, -0.05, 1.1, 12.0, 1e-4, -2e-4, 1.0] };
        let src = pts(&[(0.0, 0.0), (640.0, 10.0), (600.0, 480.0), (20.0, 470.0)]);
        let dst: Vec<Point> = src.iter().map(|&p| truth.map(p)).collect();
        let fit = Homography::fit_minimal(&src, &dst).unwrap();
        for (a, b) in fit.h.iter().zip(truth.h) {
            assert!((a - b).abs() < 1e-7 * b.abs().max(1.0), "{fit:?}");
        }
        let p = Point::new(123.0, 321.0);
        let j = fit.jacobian(p);
        let eps = 1e-3;
        let dx = fit.map(Point::new(p.x + eps, p.y));
        assert!(((dx.x - fit.map(p).x) / eps - j[0][0]).abs() < 1e-4);
    }
}
