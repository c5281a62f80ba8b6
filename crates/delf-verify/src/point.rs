//! Points and small dense linear algebra used by the geometric models.

/// A 2-D point in image pixels (see `delf_core` for the coordinate convention).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    /// Horizontal coordinate.
    pub x: f64,
    /// Vertical coordinate.
    pub y: f64,
}

impl Point {
    /// A point.
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }
}

/// Twice the signed area of triangle (a, b, c); near zero when the three points are collinear.
pub(crate) fn cross(a: Point, b: Point, c: Point) -> f64 {
    (b.x - a.x) * (c.y - a.y) - (b.y - a.y) * (c.x - a.x)
}

/// Whether three points are (nearly) collinear: the triangle's area is tiny relative to its longest side, i.e.
/// its height is under `min_height` pixels.
pub(crate) fn collinear(a: Point, b: Point, c: Point, min_height: f64) -> bool {
    let d = |p: Point, q: Point| ((p.x - q.x).powi(2) + (p.y - q.y).powi(2)).sqrt();
    let longest = d(a, b).max(d(b, c)).max(d(a, c));
    longest == 0.0 || cross(a, b, c).abs() / longest < min_height
}

/// Solves `m x = b` for a small dense system by Gaussian elimination with partial pivoting, in place.
/// Returns `None` when the matrix is (numerically) singular.
pub(crate) fn solve<const N: usize>(m: &mut [[f64; N]; N], b: &mut [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        let scale = m.iter().map(|row| row[col].abs()).fold(0.0, f64::max);
        if m[pivot][col].abs() <= 1e-12 * scale.max(1e-300) {
            return None;
        }
        m.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..N {
            let f = m[row][col] / m[col][col];
            if f != 0.0 {
                let (top, bottom) = m.split_at_mut(row);
                for (t, p) in bottom[0][col..].iter_mut().zip(&top[col][col..]) {
                    *t -= f * p;
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = [0.0; N];
    for row in (0..N).rev() {
        let s: f64 = (row + 1..N).map(|k| m[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / m[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Translation and isotropic scale that move points to centroid 0 and mean distance sqrt(2) (Hartley).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Normalizer {
    cx: f64,
    cy: f64,
    s: f64,
}

impl Normalizer {
    pub(crate) fn fit(points: impl Iterator<Item = Point> + Clone) -> Self {
        let n = points.clone().count().max(1) as f64;
        let (sx, sy) = points.clone().fold((0.0, 0.0), |(a, b), p| (a + p.x, b + p.y));
        let (cx, cy) = (sx / n, sy / n);
        let mean_d = points.map(|p| ((p.x - cx).powi(2) + (p.y - cy).powi(2)).sqrt()).sum::<f64>() / n;
        let s = if mean_d > 0.0 { std::f64::consts::SQRT_2 / mean_d } else { 1.0 };
        Self { cx, cy, s }
    }

    pub(crate) fn apply(&self, p: Point) -> Point {
        Point::new((p.x - self.cx) * self.s, (p.y - self.cy) * self.s)
    }

    /// The 3x3 matrix of the normalisation.
    pub(crate) fn matrix(&self) -> [[f64; 3]; 3] {
        [[self.s, 0.0, -self.s * self.cx], [0.0, self.s, -self.s * self.cy], [0.0, 0.0, 1.0]]
    }

    /// The 3x3 matrix of the inverse normalisation.
    pub(crate) fn inverse(&self) -> [[f64; 3]; 3] {
        [[1.0 / self.s, 0.0, self.cx], [0.0, 1.0 / self.s, self.cy], [0.0, 0.0, 1.0]]
    }
}

pub(crate) fn matmul3(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_detects_singular_systems() {
        let mut m = [[2.0, 1.0], [1.0, 3.0]];
        let mut b = [3.0, 5.0];
        let x = solve(&mut m, &mut b).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        let mut m = [[1.0, 2.0], [2.0, 4.0]];
        assert!(solve(&mut m, &mut [1.0, 2.0]).is_none());
    }

    #[test]
    fn collinearity() {
        let (a, b) = (Point::new(0.0, 0.0), Point::new(100.0, 0.0));
        assert!(collinear(a, b, Point::new(50.0, 0.5), 1.0));
        assert!(!collinear(a, b, Point::new(50.0, 5.0), 1.0));
        assert!(collinear(a, a, a, 1.0));
    }
}
