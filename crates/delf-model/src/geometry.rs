//! Receptive-field geometry of a feature map, computed from the backbone's own layer definitions.
//!
//! Each convolution or pooling layer up to the feature map declares its kernel, stride and padding
//! ([`LayerGeometry`]); [`AxisGeometry::compute`] folds them for one image axis of a given length, because TF
//! "SAME" padding depends on the input size. Pixel indices here have pixel `k`'s centre at `k`; keypoints in
//! image coordinates (origin at the image corner, see `delf_core`) add 0.5.

/// How a layer pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// The same number of pixels before and after.
    Symmetric(i64),
    /// TensorFlow "SAME": `max((ceil(n/s) - 1) * s + k - n, 0)` pixels in all, half (rounded down) before.
    TfSame,
}

/// Kernel, stride and padding of one layer along one axis (all our layers are square).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerGeometry {
    /// Kernel size.
    pub kernel: i64,
    /// Stride.
    pub stride: i64,
    /// Padding rule.
    pub padding: Padding,
}

impl LayerGeometry {
    /// A layer with the given kernel, stride and padding.
    pub const fn new(kernel: i64, stride: i64, padding: Padding) -> Self {
        Self { kernel, stride, padding }
    }

    /// A 1x1 convolution with stride 1.
    pub const POINTWISE: Self = Self::new(1, 1, Padding::Symmetric(0));

    /// (pixels padded before, output length) for an input of `len` pixels.
    pub fn apply(&self, len: i64) -> (i64, i64) {
        match self.padding {
            Padding::Symmetric(p) => (p, (len + 2 * p - self.kernel).div_euclid(self.stride) + 1),
            Padding::TfSame => {
                let out = (len + self.stride - 1) / self.stride;
                let total = ((out - 1) * self.stride + self.kernel - len).max(0);
                (total / 2, out)
            }
        }
    }
}

/// Where the cells of a feature map sit along one axis of the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisGeometry {
    /// Input pixels between neighbouring cells.
    pub stride: i64,
    /// Receptive field size in input pixels (before clipping to the image).
    pub receptive_field: i64,
    /// Input pixel index of the centre of cell 0's receptive field (may be fractional or negative).
    pub first_center: f64,
    /// Number of cells along the axis.
    pub cells: i64,
}

impl AxisGeometry {
    /// Folds `layers` (input to output) for an input axis of `len` pixels.
    pub fn compute(layers: &[LayerGeometry], len: i64) -> Self {
        let (mut stride, mut rf, mut center, mut n) = (1i64, 1i64, 0.0f64, len);
        for layer in layers {
            let (pad_before, out) = layer.apply(n);
            center += ((layer.kernel - 1) as f64 / 2.0 - pad_before as f64) * stride as f64;
            rf += (layer.kernel - 1) * stride;
            stride *= layer.stride;
            n = out;
        }
        Self { stride, receptive_field: rf, first_center: center, cells: n }
    }

    /// Input pixel index of the centre of cell `i`.
    pub fn center(&self, i: i64) -> f64 {
        self.first_center + (i * self.stride) as f64
    }

    /// Inclusive input pixel range of cell `i`'s receptive field (unclipped).
    pub fn span(&self, i: i64) -> (f64, f64) {
        let half = (self.receptive_field - 1) as f64 / 2.0;
        (self.center(i) - half, self.center(i) + half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_style_stem_matches_hand_computation() {
        // conv7x7/2 pad 3, maxpool 3x3/2 pad 1: rf 11, stride 4, cell 0 centred at pixel 0.
        let layers = [LayerGeometry::new(7, 2, Padding::Symmetric(3)), LayerGeometry::new(3, 2, Padding::Symmetric(1))];
        let g = AxisGeometry::compute(&layers, 224);
        assert_eq!((g.stride, g.receptive_field, g.cells), (4, 11, 56));
        assert_eq!(g.first_center, 0.0);
    }

    #[test]
    fn tf_same_stride_two_depends_on_parity() {
        let layer = [LayerGeometry::new(3, 2, Padding::TfSame)];
        // Even input: padding (0, 1), so cell 0 covers pixels 0..=2, centre 1.
        assert_eq!(AxisGeometry::compute(&layer, 224).first_center, 1.0);
        // Odd input: padding (1, 1), cell 0 covers -1..=1, centre 0.
        assert_eq!(AxisGeometry::compute(&layer, 225).first_center, 0.0);
        assert_eq!(AxisGeometry::compute(&layer, 225).cells, 113);
    }
}
