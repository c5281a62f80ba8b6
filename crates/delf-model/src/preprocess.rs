//! From RGB8 pixels to the normalised NCHW `f32` tensors the backbones expect.

use delf_image::RgbImage;
use image::imageops::{self, FilterType};
use tch::{Device, Kind, Tensor};

/// Per-channel pixel normalisation `(x - mean) / std`, in 0..255 pixel units, RGB order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Subtracted per channel.
    pub mean: [f32; 3],
    /// Divided per channel.
    pub std: [f32; 3],
}

impl Normalization {
    /// What the EfficientNet-Lite ImageNet weights were trained with: `(x - 127) / 128`.
    pub const EFFICIENTNET_LITE: Self = Self { mean: [127.0; 3], std: [128.0; 3] };
    /// The DELF and DELG TensorFlow releases: `(x - 128) / 128`.
    pub const DELF_RELEASE: Self = Self { mean: [128.0; 3], std: [128.0; 3] };
    /// torchvision's ImageNet statistics (ResNet50 weights from torchvision).
    pub const TORCHVISION_IMAGENET: Self = Self {
        mean: [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0],
        std: [0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0],
    };
}

/// A `[1, 3, H, W]` float tensor on `device`, normalised.
pub fn to_tensor(rgb: &RgbImage, norm: Normalization, device: Device) -> Tensor {
    let (w, h) = (i64::from(rgb.width()), i64::from(rgb.height()));
    let hwc = Tensor::from_slice(rgb.as_raw()).view([h, w, 3]).to_device(device);
    let chw = hwc.permute([2, 0, 1]).to_kind(Kind::Float);
    let mean = Tensor::from_slice(&norm.mean).to_device(device).view([3, 1, 1]);
    let std = Tensor::from_slice(&norm.std).to_device(device).view([3, 1, 1]);
    ((chw - mean) / std).unsqueeze(0)
}

/// The ImageNet evaluation crop: the central `side / (side + 32)` of the shorter side, resized to
/// `side x side` (as in the EfficientNet reference evaluation).
pub fn center_crop_resize(rgb: &RgbImage, side: u32) -> RgbImage {
    let short = rgb.width().min(rgb.height());
    let crop = ((f64::from(short) * f64::from(side) / f64::from(side + 32)).round() as u32).max(1);
    let x = (rgb.width() - crop) / 2;
    let y = (rgb.height() - crop) / 2;
    let cropped = imageops::crop_imm(rgb, x, y, crop, crop).to_image();
    imageops::resize(&cropped, side, side, FilterType::CatmullRom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_in_rgb_order() {
        let img = RgbImage::from_fn(
            2,
            1,
            |x, _| if x == 0 { image::Rgb([255, 127, 0]) } else { image::Rgb([127, 127, 127]) },
        );
        let t = to_tensor(&img, Normalization::EFFICIENTNET_LITE, Device::Cpu);
        assert_eq!(t.size(), [1, 3, 1, 2]);
        let v: Vec<f32> = t.flatten(0, -1).try_into().unwrap();
        // Channel-major: R(0,0) R(0,1) G(0,0) G(0,1) B(0,0) B(0,1).
        assert_eq!(v, vec![1.0, 0.0, 0.0, 0.0, -127.0 / 128.0, 0.0]);
    }

    #[test]
    fn crop_is_square_and_centred() {
        let img = RgbImage::from_fn(300, 100, |x, _| image::Rgb([(x > 150) as u8 * 255, 0, 0]));
        let out = center_crop_resize(&img, 50);
        assert_eq!(out.dimensions(), (50, 50));
        assert!(out.get_pixel(5, 25)[0] < 10 && out.get_pixel(45, 25)[0] > 245);
    }
}
