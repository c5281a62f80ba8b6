//! 2-D convolution with TensorFlow's "SAME" padding, computed from the actual input size.
//!
//! TF pads `total = max((ceil(i/s) - 1) * s + k - i, 0)` pixels per axis, `total / 2` before and the rest after.
//! With stride 1 and an odd kernel that is symmetric and goes to the convolution itself; with stride 2 it can be
//! asymmetric (one more pixel after), so the input is padded explicitly.

use tch::{Tensor, nn};

/// A convolution layer with TF "SAME" padding.
#[derive(Debug)]
pub(crate) struct SameConv2d {
    conv: nn::Conv2D,
    kernel: i64,
    stride: i64,
}

impl SameConv2d {
    /// `groups == out == in` makes it depthwise.
    pub(crate) fn new(vs: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64) -> Self {
        let symmetric = stride == 1 && kernel % 2 == 1;
        let config = nn::ConvConfig {
            stride,
            padding: if symmetric { kernel / 2 } else { 0 },
            groups,
            bias: false,
            ..Default::default()
        };
        Self { conv: nn::conv2d(vs, c_in, c_out, kernel, config), kernel, stride }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        if self.stride == 1 && self.kernel % 2 == 1 {
            return x.apply(&self.conv);
        }
        let (h, w) = (x.size()[2], x.size()[3]);
        let (top, bottom) = same_padding(h, self.kernel, self.stride);
        let (left, right) = same_padding(w, self.kernel, self.stride);
        if top + bottom + left + right == 0 {
            x.apply(&self.conv)
        } else {
            x.constant_pad_nd([left, right, top, bottom]).apply(&self.conv)
        }
    }
}

/// (before, after) padding of TF "SAME" for an input of `size` pixels.
pub(crate) fn same_padding(size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - size).max(0);
    (total / 2, total - total / 2)
}

#[cfg(test)]
mod tests {
    use super::same_padding;

    #[test]
    fn same_padding_matches_tensorflow() {
        // Values from TF's definition for even and odd inputs.
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(225, 3, 2), (1, 1));
        assert_eq!(same_padding(28, 5, 2), (1, 2));
        assert_eq!(same_padding(29, 5, 2), (2, 2));
        assert_eq!(same_padding(7, 3, 1), (1, 1));
        assert_eq!(same_padding(1, 1, 1), (0, 0));
    }
}
