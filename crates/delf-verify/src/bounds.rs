//! Plausibility of a geometric model: rejects the collapsed maps that "explain" matches between unrelated photos
//! (near-zero scale, extreme anisotropy or shear, mirror images).

use crate::models::GeometricModel;
use crate::point::Point;

/// Limits on the local linear part of a model (its Jacobian at the centre of the query points).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelBounds {
    /// Largest accepted area scale change, either way: `1/max_scale <= sqrt|det J| <= max_scale`.
    pub max_scale: f64,
    /// Largest accepted ratio of the singular values of `J` (1 = similarity; shear and stretch raise it).
    pub max_anisotropy: f64,
    /// Accept mirror images (`det J < 0`).
    pub allow_reflection: bool,
}

impl Default for ModelBounds {
    /// Scale change up to 10x either way (the default pyramid alone spans 8x), anisotropy up to 4, no mirrors.
    fn default() -> Self {
        Self { max_scale: 10.0, max_anisotropy: 4.0, allow_reflection: false }
    }
}

impl ModelBounds {
    /// No limits at all (the plain reference behaviour).
    pub const UNBOUNDED: Self =
        Self { max_scale: f64::INFINITY, max_anisotropy: f64::INFINITY, allow_reflection: true };

    /// Whether `model` is plausible around `at`.
    pub fn accepts<M: GeometricModel>(&self, model: &M, at: Point) -> bool {
        let j = model.jacobian(at);
        let (s1, s2, det) = singular_values(j);
        if !(s1.is_finite() && s2.is_finite()) || s2 <= 0.0 {
            return false;
        }
        if det < 0.0 && !self.allow_reflection {
            return false;
        }
        let scale = (s1 * s2).sqrt();
        scale <= self.max_scale && scale >= 1.0 / self.max_scale && s1 / s2 <= self.max_anisotropy
    }
}

/// Singular values (largest first) and determinant of a 2x2 matrix, in closed form.
pub(crate) fn singular_values(j: [[f64; 2]; 2]) -> (f64, f64, f64) {
    let [[a, b], [c, d]] = j;
    let det = a * d - b * c;
    let frob2 = a * a + b * b + c * c + d * d;
    let disc = (frob2 * frob2 - 4.0 * det * det).max(0.0).sqrt();
    let s1 = ((frob2 + disc) / 2.0).sqrt();
    let s2 = ((frob2 - disc) / 2.0).max(0.0).sqrt();
    (s1, s2, det)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Affine;

    #[test]
    fn rejects_collapsed_sheared_and_mirrored_models() {
        let b = ModelBounds::default();
        let at = Point::new(0.0, 0.0);
        let rot = |s: f64, t: f64| Affine { m: [s * t.cos(), -s * t.sin(), 5.0, s * t.sin(), s * t.cos(), 1.0] };
        assert!(b.accepts(&rot(1.0, 0.7), at));
        assert!(b.accepts(&rot(0.2, 2.0), at));
        assert!(!b.accepts(&rot(0.01, 0.3), at), "collapse to a point");
        assert!(!b.accepts(&rot(40.0, 0.3), at));
        assert!(!b.accepts(&Affine { m: [1.0, 8.0, 0.0, 0.0, 1.0, 0.0] }, at), "extreme shear");
        assert!(!b.accepts(&Affine { m: [5.0, 0.0, 0.0, 0.0, 0.5, 0.0] }, at), "anisotropy 10");
        assert!(!b.accepts(&Affine { m: [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0] }, at), "mirror");
        assert!(ModelBounds::UNBOUNDED.accepts(&Affine { m: [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0] }, at));
        assert!(!ModelBounds::UNBOUNDED.accepts(&Affine { m: [1.0, 1.0, 0.0, 1.0, 1.0, 0.0] }, at), "singular");
    }

    #[test]
    fn singular_values_of_known_matrices() {
        let (s1, s2, det) = singular_values([[3.0, 0.0], [0.0, -2.0]]);
        assert!((s1 - 3.0).abs() < 1e-12 && (s2 - 2.0).abs() < 1e-12 && det == -6.0);
    }
}
